"""Foreground guidance for the token scorer, and the enrichment that measures token selection.

The task loss reaches STP's scorer only through the straight-through mask, a signal too weak and
too noisy to rank tokens (gradients of about 1e-12, uncorrelated with a token's real effect on the
loss). Foreground guidance, an extension beyond the paper, gives the scorer a direct target: each
scored token should predict whether its cell of the patch holds any foreground voxel. The scorer's
logit is then the log-odds of that, which is also what the top-k ranks by.

Enrichment measures the result: P(token holds foreground | kept) / P(token holds foreground) over
the whole token grid. Random pruning gives 1; keeping only foreground tokens gives up to
1 / (fraction kept). Per class (P(token holds class c | kept) / P(token holds class c)) it shows
whether small organs keep their tokens, which the foreground figure hides behind the large ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["GUIDANCE_TARGETS", "class_presence", "enrichment", "enrichment_counts", "foreground_guidance_loss",
           "guidance_target", "token_foreground", "token_voxel_counts"]

# What the scorer learns to predict per token: "foreground", it holds any foreground voxel; "boundary", it holds
# foreground and background both (an organ's surface, 1) above a foreground interior (0.5) above background (0).
GUIDANCE_TARGETS = ("foreground", "boundary")


def token_voxel_counts(voxels: torch.Tensor, token_size: Sequence[int]) -> torch.Tensor:
    """How many true voxels each token cell holds: (B, *S) bool -> (B, N) float, in the tokens' C order."""
    ndim = len(token_size)
    if voxels.ndim != ndim + 1:
        raise ValueError(f"expected a (B, *S) mask with {ndim} spatial axes, got shape {tuple(voxels.shape)}.")
    pool = F.avg_pool3d if ndim == 3 else F.avg_pool2d
    cells = pool(voxels[:, None].float(), kernel_size=tuple(token_size), stride=tuple(token_size))
    return cells.flatten(1) * float(torch.tensor(token_size).prod())


def token_foreground(voxels: torch.Tensor, token_size: Sequence[int]) -> torch.Tensor:
    """Which token cells hold a true voxel: (B, *S) bool -> (B, N) bool, in the tokens' C order."""
    return token_voxel_counts(voxels, token_size) > 0


def class_presence(classes: torch.Tensor, token_size: Sequence[int]) -> torch.Tensor:
    """Which token cells hold a voxel of each class: (B, C, *S) bool -> (B, N, C) bool, in the tokens' C order.

    The class quotas' target, and what per-class enrichment counts. Classes may overlap (nnU-Net regions).
    """
    batch, num_classes = classes.shape[:2]
    cells = token_foreground(classes.flatten(0, 1), token_size)
    return cells.reshape(batch, num_classes, -1).transpose(1, 2)


def guidance_target(foreground: torch.Tensor, token_size: Sequence[int], kind: str = "foreground",
                    valid: torch.Tensor | None = None) -> torch.Tensor:
    """The scorer's target per token: (B, *S) bool foreground voxels -> (B, N) float in [0, 1].

    Args:
        foreground: (B, *S) bool, voxels of any foreground class.
        token_size: voxels per token along each axis.
        kind: one of ``GUIDANCE_TARGETS``.
        valid: (B, *S) bool, annotated voxels (None: all); "boundary" counts background among them only.
    """
    if kind not in GUIDANCE_TARGETS:
        raise ValueError(f"guidance target must be one of {GUIDANCE_TARGETS}, got {kind!r}.")
    fg_voxels = token_voxel_counts(foreground, token_size)
    if kind == "foreground":
        return (fg_voxels > 0).float()
    annotated = token_voxel_counts(valid if valid is not None else torch.ones_like(foreground), token_size)
    # Whole voxels: pooled counts are exact up to float rounding.
    holds_fg, holds_bg = fg_voxels > 0.5, (annotated - fg_voxels) > 0.5
    return torch.where(holds_fg & holds_bg, 1.0, torch.where(holds_fg, 0.5, 0.0))


def foreground_guidance_loss(
    logits: Sequence[torch.Tensor],
    positions: Sequence[torch.Tensor],
    foreground: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary cross-entropy of each stage's scorer logits against the target of the tokens it scored.

    Args:
        logits: per stage, (B, N_s) scorer logits, or (B, N_s, C) per-class presence logits.
        positions: per stage, (B, N_s) grid positions of the scored tokens.
        foreground: (B, N), the target: bool (the token holds foreground, ``token_foreground``) or float in
            [0, 1] (``guidance_target``); (B, N, C) with per-class logits (``class_presence``).
        valid: (B, N) bool, the token holds any annotated voxel; others (all ignore label) do not count.

    Returns the mean over stages of the mean over counted tokens (and classes), a scalar (zero without stages).
    """
    if not logits:
        return foreground.new_zeros((), dtype=torch.float32)
    losses = []
    for stage_logits, stage_positions in zip(logits, positions, strict=True):
        target = _gather(foreground, stage_positions).to(stage_logits.dtype)
        weight = None
        if valid is not None:
            weight = _gather(valid, stage_positions).to(stage_logits.dtype)
            weight = weight.unsqueeze(-1).expand_as(stage_logits) if stage_logits.ndim == 3 else weight
        loss = F.binary_cross_entropy_with_logits(stage_logits, target, weight=weight, reduction="sum")
        losses.append(loss / (stage_logits.numel() if weight is None else weight.sum().clamp_min(1.0)))
    return torch.stack(losses).mean()


def _gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, N) or (B, N, C) values at (B, K) token positions -> (B, K) or (B, K, C)."""
    if values.ndim == 2:
        return torch.gather(values, 1, index)
    return torch.gather(values, 1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))


def enrichment_counts(kept: Sequence[torch.Tensor], foreground: torch.Tensor) -> torch.Tensor:
    """Counts from which enrichment is pooled over batches: (S, 4) float64, or (S, C, 4) per class.

    Columns: kept tokens that hold foreground (the class), kept tokens, grid tokens that hold it, grid
    tokens. Enrichment is ``(c[..., 0] / c[..., 1]) / (c[..., 2] / c[..., 3])`` of the summed counts.

    Args:
        kept: per stage, (B, K_s) grid positions kept (``SCDNet.kept_indices``).
        foreground: (B, N) bool (``token_foreground``), or (B, N, C) bool per class (``class_presence``).
    """
    # Counted on the CPU: a (B, N) mask is small, and float64 (exact counts) does not exist on every device.
    holds = foreground.detach().cpu().to(torch.float64)
    per_class = holds.shape[2:]
    total = torch.full(per_class, float(holds.shape[0] * holds.shape[1]), dtype=torch.float64)
    rows = []
    for k in kept:
        rows.append(torch.stack([_gather(holds, k.cpu()).sum(dim=(0, 1)), torch.full_like(total, float(k.numel())),
                                 holds.sum(dim=(0, 1)), total], dim=-1))
    return torch.stack(rows) if rows else torch.zeros(0, *per_class, 4, dtype=torch.float64)


def enrichment(counts: torch.Tensor) -> list:
    """Enrichment from counts summed over batches: (S, 4) -> per stage, (S, C, 4) -> per stage, per class.

    nan where no token held foreground (the class).
    """
    kept_rate = counts[..., 0] / counts[..., 1].clamp_min(1)
    base_rate = counts[..., 2] / counts[..., 3].clamp_min(1)
    return torch.where(base_rate > 0, kept_rate / base_rate.clamp_min(1e-300), torch.nan).tolist()
