"""The map index: what localization needs of every training view, computed once per map and stored beside it.

Per training view, on a grid of cells (``cell_px`` training pixels each): the scene CNN's features of the real
training image, pooled to the cells; the 3D point of each cell from depth rendered once at that view; and whether
that point has earned trust: enough accumulated opacity, texture to match, not on a depth edge (where a rendered
depth mixes two surfaces) and, above all, its depth confirmed by a neighbouring training view's rendered depth
(rendered depth is often wrong where the radiance field is not sure, and a wrong 3D point gives a consistent but
biased pose). By default a cell's 3D point is then triangulated: its descriptor is matched in the neighbouring
training images near where the rendered depth puts it, and its distance along its own ray is the one that explains
those matches (rendered depth is biased, often several per cent short; matches between real images are not), and
for the patch rounds its textured cells are placed once more by grey-level patches aligned between the training
images (``patch_triangulation``). The coarse stage matches a query against these cells without rendering anything.

The index is written as ``crossfire_index.pt`` beside the map's config.yml and rebuilt, with a message, when the
checkpoint or the index settings change.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from nerfstudio.utils.rich_utils import CONSOLE
from rich.progress import track

from crossfire_ns.geometry import (
    backproject,
    distances_along_rays,
    opengl_c2w_to_opencv_w2c,
    project_points,
    scale_intrinsics,
)
from crossfire_ns.io.atomic import atomic_open
from crossfire_ns.localize.render import MapRenderer
from crossfire_ns.metrics import camera_extent

INDEX_VERSION = 3
"""Bumped whenever what an index holds, or how it is computed, changes (older files are rebuilt)."""

INDEX_FILE = "crossfire_index.pt"
"""File name of the stored index, beside the map's config.yml."""

SAMPLED_CELLS = 8192
"""About how many index cells ``MapIndex.covisible_views`` projects per call (evenly sampled; all below this)."""

MIN_TEXTURE = 2.0 / 255.0
"""Cells whose grey-level standard deviation (5x5 training pixels) is below this are never matched."""


