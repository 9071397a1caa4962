"""Where each training pixel's ray meets the surface, remembered from the rays training has already rendered.

The descriptor field's direct supervision (``CrossfireModel``'s distillation term) needs thousands of surface
points per step with the CNN feature of the pixel that sees each one. Rendering them would cost a volume render
each; instead, every training ray's expected-depth point is written into a per-image grid of cells (one entry
per feature cell, the latest ray wins), and the term reads points back from the grid. Entries older than a few
hundred steps are not used, since the geometry they came from has moved on.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from jaxtyping import Float, Int
from torch import Tensor


class SurfaceCache:
    """Per training image, a (h, w) grid of cells; each holds a pixel, its surface point, footprint and step.

    Not a module and not saved: it refills within a few hundred steps of training (or of a resumed run).
    """

    def __init__(self, num_images: int, image_size: Tuple[int, int], cell_px: int, device: torch.device) -> None:
        height, width = image_size
        self.image_size = image_size
        self.cell_px = cell_px
        self.grid = (-(-height // cell_px), -(-width // cell_px))
        cells = num_images * self.grid[0] * self.grid[1]
        self.pixels = torch.zeros(cells, 2, device=device)
        """(x, y) pixel centre (+0.5 convention) of the ray that wrote the cell."""
        self.points = torch.zeros(cells, 3, device=device)
        self.footprints = torch.zeros(cells, device=device)
        self.steps = torch.full((cells,), -(2**30), dtype=torch.long, device=device)

    def _cell_index(self, image: Tensor, yx: Int[Tensor, "N 2"]) -> Tensor:
        """(N,) image positions and (N, 2) pixel (y, x) -> (N,) cell index."""
        h, w = self.grid
        return (image * h + yx[:, 0] // self.cell_px) * w + yx[:, 1] // self.cell_px

    @torch.no_grad()
    def write(
        self,
        indices: Int[Tensor, "N 3"],
        points: Float[Tensor, "N 3"],
        footprints: Tensor,
        keep: Tensor,
        step: int,
    ) -> None:
        """Remember the rays (image, y, x) whose ``keep`` (N,) is set (e.g. opaque ones) as seen at ``step``, with
        their (N,) footprints (scene units)."""
        indices = indices.to(self.points.device)[keep.to(self.points.device)]
        cell = self._cell_index(indices[:, 0], indices[:, 1:])
        self.pixels[cell] = indices[:, 1:].flip(-1).float() + 0.5
        self.points[cell] = points[keep].detach().float()
        self.footprints[cell] = footprints[keep].detach().float()
        self.steps[cell] = step

    @torch.no_grad()
    def sample(
        self,
        images: Tensor,
        count: int,
        step: int,
        max_age: int,
        generator: Optional[torch.Generator] = None,
        windows: Optional[Int[Tensor, "G 4"]] = None,
    ) -> Tuple[Float[Tensor, "G P 2"], Float[Tensor, "G P 3"], Tensor]:
        """For (G,) image positions, the same number P <= ``count`` of random fresh cells (written at most
        ``max_age`` steps before ``step``) per image, whose pixel lies in the image's window (y0, x0, h, w) when
        ``windows`` are given: their pixels (full-image coordinates), points and (G, P) footprints. P is the
        smallest image's count (0: nothing yet)."""
        per_image = self.grid[0] * self.grid[1]
        fresh = []
        for g, i in enumerate(images.tolist()):
            usable = step - self.steps[i * per_image : (i + 1) * per_image] <= max_age
            if windows is not None:
                y0, x0, h, w = windows[g].tolist()
                x, y = self.pixels[i * per_image : (i + 1) * per_image].unbind(-1)
                usable &= (y >= y0) & (y < y0 + h) & (x >= x0) & (x < x0 + w)
            fresh.append(torch.nonzero(usable, as_tuple=False)[:, 0])
        size = min([count] + [len(cells) for cells in fresh])
        index = torch.stack(
            [
                cells[torch.randperm(len(cells), generator=generator)[:size].to(cells.device)] + image * per_image
                for image, cells in zip(images.tolist(), fresh)
            ]
        )
        return self.pixels[index], self.points[index], self.footprints[index]
