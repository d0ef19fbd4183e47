"""Where an nnU-Net epoch goes: network steps, waiting for batches, validation, end of epoch.

nnU-Net logs one "Epoch time" per epoch, which cannot tell a faster network from a slower data
pipeline. ``EpochTimeBreakdown`` adds one log line per epoch that splits it, so that a speed-up of the
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

__all__ = ["EPOCH_BREAKDOWN", "EpochTimeBreakdown", "parse_epoch_breakdowns"]

_PARTS = ("network steps", "waiting for batches", "validation", "end of epoch")
EPOCH_BREAKDOWN = re.compile(
    r"Epoch breakdown: network steps ([\d.]+) s, waiting for batches ([\d.]+) s, validation ([\d.]+) s, "
    r"end of epoch ([\d.]+) s"
)


def parse_epoch_breakdowns(log_text: str) -> list[dict[str, float]]:
    """Every epoch's breakdown in an nnU-Net training log, as {part: seconds}."""
    return [dict(zip(_PARTS, map(float, m.groups()), strict=True)) for m in EPOCH_BREAKDOWN.finditer(log_text)]


class _TimedLoader:
    """Delegates to nnU-Net's data loader and adds the time each ``next()`` waited to ``waited``."""

    def __init__(self, loader: Any):
        self.loader = loader
        self.waited = 0.0

    def __iter__(self) -> _TimedLoader:
        return self

    def __next__(self) -> Any:
        start = time.perf_counter()
        try:
            return next(self.loader)
        finally:
            self.waited += time.perf_counter() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


class EpochTimeBreakdown:
    """Mixin for an ``nnUNetTrainer``: one "Epoch breakdown" log line per epoch (see the module docstring)."""

    def on_train_start(self) -> None:
        super().on_train_start()
        # Wrapped only now, after every get_dataloaders() override has run: a mixin that reconfigures the
        # loaders there (SeededTraining restarts the workers with seeds) must see nnU-Net's own objects.
        self.dataloader_train = _TimedLoader(self.dataloader_train)

    def on_train_end(self) -> None:
        # nnU-Net shuts its workers down only for a loader of its own types, so hand back the real one.
        if isinstance(self.dataloader_train, _TimedLoader):
            self.dataloader_train = self.dataloader_train.loader
        super().on_train_end()

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if isinstance(self.dataloader_train, _TimedLoader):
            self.dataloader_train.waited = 0.0
        self._train_started = time.perf_counter()

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        self._train_seconds = time.perf_counter() - self._train_started
        super().on_train_epoch_end(train_outputs)

    def on_validation_epoch_start(self) -> None:
        self._validation_started = time.perf_counter()
        super().on_validation_epoch_start()

    def on_validation_epoch_end(self, val_outputs: list[dict]) -> None:
        super().on_validation_epoch_end(val_outputs)
        self._validation_seconds = time.perf_counter() - self._validation_started

    def on_epoch_end(self) -> None:
        start = time.perf_counter()
        super().on_epoch_end()
        end_seconds = time.perf_counter() - start
        waited = self.dataloader_train.waited if isinstance(self.dataloader_train, _TimedLoader) else 0.0
        self.print_to_log_file(
            f"Epoch breakdown: network steps {self._train_seconds - waited:.2f} s, waiting for batches "
            f"{waited:.2f} s, validation {self._validation_seconds:.2f} s, end of epoch {end_seconds:.2f} s"
        )
