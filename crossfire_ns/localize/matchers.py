"""2D-3D correspondences between a query image and a rendered view, one class per matcher.

``crossfire``: the query's dense CNN features against descriptors rendered from the field (mutual nearest
neighbours + similarity threshold). ``sift``: classical SIFT between the query and the RGB rendered at the
hypothesis. Both lift the rendered side to 3D with rendered depth. Pixel coordinates follow nerfstudio's
convention (pixel centres at +0.5), matching the intrinsics used for PnP.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from crossfire_ns.localize.matching import guided_matches, mutual_nearest_neighbours
from crossfire_ns.localize.render import RenderedView


@dataclass
class Correspondences:
    """Matched pairs: 3D points (normalised world frame) and query pixels."""

    points3d: np.ndarray
    points2d: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.points3d)


def _cell_centres(height: int, width: int, stride: float) -> torch.Tensor:
    """Pixel coordinates (x, y) of the centres of an (height, width) grid of cells of size ``stride``."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return (torch.stack([xs, ys], dim=-1).reshape(-1, 2).float() + 0.5) * stride


class CrossfireMatcher:
    """Matches the query's CNN features against the field's rendered descriptors."""

    def __init__(
        self, model, min_similarity: float = 0.5, min_accumulation: float = 0.5, source: str = "field"
    ) -> None:
        self.model = model
        self.min_similarity = min_similarity
        self.min_accumulation = min_accumulation
        self.source = source
        self.min_texture = 2.0 / 255.0
        """Query pixels whose 5x5 grey-level standard deviation is below this are not matched."""

    @torch.no_grad()
    def rendered_descriptors(self, view: RenderedView, query: dict) -> torch.Tensor:
        """(h, w, D) descriptors of the render: the field's, or the CNN's features of the rendered colour.

        The CNN is not scale-invariant, so a render smaller than the query is upsampled to the query's size
        before the CNN sees it (as the query was), and its features are pooled back to the render's pixels."""
        if self.source == "field":
            return view.descriptor
        size = tuple(view.rgb.shape[:2])
        rgb = view.rgb.clamp(0, 1).permute(2, 0, 1)[None]
        query_size = tuple(query["feature_map"].shape[1:])
        if query_size != size:
            rgb = F.interpolate(rgb, size=query_size, mode="bilinear", align_corners=False)
        features = self.model.encode_images(rgb.permute(0, 2, 3, 1))
        if features.shape[-2:] != size:
            features = F.interpolate(features, size=size, mode="bilinear", align_corners=False, antialias=True)
        return F.normalize(features[0], dim=0).permute(1, 2, 0)

    @torch.no_grad()
    def prepare_query(self, image: np.ndarray) -> dict:
        """Dense features of the query (H, W, 3 uint8) and the image pixel each feature cell covers."""
        tensor = torch.from_numpy(np.array(image)).float().div(255.0)[None]
        features = self.model.encode_images(tensor)[0]  # (D, h, w)
        # No texture, no correspondence: zero the features of flat regions (a blank image, a white wall), so
        # that they never pass the similarity threshold (the CNN would otherwise answer with padding artefacts).
        grey = tensor[0, ..., :3].mean(-1).to(features.device)[None, None]
        local_std = (
            (
                F.avg_pool2d(grey.square(), 5, 1, 2, count_include_pad=False)
                - F.avg_pool2d(grey, 5, 1, 2, count_include_pad=False).square()
            )
            .clamp(min=0)
            .sqrt()
        )
        textured = F.interpolate(local_std, size=features.shape[-2:], mode="area")[0, 0] > self.min_texture
        features = features * textured
        stride = image.shape[0] / features.shape[1]
        flat = features.reshape(features.shape[0], -1).T.contiguous()
        full = F.interpolate(features[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0]
        full = F.normalize(full, dim=0) * (full.norm(dim=0, keepdim=True) > 0.5)
        return {
            "features": flat,
            "pixels": _cell_centres(features.shape[1], features.shape[2], stride),
            "feature_map": full,  # (D, H, W): one cell per query pixel, for guided matching
        }

    def match(self, query: dict, view: RenderedView) -> Correspondences:
        valid = (view.accumulation[..., 0] > self.min_accumulation).reshape(-1)
        descriptors = self.rendered_descriptors(view, query)
        rendered = F.normalize(descriptors.reshape(-1, descriptors.shape[-1])[valid], dim=-1)
        points = view.points.reshape(-1, 3)[valid]
        idx_r, idx_q, sim = mutual_nearest_neighbours(
            rendered, query["features"].to(rendered.device), self.min_similarity
        )
        return Correspondences(
            points3d=points[idx_r].cpu().numpy().astype(np.float64),
            points2d=query["pixels"][idx_q.cpu()].numpy().astype(np.float64),
            scores=sim.cpu().numpy(),
        )

    def match_guided(self, query: dict, view: RenderedView, radius_px: int) -> Correspondences:
        """Each rendered pixel's best match within ``radius_px`` of where it lies in the query (the view is
        rendered at the current estimate with the query's intrinsics, scaled), at sub-pixel precision."""
        feature_map = query["feature_map"]
        height, width = view.depth.shape[:2]
        scale = torch.tensor([feature_map.shape[2] / width, feature_map.shape[1] / height])
        valid = (view.accumulation[..., 0] > self.min_accumulation).reshape(-1).cpu()
        expected = (_cell_centres(height, width, 1.0) * scale)[valid]
        descriptors = self.rendered_descriptors(view, query)
        rendered = F.normalize(descriptors.reshape(-1, descriptors.shape[-1]), dim=-1).cpu()[valid]
        points = view.points.reshape(-1, 3).cpu()[valid]
        index, xy, sim = guided_matches(rendered, expected, feature_map, radius_px, self.min_similarity)
        return Correspondences(
            points3d=points[index].numpy().astype(np.float64),
            points2d=xy.numpy().astype(np.float64),
            scores=sim.numpy(),
        )


class SiftMatcher:
    """SIFT keypoints of the query against those of the RGB rendered at the hypothesis (Lowe ratio test)."""

    def __init__(self, ratio: float = 0.8, min_accumulation: float = 0.5) -> None:
        self.sift = cv2.SIFT_create()
        self.matcher = cv2.BFMatcher(cv2.NORM_L2)
        self.ratio = ratio
        self.min_accumulation = min_accumulation

    def _detect(self, image: np.ndarray):
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        keypoints, descriptors = self.sift.detectAndCompute(gray, None)
        # OpenCV puts pixel centres at integers; nerfstudio at +0.5.
        pixels = np.array([kp.pt for kp in keypoints], dtype=np.float64).reshape(-1, 2) + 0.5
        return pixels, descriptors

    def prepare_query(self, image: np.ndarray) -> dict:
        pixels, descriptors = self._detect(image)
        return {"pixels": pixels, "descriptors": descriptors}

    def match(self, query: dict, view: RenderedView) -> Correspondences:
        empty = Correspondences(np.zeros((0, 3)), np.zeros((0, 2)), np.zeros(0))
        rgb = (view.rgb.clamp(0, 1) * 255).byte().cpu().numpy()
        r_pixels, r_desc = self._detect(rgb)
        if query["descriptors"] is None or r_desc is None or len(r_desc) < 2 or len(query["descriptors"]) < 2:
            return empty
        pairs = self.matcher.knnMatch(r_desc, query["descriptors"], k=2)
        good = [m for m, n in (p for p in pairs if len(p) == 2) if m.distance < self.ratio * n.distance]
        if not good:
            return empty
        r_idx = np.array([m.queryIdx for m in good])
        q_idx = np.array([m.trainIdx for m in good])
        height, width = view.depth.shape[:2]
        cols = np.clip(np.floor(r_pixels[r_idx, 0]).astype(int), 0, width - 1)
        rows = np.clip(np.floor(r_pixels[r_idx, 1]).astype(int), 0, height - 1)
        accumulation = view.accumulation[..., 0].cpu().numpy()[rows, cols]
        keep = accumulation > self.min_accumulation
        points = view.points.cpu().numpy()[rows, cols][keep]
        distances = np.array([m.distance for m in good])[keep]
        return Correspondences(points.astype(np.float64), query["pixels"][q_idx[keep]], -distances)
