"""Optimiser recipes for the ViT trainers, usable by any trainer.

- ``adamw_param_groups``: timm's parameter groups, without weight decay on norms, biases and the
  embeddings a network lists in ``no_weight_decay()``, optionally with layer-wise lr decay.
- ``WarmupPolyLRScheduler`` (our recipe, as Primus) and ``WarmupCosineLRScheduler`` (the SCD
  authors' recipe): a linear warm-up, then poly or cosine decay to zero.

Every schedule multiplies its learning rate by a group's ``lr_scale`` (layer-wise decay, the search
masks), so whatever builds the groups and whatever schedules them stay independent.
"""

from __future__ import annotations

import math

import torch
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["WarmupCosineLRScheduler", "WarmupPolyLRScheduler", "adamw_param_groups"]


def adamw_param_groups(network: torch.nn.Module, weight_decay: float, layer_decay: float | None = None) -> list[dict]:
    """Parameter groups for AdamW: weight decay on matrices only, and optional layer-wise lr decay.

    Args:
        network: the bare network (not DDP- or compile-wrapped).
        weight_decay: decay of the weight matrices; 1-D parameters and the names in the network's
            ``no_weight_decay()`` get none.
        layer_decay: None for one learning rate everywhere. Otherwise the layers of the network's
            timm ``group_matcher`` (embeddings, blocks, then everything else) get ``lr_scale``
            ``layer_decay ** (last - layer)``: the head keeps the full rate and each earlier layer
            gets ``layer_decay`` times the next one's (BEiT; the SCD authors use 0.75).
    """
    no_decay = sorted(network.no_weight_decay()) if hasattr(network, "no_weight_decay") else []
    if layer_decay is None:
        return param_groups_weight_decay(network, weight_decay, no_decay)
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}.")
    if not hasattr(network, "group_matcher"):
        raise ValueError(
            f"layer-wise lr decay needs the network's layers, but {type(network).__name__} has no timm-style "
            "group_matcher(); give it one or set layer_decay=None."
        )
    return param_groups_layer_decay(network, weight_decay, no_decay, layer_decay=layer_decay)


class WarmupPolyLRScheduler(LRScheduler):
    """Linear warm-up over ``warmup_epochs``, then poly decay (exponent 0.9) to zero at ``num_epochs``.

    A parameter group with an ``lr_scale`` entry gets that multiple of the schedule. Like nnU-Net's
    schedulers it is stateless in the epoch: ``step(epoch)`` sets the learning rate of that epoch,
    so a run resumed with ``--c`` continues on the exact same schedule.

    Args:
        optimizer: the optimiser whose groups are updated.
        initial_lr: peak learning rate, reached at the end of warm-up.
        num_epochs: total number of epochs.
        warmup_epochs: epochs of linear increase, in ``[0, num_epochs)``.
        exponent: poly exponent.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        initial_lr: float,
        num_epochs: int,
        warmup_epochs: int,
        exponent: float = 0.9,
    ) -> None:
        if not 0 <= warmup_epochs < num_epochs:
            raise ValueError(f"warmup_epochs must be in [0, num_epochs={num_epochs}), got {warmup_epochs}.")
        self.initial_lr = initial_lr
        self.num_epochs = num_epochs
        self.warmup_epochs = warmup_epochs
        self.exponent = exponent
        self.ctr = 0
        super().__init__(optimizer, -1)

    def decay(self, progress: float) -> float:
        """The factor on ``initial_lr`` after warm-up, ``progress`` going from 0 to 1."""
        return max(0.0, 1.0 - progress) ** self.exponent

    def lr_at(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return self.initial_lr * (epoch + 1) / self.warmup_epochs
        return self.initial_lr * self.decay((epoch - self.warmup_epochs) / (self.num_epochs - self.warmup_epochs))

    def step(self, current_step: int | None = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = self.lr_at(current_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)


class WarmupCosineLRScheduler(WarmupPolyLRScheduler):
    """Linear warm-up over ``warmup_epochs``, then half a cosine to zero at ``num_epochs`` (the SCD authors'
    schedule). Same arguments and ``lr_scale`` handling as :class:`WarmupPolyLRScheduler`, without the exponent."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, initial_lr: float, num_epochs: int, warmup_epochs: int
    ) -> None:
        super().__init__(optimizer, initial_lr, num_epochs, warmup_epochs)

    def decay(self, progress: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
