"""The field's own datasets as nerfstudio train/query folders, for the published protocol (median cm / deg, recall
at 5 cm / 5 deg): Microsoft 7-Scenes and Cambridge Landmarks. Both are in metres, so the benchmark runs them with
a scene extent of 1 (m): its thresholds (1%, 1 deg), (2%, 2 deg), (5%, 5 deg) are then 1, 2 and 5 cm.

**7-Scenes** (``seq-XX/frame-XXXXXX.color.png|jpg`` + ``frame-XXXXXX.pose.txt``, ``TrainSplit.txt`` /
``TestSplit.txt`` listing ``sequenceN``): a pose file is a 4x4 camera-to-world matrix with OpenCV camera axes
(x right, y down, z forward), converted to OpenGL's (y and z flipped). Intrinsics are not in the files: the
convention of the field is 640x480, fx = fy = 585, (cx, cy) = (320, 240) (the depth camera's, which the poses
belong to; kapture uses 525 for the colour camera; both are approximations, the colour and depth images are not
registered, and the ground truth is KinectFusion's).

**Cambridge Landmarks** (``dataset_train.txt`` / ``dataset_test.txt``: three header lines, then
``seqN/frameXXXXX.png X Y Z W P Q R``): X Y Z is the camera centre in world coordinates and (W, P, Q, R) the
unit quaternion (w, x, y, z) of the world-to-camera rotation (OpenCV axes), as in the VisualSfM reconstruction
the lists come from (DSAC*'s and PoseNet's loaders read them so: t = -R c). Intrinsics are not in the lists: with
``reconstruction.nvm`` in the scene folder, each image's focal length comes from it (its radial distortion term
is VisualSfM's own model and is not used); without it, ``CAMBRIDGE_FOCAL_PX`` at 1920 px wide is assumed for every
image (an approximation: per-image focal lengths in the reconstructions vary). The principal point is the image
centre, no distortion.

Images are referenced by absolute path, or resized by ``downscale`` into the output folder (intrinsics scaled).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation

from crossfire_ns.geometry import opengl_to_opencv_c2w
from crossfire_ns.io.atomic import write_png_atomic
from crossfire_ns.io.pose_formats import colmap_to_c2w
from crossfire_ns.io.transforms import write_transforms

SEVEN_SCENES_INTRINSICS = {"fl_x": 585.0, "fl_y": 585.0, "cx": 320.0, "cy": 240.0, "w": 640, "h": 480}
"""7-Scenes' conventional pinhole camera (pixel centres at +0.5 as nerfstudio and COLMAP)."""

CAMBRIDGE_FOCAL_PX = 1670.0
"""Assumed focal length (pixels, at 1920 px wide) when a Cambridge scene has no ``reconstruction.nvm``."""

_NO_DISTORTION = {"k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0}


def _image_frame(src: Path, out_dir: Path, rel: str, downscale: int) -> Tuple[str, Tuple[int, int]]:
    """``file_path`` of an image (absolute, or a resized copy under ``out_dir``) and its (width, height)."""
    with Image.open(src) as img:
        if downscale <= 1:
            return str(src.resolve()), img.size
        size = (round(img.size[0] / downscale), round(img.size[1] / downscale))
        write_png_atomic(out_dir / rel, np.asarray(img.convert("RGB").resize(size, Image.Resampling.BOX)))
        return rel, size


def _scaled(intrinsics: Dict[str, float], full: Tuple[int, int], size: Tuple[int, int]) -> Dict[str, float]:
    sx, sy = size[0] / full[0], size[1] / full[1]
    return {
        "fl_x": intrinsics["fl_x"] * sx,
        "fl_y": intrinsics["fl_y"] * sy,
        "cx": intrinsics["cx"] * sx,
        "cy": intrinsics["cy"] * sy,
        "w": size[0],
        "h": size[1],
    }


def _sequences(split_file: Path) -> List[str]:
    """``sequence1`` lines -> ``seq-01`` folder names."""
    names = []
    for line in split_file.read_text().split():
        match = re.fullmatch(r"sequence(\d+)", line.strip())
        if match is None:
            raise ValueError(f"{split_file}: expected lines like 'sequence1', got {line!r}")
        names.append(f"seq-{int(match.group(1)):02d}")
    return names


def select_evenly(count: int, num: Optional[int]) -> List[int]:
    """``num`` indices spread evenly over ``range(count)`` (first and last included); all with ``None``."""
    if num is None or num >= count:
        return list(range(count))
    if num <= 0:
        return []
    if num == 1:
        return [count // 2]
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, num)})


