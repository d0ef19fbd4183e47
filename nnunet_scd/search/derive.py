"""Subnet derivation: one global threshold per dimension type across all encoder blocks.

For each dimension type (attention head-dim channels, MLP neurons) the absolute mask values of
all blocks are pooled and the top ``budget`` fraction is kept, so blocks end up with different
widths: a block whose masks the search drove down loses more.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnunet_scd.search.slicing import masked_blocks

__all__ = ["DIMENSIONS", "check_budget", "derive_keep", "fit_keep", "global_keep", "keep_widths"]

DIMENSIONS = ("attn", "mlp")


def check_budget(budget: float) -> float:
    """The budget as a float in (0, 1], or a ValueError saying what it means."""
    try:
        value = float(budget)
    except (TypeError, ValueError):
        raise ValueError(f"the budget must be a number in (0, 1], got {budget!r}.") from None
    if not 0.0 < value <= 1.0:
        raise ValueError(
            f"the budget is the fraction of attention channels and MLP neurons kept, so it must be in (0, 1]; "
            f"got {budget}. For example --budget 0.7 keeps 70%."
        )
    return value


def global_keep(masks: Sequence[torch.Tensor], budget: float) -> list[torch.Tensor]:
    """Boolean keep masks, same shapes as ``masks``: the ``round(budget * total)`` largest |values| overall.

    At least one value is kept. Ties are broken by position (earlier blocks and channels first),
    so identical masks give deterministic widths.
    """
    budget = check_budget(budget)
    flat = torch.cat([m.detach().abs().flatten().float().cpu() for m in masks])
    count = max(1, min(flat.numel(), round(budget * flat.numel())))
    order = torch.sort(flat, descending=True, stable=True).indices[:count]
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[order] = True
    return [part.reshape(m.shape) for part, m in zip(keep.split([m.numel() for m in masks]), masks)]


def derive_keep(network: nn.Module, budget: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per block, (keep_attn (H, d_head), keep_mlp (hidden,)) for a search network at one budget."""
    blocks = masked_blocks(network)
    attn = global_keep([b.attn.head_mask for b in blocks], budget)
    mlp = global_keep([b.mlp.neuron_mask for b in blocks], budget)
    return list(zip(attn, mlp))


def keep_widths(keep: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[dict[str, list[int] | int]]:
    """The widths a keep selection gives: per block, the kept heads' widths (decreasing) and MLP width."""
    widths = []
    for keep_attn, keep_mlp in keep:
        head_dims = sorted((int(n) for n in keep_attn.sum(1).tolist() if n > 0), reverse=True)
        widths.append({"head_dims": head_dims, "mlp_hidden": int(keep_mlp.sum())})
    return widths


def _top(values: torch.Tensor, count: int) -> torch.Tensor:
    keep = torch.zeros(values.numel(), dtype=torch.bool)
    keep[torch.sort(values.detach().abs().flatten().cpu(), descending=True, stable=True).indices[:count]] = True
    return keep


def fit_keep(network: nn.Module, widths: Sequence[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Keep selections that give exactly ``widths`` (from another fold's derivation) using this network's masks.

    Per block, heads are ranked by the L1 of their masks and take the recorded widths in that order
    (widest to the most important head); each head keeps its largest channels, the MLP its largest
    neurons. So every fold of a cross-validation gets the same architecture with its own weights.
    """
    blocks = masked_blocks(network)
    if len(widths) != len(blocks):
        raise ValueError(f"the recorded widths cover {len(widths)} blocks but the network has {len(blocks)}.")
    keep = []
    for i, (block, width) in enumerate(zip(blocks, widths)):
        mask, neurons = block.attn.head_mask.detach().cpu(), block.mlp.neuron_mask.detach().cpu()
        head_dims = list(width["head_dims"])
        if len(head_dims) > mask.shape[0] or max(head_dims, default=0) > mask.shape[1] or \
                width["mlp_hidden"] > neurons.numel():
            raise ValueError(f"block {i}: recorded widths {width} exceed the network's {tuple(mask.shape)} heads "
                             f"and {neurons.numel()} neurons; the plans come from a larger model.")
        keep_attn = torch.zeros(mask.shape, dtype=torch.bool)
        ranked = torch.sort(mask.abs().sum(1), descending=True, stable=True).indices.tolist()
        for head, count in zip(ranked, head_dims):
            keep_attn[head] = _top(mask[head], count)
        keep.append((keep_attn, _top(neurons, int(width["mlp_hidden"]))))
    return keep
