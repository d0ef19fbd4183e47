"""Token geometry for a ViT planner: a token budget from the ViT size and memory.

nnU-Net's planner sizes a patch for a U-Net's feature maps. A ViT's encoder instead costs per
token: its activations grow linearly with the token count and its attention FLOPs
quadratically. So the SCD planner keeps nnU-Net's patch as the upper bound on voxels (our
UNETR decoder is a full-resolution CNN narrower than nnU-Net's U-Net) and adds a token budget:

- attention: at most ``(2 + mlp_ratio) * embed_dim`` tokens, where one block's attention
  matmuls (4 N D FLOPs per token) cost as much as its linear layers ((8 + 4 r) D^2 per token);
  beyond that the quadratic term dominates the encoder.
- memory: the encoder's training activations at the minimum batch size fit in a share of the
  GPU memory target, at ``(18 + 4 * mlp_ratio) * embed_dim`` bytes per token per block (fp16
  mixed precision with memory-efficient attention; Korthikanti et al. 2022, "Reducing
  Activation Recomputation in Large Transformer Models", without the s^2 attention term).

Pure Python, no nnU-Net import, so the arithmetic is testable on its own. Axes are in nnU-Net's
order (z first after transposition).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from nnunet_scd.nnunet.token_config import TokenConfig, choose_token_size, round_up_to_multiple

__all__ = [
    "ENCODER_MEMORY_SHARE",
    "MIN_BATCH_SIZE",
    "SCD_PLANS",
    "TokenBudget",
    "memory_batch_size",
    "plan_token_geometry",
    "token_budget",
]

# Half the memory target goes to the encoder's activations; the rest to the decoder (bounded by
# nnU-Net's CNN plan), weights, optimizer state and the allocator's slack.
ENCODER_MEMORY_SHARE = 0.5
MIN_BATCH_SIZE = 2  # nnU-Net's UNet_min_batch_size
SCD_PLANS = "nnUNetPlans_SCD"  # the plans identifier the SCD planner writes by default
_GIB = 2**30


def _activation_bytes_per_token(embed_dim: int, depth: int, mlp_ratio: float) -> float:
    """Training activations of the encoder per token and sample (see the module docstring)."""
    return depth * (18 + 4 * mlp_ratio) * embed_dim


@dataclass(frozen=True)
class TokenBudget:
    """The most tokens per patch, and which limit set it (``"attention"`` or ``"memory"``)."""

    max_tokens: int
    bound: str
    attention_tokens: int
    memory_tokens: int


def token_budget(
    embed_dim: int, depth: int, mlp_ratio: float = 4.0, gpu_memory_gb: float = 8.0
) -> TokenBudget:
    """Token budget of a ViT encoder: the smaller of the attention and memory limits.

    Args:
        embed_dim, depth, mlp_ratio: the encoder (a row of ``geometry.VIT_SIZES``).
        gpu_memory_gb: the memory target in GiB, as nnU-Net's ``-gpu_memory_target``.
    """
    if embed_dim < 1 or depth < 1 or mlp_ratio <= 0 or not gpu_memory_gb > 0:
        raise ValueError(
            f"a token budget needs a positive ViT size and memory, got embed_dim {embed_dim}, depth {depth}, "
            f"mlp_ratio {mlp_ratio}, gpu_memory_gb {gpu_memory_gb}"
        )
    attention = int((2 + mlp_ratio) * embed_dim)
    per_sample = _activation_bytes_per_token(embed_dim, depth, mlp_ratio)
    memory = int(ENCODER_MEMORY_SHARE * gpu_memory_gb * _GIB / (MIN_BATCH_SIZE * per_sample))
    if memory < 1:
        raise ValueError(f"{gpu_memory_gb} GiB cannot hold one token of this ViT at batch size {MIN_BATCH_SIZE}; "
                         "plan with a larger memory target or a smaller ViT size")
    return TokenBudget(min(attention, memory), "attention" if attention <= memory else "memory", attention, memory)


def memory_batch_size(
    num_tokens: int, planned_batch_size: int, embed_dim: int, depth: int, mlp_ratio: float = 4.0,
    gpu_memory_gb: float = 8.0,
) -> int:
    """nnU-Net's planned batch size, lowered (never below 2) until the encoder's activations fit."""
    per_sample = _activation_bytes_per_token(embed_dim, depth, mlp_ratio) * num_tokens
    fits = int(ENCODER_MEMORY_SHARE * gpu_memory_gb * _GIB // per_sample)
    return max(MIN_BATCH_SIZE, min(int(planned_batch_size), fits))


def plan_token_geometry(
    spacing: Sequence[float],
    median_shape: Sequence[float],
    cnn_patch_size: Sequence[int],
    max_tokens: int,
    base: int = 8,
) -> TokenConfig:
    """Token size from the spacing, then the largest patch within ``max_tokens`` tokens.

    The token size per axis follows the spacing (``choose_token_size`` without a cap, so thick
    slices keep their finer tokens). The patch starts from nnU-Net's CNN patch rounded up to a
    token multiple and, while it holds more than ``max_tokens`` tokens, loses one token along the
    axis that is largest relative to the median image, as nnU-Net's planner shrinks its patch.
    ``planned_patch_size`` of the result records the CNN patch.
    """
    if max_tokens < 1:
        raise ValueError(f"the token budget must be at least 1, got {max_tokens}")
    cnn_patch = tuple(int(p) for p in cnn_patch_size)
    token = choose_token_size(spacing, cnn_patch, base=base)
    patch = list(round_up_to_multiple(cnn_patch, token))
    median = [max(float(m), 1.0) for m in median_shape[-len(patch):]]
    while math.prod(p // t for p, t in zip(patch, token)) > max_tokens:
        shrinkable = [i for i in range(len(patch)) if patch[i] > token[i]]
        if not shrinkable:
            break  # one token per axis; only reachable with max_tokens < 1, refused above
        axis = max(shrinkable, key=lambda i: (patch[i] / median[i], patch[i] // token[i]))
        patch[axis] -= token[axis]
    return TokenConfig(token, tuple(patch), cnn_patch)
