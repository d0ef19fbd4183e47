"""One benchmark: dense UNETR and SCD at several keep ratios, timed interleaved in one process."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import torch

from nnunet_scd.bench.report import compute_ratios
from nnunet_scd.bench.timing import (
    Runner,
    build_network,
    config_flops,
    configure_backends,
    make_batch,
    peak_training_memory,
    set_keep_ratio,
    summarize,
)
from nnunet_scd.geometry import BenchConfig
from nnunet_scd.measure import time_interleaved

__all__ = ["run_benchmark"]


def run_benchmark(
    config: BenchConfig,
    device: torch.device,
    repeats: int,
    warmup: int = 1,
    sweep: Sequence[float] = (),
    memory: bool = True,
    progress: Callable[[Iterator[int], int], Iterator[int]] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time dense and sparse training steps and inference, count FLOPs, measure peak memory.

    The sparse network is built once; sweep points reuse its weights with another keep ratio
    (the weights do not depend on it). Every round runs each (network, keep ratio) once for a
    training step and once for inference, in a fixed order starting with dense.
    """
    backends = configure_backends(device)
    keeps = [config.keep_ratio, *[k for k in sweep if k != config.keep_ratio]]
    x, y = make_batch(config, device)
    dense = Runner(build_network(config, None, device), x, y, device)
    sparse = Runner(build_network(config, config.keep_ratio, device), x, y, device)

    runs: dict[str, tuple[Callable[[], None] | None, Callable[[], None]]] = {}
    for mode in ("train", "infer"):
        runs[f"dense/{mode}"] = (None, getattr(dense, f"{mode}_step"))
        for keep in keeps:
            prepare = partial(set_keep_ratio, sparse.net, keep)
            runs[f"sparse@{keep}/{mode}"] = (prepare, getattr(sparse, f"{mode}_step"))
    total = warmup + repeats
    log(f"timing {len(runs)} runs x {total} rounds ({warmup} warm-up) on {device} {backends}")
    wrap = None if progress is None else (lambda it: progress(it, total))
    times = time_interleaved(runs, repeats, warmup, device, wrap)
    set_keep_ratio(sparse.net, config.keep_ratio)
    del dense, sparse, runs  # free the models before the memory processes start

    def entry(name: str, keep: float | None) -> dict[str, Any]:
        return {
            "keep_ratio": keep,
            "train": summarize(times[f"{name}/train"], config.batch_size),
            "infer": summarize(times[f"{name}/infer"], config.batch_size),
            "train_seconds": times[f"{name}/train"],
            "infer_seconds": times[f"{name}/infer"],
            "flops_forward": config_flops(config, keep, training=False),
            "flops_train": config_flops(config, keep, training=True),
        }

    results: dict[str, Any] = {
        "config": config.as_dict(),
        "device": str(device),
        "backends": backends,
        "repeats": repeats,
        "warmup": warmup,
        "dense": entry("dense", None),
        "sparse": entry(f"sparse@{config.keep_ratio}", config.keep_ratio),
    }
    if memory:
        for name, keep in (("dense", None), ("sparse", config.keep_ratio)):
            log(f"measuring peak training memory of {name} in a fresh process")
            results[name]["memory"] = peak_training_memory(config, keep, device)
    results["ratios"] = compute_ratios(results)

    results["sweep"] = []
    for keep in sorted(keeps, reverse=True):
        point = results["sparse"] if keep == config.keep_ratio else entry(f"sparse@{keep}", keep)
        d = results["dense"]
        results["sweep"].append({
            "keep_ratio": keep,
            "train_speedup": d["train"]["median_s"] / point["train"]["median_s"],
            "infer_speedup": d["infer"]["median_s"] / point["infer"]["median_s"],
            "flop_ratio": d["flops_forward"] / point["flops_forward"],
            "train_flop_ratio": d["flops_train"] / point["flops_train"],
            "train_iqr_rel": point["train"]["iqr_rel"],
            "infer_iqr_rel": point["infer"]["iqr_rel"],
            "train_patches_per_s": point["train"]["patches_per_s"],
            "infer_patches_per_s": point["infer"]["patches_per_s"],
        })
    return results
