"""Turn the real scenes of ../shared/data into nerfstudio transforms.json files (without copying images).

Images are referenced by absolute path, so the data stays where its licence put it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Sequence

import numpy as np
from PIL import Image

LLFF_HOLDOUT = (0, 8, 16)


def _write_transforms(path: Path, intrinsics: dict, frames: List[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"camera_model": "OPENCV", **intrinsics, "frames": frames}, indent=2))
    tmp.replace(path)
    return path


def llff_to_transforms(
    scene_dir: Path, out_dir: Path, images: str = "images_16", holdout: Sequence[int] = LLFF_HOLDOUT
):
    """Write ``out_dir/train/transforms.json`` and ``out_dir/query/transforms.json`` for an LLFF scene.

    LLFF rotation columns are [down, right, backwards]; OpenGL wants [right, up, backwards].
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
    train, query = [], []
    for i, (pose, file) in enumerate(zip(poses, files)):
        rot = pose[:, :3]
        c2w = np.eye(4)
        c2w[:3, :3] = np.stack([rot[:, 1], -rot[:, 0], rot[:, 2]], axis=1)
        c2w[:3, 3] = pose[:, 3]
        frame = {"file_path": str(file.resolve()), "transform_matrix": c2w.tolist()}
        (query if i in holdout else train).append(frame)
    return (
        _write_transforms(out_dir / "train" / "transforms.json", intrinsics, train),
        _write_transforms(out_dir / "query" / "transforms.json", intrinsics, query),
    )
