"""Measurements for the demo table: epoch times from nnU-Net's logs, parameters, FLOPs, inference speed.

Counting and interleaved timing are ``nnunet_scd.measure``'s and epoch times
``nnunet_scd.trainers.training_log``'s; they are re-exported here under the names the demo uses.
Inference is timed in this process with nnU-Net's own ``nnUNetPredictor`` (the same settings as the
demo's ``nnUNetv2_predict`` call: no mirroring, step 0.5), so interpreter and model-loading start-up
is not counted. SCD and dense runs are interleaved and the median is reported, because the machine
may be shared and timings drift.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from torch import nn

from nnunet_scd.measure import count_flops, count_parameters, time_interleaved
from nnunet_scd.nnunet.predictor import load_predictor
from nnunet_scd.trainers.training_log import epoch_times

__all__ = [
    "count_flops",
    "count_parameters",
    "epoch_times",
    "input_shape",
    "load_predictor",
    "time_inference",
]


def _medians(functions: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, called in turn ``repeats`` times after one warm-up round."""
    seconds = time_interleaved({name: (None, fn) for name, fn in functions.items()}, repeats, warmup=1)
    return {name: statistics.median(values) for name, values in seconds.items()}


def input_shape(predictor: Any) -> tuple[int, ...]:
    """(C, *patch) of one sliding-window tile, from the plans, for any nnU-Net network."""
    channels = len(predictor.dataset_json.get("channel_names", predictor.dataset_json.get("modality", {})))
    return (channels, *predictor.configuration_manager.patch_size)


def _forward(network: nn.Module, patch: torch.Tensor) -> None:
    with torch.no_grad():
        network(patch)


def time_inference(predictors: Mapping[str, Any], images: Iterable[Path], repeats: int = 2) -> dict[str, dict]:
    """Median seconds per volume (nnUNetPredictor on raw images) and per patch (network forward) per model."""
    cases = [SimpleITKIO().read_images([str(p)]) for p in images]
    per_volume: dict[str, list[float]] = {name: [] for name in predictors}
    for image, props in cases:
        medians = _medians({name: partial(p.predict_single_npy_array, image, props)
                            for name, p in predictors.items()}, repeats)
        for name, value in medians.items():
            per_volume[name].append(value)

    patches = {name: torch.randn(1, *input_shape(p)) for name, p in predictors.items()}
    per_patch = _medians({name: partial(_forward, p.network, patches[name]) for name, p in predictors.items()},
                         max(3, 2 * repeats))
    return {name: {"seconds_per_volume": statistics.median(per_volume[name]),
                   "seconds_per_patch": per_patch[name]} for name in predictors}
