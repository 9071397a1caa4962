"""Retrieval priors: the match-count score finds the right training view under a lighting change."""

import numpy as np
import torch
import torch.nn.functional as F

from crossfire_ns.localize.priors import RetrievalIndex


class PatchEncoder:
    """Stand-in for the CNN: each pixel's 3x3 grey patch, mean-subtracted and normalised (gain-invariant)."""

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        grey = images[..., :3].mean(-1)[:, None]  # (B, 1, H, W)
        patches = F.unfold(grey, 3, padding=1).reshape(grey.shape[0], 9, *grey.shape[-2:])
        return F.normalize(patches - patches.mean(1, keepdim=True), dim=1)


def _views(n: int = 6, size: int = 24):
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.uniform(0.2, 0.8, (size, size, 3))).float() for _ in range(n)]
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 0, 3] = np.arange(n)
    return images, poses


def test_match_count_retrieves_the_same_view_under_gain_change():
    images, poses = _views()
    index = RetrievalIndex(PatchEncoder(), images, poses, max_side=24, score="matches", min_similarity=0.9)
    for i in (1, 4):
        query = (images[i].numpy() * 0.7 * 255).astype(np.uint8)  # darker: a lighting change
        scores = index.scores(query)
        assert int(scores.argmax()) == i
        assert scores[i] > 3 * np.sort(scores.numpy())[-2]
        best = index.query(query, k=2)
        assert len(best) == 2 and best[0][0, 3] == i


def test_gem_score_has_one_value_per_view_and_k_is_clamped():
    images, poses = _views(n=3)
    index = RetrievalIndex(PatchEncoder(), images, poses, max_side=24, score="gem")
    query = (images[2].numpy() * 255).astype(np.uint8)
    assert index.scores(query).shape == (3,)
    assert len(index.query(query, k=10)) == 3
