"""A trained crossfire map as a library object: load it once, then localize, view or benchmark against it.

``load_map`` is the one way to load a map (ns-localize, the viewer tools, the benchmarks and the tests use it);
``CrossfireMap.from_pipeline`` wraps a pipeline that is already running (the viewer's). Poses of the training
data's transforms.json live in its *original* frame; nerfstudio's dataparser moves them into a *normalised* frame
(``transform``, ``scale``), in which the model renders.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple

import numpy as np
import torch

from crossfire_ns.compat import allow_nerfstudio_checkpoints
from crossfire_ns.errors import CrossfireInputError
from crossfire_ns.geometry import (
    covariance_normalized_to_original,
    normalized_to_original,
    original_to_normalized,
    saved_frame_normalization,
    scale_intrinsics,
)
from crossfire_ns.io.queries import opencv_distortion, undistort_if_needed
from crossfire_ns.metrics import camera_extent


class MapLoadError(CrossfireInputError):
    """The map cannot be loaded; the message names the file and the fix."""


_DIGESTS: Dict[Tuple[str, int, int, int], str] = {}
"""sha256 of the checkpoints hashed in this process, by (path, size, inode, modification time)."""


def checkpoint_sha256(path: Path) -> str:
    """sha256 of a checkpoint's bytes, read in chunks once per process: runs and the map index are keyed on it, so a
    map retrained in place is never taken for the old one (a rewritten file has another size, inode or time)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_ino, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def checkpoint_step(path: Path) -> Optional[int]:
    """The step in a nerfstudio checkpoint's name (``step-000000100.ckpt``), None for another name."""
    name = Path(path).name
    digits = name[name.find("-") + 1 : name.find(".")]
    return int(digits) if digits.isdigit() else None


def latest_checkpoint(checkpoints: Path) -> Optional[Path]:
    """The checkpoint of ``checkpoints`` that nerfstudio's eval_setup loads (the highest step); None without one."""
    steps = {checkpoint_step(p): p for p in Path(checkpoints).glob("*.ckpt") if checkpoint_step(p) is not None}
    return steps[max(steps)] if steps else None


