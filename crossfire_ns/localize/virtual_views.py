"""Virtual views: the map rendered from poses no training camera took, added to the map index.

The scene CNN is not scale-invariant: a query taken twice as close to a wall as any training camera matches the
training views' cells poorly. The radiance field can render the views the capture missed. Around each training
camera, poses are sampled closer to and farther from what it sees and above and below it (``VirtualViewsConfig``),
kept where the render finds free space around the camera; each is rendered once (colour, depth, opacity) and
described like a training view: its cells carry the CNN features of the rendered colour (or the descriptor field
read at their points), and their 3D points are the training views' trusted points that land in them, so a virtual
cell earns trust only where the training views' triangulated geometry confirms its rendered depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Literal, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track

from crossfire_ns.geometry import project_c2w
from crossfire_ns.localize.render import MapRenderer
from crossfire_ns.texture import MIN_TEXTURE, local_std

VirtualMove = Literal[
    "closer", "farther", "up", "down", "orbit-left", "orbit-right", "orbit-up", "orbit-down", "turn-left", "turn-right"
]


@dataclass
class VirtualViewsConfig:
    """Which virtual views the map index renders and how their cells are described."""

    enabled: bool = False
    """Render virtual views into the index (False: the training views only)."""
    moves: Tuple[VirtualMove, ...] = ("closer", "farther", "up", "down")
    """Poses sampled around each training camera: along its optical axis (closer, farther), along the cameras'
    mean up direction (up, down), or turned ``orbit_deg`` about the point it looks at (its median rendered distance
    ahead), about the up direction (orbit-left, orbit-right) or its own horizontal axis (orbit-up, orbit-down), or
    turned in place by ``turn_deg`` about the up direction (turn-left, turn-right: headings no camera took)."""
    axis_step: float = 0.3
    """closer / farther: the move, as a share of the view's median rendered distance."""
    height_step: float = 0.5
    """up / down: the move, as a share of the training cameras' spread along the up direction (at least their
    spacing)."""
    orbit_deg: float = 20.0
    """orbit-*: the turn about the point the source camera looks at (degrees)."""
    turn_deg: float = 30.0
    """turn-*: the turn of the source camera about its own centre (degrees)."""
    min_clearance: float = 0.25
    """A pose is kept when the nearest surface it renders is at least this share of its source view's median
    distance away and it sees as large a share of opaque cells as its source view, less ``opaque_margin``."""
    opaque_margin: float = 0.1
    """How much smaller the share of opaque cells (accumulation at least 0.9) of a pose may be than its source's."""
    descriptors: Literal["rendered-rgb", "field"] = "rendered-rgb"
    """Cell descriptors: the CNN of the rendered colour, or the descriptor field read at the cells' points."""
    consistency: float = 0.03
    """A cell is trusted when a trusted training point lands in it within this share of its rendered distance."""
    max_views: int = 400
    """Virtual views at most (sources taken evenly when more would be made)."""


@dataclass
class VirtualPose:
    """A sampled virtual camera: its pose and where it came from."""

    c2w: np.ndarray
    """(4, 4) camera-to-world, OpenGL, normalised frame."""
    source: int
    """The training view it was moved from (its intrinsics and image size are used)."""
    move: str


def up_direction(c2ws: np.ndarray) -> np.ndarray:
    """(3,) unit mean of the training cameras' up axes (OpenGL +y): the scene's up, as the capture held it."""
    up = np.asarray(c2ws, dtype=np.float64)[:, :3, 1].mean(axis=0)
    norm = np.linalg.norm(up)
    return up / norm if norm > 1e-9 else np.array([0.0, 0.0, 1.0])


def height_spread(c2ws: np.ndarray, up: np.ndarray, spacing: float) -> float:
    """The training camera centres' range along ``up`` (at least ``spacing``)."""
    heights = np.asarray(c2ws, dtype=np.float64)[:, :3, 3] @ up
    return max(float(heights.max() - heights.min()), spacing)


