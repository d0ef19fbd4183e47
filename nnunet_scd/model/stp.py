"""Soft-topK Token Pruning (STP): a light token scorer and perturbed top-k samplers.

Training selects tokens with a perturbed top-k and lets gradients reach the scorer through a
straight-through mask: kept tokens are multiplied by the mask and pruned tokens by one minus it,
both of value one in the forward pass. Inference uses a deterministic top-k. Selection is always
by index, so later blocks really see fewer tokens.

The scorer and the sampler run in fp32 even under autocast: the straight-through gradients they
receive are small, and fp16 would flush them to zero. ``RandomTokenPruning`` is the ablation with
the same interface and no scorer; ``PriorityTokenPruning`` keeps the tokens a given per-token
priority ranks first, which makes both the label-reading oracle (priority: foreground voxels) and
the evenly spaced baseline (priority: ``spread_priority``, a coarse-to-fine order of the grid).

Every stage takes ``(x, positions, priority)``: the tokens, their grid positions, and an optional
per-token priority that SCDNet gathers for the tokens that remain. STP uses it for the reserved
context budget (``context_fraction``): that share of the kept tokens is the best-spread one, the
scorer chooses the rest. With class quotas (``class_quota``, see ``quota.py``) the scorer also
predicts per-class presence, and a share of the budget goes to each class it predicts present.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_scd.model.quota import quota_tokens
from nnunet_scd.model.tokens import gather_tokens

__all__ = [
    "SAMPLERS",
    "PriorityTokenPruning",
    "PrunedTokens",
    "RandomTokenPruning",
    "SoftTopKPruning",
    "TokenScorer",
    "gaussian_perturbed_topk",
    "gumbel_soft_topk",
    "keep_count",
    "spread_priority",
]

# "topk": the deterministic top-k of inference in training too, with the straight-through softmax mask.
SAMPLERS = ("gumbel", "gaussian", "topk")


def keep_count(num_tokens: int, keep_ratio: float) -> int:
    """Tokens kept out of ``num_tokens`` at one stage: ``max(1, round(keep_ratio * num_tokens))``."""
    return max(1, round(keep_ratio * num_tokens))


class TokenScorer(nn.Module):
    """Scores tokens from their own features and a global summary of the set.

    LayerNorm -> Linear(D, D) -> GELU; the first half of the channels stays per token (local),
    the second half is averaged over the tokens (global) and broadcast back; then an MLP
    D -> D/2 -> D/4 -> 1 + C and a log-sigmoid of the first output.

    Args:
        dim: token width D.
        num_classes: C, classes whose presence in each token the scorer also predicts (the class
            quotas' head, sharing the MLP); 0 (default): none.

    Shapes: (B, N, D) -> (B, N).
    """

    def __init__(self, dim: int, num_classes: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.local_dim = dim // 2
        self.in_proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
        self.head = nn.Sequential(
            nn.Linear(dim, dim // 2),
            nn.GELU(),
            nn.Linear(dim // 2, dim // 4),
            nn.GELU(),
            nn.Linear(dim // 4, 1 + num_classes),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform linear layers with zero bias.

        Not the ViT's std-0.02 initialisation: through four linear layers at that scale the scores, and
        the gradient back to the first layer, shrink by about three orders of magnitude, and the scorer
        barely moves in a short training.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N): the scores before the log-sigmoid, i.e. log-odds of keeping each token."""
        return self.split_logits(x)[0]

    def split_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, N, D) -> keep log-odds (B, N) and per-class presence log-odds (B, N, C), None without classes."""
        h = self.in_proj(x)
        local, global_ = h.split([self.local_dim, h.shape[-1] - self.local_dim], dim=-1)
        global_ = global_.mean(dim=1, keepdim=True).expand_as(global_)
        out = self.head(torch.cat([local, global_], dim=-1))
        return out[..., 0], out[..., 1:] if self.num_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.logsigmoid(self.logits(x))


def _descending_order(values: torch.Tensor) -> torch.Tensor:
    # Stable, so equal scores break ties the same way on every run and device.
    return torch.sort(values, dim=-1, descending=True, stable=True).indices


def _indicator(order: torch.Tensor, k: int, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like).scatter(-1, order[..., :k], 1.0)


def gumbel_soft_topk(scores: torch.Tensor, k: int, tau: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gumbel-perturbed soft top-k with a straight-through mask (the paper's sampler).

    Returns the token order (B, N), whose first ``k`` entries are the kept tokens, and the mask
    (B, N): the hard top-k indicator in the forward pass, the gradient of
    ``softmax((scores + Gumbel) / tau)`` in the backward pass.
    """
    gumbel = -torch.empty_like(scores).exponential_().log()
    perturbed = (scores + gumbel) / tau
    soft = perturbed.softmax(dim=-1)
    order = _descending_order(perturbed)
    hard = _indicator(order, k, soft)
    return order, hard - soft.detach() + soft


