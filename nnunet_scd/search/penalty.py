"""L1 sparsity penalty on the search masks, one weight per dimension type (ViT-Slim's loss terms)."""

from __future__ import annotations

import torch
from torch import nn

from nnunet_scd.search.slicing import masked_blocks

__all__ = ["mask_penalty", "mask_statistics"]


def mask_penalty(network: nn.Module, attn_weight: float = 2e-6, mlp_weight: float = 2e-6) -> torch.Tensor:
    """``attn_weight * sum|head masks| + mlp_weight * sum|neuron masks|`` over all encoder blocks."""
    if attn_weight < 0 or mlp_weight < 0:
        raise ValueError(f"penalty weights must be >= 0, got attn {attn_weight}, mlp {mlp_weight}.")
    blocks = masked_blocks(network)
    attn = torch.stack([b.attn.head_mask.abs().sum() for b in blocks]).sum()
    mlp = torch.stack([b.mlp.neuron_mask.abs().sum() for b in blocks]).sum()
    return attn_weight * attn + mlp_weight * mlp


@torch.no_grad()
def mask_statistics(network: nn.Module, threshold: float = 0.05) -> list[dict[str, float]]:
    """Per block and dimension: mean, min, max of the masks and the fraction with |m| < ``threshold``."""
    stats = []
    for block in masked_blocks(network):
        row: dict[str, float] = {}
        for name, mask in (("attn", block.attn.head_mask), ("mlp", block.mlp.neuron_mask)):
            values = mask.detach().abs().float()
            row.update({
                f"{name}_mean": values.mean().item(), f"{name}_min": values.min().item(),
                f"{name}_max": values.max().item(), f"{name}_low": (values < threshold).float().mean().item(),
            })
        stats.append(row)
    return stats
