"""ViT building blocks for 2D and 3D volumes: patch embedding, position embedding, Block.

Tokens are laid out in C order of the token grid (the order ``flatten(2)`` gives), so a token's
position index is ``np.ravel_multi_index(grid_coords, grid)``. Everything downstream (pruning,
assembly, the decoder) relies on that single convention.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block

__all__ = ["Block", "PatchEmbed", "LearnedPositionEmbedding", "sincos_position_embedding", "token_grid"]

AXIS_NAMES = {2: ("y", "x"), 3: ("z", "y", "x")}


def token_grid(image_size: Sequence[int], token_size: Sequence[int]) -> tuple[int, ...]:
    """Grid of tokens for an image, or a ValueError naming the axis that does not divide."""
    if len(image_size) != len(token_size):
        raise ValueError(
            f"token_size {tuple(token_size)} has {len(token_size)} axes but the image {tuple(image_size)} "
            f"has {len(image_size)}; give one token size per spatial axis."
        )
    if len(image_size) not in AXIS_NAMES:
        raise ValueError(f"Only 2D and 3D images are supported, got {len(image_size)} spatial axes.")
    names = AXIS_NAMES[len(image_size)]
    for axis, (size, tok) in enumerate(zip(image_size, token_size)):
        if tok < 1:
            raise ValueError(f"token size along axis {axis} ({names[axis]}) must be >= 1, got {tok}.")
        if size % tok != 0:
            raise ValueError(
                f"token size {tok} does not divide the patch size {size} along axis {axis} ({names[axis]}); "
                f"use a patch that is a multiple of the token size, e.g. {math.ceil(size / tok) * tok}."
            )
    return tuple(size // tok for size, tok in zip(image_size, token_size))


class PatchEmbed(torch.nn.Module):
    """Non-overlapping conv patch embedding with a per-axis token size.

    Args:
        in_channels: image channels C.
        embed_dim: token width D.
        token_size: voxels per token along each spatial axis (2 or 3 ints; anisotropic allowed).

    Shapes: (B, C, *S) -> (B, N, D) with N = prod(S / token_size).
    """

    def __init__(self, in_channels: int, embed_dim: int, token_size: Sequence[int]) -> None:
        super().__init__()
        self.token_size = tuple(int(t) for t in token_size)
        conv = {2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[len(self.token_size)]
        self.proj = conv(in_channels, embed_dim, kernel_size=self.token_size, stride=self.token_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class LearnedPositionEmbedding(torch.nn.Module):
    """Learned absolute position embedding, resampled when the token grid differs.

    Args:
        grid: the token grid it is built for, e.g. (12, 12, 12).
        embed_dim: token width D.

    ``forward(grid)`` returns (1, prod(grid), D); for another grid the table is resampled
    (bi/trilinear), so a network trained on one patch size can run on another.
    """

    def __init__(self, grid: Sequence[int], embed_dim: int) -> None:
        super().__init__()
        self.grid = tuple(int(g) for g in grid)
        self.pos_embed = torch.nn.Parameter(torch.zeros(1, math.prod(self.grid), embed_dim))
        trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, grid: Sequence[int]) -> torch.Tensor:
        grid = tuple(grid)
        if grid == self.grid:
            return self.pos_embed
        table = self.pos_embed.transpose(1, 2).reshape(1, -1, *self.grid)
        mode = "trilinear" if len(grid) == 3 else "bilinear"
        table = F.interpolate(table, size=grid, mode=mode, align_corners=False)
        return table.flatten(2).transpose(1, 2)


def sincos_position_embedding(grid: Sequence[int], dim: int) -> torch.Tensor:
    """Fixed sin-cos position embedding for a 2D/3D grid, shape (1, prod(grid), dim).

    Each axis gets an even share of the channels (sin and cos of geometric frequencies); channels
    left over when ``dim`` is not divisible stay zero.
    """
    per_axis = (dim // len(grid)) // 2 * 2
    if per_axis == 0:
        raise ValueError(f"dim={dim} is too small for a sin-cos embedding over {len(grid)} axes.")
    freqs = 1.0 / (10000.0 ** (torch.arange(per_axis // 2, dtype=torch.float64) / (per_axis // 2)))
    coords = torch.meshgrid(*[torch.arange(g, dtype=torch.float64) for g in grid], indexing="ij")
    parts = []
    for c in coords:
        angles = c.reshape(-1, 1) * freqs.reshape(1, -1)
        parts += [angles.sin(), angles.cos()]
    table = torch.cat(parts, dim=1)
    table = F.pad(table, (0, dim - table.shape[1]))
    return table.float().unsqueeze(0)
