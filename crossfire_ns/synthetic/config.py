"""What the bundled scene generator makes: its config, the camera intrinsics and the two lightings."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Tuple

import numpy as np

GENERATOR_VERSION = "1.0.0"
"""Bumped whenever the rendered pixels or poses for a given config would change."""

WORLD_UP = (0.0, 0.0, 1.0)
"""The world's up axis (+z): cameras are upright with respect to it."""

NUM_ROOM_FACES = 6
"""Material ids 0..5 are the room faces (-x, +x, -y, +y, -z floor, +z ceiling); objects follow."""


@dataclass
class SyntheticSceneConfig:
    """What to generate; the same config and seed give byte-identical output."""

    width: int = 160
    """Image width in pixels (small, so a NeRF trains in minutes on CPU)."""
    height: int = 120
    """Image height in pixels."""
    num_train: int = 40
    """Number of training views on the camera ring (enough azimuth coverage for a NeRF)."""
    num_query: int = 10
    """Number of held-out query views, placed between training azimuths, rendered under changed lighting."""
    fov_x_deg: float = 60.0
    """Horizontal field of view in degrees; fl_y = fl_x (square pixels)."""
    seed: int = 0
    """Seeds object placement, textures, camera poses and query sensor noise."""
    supersample: int = 2
    """Anti-aliasing: render supersample x supersample rays per pixel and box-average them."""
    room_half_size: float = 4.0
    """Half the side of the cubic room (world units); the walls are the far background of every view."""
    camera_radius: float = 2.5
    """Mean horizontal distance of the cameras from the room's vertical axis."""
    camera_radius_jitter: float = 0.15
    """Cameras' distance from the axis varies uniformly by +/- this, so views are not on one circle."""
    camera_height_min: float = -0.3
    """Lowest camera height (z), so that views see the objects from varied elevations."""
    camera_height_max: float = 0.8
    """Highest camera height (z)."""
    target_jitter: float = 0.15
    """Std of the random offset (world units) of each camera's look-at target around the origin."""
    roll_jitter_deg: float = 2.0
    """Cameras roll uniformly by +/- this many degrees, so poses are not all perfectly upright."""
    num_spheres: int = 3
    """Number of textured spheres in the middle (parallax against the walls)."""
    num_boxes: int = 2
    """Number of textured axis-aligned boxes in the middle."""
    texture_scale: float = 1.0
    """Size of texture features (larger: coarser patterns, which a small NeRF learns faster)."""
    arc_deg: float = 360.0
    """Azimuth range of the camera ring: 360 orbits the objects; less is a denser capture of one side."""
    layout: Literal["orbit", "inside-out", "corridor", "wall"] = "orbit"
    """orbit: cameras on a ring looking in at the objects in the middle. inside-out: cameras near the room's
    centre (within inside_out_radius) looking out at the walls, at azimuths spread over arc_deg and varied
    elevations; the objects are moved aside, against the walls (between the camera zone and the walls, never
    in the middle), so no object blocks or contains a camera and the walls are seen with parallax in front.
    corridor: the room is a long box (corridor_half_length along x, corridor_half_width along y, room_half_size
    along z); cameras walk along its middle line (x axis), looking along it, forwards and backwards alternately,
    and partly at the side walls; the objects stand against the side walls, clear of the cameras' path.
    wall: forward-facing, as a handheld capture of one wall (LLFF): cameras on a small patch of the plane
    wall_distance in front of the +x wall, all looking roughly at it, the objects between them and the wall.
    arc_deg applies to orbit and inside-out only."""
    inside_out_radius: float = 0.5
    """inside-out: camera centres lie uniformly in a disc of this radius around the room's vertical axis."""
    inside_out_elevation_deg: float = 20.0
    """inside-out: the viewing direction's elevation varies uniformly by +/- this many degrees."""
    corridor_half_length: float = 9.0
    """corridor: half the corridor's length (its long axis is world x); the other layouts' room is a cube."""
    corridor_half_width: float = 2.5
    """corridor: half the corridor's width (world y); its half height is room_half_size."""
    corridor_path_half_width: float = 0.3
    """corridor: camera centres lie within +/- this of the middle line (y = 0), evenly spread along x up to
    2 world units from the end walls; the objects stand at least 0.6 beyond this band."""
    corridor_heading_deg: float = 60.0
    """corridor: headings spread uniformly by +/- this many degrees around the corridor's axis (forwards for
    every other camera along the path, backwards for the rest), so views see down the corridor and the side walls."""
    corridor_elevation_deg: float = 15.0
    """corridor: the viewing direction's elevation varies uniformly by +/- this many degrees."""
    wall_distance: float = 3.0
    """wall: distance (world units) from the camera plane to the +x wall they look at; the objects stand at least
    1.0 in front of the cameras and 0.2 before the wall."""
    wall_patch_half_width: float = 0.8
    """wall: camera centres are spread across +/- this (world y) on the camera plane, at heights between
    camera_height_min and camera_height_max."""
    wall_jitter_deg: float = 8.0
    """wall: each camera's heading and elevation turn uniformly by up to this many degrees from straight at the
    wall (a handheld capture; the orbit's roll_jitter_deg rolls them too)."""
    write_depth: bool = False
    """Also write the exact z-depth of every training and query view as depth/<image stem>.npy (float32 (H, W),
    world units along the optical axis, of the ray through each pixel centre), listed in scene.json only."""