def seven_scenes_to_transforms(
    scene_dir: Path, out_dir: Path, num_queries: Optional[int] = None, downscale: int = 1, train_stride: int = 1
):
    """``out_dir/train`` and ``out_dir/query`` transforms.json of a 7-Scenes scene (``TrainSplit`` / ``TestSplit``).

    ``num_queries`` keeps that many test frames, evenly spread; ``train_stride`` keeps every k-th training frame.
    Returns (train transforms.json, query transforms.json)."""
    scene_dir, out_dir = Path(scene_dir), Path(out_dir)
    outputs = []
    for split, list_file in (("train", "TrainSplit.txt"), ("query", "TestSplit.txt")):
        files: List[Path] = []
        for seq in _sequences(scene_dir / list_file):
            if not (scene_dir / seq).is_dir():
                raise ValueError(f"{scene_dir / list_file} lists {seq}, which is not in {scene_dir}")
            files += sorted(p for p in (scene_dir / seq).glob("frame-*.color.*") if p.suffix in (".png", ".jpg"))
        files = (
            files[::train_stride] if split == "train" else [files[i] for i in select_evenly(len(files), num_queries)]
        )
        if not files:
            raise ValueError(f"{scene_dir}: no frame-*.color.png|jpg in the sequences of {list_file}")
        frames, size = [], None
        for src in files:
            pose_file = src.with_name(src.name.split(".")[0] + ".pose.txt")
            c2w_cv = np.loadtxt(pose_file, dtype=np.float64).reshape(4, 4)
            rel = f"images/{src.parent.name}_{src.name.split('.')[0]}.png"
            file_path, size = _image_frame(src, out_dir / split, rel, downscale)
            frames.append({"file_path": file_path, "transform_matrix": opengl_to_opencv_c2w(c2w_cv).tolist()})
        full = (SEVEN_SCENES_INTRINSICS["w"], SEVEN_SCENES_INTRINSICS["h"])
        intrinsics = {**_scaled(SEVEN_SCENES_INTRINSICS, full, size), **_NO_DISTORTION}
        outputs.append(
            write_transforms(out_dir / split / "transforms.json", frames, camera_model="OPENCV", **intrinsics)
        )
    return tuple(outputs)


def read_cambridge_list(path: Path) -> List[Tuple[str, np.ndarray]]:
    """(image name, OpenGL camera-to-world) of each line of a Cambridge ``dataset_*.txt`` (3 header lines)."""
    entries = []
    for number, line in enumerate(Path(path).read_text().splitlines()[3:], start=4):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 8:
            raise ValueError(f"{path}:{number}: expected 'name X Y Z W P Q R', got {line!r}")
        centre, qvec = np.array(parts[1:4], dtype=np.float64), np.array(parts[4:8], dtype=np.float64)
        qvec /= np.linalg.norm(qvec)
        R = Rotation.from_quat([*qvec[1:], qvec[0]]).as_matrix()  # scipy wants (x, y, z, w)
        entries.append((parts[0], colmap_to_c2w(qvec, -R @ centre)))
    return entries


def read_nvm_focals(path: Path) -> Dict[str, float]:
    """Image name without extension -> focal length (pixels) from a VisualSfM ``.nvm`` reconstruction."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines or not lines[0].startswith("NVM_V3"):
        raise ValueError(f"{path}: not an NVM_V3 file")
    count = int(lines[1].split()[0])
    focals = {}
    for line in lines[2 : 2 + count]:
        parts = line.split()
        focals[str(Path(parts[0]).with_suffix(""))] = float(parts[1])
    return focals


def cambridge_to_transforms(
    scene_dir: Path,
    out_dir: Path,
    num_queries: Optional[int] = None,
    downscale: int = 1,
    focal_px: float = CAMBRIDGE_FOCAL_PX,
):
    """``out_dir/train`` and ``out_dir/query`` transforms.json of a Cambridge Landmarks scene, per-frame focal
    lengths (``reconstruction.nvm`` if present, else ``focal_px`` scaled from 1920 px wide). Returns (train, query)."""
    scene_dir, out_dir = Path(scene_dir), Path(out_dir)
    nvm = scene_dir / "reconstruction.nvm"
    focals = read_nvm_focals(nvm) if nvm.is_file() else {}
    outputs = []
    for split, list_file in (("train", "dataset_train.txt"), ("query", "dataset_test.txt")):
        entries = read_cambridge_list(scene_dir / list_file)
        if split == "query":
            entries = [entries[i] for i in select_evenly(len(entries), num_queries)]
        frames = []
        for name, c2w in entries:
            src = scene_dir / name
            with Image.open(src) as img:
                full = img.size
            rel = "images/" + name.replace("/", "_").rsplit(".", 1)[0] + ".png"
            file_path, size = _image_frame(src, out_dir / split, rel, downscale)
            focal = focals.get(str(Path(name).with_suffix("")), focal_px * full[0] / 1920.0)
            camera = {"fl_x": focal, "fl_y": focal, "cx": full[0] / 2, "cy": full[1] / 2, "w": full[0], "h": full[1]}
            frames.append({"file_path": file_path, "transform_matrix": c2w.tolist(), **_scaled(camera, full, size)})
        if not frames:
            raise ValueError(f"{scene_dir / list_file}: no images listed")
        outputs.append(
            write_transforms(out_dir / split / "transforms.json", frames, camera_model="OPENCV", **_NO_DISTORTION)
        )
    return tuple(outputs)


CONVERTERS = {"7scenes": seven_scenes_to_transforms, "cambridge": cambridge_to_transforms}
"""``--scenes <prefix>:PATH`` -> its converter."""


def dataset_label(entry: str) -> str:
    """A file-system-safe scene name for ``7scenes:PATH`` / ``cambridge:PATH`` (``7scenes-stairs``)."""
    prefix, _, path = entry.partition(":")
    return f"{prefix}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', Path(path).expanduser().name or 'scene')}"


def convert_dataset(entry: str, out_dir: Path, num_queries: Optional[int], downscale: int = 1) -> Sequence[Path]:
    """Convert ``<prefix>:PATH`` with its converter; returns (train transforms.json, query transforms.json)."""
    prefix, _, path = entry.partition(":")
    if prefix not in CONVERTERS or not path:
        raise ValueError(f"expected 7scenes:PATH or cambridge:PATH, got {entry!r}")
    return CONVERTERS[prefix](Path(path).expanduser(), out_dir, num_queries=num_queries, downscale=downscale)
