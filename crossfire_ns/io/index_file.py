"""The stored map index's file: its name beside the map's config.yml, and the camera poses it holds.

``localize.map_index`` writes and reads the whole index; the viewer needs only where its views are, without
importing the localizer (imports run one way).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

INDEX_FILE = "crossfire_index.pt"
"""File name of the stored map index, beside the map's config.yml."""


@dataclass
class IndexCameras:
    """The views of a stored map index: the training views first, then the virtual views."""

    c2ws: np.ndarray
    """(N, 4, 4) camera-to-world, OpenGL, nerfstudio's normalised frame."""
    Ks: np.ndarray
    """(N, 3, 3) intrinsics."""
    sizes: np.ndarray
    """(N, 2) image (width, height)."""
    num_training: int
    """Views ``[0, num_training)`` are training views, the rest virtual."""

    @property
    def virtual(self) -> slice:
        return slice(self.num_training, len(self.c2ws))


def read_index_cameras(path: Path) -> IndexCameras:
    """The views' poses of the map index stored at ``path``; ``ValueError`` naming the file when it is not one."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        c2ws, Ks, sizes = (payload[k].numpy() for k in ("c2ws", "Ks", "sizes"))
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001  any unreadable file gets the same message
        raise ValueError(f"{path} is not a crossfire map index ({type(err).__name__}: {err})") from None
    num_training = int(payload.get("num_training", -1))
    return IndexCameras(c2ws, Ks, sizes, len(c2ws) if num_training < 0 else num_training)
