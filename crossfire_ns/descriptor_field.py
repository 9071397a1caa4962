"""Position-only descriptor field: a hash grid + small MLP giving a D-dim descriptor per 3D sample.

It sees no view direction and no appearance embedding, so a point's descriptor cannot change with
viewpoint or lighting. The torch implementation of nerfstudio's encodings keeps it runnable on CPU.
"""

from __future__ import annotations

from typing import Literal, Optional

from jaxtyping import Float
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.field_components.encodings import HashEncoding
from nerfstudio.field_components.mlp import MLP
from nerfstudio.field_components.spatial_distortions import SpatialDistortion
from torch import Tensor, nn


class DescriptorField(nn.Module):
    """Maps world positions to (unnormalised) descriptors; normalisation happens after rendering."""

    def __init__(
        self,
        aabb: Tensor,
        descriptor_dim: int,
        num_levels: int = 12,
        log2_hashmap_size: int = 17,
        max_res: int = 1024,
        features_per_level: int = 2,
        hidden_dim: int = 64,
        num_layers: int = 2,
        spatial_distortion: Optional[SpatialDistortion] = None,
        implementation: Literal["tcnn", "torch"] = "torch",
    ) -> None:
        super().__init__()
        self.register_buffer("aabb", aabb)
        self.spatial_distortion = spatial_distortion
        self.encoding = HashEncoding(
            num_levels=num_levels,
            min_res=16,
            max_res=max_res,
            log2_hashmap_size=log2_hashmap_size,
            features_per_level=features_per_level,
            implementation=implementation,
        )
        self.mlp = MLP(
            in_dim=self.encoding.get_out_dim(),
            num_layers=num_layers,
            layer_width=hidden_dim,
            out_dim=descriptor_dim,
            activation=nn.ReLU(),
            out_activation=None,
            implementation=implementation,
        )

    def normalize_positions(self, positions: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs 3"]:
        """World positions to the [0, 1] cube the hash grid expects (same mapping as nerfacto's field)."""
        if self.spatial_distortion is not None:
            return (self.spatial_distortion(positions) + 2.0) / 4.0
        return SceneBox.get_normalized_positions(positions, self.aabb)

    def forward(self, positions: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs D"]:
        shape = positions.shape[:-1]
        flat = self.normalize_positions(positions).reshape(-1, 3)
        descriptors = self.mlp(self.encoding(flat))
        return descriptors.reshape(*shape, -1).float()
