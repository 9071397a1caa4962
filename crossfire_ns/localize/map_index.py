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
    camera_spacing,
    distances_along_rays,
    inside_image,
    opengl_c2w_to_opencv_w2c,
    pose_nearness,
    project_c2w,
    rotation_angle_deg,
    scale_intrinsics,
)
from crossfire_ns.io.atomic import atomic_open
from crossfire_ns.io.index_file import INDEX_FILE
from crossfire_ns.localize.patch_alignment import PatchConfig
from crossfire_ns.localize.render import MapRenderer
from crossfire_ns.localize.virtual_views import VirtualViewsConfig, render_virtual_views
from crossfire_ns.metrics import camera_extent
from crossfire_ns.texture import MIN_TEXTURE, local_std

INDEX_VERSION = 4
"""Bumped whenever what an index holds, or how it is computed, changes (older files are rebuilt)."""


SAMPLED_CELLS = 8192
"""About how many index cells ``MapIndex.covisible_views`` projects per call (evenly sampled; all below this)."""


@dataclass
class TriangulationConfig:
    """How a cell's 3D point is triangulated from its CNN matches in the overlapping training images."""

    views: int = 6
    """Overlapping training views each cell is matched in."""
    radius_px: int = 4
    """Search radius around the rendered depth's projection (training pixels)."""
    min_views: int = 2
    """Matches the point must explain (also for a patch-placed point)."""
    max_error_px: float = 1.5
    """Matches farther from the point's projection are outliers (training pixels)."""
    rescale_radius_cells: int = 8
    """A cell that does not triangulate takes its neighbours' depth correction within this many cells (0: dropped)."""
    max_depth_sigma: float = 0.03
    """Points whose distance is more uncertain than this share of it are dropped."""


@dataclass
class PatchPlacementConfig:
    """How textured cells are placed again for the patch rounds by aligning their grey-level patches between training
    images (``patch_triangulation``; patch size, blur and thresholds are the shared ``PatchConfig``)."""

    views: int = 6
    """Overlapping training views each cell's patch is aligned in."""
    max_angle_deg: float = 30.0
    """Views count cells they see within this angle of the cells' own line of sight."""
    search_px: int = 2
    """Search distance around the current point's projection (training pixels)."""
    max_error_px: float = 0.5
    """Alignments farther from the placed point's projection are outliers."""
    max_depth_sigma: float = 0.01
    """A cell stays put when its patch-placed distance is more uncertain than this share."""


@dataclass
class MapIndexConfig:
    """How the map index is built; a change of any value rebuilds the stored index."""

    cell_px: int = 2
    """Side of a cell in training pixels (features pooled, depth rendered per cell)."""
    max_cells: int = 6000
    """Cells per view at most (cell-px grows for large images)."""
    depth: Literal["median", "expected"] = "median"
    """Rendered depth that seeds each cell's 3D point."""
    min_accumulation: float = 0.9
    """Cells whose rays accumulate less opacity (empty space) are dropped."""
    max_depth_step: float = 0.05
    """Cells on a depth edge (a step of this share to a neighbour) are dropped."""
    consistency: float = 0.03
    """A neighbouring view's rendered depth must agree within this share (0: no check)."""
    num_neighbours: int = 4
    """Overlapping views asked to confirm each view's depth."""
    proposal_share: float = 0.5
    """Share of the map's proposal samples the index renders take (1: as trained)."""
    cell_descriptors: Literal["image", "field"] = "image"
    """Cell descriptors: the CNN of the real training image, or the descriptor field."""
    fine_cells: bool = False
    """Also store every pixel of the trusted cells (for --matcher.refine.fine-round)."""
    triangulate: bool = True
    """Triangulate each cell from its CNN matches in the neighbouring views."""
    triangulation: TriangulationConfig = field(default_factory=TriangulationConfig)
    patch_triangulate: bool = True
    """Place the textured cells again by grey-level patches, for the patch rounds."""
    patch_triangulation: PatchPlacementConfig = field(default_factory=PatchPlacementConfig)
    virtual: VirtualViewsConfig = field(default_factory=VirtualViewsConfig)


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

    @property
    def placed_points(self) -> torch.Tensor:
        """(M, 3) ``patch_points`` where the index placed them, else ``points``."""
        return self.points if self.patch_points is None else self.patch_points


