"""ns-localize-server: the Python API (``crossfire_ns.localize.api.MapLocalizer``) over HTTP, map loaded once."""
