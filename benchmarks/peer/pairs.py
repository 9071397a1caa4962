"""Which training views to match with each other: the nearest ones by known pose (hloc's pairs_from_poses)."""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np


def pairs_from_poses(
    c2ws: np.ndarray, num_neighbours: int, max_angle_deg: Optional[float] = 60.0
) -> List[Tuple[int, int]]:
    """Unique pairs ``(i, j)``, ``i < j``: each view with its ``num_neighbours`` nearest camera centres among
    the views whose optical axis is within ``max_angle_deg`` of its own (None: no angle limit)."""
    c2ws = np.asarray(c2ws, dtype=np.float64)
    n = len(c2ws)
    centres = c2ws[:, :3, 3]
    axes = -c2ws[:, :3, 2]  # OpenGL cameras look along -z
    distances = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    if max_angle_deg is not None:
        cosines = np.clip(axes @ axes.T, -1.0, 1.0)
        distances[np.degrees(np.arccos(cosines)) > max_angle_deg] = np.inf
    pairs = set()
    for i in range(n):
        order = np.argsort(distances[i], kind="stable")[: max(num_neighbours, 0)]
        for j in order:
            if np.isfinite(distances[i, j]):
                pairs.add((min(i, int(j)), max(i, int(j))))
    return sorted(pairs)
