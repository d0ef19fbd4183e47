"""The demo's results table: built from nnU-Net's summary.json files and the measurements, written as
JSON and Markdown, printed to the terminal.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nnunet_scd.atomic import write_text_atomic

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


def _mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation over seeds (sd 0 for one seed; None when nothing was measured)."""
    present = [v for v in values if v is not None and v == v]
    if not present:
        return None, None
    return statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else 0.0


def _model_row(name: str, summaries: Sequence[Mapping], measurements: Sequence[Mapping[str, Any]],
               labels: Mapping[str, int]) -> dict[str, Any]:
    """One model's column, aggregated over seeds (one summary and one measurement per seed)."""
    per_class = [class_dice(s, labels) for s in summaries]
    mean_dice = [float(s["foreground_mean"]["Dice"]) for s in summaries]
    epoch_medians = [statistics.median(m["epoch_seconds"]) if m["epoch_seconds"] else None for m in measurements]
    breakdown_parts = list(dict.fromkeys(part for m in measurements for part in m.get("epoch_breakdown") or {}))
    first = measurements[0]
    row: dict[str, Any] = {
        "model": name,
        "trainer": first["trainer"],
        "seeds": len(summaries),
        "dice": {organ: _mean_sd([d[organ] for d in per_class])[0] for organ in per_class[0]},
        "mean_dice_per_seed": mean_dice,
        "epochs_logged": [len(m["epoch_seconds"]) for m in measurements],
        "train_seconds_per_epoch_per_seed": epoch_medians,
        "seconds_per_volume_per_seed": [m["seconds_per_volume"] for m in measurements],
        "epoch_breakdown": {part: _mean_sd([(m.get("epoch_breakdown") or {}).get(part) for m in measurements])[0]
                            for part in breakdown_parts},
        "parameters": first["parameters"],
        "gflops_per_patch": first["flops"] / 1e9,
    }
    row["mean_dice"], row["mean_dice_sd"] = _mean_sd(mean_dice)
    row["train_seconds_per_epoch"], row["train_seconds_per_epoch_sd"] = _mean_sd(epoch_medians)
    row["seconds_per_volume"], row["seconds_per_volume_sd"] = _mean_sd(row["seconds_per_volume_per_seed"])
    row["seconds_per_patch"], row["seconds_per_patch_sd"] = _mean_sd([m["seconds_per_patch"] for m in measurements])
    row["volumes_per_second"] = 1.0 / row["seconds_per_volume"]
    row["patches_per_second"] = 1.0 / row["seconds_per_patch"]
    enrichments = [m.get("enrichment") for m in measurements]
    row["token_enrichment"] = ([_mean_sd(stage)[0] for stage in zip(*enrichments, strict=True)]
                               if all(enrichments) else None)
    return row


_SPEED_KEYS = ("train_seconds_per_epoch", "seconds_per_volume", "seconds_per_patch", "gflops_per_patch")


