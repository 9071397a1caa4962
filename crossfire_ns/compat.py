"""Fixes that let nerfstudio 1.1.5 run offline and under torch >= 2.6, and start and render faster on CPU.

Ecosystem problems shape this module; the first two break things:

* nerfacto builds torchmetrics' LPIPS in ``populate_modules``; its AlexNet backbone is downloaded
  from download.pytorch.org unless already cached. Offline, model construction would fail.
* torch >= 2.6 loads checkpoints with ``weights_only=True``; nerfacto checkpoints hold numpy scalars
  (scheduler state), so ``eval_setup``, ``ns-viewer``, ``ns-eval`` and resuming all fail
  (nerfstudio #3683, PR #3702).

A third only costs time: importing ``nerfstudio.configs.method_configs`` (every ns-train, ns-localize, ns-viewer
and ``eval_setup``) builds a placeholder config per installable external method, and each one calls
``inspect.stack()`` to learn who built it. That reads the source context of every frame and scans every loaded
module: about 8 s of a 2-core machine per process start (``quick_external_method_placeholders``).

A fourth too: nerfacto contracts every sample with ``torch.linalg.norm(x, ord=inf, dim=-1)``, which torch's CPU
kernel computes about 30x slower than the same ``x.abs().amax(-1)`` (``LinfSceneContraction``).
And a fifth: nerfstudio's torch hash grid (no tcnn on CPU) gathers its 8 cell corners with 8 separate
``table[index]`` lookups, whose backward is 8 slow ``index_put_`` calls; ``GatherHashEncoding`` does one gather.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from nerfstudio.field_components.encodings import HashEncoding
from nerfstudio.field_components.spatial_distortions import SceneContraction
from torch import Tensor, nn

ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"
_lpips_notice_printed = False


def allow_nerfstudio_checkpoints() -> None:
    """Allow-list the numpy types nerfstudio's scheduler state puts into checkpoints."""
    safe = [np.core.multiarray.scalar, np.dtype, np.dtypes.Float64DType, np.dtypes.Float32DType]
    safe += [np.dtypes.Int64DType, np.ndarray, np.core.multiarray._reconstruct]
    torch.serialization.add_safe_globals(safe)


def quick_external_method_placeholders() -> None:
    """Make nerfstudio's external-method placeholders ask only for their caller's name, not for the whole stack.

    ``ExternalMethodDummyTrainerConfig.__post_init__`` returns at once when built by ``get_external_methods``
    (``inspect.stack()[2].function``) and otherwise offers to pip-install the method. The same test through
    ``sys._getframe`` costs microseconds instead of ~0.3 s per placeholder. Our method module runs this from
    ``discover_methods``, before ``method_configs`` builds the placeholders; the install offer is unchanged.
    """
    from nerfstudio.configs import external_methods

    placeholder = external_methods.ExternalMethodDummyTrainerConfig
    if getattr(placeholder.__post_init__, "_crossfire_quick", False):
        return
    offer_install = placeholder.__post_init__

    def __post_init__(self) -> None:
        # 0: this function, 1: the dataclass __init__, 2: whoever built the placeholder
        if sys._getframe(2).f_code.co_name == "get_external_methods":
            return
        offer_install(self)

    __post_init__._crossfire_quick = True  # type: ignore[attr-defined]
    placeholder.__post_init__ = __post_init__


class LinfSceneContraction(SceneContraction):
    """nerfacto's scene contraction (L-inf), the norm taken as ``abs().amax()``: the same values and gradients,
    ~30x faster than ``torch.linalg.norm(ord=inf)`` on CPU (50 vs 1.5 ms for 345k samples, a map-index render's
    count). Gaussians and other orders go to nerfstudio's code."""

    def forward(self, positions):
        if not isinstance(positions, torch.Tensor) or self.order != float("inf"):
            return super().forward(positions)
        mag = positions.abs().amax(dim=-1, keepdim=True)
        return torch.where(mag < 1, positions, (2 - (1 / mag)) * (positions / mag))


def use_linf_contraction(model: nn.Module) -> None:
    """Swap the L-inf ``SceneContraction`` that nerfacto shares between its field and proposal networks for
    ``LinfSceneContraction`` (no parameters: checkpoints are unchanged)."""
    for module in list(model.modules()):
        distortion = getattr(module, "spatial_distortion", None)
        if type(distortion) is SceneContraction and distortion.order == float("inf"):
            module.spatial_distortion = LinfSceneContraction(order=distortion.order)


