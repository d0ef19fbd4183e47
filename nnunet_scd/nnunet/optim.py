"""Optimiser recipe for the ViT trainers: AdamW without decay on norms, biases and embeddings, and a
linear warm-up followed by nnU-Net's poly decay."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["WarmupPolyLRScheduler", "adamw_param_groups"]


def adamw_param_groups(network: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two parameter groups: weight-decayed matrices, and everything else without decay.

    No decay for 1-D parameters (biases, norm scales) and for the names the network lists in
    ``no_weight_decay()`` (position embeddings, mask and layer embeddings), as in ViT practice.
    """
    skip = set(network.no_weight_decay()) if hasattr(network, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in network.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or name in skip else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class WarmupPolyLRScheduler(LRScheduler):
    """Linear warm-up over ``warmup_epochs``, then poly decay (exponent 0.9) to zero at ``num_epochs``.

    A parameter group with an ``lr_scale`` entry gets that multiple of the schedule (the search
    masks use this). Like nnU-Net's schedulers it is stateless in the epoch: ``step(epoch)`` sets the learning rate
    of that epoch, so a run resumed with ``--c`` continues on the exact same schedule.

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

    def lr_at(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return self.initial_lr * (epoch + 1) / self.warmup_epochs
        progress = (epoch - self.warmup_epochs) / (self.num_epochs - self.warmup_epochs)
        return self.initial_lr * max(0.0, 1.0 - progress) ** self.exponent

    def step(self, current_step: int | None = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = self.lr_at(current_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
