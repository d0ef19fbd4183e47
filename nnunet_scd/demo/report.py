"""The demo's results table: built from nnU-Net's summary.json files and the measurements, written as
JSON and Markdown, printed to the terminal.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["build_table", "chance_dice", "class_dice", "table_to_markdown", "write_table"]


def _by_label(mapping: Mapping, label: int) -> Any:
    """summary.json keys are ints in memory and strings once read back from disk."""
    return mapping[label] if label in mapping else mapping[str(label)]


def class_dice(summary: Mapping, labels: Mapping[str, int]) -> dict[str, float]:
    """Mean Dice per foreground class (nnU-Net's ``mean`` block; NaN where a class is absent everywhere)."""
    return {name: float(_by_label(summary["mean"], value)["Dice"]) for name, value in labels.items() if value != 0}


def chance_dice(summary: Mapping, labels: Mapping[str, int]) -> float:
    """Mean Dice of random labels drawn with the true class frequencies: for each class its voxel fraction.

    A model below this has learned nothing; it is the "clearly above chance" reference.
    """
    fractions = []
    for value in (v for v in labels.values() if v != 0):
        per_case = []
        for case in summary["metric_per_case"]:
            m = _by_label(case["metrics"], value)
            total = m["TP"] + m["FP"] + m["FN"] + m["TN"]
            per_case.append(m["n_ref"] / total if total else 0.0)
        fractions.append(statistics.fmean(per_case))
    return statistics.fmean(fractions)


def build_table(summaries: Mapping[str, Mapping], measurements: Mapping[str, Mapping[str, Any]],
                labels: Mapping[str, int], notes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One JSON-able table: per model Dice (per class and mean), speed, size; plus dense/SCD ratios.

    ``summaries`` and ``measurements`` are keyed by model display name; the first is the sparse model,
    the second the dense one. ``measurements`` holds ``trainer``, ``epoch_seconds`` (list),
    ``seconds_per_volume``, ``seconds_per_patch``, ``parameters``, ``flops`` and, for a sparse model,
    ``enrichment``: the kept tokens' foreground enrichment per pruning stage on the validation cases.
    """
    models = []
    for name, summary in summaries.items():
        m = measurements[name]
        epochs = list(m["epoch_seconds"])
        models.append({
            "model": name,
            "trainer": m["trainer"],
            "dice": class_dice(summary, labels),
            "mean_dice": float(summary["foreground_mean"]["Dice"]),
            "train_seconds_per_epoch": statistics.median(epochs) if epochs else None,
            "epochs_logged": len(epochs),
            "seconds_per_volume": m["seconds_per_volume"],
            "volumes_per_second": 1.0 / m["seconds_per_volume"],
            "seconds_per_patch": m["seconds_per_patch"],
            "patches_per_second": 1.0 / m["seconds_per_patch"],
            "parameters": m["parameters"],
            "gflops_per_patch": m["flops"] / 1e9,
            "token_enrichment": m.get("enrichment"),
        })
    table: dict[str, Any] = {"models": models, "chance_dice": chance_dice(next(iter(summaries.values())), labels)}
    if len(models) == 2:
        sparse, dense = models

        def ratio(key: str) -> float | None:
            a, b = dense[key], sparse[key]
            return a / b if a and b else None
        table["dense_over_sparse"] = {"train_seconds_per_epoch": ratio("train_seconds_per_epoch"),
                                      "seconds_per_volume": ratio("seconds_per_volume"),
                                      "seconds_per_patch": ratio("seconds_per_patch"),
                                      "gflops_per_patch": ratio("gflops_per_patch")}
    table["notes"] = dict(notes or {})
    return table


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return format(value, spec)


def table_to_markdown(table: Mapping[str, Any]) -> str:
    """Rows are metrics, columns the models (plus dense/SCD where speed is compared)."""
    models = table["models"]
    ratios = table.get("dense_over_sparse", {})
    header = "| | " + " | ".join(m["model"] for m in models) + (" | dense / SCD |" if ratios else " |")
    lines = [header, "|---" * (len(models) + 1 + bool(ratios)) + "|"]

    def row(title: str, values: list[str], ratio_key: str | None = None) -> None:
        extra = [(_fmt(ratios.get(ratio_key), ".2f") + "x") if ratio_key and ratios.get(ratio_key) else ""]
        lines.append("| " + " | ".join([title, *values, *(extra if ratios else [])]) + " |")

    for organ in models[0]["dice"]:
        row(f"Dice {organ}", [_fmt(m["dice"][organ], ".3f") for m in models])
    row("**mean Dice**", [f"**{_fmt(m['mean_dice'], '.3f')}**" for m in models])
    row("train s / epoch (median)", [_fmt(m["train_seconds_per_epoch"], ".1f") for m in models],
        "train_seconds_per_epoch")
    row("inference s / volume", [_fmt(m["seconds_per_volume"], ".2f") for m in models], "seconds_per_volume")
    row("network s / patch", [_fmt(m["seconds_per_patch"], ".3f") for m in models], "seconds_per_patch")
    row("parameters (M)", [_fmt(m["parameters"] / 1e6, ".2f") for m in models])
    row("GFLOPs / patch (forward)", [_fmt(m["gflops_per_patch"], ".2f") for m in models], "gflops_per_patch")
    if any(m.get("token_enrichment") for m in models):
        row("kept-token foreground enrichment per stage (random = 1)",
            [" / ".join(_fmt(e, ".2f") for e in m["token_enrichment"]) if m.get("token_enrichment") else "all kept"
             for m in models])
    lines.append("")
    lines.append(f"Chance level (random labels at the true class frequencies): mean Dice {table['chance_dice']:.3f}.")
    for key, value in table.get("notes", {}).items():
        lines.append(f"- {key}: {value}")
    return "\n".join(lines) + "\n"


def write_table(table: Mapping[str, Any], folder: Path) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``folder``; returns both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "results.json", folder / "results.md"
    json_path.write_text(json.dumps(table, indent=2) + "\n")
    md_path.write_text(table_to_markdown(table))
    return json_path, md_path