@dataclass
class MapIndexConfig:
    """How the index is built; a change of any value rebuilds the stored index."""

    cell_px: int = 2
    """Side of a cell in training-image pixels: features are average-pooled and depth rendered at 1 / cell_px of the
    training resolution (4x fewer rays to render and cells to match at 2 than at 1)."""
    max_cells: int = 6000
    """Cells per view at most: ``cell_px`` grows for large training images until a view has no more than this."""
    depth: Literal["median", "expected"] = "median"
    """Which rendered depth lifts a cell to 3D: nerfacto's median depth (where accumulated opacity reaches 0.5) or
    the expected depth (the weights' mean: smooth, but pulled between surfaces at edges and by floaters)."""
    min_accumulation: float = 0.9
    """Cells whose rays accumulate less opacity see through the map (sky, unseen space): dropped."""
    max_depth_step: float = 0.05
    """A cell whose depth differs from a 4-neighbour's by more than this share of its depth lies on a depth edge:
    dropped (its point mixes the two surfaces)."""
    consistency: float = 0.03
    """A cell lifted with rendered depth is kept only if, in at least one of ``num_neighbours`` overlapping training
    views, the rendered depth where its point projects agrees with the point's distance within this share; 0 keeps
    all."""
    triangulate: bool = True
    """Lift each cell by triangulation instead of by rendered depth: its descriptor is matched (guided, sub-pixel) in
    the ``triangulation_views`` most overlapping training images near where the rendered depth puts it, and its
    distance along its own ray is the one that best explains those matches; a cell that does not triangulate well is
    dropped. Rendered depth only seeds the search (BENCHMARKS.md, session 15)."""
    triangulation_views: int = 6
    """Training views (most overlapping first) in which each cell is matched for its triangulation."""
    triangulation_radius_px: int = 4
    """Half-size (training pixels) of the window around the rendered depth's projection searched for a cell's match."""
    triangulation_min_views: int = 2
    """Views whose match the triangulated point must explain within ``triangulation_max_error_px`` (at least two:
    one match always fits, two that agree confirm each other)."""
    triangulation_max_error_px: float = 1.5
    """A neighbour's match farther than this (training pixels) from the triangulated point's projection is an
    outlier: it is left out of the fit and does not count towards ``triangulation_min_views``."""
    rescale_radius_cells: int = 8
    """With ``triangulate``: a cell that does not triangulate but passes the neighbour check (``consistency``) keeps
    its rendered distance rescaled by the median triangulated-to-rendered ratio of the (up to 8) nearest triangulated
    cells of its view closer than this many cells (rendered depth errs smoothly: on the held-out room it was 7.5% short
    and the rescaled cells 2.4% off); one with none that near is dropped; 0 drops every cell that does not
    triangulate."""
    max_depth_sigma: float = 0.03
    """A triangulated cell is dropped when its distance is this uncertain, as a share of it, for matches good to half
    a pixel (short baselines and matches along the ray pin a point down poorly)."""
    patch_triangulate: bool = True
    """Then place the textured cells for the patch rounds by grey-level patches: each cell's patch of its training
    image is aligned by NCC in the ``patch_triangulation_views`` most overlapping training images (as the patch rounds
    align it in a query), and the patch rounds use the point on the cell's ray that those alignments explain
    (``ViewCells.patch_points``; ``patch_triangulation``); cells that do not triangulate so keep their point. The
    patch rounds trust a point to a tenth of a pixel, and CNN matches placed the held-out room's points 1.8% off.
    The coarse stage and the CNN rounds keep the CNN-triangulated points: with the patch-placed ones two blurred and
    low-light bundled queries went wrong (BENCHMARKS.md, session 18)."""
    patch_triangulation_views: int = 6
    """Training views (most overlapping first) in which each cell's patch is aligned for ``patch_triangulate``."""
    patch_triangulation_max_angle_deg: float = 30.0
    """``patch_triangulate``: views are ranked by how many of the index's cells they see within this angle of the
    cells' own lines of sight (an orbit's views of the far side see the cells' backs, where no patch matches; on the
    bundled scene 10534 -> 30343 cells placed, lighting 0.057 -> 0.036 deg, BENCHMARKS.md, session 18)."""
    patch_radius_px: int = 4
    """``patch_triangulate``: half-size of the square patch compared (4: 9 x 9 training pixels, as the patch rounds)."""
    patch_smoothing_px: float = 1.0
    """``patch_triangulate``: Gaussian blur (pixels) of the training images before they are compared (as the patch
    rounds: the same images are then shared with them)."""
    patch_min_contrast: float = 0.02
    """``patch_triangulate``: cells whose patch's grey-level standard deviation is below this are not placed."""
    patch_min_ncc: float = 0.8
    """``patch_triangulate``: an alignment whose NCC peak is below this is not a match."""
    patch_search_px: int = 2
    """``patch_triangulate``: how far (training pixels) around the current point's projection a patch is searched."""
    patch_max_error_px: float = 0.5
    """``patch_triangulate``: an alignment farther than this from the placed point's projection is an outlier."""
    patch_max_depth_sigma: float = 0.01
    """``patch_triangulate``: a cell stays where it was when its patch-placed distance is this uncertain, as a share
    of it, for alignments good to a tenth of a pixel (at least ``triangulation_min_views`` must agree)."""
    proposal_share: float = 0.5
    """The index renders take this share of the map's proposal samples per ray (nerfacto's final samples stay):
    half the render time, the same poses on the bundled scene and fern (BENCHMARKS.md); 1 renders as in training."""
    num_neighbours: int = 4
    """Training views (most overlapping first) asked to confirm each view's depth."""
    cell_descriptors: Literal["image", "field"] = "image"
    """What the query's CNN features are matched against: image (the CNN's features of the real training image,
    average-pooled per cell) or field (the descriptor field read at each cell's 3D point: one descriptor per
    place, the same from every view)."""
    fine_cells: bool = False
    """Also store every training pixel of the trusted cells as a 1-pixel cell (its own CNN feature; its point on
    its own ray at the distance interpolated between trusted cells; no extra render) for a last, finer refinement
    round (``--matcher.index-fine-round``); about 4x the index's size at 2-pixel cells."""


@dataclass
class ViewCells:
    """The trusted cells of one training view."""

    descriptors: torch.Tensor
    """(M, D) float32, L2-normalised CNN features of the real image."""
    points: torch.Tensor
    """(M, 3) float32, 3D points (normalised frame)."""
    pixels: torch.Tensor
    """(M, 2) float32, cell centres in training-image pixels (pixel centres at +0.5)."""
    patch_points: Optional[torch.Tensor] = None
    """(M, 3) float32, the points as grey-level patches place them (``MapIndexConfig.patch_triangulate``), for the
    patch rounds; None: ``points``."""


