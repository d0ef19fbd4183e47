"""Measurements for the demo table: epoch times from nnU-Net's logs, parameters, FLOPs, inference speed.

Inference is timed in this process with nnU-Net's own ``nnUNetPredictor`` (the same settings as the
demo's ``nnUNetv2_predict`` call: no mirroring, step 0.5), so interpreter and model-loading start-up
is not counted. SCD and dense runs are interleaved and the median is reported, because the machine
may be shared and timings drift.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from nnunet_scd.nnunet.predictor import load_predictor
from nnunet_scd.nnunet.training_log import epoch_times

__all__ = [
    "count_flops",
    "count_parameters",
    "epoch_times",
    "interleaved_medians",
    "load_predictor",
    "time_inference",
]

def count_parameters(network) -> int:
    return sum(p.numel() for p in network.parameters())


def count_flops(network, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs of one input of ``input_shape`` (B, C, *S), attention included (see ``nnunet_scd.flops``)."""
    from nnunet_scd.flops import forward_flops

    return int(forward_flops(network, input_shape))


def interleaved_medians(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, calling them in turn ``repeats`` times (after one warm-up each)."""
    for fn in functions.values():
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def time_inference(predictors: dict[str, object], images: Iterable[Path], repeats: int = 2) -> dict[str, dict]:
    """Median seconds per volume (nnUNetPredictor on raw images) and per patch (network forward) per model."""
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    cases = [SimpleITKIO().read_images([str(p)]) for p in images]
    per_volume: dict[str, list[float]] = {name: [] for name in predictors}

    def predict_case(predictor, image, props) -> Callable[[], object]:
        return lambda: predictor.predict_single_npy_array(image, props)

    for image, props in cases:
        medians = interleaved_medians(
            {name: predict_case(p, image, props) for name, p in predictors.items()}, repeats)
        for name, value in medians.items():
            per_volume[name].append(value)

    def forward(network, patch: torch.Tensor) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return network(patch)
        return run

    patches = {name: torch.randn(1, p.network.input_channels, *p.network.patch_size) for name, p in predictors.items()}
    per_patch = interleaved_medians(
        {name: forward(p.network, patches[name]) for name, p in predictors.items()}, max(3, 2 * repeats))
    return {name: {"seconds_per_volume": statistics.median(per_volume[name]),
                   "seconds_per_patch": per_patch[name]} for name in predictors}