@dataclass
class WalkConfig:
    """A smooth camera path through the room, as a robot walking around the objects would see it."""

    frames: int = 0
    """Frames on the path (0: no path); 100-200 make a tracking run."""
    arc_deg: float = 120.0
    """Azimuth the path sweeps along the camera ring."""
    blur_steps: int = 1
    """Motion blur: each frame averages this many renders spread over the motion to the next frame (1: sharp)."""
    shutter: float = 0.5
    """Share of the motion to the next frame during which the shutter is open (with blur_steps > 1)."""
    lighting: str = "query"
    """query (the queries' changed lighting) or train (the training views' lighting)."""
    seed: int = 0
    """Seeds the path's start and wiggles."""


@dataclass
class NovelViewConfig:
    """Queries from viewpoints the training cameras never took: off the capture path, closer and farther, at other
    heights, headings and rolls (what a structure-based map cannot match and a radiance field can render)."""

    views: int = 0
    """Novel-view queries (0: none)."""
    distance_range: Tuple[float, float] = (0.5, 2.0)
    """Inside-out: camera centres this many times the training disc's radius from the room's axis (walls up to
    twice as close). Corridor: centres this many times corridor_path_half_width off the middle line. Orbit: the ring
    radius scaled by 0.75-0.9 (closer) or 1.15-1.45 (farther), alternately; wall: the distance to the wall so."""
    height_scale: float = 2.0
    """The training heights' range, widened this many times around its middle (wall: the patch's width too)."""
    extra_yaw_deg: float = 15.0
    """Headings turned by up to this many degrees beyond the training views' (orbit: away from the centre)."""
    extra_pitch_deg: float = 10.0
    """Elevation beyond the training range by up to this many degrees."""
    max_roll_deg: float = 10.0
    """Roll uniformly within +/- this (the training views roll by +/- roll_jitter_deg)."""
    min_clearance: float = 0.4
    """Camera centres stay at least this far (world units) from every surface."""
    lighting: str = "train"
    """train (the training views' lighting, no noise) or query (the queries' changed lighting)."""
    seed: int = 0
    """Seeds the novel poses (with the scene's seed)."""


@dataclass(frozen=True)
class PinholeIntrinsics:
    """Pinhole intrinsics in nerfstudio's convention (pixel centres at +0.5)."""

    fx: float
    """Focal length along x, in pixels."""
    fy: float
    """Focal length along y, in pixels."""
    cx: float
    """Principal point x (w / 2 for a centred principal point)."""
    cy: float
    """Principal point y (h / 2)."""
    width: int
    """Image width in pixels."""
    height: int
    """Image height in pixels."""

    @staticmethod
    def from_fov(width: int, height: int, fov_x_deg: float) -> "PinholeIntrinsics":
        """Square pixels and a centred principal point: the exact intrinsics the renderer uses."""
        fx = (width / 2.0) / math.tan(math.radians(fov_x_deg) / 2.0)
        return PinholeIntrinsics(fx=fx, fy=fx, cx=width / 2.0, cy=height / 2.0, width=width, height=height)

    def matrix(self) -> np.ndarray:
        """The 3x3 K matrix (OpenCV convention)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def to_transforms(self) -> dict:
        """The intrinsics keys of a nerfstudio ``transforms.json`` (OPENCV model, zero distortion)."""
        return {
            "camera_model": "OPENCV",
            "fl_x": self.fx,
            "fl_y": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "w": self.width,
            "h": self.height,
            "k1": 0.0,
            "k2": 0.0,
            "p1": 0.0,
            "p2": 0.0,
        }


@dataclass(frozen=True)
class Lighting:
    """Lambertian shading by ambient light plus one point light, then a simple camera response.

    pixel = (exposure * color_gain * albedo * (ambient + diffuse * light_color * max(0, n.l) * falloff))
    ** (1 / gamma) + noise, with falloff = 1 / (1 + (distance / falloff_distance)^2).
    """

    light_position: Tuple[float, float, float]
    """Point light position (world units), inside the room."""
    light_color: Tuple[float, float, float]
    """RGB colour of the point light."""
    ambient: float
    """Ambient term, so that surfaces facing away from the light are not black (no shadows are cast)."""
    diffuse: float
    """Strength of the point light."""
    falloff_distance: float
    """Distance at which the point light's irradiance has halved."""
    exposure: float
    """Global exposure multiplier (linear)."""
    color_gain: Tuple[float, float, float]
    """Per-channel gain: a white-balance / colour cast."""
    gamma: float
    """Encoding gamma: the linear value x is written as x ** (1 / gamma)."""
    noise_std: float
    """Std of additive Gaussian sensor noise on the encoded [0, 1] values (0 = clean)."""


TRAIN_LIGHTING = Lighting(
    light_position=(1.5, -1.0, 3.0),
    light_color=(1.0, 1.0, 1.0),
    ambient=0.4,
    diffuse=1.5,
    falloff_distance=5.0,
    exposure=1.45,
    color_gain=(1.0, 1.0, 1.0),
    gamma=1.3,
    noise_std=0.0,
)
"""Lighting of the training views: a white light above, neutral camera, no noise."""

QUERY_LIGHTING = Lighting(
    light_position=(-2.5, 2.0, 0.5),
    light_color=(1.0, 0.85, 0.6),
    ambient=0.3,
    diffuse=1.8,
    falloff_distance=5.0,
    exposure=1.15,
    color_gain=(1.15, 0.95, 0.75),
    gamma=1.8,
    noise_std=0.015,
)
"""Lighting of the queries: a warm, lower light on the opposite side of the room, less ambient light,
a darker exposure, a warm colour cast, a different gamma and mild sensor noise."""