_HASH_PRIMES = (1, 2654435761, 805459861)  # Instant-NGP's, as in nerfstudio's HashEncoding.hash_fn


class GatherHashEncoding(HashEncoding):
    """nerfstudio's torch hash grid with the same table, hash and trilinear weights, its 8 corners gathered in one
    ``index_select`` (backward: one ``index_add_``) instead of 8 ``table[index]`` lookups: the same values up to
    float rounding, and faster on CPU. tcnn encodings are left to tcnn."""

    def pytorch_fwd(self, in_tensor: Tensor) -> Tensor:
        """(..., 3) in [0, 1] -> (..., num_levels * features_per_level)."""
        scaled = in_tensor[..., None, :] * self.scalings.view(-1, 1).to(in_tensor.device)  # (..., L, 3)
        floor = torch.floor(scaled)
        offset = scaled - floor
        primes = torch.tensor(_HASH_PRIMES, device=in_tensor.device).view(3, 1)
        ends = torch.stack([floor, torch.ceil(scaled)], -1).to(torch.int64) * primes  # (..., L, 3, 2): floor, ceil
        hashed = torch.bitwise_xor(ends[..., 0, :, None], ends[..., 1, None, :])[..., None]  # (..., L, 2, 2, 1)
        hashed = torch.bitwise_xor(hashed, ends[..., 2, None, None, :])  # (..., L, 2, 2, 2): x, y, z end
        # the table size is a power of two: & (size - 1) is the modulo (also of negatives, in two's complement)
        index = (hashed & (self.hash_table_size - 1)) + self.hash_offset.to(in_tensor.device).view(-1, 1, 1, 1)
        weights = torch.stack([1 - offset, offset], -1)  # (..., L, 3, 2): the floor end's, the ceil end's
        weights = (weights[..., 0, :, None] * weights[..., 1, None, :])[..., None] * weights[..., 2, None, None, :]
        corners = torch.index_select(self.hash_table, 0, index.flatten()).view(*index.shape[:-3], 8, -1)
        encoded = (corners * weights.reshape(*weights.shape[:-3], 8, 1)).sum(-2)  # (..., L, features_per_level)
        return encoded.flatten(-2)


def use_gather_hash_encoding(model: nn.Module) -> None:
    """Make every torch ``HashEncoding`` in ``model`` a ``GatherHashEncoding`` (same parameters and checkpoints)."""
    for module in model.modules():
        if type(module) is HashEncoding and module.tcnn_encoding is None:
            module.__class__ = GatherHashEncoding


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict:
    """Load one of our own checkpoints (trusted) whatever torch's ``weights_only`` default is."""
    return torch.load(path, map_location=map_location, weights_only=False)


def alexnet_weights_cached() -> bool:
    """True when torchvision's AlexNet weights are already in the torch hub cache (no download needed)."""
    return (Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS).is_file()


class UnavailableLPIPS(nn.Module):
    """Stand-in for LPIPS when its backbone cannot be loaded offline: reports NaN, downloads nothing."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return torch.tensor(float("nan"))


@contextlib.contextmanager
def offline_lpips() -> Iterator[None]:
    """Within the block, LPIPS is built only if its weights are cached; otherwise a NaN stand-in is used."""
    global _lpips_notice_printed
    if alexnet_weights_cached():
        yield
        return
    import torchmetrics.image.lpip as lpip_module

    original = lpip_module.LearnedPerceptualImagePatchSimilarity
    lpip_module.LearnedPerceptualImagePatchSimilarity = UnavailableLPIPS  # type: ignore[misc]
    if not _lpips_notice_printed:
        from nerfstudio.utils.rich_utils import CONSOLE

        CONSOLE.print(
            "[yellow]crossfire: LPIPS metric skipped (its AlexNet backbone is not in the torch hub cache "
            f"and nothing is downloaded); eval reports lpips = nan. Put {ALEXNET_WEIGHTS} in "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'} to enable it."
        )
        _lpips_notice_printed = True
    try:
        yield
    finally:
        lpip_module.LearnedPerceptualImagePatchSimilarity = original  # type: ignore[misc]
