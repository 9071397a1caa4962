"""A structure-based SIFT localization pipeline in the hloc style, built with pycolmap: the peer that does not
use the radiance field at all.

One step per module, each a few pure functions:

| module | step |
|---|---|
| ``cameras`` | nerfstudio intrinsics and poses -> pycolmap cameras and ``Rigid3d`` (OpenGL c2w -> OpenCV w2c) |
| ``features`` | SIFT keypoints and descriptors (COLMAP's CPU SIFT through pycolmap) |
| ``pairs`` | which training views to match with each other: nearest by known pose |
| ``matching`` | mutual nearest neighbours with a ratio test, then the epipolar check the known poses allow |
| ``triangulation`` | tracks from pairwise matches, one 3D point per track with the known poses (LO-RANSAC) |
| ``localization`` | a query: matches to every training view, top-k views by 2D-3D matches, PnP + refinement |
| ``pipeline`` | the command: map (cached) + every query, written like ns-localize's outputs |

``python -m benchmarks.peer --train-dir T --query-dir Q --output-dir O`` (needs ``pip install -e '.[bench]'``).
"""
