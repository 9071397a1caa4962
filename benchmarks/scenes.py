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
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from crossfire_ns.io.atomic import write_json_atomic, write_png_atomic
from crossfire_ns.io.transforms import write_transforms
from crossfire_ns.metrics import camera_extent

LLFF_HOLDOUT = (0, 8, 16)
SCENE_NAMES = ("synthetic", "fox", "fern", "lego")
"""Every scene the benchmark knows, in the order it runs them."""


def _write_transforms(path: Path, intrinsics: dict, frames: List[dict]) -> Path:
    return write_transforms(path, frames, camera_model="OPENCV", **intrinsics)


def select_evenly(count: int, num: Optional[int]) -> List[int]:
    """``num`` indices spread evenly over ``range(count)`` (first and last included); all with ``None``."""
    if num is None or num >= count:
        return list(range(count))
    if num <= 0:
        return []
    if num == 1:
        return [count // 2]
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, num)})


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
    full_w, full_h = int(meta["w"]), int(meta["h"])
    width, height = round(full_w / downscale), round(full_h / downscale)
    sx, sy = width / full_w, height / full_h
    intrinsics = {
        "fl_x": meta["fl_x"] * sx,
        "fl_y": meta["fl_y"] * sy,
        "cx": meta["cx"] * sx,
        "cy": meta["cy"] * sy,
        "w": width,
        "h": height,
        **{k: float(meta.get(k, 0.0)) for k in ("k1", "k2", "p1", "p2")},
    }
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
        focal = 0.5 * size / math.tan(0.5 * float(meta["camera_angle_x"]))
        intrinsics = {"fl_x": focal, "fl_y": focal, "cx": size / 2, "cy": size / 2, "w": size, "h": size}
        intrinsics.update({"k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0})
        frames_in = meta["frames"]
        if split == "query":
            frames_in = [frames_in[i] for i in select_evenly(len(frames_in), num_queries)]
        frames = []
        for frame in frames_in:
            src = scene_dir / frame["file_path"]
            src = src if src.suffix else src.with_suffix(".png")
            rel = f"images/{source}_{src.stem}.png"
            with Image.open(src) as img:
                _save_png(out_dir / split / rel, resize_rgb(img, (size, size)))
            frames.append({"file_path": rel, "transform_matrix": frame["transform_matrix"]})
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
):
    """The bundled scene: ``out_dir/train`` (training views) and ``out_dir/query`` (queries at training lighting).

    ``crossfire-make-scene`` renders its queries under a changed lighting; for the ``original`` condition the
    same query views are rendered under the training lighting instead (``generate_scene``'s
    ``query_lighting``). With ``with_relit`` the scene's own relit queries go to ``out_dir/relit``.
    Returns (train transforms.json, query transforms.json, relit transforms.json or None).
    """
    from crossfire_ns.synthetic import TRAIN_LIGHTING, SyntheticSceneConfig, generate_scene

    config = SyntheticSceneConfig(width=width, height=height, num_train=num_train, num_query=num_queries, seed=seed)
    train_dir = generate_scene(out_dir / "train", config, query_lighting=TRAIN_LIGHTING)
    query = _move_queries(train_dir / "queries", out_dir / "query")
    relit = None
    if with_relit:
        other = generate_scene(out_dir / "relit-render", config)
        relit = _move_queries(other / "queries", out_dir / "relit")
    return train_dir / "transforms.json", query, relit


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
    """One of SCENE_NAMES."""
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


SCENE_TRAIN_ARGS: Dict[str, Tuple[str, ...]] = {
    "lego": ("--pipeline.model.background-color", "white"),
}
"""lego's images are composited on white: the field renders a white background instead of learning one."""


def _count_and_size(transforms: Path) -> Tuple[int, Tuple[int, int]]:
    meta = json.loads(transforms.read_text())
    return len(meta["frames"]), (int(meta.get("w", 0)), int(meta.get("h", 0)))


def prepare_scene(
    name: str, out_dir: Path, data_root: Path, sizes: SceneSizes, with_relit: bool = False
) -> PreparedScene:
    """Convert (or reuse, when ``out_dir/prepared.json`` says it was made with the same settings) one scene."""
    out_dir = Path(out_dir)
    key = {"name": name, "sizes": asdict(sizes), "data_root": str(data_root), "relit": with_relit, "version": 2}
    key = json.loads(json.dumps(key))  # as it reads back from prepared.json (tuples become lists)
    marker = out_dir / "prepared.json"
    cached = json.loads(marker.read_text()) if marker.is_file() else None
    if cached is None or cached.get("key") != key:
        if name == "synthetic":
            width, height = sizes.synthetic_size
            train, query, relit = synthetic_to_transforms(
                out_dir, width, height, sizes.synthetic_num_train, sizes.num_queries, with_relit=with_relit
            )
        elif name == "fox":
            train, query = fox_to_transforms(data_root / "ingp_fox", out_dir, sizes.fox_downscale, sizes.num_queries)
            relit = None
        elif name == "fern":
            train, query = llff_to_transforms(
                data_root / "llff_fern", out_dir, sizes.fern_images, num_queries=sizes.num_queries
            )
            relit = None
        elif name == "lego":
            train, query = blender_to_transforms(
                data_root / "nerf_synthetic_lego", out_dir, sizes.lego_size, sizes.num_queries
            )
            relit = None
        else:
            raise ValueError(f"unknown scene {name!r}; choose from {', '.join(SCENE_NAMES)}")
        cached = {
            "key": key,
            "train": str(train),
            "query": str(query),
            "relit": None if relit is None else str(relit),
        }
        write_json_atomic(marker, cached)
    train, query = Path(cached["train"]), Path(cached["query"])
    num_train, size = _count_and_size(train)
    num_queries, _ = _count_and_size(query)
    extra = {"relit": Path(cached["relit"]).parent} if cached.get("relit") else {}
    return PreparedScene(
        name=name,
        train_dir=train.parent,
        query_dir=query.parent,
        scene_extent=transforms_extent(train),
        extra_conditions=extra,
        train_args=SCENE_TRAIN_ARGS.get(name, ()),
        num_train=num_train,
        num_queries=num_queries,
        image_size=size,
    )
