"""Token masks, the joint search's third dimension (ViT-Slim), and the token schedule they derive.

In the search network a ``TokenMasks`` gate gives each encoder block one learnable value per
token, applied as ``tanh(p)`` with ``p`` initialised to 3. It multiplies the normalised input of
attention and of the MLP; the residual stream carries every token unchanged. Two kinds:

- ``"position"``: one value per grid position and block. What it learns is static: the sliced
  subnet drops the same positions in every patch, so every sliding-window tile loses the same
  places.
- ``"rank"``: one value per rank and block. A block's tokens are ranked in the order of the last
  selection that ran: the evenly spaced rule (``spread_priority``, coarse to fine) before the first
  pruning stage and in a dense network, the stage's own order after it (STP: its scores, highest
  first; random pruning: its draw; the oracle: foreground). The search learns how many tokens each
  block keeps; the selection decides which.

How the masks combine with the network's own token selection (STP's dynamic one, or any other):

- Position masks need a token set that is the same in every patch, so they are refused on a
  network with pruning stages. After a stage each patch holds other positions, a block's position
  mask would keep a different number of tokens in each patch of a batch, and the tokens could not
  be gathered as one tensor. Rank masks are the kind for such networks.
- Rank masks act on what the selection leaves. A block's masks cover the tokens it sees in the
  search network (``block_tokens``). The sliced block keeps its first n tokens in the selection's
  order. A stage keeps its ``keep_ratio`` of the tokens it receives, so tokens dropped before a
  stage also shrink what the stage keeps; the derivation counts that (``token_counts``).
- A token kept in a later block is kept in every earlier one. A position is processed by every
  block up to the last one whose mask kept it. Between two stages a block keeps at least as many
  ranks as any later block of that stretch; across a stage the later tokens are a subset by
  construction, since a stage selects among the tokens present.
- A dropped token leaves the encoder (gather before the block, as SCDNet prunes). It joins the
  tokens of the next pruning stage, or the final tokens, so the skips, the assembly (MTA) and the
  decoder see it as the last block that kept it left it. A dense network puts it back with a
  scatter, which costs no FLOPs; MTA takes every grid position once whichever block it left, so
  its cost does not depend on the schedule. The budget over the encoder therefore covers the
  assembly too.

The sliced subnet does not compute what the masked network computed: a masked token still enters
attention, through its key and value biases, and a kept token's mask is close to one but not one.
Fine-tuning closes that gap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from nnunet_scd.model.stp import keep_count, spread_priority
from nnunet_scd.model.tokens import GatedTokens, gather_tokens
from nnunet_scd.search.cost import block_tokens

__all__ = [
    "LOGIT_LR_SCALE",
    "TOKEN_MASKS",
    "TokenMasks",
    "TokenSchedule",
    "make_token_masks",
    "schedule_tokens",
    "stage_ratios",
    "token_counts",
]

TOKEN_MASKS = ("position", "rank")
_INITIAL_LOGIT = 3.0  # tanh(3) = 0.995: every token starts almost fully on, as in ViT-Slim
# Adam moves a parameter by about its learning rate per step, whatever the scale of its gradient, so a logit that
# starts at 3 needs 3 times the steps of a channel mask that starts at 1 to reach zero. At the masks' own rate a
# 3000-step search could move a logit about 1.6 at most, and the token masks ended above 0.95. The search trains the
# logits at this multiple of the masks' learning rate, so that both kinds can travel as far in one run.
LOGIT_LR_SCALE = _INITIAL_LOGIT


def _check_kind(kind: str) -> None:
    if kind not in TOKEN_MASKS:
        raise ValueError(f"token_mask must be one of {TOKEN_MASKS} or None, got {kind!r}.")


def stage_ratios(network: nn.Module) -> dict[int, float]:
    """0-based block index -> keep ratio of the pruning stage that follows that block."""
    return {after - 1: stage.keep_ratio for after, stage in zip(network.prune_after, network.pruning)}


def _evenly_first(tokens: torch.Tensor, positions: torch.Tensor, order: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The full grid's tokens (B, N, D) and positions (B, N) in the evenly spaced order (``order``: (N,))."""
    if tokens.shape[1] != order.numel():
        raise ValueError(f"the token masks were built for a grid of {order.numel()} tokens, the input has "
                         f"{tokens.shape[1]}; run the network on the patch size it was searched at.")
    index = order.expand(tokens.shape[0], -1)
    return gather_tokens(tokens, index), torch.gather(positions, 1, index)


