"""Where an nnU-Net epoch goes: network steps, waiting for batches, validation, end of epoch.

nnU-Net logs one "Epoch time" per epoch, which cannot tell a faster network from a slower data
pipeline. ``base.RecipeTrainer`` adds one log line per epoch that splits it, so that a speed-up of the
network can be told apart from time spent elsewhere:

- network steps: the training iterations minus the time spent waiting for their batches;
- waiting for batches: ``next()`` on nnU-Net's training data loader (augmentation not ready yet);
- validation: nnU-Net's pseudo-validation iterations, batches included;
- end of epoch: nnU-Net's logging, checkpoints and progress plot, which its "Epoch time" leaves out.
"""

from __future__ import annotations

import re
import time
from typing import Any

__all__ = ["EPOCH_BREAKDOWN", "TimedLoader", "format_epoch_breakdown", "parse_epoch_breakdowns"]

_PARTS = ("network steps", "waiting for batches", "validation", "end of epoch")
EPOCH_BREAKDOWN = re.compile(
    r"Epoch breakdown: network steps ([\d.]+) s, waiting for batches ([\d.]+) s, validation ([\d.]+) s, "
    r"end of epoch ([\d.]+) s"
)


def format_epoch_breakdown(network_steps: float, waiting: float, validation: float, end_of_epoch: float) -> str:
    """The log line of one epoch's breakdown, in seconds; ``parse_epoch_breakdowns`` reads it back."""
    return (f"Epoch breakdown: network steps {network_steps:.2f} s, waiting for batches {waiting:.2f} s, "
            f"validation {validation:.2f} s, end of epoch {end_of_epoch:.2f} s")


def parse_epoch_breakdowns(log_text: str) -> list[dict[str, float]]:
    """Every epoch's breakdown in an nnU-Net training log, as {part: seconds}."""
    return [dict(zip(_PARTS, map(float, m.groups()), strict=True)) for m in EPOCH_BREAKDOWN.finditer(log_text)]


class TimedLoader:
    """Delegates to nnU-Net's data loader and adds the time each ``next()`` waited to ``waited``."""

    def __init__(self, loader: Any):
        self.loader = loader
        self.waited = 0.0

    def __iter__(self) -> TimedLoader:
        return self

    def __next__(self) -> Any:
        start = time.perf_counter()
        try:
            return next(self.loader)
        finally:
            self.waited += time.perf_counter() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)
