"""Measurements for the demo table: epoch times from nnU-Net's logs, parameters, FLOPs, inference speed.

Inference is timed in this process with nnU-Net's own ``nnUNetPredictor`` (the same settings as the
demo's ``nnUNetv2_predict`` call: no mirroring, step 0.5), so interpreter and model-loading start-up
is not counted. SCD and dense runs are interleaved and the median is reported, because the machine
may be shared and timings drift.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from nnunet_scd.nnunet.predictor import load_predictor

__all__ = [
    "count_flops",
    "count_parameters",
    "epoch_times",
    "input_shape",
    "interleaved_medians",
    "load_predictor",
    "time_inference",
]

_EPOCH_TIME = re.compile(r"Epoch time: ([0-9.]+) s")


def epoch_times(fold_dir: Path) -> list[float]:
    """Seconds per epoch from every ``training_log_*.txt`` of a fold (a resumed run writes several logs)."""
    times: list[float] = []
    for log_file in sorted(Path(fold_dir).glob("training_log_*.txt")):
        times += [float(m.group(1)) for m in _EPOCH_TIME.finditer(log_file.read_text(errors="replace"))]
    return times


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


def input_shape(predictor) -> tuple[int, ...]:
    """(C, *patch) of one sliding-window tile, from the plans, for any nnU-Net network."""
    channels = len(predictor.dataset_json.get("channel_names", predictor.dataset_json.get("modality", {})))
    return (channels, *predictor.configuration_manager.patch_size)


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

    patches = {name: torch.randn(1, *input_shape(p)) for name, p in predictors.items()}
    per_patch = interleaved_medians(
        {name: forward(p.network, patches[name]) for name, p in predictors.items()}, max(3, 2 * repeats))
    return {name: {"seconds_per_volume": statistics.median(per_volume[name]),
                   "seconds_per_patch": per_patch[name]} for name in predictors}