@dataclass
class MapIndex:
    """Every training view's trusted cells, with the views' poses and intrinsics (normalised frame)."""

    c2ws: np.ndarray
    """(N, 4, 4) camera-to-world, OpenGL, normalised frame."""
    Ks: np.ndarray
    """(N, 3, 3) intrinsics of the training images (full resolution)."""
    sizes: np.ndarray
    """(N, 2) training image (width, height)."""
    cell_px: np.ndarray
    """(N,) cell side of each view, in its training pixels."""
    views: List[ViewCells]
    key: Dict[str, Any] = field(default_factory=dict)
    """What the index was built from (checkpoint, settings, version): a stored index with another key is rebuilt."""
    stats: Dict[str, Any] = field(default_factory=dict)
    """Build time, cells kept and dropped by reason."""
    fine: List[ViewCells] = field(default_factory=list)
    """Per view, its trusted cells' pixels as 1-pixel cells (``MapIndexConfig.fine_cells``); empty when not built."""

    def __len__(self) -> int:
        return len(self.views)

    @cached_property
    def spacing(self) -> float:
        """Median distance from a training camera to its nearest neighbour (computed once, used per query)."""
        centres = self.c2ws[:, :3, 3]
        if len(centres) < 2:
            return 1.0
        return float(np.median(np.sort(np.linalg.norm(centres[:, None] - centres[None], axis=-1), axis=1)[:, 1]))

    @cached_property
    def extent(self) -> float:
        """Diagonal of the training cameras' bounding box (``metrics.camera_extent``): the scale of pose figures."""
        return camera_extent(self.c2ws)

    def nearest_views(self, c2w: np.ndarray, k: int) -> List[int]:
        """The k training views whose pose is closest to ``c2w`` (normalised frame): camera-centre distance in units
        of the views' spacing plus the angle between the viewing directions (1 per 30 degrees)."""
        centres = self.c2ws[:, :3, 3]
        forward = -self.c2ws[:, :3, 2]
        c2w = np.asarray(c2w, dtype=np.float64)
        distance = np.linalg.norm(centres - c2w[:3, 3], axis=1)
        spacing = self.spacing
        angle = np.degrees(np.arccos(np.clip(forward @ (-c2w[:3, 2]), -1.0, 1.0)))
        score = distance / max(spacing, 1e-9) + angle / 30.0
        return [int(i) for i in np.argsort(score, kind="stable")[:k]]

    @cached_property
    def _all_cells(self):
        """Every view's cell points stacked ((M, 3) float64) with the view each belongs to ((M,) int)."""
        if not self.views:
            return np.zeros((0, 3)), np.zeros(0, dtype=np.int64)
        points = np.concatenate([v.points.numpy() for v in self.views]).astype(np.float64)
        owners = np.concatenate([np.full(len(v.points), i, dtype=np.int64) for i, v in enumerate(self.views)])
        return points, owners

    @cached_property
    def _sampled_cells(self):
        """``_all_cells``, every n-th, at most about ``SAMPLED_CELLS``: enough to rank views by what they see, at a
        fraction of the cost per query."""
        points, owners = self._all_cells
        step = max(1, int(np.ceil(len(points) / SAMPLED_CELLS)))
        return points[::step], owners[::step]

    def _cells_seen(
        self, c2w: np.ndarray, K: np.ndarray, size, max_angle_deg: Optional[float] = None, sampled: bool = False
    ) -> np.ndarray:
        """(N,) per view, how many of its cells project into an image of ``size`` (width, height) taken with ``K`` at
        ``c2w``; with ``max_angle_deg``, only those that camera sees from within this angle of the direction their own
        view sees them from (cells on the far side of an object, hidden from that camera, do not count); ``sampled``:
        of ``_sampled_cells`` only."""
        points, owners = self._sampled_cells if sampled else self._all_cells
        pixels, _, in_front = project(points, c2w, K)
        width, height = size
        inside = in_front & (pixels[:, 0] >= 0) & (pixels[:, 0] < width) & (pixels[:, 1] >= 0) & (pixels[:, 1] < height)
        if max_angle_deg is not None:
            seen = points[inside] - np.asarray(c2w, dtype=np.float64)[:3, 3]
            own = points[inside] - self.c2ws[owners[inside], :3, 3]
            norms = np.linalg.norm(seen, axis=1) * np.linalg.norm(own, axis=1)
            cosine = np.einsum("nd,nd->n", seen, own) / np.maximum(norms, 1e-12)
            inside[np.flatnonzero(inside)] = cosine >= np.cos(np.radians(max_angle_deg))
        return np.bincount(owners[inside], minlength=len(self.views))

    def overlapping_views(
        self, c2w: np.ndarray, K: np.ndarray, size, k: int, max_angle_deg: Optional[float] = None
    ) -> List[int]:
        """The (at most) k training views with the most cells that project into an image of ``size`` (width, height)
        taken with ``K`` at ``c2w`` (normalised frame), most first, ties in ``nearest_views`` order; views with none
        are left out. The views that see what that image sees: in an inside-out scene the nearest camera may look
        elsewhere. ``max_angle_deg``: count only the cells seen from that close to their own view's line of sight
        (``_cells_seen``)."""
        counts = self._cells_seen(c2w, K, size, max_angle_deg)
        rank = np.empty(len(self.views), dtype=np.int64)
        rank[self.nearest_views(c2w, len(self.views))] = np.arange(len(self.views))
        order = np.lexsort((rank, -counts))
        return [int(i) for i in order[:k] if counts[i] > 0]

    def covisible_views(
        self, c2w: np.ndarray, K: np.ndarray, size, k: int, max_angle_deg: float, min_share: float
    ) -> List[int]:
        """The (at most) k ``nearest_views`` of ``c2w`` among those that see at least ``min_share`` as many of that
        image's cells as the view that sees most (``_cells_seen`` with ``max_angle_deg``): near views share the query's
        appearance, but in an inside-out scene the nearest camera may look elsewhere."""
        counts = self._cells_seen(c2w, K, size, max_angle_deg, sampled=True)
        if counts.max(initial=0) == 0:
            return []
        return [v for v in self.nearest_views(c2w, len(self.views)) if counts[v] >= min_share * counts.max()][:k]

    def save(self, path: Path) -> None:
        """Write atomically (a crash leaves the old file or none, never half of one)."""
        path = Path(path)
        payload = {
            "key": self.key,
            "stats": self.stats,
            "c2ws": torch.from_numpy(self.c2ws),
            "Ks": torch.from_numpy(self.Ks),
            "sizes": torch.from_numpy(self.sizes),
            "cell_px": torch.from_numpy(self.cell_px),
            "views": [_stored(v) for v in self.views],
            "fine": [_stored(v) for v in self.fine],
        }
        with atomic_open(path, "wb") as handle:
            torch.save(payload, handle)

    @classmethod
    def load(cls, path: Path) -> "MapIndex":
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        views = [_loaded(v) for v in payload["views"]]
        return cls(
            payload["c2ws"].numpy(), payload["Ks"].numpy(), payload["sizes"].numpy(), payload["cell_px"].numpy(), views,
            payload["key"], payload.get("stats", {}), [_loaded(v) for v in payload.get("fine", [])],
        )  # fmt: skip


