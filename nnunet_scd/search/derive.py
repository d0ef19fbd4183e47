"""Subnet derivation: one global threshold per dimension type, placed so the encoder fits a cost budget.

The budget is the fraction of the ViT encoder's cost that is kept: the sliced encoder's parameters
and its forward FLOPs must both be at most ``budget`` x those of the unsliced encoder; with token
masks, its FLOPs, which all three types cut. For each
dimension type (attention head-dim channels, MLP neurons and, when searched, tokens) the absolute
mask values of all blocks are pooled and ranked, so blocks end up with different widths and token
counts: a block whose masks the search drove down loses more. How far down each ranking the
threshold goes is set by an analytic cost model (``nnunet_scd.search.cost``): a channel of a late
block of a token-pruned network sees few tokens, so it is cheap, and cutting it saves little; the
patch embedding, position table and norms cannot be sliced at all. A block's FLOPs are the product
of its widths and its tokens, so the three types are costed together, on the nested token schedule
(``token_masks``). By default the kept heads of a block then share one width (``uniform_heads``),
inside the same budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nnunet_scd.search.cost import encoder_cost
from nnunet_scd.search.slicing import masked_blocks, token_masks
from nnunet_scd.search.token_masks import schedule_tokens, stage_ratios, token_counts

__all__ = [
    "Selection",
    "check_budget",
    "derive_keep",
    "derive_selection",
    "fit_keep",
    "global_keep",
    "keep_widths",
    "uniform_heads",
]

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
        # neither constraint alone decides which type pays. Tokens cost FLOPs only.
        shares = [prefix / prefix[-1] for prefix in (prefix_params, prefix_flops) if prefix[-1] > 0]
        self.share = sum(shares) / len(shares) if shares else prefix_flops

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
    FLOPs (docs/joint-search.md, "Equal head widths per block").

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


@dataclass(frozen=True)
class Selection:
    """What a derivation keeps: per block (keep_attn (H, d_head), keep_mlp (hidden,)), and the token
    schedule (a ``TokenSchedule`` record) when the search had token masks, else None."""

    channels: list[tuple[torch.Tensor, torch.Tensor]]
    tokens: dict[str, Any] | None = None


class _Types:
    """The searched dimension types of a network, ranked, and the cost of keeping a share of each."""

    def __init__(self, network: nn.Module) -> None:
        blocks = masked_blocks(network)
        self.cost = encoder_cost(network)
        self.types = [
            _RankedType([b.attn.head_mask for b in blocks], self.cost.attn_params, self.cost.attn_flops),
            _RankedType([b.mlp.neuron_mask for b in blocks], self.cost.mlp_params, self.cost.mlp_flops),
        ]
        self.token_kind = None
        masks = token_masks(network)
        if masks is not None:
            self.token_kind = masks.kind
            self.num_tokens = masks.order.numel()
            self.stages = stage_ratios(network)
            values = [v.detach() for v in masks.values()]
            cost = self.cost
            # A token of block i costs its share of the block at full width (the attention's n^2 term averaged).
            per_token = [
                (b.attn.head_mask.numel() * cost.attn_channel_flops(n, d)
                 + b.mlp.neuron_mask.numel() * cost.mlp_neuron_flops(n, d)) / max(n, 1)
                for b, n, d in zip(blocks, cost.tokens, cost.dims)
            ]
            self.types.append(_RankedType(values, [0] * len(values), [round(c) for c in per_token]))

    def select(self, scale: float, equal_heads: bool) -> Selection:
        """What each type keeps within ``scale`` x its own cost."""
        attn, mlp = (t.keep(scale) for t in self.types[:2])
        if equal_heads:
            attn = [uniform_heads(keep, mask) for keep, mask in zip(attn, self.types[0].masks)]
        tokens = None
        if self.token_kind is not None:
            tokens = schedule_tokens(self.token_kind, self.types[2].keep(scale), self.types[2].masks,
                                     self.num_tokens, self.stages)
        return Selection(list(zip(attn, mlp)), tokens)

    def cost_of(self, selection: Selection) -> tuple[int, int]:
        """Encoder params and FLOPs of a selection, by the analytic model."""
        tokens = None if selection.tokens is None else token_counts(selection.tokens, len(selection.channels))
        return self.cost.of([int(a.sum()) for a, _ in selection.channels],
                            [int(m.sum()) for _, m in selection.channels], tokens)


def derive_selection(network: nn.Module, budget: float, equal_heads: bool = True) -> Selection:
    """What to keep of a search network at one budget: channels, neurons and (when searched) tokens.

    The kept encoder's parameters and forward FLOPs on one training patch (token pruning and the
    token schedule included) are each at most ``budget`` x the unsliced encoder's, by the analytic
    model of ``encoder_cost``. Every type keeps the same share of its own cost. With token masks the
    budget is the share of FLOPs alone (tokens cost no parameters); the parameters are what the
    channels' share leaves. With ``equal_heads`` every block's kept heads get one width
    (``uniform_heads``); without, each head keeps exactly the channels above the global threshold.
    """
    budget = check_budget(budget)
    types = _Types(network)
    full_params, full_flops = types.cost_of(types.select(1.0, False))
    # Tokens cut FLOPs only: with them the parameter limit would stop the channels first, leave the
    # FLOPs short of the budget, and give the tokens nothing to do.
    limits = (math.inf if types.token_kind else budget * full_params, budget * full_flops)

    def fits(scale: float) -> bool:
        params, flops = types.cost_of(types.select(scale, equal_heads))
        return params <= limits[0] and flops <= limits[1]

    if not fits(0.0):
        cost = types.cost
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
    return types.select(scale, equal_heads)


def derive_keep(
    network: nn.Module, budget: float, equal_heads: bool = True
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per block, (keep_attn (H, d_head), keep_mlp (hidden,)): ``derive_selection``'s channels."""
    return derive_selection(network, budget, equal_heads).channels


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
