"""What nnU-Net's training log says, read back: the seconds each epoch took, and where they went.

nnU-Net writes ``Epoch time: <seconds> s`` once per epoch to ``training_log_*.txt`` and to the
console; our trainers add an "Epoch breakdown" line (``epoch_timing``). The demo reads them live
(progress bar) and from the files (timing table).
"""

from __future__ import annotations

import re
from pathlib import Path

from nnunet_scd.trainers.epoch_timing import parse_epoch_breakdowns

__all__ = ["EPOCH_TIME", "PSEUDO_DICE", "epoch_breakdowns", "epoch_times", "last_enrichment", "pseudo_dice",
           "pseudo_dice_values"]

EPOCH_TIME = re.compile(r"Epoch time: ([0-9.]+) s")
PSEUDO_DICE = re.compile(r"Pseudo dice \[(.*)\]")
# The token-selection lines of ``ViTTrainer.on_validation_epoch_end``.
_ENRICHMENT = re.compile(r"STP foreground enrichment of kept tokens \(.*?\), per stage: (.*)")
_CLASS_ENRICHMENT = re.compile(r"STP per-class enrichment of kept tokens \(.*?\), per stage: (.*)")
_NUMBER = re.compile(r"(?:np\.float\d+\()?([-+0-9.eE]+|nan)\)?")


def pseudo_dice_values(match: re.Match) -> list[float]:
    """The per-class values of one ``Pseudo dice [...]`` log line (numpy scalars print as ``np.float32(x)``)."""
    return [float(m.group(1)) for m in _NUMBER.finditer(match.group(1))]


def _log_texts(fold_dir: Path) -> list[str]:
    """Every ``training_log_*.txt`` of a fold, oldest first (a resumed run writes several logs)."""
    return [f.read_text(errors="replace") for f in sorted(Path(fold_dir).glob("training_log_*.txt"))]


def epoch_times(fold_dir: Path) -> list[float]:
    """Seconds per epoch from every training log of a fold."""
    return [float(m.group(1)) for text in _log_texts(fold_dir) for m in EPOCH_TIME.finditer(text)]


def pseudo_dice(fold_dir: Path) -> list[list[float]]:
    """Per epoch, nnU-Net's pseudo Dice of each foreground class on that epoch's validation batches."""
    return [pseudo_dice_values(m) for text in _log_texts(fold_dir) for m in PSEUDO_DICE.finditer(text)]


def epoch_breakdowns(fold_dir: Path) -> list[dict[str, float]]:
    """Every epoch's breakdown ({part: seconds}) from every training log of a fold."""
    return [epoch for text in _log_texts(fold_dir) for epoch in parse_epoch_breakdowns(text)]


def last_enrichment(fold_dir: Path) -> tuple[list[float], list[dict[str, float]]] | None:
    """The last validation's token-selection figures: foreground enrichment per stage, and per stage each class's
    enrichment by name (nan where the validation batches lacked the class). None: the fold logged none (a dense
    network, or a trainer from before the figures were logged)."""
    texts = _log_texts(fold_dir)
    overall = [m.group(1) for text in texts for m in _ENRICHMENT.finditer(text)]
    per_class = [m.group(1) for text in texts for m in _CLASS_ENRICHMENT.finditer(text)]
    if not overall:
        return None
    stages = [float(v) for v in overall[-1].strip().split(", ")]
    classes = []
    if per_class:
        for stage in per_class[-1].strip().split("; "):
            pairs = (entry.rsplit(" ", 1) for entry in stage.split(", "))
            classes.append({name: float(value) for name, value in pairs})
    return stages, classes