def _evenly_spaced_order(grid: Sequence[int]) -> torch.Tensor:
    """(N,) grid positions, the evenly spaced rule's first choice first."""
    return torch.sort(spread_priority(grid), descending=True, stable=True).indices


class TokenMasks(nn.Module):
    """Learnable token masks of every encoder block: ``tanh(logits[i])``, one value per position or rank.

    Args:
        kind: "position" or "rank".
        sizes: mask values per block (grid positions, or the tokens the block sees).
        grid: the token grid of the training patch.

    Call: ``(i, tokens (B, N, D), positions (B, N))`` -> ``GatedTokens`` with a (B, N) weight
    (positions) or an (N,) weight (ranks); nothing is dropped. With rank masks the tokens enter
    block 0 in the evenly spaced order, so a token's rank is its index in the sequence.
    """

    def __init__(self, kind: str, sizes: Sequence[int], grid: Sequence[int]) -> None:
        super().__init__()
        _check_kind(kind)
        self.kind = kind
        self.logits = nn.ParameterList(nn.Parameter(torch.full((int(n),), _INITIAL_LOGIT)) for n in sizes)
        self.register_buffer("order", _evenly_spaced_order(grid), persistent=False)

    def values(self) -> list[torch.Tensor]:
        """Per block, the mask values ``tanh(p)`` (differentiable)."""
        return [torch.tanh(p) for p in self.logits]

    def forward(self, index: int, tokens: torch.Tensor, positions: torch.Tensor) -> GatedTokens:
        mask = torch.tanh(self.logits[index])
        if self.kind == "position":
            if index == 0 and tokens.shape[1] != mask.numel():
                raise ValueError(f"the token masks were built for a grid of {mask.numel()} tokens, the input has "
                                 f"{tokens.shape[1]}; run the network on the patch size it was searched at.")
            return GatedTokens(tokens, positions, mask[positions])
        if index == 0:
            tokens, positions = _evenly_first(tokens, positions, self.order)
        if tokens.shape[1] != mask.numel():
            raise ValueError(f"block {index}'s rank masks cover {mask.numel()} tokens, it got {tokens.shape[1]}; "
                             "run the network on the patch size it was searched at.")
        return GatedTokens(tokens, positions, mask)


class TokenSchedule(nn.Module):
    """The tokens each block of a sliced subnet processes; the rest leave the encoder before it.

    Args:
        kind: "position" or "rank".
        kept: for "position", per grid position the number of leading blocks that process it (0:
            none, the embedding goes straight to the decoder); for "rank", per block the number of
            tokens it keeps, the first in the selection's order.
        grid: the token grid of the training patch.

    Call: ``(i, tokens (B, N, D), positions (B, N))`` -> ``GatedTokens`` with the kept tokens
    (gathered) and the dropped ones. A position schedule belongs to a network without pruning
    stages: the sequence each block receives is then known in advance, so the gather indices are
    fixed and nothing depends on the values (FLOP counting runs it on the 'meta' device).
    """

    def __init__(self, kind: str, kept: Sequence[int], grid: Sequence[int]) -> None:
        super().__init__()
        _check_kind(kind)
        self.kind = kind
        self.kept = tuple(int(k) for k in kept)
        # Rebuilt from the plans' record, so not part of the state dict: the sliced weights keep their keys.
        self.register_buffer("order", _evenly_spaced_order(grid), persistent=False)
        if kind == "position":
            if len(self.kept) != self.order.numel():
                raise ValueError(f"a position schedule has one entry per grid position ({self.order.numel()}), "
                                 f"got {len(self.kept)}.")
            kept_by = torch.tensor(self.kept, dtype=torch.long)
            sequence = torch.arange(len(self.kept))  # the grid positions block i receives, in order
            for block in range(max(self.kept, default=0)):
                stays = kept_by[sequence] > block
                self.register_buffer(f"keep_{block}", stays.nonzero().flatten(), persistent=False)
                self.register_buffer(f"drop_{block}", (~stays).nonzero().flatten(), persistent=False)
                sequence = sequence[stays]

    def record(self) -> dict[str, Any]:
        """What the slim plans record (``from_record`` rebuilds the schedule)."""
        return {"kind": self.kind, "kept": list(self.kept)}

    @classmethod
    def from_record(cls, record: dict[str, Any], grid: Sequence[int]) -> TokenSchedule:
        return cls(record["kind"], record["kept"], grid)

    def forward(self, index: int, tokens: torch.Tensor, positions: torch.Tensor) -> GatedTokens:
        if self.kind == "rank":
            if index == 0:
                tokens, positions = _evenly_first(tokens, positions, self.order)
            count = min(self.kept[index], tokens.shape[1])
            if count == tokens.shape[1]:
                return GatedTokens(tokens, positions)
            return GatedTokens(tokens[:, :count], positions[:, :count], None, tokens[:, count:], positions[:, count:])
        if index == 0 and tokens.shape[1] != len(self.kept):
            raise ValueError(f"the token schedule was derived for a grid of {len(self.kept)} tokens, the input has "
                             f"{tokens.shape[1]}; run the network on the patch size it was sliced at.")
        keep, drop = getattr(self, f"keep_{index}"), getattr(self, f"drop_{index}")
        if drop.numel() == 0:
            return GatedTokens(tokens, positions)
        batch = tokens.shape[0]
        keep, drop = keep.expand(batch, -1), drop.expand(batch, -1)
        return GatedTokens(gather_tokens(tokens, keep), torch.gather(positions, 1, keep), None,
                           gather_tokens(tokens, drop), torch.gather(positions, 1, drop))


