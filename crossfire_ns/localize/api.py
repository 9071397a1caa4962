"""A map loaded once, localizing one image at a time: the Python API that ns-localize, the server and the
benchmarks share.

    from crossfire_ns.localize.api import MapLocalizer

    localizer = MapLocalizer.load("outputs/scene/crossfire-lite/run/config.yml")   # seconds, once
    answer = localizer.localize("frame.png", K=K)                                   # then per image
    answer.status, answer.c2w, answer.qvec, answer.tvec, answer.covariance, answer.num_inliers, answer.seconds

Poses are in the training data's original frame: ``c2w`` camera-to-world with OpenGL camera axes (as in
transforms.json and poses.json); ``qvec``/``tvec`` the same pose world-to-camera in COLMAP's convention;
``covariance`` its 6x6 uncertainty (``Localization.covariance``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
from PIL import Image

from crossfire_ns.io.pose_formats import c2w_to_colmap, check_rigid
from crossfire_ns.io.queries import (
    QueryImage,
    QueryImageError,
    check_intrinsics,
    downscale_to,
    image_to_rgb,
    read_query_image,
    undistort_if_needed,
)
from crossfire_ns.localize.localizer import Localizer
from crossfire_ns.localize.matchers import MatcherConfig, PoseEstimate
from crossfire_ns.localize.pnp import CALIBRATED, CovarianceWidening
from crossfire_ns.localize.priors import RetrievalScore, retrieval_index
from crossfire_ns.map import CrossfireMap, load_map
from crossfire_ns.results import Status

MAX_IMAGE_SIDE = 1024
"""Default cap on a query's longer side (pixels): larger queries are downscaled, their intrinsics with them."""

ASPECT_TOLERANCE = 0.01
"""A query this much (relative) off the training camera's aspect ratio cannot borrow its intrinsics."""


