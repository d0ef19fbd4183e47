"""Where one training step of SCDNet spends its time, by part: forward and backward per module group.

Forward time is measured with forward pre/post hooks, backward time with full backward pre/post
hooks on the same modules (autograd on CPU runs one node at a time, so the intervals do not
overlap); the loss and the AdamW step are timed around their calls. Groups: patch embedding,
encoder blocks, STP scorers, completion (MTA), decoder.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from nnunet_scd.bench.timing import Runner, build_network, configure_backends, make_batch
from nnunet_scd.geometry import BenchConfig
from nnunet_scd.measure import synchronize

__all__ = ["profile_training_step"]


def _groups(net: nn.Module) -> dict[str, list[nn.Module]]:
    groups = {"patch embed": [net.patch_embed], "encoder blocks": list(net.blocks), "decoder": [net.decoder]}
    if net.is_sparse:
        groups["scorer (STP)"] = list(net.pruning)
        # Hook the parts that take tensors (full backward hooks ignore list arguments); the scatter
        # between them counts as glue.
        mta = net.completion
        groups["completion (MTA)"] = [mta.transformer, *getattr(mta, "source_proj", [getattr(mta, "in_proj", None)])]
    return groups


def _attach(groups: dict[str, list[nn.Module]], totals: dict[str, float], sync: Callable[[], None]) -> list[Any]:
    handles, starts = [], {}

    def opener(key: tuple[str, int, str]) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            sync()
            starts[key] = time.perf_counter()
        return hook

    def closer(key: tuple[str, int, str]) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            sync()
            totals[f"{key[0]} {key[2]}"] += time.perf_counter() - starts.pop(key)
        return hook

    for name, modules in groups.items():
        for i, module in enumerate(modules):
            fwd, bwd = (name, i, "fwd"), (name, i, "bwd")
            handles += [module.register_forward_pre_hook(opener(fwd)), module.register_forward_hook(closer(fwd))]
            if name != "patch embed":  # its input (the image) needs no gradient, so a backward hook never fires
                handles += [module.register_full_backward_pre_hook(opener(bwd)),
                            module.register_full_backward_hook(closer(bwd))]
    return handles


def profile_training_step(config: BenchConfig, device: torch.device, keep_ratio: float | None, steps: int = 1,
                          warmup: int = 1) -> dict[str, float]:
    """Median-free breakdown: seconds per part, averaged over ``steps`` steps after ``warmup``."""
    configure_backends(device)
    x, y = make_batch(config, device)
    runner = Runner(build_network(config, keep_ratio, device), x, y, device)
    for _ in range(warmup):
        runner.train_step()
    sync = partial(synchronize, device)
    totals: dict[str, float] = defaultdict(float)
    handles = _attach(_groups(runner.net), totals, sync)
    opt_step = runner.optimizer.step

    def timed_step(*args: Any, **kwargs: Any) -> Any:
        sync()
        start = time.perf_counter()
        out = opt_step(*args, **kwargs)
        sync()
        totals["optimizer step"] += time.perf_counter() - start
        return out

    runner.optimizer.step = timed_step
    try:
        for _ in range(steps):
            sync()
            start = time.perf_counter()
            runner.train_step()
            sync()
            totals["whole step"] += time.perf_counter() - start
    finally:
        for handle in handles:
            handle.remove()
        runner.optimizer.step = opt_step
    out = {k: v / steps for k, v in totals.items()}
    measured = sum(v for k, v in out.items() if k != "whole step")
    out["rest (loss, scatter, patch-embed bwd, glue)"] = out["whole step"] - measured
    return out
