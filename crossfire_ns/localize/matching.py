"""Descriptor matching (mutual nearest neighbours by cosine similarity) and global-descriptor retrieval."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from kornia.feature import match_mnn


def mutual_nearest_neighbours(
    desc_a: torch.Tensor, desc_b: torch.Tensor, min_similarity: float
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mutual nearest neighbours of L2-normalised descriptors (N, D) and (M, D) whose cosine similarity is at
    least ``min_similarity``.

    Returns ``(idx_a, idx_b, similarity)``: two long tensors and a float tensor of the same length K
    (possibly 0, also for empty inputs). Mutuality removes most ambiguous matches on repeated structure at no
    extra cost; the threshold removes confident-but-wrong ones on untextured regions.
    """
    if desc_a.ndim != 2 or desc_b.ndim != 2:
        raise ValueError(f"descriptors must be (N, D) and (M, D), got {tuple(desc_a.shape)} and {tuple(desc_b.shape)}")
    device = desc_a.device
    if len(desc_a) == 0 or len(desc_b) == 0:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, empty.clone(), torch.empty(0, dtype=desc_a.dtype, device=device)
    if desc_a.shape[1] != desc_b.shape[1]:
        raise ValueError(f"descriptor dimensions differ: {desc_a.shape[1]} vs {desc_b.shape[1]}")
    similarity = desc_a @ desc_b.to(desc_a.dtype).T
    # kornia picks the smallest "distance": negated similarity makes it pick the most similar.
    neg_sim, idxs = match_mnn(desc_a, desc_b, dm=-similarity)
    sim = -neg_sim[:, 0]
    keep = sim >= min_similarity
    return idxs[keep, 0], idxs[keep, 1], sim[keep]


def global_descriptor(features: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """GeM pooling (generalised mean, p=3) of dense features (B, D, H, W) -> L2-normalised (B, D).

    GeM sits between average and max pooling: it favours strong, distinctive activations without being
    dominated by a single one, which makes it a robust image-level descriptor for retrieval.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (B, D, H, W), got {tuple(features.shape)}")
    pooled = features.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)
    return F.normalize(pooled, dim=-1)


def top_k_retrieval(query: torch.Tensor, database: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Indices and cosine similarities of the (at most) k database rows (N, D) most similar to ``query`` (D,),
    best first."""
    if len(database) == 0 or k <= 0:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=query.dtype)
    query = F.normalize(query.reshape(1, -1).to(database.dtype), dim=-1)
    scores = (F.normalize(database, dim=-1) @ query.to(database.device).T)[:, 0]
    top = torch.topk(scores, k=min(k, len(database)))
    return top.indices, top.values