@dataclass
class Localization:
    """One image's answer; the pose in the training data's original frame."""

    status: Status
    c2w: Optional[np.ndarray] = None
    """4x4 camera-to-world, OpenGL camera axes; None unless localized."""
    num_inliers: int = 0
    num_matches: int = 0
    reprojection_error_px: Optional[float] = None
    seconds: float = 0.0
    num_renders: int = 0
    seconds_retrieval: float = 0.0
    """Of ``seconds``: retrieval of the training views to start from."""
    seconds_coarse: float = 0.0
    """Of ``seconds``: the coarse pose."""
    seconds_refine: float = 0.0
    """Of ``seconds``: refinement and the final estimate."""
    confidence: Optional[float] = None
    """The method's confidence in the pose (0..1), where it has one."""
    diagnostics: Dict[str, Any] = field(default_factory=dict)
    """The method's figures behind the estimate (inliers per stage, ...), for calibration."""
    message: str = ""
    warnings: List[str] = field(default_factory=list)
    prior_source: str = ""
    """Where the coarse prior came from: given, sequence, retrieval (or sequence, then retrieval)."""
    crashed: bool = False
    """The failure is an exception in our code (``message`` names it), not a lack of evidence."""
    covariance: Optional[np.ndarray] = None
    """6x6 covariance of the pose, original frame: a small rotation vector about the world axes (radians,
    ``R_true = exp([dtheta]_x) R``), then the camera centre (world units); first order, from the final PnP's inliers
    (``pnp.pose_covariance``), widened by ``MapLocalizer.covariance_widening`` for the errors the inliers share. None
    unless localized with one."""

    @property
    def localized(self) -> bool:
        return self.status == "localized"

    @property
    def qvec(self) -> Optional[np.ndarray]:
        """World-to-camera rotation as COLMAP's quaternion (w, x, y, z)."""
        return None if self.c2w is None else c2w_to_colmap(self.c2w)[0]

    @property
    def tvec(self) -> Optional[np.ndarray]:
        """World-to-camera translation, COLMAP's convention (OpenCV camera axes)."""
        return None if self.c2w is None else c2w_to_colmap(self.c2w)[1]

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready: ``transform_matrix`` (c2w, OpenGL) and ``colmap`` (qvec, tvec), counts, timing, messages."""
        colmap = None
        if self.c2w is not None:
            qvec, tvec = c2w_to_colmap(self.c2w)
            colmap = {"qvec": qvec.tolist(), "tvec": tvec.tolist()}
        return {
            "status": self.status,
            "transform_matrix": None if self.c2w is None else self.c2w.tolist(),
            "colmap": colmap,
            "num_inliers": self.num_inliers,
            "num_matches": self.num_matches,
            "reprojection_error_px": self.reprojection_error_px,
            "seconds": self.seconds,
            "num_renders": self.num_renders,
            "seconds_retrieval": self.seconds_retrieval,
            "seconds_coarse": self.seconds_coarse,
            "seconds_refine": self.seconds_refine,
            "confidence": self.confidence,
            "covariance": None if self.covariance is None else self.covariance.tolist(),
            "diagnostics": self.diagnostics,
            "prior_source": self.prior_source,
            "message": self.message,
            "warnings": list(self.warnings),
        }


def as_rgb(image: Union[np.ndarray, Image.Image]) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an array (uint8/uint16, grey, RGB or RGBA) or a PIL image, as queries are read."""
    if isinstance(image, Image.Image):
        return image_to_rgb(image)
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise QueryImageError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    if array.dtype == np.uint16:
        array = np.round(array / 257.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise QueryImageError(f"an image array must be uint8 or uint16, got {array.dtype}")
    if array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    if array.shape[-1] == 4:
        return image_to_rgb(Image.fromarray(array, mode="RGBA"))
    return np.ascontiguousarray(array)


class MapLocalizer:
    """Localizes images one at a time against a map that stays loaded (thread-safe: one image at a time)."""

    def __init__(
        self,
        crossfire_map: CrossfireMap,
        matcher: Optional[MatcherConfig] = None,
        retrieval: RetrievalScore = "matches",
        max_image_side: int = MAX_IMAGE_SIDE,
        retrieval_min_similarity: float = 0.6,
        match_training_scale: bool = True,
        covariance_widening: CovarianceWidening = CALIBRATED,
    ) -> None:
        self.map = crossfire_map
        self.localizer = Localizer(crossfire_map.model, matcher, crossfire_map)
        self.retrieval = retrieval
        self.retrieval_min_similarity = retrieval_min_similarity
        self.max_image_side = max_image_side
        self.match_training_scale = match_training_scale
        """Downscale a query whose focal length (px) exceeds the training camera's to it: the scene's CNN is not
        scale-invariant, and a full-resolution phone photo would otherwise cost gigabytes of similarity matrices."""
        self.covariance_widening = covariance_widening
        """How the first-order pose covariance is widened in the answers (``pnp.CALIBRATED``; ``pnp.FIRST_ORDER``: the
        raw figure)."""
        self._sequences: Dict[str, np.ndarray] = {}
        """Sequence id -> last estimate (normalised frame)."""
        self._lock = threading.Lock()

    @classmethod
    def load(cls, config_path: Union[str, Path], data: Optional[Path] = None, **kwargs: Any) -> "MapLocalizer":
        """Load the map of a config.yml (``crossfire_ns.map.load_map``) and wrap it."""
        return cls(load_map(Path(config_path), data), **kwargs)

    @property
    def matcher(self) -> MatcherConfig:
        return self.localizer.config

    def training_intrinsics(self, width: int, height: int) -> np.ndarray:
        """The training camera's K for a ``width`` x ``height`` image; ``QueryImageError`` when the aspect ratio
        differs (scaling would give anisotropic focal lengths the image's camera does not have)."""
        cams = self.map.train_cameras
        train_w, train_h = int(cams.width[0]), int(cams.height[0])
        if abs((width / height) / (train_w / train_h) - 1.0) > ASPECT_TOLERANCE:
            raise QueryImageError(
                f"image is {width}x{height} (aspect {width / height:.3f}) but the training camera is "
                f"{train_w}x{train_h} (aspect {train_w / train_h:.3f}), so its intrinsics do not apply. Give this "
                f"image's intrinsics (fl_x, fl_y, cx, cy in a transforms.json, --fx/--fy/--cx/--cy, or fx/fy/cx/cy)."
            )
        return self.map.training_intrinsics(width, height)

    def warm_up(self) -> None:
        """Build what the first image would otherwise wait for: the retrieval index of the map's training views and
        the method's own (the crossfire map index, stored beside the map after its first build)."""
        self.localizer.matcher.warm_up()
        self._retrieval_index()
        self.map_ratio()

    def map_ratio(self) -> float:
        """How much wider than a query's share the map's own poses need their covariance
        (``CovarianceWidening.leave_one_out_ratio`` of the matcher's leave-one-out, measured once per map index);
        NaN when not measured or when the widening does not read it."""
        if self.covariance_widening.map_exponent == 0.0:
            return float("nan")
        return self.covariance_widening.leave_one_out_ratio(self.leave_one_out())

    def leave_one_out(self) -> List[Tuple[float, float]]:
        """The matcher's training views localized without their own cells: (first-order d2 to the view's pose, mean
        reprojection error px) each (``Matcher.leave_one_out``)."""
        return self.localizer.matcher.leave_one_out(self.max_image_side)

    def max_side_for(self, width: int, height: int, K: np.ndarray) -> int:
        """The longer side a query is localized at: ``max_image_side``, and with ``match_training_scale`` no finer
        than the training camera's focal length."""
        side = self.max_image_side
        if self.match_training_scale:
            ratio = float(self.map.train_cameras.fx[0]) / float(K[0, 0])
            if ratio < 1.0:
                side = min(side, max(1, round(max(width, height) * ratio)))
        return side

    def end_sequence(self, sequence: str) -> None:
        """Forget a sequence's last estimate (its next image starts from retrieval)."""
        with self._lock:
            self._sequences.pop(sequence, None)

    def localize(
        self,
        image: Union[np.ndarray, Image.Image, str, Path],
        K: Optional[np.ndarray] = None,
        prior: Optional[np.ndarray] = None,
        sequence: Optional[str] = None,
        dist_coeffs: Optional[np.ndarray] = None,
        fisheye: bool = False,
    ) -> Localization:
        """Pose of one image (a path, a PIL image or an array) with intrinsics ``K`` (3x3, pixel centres at +0.5;
        None: the training camera's, with a warning). ``prior``: a 4x4 camera-to-world guess in the original frame;
        ``sequence``: an id whose previous estimate is the prior (after a failure, retrieval takes over and the
        sequence resumes from the new estimate); neither: retrieval of training views. Never raises for a bad image,
        intrinsics that do not fit it (``check_intrinsics``) or a prior that is not rigid: the answer says "unreadable"
        and why."""
        start = time.perf_counter()
        warnings: List[str] = []
        try:
            if isinstance(image, (str, Path)):
                rgb = read_query_image(QueryImage(Path(image), str(image)))
            else:
                rgb = as_rgb(image)
            if K is None:
                K = self.training_intrinsics(rgb.shape[1], rgb.shape[0])
                warnings.append("no intrinsics given: the training camera's were used (scaled to the image size)")
            K = np.asarray(K, dtype=np.float64)
            check_intrinsics(K, rgb.shape[1], rgb.shape[0], "intrinsics")
            if prior is not None:
                try:
                    prior = check_rigid(prior, "prior")
                except ValueError as err:
                    raise QueryImageError(str(err)) from None
        except QueryImageError as err:
            return Localization("unreadable", message=str(err), warnings=warnings, seconds=time.perf_counter() - start)
        with self._lock:
            answer = self._localize_rgb(rgb, K, prior, sequence, dist_coeffs, fisheye)
        answer.warnings = warnings + answer.warnings
        answer.seconds = time.perf_counter() - start
        return answer

    def _localize_rgb(self, rgb, K, prior, sequence, dist_coeffs, fisheye) -> Localization:
        try:
            rgb = undistort_if_needed(rgb, K, dist_coeffs, fisheye=fisheye)
            rgb, K = downscale_to(rgb, K, self.max_side_for(rgb.shape[1], rgb.shape[0], K))
            if prior is not None:
                source, estimate = "given", self.localizer.estimate(rgb, K, [self.map.to_normalized(prior)])
            elif sequence is not None and sequence in self._sequences:
                source, estimate = "sequence", self.localizer.estimate(rgb, K, [self._sequences[sequence]])
                if not estimate.success:  # lost: retrieval, then back to tracking from its estimate
                    lost = estimate
                    source, estimate = "sequence, then retrieval", self._from_retrieval(rgb, K)
                    estimate.num_renders += lost.num_renders
                    estimate.seconds_coarse += lost.seconds_coarse
                    estimate.seconds_refine += lost.seconds_refine
            else:
                source, estimate = "retrieval", self._from_retrieval(rgb, K)
        except Exception as err:  # noqa: BLE001  one image's failure is its answer
            return Localization("failed", message=f"{type(err).__name__}: {err}", crashed=True)
        if sequence is not None:
            if estimate.success:
                self._sequences[sequence] = estimate.c2w
            else:
                self._sequences.pop(sequence, None)
        return self._answer(estimate, source)

    def _from_retrieval(self, rgb: np.ndarray, K: np.ndarray) -> PoseEstimate:
        start = time.perf_counter()
        priors = self._retrieval_index().query(rgb, self.matcher.num_priors)
        seconds = time.perf_counter() - start
        estimate = self.localizer.estimate(rgb, K, priors)
        estimate.seconds_retrieval = seconds
        return estimate

    def _retrieval_index(self):
        """The map's retrieval index over its training views and the method's extra views (virtual views)."""
        extra = self.localizer.matcher.extra_retrieval_views()
        return retrieval_index(self.map, self.retrieval, self.retrieval_min_similarity, extra)

    def _answer(self, estimate: PoseEstimate, source: str) -> Localization:
        answer = Localization(
            "localized" if estimate.success else "failed",
            num_matches=estimate.num_matches,
            num_renders=estimate.num_renders,
            seconds_retrieval=estimate.seconds_retrieval,
            seconds_coarse=estimate.seconds_coarse,
            seconds_refine=estimate.seconds_refine,
            confidence=None if not np.isfinite(estimate.confidence) else float(estimate.confidence),
            diagnostics=dict(estimate.diagnostics),
            message=estimate.message,
            prior_source=source,
        )
        if estimate.success:
            answer.c2w = self.map.to_original(estimate.c2w)
            answer.num_inliers = estimate.num_inliers
            answer.reprojection_error_px = estimate.reprojection_error_px
            if estimate.covariance is not None:
                map_ratio = self.map_ratio()
                widening = self.covariance_widening.factor(estimate.reprojection_error_px, map_ratio)
                answer.covariance = self.map.covariance_to_original(estimate.covariance) * widening
                answer.diagnostics["covariance_map_ratio"] = map_ratio
        return answer
