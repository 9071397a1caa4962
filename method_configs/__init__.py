"""nerfstudio method specifications of crossfire (imported by every ns-* command: keep it light)."""
