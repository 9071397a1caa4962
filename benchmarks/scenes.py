"""Turn the real scenes of ../shared/data (and the bundled synthetic scene) into nerfstudio folders.

Each scene becomes ``OUT/train/transforms.json`` (the map's training views) and ``OUT/query/transforms.json``
(held-out queries with ground truth), both in nerfstudio's format with OpenGL camera-to-world poses in the
data's own frame. Images are referenced by absolute path where they can be used as they are, so the data
stays where its licence put it; images that must be resized or composited for a CPU-sized map are written
under ``OUT`` (never into the repository).

| scene | training views | queries | notes |
|---|---|---|---|
| ``synthetic`` | the bundled scene's ring | its query views, rendered under the training lighting | ``relit`` condition: the same views under the scene's own changed lighting |
| ``fox`` | ``split_train.txt`` (50) | ``split_query.txt`` (17) | phone images, OpenCV distortion kept (k1, k2, p1, p2) |
| ``fern`` | the 17 others | views 0, 8, 16 | LLFF forward-facing, ``images_16`` or ``images_8`` |
| ``lego`` | ``train`` (100) | a subset of ``test`` | RGBA composited on white, resized |
| ``lego-elevation`` | the 55 ``train`` views at 30 deg elevation or above | ``test`` views over 5 deg below them (46: 7 to 24 deg) | real-data novel-view split (queries from viewpoints outside the training views' range), as ``lego`` otherwise; not run by default |
| ``fox-arc`` | 36 of ``split_train.txt``, one azimuth arc (-66 to -2 deg) | the 17 views of both lists over 5 deg past it | real-data novel-view split (queries from viewpoints outside the training views' range), as ``fox`` otherwise; not run by default |
| ``heldout-room`` | 60 inside-out views, 128x96 (room half size 4) | 12, at the training lighting | ``relit``: the same 12 under the changed lighting |
| ``heldout-orbit`` | 48 orbit views, 144x108, another seed, finer textures | 12, at the training lighting | ``relit`` as above |
| ``heldout-room-large`` | 56 inside-out views, **640x480** (the family's one), room half size 6, coarser textures | 12, at the training lighting | ``relit`` as above |
| ``heldout-room-small`` | 44 inside-out views, 160x120, room half size 3.5, finer textures | 12, at the training lighting | ``relit`` as above |
| ``heldout-corridor`` | 60 corridor views, 320x240, an 18 x 5 x 6.4 corridor, 9 objects along its side walls | 12, at the training lighting | ``relit`` as above |
| ``heldout-wall`` | 40 forward-facing views of one wall (LLFF-like), 320x240, finer textures | 12, at the training lighting | ``relit`` as above |
| (generated scenes) | | | ``novel-view``: as many queries from viewpoints no training camera took (closer, farther, other heights, headings and rolls; training lighting) |
| ``7scenes:PATH`` / ``cambridge:PATH`` | the dataset's train split | its test split | the published protocol (``datasets``) |

``synthetic-heldout`` names the held-out family (``HELDOUT_SCENES``): generated scenes with fixed seeds that no default
is tuned on (benchmarks/README.md has the rule), written with their exact depth maps (``depth/``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from benchmarks.datasets import convert_dataset, select_evenly
from crossfire_ns.io.atomic import write_json_atomic, write_png_atomic
from crossfire_ns.io.transforms import write_transforms
from crossfire_ns.metrics import camera_extent

LLFF_HOLDOUT = (0, 8, 16)


@dataclass(frozen=True)
class HeldoutScene:
    """A generated scene of the held-out family: fixed, never changed once published (its seed included)."""

    layout: str
    """Generator layout (orbit, inside-out, corridor or wall)."""
    width: int
    """Image width."""
    height: int
    """Image height."""
    num_train: int
    """Training views."""
    num_query: int
    """Queries (rendered at the training lighting for ``original``, at the changed one for ``relit``)."""
    seed: int
    """Generator seed (objects, textures, poses, noise)."""
    texture_scale: float = 1.0
    """Generator texture scale (smaller: finer patterns)."""
    options: Tuple[Tuple[str, Any], ...] = ()
    """Other ``SyntheticSceneConfig`` fields, (name, value) pairs (room size, objects, ...); generator defaults else."""

    def config(self, num_queries: Optional[int] = None, write_depth: bool = True):
        """The ``SyntheticSceneConfig`` of this scene; ``num_queries`` caps its queries (smoke mode)."""
        from crossfire_ns.synthetic import SyntheticSceneConfig

        return SyntheticSceneConfig(
            width=self.width,
            height=self.height,
            num_train=self.num_train,
            num_query=self.num_query if num_queries is None else min(num_queries, self.num_query),
            seed=self.seed,
            texture_scale=self.texture_scale,
            layout=self.layout,  # type: ignore[arg-type]
            write_depth=write_depth,
            **dict(self.options),
        )


_LARGE, _SMALL = (("room_half_size", 6.0),), (("room_half_size", 3.5),)
_CORRIDOR = (("room_half_size", 3.2), ("num_spheres", 5), ("num_boxes", 4))

HELDOUT_SCENES: Dict[str, HeldoutScene] = {
    # an inside-out room (half size 4), 128x96; published, never changed
    "heldout-room": HeldoutScene("inside-out", 128, 96, num_train=60, num_query=12, seed=101),
    # an orbit of the objects, 144x108, finer textures; published, never changed
    "heldout-orbit": HeldoutScene("orbit", 144, 108, num_train=48, num_query=12, seed=202, texture_scale=0.7),
    # a larger inside-out room (half size 6), coarser textures, at 640x480: the family's one 640x480 scene and its
    # slowest to train (seconds per iteration against image size: BENCHMARKS.md)
    "heldout-room-large": HeldoutScene("inside-out", 640, 480, 56, 12, seed=303, texture_scale=1.4, options=_LARGE),
    # a small inside-out room (half size 3.5, near the least the generator allows), 160x120, finer textures
    "heldout-room-small": HeldoutScene("inside-out", 160, 120, 44, 12, seed=404, texture_scale=0.8, options=_SMALL),
    # a long corridor (18 x 5 x 6.4) walked both ways along its middle line, 9 objects along its side walls, 320x240
    "heldout-corridor": HeldoutScene("corridor", 320, 240, 60, 12, seed=505, texture_scale=1.2, options=_CORRIDOR),
    # forward-facing (LLFF-like): one wall and objects in front of it seen from a small patch, 320x240, fine textures
    "heldout-wall": HeldoutScene("wall", 320, 240, num_train=40, num_query=12, seed=606, texture_scale=0.6),
}
"""The ``synthetic-heldout`` family: generated scenes of four layouts, 12 queries each. Reporting only: no default
may be chosen on these, and each is trained with the method's defaults (no per-scene flag)."""

