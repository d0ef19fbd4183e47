"""Reading nnU-Net checkpoints safely, with an error that names the file, and the fallback ``--c`` uses.

Every load here is ``torch.load(weights_only=True)``: a checkpoint is a pickle, and a full unpickle
runs whatever code the file names, so a file from elsewhere could run anything. The allowlist adds
to torch's own (tensors, containers, ``torch.device``) only what nnU-Net's ``save_checkpoint``
stores besides: the NumPy scalars in its training log. nnU-Net's own training resume
(``nnUNetTrainer.load_checkpoint``) and predictor still unpickle fully; that is nnU-Net's
behaviour, and our check in front of them refuses a file that names other code before they see it.

torch's own message for a truncated file ("PytorchStreamReader failed reading zip archive: failed
finding central directory") does not say which file, and nnU-Net then stops. Our trainers write
checkpoints atomically, but a file copied half-way, a full disk before that fix or a bit flip
still leave unreadable ones behind.
"""

from __future__ import annotations

import functools
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CorruptCheckpointError",
    "UnsafeCheckpointError",
    "check_checkpoint_readable",
    "fallback_checkpoints",
    "read_checkpoint",
]

# What torch.load raises on a truncated, empty or garbled file.
_READ_ERRORS = (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError)
# nnU-Net's order when it continues a training (run_training.maybe_load_checkpoint).
_CONTINUE_ORDER = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


class CorruptCheckpointError(ValueError):
    """A checkpoint file that cannot be read, or must not be (``UnsafeCheckpointError``); the message names it."""


class UnsafeCheckpointError(CorruptCheckpointError):
    """A checkpoint whose pickle names code outside tensors and nnU-Net's checkpoint contents; it is not loaded."""


@functools.cache
def _allow_nnunet_contents() -> None:
    # nnU-Net logs np.mean / np.nanmean results (NumPy scalars) and keeps the best EMA Dice as one. A scalar
    # pickles as numpy's `scalar` function with its dtype; the objects are taken from NumPy itself, so their
    # names are those of the installed NumPy (numpy._core in 2.x, numpy.core in 1.x).
    scalar = np.float64(0).__reduce__()[0]
    dtypes = [type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_)]
    torch.serialization.add_safe_globals([scalar, np.dtype, *dtypes])


def _describe(path: str | os.PathLike, error: BaseException) -> CorruptCheckpointError:
    text = str(error).strip()
    if isinstance(error, pickle.UnpicklingError) and "weights only load failed" in text.lower():
        named = next((line.strip() for line in text.splitlines() if "GLOBAL" in line), "")
        return UnsafeCheckpointError(
            f"{path} holds pickled Python objects besides tensors and nnU-Net's checkpoint contents"
            f"{f' ({named[:160]})' if named else ''}; refusing to load it, because unpickling them can run code. "
            "Use a checkpoint written by nnU-Net's or nnunet-scd's trainers."
        )
    reason = text.splitlines()[0] if text else type(error).__name__
    return CorruptCheckpointError(f"{path} is truncated or corrupt and cannot be read ({reason[:120]})")


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` of ``path``; CorruptCheckpointError (or UnsafeCheckpointError) naming it."""
    _allow_nnunet_contents()
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except _READ_ERRORS as error:
        raise _describe(path, error) from None


def check_checkpoint_readable(path: str | os.PathLike) -> None:
    """CorruptCheckpointError unless ``path`` opens as a torch checkpoint with safe contents only.

    Memory-mapped, so no tensor is read: a truncated zip file has lost its central directory at the
    end and fails here at once, without the cost of loading a ViT-B checkpoint twice. The pickle
    itself is read with ``weights_only``, so a file that names other code fails here too, before
    nnU-Net's full unpickle would run it.
    """
    _allow_nnunet_contents()
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
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
