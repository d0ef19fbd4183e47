"""L1 sparsity penalty on the search masks, one weight per dimension type (ViT-Slim's loss terms)."""

from __future__ import annotations

import torch
from torch import nn

from nnunet_scd.search.slicing import masked_blocks, token_masks

__all__ = ["mask_penalty", "mask_statistics"]


def mask_penalty(
    network: nn.Module, attn_weight: float = 2e-6, mlp_weight: float = 2e-6, token_weight: float = 2e-6
) -> torch.Tensor:
    """``attn_weight * sum|head masks| + mlp_weight * sum|neuron masks| + token_weight * sum|tanh(token masks)|``
    over all encoder blocks (the token term only where the network searches tokens)."""
    if attn_weight < 0 or mlp_weight < 0 or token_weight < 0:
        raise ValueError(f"penalty weights must be >= 0, got attn {attn_weight}, mlp {mlp_weight}, "
                         f"token {token_weight}.")
    blocks = masked_blocks(network)
    attn = torch.stack([b.attn.head_mask.abs().sum() for b in blocks]).sum()
    mlp = torch.stack([b.mlp.neuron_mask.abs().sum() for b in blocks]).sum()
    penalty = attn_weight * attn + mlp_weight * mlp
    tokens = token_masks(network)
    if tokens is not None:
        penalty = penalty + token_weight * torch.stack([v.abs().sum() for v in tokens.values()]).sum()
    return penalty


@torch.no_grad()
def mask_statistics(network: nn.Module, threshold: float = 0.05) -> list[dict[str, float]]:
    """Per block and dimension: mean, min, max of the masks and the fraction with |m| < ``threshold``.

    Token masks (``token_*``) are reported as their values ``tanh(p)``, where the network has them.
    """
    tokens = token_masks(network)
    token_values = [None] * len(network.blocks) if tokens is None else tokens.values()
    stats = []
    for block, token_value in zip(masked_blocks(network), token_values):
        row: dict[str, float] = {}
        named = [("attn", block.attn.head_mask), ("mlp", block.mlp.neuron_mask), ("token", token_value)]
        for name, mask in named:
            if mask is None:
                continue
            values = mask.detach().abs().float()
            row.update({
                f"{name}_mean": values.mean().item(), f"{name}_min": values.min().item(),
                f"{name}_max": values.max().item(), f"{name}_low": (values < threshold).float().mean().item(),
            })
        stats.append(row)
    return stats
