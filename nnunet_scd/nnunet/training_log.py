"""What nnU-Net's training log says, read back: the seconds each epoch took, and where they went.

nnU-Net writes ``Epoch time: <seconds> s`` once per epoch to ``training_log_*.txt`` and to the
console; our trainers add an "Epoch breakdown" line (``epoch_timing``). The demo reads them live
(progress bar) and from the files (timing table).
"""

from __future__ import annotations

import re
from pathlib import Path

from nnunet_scd.nnunet.epoch_timing import parse_epoch_breakdowns

__all__ = ["EPOCH_TIME", "epoch_breakdowns", "epoch_times"]

EPOCH_TIME = re.compile(r"Epoch time: ([0-9.]+) s")


def _log_texts(fold_dir: Path) -> list[str]:
    """Every ``training_log_*.txt`` of a fold, oldest first (a resumed run writes several logs)."""
    return [f.read_text(errors="replace") for f in sorted(Path(fold_dir).glob("training_log_*.txt"))]


def epoch_times(fold_dir: Path) -> list[float]:
    """Seconds per epoch from every training log of a fold."""
    return [float(m.group(1)) for text in _log_texts(fold_dir) for m in EPOCH_TIME.finditer(text)]


def epoch_breakdowns(fold_dir: Path) -> list[dict[str, float]]:
    """Every epoch's breakdown ({part: seconds}) from every training log of a fold."""
    return [epoch for text in _log_texts(fold_dir) for epoch in parse_epoch_breakdowns(text)]
