"""What nnU-Net's training log says, read back: the seconds each epoch took.

nnU-Net writes ``Epoch time: <seconds> s`` once per epoch to ``training_log_*.txt`` and to the
console; the demo reads it live (progress bar) and from the files (timing table).
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["EPOCH_TIME", "epoch_times"]

EPOCH_TIME = re.compile(r"Epoch time: ([0-9.]+) s")


def epoch_times(fold_dir: Path) -> list[float]:
    """Seconds per epoch from every ``training_log_*.txt`` of a fold (a resumed run writes several logs)."""
    times: list[float] = []
    for log_file in sorted(Path(fold_dir).glob("training_log_*.txt")):
        times += [float(m.group(1)) for m in EPOCH_TIME.finditer(log_file.read_text(errors="replace"))]
    return times