@dataclass
class MapIndex:
    """Every view's trusted cells, with the views' poses and intrinsics (normalised frame): the training views first,
    then the virtual views (``virtual_views``) rendered at poses no camera took."""

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
    """Per training view, its trusted cells' pixels as 1-pixel cells (``MapIndexConfig.fine_cells``); empty when not
    built."""
    num_training: int = -1
    """Views ``[0, num_training)`` are the training views, the rest virtual (-1: all are training views)."""
    virtual_rgb: List[torch.Tensor] = field(default_factory=list)
    """Per virtual view, its rendered colour ((H, W, 3) uint8): for retrieval and the patch rounds."""
    virtual_sources: List[int] = field(default_factory=list)
    """Per virtual view, the training view it was moved from."""

    def __len__(self) -> int:
        return len(self.views)

    @property
    def training_views(self) -> int:
        """How many of the views are training views (the rest are virtual)."""
        return len(self.views) if self.num_training < 0 else self.num_training

    @property
    def virtual_c2ws(self) -> np.ndarray:
        """(M, 4, 4) poses of the virtual views."""
        return self.c2ws[self.training_views :]

    @cached_property
    def spacing(self) -> float:
        """Median distance from a training camera to its nearest neighbour (computed once, used per query)."""
        return camera_spacing(self.c2ws[: self.training_views, :3, 3])

    @cached_property
    def extent(self) -> float:
        """Diagonal of the training cameras' bounding box (``metrics.camera_extent``): the scale of pose figures."""
        return camera_extent(self.c2ws[: self.training_views])

    def nearest_views(self, c2w: np.ndarray, k: int) -> List[int]:
        """The k training views whose pose is closest to ``c2w`` (normalised frame): camera-centre distance in units
        of the views' spacing plus the angle between the viewing directions (1 per 30 degrees)."""
        score = pose_nearness(self.c2ws, c2w, self.spacing)
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
        pixels, _, in_front = project_c2w(points, c2w, K)
        width, height = size
        inside = inside_image(pixels, in_front, width, height)
        if max_angle_deg is not None:
            seen = points[inside] - np.asarray(c2w, dtype=np.float64)[:3, 3]
            own = points[inside] - self.c2ws[owners[inside], :3, 3]
            norms = np.linalg.norm(seen, axis=1) * np.linalg.norm(own, axis=1)
            cosine = np.einsum("nd,nd->n", seen, own) / np.maximum(norms, 1e-12)
            inside[np.flatnonzero(inside)] = cosine >= np.cos(np.radians(max_angle_deg))
        return np.bincount(owners[inside], minlength=len(self.views))

    def rotation_gap_deg(self, c2w: np.ndarray) -> float:
        """Smallest rotation (degrees) between ``c2w`` and any training view: how far the camera is turned from every
        viewpoint the map was captured from."""
        R = np.asarray(c2w, dtype=np.float64)[:3, :3]
        return min(rotation_angle_deg(view[:3, :3].T @ R) for view in self.c2ws[: self.training_views])

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
            "num_training": self.num_training,
            "virtual_rgb": self.virtual_rgb,
            "virtual_sources": self.virtual_sources,
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
            int(payload.get("num_training", -1)), list(payload.get("virtual_rgb", [])),
            [int(v) for v in payload.get("virtual_sources", [])],
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