def check_checkpoint(path: Path) -> None:
    """Raise ``MapLoadError`` naming ``path`` (and the previous checkpoint beside it, if any) when the file is empty
    or cut short: torch would fail on it with a traceback that names neither the file nor the fix."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(4)
    if size > 0 and not (head == b"PK\x03\x04" and not zipfile.is_zipfile(path)):
        return  # not empty, and not a zip archive (torch.save's format) that lost its end
    step = checkpoint_step(path)
    steps = {checkpoint_step(p): p for p in path.parent.glob("*.ckpt")}
    earlier = sorted(s for s in steps if s is not None and step is not None and s < step)
    what = "is empty (0 bytes)" if size == 0 else f"is cut short ({size} bytes, no end of its zip archive)"
    fix = (
        f"move it away to load the previous checkpoint {steps[earlier[-1]]}, or let ns-train save it again"
        if earlier
        else "let ns-train save it again (no earlier checkpoint is in that folder)"
    )
    raise MapLoadError(f"{path}: the checkpoint {what}; training or copying it was interrupted? To use the map, {fix}.")


def cameras_c2w(cameras) -> np.ndarray:
    """(N, 4, 4) float64 camera-to-world of nerfstudio ``Cameras`` (their frame: normalised for a dataset's)."""
    c2w = np.tile(np.eye(4), (len(cameras), 1, 1))
    c2w[:, :3, :4] = cameras.camera_to_worlds.detach().cpu().numpy()
    return c2w


def frame_normalization(pipeline) -> Tuple[np.ndarray, float]:
    """(transform, scale) from the transforms.json frame of the training data to the normalised frame."""
    outputs = pipeline.datamanager.train_dataparser_outputs
    transform = outputs.dataparser_transform.cpu().numpy()
    scale = float(outputs.dataparser_scale)
    data = Path(pipeline.datamanager.config.data or "")
    meta_file = data / "transforms.json" if data.is_dir() else data
    if meta_file.suffix == ".json" and meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        return saved_frame_normalization(transform, scale, meta.get("applied_transform"), meta.get("applied_scale"))
    return transform, scale


@dataclass
class CrossfireMap:
    """A loaded map: the nerfstudio pipeline, its frame normalisation and its training views."""

    pipeline: Any
    """nerfstudio's pipeline (``pipeline.model`` is the CrossfireModel), in eval mode."""
    transform: np.ndarray
    """(3, 4) from the original frame of the training transforms.json to the normalised frame (before ``scale``)."""
    scale: float
    config_path: Optional[Path] = None
    """The config.yml it was loaded from (None for a running pipeline)."""
    step: Optional[int] = None
    """Training step of the checkpoint."""
    checkpoint: Optional[Path] = None
    method: Optional[str] = None
    """The method it was trained with (``crossfire-lite``, ...), from its config.yml."""
    cache: Dict[Hashable, Any] = field(default_factory=dict, repr=False)
    """Things built once per map by its users (e.g. the retrieval index), see ``cached``."""

    @classmethod
    def from_pipeline(cls, pipeline, config_path=None, step=None, checkpoint=None, method=None) -> "CrossfireMap":
        transform, scale = frame_normalization(pipeline)
        return cls(pipeline, np.asarray(transform)[:3], scale, config_path, step, checkpoint, method)

    @property
    def model(self):
        return self.pipeline.model

    @property
    def normalization(self) -> Tuple[np.ndarray, float]:
        """``(transform, scale)``, as ``crossfire_ns.geometry.original_to_normalized`` takes them."""
        return self.transform, self.scale

    @property
    def train_dataset(self):
        return self.pipeline.datamanager.train_dataset

    @property
    def train_cameras(self):
        return self.train_dataset.cameras

    @cached_property
    def train_c2w(self) -> np.ndarray:
        """(N, 4, 4) training camera-to-world poses, normalised frame."""
        return cameras_c2w(self.train_cameras)

    def to_original(self, c2w: np.ndarray) -> np.ndarray:
        """Normalised-frame pose(s) -> the training data's original frame."""
        return normalized_to_original(c2w, self.transform, self.scale)

    def covariance_to_original(self, covariance: np.ndarray) -> np.ndarray:
        """A normalised-frame 6x6 pose covariance (``pnp.pose_covariance``) in the original frame."""
        return covariance_normalized_to_original(covariance, self.transform, self.scale)

    def to_normalized(self, c2w: np.ndarray) -> np.ndarray:
        """Original-frame pose(s) -> the normalised frame the model renders in."""
        return original_to_normalized(c2w, self.transform, self.scale)

    def camera_extent(self) -> float:
        """Diagonal of the box of the training camera centres, in the original frame's units."""
        return camera_extent(self.to_original(self.train_c2w))

    def training_image(self, index: int) -> torch.Tensor:
        """(H, W, 3|4) float image in [0, 1] of training view ``index`` as a pinhole camera with its intrinsics
        (``training_intrinsics``) sees it: undistorted when the camera has lens distortion. nerfstudio trains on the
        distorted image with undistorted rays; whatever pairs a training pixel with ``K`` (the map index, the patch
        rounds, retrieval) must see the pinhole image, as queries do."""
        image = self.train_dataset.get_image_float32(index)
        dist, fisheye = self.training_distortion(index)
        if dist is None:
            return image
        K = self.training_intrinsics(image.shape[1], image.shape[0], index)
        return torch.from_numpy(undistort_if_needed(image.numpy(), K, dist, fisheye=fisheye))

    def training_distortion(self, index: int = 0) -> Tuple[Optional[np.ndarray], bool]:
        """Training camera ``index``'s distortion in OpenCV's order (None without any) and whether it is a fisheye."""
        from nerfstudio.cameras.cameras import CameraType

        cams = self.train_cameras
        if cams.distortion_params is None:
            return None, False
        fisheye = int(cams.camera_type[index]) == CameraType.FISHEYE.value
        return opencv_distortion(cams.distortion_params[index].tolist(), fisheye=fisheye), fisheye

    def has_distortion(self) -> bool:
        """Whether any training camera has lens distortion (its images are then undistorted for localization)."""
        return any(self.training_distortion(i)[0] is not None for i in range(len(self.train_dataset)))

    def training_images(self) -> List[torch.Tensor]:
        return [self.training_image(i) for i in range(len(self.train_dataset))]

    def training_intrinsics(self, width: int, height: int, index: int = 0) -> np.ndarray:
        """3x3 K of training camera ``index``, scaled to an image of ``width`` x ``height``."""
        cams = self.train_cameras
        K = np.array(
            [
                [float(cams.fx[index]), 0, float(cams.cx[index])],
                [0, float(cams.fy[index]), float(cams.cy[index])],
                [0, 0, 1],
            ]
        )
        return scale_intrinsics(K, width / int(cams.width[index]), height / int(cams.height[index]))

    def cached(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """``build()`` once per ``key`` for this map (the map outlives the queries that use it)."""
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]


def load_map(config_path: Path, data: Optional[Path] = None) -> CrossfireMap:
    """The trained map of a ``config.yml`` written by ns-train, found relative to that file (whatever the current
    directory is); ``data`` is the training data's folder when it moved since training."""
    from nerfstudio.utils.eval_utils import eval_setup
    from nerfstudio.utils.rich_utils import CONSOLE

    allow_nerfstudio_checkpoints()
    config_path = Path(config_path)
    if not config_path.is_file():
        raise MapLoadError(
            f"{config_path}: no such file. Pass the config.yml that ns-train wrote (outputs/<exp>/<method>/<time>/)."
        )

    chosen: List[Optional[Path]] = [None]  # the checkpoint eval_setup loads, once ``relocate`` found it

    def relocate(config):
        base = config_path.resolve().parent
        if (base.name, base.parent.name) == (config.timestamp, config.method_name):
            config.output_dir = base.parent.parent.parent
            config.experiment_name = base.parent.parent.name
        if data is not None:
            config.data = data
            config.pipeline.datamanager.data = data
            config.pipeline.datamanager.dataparser.data = data
        source = config.pipeline.datamanager.data or config.pipeline.datamanager.dataparser.data
        if source is not None and not Path(source).exists():
            raise MapLoadError(f"{config_path}: the training data {source} is gone; pass --data with its new location.")
        if not str(config.method_name).startswith("crossfire"):
            raise MapLoadError(
                f"{config_path}: method {config.method_name!r} is not a crossfire map; train with ns-train crossfire-lite."
            )
        checkpoints = config.get_checkpoint_dir()
        if not checkpoints.is_dir() or not any(checkpoints.glob("*.ckpt")):
            raise MapLoadError(
                f"{config_path}: no checkpoint in {checkpoints} (nerfstudio_models/*.ckpt). Let ns-train finish (or "
                f"save a checkpoint with --steps-per-save), or pass the config.yml of a finished run."
            )
        chosen[0] = latest_checkpoint(checkpoints)
        if chosen[0] is not None:
            check_checkpoint(chosen[0])
        return config

    try:
        config, pipeline, checkpoint, step = eval_setup(config_path, test_mode="val", update_config_callback=relocate)
    except FileNotFoundError as err:
        raise MapLoadError(
            f"{config_path}: could not load the map ({err}). Is training finished (nerfstudio_models/*.ckpt)?"
        ) from err
    except (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError) as err:
        if chosen[0] is None or (isinstance(err, RuntimeError) and "PytorchStreamReader" not in str(err)):
            raise
        raise MapLoadError(
            f"{chosen[0]}: the checkpoint is damaged ({type(err).__name__}: {err}); let ns-train save it again, or "
            f"move it away to load an earlier checkpoint of {chosen[0].parent}."
        ) from err
    CONSOLE.print(f"Loaded map {config_path.parent} at step {step} ({checkpoint.name}).")
    return CrossfireMap.from_pipeline(
        pipeline, config_path=config_path, step=int(step), checkpoint=Path(checkpoint), method=str(config.method_name)
    )
