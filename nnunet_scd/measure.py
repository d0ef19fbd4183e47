"""Measuring networks, in one place: parameters, FLOPs and interleaved wall-clock timing.

``bench/`` (dense against sparse training and inference), ``search/`` (a network before and after
slicing) and ``demo/`` (trained folds through nnU-Net's predictor) all count and time with these.

FLOPs come from ``torch.utils.flop_counter`` on the ``meta`` device. On CPU,
``scaled_dot_product_attention`` runs a fused kernel that the flop counter has no formula for, so
counting a real CPU forward silently drops every attention matmul (about a quarter of a ViT-B/8
UNETR at 96^3). On ``meta`` the counted attention op runs, no arithmetic is done, and the figure is
the one a CUDA run reports.

Timing interleaves the contenders: each runs once per round, round after round, so load from
other processes on a shared machine hits all of them alike. ``ForwardTimer`` times a network's
forward calls inside code that is not ours (nnU-Net's predictor), where only the network can be wrapped.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["ForwardTimer", "count_flops", "count_parameters", "synchronize", "time_interleaved"]


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())


def count_flops(
    model: nn.Module, input_shape: Sequence[int], training: bool = False, per_module: bool = False
) -> int | tuple[int, dict[str, int]]:
    """FLOPs of one forward pass (eval mode) of ``model`` on an input of ``input_shape``, or with
    ``training`` of one train-mode forward and backward pass.

    The model is copied to the ``meta`` device, so the caller's model is untouched (a model built on
    ``meta`` costs nothing to copy). With ``per_module`` the second return value maps module names,
    as the counter reports them (e.g. ``SCDNet.decoder``), to their FLOPs.
    """
    meta_model = copy.deepcopy(model).to("meta").train(training)
    x = torch.empty(tuple(input_shape), device="meta")
    with FlopCounterMode(display=False) as counter:
        if training:
            meta_model(x).sum().backward()
        else:
            with torch.no_grad():
                meta_model(x)
    total = counter.get_total_flops()
    if not per_module:
        return total
    return total, {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a wall-clock reading covers it; nothing to wait for on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    runs: Mapping[str, tuple[Callable[[], object] | None, Callable[[], object]]],
    repeats: int,
    warmup: int,
    device: torch.device = torch.device("cpu"),  # noqa: B008 - an immutable device, not a shared default object
    progress: Callable[[Iterator[int]], Iterator[int]] | None = None,
) -> dict[str, list[float]]:
    """Seconds of each run's step, one step per run per round, over ``repeats`` rounds after ``warmup``.

    Args:
        runs: name -> ``(prepare, step)``; ``prepare`` (e.g. setting a keep ratio) runs untimed
            before each step, or is None.
        repeats: timed rounds.
        warmup: untimed rounds first (allocator, caches, cuDNN autotuning).
        device: the device the steps run on, synchronised around each step.
        progress: wraps the round iterator (e.g. ``tqdm``).
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    rounds: Iterator[int] = iter(range(warmup + repeats))
    for r in progress(rounds) if progress else rounds:
        for name, (prepare, step) in runs.items():
            if prepare is not None:
                prepare()
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


class ForwardTimer(nn.Module):
    """Wraps a network and adds up the wall-clock seconds of its forward calls.

    A wrapper rather than forward hooks: nnU-Net's predictor calls ``network(x)`` and loads state
    dicts into whatever module it holds, and a wrapper is the one seam both go through. Each call is
    synchronised on CUDA, so the seconds cover the kernels, not their launch; that takes away the
    overlap of one tile's kernels with the host work of the next.

    Args:
        module: the network to time.
        device: where it runs (synchronised around each call).
    """

    def __init__(self, module: nn.Module, device: torch.device = torch.device("cpu")) -> None:  # noqa: B008
        super().__init__()
        self.module = module
        self.device = device
        self.seconds = 0.0
        self.calls = 0

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        synchronize(self.device)
        start = time.perf_counter()
        out = self.module(x)
        synchronize(self.device)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out