def moved_pose(
    c2w: np.ndarray,
    move: str,
    median_distance: float,
    height: float,
    up: np.ndarray,
    pivot_distance: float = float("nan"),
    orbit_deg: float = 0.0,
    turn_deg: float = 0.0,
) -> np.ndarray:
    """``c2w`` (4, 4, OpenGL) with its centre moved by ``move``: closer / farther along its optical axis by
    ``median_distance``, up / down along ``up`` by ``height`` (the orientation kept); orbit-* turned by ``orbit_deg``
    about the point ``pivot_distance`` ahead of it, about ``up`` (left, right) or its own x axis (up, down), still
    looking at that point; turn-* turned by ``turn_deg`` about ``up`` through its own centre (left: anticlockwise
    seen from above)."""
    moved = np.array(c2w, dtype=np.float64)
    forward = -moved[:3, 2]
    if move in ("turn-left", "turn-right"):
        sign = 1.0 if move == "turn-left" else -1.0
        turn, _ = cv2.Rodrigues(np.asarray(up, dtype=np.float64) * np.radians(sign * turn_deg))
        moved[:3, :3] = turn @ moved[:3, :3]
        return moved
    if move.startswith("orbit-"):
        axis = up if move in ("orbit-left", "orbit-right") else moved[:3, 0]
        sign = -1.0 if move in ("orbit-left", "orbit-up") else 1.0  # the camera circles to its left / upwards
        turn, _ = cv2.Rodrigues(np.asarray(axis, dtype=np.float64) * np.radians(sign * orbit_deg))
        pivot = moved[:3, 3] + forward * pivot_distance
        moved[:3, :3] = turn @ moved[:3, :3]
        moved[:3, 3] = pivot + turn @ (c2w[:3, 3] - pivot)
        return moved
    step = {
        "closer": forward * median_distance,
        "farther": -forward * median_distance,
        "up": up * height,
        "down": -up * height,
    }[move]
    moved[:3, 3] += step
    return moved


def _cnn_cells(model, rgb: torch.Tensor, cell: int) -> torch.Tensor:
    """(D, h, w) L2-normalised CNN features of an (H, W, 3) image pooled to ``cell``-pixel cells."""
    features = model.encode_images(rgb[None].float())
    if features.shape[-2:] != rgb.shape[:2]:
        features = F.interpolate(features, size=rgb.shape[:2], mode="bilinear", align_corners=False)
    return F.normalize(F.avg_pool2d(features, cell), dim=1)[0].cpu()


def trusted_distances(
    points: np.ndarray, c2w: np.ndarray, K_cells: np.ndarray, rendered: np.ndarray, consistency: float
) -> np.ndarray:
    """(h, w) distance of each cell of a view (``K_cells`` at cell resolution, ``c2w`` OpenGL) taken from the
    trusted training ``points`` (M, 3) that project into it within ``consistency`` of the cell's ``rendered``
    distance (their median; NaN where none does)."""
    h, w = rendered.shape
    out = np.full((h, w), np.nan)
    if len(points) == 0:
        return out
    pixels, distance, in_front = project_c2w(points, c2w, K_cells)
    x, y = np.floor(pixels[:, 0]).astype(np.int64), np.floor(pixels[:, 1]).astype(np.int64)
    inside = in_front & (x >= 0) & (x < w) & (y >= 0) & (y < h)
    x, y, distance = x[inside], y[inside], distance[inside]
    seen = rendered[y, x]
    agree = np.isfinite(seen) & (np.abs(distance - seen) <= consistency * seen)
    x, y, distance = x[agree], y[agree], distance[agree]
    if len(x) == 0:
        return out
    flat = y * w + x
    order = np.lexsort((distance, flat))
    flat, distance = flat[order], distance[order]
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    ends = np.r_[starts[1:], len(flat)]
    medians = np.array([np.median(distance[a:b]) for a, b in zip(starts, ends)])
    out.reshape(-1)[flat[starts]] = medians
    return out


@dataclass
class VirtualView:
    """One rendered virtual view, described: what the map index stores of it."""

    pose: VirtualPose
    K: np.ndarray
    """(3, 3) intrinsics at the source view's image size."""
    size: Tuple[int, int]
    """(width, height)."""
    cell: int
    descriptors: torch.Tensor
    """(M, D) of the trusted cells."""
    points: torch.Tensor
    """(M, 3) float32."""
    pixels: torch.Tensor
    """(M, 2) cell centres in the view's pixels."""
    rgb: torch.Tensor
    """(H, W, 3) uint8 rendered colour (for retrieval and the patch rounds)."""


