"""Soft-topK Token Pruning (STP): a light token scorer and perturbed top-k samplers.

Training selects tokens with a perturbed top-k and lets gradients reach the scorer through a
straight-through mask: kept tokens are multiplied by the mask and pruned tokens by one minus it,
both of value one in the forward pass. Inference uses a deterministic top-k. Selection is always
by index, so later blocks really see fewer tokens.

The scorer and the sampler run in fp32 even under autocast: the straight-through gradients they
receive are small, and fp16 would flush them to zero. ``RandomTokenPruning`` is the ablation with
the same interface and no scorer; ``OracleTokenPruning`` the upper bound that reads the label.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_scd.model.tokens import gather_tokens

__all__ = [
    "SAMPLERS",
    "OracleTokenPruning",
    "PrunedTokens",
    "RandomTokenPruning",
    "SoftTopKPruning",
    "TokenScorer",
    "gaussian_perturbed_topk",
    "gumbel_soft_topk",
    "keep_count",
]

SAMPLERS = ("gumbel", "gaussian")


def keep_count(num_tokens: int, keep_ratio: float) -> int:
    """Tokens kept out of ``num_tokens`` at one stage: ``max(1, round(keep_ratio * num_tokens))``."""
    return max(1, round(keep_ratio * num_tokens))


class TokenScorer(nn.Module):
    """Scores tokens from their own features and a global summary of the set.

    LayerNorm -> Linear(D, D) -> GELU; the first half of the channels stays per token (local),
    the second half is averaged over the tokens (global) and broadcast back; then an MLP
    D -> D/2 -> D/4 -> 1 and a log-sigmoid.

    Args:
        dim: token width D.

    Shapes: (B, N, D) -> (B, N).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.local_dim = dim // 2
        self.in_proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
        self.head = nn.Sequential(
            nn.Linear(dim, dim // 2),
            nn.GELU(),
            nn.Linear(dim // 2, dim // 4),
            nn.GELU(),
            nn.Linear(dim // 4, 1),
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
        h = self.in_proj(x)
        local, global_ = h.split([self.local_dim, h.shape[-1] - self.local_dim], dim=-1)
        global_ = global_.mean(dim=1, keepdim=True).expand_as(global_)
        return self.head(torch.cat([local, global_], dim=-1)).squeeze(-1)

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


def _full_precision(device: torch.device):
    # autocast only exists for real devices; on 'meta' (FLOP counting) there is nothing to switch off.
    return torch.autocast(device.type, enabled=False) if device.type in ("cuda", "cpu") else nullcontext()


def _split(x: torch.Tensor, positions: torch.Tensor, order: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    keep, drop = order[:, :k], order[:, k:]
    return (gather_tokens(x, keep), torch.gather(positions, 1, keep),
            gather_tokens(x, drop), torch.gather(positions, 1, drop))


class SoftTopKPruning(nn.Module):
    """One STP stage: score the tokens that remain and keep ``keep_count(N, keep_ratio)``.

    Args:
        dim: token width D.
        keep_ratio: fraction of the remaining tokens kept, in (0, 1].
        sampler: "gumbel" (the paper) or "gaussian" (multi-sample perturbed top-k).
        tau: Gumbel softmax temperature.
        sigma: Gaussian noise scale.
        num_samples: Gaussian samples per step.
    """

    def __init__(
        self,
        dim: int,
        keep_ratio: float,
        sampler: str = "gumbel",
        tau: float = 1.0,
        sigma: float = 0.05,
        num_samples: int = 100,
    ) -> None:
        super().__init__()
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"keep ratio must be in (0, 1], got {keep_ratio}.")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}.")
        if tau <= 0 or sigma <= 0 or num_samples < 1:
            raise ValueError(f"need tau > 0, sigma > 0 and num_samples >= 1, got {tau}, {sigma}, {num_samples}.")
        self.keep_ratio = keep_ratio
        self.sampler = sampler
        self.tau = tau
        self.sigma = sigma
        self.num_samples = num_samples
        self.scorer = TokenScorer(dim)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> PrunedTokens:
        """(B, N, D), (B, N) -> kept and pruned tokens with their original positions, and the scorer's logits."""
        k = keep_count(x.shape[1], self.keep_ratio)
        with _full_precision(x.device):
            logits = self.scorer.logits(x.float())
            scores = F.logsigmoid(logits)
            if not self.training:
                order = _descending_order(scores)
            elif self.sampler == "gumbel":
                order, mask = gumbel_soft_topk(scores, k, self.tau)
            else:
                order, mask = gaussian_perturbed_topk(scores, k, self.sigma, self.num_samples)
        kept, kept_positions, pruned, pruned_positions = _split(x, positions, order, k)
        if self.training:
            # Forward values are exactly one; the backward pass carries the scorer's gradient.
            mask = mask.to(x.dtype)
            kept = kept * torch.gather(mask, 1, order[:, :k]).unsqueeze(-1)
            pruned = pruned * (1.0 - torch.gather(mask, 1, order[:, k:])).unsqueeze(-1)
        return PrunedTokens(kept, kept_positions, pruned, pruned_positions, logits)


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

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> PrunedTokens:
        """(B, N, D), (B, N) -> kept and pruned tokens with their original positions (no logits)."""
        generator = None
        if not self.training and x.device.type != "meta":  # a meta tensor (FLOP counting) has no values to draw
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
        noise = torch.rand(x.shape[:2], device=x.device, generator=generator)
        return PrunedTokens(*_split(x, positions, _descending_order(noise), keep_count(x.shape[1], self.keep_ratio)))


class OracleTokenPruning(nn.Module):
    """The label-reading bound of STP: keep the ``keep_count(N, keep_ratio)`` tokens with the most foreground.

    Tokens are ranked by how many foreground voxels of the ground truth their cell holds; tokens with
    equal counts (all-background ones, above all) are ordered by a random draw, fresh at every training
    step and seeded with ``seed`` in eval mode, as ``RandomTokenPruning`` draws. It reads the label, so it
    is an evaluation bound, never a method.

    Args:
        keep_ratio: fraction of the remaining tokens kept, in (0, 1].
        seed: seed of the eval-mode tie-breaking draw.
    """

    def __init__(self, keep_ratio: float, seed: int = 0) -> None:
        super().__init__()
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"keep ratio must be in (0, 1], got {keep_ratio}.")
        self.keep_ratio = keep_ratio
        self.seed = seed

    def forward(self, x: torch.Tensor, positions: torch.Tensor, foreground_voxels: torch.Tensor) -> PrunedTokens:
        """(B, N, D), (B, N), (B, N) foreground voxels per token -> kept and pruned tokens (no logits)."""
        generator = None
        if not self.training and x.device.type != "meta":
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
        # A tie-break in [0, 1) never outranks a whole voxel of foreground.
        tie_break = torch.rand(x.shape[:2], device=x.device, generator=generator)
        priority = foreground_voxels.round().to(tie_break.dtype) + tie_break
        return PrunedTokens(*_split(x, positions, _descending_order(priority), keep_count(x.shape[1], self.keep_ratio)))