def make_token_masks(network: nn.Module, kind: str) -> TokenMasks:
    """Token masks for an SCDNet: per block, one per grid position, or one per token the block sees."""
    _check_kind(kind)
    if kind == "position" and network.prune_after:
        raise ValueError(
            "position token masks need the same token positions in every patch, but this network prunes tokens "
            f"after blocks {network.prune_after}, which keeps different positions per patch; use token_mask='rank', "
            "which ranks the tokens in the pruning's order."
        )
    grid = network.token_grid
    sizes = [math.prod(grid)] * len(network.blocks) if kind == "position" else block_tokens(network)
    return TokenMasks(kind, sizes, grid).to(network.pos_embed.pos_embed.device)


def schedule_tokens(
    kind: str, keep: Sequence[torch.Tensor], values: Sequence[torch.Tensor], num_tokens: int,
    stages: dict[int, float],
) -> dict[str, Any]:
    """The nested token schedule (a ``TokenSchedule`` record) that per-block keep masks give.

    Args:
        kind: "position" or "rank".
        keep: per block, bool over its mask values: those a global threshold kept.
        values: per block, the mask values (a block that keeps nothing keeps its largest one).
        num_tokens: tokens of the grid.
        stages: 0-based block -> keep ratio of the pruning stage after it (``stage_ratios``).

    Every block keeps at least one token. Positions: each position is processed by the blocks up to
    the last that kept it. Ranks: between stages a block keeps the most any later block there keeps,
    and never more than it receives.
    """
    _check_kind(kind)
    depth = len(keep)
    if kind == "position":
        kept = torch.zeros(num_tokens, dtype=torch.long)
        for block, block_keep in enumerate(keep):
            kept[block_keep.cpu()] = block + 1
        if not (kept == depth).any():  # the last block keeps one token, so every block does
            kept[values[-1].detach().abs().argmax().cpu()] = depth
        return {"kind": kind, "kept": kept.tolist()}
    wanted = [int(k.sum()) for k in keep]
    for block in reversed(range(depth - 1)):
        if block not in stages:  # same stretch as the next block: keep what it keeps
            wanted[block] = max(wanted[block], wanted[block + 1])
    return {"kind": kind, "kept": _received(wanted, num_tokens, stages)}


def _received(wanted: Sequence[int], num_tokens: int, stages: dict[int, float]) -> list[int]:
    """Per block, the tokens it processes when it keeps ``wanted`` of what it receives (at least one)."""
    present, counts = num_tokens, []
    for block, count in enumerate(wanted):
        present = max(1, min(present, count))
        counts.append(present)
        if block in stages:
            present = keep_count(present, stages[block])
    return counts


def token_counts(record: dict[str, Any], depth: int) -> list[int]:
    """Tokens each block processes under a ``TokenSchedule`` record."""
    if record["kind"] == "rank":
        return list(record["kept"])
    kept = torch.tensor(record["kept"])
    return [int((kept > block).sum()) for block in range(depth)]
