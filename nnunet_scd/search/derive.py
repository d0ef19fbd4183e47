"""Subnet derivation: one global threshold per dimension type, placed so the encoder fits a cost budget.

The budget is the fraction of the ViT encoder's cost that is kept: the sliced encoder's parameters
and its forward FLOPs must both be at most ``budget`` x those of the unsliced encoder. For each
dimension type (attention head-dim channels, MLP neurons) the absolute mask values of all blocks
are pooled and ranked, so blocks end up with different widths: a block whose masks the search
drove down loses more. How far down each ranking the threshold goes is set by an analytic cost
model (``nnunet_scd.search.cost``): a channel of a late block of a token-pruned network sees few
tokens, so it is cheap, and cutting it saves little; the patch embedding, position table and norms
cannot be sliced at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnunet_scd.search.cost import EncoderCost, encoder_cost
from nnunet_scd.search.slicing import masked_blocks

__all__ = ["DIMENSIONS", "check_budget", "derive_keep", "fit_keep", "global_keep", "keep_widths"]

DIMENSIONS = ("attn", "mlp")
_BISECTIONS = 60  # the scale's resolution 2^-60: finer than one channel of any encoder


def check_budget(budget: float) -> float:
    """The budget as a float in (0, 1], or a ValueError saying what it means."""
    try:
        value = float(budget)
    except (TypeError, ValueError):
        raise ValueError(f"the budget must be a number in (0, 1], got {budget!r}.") from None
    if not 0.0 < value <= 1.0:
        raise ValueError(
            f"the budget is the fraction of the ViT encoder's parameters and FLOPs kept, so it must be in (0, 1]; "
            f"got {budget}. For example --budget 0.7 keeps at most 70% of each."
        )
    return value


def _ranking(masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Positions in the pooled, flattened masks by decreasing |value|; ties by position (deterministic)."""
    flat = torch.cat([m.detach().abs().flatten().float().cpu() for m in masks])
    return torch.sort(flat, descending=True, stable=True).indices


def global_keep(masks: Sequence[torch.Tensor], count: int) -> list[torch.Tensor]:
    """Boolean keep masks, same shapes as ``masks``: the ``count`` largest |values| over all of them."""
    sizes = [m.numel() for m in masks]
    keep = torch.zeros(sum(sizes), dtype=torch.bool)
    keep[_ranking(masks)[:count]] = True
    return [part.reshape(m.shape) for part, m in zip(keep.split(sizes), masks)]


class _RankedType:
    """One dimension type: its masks ranked globally, with the cumulative cost of keeping each prefix.

    Args:
        masks: per block, the type's mask tensor.
        params: per block, the parameters one of its channels costs.
        flops: per block, the FLOPs one of its channels costs.
    """

    def __init__(self, masks: Sequence[torch.Tensor], params: Sequence[int], flops: Sequence[int]) -> None:
        self.masks = list(masks)
        order = _ranking(self.masks)
        per_param = torch.cat([torch.full((m.numel(),), p, dtype=torch.float64) for m, p in zip(masks, params)])
        per_flop = torch.cat([torch.full((m.numel(),), f, dtype=torch.float64) for m, f in zip(masks, flops)])
        zero = torch.zeros(1, dtype=torch.float64)
        self.params = torch.cat([zero, per_param[order].cumsum(0)])  # [k]: cost of the k best channels
        self.flops = torch.cat([zero, per_flop[order].cumsum(0)])
        # Each type gives up the same share of its own cost; params and FLOPs weigh equally, so
        # neither constraint alone decides which of the two types pays.
        self.share = (self.params / self.params[-1].clamp(min=1) + self.flops / self.flops[-1].clamp(min=1)) / 2

    def count(self, scale: float) -> int:
        """How many top-ranked channels fit in ``scale`` x this type's cost."""
        if scale >= 1.0:  # all of them, whatever rounding did to the last share
            return len(self.share) - 1
        return int(torch.searchsorted(self.share, torch.tensor([scale], dtype=torch.float64), right=True)) - 1

    def keep(self, count: int) -> list[torch.Tensor]:
        return global_keep(self.masks, count)


def _fits(types: Sequence[_RankedType], cost: EncoderCost, scale: float, limits: tuple[float, float]) -> bool:
    counts = [t.count(scale) for t in types]
    params = cost.fixed_params + sum(float(t.params[c]) for t, c in zip(types, counts))
    flops = cost.fixed_flops + sum(float(t.flops[c]) for t, c in zip(types, counts))
    return params <= limits[0] and flops <= limits[1]


def _budget_scale(types: Sequence[_RankedType], cost: EncoderCost, budget: float) -> float:
    """The largest scale in [0, 1] at which the kept encoder's params and FLOPs are both <= budget x full."""
    full_params = cost.fixed_params + sum(float(t.params[-1]) for t in types)
    full_flops = cost.fixed_flops + sum(float(t.flops[-1]) for t in types)
    limits = (budget * full_params, budget * full_flops)
    if _fits(types, cost, 1.0, limits):
        return 1.0
    if not _fits(types, cost, 0.0, limits):
        raise ValueError(
            f"budget {budget} is below what slicing can reach: the patch embedding, position table and norms alone "
            f"are {cost.fixed_params / full_params:.1%} of the encoder's parameters and "
            f"{cost.fixed_flops / full_flops:.1%} of its FLOPs. Use a larger budget."
        )
    low, high = 0.0, 1.0  # fits at low, not at high; fitting is monotone in the scale
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        low, high = (middle, high) if _fits(types, cost, middle, limits) else (low, middle)
    return low


def derive_keep(network: nn.Module, budget: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per block, (keep_attn (H, d_head), keep_mlp (hidden,)) for a search network at one budget.

    The kept encoder's parameters and forward FLOPs on one training patch (token pruning included)
    are each at most ``budget`` x the unsliced encoder's, by the analytic model of ``encoder_cost``.
    """
    budget = check_budget(budget)
    blocks = masked_blocks(network)
    cost = encoder_cost(network)
    types = [
        _RankedType([b.attn.head_mask for b in blocks], cost.attn_params, cost.attn_flops),
        _RankedType([b.mlp.neuron_mask for b in blocks], cost.mlp_params, cost.mlp_flops),
    ]
    scale = _budget_scale(types, cost, budget)
    attn, mlp = (t.keep(t.count(scale)) for t in types)
    return list(zip(attn, mlp))


def keep_widths(keep: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[dict[str, list[int] | int]]:
    """The widths a keep selection gives: per block, the kept heads' widths (decreasing) and MLP width."""
    widths = []
    for keep_attn, keep_mlp in keep:
        head_dims = sorted((int(n) for n in keep_attn.sum(1).tolist() if n > 0), reverse=True)
        widths.append({"head_dims": head_dims, "mlp_hidden": int(keep_mlp.sum())})
    return widths


def _top(values: torch.Tensor, count: int) -> torch.Tensor:
    return global_keep([values.flatten()], count)[0]


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
