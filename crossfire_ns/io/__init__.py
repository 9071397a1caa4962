"""Pure file helpers: atomic writes, query folders, nerfstudio transforms-format pose files.

Nothing here knows about models or maps; localization, the viewer, the scene generator and the benchmarks all
read and write through these modules.
"""
