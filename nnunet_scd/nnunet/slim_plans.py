"""The sliced-subnet record in nnU-Net plans: per-block widths, the network it was cut from, the weights.

``nnunet-scd slim`` writes a new plans identifier (e.g. ``nnUNetPlans_slim0p7``) into the dataset's
nnUNet_preprocessed folder. Its configuration carries, under ``scd_slim``:

- ``blocks``: per encoder block, the kept head widths (decreasing) and the MLP width;
- ``tokens``: the token schedule (``search.TokenSchedule``'s record) when the search had token
  masks, else null;
- ``network``: the SCDNet keywords of the search trainer (size, keep ratios, completion), so a
  slim trainer of another size or sparsity is refused instead of failing on shapes;
- ``budget``, ``search_trainer``, ``slim_trainer`` (the one the search trainer names, or None),
  ``source_plans``, and ``weights``: the folder (relative to the dataset's preprocessed folder)
  holding the sliced weights, one file per fold.

nnU-Net copies the plans into the results folder, so prediction rebuilds the same widths.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "SLIM_PLANS_KEY",
    "check_network_matches",
    "network_record",
    "plans_identifier",
    "slim_record",
    "sliced_weights_file",
]

SLIM_PLANS_KEY = "scd_slim"


def plans_identifier(source_plans: str, budget: float) -> str:
    """``nnUNetPlans`` at budget 0.7 -> ``nnUNetPlans_slim0p7``."""
    return f"{source_plans}_slim{format(budget, 'g').replace('.', 'p')}"


def network_record(network_kwargs: dict[str, Any]) -> dict[str, Any]:
    """A trainer's network keywords as the plans record them: through JSON (tuples become lists), so a
    record read back from plans.json compares equal."""
    return json.loads(json.dumps(network_kwargs))


def slim_record(configuration: dict[str, Any], configuration_name: str = "") -> dict[str, Any]:
    """The ``scd_slim`` record of a configuration, or a ValueError saying how to make one."""
    record = configuration.get(SLIM_PLANS_KEY)
    if record is None:
        raise ValueError(
            f"the plans configuration {configuration_name!r} records no sliced widths ('{SLIM_PLANS_KEY}'). Slim "
            "trainers need the plans written by `nnunet-scd slim -d ID -c CONFIG -f FOLD --budget B`; pass that "
            "plans identifier with -p (e.g. -p nnUNetPlans_slim0p7)."
        )
    return record


def check_network_matches(record: dict[str, Any], network_kwargs: dict[str, Any], trainer: str) -> None:
    """ValueError unless ``trainer`` builds the network family the widths were derived from."""
    recorded = record["network"]
    wanted = network_record(network_kwargs)
    keys = set(recorded) | set(wanted)
    diff = {k: (recorded.get(k), wanted.get(k)) for k in keys if recorded.get(k) != wanted.get(k)}
    if diff:
        details = ", ".join(f"{k}: {a} in the plans vs {b}" for k, (a, b) in sorted(diff.items()))
        suggestion = f"-tr {record['slim_trainer']}" if record.get("slim_trainer") else \
            f"the slim trainer that builds the network of {record.get('search_trainer')}"
        raise ValueError(
            f"these slim plans were derived from {record.get('search_trainer')}, but {trainer} builds a different "
            f"network ({details}). Train with the matching slim trainer: {suggestion}."
        )


def sliced_weights_file(preprocessed_dataset_folder: str | Path, record: dict[str, Any], fold: int | str) -> Path:
    """The sliced weights of one fold, or a ValueError naming the command that writes them."""
    path = Path(preprocessed_dataset_folder) / record["weights"] / f"fold_{fold}.pth"
    if not path.is_file():
        raise ValueError(
            f"no sliced weights for fold {fold}: {path} does not exist. Derive them from that fold's search run "
            f"with `nnunet-scd slim -f {fold} --budget {record['budget']} -tr {record.get('search_trainer')} ...` "
            "(the widths recorded in these plans are reused)."
        )
    return path