def _stored(cells: ViewCells) -> dict:
    stored = {"descriptors": cells.descriptors.half(), "points": cells.points, "pixels": cells.pixels}
    if cells.patch_points is not None:
        stored["patch_points"] = cells.patch_points
    return stored


def _loaded(stored: dict) -> ViewCells:
    patch_points = stored.get("patch_points")
    return ViewCells(
        stored["descriptors"].float(), stored["points"].float(), stored["pixels"].float(),
        None if patch_points is None else patch_points.float(),
    )  # fmt: skip


def _local_std(grey: torch.Tensor) -> torch.Tensor:
    """(1, 1, H, W) grey image -> its 5x5 standard deviation, same shape."""
    mean = F.avg_pool2d(grey, 5, 1, 2, count_include_pad=False)
    return (F.avg_pool2d(grey.square(), 5, 1, 2, count_include_pad=False) - mean.square()).clamp(min=0).sqrt()


def cell_size(width: int, height: int, config: MapIndexConfig) -> int:
    """The cell side (training pixels) for an image: ``cell_px``, larger when the image would exceed ``max_cells``."""
    cell = max(1, int(config.cell_px))
    while (width // cell) * (height // cell) > config.max_cells:
        cell += 1
    return cell


def project(points: np.ndarray, c2w: np.ndarray, K: np.ndarray):
    """(M, 3) world points -> ((M, 2) pixels, (M,) distance from the camera centre, (M,) in front) for an OpenGL
    camera-to-world and K (pixel centres at +0.5)."""
    R, t = opengl_c2w_to_opencv_w2c(c2w)
    pixels, cam = project_points(points, K, R, t)
    return pixels, np.linalg.norm(cam, axis=1), cam[:, 2] > 1e-6


@dataclass
class RawView:
    descriptors: torch.Tensor  # (D, h, w)
    distance: np.ndarray  # (h, w) rendered distance along each cell's ray
    points: np.ndarray  # (h, w, 3)
    keep: np.ndarray  # (h, w) bool: accumulation, texture, not an edge
    K: np.ndarray  # (3, 3) at cell resolution
    cell: float  # cell side in training pixels
    pixel_descriptors: Optional[torch.Tensor] = None  # (D, h * cell, w * cell) per training pixel (fine, triangulate)

    @property
    def full_K(self) -> np.ndarray:
        """(3, 3) intrinsics at training resolution."""
        return scale_intrinsics(self.K, self.cell, self.cell)


def depth_edges(distance: np.ndarray, max_step: float) -> np.ndarray:
    """(h, w) bool: cells whose distance differs from a 4-neighbour's by more than ``max_step`` of their own."""
    padded = np.pad(distance, 1, mode="edge")
    h, w = distance.shape
    step = np.zeros_like(distance)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        step = np.maximum(step, np.abs(padded[dy : dy + h, dx : dx + w] - distance))
    return step > max_step * np.maximum(distance, 1e-9)


@torch.no_grad()
def describe_view(crossfire_map, renderer: MapRenderer, index: int, config: MapIndexConfig) -> RawView:
    image = crossfire_map.training_image(index)[..., :3].float()
    height, width = image.shape[:2]
    cell = cell_size(width, height, config)
    h, w = height // cell, width // cell
    image = image[: h * cell, : w * cell]
    grey = image.mean(-1)[None, None]
    textured = F.avg_pool2d(_local_std(grey), cell)[0, 0].numpy() > MIN_TEXTURE
    K_full = crossfire_map.training_intrinsics(width, height, index)
    K = scale_intrinsics(K_full, 1.0 / cell, 1.0 / cell)
    view = renderer.render(crossfire_map.train_c2w[index], K, w, h)
    depth = view.depth if config.depth == "median" else view.expected_depth
    distance = depth[..., 0].cpu().numpy().astype(np.float64)
    lifted = view.origins + view.directions * depth  # (h, w, 3)
    points = lifted.cpu().numpy().astype(np.float64)
    accumulation = view.accumulation[..., 0].cpu().numpy()
    pixel_descriptors = None
    if config.cell_descriptors == "image" or config.fine_cells or config.triangulate:
        features = crossfire_map.model.encode_images(image[None])  # (1, D, H, W)
        if features.shape[-2:] != image.shape[:2]:
            features = F.interpolate(features, size=image.shape[:2], mode="bilinear", align_corners=False)
        pooled = F.normalize(F.avg_pool2d(features, cell), dim=1)[0].cpu()
        if config.fine_cells or config.triangulate:
            pixel_descriptors = F.normalize(features, dim=1)[0].cpu().half()  # half the memory of a map's images
    if config.cell_descriptors == "field":
        finite = torch.nan_to_num(lifted, posinf=0.0, neginf=0.0)
        pooled = F.normalize(crossfire_map.model.descriptor_field(finite).float(), dim=-1).permute(2, 0, 1).cpu()
    keep = (accumulation >= config.min_accumulation) & textured & np.isfinite(distance)
    if config.max_depth_step > 0:
        keep &= ~depth_edges(distance, config.max_depth_step)
    return RawView(pooled, distance, points, keep, K, float(cell), pixel_descriptors)


def fine_cells(view: RawView, trusted: np.ndarray, c2w: np.ndarray) -> ViewCells:
    """Every training pixel of the ``trusted`` (h, w) cells of ``view`` as a 1-pixel cell.

    A pixel's point lies on its own ray (``c2w`` OpenGL, the view's intrinsics scaled back to training pixels) at
    the distance interpolated bilinearly between the trusted cells around it (its own cell's where a neighbour is
    not trusted): no render at training resolution, and no depth taken across a depth edge."""
    if view.pixel_descriptors is None:
        raise ValueError("the view was described without per-pixel descriptors (MapIndexConfig.fine_cells)")
    cell = int(view.cell)
    h, w = trusted.shape
    ys, xs = np.nonzero(trusted)
    oy, ox = np.mgrid[0:cell, 0:cell]
    py = (ys[:, None] * cell + oy.reshape(1, -1)).reshape(-1)
    px = (xs[:, None] * cell + ox.reshape(1, -1)).reshape(-1)
    distance = np.where(trusted, view.distance, np.nan)
    u, v = (px + 0.5) / cell - 0.5, (py + 0.5) / cell - 0.5
    x0, y0 = np.floor(u).astype(int), np.floor(v).astype(int)
    wx, wy = u - x0, v - y0
    interpolated = np.zeros(len(px))
    for dx, dy, weight in ((0, 0, (1 - wx) * (1 - wy)), (1, 0, wx * (1 - wy)), (0, 1, (1 - wx) * wy), (1, 1, wx * wy)):
        interpolated += weight * distance[np.clip(y0 + dy, 0, h - 1), np.clip(x0 + dx, 0, w - 1)]
    own = distance[py // cell, px // cell]
    interpolated = np.where(np.isfinite(interpolated), interpolated, own)
    K = scale_intrinsics(view.K, float(cell), float(cell))
    points = backproject(px + 0.5, py + 0.5, interpolated, K, *opengl_c2w_to_opencv_w2c(c2w))
    descriptors = view.pixel_descriptors[:, py, px].T.contiguous().half().float()  # rounded as stored
    pixels = np.stack([px, py], axis=1) + 0.5
    return ViewCells(
        descriptors, torch.from_numpy(points.astype(np.float32)), torch.from_numpy(pixels.astype(np.float32))
    )


def _move_along_rays(view: RawView, distance: np.ndarray, c2w: np.ndarray) -> None:
    """Put ``view``'s cells at the finite entries of ``distance`` (h, w) along their own rays (in place)."""
    ys, xs = np.nonzero(np.isfinite(distance))
    origin = c2w[:3, 3]
    rays = view.points[ys, xs] - origin
    rays /= np.maximum(np.linalg.norm(rays, axis=1, keepdims=True), 1e-12)
    view.points[ys, xs] = origin + rays * distance[ys, xs, None]
    view.distance[ys, xs] = distance[ys, xs]


def confirmed_by_neighbours(views: List[RawView], c2ws: np.ndarray, config: MapIndexConfig) -> List[np.ndarray]:
    """Per view, (h, w) bool: the cell's depth is confirmed by at least one overlapping view's rendered depth."""
    confirmed = []
    for i, view in enumerate(views):
        points = view.points.reshape(-1, 3)
        keep = view.keep.reshape(-1)
        agree = np.zeros(len(points), dtype=bool)
        overlaps = []
        for j, other in enumerate(views):
            if j == i:
                continue
            pixels, distance, in_front = project(points[keep], c2ws[j], other.K)
            h, w = other.distance.shape
            inside = in_front & (pixels[:, 0] >= 0) & (pixels[:, 0] < w) & (pixels[:, 1] >= 0) & (pixels[:, 1] < h)
            overlaps.append((int(inside.sum()), j))
        for _, j in sorted(overlaps, reverse=True)[: config.num_neighbours]:
            other = views[j]
            pixels, distance, in_front = project(points[keep], c2ws[j], other.K)
            h, w = other.distance.shape
            x, y = np.floor(pixels[:, 0]).astype(int), np.floor(pixels[:, 1]).astype(int)
            inside = in_front & (x >= 0) & (x < w) & (y >= 0) & (y < h)
            seen = np.full(len(x), np.nan)
            seen[inside] = other.distance[y[inside], x[inside]]
            ok = inside & (np.abs(seen - distance) <= config.consistency * distance)
            agree[np.flatnonzero(keep)[ok]] = True
        confirmed.append(agree.reshape(view.keep.shape))
    return confirmed


def _overlapping(points: np.ndarray, views: List[RawView], c2ws: np.ndarray, own: int, k: int) -> List[int]:
    """The ``k`` views other than ``own`` into whose training image most of ``points`` (M, 3) project."""
    counts = []
    for j, other in enumerate(views):
        if j == own:
            continue
        pixels, _, in_front = project(points, c2ws[j], other.full_K)
        w, h = other.distance.shape[1] * other.cell, other.distance.shape[0] * other.cell
        inside = in_front & (pixels[:, 0] >= 0) & (pixels[:, 0] < w) & (pixels[:, 1] >= 0) & (pixels[:, 1] < h)
        counts.append((int(inside.sum()), -j))
    return [-j for n, j in sorted(counts, reverse=True)[:k] if n > 0]


def triangulated_distances(views: List[RawView], c2ws: np.ndarray, config: MapIndexConfig) -> List[np.ndarray]:
    """Per view, (h, w) distance of each kept cell along its own ray, triangulated from its matches in the
    overlapping training images (NaN where a cell is not kept or does not triangulate well, ``MapIndexConfig``).

    Each cell's descriptor is searched (``matching.guided_matches``, sub-pixel) in each neighbour's per-pixel
    features around where its rendered point projects; then Gauss-Newton on the distance alone (the cell stays on
    its own ray) minimises the reprojection error to those matches, leaving out those off by more than
    ``triangulation_max_error_px`` after two steps. ``views`` need ``pixel_descriptors``; ``c2ws`` (N, 4, 4) OpenGL."""
    from crossfire_ns.localize.matching import guided_matches  # pure helper of the same layer

    radius = int(config.triangulation_radius_px)
    out = []
    for i, view in enumerate(views):
        distance = np.full(view.distance.shape, np.nan)
        ys, xs = np.nonzero(view.keep)
        out.append(distance)
        if len(ys) == 0:
            continue
        seed = view.points[ys, xs].astype(np.float64)
        origin = c2ws[i][:3, 3]
        s = np.linalg.norm(seed - origin, axis=1)
        rays = (seed - origin) / np.maximum(s, 1e-12)[:, None]
        descriptors = view.descriptors[:, ys, xs].T.contiguous().half().float()  # rounded as stored
        neighbours = _overlapping(seed, views, c2ws, i, config.triangulation_views)
        observed = np.full((len(s), len(neighbours), 2), np.nan)
        for a, j in enumerate(neighbours):
            other = views[j]
            if other.pixel_descriptors is None:
                raise ValueError("triangulation needs every view's per-pixel descriptors (describe_view)")
            features = other.pixel_descriptors.float()
            h, w = features.shape[1:]
            pixels, _, in_front = project(seed, c2ws[j], other.full_K)
            margin = radius + 1
            inside = in_front & (pixels[:, 0] >= margin) & (pixels[:, 0] < w - margin)
            inside = np.flatnonzero(inside & (pixels[:, 1] >= margin) & (pixels[:, 1] < h - margin))
            if len(inside) == 0:
                continue
            found, xy, _ = guided_matches(
                descriptors[torch.from_numpy(inside)], torch.from_numpy(pixels[inside]).float(), features, radius, 0.6
            )
            observed[inside[found.numpy()], a] = xy.numpy()
        cameras = [(views[j].full_K, *opengl_c2w_to_opencv_w2c(c2ws[j])) for j in neighbours]
        s, inlier, information = distances_along_rays(
            origin, rays, s, observed, cameras, config.triangulation_max_error_px
        )
        sigma = 0.5 / np.sqrt(np.maximum(information, 1e-12)) / s
        good = (inlier.sum(1) >= config.triangulation_min_views) & (sigma <= config.max_depth_sigma)
        distance[ys[good], xs[good]] = s[good]
    return out


def rescaled_distances(rendered: np.ndarray, triangulated: np.ndarray, candidates: np.ndarray, radius: float):
    """(h, w) distances of the ``candidates`` cells that did not triangulate: their ``rendered`` distance times the
    median ``triangulated`` / ``rendered`` ratio of the (up to 8) nearest triangulated cells closer than ``radius`` cells
    (NaN elsewhere, and where no triangulated cell is that near). All (h, w); ``triangulated`` NaN where it failed."""
    from scipy.spatial import cKDTree

    out = np.full(rendered.shape, np.nan)
    known = np.isfinite(triangulated)
    wanted = candidates & ~known
    if known.sum() == 0 or not wanted.any() or radius <= 0:
        return out
    ky, kx = np.nonzero(known)
    wy, wx = np.nonzero(wanted)
    ratio = triangulated[known] / rendered[known]
    k = int(min(8, len(ratio)))
    gap, nearest = cKDTree(np.stack([kx, ky], 1)).query(np.stack([wx, wy], 1), k=k, distance_upper_bound=radius)
    gap, nearest = gap.reshape(len(wx), k), nearest.reshape(len(wx), k)
    near = np.isfinite(gap)
    ratios = np.where(near, ratio[np.minimum(nearest, len(ratio) - 1)], np.nan)
    have = near.any(axis=1)
    out[wy[have], wx[have]] = rendered[wy[have], wx[have]] * np.nanmedian(ratios[have], axis=1)
    return out


def build_map_index(crossfire_map, config: Optional[MapIndexConfig] = None, key: Optional[dict] = None) -> MapIndex:
    """Describe every training view (one render each at cell resolution), then keep the cells that earned trust."""
    config = config or MapIndexConfig()
    if config.fine_cells and config.cell_descriptors == "field":
        raise ValueError("fine index cells need the training images' CNN features: use cell_descriptors='image'")
    start = time.perf_counter()
    # depth and opacity only: the colour MLP is not run (the cells' descriptors come from the real image's CNN features)
    renderer = MapRenderer(crossfire_map.model, descriptors=False, proposal_share=config.proposal_share, colour=False)
    num = len(crossfire_map.train_dataset)
    raw = [
        describe_view(crossfire_map, renderer, i, config)
        for i in track(range(num), description="Indexing the map (one render per training view)", transient=True)
    ]
    c2ws = np.asarray(crossfire_map.train_c2w, dtype=np.float64)
    if config.triangulate:
        triangulated = triangulated_distances(raw, c2ws, config)
        checked = confirmed_by_neighbours(raw, c2ws, config) if config.consistency > 0 else [v.keep for v in raw]
        confirmed = []
        for i, (view, distance) in enumerate(zip(raw, triangulated)):
            rescaled = rescaled_distances(view.distance, distance, view.keep & checked[i], config.rescale_radius_cells)
            distance = np.where(np.isfinite(distance), distance, rescaled)
            confirmed.append(np.isfinite(distance))
            _move_along_rays(view, distance, c2ws[i])
        triangulated_cells = sum(int(np.isfinite(d).sum()) for d in triangulated)
    elif config.consistency > 0:
        confirmed = confirmed_by_neighbours(raw, c2ws, config)
    else:
        confirmed = [v.keep for v in raw]
    views, fine, total, kept_basic, kept = [], [], 0, 0, 0
    for i, (view, ok) in enumerate(zip(raw, confirmed)):
        mask = view.keep & ok
        if config.fine_cells:
            fine.append(fine_cells(view, mask, c2ws[i]))
        total += view.keep.size
        kept_basic += int(view.keep.sum())
        kept += int(mask.sum())
        ys, xs = np.nonzero(mask)
        # rounded as the file stores them (float16): a just-built index matches exactly like the same index loaded
        # later, so a query's outcome does not depend on whether this process built it (BENCHMARKS.md, session 9)
        descriptors = view.descriptors[:, ys, xs].T.contiguous().half().float()
        points = torch.from_numpy(view.points[ys, xs].astype(np.float32))
        pixels = torch.from_numpy(((np.stack([xs, ys], axis=1) + 0.5) * view.cell).astype(np.float32))
        views.append(ViewCells(descriptors, points, pixels))
    cams = crossfire_map.train_cameras
    sizes = np.stack([cams.width[:, 0].numpy(), cams.height[:, 0].numpy()], axis=1).astype(np.int64)
    Ks = np.stack([crossfire_map.training_intrinsics(int(w), int(h), i) for i, (w, h) in enumerate(sizes)])
    index = MapIndex(c2ws, Ks, sizes, np.array([int(v.cell) for v in raw], dtype=np.int64), views, key or {}, {}, fine)
    if config.patch_triangulate and kept:
        index.stats["cells_patch_triangulated"] = _patch_triangulate(crossfire_map, index, config)
    index.stats.update(
        {
            "seconds": time.perf_counter() - start,
            "renders": renderer.num_renders,
            "render_seconds": renderer.seconds,
            "cells": total,
            "cells_basic": kept_basic,
            "cells_kept": kept,
        }
    )
    if config.triangulate:
        index.stats["cells_triangulated"] = triangulated_cells
    if fine:
        index.stats["fine_cells"] = sum(len(v.points) for v in fine)
    return index


def _patch_triangulate(crossfire_map, index: MapIndex, config: MapIndexConfig) -> int:
    """``patch_triangulation.patch_triangulated_points`` of ``index`` as its views' ``patch_points`` (in place);
    returns how many cells moved."""
    from crossfire_ns.localize.patch_triangulation import patch_triangulated_points, training_greys

    greys = training_greys(crossfire_map, config.patch_radius_px, config.patch_smoothing_px)
    points, moved = patch_triangulated_points(
        index, greys, config.patch_radius_px, config.patch_min_contrast, config.patch_min_ncc,
        config.patch_triangulation_views, config.patch_search_px, config.patch_max_error_px,
        config.triangulation_min_views, config.patch_max_depth_sigma, config.patch_triangulation_max_angle_deg,
        progress=lambda views: track(views, description="Placing index points by patches", transient=True),
    )  # fmt: skip
    for cells, placed in zip(index.views, points):
        cells.patch_points = placed
    return moved


def index_key(crossfire_map, config: MapIndexConfig) -> Dict[str, Any]:
    """What identifies an index: the checkpoint (name, size, step), the settings and ``INDEX_VERSION``."""
    checkpoint = Path(crossfire_map.checkpoint) if crossfire_map.checkpoint else None
    return {
        "version": INDEX_VERSION,
        "checkpoint": checkpoint.name if checkpoint else None,
        "checkpoint_bytes": checkpoint.stat().st_size if checkpoint and checkpoint.exists() else None,
        "step": crossfire_map.step,
        "config": asdict(config),
    }


def index_path(crossfire_map) -> Optional[Path]:
    """Where the map's index is stored (beside its config.yml); None for a map not loaded from a file."""
    return Path(crossfire_map.config_path).parent / INDEX_FILE if crossfire_map.config_path else None


def load_or_build_index(crossfire_map, config: Optional[MapIndexConfig] = None, console=None) -> MapIndex:
    """The stored index when it matches the map's checkpoint and ``config``; otherwise built (and stored)."""
    config = config or MapIndexConfig()
    console = console or CONSOLE
    key = index_key(crossfire_map, config)
    path = index_path(crossfire_map)
    if path is not None and path.is_file():
        try:
            stored = MapIndex.load(path)
        except Exception as err:  # noqa: BLE001  an unreadable index is rebuilt, never fatal
            console.print(f"[yellow]{path}: unreadable map index ({type(err).__name__}: {err}); rebuilding it.")
        else:
            if stored.key == key:
                return stored
            what = [k for k in key if stored.key.get(k) != key[k]]
            console.print(f"[yellow]{path}: map index built for another {', '.join(what)}; rebuilding it.")
    index = build_map_index(crossfire_map, config, key)
    s = index.stats
    console.print(
        f"Map index: {len(index)} views, {s['cells_kept']} of {s['cells']} cells trusted "
        f"({s['cells_basic']} before the depth check"
        + (f", {s['cells_triangulated']} triangulated" if "cells_triangulated" in s else "")
        + (f", {s['cells_patch_triangulated']} placed by patches" if "cells_patch_triangulated" in s else "")
        + f"), {s['seconds']:.0f} s"
    )
    if s.get("cells_triangulated") == 0:
        console.print(
            "[yellow]No cell of the map triangulated: its training views do not match one another (a map trained "
            "too briefly?). Its cells keep nothing; --matcher.index.triangulate False lifts them with rendered depth."
        )
    if path is not None:
        try:
            index.save(path)
        except OSError as err:
            console.print(f"[yellow]could not store the map index at {path} ({err}); it is kept in memory only.")
    return index


def map_index(crossfire_map, config: Optional[MapIndexConfig] = None) -> MapIndex:
    """The map's index, loaded or built once per map and settings."""
    config = config or MapIndexConfig()
    return crossfire_map.cached(("map_index", repr(config)), lambda: load_or_build_index(crossfire_map, config))
