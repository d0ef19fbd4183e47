"""Argument types shared by the subcommands: a bad value is refused by argparse with one line, before any work."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["float_at_least", "int_at_least"]


def int_at_least(minimum: int, why: str = "") -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``; ``why`` is added to the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}{why}")
        return value

    return parse


def float_at_least(minimum: float, why: str = "") -> Callable[[str], float]:
    """An argparse type: a finite number of at least ``minimum``; ``why`` is added to the error."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not minimum <= value < float("inf"):
            raise argparse.ArgumentTypeError(f"must be a number of at least {minimum:g}, got {text}{why}")
        return value

    return parse
