"""A study's table and figure, rebuilt from its results file alone.

The table gives per arm the final validation Dice (nnU-Net's evaluator on the held-out cases of the
fold), mean ± sd over training seeds, per organ and on average; the per-seed difference against the
dense arm and against the default selection at the same keep ratio, paired by seed; and three checks:
did the dense arm plateau (the last quarter of training adds under 1 point of validation pseudo Dice),
does selection matter (among the guided, un-guided and random arms at one keep ratio, best and worst
mean Dice differ by more than twice the largest seed sd; the designs are left out, so that adding arms
cannot move the bar that says whether the setting can judge them), and does each label-free rule beat the default by the
scorer issue's rule (``BEATS_DEFAULT``; a necessary condition for a new default, not a decision).
A second table gives the enrichment of the kept tokens at the last validation, per stage and per class,
mean over seeds: how much more often a kept token holds foreground (or a class) than a token drawn at
random does.
The figure shows each arm's per-epoch validation pseudo Dice against training iterations.
"""

from __future__ import annotations

import math
import statistics
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nnunet_scd.studies.convergence import Arm

__all__ = ["PLATEAU_GAIN", "BEATS_DEFAULT", "build_report", "last_quarter_gain", "plot_curves", "report_markdown"]

PLATEAU_GAIN = 0.01  # the most the last quarter of training may add to the dense arm's validation pseudo Dice
BEATS_DEFAULT = ("its mean Dice gain over the default, paired by seed, exceeds the larger seed sd of the two, "
                    "and no organ loses more than that organ's larger seed sd")


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def last_quarter_gain(curve: Sequence[float | None]) -> float | None:
    """What the last quarter of training added to the validation pseudo Dice: the mean over the last tenth of the
    epochs minus the mean over the tenth that ends at three quarters (raw values: nnU-Net's EMA lags by ~10 epochs)."""
    values = [v for v in curve if v is not None]
    if len(values) < 8:
        return None
    window, three_quarters = max(1, len(values) // 10), (3 * len(values)) // 4
    return statistics.fmean(values[-window:]) - statistics.fmean(values[three_quarters - window:three_quarters])


def _mean_enrichment(runs: Sequence[dict[str, Any]]) -> tuple[list[float], list[dict[str, float]]] | None:
    """Per stage, the mean over seeds of the foreground enrichment and of each class's (classes a seed's validation
    batches lacked are left out of that class's mean)."""
    runs = [r for r in runs if r.get("enrichment")]
    if not runs:
        return None
    stages = [statistics.fmean(r["enrichment"][s] for r in runs) for s in range(len(runs[0]["enrichment"]))]
    classes = []
    for s in range(len(runs[0].get("class_enrichment") or ())):
        names = runs[0]["class_enrichment"][s]
        values = {n: [r["class_enrichment"][s][n] for r in runs if r.get("class_enrichment")] for n in names}
        classes.append({n: statistics.fmean(v) if (v := [x for x in vs if not math.isnan(x)]) else math.nan
                        for n, vs in values.items()})
    return stages, classes


def _paired(runs: dict[int, dict[str, Any]], other: dict[int, dict[str, Any]]) -> list[float]:
    """Per-seed differences of mean Dice, ``runs`` minus ``other``, over the seeds both have."""
    return [runs[s]["dice_mean"] - other[s]["dice_mean"] for s in sorted(runs) if s in other]


def _beats_default(row: dict[str, Any], default: dict[str, Any], runs: dict[int, dict[str, Any]],
                      default_runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The scorer issue's rule for a new default selection (``BEATS_DEFAULT``), row against the default's row."""
    gains = _paired(runs, default_runs)
    seeds = [s for s in sorted(runs) if s in default_runs]
    organ_change = {o: statistics.fmean(runs[s]["dice"][o] - default_runs[s]["dice"][o] for s in seeds)
                    for o in row["organs"]} if seeds else {}
    organ_sd = {o: max(row["organs"][o][1], default["organs"][o][1]) for o in row["organs"]}
    losses = [o for o, change in organ_change.items() if change < -organ_sd[o]]
    sd = max(row["dice_sd"], default["dice_sd"])
    judged = len(gains) >= 2
    gain = statistics.fmean(gains) if gains else math.nan
    return {"arm": row["arm"], "default": default["arm"], "gain": gain, "sd": sd, "losses": losses,
            "judged": judged, "holds": judged and gain > sd and not losses}


_DEPLOYED = "slim + pixel classifier"  # what the slim trainer fine-tunes and predicts with


def _search_summary(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """A joint-search arm's subnet against its unsearched network, from each seed's slim report: mean ± sd over seeds
    of the kept share of encoder parameters and FLOPs and of the fastest latencies, and the tokens per block."""
    runs = [r for r in runs if r.get("search")]
    if not runs:
        return None

    def share(key: str) -> tuple[float, float]:
        return _mean_sd([r["search"]["costs"][_DEPLOYED][key] / r["search"]["costs"]["dense"][key] for r in runs])

    return {"budget": runs[0]["search"]["budget"], "iterations": runs[0]["search"]["iterations"],
            "encoder_params": share("encoder_params"), "encoder_flops": share("encoder_flops"),
            "encoder_latency": share("encoder_latency_ms"), "latency": share("latency_ms"),
            "tokens": [r["search"]["costs"][_DEPLOYED]["block_tokens"] for r in runs]}


def build_report(records: Sequence[dict[str, Any]], arms: Sequence[Arm], reference: str = "dense") -> dict[str, Any]:
    """Per-arm statistics and the study's checks from the records of one setting, arms in the given order."""
    by_arm: dict[str, dict[int, dict[str, Any]]] = {}
    for record in records:
        by_arm.setdefault(record["arm"], {})[int(record["seed"])] = record
    defaults = {a.keep: a.name for a in arms if a.default and a.name in by_arm}
    organs = list(next(iter(records))["dice"]) if records else []
    rows = []
    for arm in [a for a in arms if a.name in by_arm]:
        name, runs = arm.name, by_arm[arm.name]
        seeds = sorted(runs)
        row: dict[str, Any] = {"arm": name, "label_free": arm.label_free, "baseline": arm.baseline,
                               "trainer": runs[seeds[0]]["trainer"],
                               "keep": runs[seeds[0]]["keep"], "seeds": seeds,
                               "iterations": sorted({r["iterations"] for r in runs.values()}),
                               "devices": sorted({r.get("device", "?") for r in runs.values()})}
        row["dice_mean"], row["dice_sd"] = _mean_sd([runs[s]["dice_mean"] for s in seeds])
        row["dice_per_seed"] = [runs[s]["dice_mean"] for s in seeds]
        row["organs"] = {o: _mean_sd([runs[s]["dice"][o] for s in seeds]) for o in organs}
        row["enrichment"] = _mean_enrichment([runs[s] for s in seeds])
        row["search"] = _search_summary([runs[s] for s in seeds])
        walls = [r["wall_seconds"] for r in runs.values() if r.get("wall_seconds")]
        row["wall_seconds_median"] = statistics.median(walls) if walls else None
        if name != reference and reference in by_arm:
            paired = _paired(runs, by_arm[reference])
            row["vs_reference"] = _mean_sd(paired) if paired else None
            row["vs_reference_per_seed"] = paired
        default = defaults.get(arm.keep)
        if default is not None and name != default:
            paired = _paired(runs, by_arm[default])
            row["vs_default"] = _mean_sd(paired) if paired else None
            row["vs_default_per_seed"] = paired
        rows.append(row)
    report: dict[str, Any] = {"rows": rows, "organs": organs, "reference": reference, "checks": {}}
    if reference in by_arm:
        gains = [last_quarter_gain(r["curve"]["pseudo_dice"]) for r in by_arm[reference].values()]
        gains = [g for g in gains if g is not None]
        report["checks"]["plateau"] = {"gains": gains, "holds": bool(gains) and max(gains) < PLATEAU_GAIN}
    for keep in sorted({r["keep"] for r in rows if r["keep"] is not None}, reverse=True):
        free = [r for r in rows if r["keep"] == keep and r["label_free"]]
        baselines = [r for r in free if r["baseline"]]
        if len(baselines) >= 2:
            spread = max(r["dice_mean"] for r in baselines) - min(r["dice_mean"] for r in baselines)
            largest_sd = max(r["dice_sd"] for r in baselines)
            # A seed sd needs two seeds: with fewer, the check cannot hold.
            judged = all(len(r["seeds"]) >= 2 for r in baselines)
            best = max(baselines, key=lambda r: r["dice_mean"])
            worst = min(baselines, key=lambda r: r["dice_mean"])
            report["checks"][f"selection matters at keep {keep}"] = {
                "arms": [r["arm"] for r in baselines], "spread": spread, "largest_sd": largest_sd, "judged": judged,
                "holds": judged and spread > 2 * largest_sd, "best": best["arm"], "worst": worst["arm"],
                "paired": _paired(by_arm[best["arm"]], by_arm[worst["arm"]])}
        default = next((r for r in rows if r["arm"] == defaults.get(keep)), None)
        contenders = [r for r in free if default is not None and r is not default]
        if contenders:
            report["checks"][f"beats the default at keep {keep:g}"] = [
                _beats_default(r, default, by_arm[r["arm"]], by_arm[default["arm"]]) for r in contenders]
    return report


def _pm(mean_sd: tuple[float, float] | None, signed: bool = False, seeds: int = 2) -> str:
    """``mean ± sd``, or the mean alone where one seed has no sd to show."""
    if mean_sd is None:
        return ""
    mean, sd = mean_sd
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return text if seeds < 2 else f"{text} ± {sd:.3f}"


def report_markdown(report: dict[str, Any], notes: Sequence[str] = ()) -> str:
    """The report as Markdown: one table of arms, then the checks."""
    organs = report["organs"]
    head = ["arm", "keep", "seeds", "mean Dice", f"- {report['reference']}, paired", "- default, paired", *organs,
            "iterations", "wall s (median)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["rows"]:
        n = len(row["seeds"])
        cells = [row["arm"], "all" if row["keep"] is None else f"{row['keep']:g}",
                 ", ".join(map(str, row["seeds"])), f"**{_pm((row['dice_mean'], row['dice_sd']), seeds=n)}**",
                 _pm(row.get("vs_reference"), signed=True, seeds=len(row.get("vs_reference_per_seed", ()))),
                 _pm(row.get("vs_default"), signed=True, seeds=len(row.get("vs_default_per_seed", ()))),
                 *(_pm(row["organs"][o], seeds=n) for o in organs), "/".join(map(str, row["iterations"])),
                 f"{row['wall_seconds_median']:.0f}" if row["wall_seconds_median"] else ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for name, check in report["checks"].items():
        if name == "plateau":
            gains = ", ".join(f"{g:+.4f}" for g in check["gains"])
            lines.append(f"- **{report['reference']} arm plateaued** (validation pseudo Dice gained under "
                         f"{PLATEAU_GAIN} in the last quarter of training): {'yes' if check['holds'] else 'NO'} "
                         f"(gain per seed: {gains})")
        elif name.startswith("beats the default"):
            lines.append(f"- **{name}** ({BEATS_DEFAULT}):")
            lines += [f"  - {_beats_default_markdown(verdict)}" for verdict in check]
        else:
            verdict = "yes" if check["holds"] else "NO" if check["judged"] else "not judged, an arm has one seed"
            lines.append(f"- **{name}** (best - worst mean Dice of {', '.join(check['arms'])} > 2 x the largest seed "
                         f"sd): {verdict} (spread {check['spread']:.3f}, largest sd {check['largest_sd']:.3f}; "
                         f"{check['best']} - {check['worst']} paired by seed: "
                         f"{', '.join(f'{d:+.3f}' for d in check['paired'])})")
    lines += _enrichment_markdown(report)
    lines += _search_markdown(report)
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _beats_default_markdown(verdict: dict[str, Any]) -> str:
    if not verdict["judged"]:
        return f"{verdict['arm']}: not judged, fewer than two seeds paired with {verdict['default']}"
    losses = f"loses {', '.join(verdict['losses'])}" if verdict["losses"] else "no organ loses"
    return (f"{verdict['arm']}: {'yes' if verdict['holds'] else 'no'} (gain over {verdict['default']} "
            f"{verdict['gain']:+.3f} against sd {verdict['sd']:.3f}; {losses})")


def _enrichment_markdown(report: dict[str, Any]) -> list[str]:
    """The enrichment table: per arm with token selection, the foreground figure and each class's, per stage."""
    rows = [r for r in report["rows"] if r.get("enrichment")]
    if not rows:
        return []
    classes = [n for n in report["organs"] if any(n in stage for r in rows for stage in r["enrichment"][1])]
    head = ["arm", "keep", "foreground", *classes]
    lines = ["", "Enrichment of the kept tokens at the last validation, per stage (stage 1/2/3), mean over seeds: "
             "P(kept token holds it) / P(any token holds it); random selection scores 1, n/a: no class figures.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def stages(values: Sequence[float]) -> str:
        return "/".join("n/a" if math.isnan(v) else f"{v:.1f}" for v in values)

    for row in rows:
        overall, per_class = row["enrichment"]
        cells = [row["arm"], f"{row['keep']:g}", stages(overall),
                 *(stages([stage.get(c, math.nan) for stage in per_class]) if per_class else "n/a" for c in classes)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _search_markdown(report: dict[str, Any]) -> list[str]:
    """The joint-search table: per searched arm, what its subnet keeps of the unsearched network, per seed's slim
    report (``nnunet-scd slim``: exact parameters and FLOPs of one patch, fastest of interleaved batch-1 passes)."""
    rows = [r for r in report["rows"] if r.get("search")]
    if not rows:
        return []
    lines = ["", "Joint search: the fine-tuned subnet against the unsearched network, as each seed's `nnunet-scd slim` "
             "measured it (kept share, mean over seeds; latency: fastest of interleaved batch-1 passes over one "
             "patch, on a machine the study may have been using).", "",
             "| arm | budget | search + fine-tune iterations | encoder params | encoder FLOPs | encoder latency | "
             "network latency | tokens per block (per seed) |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        search, n = row["search"], len(row["seeds"])
        tokens = "; ".join("/".join(map(str, t)) for t in search["tokens"])
        iterations = f"{search['iterations']} + {'/'.join(map(str, row['iterations']))}"
        cells = [row["arm"], f"{search['budget']:g}", iterations,
                 *(_pm(search[k], seeds=n) for k in ("encoder_params", "encoder_flops", "encoder_latency", "latency")),
                 tokens]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def plot_curves(records: Sequence[dict[str, Any]], arms: Sequence[Arm], path: Path, title: str) -> Path:
    """Validation pseudo Dice (per epoch, on nnU-Net's validation batches) against training iterations: one curve
    per arm, mean ± sd over seeds, one panel per keep ratio (the dense and stock arms in every panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    arm_order = [a.name for a in arms]
    label_free = {a.name for a in arms if a.label_free}
    keeps = sorted({r["keep"] for r in records if r["keep"] is not None}, reverse=True) or [None]
    fig, axes = plt.subplots(1, len(keeps), figsize=(6.5 * len(keeps), 4.5), sharey=True, squeeze=False)
    # One colour per arm that has runs, so that two arms never share one (ARMS outnumbers a 10-colour cycle).
    present = [name for name in arm_order if any(r["arm"] == name for r in records)]
    palette = plt.get_cmap("tab10" if len(present) <= 10 else "tab20").colors
    colours = {name: palette[i % len(palette)] for i, name in enumerate(present)}
    for ax, keep in zip(axes[0], keeps, strict=True):
        for name in arm_order:
            runs = [r for r in records if r["arm"] == name and r["keep"] in (keep, None)]
            if not runs:
                continue
            length = min(len(r["curve"]["pseudo_dice"]) for r in runs)
            # Raw per-epoch values: nnU-Net's EMA lags about ten epochs, a third of a 30-epoch run.
            curves = np.array([[np.nan if v is None else v for v in r["curve"]["pseudo_dice"][:length]]
                               for r in runs], dtype=float)
            x = runs[0]["curve"]["iterations"][:length]
            mean, sd = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
            ax.plot(x, mean, label=f"{name} (n={len(runs)})", color=colours[name],
                    linestyle="-" if name in label_free else "--")
            ax.fill_between(x, mean - sd, mean + sd, color=colours[name], alpha=0.15)
        ax.set_title(f"keep {keep:g} per stage" if keep is not None else "arms")
        ax.set_xlabel("training iterations")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0][0].set_ylabel("validation pseudo Dice (mean over organs)")
    # A one-panel figure is narrower than a setting's description: wrap rather than cut it.
    fig.suptitle(textwrap.fill(title, width=int(11 * 6.5 * len(keeps))), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
