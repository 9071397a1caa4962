"""What box the radiance field should model, chosen from the training views themselves.

nerfacto contracts everything beyond the cameras' unit box into a thin shell: right for an object seen from around it
or a forward-facing scene with a far background, wrong for a room seen from inside, whose walls then all live in the
contracted shell at a fraction of the resolution. So before training, SIFT matches between neighbouring training views
are triangulated with their known poses (a few hundred points), and a scene is taken as **seen from inside** when its
content surrounds the cameras (most horizontal directions from their centre hold points), the cameras' optical axes do
not converge on a common centre (no orbit), and the content lies beyond the cameras' box. Such a scene is modelled
without contraction, in a box that holds its content; every other scene keeps nerfacto's defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Sequence

import cv2
import numpy as np

from crossfire_ns.geometry import camera_spacing, opengl_c2w_to_opencv_w2c, pose_nearness, project_points


@dataclass(frozen=True)
class SceneBounds:
    """The decision and the figures behind it."""

    inside: bool
    """The scene is seen from inside: no contraction, ``scale`` bounds it."""
    scale: float
    """Half-side of the scene box (normalised frame) when ``inside``; 1 otherwise (the dataparser's box is kept)."""
    points: int
    """Points triangulated."""
    content_radius: float
    """90th percentile of the points' L-inf distance from the cameras' centre (normalised frame)."""
    coverage: float
    """Share of 8 horizontal directions around the cameras' centre that hold at least 2% of the points."""
    convergence: float
    """RMS distance of the optical axes from their least-squares common point, over the cameras' RMS spread (an
    orbit's axes meet: near 0; inf when that point lies behind the cameras)."""

    def as_dict(self) -> Dict[str, float]:
        return asdict(self)


SCENE_BOUNDS_KEY = "crossfire_scene_bounds"
"""Dataset metadata key under which the datamanager hands its ``SceneBounds`` to the model."""

MIN_POINTS = 50
"""Fewer triangulated points than this decide nothing: the scene keeps nerfacto's defaults."""


def _neighbour_pairs(c2ws: np.ndarray, per_view: int, max_pairs: int) -> List[tuple]:
    """Pairs of views (i, j), each view with its ``per_view`` nearest (``geometry.pose_nearness``)."""
    spacing = camera_spacing(c2ws[:, :3, 3])
    pairs = set()
    for i in range(len(c2ws)):
        score = pose_nearness(c2ws, c2ws[i], spacing)
        score[i] = np.inf
        pairs |= {tuple(sorted((i, int(j)))) for j in np.argsort(score)[:per_view]}
    pairs = sorted(pairs)
    step = max(1, int(np.ceil(len(pairs) / max_pairs)))
    return pairs[::step]


def triangulated_points(
    greys: Sequence[np.ndarray], c2ws: np.ndarray, Ks: np.ndarray, per_view: int = 2, max_pairs: int = 60
) -> np.ndarray:
    """(M, 3) points (normalised frame) from SIFT matches between neighbouring views of known pose: ratio test,
    positive depth, reprojection within 2 px and a triangulation angle of at least 2 degrees in both views.
    ``greys``: uint8 (H, W) images; ``c2ws``: (N, 4, 4) OpenGL; ``Ks``: (N, 3, 3), pixel centres at +0.5."""
    sift = cv2.SIFT_create(nfeatures=800)
    features = [sift.detectAndCompute(g, None) for g in greys]
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    cameras = [opengl_c2w_to_opencv_w2c(c) for c in c2ws]
    found = []
    for i, j in _neighbour_pairs(c2ws, per_view, max_pairs):
        (kp_i, d_i), (kp_j, d_j) = features[i], features[j]
        if d_i is None or d_j is None or len(d_i) < 2 or len(d_j) < 2:
            continue
        good = [m for m, n in matcher.knnMatch(d_i, d_j, k=2) if m.distance < 0.8 * n.distance]
        if len(good) < 8:
            continue
        x_i = np.array([kp_i[m.queryIdx].pt for m in good]) + 0.5  # OpenCV centres at integers, ours at +0.5
        x_j = np.array([kp_j[m.trainIdx].pt for m in good]) + 0.5
        P_i = Ks[i] @ np.hstack([cameras[i][0], cameras[i][1].reshape(3, 1)])
        P_j = Ks[j] @ np.hstack([cameras[j][0], cameras[j][1].reshape(3, 1)])
        homogeneous = cv2.triangulatePoints(P_i, P_j, x_i.T, x_j.T)
        points = (homogeneous[:3] / np.where(np.abs(homogeneous[3]) > 1e-12, homogeneous[3], 1e-12)).T
        keep = np.ones(len(points), dtype=bool)
        rays = []
        for view, x in ((i, x_i), (j, x_j)):
            pixels, cam = project_points(points, Ks[view], *cameras[view])
            keep &= (cam[:, 2] > 0) & (np.linalg.norm(pixels - x, axis=1) < 2.0)
            ray = points - c2ws[view][:3, 3]
            rays.append(ray / np.maximum(np.linalg.norm(ray, axis=1, keepdims=True), 1e-12))
        keep &= np.einsum("nd,nd->n", rays[0], rays[1]) < np.cos(np.radians(2.0))
        found.append(points[keep])
    return np.concatenate(found) if found else np.zeros((0, 3))


def axes_convergence(c2ws: np.ndarray) -> float:
    """RMS distance of the cameras' optical axes from the point closest to all of them, over the RMS distance of the
    camera centres from their mean: near 0 when the cameras look at a common centre (an orbit); inf when that point
    lies behind most of them (cameras looking outward from a ring meet only behind their backs)."""
    centres, forward = c2ws[:, :3, 3], -c2ws[:, :3, 2]
    projectors = np.eye(3)[None] - forward[:, :, None] * forward[:, None, :]  # onto each axis's normal plane
    A, b = projectors.sum(0), np.einsum("nij,nj->i", projectors, centres)
    point = np.linalg.lstsq(A, b, rcond=None)[0]
    if np.mean(np.einsum("nd,nd->n", forward, point[None] - centres) > 0) < 0.5:
        return float("inf")
    residual = np.einsum("nij,nj->ni", projectors, point[None] - centres)
    spread = np.sqrt(np.mean(np.sum((centres - centres.mean(0)) ** 2, axis=1)))
    return float(np.sqrt(np.mean(np.sum(residual**2, axis=1))) / max(spread, 1e-9))


def direction_coverage(points: np.ndarray, c2ws: np.ndarray, bins: int = 8, min_share: float = 0.02) -> float:
    """Share of ``bins`` horizontal directions (about the cameras' mean up axis) around the cameras' centre that hold
    at least ``min_share`` of ``points``."""
    up = c2ws[:, :3, 1].mean(0)
    up /= max(np.linalg.norm(up), 1e-12)
    x = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(up, x)
    offsets = points - c2ws[:, :3, 3].mean(0)
    azimuth = np.arctan2(offsets @ y, offsets @ x)
    counts = np.bincount(((azimuth + np.pi) / (2 * np.pi) * bins).astype(int).clip(0, bins - 1), minlength=bins)
    return float(np.mean(counts >= min_share * max(1, len(points))))


def scene_bounds(
    greys: Sequence[np.ndarray],
    c2ws: np.ndarray,
    Ks: np.ndarray,
    min_coverage: float = 0.75,
    min_divergence: float = 0.5,
    min_content_radius: float = 1.2,
    margin: float = 1.2,
) -> SceneBounds:
    """Whether the scene is seen from inside (content in at least ``min_coverage`` of the horizontal directions,
    optical axes at least ``min_divergence`` from converging, content beyond ``min_content_radius``), and the box
    that then holds it: ``margin`` times the 99th percentile of the points' L-inf distance from the cameras' centre.
    Cameras in nerfstudio's normalised frame (their centres within the unit box)."""
    points = triangulated_points(greys, c2ws, Ks)
    convergence = axes_convergence(c2ws) if len(c2ws) >= 3 else 0.0
    if len(points) < MIN_POINTS:
        return SceneBounds(False, 1.0, len(points), float("nan"), float("nan"), convergence)
    reach = np.abs(points - c2ws[:, :3, 3].mean(0)).max(axis=1)
    radius, coverage = float(np.percentile(reach, 90)), direction_coverage(points, c2ws)
    inside = coverage >= min_coverage and convergence >= min_divergence and radius >= min_content_radius
    scale = float(np.ceil(margin * np.percentile(reach, 99))) if inside else 1.0
    return SceneBounds(inside, scale, len(points), radius, coverage, convergence)