@torch.no_grad()
def render_virtual_views(
    crossfire_map,
    c2ws: np.ndarray,
    Ks: np.ndarray,
    sizes: np.ndarray,
    cell_px: np.ndarray,
    median_distances: np.ndarray,
    trusted_points: np.ndarray,
    opaque_shares: np.ndarray,
    spacing: float,
    config: VirtualViewsConfig,
    proposal_share: float = 0.5,
) -> Tuple[List[VirtualView], dict]:
    """The virtual views around the training views (``c2ws`` (N, 4, 4) OpenGL, their ``Ks``, ``sizes`` (N, 2) and
    cell sides, ``median_distances`` (N,) and ``opaque_shares`` (N,) of their rendered cells), each rendered once at
    cell resolution (the CNN reads its colour upsampled to the training size) and described; ``trusted_points``
    (M, 3) are the training views' trusted cell points. Returns the views and build figures."""
    up = up_direction(c2ws)
    height = config.height_step * height_spread(c2ws, up, spacing)
    sources = np.arange(len(c2ws))
    per_view = max(1, len(config.moves))
    if len(sources) * per_view > config.max_views:
        sources = sources[np.linspace(0, len(sources) - 1, max(1, config.max_views // per_view)).round().astype(int)]
    poses = [
        VirtualPose(
            moved_pose(
                c2ws[i],
                move,
                config.axis_step * median_distances[i],
                height,
                up,
                median_distances[i],
                config.orbit_deg,
                config.turn_deg,
            ),  # fmt: skip
            int(i),
            move,
        )
        for i in sources
        for move in config.moves
        if np.isfinite(median_distances[i])
    ]
    renderer = MapRenderer(crossfire_map.model, descriptors=False, proposal_share=proposal_share, colour=True)
    model = crossfire_map.model
    views: List[VirtualView] = []
    dropped = {"clearance": 0, "untrusted": 0}
    for pose in track(poses, description="Rendering virtual views", transient=True):
        width, height_px = (int(v) for v in sizes[pose.source])
        K = np.asarray(Ks[pose.source], dtype=np.float64)
        cell = int(cell_px[pose.source])
        h, w = height_px // cell, width // cell
        K_cells = K.copy()
        K_cells[:2] /= cell
        view = renderer.render(pose.c2w, K_cells, w, h)
        cell_distance = view.depth[..., 0].cpu().numpy().astype(np.float64)
        opaque = view.accumulation[..., 0].cpu().numpy() >= 0.9
        if (
            not np.isfinite(cell_distance).all()
            or cell_distance.min() < config.min_clearance * median_distances[pose.source]
            or opaque.mean() < opaque_shares[pose.source] - config.opaque_margin
        ):
            dropped["clearance"] += 1
            continue
        small = view.rgb.clamp(0.0, 1.0).permute(2, 0, 1)[None].cpu()
        rgb = F.interpolate(small, size=(h * cell, w * cell), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
        full = F.interpolate(small, size=(height_px, width), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
        trusted = trusted_distances(trusted_points, pose.c2w, K_cells, cell_distance, config.consistency)
        grey = small.mean(1, keepdim=True)
        textured = local_std(grey)[0, 0].numpy() > MIN_TEXTURE
        keep = np.isfinite(trusted) & textured & opaque
        if not keep.any():
            dropped["untrusted"] += 1
            continue
        ys, xs = np.nonzero(keep)
        pixels = (np.stack([xs, ys], axis=1) + 0.5) * cell
        rays = np.stack(
            [(pixels[:, 0] - K[0, 2]) / K[0, 0], -(pixels[:, 1] - K[1, 2]) / K[1, 1], -np.ones(len(xs))], axis=1
        )
        rays = rays @ pose.c2w[:3, :3].T
        rays /= np.linalg.norm(rays, axis=1, keepdims=True)
        points = pose.c2w[:3, 3] + rays * trusted[ys, xs, None]
        if config.descriptors == "field":
            lifted = torch.from_numpy(points.astype(np.float32)).to(model.device)
            descriptors = F.normalize(model.descriptor_field(lifted).float(), dim=-1).cpu()
        else:
            descriptors = _cnn_cells(model, rgb.to(model.device), cell)[:, ys, xs].T
        views.append(
            VirtualView(
                pose, K, (width, height_px), cell, descriptors.contiguous().half().float(),
                torch.from_numpy(points.astype(np.float32)), torch.from_numpy(pixels.astype(np.float32)),
                (full.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8),
            )
        )  # fmt: skip
    figures = {
        "virtual_poses": len(poses),
        "virtual_views": len(views),
        "virtual_dropped_clearance": dropped["clearance"],
        "virtual_dropped_untrusted": dropped["untrusted"],
        "virtual_cells": int(sum(len(v.points) for v in views)),
        "virtual_render_seconds": renderer.seconds,
    }
    return views, figures
