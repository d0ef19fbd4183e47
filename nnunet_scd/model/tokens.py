"""Batched gather and scatter of tokens by position index.

Pruning selects tokens by index so that the compute really shrinks (masking would keep every
token in memory and in every matmul); assembly scatters them back to their grid positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

__all__ = ["GatedTokens", "gather_tokens", "scatter_tokens"]


class GatedTokens(NamedTuple):
    """What a token gate hands the next encoder block (see ``SCDNet.token_gate``).

    ``weight`` multiplies each token's normalised input to attention and MLP (None: one);
    ``dropped`` are tokens that leave the encoder before this block (None: none).
    """

    tokens: torch.Tensor  # (B, K, D)
    positions: torch.Tensor  # (B, K) grid positions
    weight: torch.Tensor | None = None  # (K,) or (B, K)
    dropped: torch.Tensor | None = None  # (B, N - K, D)
    dropped_positions: torch.Tensor | None = None  # (B, N - K)


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select tokens per batch element: (B, N, D), (B, K) -> (B, K, D)."""
    return torch.gather(tokens, 1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def scatter_tokens(
    parts: Sequence[torch.Tensor], positions: Sequence[torch.Tensor], num_tokens: int, fill: torch.Tensor | None = None
) -> torch.Tensor:
    """Place token sets at their grid positions: [(B, K_i, D)], [(B, K_i)] -> (B, num_tokens, D).

    Positions must be disjoint. Positions that no part covers take ``fill`` (a (D,) tensor,
    e.g. a learned mask token) or zero. One scatter for the whole batch, differentiable with
    respect to the parts and to ``fill``.
    """
    values = torch.cat(list(parts), dim=1)
    index = torch.cat(list(positions), dim=1)
    batch, _, dim = values.shape
    if fill is None:
        canvas = values.new_zeros(batch, num_tokens, dim)
    else:
        canvas = fill.to(values.dtype).expand(batch, num_tokens, dim)
    return canvas.scatter(1, index.unsqueeze(-1).expand(-1, -1, dim), values)
