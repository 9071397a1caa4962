"""Viewer tools for crossfire maps: a stable descriptor PCA, a click-to-compare similarity map and the
cameras that ``ns-localize`` estimated, in nerfstudio's viser viewer.

Pure functions (``pca``, ``similarity``, ``cameras``) are separate from the nerfstudio/viser glue (``tools``),
from the in-process viewer launcher (``serve``) and from the headless-browser driver (``browser``) used by the
tests and by ``python -m crossfire_ns.viewer.screenshot``.
"""
