"""Token completion: rebuild the full token grid after sparse encoding.

``MultiLayerTokenAssembly`` (MTA) fills every grid position with a real token, the one pruned at
some stage or one that survived to the end, so no position is left to a placeholder.
``MaskTokenCompletion`` is the masked-image-modelling baseline the paper compares against: only
the final kept tokens, with one learned mask token everywhere else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from timm.layers import trunc_normal_
from torch import nn

from nnunet_scd.model.tokens import scatter_tokens
from nnunet_scd.model.vit import Block, sincos_position_embedding

__all__ = ["MaskTokenCompletion", "MultiLayerTokenAssembly"]


class _CompletionTransformer(nn.Module):
    """Sin-cos position embedding, ``depth`` blocks, LayerNorm and a projection back to D.

    Shapes: (B, N, C) on ``grid`` -> (B, N, D).
    """

    def __init__(self, grid: Sequence[int], dim: int, out_dim: int, depth: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"completion width {dim} is not divisible by its {num_heads} heads.")
        self.grid = tuple(grid)
        self.register_buffer("pos_embed", sincos_position_embedding(grid, dim), persistent=False)
        self.blocks = nn.Sequential(*[Block(dim, num_heads, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.out_proj = nn.Linear(dim, out_dim)

    def forward(self, grid_tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        pos_embed = self.pos_embed
        if tuple(grid) != self.grid:
            pos_embed = sincos_position_embedding(grid, pos_embed.shape[-1]).to(pos_embed.device)
        return self.out_proj(self.norm(self.blocks(grid_tokens + pos_embed)))


class MultiLayerTokenAssembly(nn.Module):
    """Multi-layer Token Assembly.

    Sources are the tokens pruned at each stage plus the final kept tokens. Each source gets its
    own LayerNorm and Linear(D -> C) and a learned source embedding; every token is scattered back
    to its original position, then the completion transformer mixes the grid.

    Args:
        grid: the token grid, e.g. (12, 12, 12).
        embed_dim: encoder width D (input and output).
        num_sources: pruning stages + 1.
        dim: completion width C.
        depth: completion blocks.
        num_heads: completion heads.

    Shapes: sources [(B, K_i, D)] with positions [(B, K_i)] on ``grid``, sum K_i = N -> (B, N, D).
    """

    def __init__(
        self, grid: Sequence[int], embed_dim: int, num_sources: int, dim: int, depth: int, num_heads: int
    ) -> None:
        super().__init__()
        self.source_proj = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, dim)) for _ in range(num_sources)
        )
        self.source_embed = nn.Parameter(torch.zeros(num_sources, dim))
        trunc_normal_(self.source_embed, std=0.02)
        self.transformer = _CompletionTransformer(grid, dim, embed_dim, depth, num_heads)

    def forward(
        self, sources: Sequence[torch.Tensor], positions: Sequence[torch.Tensor], grid: Sequence[int]
    ) -> torch.Tensor:
        if len(sources) != len(self.source_proj):
            raise ValueError(f"expected {len(self.source_proj)} token sources, got {len(sources)}.")
        projected = [proj(t) + emb for proj, t, emb in zip(self.source_proj, sources, self.source_embed)]
        return self.transformer(scatter_tokens(projected, positions, math.prod(grid)), grid)


class MaskTokenCompletion(nn.Module):
    """Mask-token completion (the MIM baseline): pruned positions get one learned mask token.

    Same constructor and call as :class:`MultiLayerTokenAssembly`; only the last source (the
    final kept tokens) is used.
    """

    def __init__(
        self, grid: Sequence[int], embed_dim: int, num_sources: int, dim: int, depth: int, num_heads: int
    ) -> None:
        super().__init__()
        self.in_proj = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, dim))
        self.mask_token = nn.Parameter(torch.zeros(dim))
        trunc_normal_(self.mask_token, std=0.02)
        self.transformer = _CompletionTransformer(grid, dim, embed_dim, depth, num_heads)

    def forward(
        self, sources: Sequence[torch.Tensor], positions: Sequence[torch.Tensor], grid: Sequence[int]
    ) -> torch.Tensor:
        kept = self.in_proj(sources[-1])
        grid_tokens = scatter_tokens([kept], [positions[-1]], math.prod(grid), fill=self.mask_token)
        return self.transformer(grid_tokens, grid)