SCENE_FAMILIES: Dict[str, Tuple[str, ...]] = {"synthetic-heldout": tuple(HELDOUT_SCENES)}
"""Names that stand for several scenes on the command line."""

SCENE_NAMES = ("synthetic", *HELDOUT_SCENES, "fox", "fern", "lego", "lego-elevation", "fox-arc")
"""Every named scene the benchmark knows, in the order it runs them (plus ``7scenes:PATH`` / ``cambridge:PATH``)."""

DEFAULT_SCENES = ("synthetic", "synthetic-heldout", "fox", "fern", "lego")
"""What ``benchmarks.run`` runs by default (families expanded by ``expand_scenes``)."""

DATASET_PREFIXES = ("7scenes", "cambridge")
"""``<prefix>:PATH`` scene entries: a dataset folder converted with the published protocol (``datasets``)."""


def expand_scenes(names: Sequence[str]) -> List[str]:
    """Scene names with families expanded, in order, without repeats; raises on an unknown name."""
    out: List[str] = []
    for name in names:
        members = SCENE_FAMILIES.get(name, (name,))
        for member in members:
            prefix, sep, path = member.partition(":")
            if member not in SCENE_NAMES and not (sep and prefix in DATASET_PREFIXES and path):
                known = ", ".join([*SCENE_NAMES, *SCENE_FAMILIES, *(f"{p}:PATH" for p in DATASET_PREFIXES)])
                raise ValueError(f"unknown scene {member!r}; choose from {known}")
            if member not in out:
                out.append(member)
    return out


def _write_transforms(path: Path, intrinsics: dict, frames: List[dict]) -> Path:
    return write_transforms(path, frames, camera_model="OPENCV", **intrinsics)


def transforms_extent(transforms: Path) -> float:
    """``camera_extent`` of the frames of a transforms.json."""
    frames = json.loads(Path(transforms).read_text())["frames"]
    return camera_extent(np.array([f["transform_matrix"] for f in frames], dtype=np.float64))


def _save_png(path: Path, rgb: np.ndarray) -> None:
    write_png_atomic(path, rgb)


