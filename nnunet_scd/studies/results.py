"""A study's results file: one JSON record per finished run, committed under docs/, the table's only source.

A record holds what nnU-Net measured for one (arm, seed): the final validation Dice per organ from
``validation/summary.json``, the validation pseudo-Dice curve from the training log, the wall time, and
where and how it ran (device, versions, command). Runs of one study can be recorded over several sittings
and machines; a rerun skips every (arm, seed) the file already holds for the same setting.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nnunet_scd.atomic import write_text_atomic

__all__ = ["ResultsFileError", "append_record", "load_records", "record_key"]


class ResultsFileError(ValueError):
    """The results file is not a study results file; the message names it and the bad line."""


def record_key(record: dict[str, Any]) -> tuple[str, str, int, int]:
    """What makes two records the same run: the setting they ran in, the arm, the fold and the seed."""
    return record["setting"], record["arm"], int(record["fold"]), int(record["seed"])


def load_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record of a results file in file order (none if it does not exist yet)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            record_key(record)
        except (ValueError, KeyError, TypeError) as error:
            raise ResultsFileError(f"{path}, line {number}: not a study record ({error}); fix or remove that line, "
                                   "or pass another --results file.") from None
        records.append(record)
    return records


def append_record(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Add one run to the results file, replacing an earlier record of the same run; the file is rewritten
    atomically, so an interrupted write leaves the previous file whole."""
    key = record_key(record)
    kept: Iterable[dict[str, Any]] = (r for r in load_records(path) if record_key(r) != key)
    lines = [json.dumps(r, sort_keys=True) for r in [*kept, record]]
    write_text_atomic("\n".join(lines) + "\n", Path(path))
