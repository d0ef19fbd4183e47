"""The bench report: ratios, the Markdown tables (benchmark and per volume), the JSON file and the speed-up plot."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nnunet_scd.atomic import write_text_atomic

__all__ = ["compute_ratios", "markdown_table", "per_volume_table", "plot_sweep", "read_json", "table_from_json",
           "write_json"]

# What a benchmark's --json holds besides the ratios, and markdown_table reads.
_RESULT_KEYS = ("config", "dense", "sparse", "device", "backends", "repeats", "warmup")
RATIO_KEYS = ("train_speedup", "infer_speedup", "flop_ratio", "train_flop_ratio", "train_mem_ratio")


def _ratio(dense: float, sparse: float) -> float:
    return dense / sparse if sparse > 0 else math.nan


def compute_ratios(results: Mapping[str, Any]) -> dict[str, float]:
    """Headline ratios, each dense / sparse so that bigger is better."""
    dense, sparse = results["dense"], results["sparse"]
    ratios = {
        "train_speedup": _ratio(dense["train"]["median_s"], sparse["train"]["median_s"]),
        "infer_speedup": _ratio(dense["infer"]["median_s"], sparse["infer"]["median_s"]),
        "flop_ratio": _ratio(dense["flops_forward"], sparse["flops_forward"]),
        "train_flop_ratio": _ratio(dense["flops_train"], sparse["flops_train"]),
    }
    if "memory" in dense and "memory" in sparse:
        ratios["train_mem_ratio"] = _ratio(dense["memory"]["peak_bytes"], sparse["memory"]["peak_bytes"])
    return ratios


def _fmt_gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _fmt_shape(sizes: Sequence[int]) -> str:
    return "x".join(map(str, sizes))  # the same from a tuple and from its JSON list


def markdown_table(results: Mapping[str, Any]) -> str:
    """Headline table (dense vs sparse, and the paper's figures where the config has them) and the keep-ratio
    sweep, as Markdown."""
    cfg, dense, sparse, ratios = results["config"], results["dense"], results["sparse"], results["ratios"]
    paper = cfg.get("paper")
    batch = cfg["batch_size"]
    lines = [
        f"config `{cfg['name']}`: patch {_fmt_shape(cfg['patch_size'])}, {cfg['input_channels']} channel(s), token "
        f"{_fmt_shape(cfg['token_size'])}, width {cfg['embed_dim']}, depth {cfg['depth']}, prune after blocks "
        f"{'/'.join(map(str, cfg['prune_after']))} keep "
        f"{cfg['keep_ratio']}, batch {batch}; device {results['device']} {results['backends']}; "
        f"{results['repeats']} interleaved rounds after {results['warmup']} warm-up; random inputs and labels",
        "",
        "| | dense UNETR | SCD (sparse) | dense / sparse |" + (" paper (A100, best case) |" if paper else ""),
        "|---|---|---|---|" + ("---|" if paper else ""),
    ]

    def paper_cell(key: str) -> str:
        if not paper:
            return ""
        return f" {paper[key]:.2f}x |" if paper.get(key) is not None else " |"

    def row(label: str, key: str) -> str:
        d, s = dense[key], sparse[key]
        return (f"| {label} | {d['patches_per_s']:.3f} ({d['median_s']:.2f} s, IQR {100 * d['iqr_rel']:.0f}%) | "
                f"{s['patches_per_s']:.3f} ({s['median_s']:.2f} s, IQR {100 * s['iqr_rel']:.0f}%) | ")

    lines.append(row("train patches/s (median step, IQR)", "train") + f"**{ratios['train_speedup']:.2f}x** |"
                 + paper_cell("train_speedup"))
    lines.append(row("infer patches/s (median step, IQR)", "infer") + f"**{ratios['infer_speedup']:.2f}x** |"
                 + paper_cell("infer_speedup"))
    lines.append(f"| forward GFLOPs | {dense['flops_forward'] / 1e9:.1f} | {sparse['flops_forward'] / 1e9:.1f} | "
                 f"{ratios['flop_ratio']:.2f}x |" + (" |" if paper else ""))
    if paper and paper.get("gmacs_per_sample") is not None:
        # torch's flop counter counts a multiply-add as 2 FLOPs; the authors report MACs per sample.
        lines.append(f"| forward GMACs per sample | {dense['flops_forward'] / 2e9 / batch:.1f} | "
                     f"{sparse['flops_forward'] / 2e9 / batch:.1f} | | {paper['gmacs_per_sample']:.1f} (SCD) |")
    lines.append(f"| train GFLOPs (fwd + bwd) | {dense['flops_train'] / 1e9:.1f} | {sparse['flops_train'] / 1e9:.1f} | "
                 f"{ratios['train_flop_ratio']:.2f}x |" + (" |" if paper else ""))
    if "train_mem_ratio" in ratios:
        kind = dense["memory"]["kind"]
        lines.append(f"| peak train memory ({kind}) | {_fmt_gib(dense['memory']['peak_bytes'])} | "
                     f"{_fmt_gib(sparse['memory']['peak_bytes'])} | {ratios['train_mem_ratio']:.2f}x |"
                     + (" |" if paper else ""))
    lines.append(f"| speed-up / FLOP ratio | | | train {ratios['train_speedup'] / ratios['train_flop_ratio']:.0%}, "
                 f"infer {ratios['infer_speedup'] / ratios['flop_ratio']:.0%} |" + (" |" if paper else ""))
    if results.get("sweep"):
        lines += ["", "| keep ratio | train speed-up | infer speed-up | FLOP ratio (ideal) | train IQR | infer IQR |",
                  "|---|---|---|---|---|---|"]
        for point in results["sweep"]:
            lines.append(f"| {point['keep_ratio']} | {point['train_speedup']:.2f}x | {point['infer_speedup']:.2f}x | "
                         f"{point['flop_ratio']:.2f}x | {100 * point['train_iqr_rel']:.0f}% | "
                         f"{100 * point['infer_iqr_rel']:.0f}% |")
    return "\n".join(lines)


def write_json(results: Mapping[str, Any], path: Path) -> None:
    """Headline ratios at the top level (``RATIO_KEYS``, which scripts read), everything else beside them."""
    payload = {**results["ratios"], **{k: v for k, v in results.items() if k != "ratios"}}
    write_text_atomic(json.dumps(payload, indent=2, default=str) + "\n", path)


def _load(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not JSON ({error}); give the --json file of an earlier nnunet-scd bench run") \
            from None


def read_json(path: Path) -> dict[str, Any]:
    """The results of :func:`write_json` as :func:`markdown_table` takes them.

    Raises:
        ValueError: naming ``path``, when it is not JSON or not a bench result (a ``--whole-volume`` or
            other command's JSON has no dense and sparse runs to tabulate).
    """
    payload = _load(path)
    missing = [k for k in _RESULT_KEYS if k not in payload] if isinstance(payload, dict) else list(_RESULT_KEYS)
    if missing:
        raise ValueError(f"{path} is not the --json file of an nnunet-scd bench run (it lacks {', '.join(missing)}); "
                         "give that file instead")
    results = {k: v for k, v in payload.items() if k not in RATIO_KEYS}
    results["ratios"] = {k: payload[k] for k in RATIO_KEYS if k in payload}
    return results


def table_from_json(path: Path) -> str:
    """The table of an earlier run's ``--json`` file: a benchmark's or a ``--per-volume`` run's.

    Raises:
        ValueError: naming ``path``, when it is neither.
    """
    payload = _load(path)
    if isinstance(payload, dict) and payload.get("mode") == "per-volume":
        return per_volume_table(payload)
    return markdown_table(read_json(path))


_NETWORK_NAMES = {"scd": "SCD", "unetr": "dense UNETR", "nnunet": "stock nnU-Net (PlainConvUNet)"}


def _fmt_memory(n: int | None) -> str:
    return "n/a" if n is None else _fmt_gib(n)


def per_volume_table(result: Mapping[str, Any]) -> str:
    """One row per network and mirroring setting of a ``--per-volume`` run: median seconds per volume, per part,
    peak memory and speed-ups (other time / this time) against the dense UNETR and stock nnU-Net."""
    cfg, scan = result["config"], result["scan"]
    parts = list(result["runs"][0]["median_parts"])  # in the order the run recorded them, the order they happen
    on_cuda = "cuda" in result["memory_kind"]
    spacing = "x".join(f"{s:.2f}" for s in scan["spacing_xyz"])
    target = "x".join(f"{s:.2f}" for s in scan["target_spacing_zyx"])
    lines = [
        f"config `{cfg['name']}`: patch {_fmt_shape(cfg['patch_size'])}, token {_fmt_shape(cfg['token_size'])}, "
        f"width {cfg['embed_dim']}, depth {cfg['depth']}, keep {cfg['keep_ratio']}, {cfg['num_classes']} classes; "
        f"scan file {_fmt_shape(scan['shape_zyx'])} voxels (z, y, x) at {spacing} mm (x, y, z), preprocessed to "
        f"{_fmt_shape(scan['network_shape_zyx'])} at {target} mm (z, y, x): {scan['tiles']} tiles, step "
        f"{scan['tile_step']}; device {result['device']} {result['backends']}; {result['repeats']} interleaved rounds "
        f"after {result['warmup']} warm-up; seconds are medians over rounds (the parts' medians need not add up to "
        "the total's)",
        "",
        "| network | mirroring | s/volume | " + " | ".join(parts) + " | peak memory | speed-up vs dense UNETR "
        "| speed-up vs stock nnU-Net |",
        "|---|---|---|" + "---|" * len(parts) + "---|---|---|",
    ]
    for run in result["runs"]:
        seconds = " | ".join(f"{run['median_parts'][name]:.2f}" for name in parts)
        memory = _fmt_memory(run["peak_cuda_bytes"] if on_cuda else run["peak_cpu_bytes"])
        lines.append(f"| {_NETWORK_NAMES.get(run['network'], run['network'])} | {'on' if run['mirror'] else 'off'} | "
                     f"**{run['median_s']:.2f}** | {seconds} | {memory} | {run['speedup_vs_unetr']:.2f}x | "
                     f"{run['speedup_vs_nnunet']:.2f}x |")
    lines += ["", f"peak memory: {result['memory_kind']['cuda' if on_cuda else 'cpu']} (the largest over rounds)"]
    return "\n".join(lines)


def plot_sweep(results: Mapping[str, Any], path: Path) -> None:
    """Speed-up against keep ratio (train and inference), with the FLOP ratio as the ideal."""
    # Imported here: the Agg backend must be chosen before pyplot loads, and a run that never plots never loads it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = sorted(results["sweep"], key=lambda p: p["keep_ratio"])
    keeps = [p["keep_ratio"] for p in sweep]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(keeps, [p["flop_ratio"] for p in sweep], "k--", label="FLOP ratio (ideal)")
    ax.plot(keeps, [p["train_speedup"] for p in sweep], "o-", label="training step")
    ax.plot(keeps, [p["infer_speedup"] for p in sweep], "s-", label="inference")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("keep ratio per pruning stage")
    ax.set_ylabel("speed-up over dense UNETR (x)")
    ax.set_title(f"SCD vs dense UNETR, config {results['config']['name']}, {results['device']}")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
