"""Subnet derivation: one global threshold per dimension type, placed so the encoder fits a cost budget.

The budget is the fraction of the ViT encoder's cost that is kept: the sliced encoder's parameters
and its forward FLOPs must both be at most ``budget`` x those of the unsliced encoder. For each
dimension type (attention head-dim channels, MLP neurons) the absolute mask values of all blocks
are pooled and ranked, so blocks end up with different widths: a block whose masks the search
drove down loses more. How far down each ranking the threshold goes is set by an analytic cost
model (``nnunet_scd.search.cost``): a channel of a late block of a token-pruned network sees few
tokens, so it is cheap, and cutting it saves little; the patch embedding, position table and norms
cannot be sliced at all. By default the kept heads of a block then share one width
(``uniform_heads``), inside the same budget.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnunet_scd.search.cost import EncoderCost, encoder_cost
from nnunet_scd.search.slicing import masked_blocks

__all__ = ["check_budget", "derive_keep", "fit_keep", "global_keep", "keep_widths", "uniform_heads"]

_BISECTIONS = 40  # the scale's resolution 2^-40: finer than one channel of any encoder


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


def global_keep(masks: Sequence[torch.Tensor], count: int, ranking: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Boolean keep masks, same shapes as ``masks``: the ``count`` largest |values| over all of them.

    ``ranking``: ``_ranking(masks)`` if already computed.
    """
    sizes = [m.numel() for m in masks]
    keep = torch.zeros(sum(sizes), dtype=torch.bool)
    keep[(_ranking(masks) if ranking is None else ranking)[:count]] = True
    return [part.reshape(m.shape) for part, m in zip(keep.split(sizes), masks)]


class _RankedType:
    """One dimension type: its masks ranked globally, and the share of the type's cost each prefix keeps.

    Args:
        masks: per block, the type's mask tensor.
        params: per block, the parameters one of its channels costs.
        flops: per block, the FLOPs one of its channels costs.
    """

    def __init__(self, masks: Sequence[torch.Tensor], params: Sequence[int], flops: Sequence[int]) -> None:
        self.masks = list(masks)
        self.order = _ranking(self.masks)
        per_param = torch.cat([torch.full((m.numel(),), p, dtype=torch.float64) for m, p in zip(masks, params)])
        per_flop = torch.cat([torch.full((m.numel(),), f, dtype=torch.float64) for m, f in zip(masks, flops)])
        zero = torch.zeros(1, dtype=torch.float64)
        prefix_params = torch.cat([zero, per_param[self.order].cumsum(0)])  # [k]: cost of the k best channels
        prefix_flops = torch.cat([zero, per_flop[self.order].cumsum(0)])
        # Each type gives up the same share of its own cost; params and FLOPs weigh equally, so
        # neither constraint alone decides which of the two types pays.
        self.share = (prefix_params / prefix_params[-1].clamp(min=1) + prefix_flops / prefix_flops[-1].clamp(min=1)) / 2

    def keep(self, scale: float) -> list[torch.Tensor]:
        """The top-ranked channels that fit in ``scale`` x this type's cost."""
        if scale >= 1.0:  # all of them, whatever rounding did to the last share
            count = len(self.share) - 1
        else:
            count = int(torch.searchsorted(self.share, torch.tensor([scale], dtype=torch.float64), right=True)) - 1
        return global_keep(self.masks, count, self.order)


def uniform_heads(keep_attn: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The block's kept channels redistributed so that every kept head has the same width.

    The heads that kept any channel stay, each with ``floor(kept / heads)`` channels, its largest
    |mask| values; never more channels than ``keep_attn`` had, so a selection within budget stays
    within it. One width per block means one attention call per block, which is faster at the same
    FLOPs (README, "Equal head widths per block").

    Args:
        keep_attn: bool (H, d_head), the channels a global threshold kept.
        mask: (H, d_head), the block's mask values.
    """
    kept_per_head = keep_attn.sum(1)
    heads = int((kept_per_head > 0).sum())
    if heads == 0:
        return keep_attn.clone()
    width = int(kept_per_head.sum()) // heads
    uniform = torch.zeros_like(keep_attn)
    for head in (kept_per_head > 0).nonzero().flatten().tolist():
        uniform[head] = _top(mask[head].detach().cpu(), width)
    return uniform


def _selection(
    types: Sequence[_RankedType], scale: float, equal_heads: bool
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    attn, mlp = (t.keep(scale) for t in types)
    if equal_heads:
        attn = [uniform_heads(keep, mask) for keep, mask in zip(attn, types[0].masks)]
    return attn, mlp


def _selection_cost(selection: tuple[list[torch.Tensor], list[torch.Tensor]], cost: EncoderCost) -> tuple[int, int]:
    """Encoder params and FLOPs of a selection, by the analytic model."""
    return cost.of([int(k.sum()) for k in selection[0]], [int(k.sum()) for k in selection[1]])


def derive_keep(
    network: nn.Module, budget: float, equal_heads: bool = True
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per block, (keep_attn (H, d_head), keep_mlp (hidden,)) for a search network at one budget.

    The kept encoder's parameters and forward FLOPs on one training patch (token pruning included)
    are each at most ``budget`` x the unsliced encoder's, by the analytic model of ``encoder_cost``.
    With ``equal_heads`` every block's kept heads get one width (``uniform_heads``); without, each
    head keeps exactly the channels above the global threshold.
    """
    budget = check_budget(budget)
    blocks = masked_blocks(network)
    cost = encoder_cost(network)
    types = [
        _RankedType([b.attn.head_mask for b in blocks], cost.attn_params, cost.attn_flops),
        _RankedType([b.mlp.neuron_mask for b in blocks], cost.mlp_params, cost.mlp_flops),
    ]
    full_params, full_flops = _selection_cost(_selection(types, 1.0, False), cost)
    limits = (budget * full_params, budget * full_flops)

    def fits(scale: float) -> bool:
        params, flops = _selection_cost(_selection(types, scale, equal_heads), cost)
        return params <= limits[0] and flops <= limits[1]

    if not fits(0.0):
        raise ValueError(
            f"budget {budget} is below what slicing can reach: the patch embedding, position table and norms alone "
            f"are {cost.fixed_params / full_params:.1%} of the encoder's parameters and "
            f"{cost.fixed_flops / full_flops:.1%} of its FLOPs. Use a larger budget."
        )
    scale = 1.0
    if not fits(scale):  # bisect the largest fitting scale: fits at low, not at high
        low, high = 0.0, 1.0
        for _ in range(_BISECTIONS):
            middle = (low + high) / 2
            low, high = (middle, high) if fits(middle) else (low, middle)
        scale = low
    attn, mlp = _selection(types, scale, equal_heads)
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
