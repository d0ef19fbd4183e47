"""Reading nnU-Net checkpoints with an error that names the file, and the fallback ``--c`` uses.

torch's own message for a truncated file ("PytorchStreamReader failed reading zip archive: failed
finding central directory") does not say which file, and nnU-Net then stops. Our trainers write
checkpoints atomically, but a file copied half-way, a full disk before that fix or a bit flip
still leave unreadable ones behind.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["CorruptCheckpointError", "check_checkpoint_readable", "fallback_checkpoints", "read_checkpoint"]

# What torch.load raises on a truncated, empty or garbled file.
_READ_ERRORS = (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError)
# nnU-Net's order when it continues a training (run_training.maybe_load_checkpoint).
_CONTINUE_ORDER = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


class CorruptCheckpointError(ValueError):
    """A checkpoint file that torch cannot read; the message names the file."""


def _describe(path: str | os.PathLike, error: BaseException) -> CorruptCheckpointError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return CorruptCheckpointError(f"{path} is truncated or corrupt and cannot be read ({reason[:120]})")


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", weights_only: bool = False) -> Any:
    """``torch.load`` of ``path``, or a CorruptCheckpointError naming the file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except FileNotFoundError:
        raise
    except _READ_ERRORS as error:
        raise _describe(path, error) from None


def check_checkpoint_readable(path: str | os.PathLike) -> None:
    """CorruptCheckpointError unless ``path`` opens as a torch checkpoint.

    Memory-mapped, so no tensor is read: a truncated zip file has lost its central directory at the
    end and fails here at once, without the cost of loading a ViT-B checkpoint twice.
    """
    try:
        torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except FileNotFoundError:
        raise
    except _READ_ERRORS as error:
        raise _describe(path, error) from None


def fallback_checkpoints(path: str | os.PathLike) -> list[Path]:
    """The existing checkpoints ``--c`` may continue from instead of ``path``, in nnU-Net's order.

    Only ``checkpoint_latest.pth`` falls back (to ``checkpoint_best.pth``): a final checkpoint is
    also what validation and prediction read, and replacing it by an earlier state would change
    their results without saying so.
    """
    path = Path(path)
    if path.name != "checkpoint_latest.pth":
        return []
    later = _CONTINUE_ORDER[_CONTINUE_ORDER.index(path.name) + 1:]
    return [path.with_name(name) for name in later if path.with_name(name).is_file()]