def build_table(summaries: Sequence[Mapping[str, Mapping]], measurements: Sequence[Mapping[str, Mapping[str, Any]]],
                labels: Mapping[str, int], notes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One JSON-able table: per model Dice (per class and mean), speed, size, as mean and sd over seeds.

    ``summaries`` and ``measurements`` hold one mapping per training seed, keyed by model display name:
    first the sparse model, then its dense twin, then any others (stock nnU-Net). A measurement holds
    ``trainer``, ``epoch_seconds`` (list), ``epoch_breakdown`` ({part: median seconds}),
    ``seconds_per_volume``, ``seconds_per_patch``, ``parameters``, ``flops`` and, for a sparse model,
    ``enrichment``: the kept tokens' foreground enrichment per pruning stage on the validation cases.
    The ratios compare every other model with the sparse one (other / sparse: above 1, SCD is faster).
    """
    names = list(summaries[0])
    models = [_model_row(name, [s[name] for s in summaries], [m[name] for m in measurements], labels)
              for name in names]
    table: dict[str, Any] = {"models": models, "seeds": len(summaries),
                             "chance_dice": chance_dice(summaries[0][names[0]], labels)}
    sparse = models[0]
    table["over_sparse"] = {}
    for other in models[1:]:
        ratios: dict[str, Any] = {}
        for key in _SPEED_KEYS:
            ratios[key] = other[key] / sparse[key] if other[key] and sparse[key] else None
        for key in ("train_seconds_per_epoch", "seconds_per_volume"):
            ratios[f"{key}_per_seed"] = [a / b if a and b else None for a, b in
                                         zip(other[f"{key}_per_seed"], sparse[f"{key}_per_seed"], strict=True)]
        table["over_sparse"][other["model"]] = ratios
    table["notes"] = dict(notes or {})
    return table


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return format(value, spec)


def _fmt_sd(model: Mapping[str, Any], key: str, spec: str) -> str:
    """``mean ± sd`` over seeds, or the plain value for one seed."""
    if model.get("seeds", 1) > 1 and model.get(f"{key}_sd") is not None:
        return f"{_fmt(model[key], spec)} ± {_fmt(model[f'{key}_sd'], spec)}"
    return _fmt(model[key], spec)


def table_to_markdown(table: Mapping[str, Any]) -> str:
    """Rows are metrics, columns the models, then each other model's speed relative to SCD."""
    models = table["models"]
    ratios = table.get("over_sparse", {})
    sparse = models[0]["model"]
    header = "| | " + " | ".join(m["model"] for m in models) + "".join(f" | {o} / {sparse}" for o in ratios) + " |"
    lines = [header, "|---" * (len(models) + 1 + len(ratios)) + "|"]

    def row(title: str, values: list[str], ratio_key: str | None = None) -> None:
        extra = [(_fmt(r.get(ratio_key), ".2f") + "x") if ratio_key and r.get(ratio_key) else "" for r in
                 ratios.values()]
        lines.append("| " + " | ".join([title, *values, *extra]) + " |")

    for organ in models[0]["dice"]:
        row(f"Dice {organ}", [_fmt(m["dice"].get(organ), ".3f") for m in models])
    row("**mean Dice**", [f"**{_fmt_sd(m, 'mean_dice', '.3f')}**" for m in models])
    row("train s / epoch (median)", [_fmt_sd(m, "train_seconds_per_epoch", ".1f") for m in models],
        "train_seconds_per_epoch")
    for part in models[0].get("epoch_breakdown") or {}:
        row(f"&nbsp;&nbsp;of which {part} (s)", [_fmt((m.get("epoch_breakdown") or {}).get(part), ".2f")
                                               for m in models])
    row("inference s / volume", [_fmt_sd(m, "seconds_per_volume", ".3f") for m in models], "seconds_per_volume")
    row("network s / patch", [_fmt_sd(m, "seconds_per_patch", ".3f") for m in models], "seconds_per_patch")
    row("parameters (M)", [_fmt(m["parameters"] / 1e6, ".2f") for m in models])
    row("GFLOPs / patch (forward)", [_fmt(m["gflops_per_patch"], ".2f") for m in models], "gflops_per_patch")
    if any(m.get("token_enrichment") for m in models):
        row("kept-token foreground enrichment per stage (random = 1)",
            [" / ".join(_fmt(e, ".2f") for e in m["token_enrichment"]) if m.get("token_enrichment") else "all kept"
             for m in models])
    lines.append("")
    seeds = table.get("seeds", 1)
    lines.append(f"{seeds} training seed{'s' if seeds > 1 else ''}" + (": mean ± sd over seeds." if seeds > 1 else "."))
    lines.append(f"Chance level (random labels at the true class frequencies): mean Dice {table['chance_dice']:.3f}.")
    for key, value in table.get("notes", {}).items():
        lines.append(f"- {key}: {value}")
    return "\n".join(lines) + "\n"


def write_table(table: Mapping[str, Any], folder: Path) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``folder``; returns both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "results.json", folder / "results.md"
    write_text_atomic(json.dumps(table, indent=2) + "\n", json_path)  # an interrupted demo leaves no half table
    write_text_atomic(table_to_markdown(table), md_path)
    return json_path, md_path