def resize_rgb(image: Image.Image, size: Tuple[int, int], background: Tuple[int, int, int] = (255, 255, 255)):
    """``image`` as (H, W, 3) uint8 RGB of ``size`` = (W, H), area-averaged; RGBA is composited on ``background``.

    Compositing happens before resizing, with premultiplied alpha, so edges do not get dark fringes.
    """
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255.0
        alpha = rgba[..., 3:4]
        rgb = rgba[..., :3] * alpha + np.asarray(background, dtype=np.float64) / 255.0 * (1.0 - alpha)
        image = Image.fromarray(np.round(rgb * 255.0).astype(np.uint8))
    image = image.convert("RGB")
    if image.size != tuple(size):
        image = image.resize(tuple(size), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.uint8)


def llff_to_transforms(
    scene_dir: Path,
    out_dir: Path,
    images: str = "images_16",
    holdout: Sequence[int] = LLFF_HOLDOUT,
    num_queries: Optional[int] = None,
):
    """Write ``out_dir/train/transforms.json`` and ``out_dir/query/transforms.json`` for an LLFF scene.

    LLFF rotation columns are [down, right, backwards]; OpenGL wants [right, up, backwards]. ``num_queries``
    keeps that many of the held-out views (evenly spread); the others are not trained on either way.
    """
    arr = np.load(scene_dir / "poses_bounds.npy")
    poses = arr[:, :15].reshape(-1, 3, 5)
    files = sorted((scene_dir / images).glob("*.png")) + sorted((scene_dir / images).glob("*.jpg"))
    if len(files) != len(poses):
        raise ValueError(f"{scene_dir / images}: {len(files)} images but {len(poses)} poses in poses_bounds.npy")
    width, height = Image.open(files[0]).size
    full_h, full_w, focal = poses[0, :, 4]
    focal = focal * width / full_w
    intrinsics = {"fl_x": focal, "fl_y": focal, "cx": width / 2, "cy": height / 2, "w": width, "h": height}
    intrinsics.update({"k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0})
    kept = [sorted(holdout)[i] for i in select_evenly(len(holdout), num_queries)]
    train, query = [], []
    for i, (pose, file) in enumerate(zip(poses, files)):
        rot = pose[:, :3]
        c2w = np.eye(4)
        c2w[:3, :3] = np.stack([rot[:, 1], -rot[:, 0], rot[:, 2]], axis=1)
        c2w[:3, 3] = pose[:, 3]
        frame = {"file_path": str(file.resolve()), "transform_matrix": c2w.tolist()}
        if i not in holdout:
            train.append(frame)
        elif i in kept:
            query.append(frame)
    return (
        _write_transforms(out_dir / "train" / "transforms.json", intrinsics, train),
        _write_transforms(out_dir / "query" / "transforms.json", intrinsics, query),
    )


def fox_to_transforms(scene_dir: Path, out_dir: Path, downscale: int = 8, num_queries: Optional[int] = None):
    """instant-ngp fox: train on ``split_train.txt``, query ``split_query.txt``; images resized by ``downscale``.

    The images are not undistorted: both transforms.json keep the OpenCV coefficients (k1, k2, p1, p2 are
    in normalised coordinates, so they do not change with the image size); nerfstudio undistorts rays in
    training, ns-localize undistorts the queries and the structure-based peer hands them to COLMAP's model.
    Intrinsics scale with the exact size ratio (pixel centres at +0.5, as in COLMAP and nerfstudio).
    """
    meta = json.loads((scene_dir / "transforms.json").read_text())
    intrinsics = _fox_intrinsics(meta, downscale)
    width, height = intrinsics["w"], intrinsics["h"]
    by_path = {f["file_path"]: f for f in meta["frames"]}
    outputs = []
    for split, list_file in (("train", "split_train.txt"), ("query", "split_query.txt")):
        names = (scene_dir / list_file).read_text().split()
        if split == "query":
            names = [names[i] for i in select_evenly(len(names), num_queries)]
        frames = []
        for name in names:
            if name not in by_path:
                raise ValueError(f"{scene_dir / list_file}: {name} is not a frame of transforms.json")
            rel = f"images/{Path(name).stem}.png"
            with Image.open(scene_dir / name) as img:
                _save_png(out_dir / split / rel, resize_rgb(img, (width, height)))
            frames.append({"file_path": rel, "transform_matrix": by_path[name]["transform_matrix"]})
        outputs.append(_write_transforms(out_dir / split / "transforms.json", intrinsics, frames))
    return tuple(outputs)


def blender_to_transforms(
    scene_dir: Path,
    out_dir: Path,
    size: int = 100,
    num_queries: Optional[int] = 10,
    train_split: str = "train",
    query_split: str = "test",
):
    """NeRF-synthetic (Blender) scene: RGBA composited on white, resized to ``size`` x ``size``.

    Focal length from ``camera_angle_x`` at the new width, principal point at the centre, no distortion.
    Queries are ``num_queries`` frames spread evenly over ``transforms_<query_split>.json``.
    """
    outputs = []
    for split, source in (("train", train_split), ("query", query_split)):
        meta = json.loads((scene_dir / f"transforms_{source}.json").read_text())
        frames_in = meta["frames"]
        if split == "query":
            frames_in = [frames_in[i] for i in select_evenly(len(frames_in), num_queries)]
        outputs.append(_blender_frames(scene_dir, out_dir / split, source, frames_in, size, meta))
    return tuple(outputs)


LEGO_ELEVATION_SPLIT: Tuple[float, float] = (30.0, 5.0)
"""``lego-elevation``: (lowest training elevation, query margin) in degrees. ``train`` views at or above 30 deg (55 of
100, 30.1 to 89.0 deg, no azimuth gap over 39 deg) train the map; ``test`` views below 30.1 - 5 deg (46 of 100, 7.1 to
24.0 deg) are the queries: every one looks from 5 to 23 deg lower than any training camera."""

FOX_ARC_SPLIT: Tuple[float, float] = (0.72, 5.0)
"""``fox-arc``: (share of ``split_train.txt`` in the training arc, query margin in degrees). The capture spans about
93 deg of azimuth around the point the cameras look at; the arc holds the first 36 of its 50 training views (-66.0 to
-1.7 deg) and the queries are the 17 views of both lists more than 5 deg past its end (4.3 to 24.8 deg)."""


def camera_elevations_deg(
    c2ws: np.ndarray, up: Sequence[float] = (0.0, 0.0, 1.0), centre: Sequence[float] = (0.0, 0.0, 0.0)
) -> np.ndarray:
    """Angle (degrees) of each camera centre above the plane through ``centre`` normal to ``up``."""
    up_dir = np.asarray(up, dtype=np.float64) / np.linalg.norm(up)
    offsets = np.asarray(c2ws, dtype=np.float64)[:, :3, 3] - np.asarray(centre, dtype=np.float64)
    heights = offsets @ up_dir
    return np.degrees(np.arctan2(heights, np.linalg.norm(offsets - np.outer(heights, up_dir), axis=1)))


def camera_look_at(c2ws: np.ndarray) -> np.ndarray:
    """The point nearest (least squares) to every camera's optical axis (OpenGL: along -z): what an orbit looks at."""
    poses = np.asarray(c2ws, dtype=np.float64)
    normal, rhs = np.zeros((3, 3)), np.zeros(3)
    for pose in poses:
        axis = -pose[:3, 2] / np.linalg.norm(pose[:3, 2])
        projector = np.eye(3) - np.outer(axis, axis)
        normal += projector
        rhs += projector @ pose[:3, 3]
    return np.linalg.lstsq(normal, rhs, rcond=None)[0]


def camera_azimuths_deg(
    c2ws: np.ndarray, up: Optional[Sequence[float]] = None, centre: Optional[Sequence[float]] = None
) -> np.ndarray:
    """Angle (degrees, -180 to 180) of each camera centre around ``up`` (default: the cameras' mean y axis) through
    ``centre`` (default: ``camera_look_at``), counterclockwise seen from above, from world x (y when up is near x)."""
    poses = np.asarray(c2ws, dtype=np.float64)
    up_dir = poses[:, :3, 1].mean(axis=0) if up is None else np.asarray(up, dtype=np.float64)
    up_dir = up_dir / np.linalg.norm(up_dir)
    origin = camera_look_at(poses) if centre is None else np.asarray(centre, dtype=np.float64)
    ref = np.eye(3)[0 if abs(up_dir[0]) < 0.9 else 1]
    ref = ref - (ref @ up_dir) * up_dir
    ref = ref / np.linalg.norm(ref)
    side = np.cross(up_dir, ref)
    offsets = poses[:, :3, 3] - origin
    return np.degrees(np.arctan2(offsets @ side, offsets @ ref))


def azimuth_arc(azimuths_deg: Sequence[float], fraction: float) -> Tuple[float, float]:
    """(start, end) in degrees, start <= end < start + 360: the contiguous arc counterclockwise from the first azimuth
    after the widest empty gap that holds ``round(fraction * n)`` of the ``n`` azimuths (at least one)."""
    ordered = np.sort(np.mod(np.asarray(azimuths_deg, dtype=np.float64), 360.0))
    gaps = np.diff(np.r_[ordered, ordered[0] + 360.0])
    first = (int(np.argmax(gaps)) + 1) % len(ordered)
    unrolled = np.r_[ordered[first:], ordered[:first] + 360.0]
    count = min(len(unrolled), max(1, int(round(fraction * len(unrolled)))))
    start = float((unrolled[0] + 180.0) % 360.0 - 180.0)
    return start, start + float(unrolled[count - 1] - unrolled[0])


def degrees_outside_arc(azimuths_deg: Sequence[float], arc: Tuple[float, float]) -> np.ndarray:
    """How far (degrees, around the circle) each azimuth lies outside ``arc`` = (start, end); 0 inside it."""
    start, end = arc
    rel = np.mod(np.asarray(azimuths_deg, dtype=np.float64) - start, 360.0)
    past = rel - (end - start)
    return np.where(past <= 1e-9, 0.0, np.minimum(past, 360.0 - rel))


def _ordered_queries(gaps: np.ndarray, candidates: np.ndarray, num_queries: Optional[int]) -> List[int]:
    """Indices of ``candidates`` ordered by ``gaps`` (nearest first, ties in source order), ``num_queries`` of them
    spread evenly over that order."""
    ordered = [int(i) for i in np.flatnonzero(candidates)[np.argsort(gaps[candidates], kind="stable")]]
    return [ordered[i] for i in select_evenly(len(ordered), num_queries)]


def lego_elevation_split(
    train_c2ws: np.ndarray,
    test_c2ws: np.ndarray,
    min_train_elevation: float = LEGO_ELEVATION_SPLIT[0],
    margin: float = LEGO_ELEVATION_SPLIT[1],
    num_queries: Optional[int] = None,
) -> Tuple[List[int], List[int]]:
    """(training indices, query indices) of a Blender scene's elevation split: ``train`` views at or above
    ``min_train_elevation``; ``test`` views more than ``margin`` below the lowest of them, ``num_queries`` spread
    evenly from the nearest to the lowest."""
    train_el = camera_elevations_deg(train_c2ws)
    kept = [int(i) for i in np.flatnonzero(train_el >= min_train_elevation)]
    if not kept:
        raise ValueError(f"no training view at or above {min_train_elevation} deg elevation")
    below = train_el[kept].min() - camera_elevations_deg(test_c2ws)
    return kept, _ordered_queries(below, below > margin, num_queries)


def fox_arc_split(
    train_c2ws: np.ndarray,
    other_c2ws: np.ndarray,
    fraction: float = FOX_ARC_SPLIT[0],
    margin: float = FOX_ARC_SPLIT[1],
    num_queries: Optional[int] = None,
) -> Tuple[List[int], List[int], Tuple[float, float]]:
    """(training indices into ``train_c2ws``, query indices into both lists concatenated, the arc in degrees): the
    arc (``azimuth_arc``) holds ``fraction`` of the training views, azimuths around all cameras' mean up direction
    through the point they look at; queries lie more than ``margin`` outside it, ``num_queries`` spread evenly."""
    every = np.concatenate([np.asarray(train_c2ws, dtype=np.float64), np.asarray(other_c2ws, dtype=np.float64)])
    azimuths = camera_azimuths_deg(every)
    arc = azimuth_arc(azimuths[: len(train_c2ws)], fraction)
    outside = degrees_outside_arc(azimuths, arc)
    kept = [int(i) for i in np.flatnonzero(outside[: len(train_c2ws)] == 0.0)]
    return kept, _ordered_queries(outside, outside > margin, num_queries), arc


def _blender_frames(scene_dir: Path, out_dir: Path, source: str, frames_in: List[dict], size: int, meta: dict):
    """Write ``frames_in`` of ``transforms_<source>.json`` (``meta``) as ``out_dir/transforms.json``: images resized to
    ``size`` x ``size`` (``resize_rgb``), focal length from ``camera_angle_x``, centred principal point."""
    focal = 0.5 * size / math.tan(0.5 * float(meta["camera_angle_x"]))
    intrinsics = {"fl_x": focal, "fl_y": focal, "cx": size / 2, "cy": size / 2, "w": size, "h": size}
    intrinsics.update({"k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0})
    frames = []
    for frame in frames_in:
        src = scene_dir / frame["file_path"]
        src = src if src.suffix else src.with_suffix(".png")
        rel = f"images/{source}_{src.stem}.png"
        with Image.open(src) as img:
            _save_png(out_dir / rel, resize_rgb(img, (size, size)))
        frames.append({"file_path": rel, "transform_matrix": frame["transform_matrix"]})
    return _write_transforms(out_dir / "transforms.json", intrinsics, frames)


def blender_elevation_to_transforms(
    scene_dir: Path,
    out_dir: Path,
    size: int = 100,
    num_queries: Optional[int] = None,
    min_train_elevation: float = LEGO_ELEVATION_SPLIT[0],
    margin: float = LEGO_ELEVATION_SPLIT[1],
):
    """A Blender scene split by elevation (``lego_elevation_split``): the map sees it only from above, the queries
    come from lower; images as ``blender_to_transforms`` makes them."""
    train_meta = json.loads((scene_dir / "transforms_train.json").read_text())
    test_meta = json.loads((scene_dir / "transforms_test.json").read_text())
    kept, queries = lego_elevation_split(
        np.array([f["transform_matrix"] for f in train_meta["frames"]], dtype=np.float64),
        np.array([f["transform_matrix"] for f in test_meta["frames"]], dtype=np.float64),
        min_train_elevation,
        margin,
        num_queries,
    )
    return (
        _blender_frames(
            scene_dir, out_dir / "train", "train", [train_meta["frames"][i] for i in kept], size, train_meta
        ),
        _blender_frames(
            scene_dir, out_dir / "query", "test", [test_meta["frames"][i] for i in queries], size, test_meta
        ),
    )


def _fox_intrinsics(meta: dict, downscale: int) -> dict:
    """The fox camera at 1/``downscale`` size (intrinsics scaled by the exact size ratio), distortion kept."""
    full_w, full_h = int(meta["w"]), int(meta["h"])
    width, height = round(full_w / downscale), round(full_h / downscale)
    sx, sy = width / full_w, height / full_h
    return {
        "fl_x": meta["fl_x"] * sx,
        "fl_y": meta["fl_y"] * sy,
        "cx": meta["cx"] * sx,
        "cy": meta["cy"] * sy,
        "w": width,
        "h": height,
        **{k: float(meta.get(k, 0.0)) for k in ("k1", "k2", "p1", "p2")},
    }


def fox_arc_to_transforms(
    scene_dir: Path,
    out_dir: Path,
    downscale: int = 8,
    num_queries: Optional[int] = None,
    fraction: float = FOX_ARC_SPLIT[0],
    margin: float = FOX_ARC_SPLIT[1],
):
    """instant-ngp fox split by azimuth (``fox_arc_split``): train on one arc of ``split_train.txt``, query the views
    of ``split_train.txt`` + ``split_query.txt`` beyond it; images and camera as ``fox_to_transforms`` makes them."""
    meta = json.loads((scene_dir / "transforms.json").read_text())
    intrinsics = _fox_intrinsics(meta, downscale)
    by_path = {f["file_path"]: f for f in meta["frames"]}
    lists = [(scene_dir / name).read_text().split() for name in ("split_train.txt", "split_query.txt")]
    for list_file, names in zip(("split_train.txt", "split_query.txt"), lists):
        missing = [name for name in names if name not in by_path]
        if missing:
            raise ValueError(f"{scene_dir / list_file}: {missing[0]} is not a frame of transforms.json")
    poses = [np.array([by_path[n]["transform_matrix"] for n in names], dtype=np.float64) for names in lists]
    kept, queries, _ = fox_arc_split(poses[0], poses[1], fraction, margin, num_queries)
    every = lists[0] + lists[1]
    outputs = []
    for split, names in (("train", [lists[0][i] for i in kept]), ("query", [every[i] for i in queries])):
        frames = []
        for name in names:
            rel = f"images/{Path(name).stem}.png"
            with Image.open(scene_dir / name) as img:
                _save_png(out_dir / split / rel, resize_rgb(img, (intrinsics["w"], intrinsics["h"])))
            frames.append({"file_path": rel, "transform_matrix": by_path[name]["transform_matrix"]})
        outputs.append(_write_transforms(out_dir / split / "transforms.json", intrinsics, frames))
    return tuple(outputs)


def synthetic_to_transforms(
    out_dir: Path,
    width: int = 160,
    height: int = 120,
    num_train: int = 40,
    num_queries: int = 10,
    seed: int = 0,
    with_relit: bool = False,
    config=None,
    with_novel: bool = False,
):
    """A generated scene: ``out_dir/train`` (training views) and ``out_dir/query`` (queries at training lighting).

    ``crossfire-make-scene`` renders its queries under a changed lighting; for the ``original`` condition the
    same query views are rendered under the training lighting instead (``generate_scene``'s
    ``query_lighting``). With ``with_relit`` the scene's own relit queries go to ``out_dir/relit``.
    ``config`` (a ``SyntheticSceneConfig``) replaces the size arguments (the held-out family's scenes). With
    ``with_novel`` as many queries from viewpoints no training camera took (``NovelViewConfig``, training lighting)
    go to ``out_dir/novel``. Returns (train transforms.json, query transforms.json, relit transforms.json or None).
    """
    from crossfire_ns.synthetic import (
        TRAIN_LIGHTING,
        NovelViewConfig,
        SyntheticSceneConfig,
        generate_novel_views,
        generate_scene,
    )

    if config is None:
        config = SyntheticSceneConfig(width=width, height=height, num_train=num_train, num_query=num_queries, seed=seed)
    train_dir = generate_scene(out_dir / "train", config, query_lighting=TRAIN_LIGHTING)
    query = _move_queries(train_dir / "queries", out_dir / "query")
    relit = None
    if with_relit:
        other = generate_scene(out_dir / "relit-render", replace(config, write_depth=False))
        relit = _move_queries(other / "queries", out_dir / "relit")
    if with_novel:
        generate_novel_views(out_dir / "novel", config, NovelViewConfig(views=max(1, config.num_query)))
    return train_dir / "transforms.json", query, relit


def heldout_to_transforms(
    name: str, out_dir: Path, num_queries: Optional[int] = None, with_relit: bool = False, with_novel: bool = False
):
    """A scene of the held-out family (``HELDOUT_SCENES``), written with depth; ``num_queries`` caps its queries
    (smoke mode). Returns what ``synthetic_to_transforms`` returns."""
    config = HELDOUT_SCENES[name].config(num_queries)
    return synthetic_to_transforms(out_dir, with_relit=with_relit, config=config, with_novel=with_novel)


def _move_queries(src: Path, dst: Path) -> Path:
    """Point a query transforms.json written by generate_scene at its images by absolute path, from ``dst``."""
    meta = json.loads((src / "transforms.json").read_text())
    for frame in meta["frames"]:
        frame["file_path"] = str((src / frame["file_path"]).resolve())
    write_json_atomic(dst / "transforms.json", meta)
    return dst / "transforms.json"


@dataclass(frozen=True)
class SceneSizes:
    """How big each scene is made for a benchmark mode (CPU budget)."""

    num_queries: int = 4
    """Queries per scene (evenly spread over the scene's query set; fern has 3 at most)."""
    scene_num_queries: Tuple[Tuple[str, int], ...] = ()
    """Per-scene exceptions to num_queries, (scene, queries) pairs (held-out scenes have 12 at most)."""
    dataset_downscale: int = 1
    """7-Scenes / Cambridge images are divided by this (1: used as they are, by absolute path)."""

    def queries_for(self, name: str) -> int:
        """Queries of scene ``name`` (before capping by what the scene has)."""
        return dict(self.scene_num_queries).get(name, self.num_queries)

    synthetic_size: Tuple[int, int] = (160, 120)
    """Bundled scene image size (width, height)."""
    synthetic_num_train: int = 40
    """Bundled scene training views."""
    fox_downscale: int = 8
    """fox images are 1080x1920; divided by this (8: 135x240)."""
    fern_images: str = "images_16"
    """LLFF image folder of fern (images_16: 252x189, images_8: 504x378)."""
    lego_size: int = 100
    """lego images are 800x800; resized to this square size."""


@dataclass
class PreparedScene:
    """A scene ready to train on and to query."""

    name: str
    """One of SCENE_NAMES, or ``7scenes:PATH`` / ``cambridge:PATH``."""
    train_dir: Path
    """Folder with the training transforms.json (what ns-train --data gets)."""
    query_dir: Path
    """Folder with the queries' transforms.json, original condition."""
    scene_extent: float
    """Diagonal of the training cameras' bounding box (data units): recall thresholds scale with it."""
    extra_conditions: Dict[str, Path] = field(default_factory=dict)
    """Scene-specific query folders beyond the photometric ones (synthetic: ``relit``)."""
    train_args: Tuple[str, ...] = ()
    """Extra ns-train arguments this scene needs (before the dataparser subcommand)."""
    num_train: int = 0
    num_queries: int = 0
    image_size: Tuple[int, int] = (0, 0)
    """(width, height) of the training images."""
    protocol: str = "relative"
    """relative: thresholds scale with the camera extent; metric (7-Scenes, Cambridge): the published cm / deg,
    run with a scene extent of 1 m (``scene_extent`` is then 1.0)."""


SCENE_TRAIN_ARGS: Dict[str, Tuple[str, ...]] = {
    "lego": ("--pipeline.model.background-color", "white"),
    "lego-elevation": ("--pipeline.model.background-color", "white"),
}
"""lego's images are composited on white: the field renders a white background instead of learning one."""


def _count_and_size(transforms: Path) -> Tuple[int, Tuple[int, int]]:
    meta = json.loads(transforms.read_text())
    return len(meta["frames"]), (int(meta.get("w", 0)), int(meta.get("h", 0)))


def prepare_scene(
    name: str, out_dir: Path, data_root: Path, sizes: SceneSizes, with_relit: bool = False, with_novel: bool = False
) -> PreparedScene:
    """Convert (or reuse, when ``out_dir/prepared.json`` says it was made with the same settings) one scene;
    ``with_relit`` / ``with_novel``: the generated scenes' relit and novel-view queries too."""
    out_dir = Path(out_dir)
    key = {
        "name": name, "sizes": asdict(sizes), "data_root": str(data_root), "relit": with_relit, "novel": with_novel,
        "version": 4,
    }  # fmt: skip
    key = json.loads(json.dumps(key))  # as it reads back from prepared.json (tuples become lists)
    marker = out_dir / "prepared.json"
    cached = json.loads(marker.read_text()) if marker.is_file() else None
    if cached is None or cached.get("key") != key:
        num_queries = sizes.queries_for(name)
        relit = None
        if name == "synthetic":
            width, height = sizes.synthetic_size
            train, query, relit = synthetic_to_transforms(
                out_dir, width, height, sizes.synthetic_num_train, num_queries, with_relit=with_relit,
                with_novel=with_novel,
            )  # fmt: skip
        elif name in HELDOUT_SCENES:
            train, query, relit = heldout_to_transforms(name, out_dir, num_queries, with_relit, with_novel)
        elif name == "fox":
            train, query = fox_to_transforms(data_root / "ingp_fox", out_dir, sizes.fox_downscale, num_queries)
        elif name == "fern":
            train, query = llff_to_transforms(
                data_root / "llff_fern", out_dir, sizes.fern_images, num_queries=num_queries
            )
        elif name == "lego":
            train, query = blender_to_transforms(
                data_root / "nerf_synthetic_lego", out_dir, sizes.lego_size, num_queries
            )
        elif name == "lego-elevation":
            train, query = blender_elevation_to_transforms(
                data_root / "nerf_synthetic_lego", out_dir, sizes.lego_size, num_queries
            )
        elif name == "fox-arc":
            train, query = fox_arc_to_transforms(data_root / "ingp_fox", out_dir, sizes.fox_downscale, num_queries)
        elif name.partition(":")[0] in DATASET_PREFIXES:
            train, query = convert_dataset(name, out_dir, num_queries, sizes.dataset_downscale)
        else:
            raise ValueError(
                f"unknown scene {name!r}; choose from {', '.join(SCENE_NAMES)} or 7scenes:PATH, cambridge:PATH"
            )
        cached = {
            "key": key,
            "train": str(train),
            "query": str(query),
            "relit": None if relit is None else str(relit),
            "novel": str(out_dir / "novel")
            if (out_dir / "novel" / "transforms.json").is_file() and with_novel
            else None,
        }
        write_json_atomic(marker, cached)
    train, query = Path(cached["train"]), Path(cached["query"])
    num_train, size = _count_and_size(train)
    num_queries, _ = _count_and_size(query)
    extra = {"relit": Path(cached["relit"]).parent} if cached.get("relit") else {}
    if cached.get("novel"):
        extra["novel-view"] = Path(cached["novel"])
    metric = name.partition(":")[0] in DATASET_PREFIXES
    return PreparedScene(
        name=name,
        train_dir=train.parent,
        query_dir=query.parent,
        scene_extent=1.0 if metric else transforms_extent(train),
        protocol="metric" if metric else "relative",
        extra_conditions=extra,
        train_args=SCENE_TRAIN_ARGS.get(name, ()),
        num_train=num_train,
        num_queries=num_queries,
        image_size=size,
    )