class _PerturbedTopKIndicator(torch.autograd.Function):
    """E[top-k indicator of (scores + sigma Z)], with the perturbed-optimizer gradient.

    Berthet et al. (2020): d E[y(s + sigma Z)] / ds = E[y(s + sigma Z) Z^T] / sigma, so the
    vector-Jacobian product with g is E[Z <y, g>] / sigma, estimated over the same samples.
    """

    @staticmethod
    def forward(ctx, scores: torch.Tensor, noise: torch.Tensor, k: int, sigma: float) -> torch.Tensor:
        indicators = _indicator(_descending_order(scores + sigma * noise), k, noise)
        ctx.save_for_backward(indicators, noise)
        ctx.sigma = sigma
        return indicators.mean(dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        indicators, noise = ctx.saved_tensors
        projected = (indicators * grad.unsqueeze(0)).sum(dim=-1, keepdim=True)
        return (noise * projected).mean(dim=0) / ctx.sigma, None, None, None


def gaussian_perturbed_topk(
    scores: torch.Tensor, k: int, sigma: float = 0.05, num_samples: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-sample Gaussian perturbed top-k (Berthet et al. 2020) with a straight-through mask.

    The kept set is the top-k of the first perturbed sample; the soft mask is the average
    indicator over ``num_samples`` samples. Same return convention as :func:`gumbel_soft_topk`.
    """
    noise = torch.randn((num_samples, *scores.shape), device=scores.device, dtype=scores.dtype)
    soft = _PerturbedTopKIndicator.apply(scores, noise, k, sigma)
    order = _descending_order(scores + sigma * noise[0])
    hard = _indicator(order, k, soft)
    return order, hard - soft.detach() + soft


class PrunedTokens(NamedTuple):
    """Output of one pruning stage; positions index the original token grid."""

    kept: torch.Tensor  # (B, K, D)
    kept_positions: torch.Tensor  # (B, K)
    pruned: torch.Tensor  # (B, N - K, D)
    pruned_positions: torch.Tensor  # (B, N - K)
    logits: torch.Tensor | None = None  # (B, N) scorer log-odds of every input token; None without a scorer
    class_logits: torch.Tensor | None = None  # (B, N, C) per-class presence log-odds; None without class quotas


def spread_priority(grid: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """(N,) priority of every grid position (C order) in a coarse-to-fine order: any number of the highest ones
    lies evenly spread over the grid.

    The order interleaves the coordinates' bits from the least significant up (a Morton code of the
    bit-reversed coordinates), so the first eighth of a 3D grid is the lattice of even coordinates, the next
    eighth fills in one axis, and so on: the grid's version of an evenly spaced subset, nested across stages.
    """
    axes = [torch.arange(n, device=device) for n in grid]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(grid))
    code = torch.zeros(coords.shape[0], dtype=torch.long, device=device)
    for bit in range(max(int(n - 1).bit_length() for n in grid)):
        for axis in range(len(grid)):
            code = code * 2 + ((coords[:, axis] >> bit) & 1)
    return -code.to(torch.float32)  # the smallest code first


def _full_precision(device: torch.device):
    # autocast only exists for real devices; on 'meta' (FLOP counting) there is nothing to switch off.
    return torch.autocast(device.type, enabled=False) if device.type in ("cuda", "cpu") else nullcontext()


def _split(x: torch.Tensor, positions: torch.Tensor, order: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    keep, drop = order[:, :k], order[:, k:]
    return (gather_tokens(x, keep), torch.gather(positions, 1, keep),
            gather_tokens(x, drop), torch.gather(positions, 1, drop))


def _promote(order: torch.Tensor, mask: torch.Tensor | None, chosen: torch.Tensor,
             k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Move the ``chosen`` tokens (B, N) bool to the front of ``order`` (B, N), the rest keeping their order.

    At most k are chosen, so all are kept and displace the last of the sampler's k. The straight-through
    mask (B, N) changes its forward value to the new kept set and keeps the sampler's soft gradient.
    """
    promoted = torch.gather(order, 1, _descending_order(torch.gather(chosen, 1, order).float()))
    if mask is not None:
        mask = mask - _indicator(order, k, mask) + _indicator(promoted, k, mask)
    return promoted, mask


class SoftTopKPruning(nn.Module):
    """One STP stage: score the tokens that remain and keep ``keep_count(N, keep_ratio)``.

    Args:
        dim: token width D.
        keep_ratio: fraction of the remaining tokens kept, in (0, 1].
        sampler: "gumbel" (the paper), "gaussian" (multi-sample perturbed top-k) or "topk" (no noise: the
            same deterministic top-k in training as at inference).
        tau: Gumbel (and "topk") softmax temperature.
        sigma: Gaussian noise scale.
        num_samples: Gaussian samples per step.
        context_fraction: share of the kept tokens reserved for context, chosen by the priority given to
            ``forward`` (evenly spread ones), before the scorer chooses the rest; 0 (default): none.
        class_quota: share of the kept tokens reserved for class quotas (``quota.quota_tokens``): the
            scorer's most probable tokens of each class it predicts present, before its usual score ranks
            the rest; 0 (default): none. In training the quota tokens replace the sampler's last picks and
            the straight-through mask keeps the sampler's gradient.
        quota_classes: classes the scorer predicts presence of, for the quotas (at least 1 with a quota).
    """

    def __init__(
        self,
        dim: int,
        keep_ratio: float,
        sampler: str = "gumbel",
        tau: float = 1.0,
        sigma: float = 0.05,
        num_samples: int = 100,
        context_fraction: float = 0.0,
        class_quota: float = 0.0,
        quota_classes: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"keep ratio must be in (0, 1], got {keep_ratio}.")
        if not 0.0 <= context_fraction < 1.0:
            raise ValueError(f"context_fraction must be in [0, 1), got {context_fraction}.")
        if not 0.0 <= class_quota <= 1.0 - context_fraction:
            raise ValueError(f"class_quota must be in [0, 1 - context_fraction], got {class_quota} with "
                             f"context_fraction {context_fraction}.")
        if class_quota and quota_classes < 1:
            raise ValueError(f"class quotas need at least one class to predict, got quota_classes={quota_classes}.")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}.")
        if tau <= 0 or sigma <= 0 or num_samples < 1:
            raise ValueError(f"need tau > 0, sigma > 0 and num_samples >= 1, got {tau}, {sigma}, {num_samples}.")
        self.keep_ratio = keep_ratio
        self.sampler = sampler
        self.tau = tau
        self.sigma = sigma
        self.num_samples = num_samples
        self.context_fraction = context_fraction
        self.class_quota = class_quota
        # The class head only exists with quotas, so the state dicts of quota-free networks stay as they were.
        self.scorer = TokenScorer(dim, quota_classes if class_quota else 0)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, priority: torch.Tensor | None = None) -> PrunedTokens:
        """(B, N, D), (B, N), optional (B, N) context priority -> kept and pruned tokens with their original
        positions, and the scorer's logits (with quotas, its per-class logits too)."""
        k = keep_count(x.shape[1], self.keep_ratio)
        context = min(k - 1, round(self.context_fraction * k))
        quota = min(k - context, round(self.class_quota * k))
        if context and priority is None:
            raise ValueError("a reserved context budget needs the per-token priority that chooses the context.")
        with _full_precision(x.device):
            logits, class_logits = self.scorer.split_logits(x.float())
            scores = F.logsigmoid(logits)
            # The context tokens come first; the scorer ranks the others for the remaining k - context places.
            by_priority = _descending_order(priority) if context else None
            candidates = by_priority[:, context:] if context else None
            ranked = scores if candidates is None else torch.gather(scores, 1, candidates)
            order, mask = self._rank(ranked, k - context)
            if quota:
                # The class head learns from its own targets; the choice it makes passes no gradient.
                candidate_logits = class_logits.detach()
                if candidates is not None:
                    candidate_logits = gather_tokens(candidate_logits, candidates)
                chosen = quota_tokens(candidate_logits, quota)
                order, mask = _promote(order, mask, chosen, k - context)
            if candidates is not None:
                order = torch.cat([by_priority[:, :context], torch.gather(candidates, 1, order)], dim=1)
                if mask is not None:
                    mask = torch.ones_like(scores).scatter(1, candidates, mask)
        kept, kept_positions, pruned, pruned_positions = _split(x, positions, order, k)
        if self.training:
            # Forward values are exactly one; the backward pass carries the scorer's gradient.
            mask = mask.to(x.dtype)
            kept = kept * torch.gather(mask, 1, order[:, :k]).unsqueeze(-1)
            pruned = pruned * (1.0 - torch.gather(mask, 1, order[:, k:])).unsqueeze(-1)
        return PrunedTokens(kept, kept_positions, pruned, pruned_positions, logits, class_logits)

    def _rank(self, scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The token order (first k kept) and, in training, the straight-through mask of the sampler."""
        if not self.training:
            return _descending_order(scores), None
        if self.sampler == "gumbel":
            return gumbel_soft_topk(scores, k, self.tau)
        if self.sampler == "gaussian":
            return gaussian_perturbed_topk(scores, k, self.sigma, self.num_samples)
        soft = (scores / self.tau).softmax(dim=-1)
        order = _descending_order(scores)
        return order, _indicator(order, k, soft) - soft.detach() + soft


class RandomTokenPruning(nn.Module):
    """The ablation of STP: keep ``keep_count(N, keep_ratio)`` tokens chosen uniformly at random.

    A fresh draw at every training step; in eval mode a draw from a generator seeded with ``seed`` at
    every call, so predictions are reproducible and overlapping sliding-window tiles agree.

    Args:
        keep_ratio: fraction of the remaining tokens kept, in (0, 1].
        seed: seed of the inference-time draw.
    """

    def __init__(self, keep_ratio: float, seed: int = 0) -> None:
        super().__init__()
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"keep ratio must be in (0, 1], got {keep_ratio}.")
        self.keep_ratio = keep_ratio
        self.seed = seed

    def forward(self, x: torch.Tensor, positions: torch.Tensor, priority: torch.Tensor | None = None) -> PrunedTokens:
        """(B, N, D), (B, N) -> kept and pruned tokens with their original positions (no logits; no priority)."""
        return PrunedTokens(*_split(x, positions, _descending_order(self._draw(x)),
                                    keep_count(x.shape[1], self.keep_ratio)))

    def _draw(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N) uniform noise: fresh in training, from a generator seeded with ``seed`` in eval mode."""
        generator = None
        if not self.training and x.device.type != "meta":  # a meta tensor (FLOP counting) has no values to draw
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
        return torch.rand(x.shape[:2], device=x.device, generator=generator)


class PriorityTokenPruning(RandomTokenPruning):
    """Keep the ``keep_count(N, keep_ratio)`` tokens that a given per-token priority ranks first.

    With the foreground voxels each token holds as the priority this is the oracle, the label-reading bound
    of STP; with ``spread_priority`` it is the evenly spaced subset of the grid, the no-learning baseline.
    Tokens of equal priority (all-background ones for the oracle) are ordered by ``RandomTokenPruning``'s draw.

    Args:
        keep_ratio: fraction of the remaining tokens kept, in (0, 1].
        seed: seed of the eval-mode tie-breaking draw.
    """

    def forward(self, x: torch.Tensor, positions: torch.Tensor, priority: torch.Tensor | None = None) -> PrunedTokens:
        """(B, N, D), (B, N), (B, N) whole-number priorities -> kept and pruned tokens (no logits)."""
        if priority is None:
            raise ValueError("PriorityTokenPruning ranks tokens by a per-token priority; none was given.")
        # A tie-break in [0, 1) never outranks a whole step of priority.
        ranked = priority.round().float() + self._draw(x)
        return PrunedTokens(*_split(x, positions, _descending_order(ranked), keep_count(x.shape[1], self.keep_ratio)))
