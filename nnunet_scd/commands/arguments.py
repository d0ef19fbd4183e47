"""Argument checks shared by the subcommands: a bad value is refused with one line, before any work.

Each check is an argparse ``type`` (or ``action``), so argparse prints ``usage`` and one ``error:``
line that names the option, and exits with status 2. ``check_writable`` is also called directly by
a command whose output path is only used in some modes.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["UniqueValues", "check_writable", "float_at_least", "int_at_least", "plans_identifier", "writable_file"]


def int_at_least(minimum: int, why: str = "", maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum`` (and at most ``maximum``); ``why`` is added to the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}{why}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}{why}")
        return value

    return parse


def float_at_least(minimum: float, why: str = "") -> Callable[[str], float]:
    """An argparse type: a finite number of at least ``minimum``; ``why`` is added to the error."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not minimum <= value < math.inf:
            raise argparse.ArgumentTypeError(f"must be a number of at least {minimum:g}, got {text}{why}")
        return value

    return parse


def plans_identifier(text: str) -> str:
    """An argparse type: a plans identifier, which nnU-Net turns into ``<preprocessed>/<dataset>/<id>.json``.

    A separator or ``..`` would put that file (and the folders named after it) outside the dataset's folder.
    """
    if not text or text in (".", "..") or "/" in text or "\\" in text or "\0" in text or ".." in text:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a plans identifier: use a plain name without '/', '\\' or '..', such as nnUNetPlans_SCD"
        )
    return text


def check_writable(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be written as a file (missing folders are created by the writers), or None."""
    try:
        return _why_not_writable(Path(path))
    except OSError as error:  # a name the file system refuses (too long, ...)
        return f"cannot use {str(path)[:80]!r}: {error.strerror or error}"


def _why_not_writable(path: Path) -> str | None:
    if path.is_dir():
        return f"{path} is a folder; give a file name"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path} exists and is not writable"
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"cannot create {path}: {folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot create {path}: the folder {folder} is not writable"
    return None


def writable_file(text: str) -> Path:
    """An argparse type: a file path that can be written, checked before the work whose result goes there."""
    problem = check_writable(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{problem}; choose another path")
    return Path(text)


class UniqueValues(argparse.Action):
    """``nargs='+'`` values that must not repeat: ``-f 0 0`` would count one fold twice and report n=2."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Sequence[object] | None, option_string: str | None = None) -> None:
        values = list(values or [])
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            parser.error(f"argument {'/'.join(self.option_strings)}: {', '.join(repeated)} given more than once; "
                         "give each value once")
        setattr(namespace, self.dest, values)