def cell_size(width: int, height: int, config: MapIndexConfig) -> int:
    """The cell side (training pixels) for an image: ``cell_px``, larger when the image would exceed ``max_cells``."""
    cell = max(1, int(config.cell_px))
    while (width // cell) * (height // cell) > config.max_cells:
        cell += 1
    return cell


@dataclass
class RawView:
    descriptors: torch.Tensor  # (D, h, w)
    distance: np.ndarray  # (h, w) rendered distance along each cell's ray
    points: np.ndarray  # (h, w, 3)
    keep: np.ndarray  # (h, w) bool: accumulation, texture, not an edge
    K: np.ndarray  # (3, 3) at cell resolution
    cell: float  # cell side in training pixels
    pixel_descriptors: Optional[torch.Tensor] = None  # (D, h * cell, w * cell) per training pixel (fine, triangulate)
    accumulation: Optional[np.ndarray] = None  # (h, w) rendered opacity

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
    textured = F.avg_pool2d(local_std(grey), cell)[0, 0].numpy() > MIN_TEXTURE
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
    return RawView(pooled, distance, points, keep, K, float(cell), pixel_descriptors, accumulation)


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


def move_along_rays(view: RawView, distance: np.ndarray, c2w: np.ndarray) -> None:
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
            pixels, distance, in_front = project_c2w(points[keep], c2ws[j], other.K)
            h, w = other.distance.shape
            inside = inside_image(pixels, in_front, w, h)
            overlaps.append((int(inside.sum()), j))
        for _, j in sorted(overlaps, reverse=True)[: config.num_neighbours]:
            other = views[j]
            pixels, distance, in_front = project_c2w(points[keep], c2ws[j], other.K)
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
        pixels, _, in_front = project_c2w(points, c2ws[j], other.full_K)
        w, h = other.distance.shape[1] * other.cell, other.distance.shape[0] * other.cell
        inside = inside_image(pixels, in_front, w, h)
        counts.append((int(inside.sum()), -j))
    return [-j for n, j in sorted(counts, reverse=True)[:k] if n > 0]


def triangulated_distances(views: List[RawView], c2ws: np.ndarray, config: MapIndexConfig) -> List[np.ndarray]:
    """Per view, (h, w) distance of each kept cell along its own ray, triangulated from its matches in the
    overlapping training images (NaN where a cell is not kept or does not triangulate well, ``MapIndexConfig``).

    Each cell's descriptor is searched (``matching.guided_matches``, sub-pixel) in each neighbour's per-pixel
    features around where its rendered point projects; then Gauss-Newton on the distance alone (the cell stays on
    its own ray) minimises the reprojection error to those matches, leaving out those off by more than
    ``TriangulationConfig.max_error_px`` after two steps. ``views`` need ``pixel_descriptors``; ``c2ws`` (N, 4, 4) OpenGL."""
    from crossfire_ns.localize.matching import guided_matches  # pure helper of the same layer

    radius = int(config.triangulation.radius_px)
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
        neighbours = _overlapping(seed, views, c2ws, i, config.triangulation.views)
        observed = np.full((len(s), len(neighbours), 2), np.nan)
        for a, j in enumerate(neighbours):
            other = views[j]
            if other.pixel_descriptors is None:
                raise ValueError("triangulation needs every view's per-pixel descriptors (describe_view)")
            features = other.pixel_descriptors.float()
            h, w = features.shape[1:]
            pixels, _, in_front = project_c2w(seed, c2ws[j], other.full_K)
            margin = radius + 1
            inside = np.flatnonzero(inside_image(pixels, in_front, w, h, margin))
            if len(inside) == 0:
                continue
            found, xy, _ = guided_matches(
                descriptors[torch.from_numpy(inside)], torch.from_numpy(pixels[inside]).float(), features, radius, 0.6
            )
            observed[inside[found.numpy()], a] = xy.numpy()
        cameras = [(views[j].full_K, *opengl_c2w_to_opencv_w2c(c2ws[j])) for j in neighbours]
        s, inlier, information = distances_along_rays(
            origin, rays, s, observed, cameras, config.triangulation.max_error_px
        )
        sigma = 0.5 / np.sqrt(np.maximum(information, 1e-12)) / s
        good = (inlier.sum(1) >= config.triangulation.min_views) & (sigma <= config.triangulation.max_depth_sigma)
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


def build_map_index(
    crossfire_map,
    config: Optional[MapIndexConfig] = None,
    key: Optional[dict] = None,
    patch: Optional[PatchConfig] = None,
) -> MapIndex:
    """Describe every training view (one render each at cell resolution), then keep the cells that earned trust
    (``patch``: the patch settings shared with the patch rounds, for ``patch_triangulate``)."""
    config = config or MapIndexConfig()
    patch = patch or PatchConfig()
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
            rescaled = rescaled_distances(
                view.distance, distance, view.keep & checked[i], config.triangulation.rescale_radius_cells
            )
            distance = np.where(np.isfinite(distance), distance, rescaled)
            confirmed.append(np.isfinite(distance))
            move_along_rays(view, distance, c2ws[i])
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
        # later, so a query's outcome does not depend on whether this process built it
        descriptors = view.descriptors[:, ys, xs].T.contiguous().half().float()
        points = torch.from_numpy(view.points[ys, xs].astype(np.float32))
        pixels = torch.from_numpy(((np.stack([xs, ys], axis=1) + 0.5) * view.cell).astype(np.float32))
        views.append(ViewCells(descriptors, points, pixels))
    cams = crossfire_map.train_cameras
    sizes = np.stack([cams.width[:, 0].numpy(), cams.height[:, 0].numpy()], axis=1).astype(np.int64)
    Ks = np.stack([crossfire_map.training_intrinsics(int(w), int(h), i) for i, (w, h) in enumerate(sizes)])
    index = MapIndex(c2ws, Ks, sizes, np.array([int(v.cell) for v in raw], dtype=np.int64), views, key or {}, {}, fine)
    if config.patch_triangulate and kept:
        index.stats["cells_patch_triangulated"] = _patch_triangulate(crossfire_map, index, config, patch)
    if config.virtual.enabled and kept:
        medians = np.array([_median_distance(view) for view in raw])
        opaque = np.array([float(np.mean(view.accumulation >= config.min_accumulation)) for view in raw])
        index.stats.update(add_virtual_views(crossfire_map, index, medians, opaque, config))
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


def _median_distance(view: RawView) -> float:
    """Median rendered distance of a view's opaque cells (NaN when it has none)."""
    finite = view.distance[np.isfinite(view.distance) & view.keep]
    return float(np.median(finite)) if len(finite) else float("nan")


def add_virtual_views(
    crossfire_map, index: MapIndex, median_distances: np.ndarray, opaque_shares: np.ndarray, config: MapIndexConfig
) -> dict:
    """Render the virtual views (``virtual_views``) around ``index``'s training views (their rendered cells' median
    distances and opaque shares) and append them (in place); returns their build figures."""
    trusted = np.concatenate([cells.points.numpy() for cells in index.views]).astype(np.float64)
    num = index.training_views
    made, figures = render_virtual_views(
        crossfire_map, index.c2ws[:num], index.Ks[:num], index.sizes[:num], index.cell_px[:num], median_distances,
        trusted, opaque_shares, index.spacing, config.virtual, config.proposal_share,
    )  # fmt: skip
    index.num_training = num
    if made:
        index.c2ws = np.concatenate([index.c2ws, np.stack([v.pose.c2w for v in made])])
        index.Ks = np.concatenate([index.Ks, np.stack([v.K for v in made])])
        index.sizes = np.concatenate([index.sizes, np.array([v.size for v in made], dtype=index.sizes.dtype)])
        index.cell_px = np.concatenate([index.cell_px, np.array([v.cell for v in made], dtype=index.cell_px.dtype)])
        index.views = index.views + [ViewCells(v.descriptors, v.points, v.pixels) for v in made]
        index.virtual_rgb = [v.rgb for v in made]
        index.virtual_sources = [v.pose.source for v in made]
    return figures


def _patch_triangulate(crossfire_map, index: MapIndex, config: MapIndexConfig, patch: PatchConfig) -> int:
    """``patch_triangulation.patch_triangulated_points`` of ``index`` as its views' ``patch_points`` (in place);
    returns how many cells moved."""
    from crossfire_ns.localize.patch_triangulation import patch_triangulated_points, training_greys

    placement = config.patch_triangulation
    greys = training_greys(crossfire_map, patch.radius_px, patch.smoothing_px)
    points, moved = patch_triangulated_points(
        index, greys, patch.radius_px, patch.min_contrast, patch.min_ncc, placement.views, placement.search_px,
        placement.max_error_px, config.triangulation.min_views, placement.max_depth_sigma, placement.max_angle_deg,
        progress=lambda views: track(views, description="Placing index points by patches", transient=True),
    )  # fmt: skip
    for cells, placed in zip(index.views, points):
        cells.patch_points = placed
    return moved


def shared_patch_settings(patch: PatchConfig) -> Dict[str, Any]:
    """The settings of ``patch`` that the index's patch placement reads (the rest concern the patch rounds only)."""
    return {name: getattr(patch, name) for name in ("radius_px", "smoothing_px", "min_contrast", "min_ncc")}


def index_key(crossfire_map, config: MapIndexConfig, patch: Optional[PatchConfig] = None) -> Dict[str, Any]:
    """What identifies an index: the checkpoint's content (sha256, ``map.checkpoint_sha256``) and step, the settings
    and ``INDEX_VERSION``; not the checkpoint's name or size, which a map retrained in place keeps."""
    from crossfire_ns.map import checkpoint_sha256

    patch = patch or PatchConfig()
    checkpoint = Path(crossfire_map.checkpoint) if crossfire_map.checkpoint else None
    key = {
        "version": INDEX_VERSION,
        "checkpoint_sha256": checkpoint_sha256(checkpoint) if checkpoint and checkpoint.is_file() else None,
        "step": crossfire_map.step,
        "config": asdict(config),
        "patch": shared_patch_settings(patch) if config.patch_triangulate else None,
    }
    if crossfire_map.has_distortion():  # indices of such maps stored before their images were undistorted: rebuilt
        key["training_images"] = "undistorted"
    return key


def index_path(crossfire_map) -> Optional[Path]:
    """Where the map's index is stored (beside its config.yml); None for a map not loaded from a file."""
    return Path(crossfire_map.config_path).parent / INDEX_FILE if crossfire_map.config_path else None


def load_or_build_index(
    crossfire_map, config: Optional[MapIndexConfig] = None, console=None, patch: Optional[PatchConfig] = None
) -> MapIndex:
    """The stored index when it matches the map's checkpoint, ``config`` and ``patch`` and holds the map's views at
    their poses; otherwise built (and stored)."""
    config = config or MapIndexConfig()
    patch = patch or PatchConfig()
    console = console or CONSOLE
    key = index_key(crossfire_map, config, patch)
    path = index_path(crossfire_map)
    if path is not None and path.is_file():
        try:
            stored = MapIndex.load(path)
        except Exception as err:  # noqa: BLE001  an unreadable index is rebuilt, never fatal
            console.print(f"[yellow]{path}: unreadable map index ({type(err).__name__}: {err}); rebuilding it.")
        else:
            what = [k for k in key if stored.key.get(k) != key[k]]
            views = len(crossfire_map.train_dataset)
            c2ws = np.asarray(crossfire_map.train_c2w, dtype=np.float64)
            lengths = {len(stored.views), len(stored.c2ws), len(stored.Ks), len(stored.sizes), len(stored.cell_px)}
            virtual = len(stored.views) - stored.training_views
            if what:
                console.print(f"[yellow]{path}: map index built for another {', '.join(what)}; rebuilding it.")
            elif len(lengths) != 1 or stored.training_views != views or len(stored.virtual_rgb) != virtual:
                console.print(
                    f"[yellow]{path}: map index holds {stored.training_views} training views, the map {views}; "
                    "rebuilding it."
                )
            elif not np.allclose(stored.c2ws[:views], c2ws, rtol=0.0, atol=1e-6):
                console.print(f"[yellow]{path}: map index holds other poses than the map's views; rebuilding it.")
            else:
                return stored
    index = build_map_index(crossfire_map, config, key, patch)
    s = index.stats
    console.print(
        f"Map index: {index.training_views} views, {s['cells_kept']} of {s['cells']} cells trusted "
        f"({s['cells_basic']} before the depth check"
        + (f", {s['cells_triangulated']} triangulated" if "cells_triangulated" in s else "")
        + (f", {s['cells_patch_triangulated']} placed by patches" if "cells_patch_triangulated" in s else "")
        + f"), {s['seconds']:.0f} s"
    )
    if "virtual_views" in s:
        console.print(
            f"Virtual views: {s['virtual_views']} of {s['virtual_poses']} poses rendered into the index "
            f"({s['virtual_cells']} trusted cells; {s['virtual_dropped_clearance']} without free space around them, "
            f"{s['virtual_dropped_untrusted']} with no trusted cell), {s['virtual_render_seconds']:.0f} s of renders"
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


def map_index(crossfire_map, config: Optional[MapIndexConfig] = None, patch: Optional[PatchConfig] = None) -> MapIndex:
    """The map's index, loaded or built once per map and settings."""
    config = config or MapIndexConfig()
    patch = patch or PatchConfig()
    key = ("map_index", repr(config), repr(shared_patch_settings(patch)))
    return crossfire_map.cached(key, lambda: load_or_build_index(crossfire_map, config, patch=patch))
