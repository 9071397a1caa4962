"""crossfire_ns: visual relocalization with a radiance field (a nerfstudio plugin after CROSSFIRE, ICCV 2023)."""

__version__ = "0.1.0"
