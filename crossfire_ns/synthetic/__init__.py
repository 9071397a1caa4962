"""The bundled synthetic scene: posed training views plus held-out queries under changed lighting.

The scene is a closed room (axis-aligned box) with a few spheres and boxes in the middle, rendered by
analytic ray casting in numpy. Every surface carries a *solid* procedural texture (evaluated at the 3D hit
point, so it is consistent across views by construction) made of multi-octave coloured value noise plus
sharp features (a mosaic of cells, discs, bullseyes, striped and chequered patches) so that every small patch
is distinctive at several scales: good for feature matching, and learnable by a NeRF in minutes on CPU.

Conventions:

* World frame: right-handed, **+z is up**; the room is centred at the origin.
* Poses in ``transforms.json`` are camera-to-world in the OpenGL convention (x right, y up, the camera
  looks along -z), as nerfstudio expects. ``crossfire_ns.geometry.opengl_to_opencv_c2w`` converts them.
* Intrinsics follow nerfstudio: pixel ``(u, v)`` has its centre at ``(u + 0.5, v + 0.5)``, ``cx = w / 2``.
* Depth returned by ``render_view`` is z-depth along the optical axis (OpenCV camera z) at pixel centres.

Layouts (``SyntheticSceneConfig.layout``): ``orbit`` (default: cameras on a ring looking in at the objects),
``inside-out`` (cameras near the centre looking out at the walls; the objects stand aside, against the walls),
``corridor`` (a long box room; cameras walk along its middle line looking both ways along it and partly at the side
walls; the objects stand against the side walls) and ``wall`` (forward-facing, as LLFF: cameras on a small patch of a
plane in front of one wall, all looking at it, the objects between them and the wall).
``write_depth`` also writes each view's exact z-depth as ``depth/<image stem>.npy`` (listed in scene.json).

Training views and queries differ only in lighting (light position and colour, exposure, colour cast,
gamma and sensor noise); the geometry and textures are identical, so ground-truth depth is identical too.

Modules: ``config`` (what to generate, intrinsics, lightings), ``textures`` (solid procedural patterns),
``geometry`` (the room and ray casting), ``cameras`` (poses), ``render`` (shading), ``writer`` (the files).
``crossfire-make-scene`` (``crossfire_ns.scripts.make_scene``) is the command.
"""

from crossfire_ns.synthetic.cameras import look_at, novel_view_poses, sample_poses, walk_poses
from crossfire_ns.synthetic.config import (
    GENERATOR_VERSION,
    NUM_ROOM_FACES,
    QUERY_LIGHTING,
    TRAIN_LIGHTING,
    WORLD_UP,
    Lighting,
    NovelViewConfig,
    PinholeIntrinsics,
    SyntheticSceneConfig,
    WalkConfig,
)
from crossfire_ns.synthetic.geometry import Scene, build_scene, cast_rays, inside_objects, surface_distance
from crossfire_ns.synthetic.render import pixel_rays, render_view, to_uint8
from crossfire_ns.synthetic.textures import Material
from crossfire_ns.synthetic.writer import generate_novel_views, generate_scene, generate_walk

__all__ = [
    "GENERATOR_VERSION",
    "NUM_ROOM_FACES",
    "QUERY_LIGHTING",
    "TRAIN_LIGHTING",
    "WORLD_UP",
    "Lighting",
    "Material",
    "PinholeIntrinsics",
    "Scene",
    "SyntheticSceneConfig",
    "WalkConfig",
    "NovelViewConfig",
    "novel_view_poses",
    "generate_novel_views",
    "build_scene",
    "cast_rays",
    "inside_objects",
    "generate_scene",
    "generate_walk",
    "look_at",
    "pixel_rays",
    "render_view",
    "sample_poses",
    "surface_distance",
    "walk_poses",
    "to_uint8",
]
