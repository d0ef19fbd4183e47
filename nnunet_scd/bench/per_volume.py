"""Per-volume mode: a synthetic scan file predicted through nnU-Net's own steps, per network, timed part by part.

The steps are those of ``nnUNetPredictor.predict_from_files_sequential``, called one at a time so that each can be
timed: the image reader, ``DefaultPreprocessor.run_case_npy`` (crop, CT normalisation, resampling to the plans'
spacing), ``predict_logits_from_preprocessed_data`` (load the fold's weights, sliding window with Gaussian weighting,
optionally test-time mirroring), then the two halves of ``export_prediction_from_logits``:
``convert_predicted_logits_to_segmentation_with_correct_shape`` (resampling the logits back to the file's grid, argmax,
undoing the crop) and the writer. No step is ours, so the figures are nnU-Net's with another network in it.

``nnUNetv2_predict`` runs the same functions, but preprocesses and exports other cases in worker processes while the
network predicts, and by default predicts with the five folds in turn (the sliding window five times). So over a
folder its wall time per case can be lower than the total here, and with five folds the network and accumulation
parts are five times larger.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
from torch import nn

from nnunet_scd.bench.scan import (
    TILE_STEP,
    Scan,
    bench_dataset_json,
    bench_plans,
    bench_predictor,
    tile_count,
    write_scan,
)
from nnunet_scd.bench.sliding_window import plain_conv_unet
from nnunet_scd.bench.timing import PeakMemory, build_network, configure_backends
from nnunet_scd.geometry import BenchConfig
from nnunet_scd.measure import ForwardTimer, synchronize, time_interleaved

__all__ = ["PARTS", "VolumeRun", "time_per_volume"]

# What one volume's time is broken into, in the order it happens. "accumulation" is the sliding window's time
# outside the network's forward calls: loading the fold's weights, padding, cutting tiles, mirroring flips, the
# Gaussian weighting and adding into the logits, the final division.
PARTS = ("read", "preprocess", "network", "accumulation", "resample", "write")


@contextlib.contextmanager
def _clock(parts: dict[str, float], name: str, device: torch.device) -> Iterator[None]:
    synchronize(device)
    start = time.perf_counter()
    yield
    synchronize(device)
    parts[name] = time.perf_counter() - start


class VolumeRun:
    """One network with one mirroring setting: its nnU-Net predictor, and the breakdown of each volume it predicts.

    Calling it predicts the scan once and records the seconds of each part of ``PARTS`` and the peak memory
    (``PeakMemory``, started by ``start``, which the interleaved timing runs untimed before each call).
    """

    def __init__(self, name: str, network: nn.Module, parameters: list[dict[str, torch.Tensor]], mirror: bool,
                 scan: Scan, plans: dict[str, Any], dataset_json: dict[str, Any], device: torch.device,
                 output_stem: Path) -> None:
        self.name, self.mirror, self.scan, self.device = name, mirror, scan, device
        self.timer = ForwardTimer(network, device)
        self.predictor = bench_predictor(self.timer, plans, dataset_json, device, mirror, parameters)
        self.preprocessor = self.predictor.configuration_manager.preprocessor_class(verbose=False)
        self.output_file = f"{output_stem}{dataset_json['file_ending']}"
        self.memory = PeakMemory(device)
        self.records: list[dict[str, float]] = []
        self.peaks: list[dict[str, int | None]] = []
        self.preprocessed_shape: tuple[int, ...] | None = None
        self.forward_calls = 0  # of the last volume: tiles, times 8 with mirroring in 3D

    def start(self) -> None:
        self.memory.start()

    def __call__(self) -> None:
        self.records.append(self.predict())
        self.peaks.append(self.memory.peak())

    def predict(self) -> dict[str, float]:
        """Predict the scan file into ``output_file``; seconds per part."""
        p = self.predictor
        parts: dict[str, float] = {}
        reader_writer = p.plans_manager.image_reader_writer_class()
        with _clock(parts, "read", self.device):
            image, properties = reader_writer.read_images([str(f) for f in self.scan.image_files])
        with _clock(parts, "preprocess", self.device):
            data, _, properties = self.preprocessor.run_case_npy(image, None, properties, p.plans_manager,
                                                                 p.configuration_manager, p.dataset_json)
        del image
        self.preprocessed_shape = tuple(data.shape[1:])
        self.timer.reset()
        with _clock(parts, "sliding window", self.device):
            # As nnUNetv2_predict's predict_from_data_iterator: the array in as a tensor, the logits out as numpy.
            logits = p.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu().numpy()
        del data
        parts["network"], self.forward_calls = self.timer.seconds, self.timer.calls
        parts["accumulation"] = parts.pop("sliding window") - parts["network"]
        with _clock(parts, "resample", self.device):
            segmentation = convert_predicted_logits_to_segmentation_with_correct_shape(
                logits, p.plans_manager, p.configuration_manager, p.label_manager, properties)
        del logits
        with _clock(parts, "write", self.device):
            reader_writer.write_seg(segmentation, self.output_file, properties)
        return {name: parts[name] for name in PARTS}


def _networks(config: BenchConfig, device: torch.device) -> dict[str, nn.Module]:
    return {
        "scd": build_network(config, config.keep_ratio, device),
        "unetr": build_network(config, None, device),
        "nnunet": plain_conv_unet(config).to(device),
    }


def _fold_parameters(network: nn.Module) -> list[dict[str, torch.Tensor]]:
    # nnU-Net loads a fold's weights into the network before every volume, from the state dict its checkpoint loader
    # left on the CPU; a copy here has the keys of the ForwardTimer that wraps the network.
    return [{f"module.{k}": v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()}]


def _run_key(name: str, mirror: bool) -> str:
    return f"{name}/{'mirror' if mirror else 'no mirror'}"


def _peak(peaks: Sequence[dict[str, int | None]], key: str) -> int | None:
    values = [p.get(key) for p in peaks]
    return None if not values or any(v is None for v in values) else max(values)  # type: ignore[type-var]


def _entry(run: VolumeRun, seconds: list[float], warmup: int) -> dict[str, Any]:
    records, peaks = run.records[warmup:], run.peaks[warmup:]
    parts = {name: [r[name] for r in records] for name in PARTS}
    return {
        "network": run.name,
        "mirror": run.mirror,
        "seconds": seconds,
        "parts": parts,
        "median_s": statistics.median(seconds),
        "median_parts": {name: statistics.median(values) for name, values in parts.items()},
        "forward_calls": run.forward_calls,
        "peak_cpu_bytes": _peak(peaks, "cpu_bytes"),
        "peak_cuda_bytes": _peak(peaks, "cuda_bytes") if run.device.type == "cuda" else None,
    }


def _add_ratios(entries: list[dict[str, Any]]) -> None:
    """Speed-ups within each mirroring setting, as other time / this time, so that bigger is faster."""
    for entry in entries:
        same = {e["network"]: e["median_s"] for e in entries if e["mirror"] == entry["mirror"]}
        entry["speedup_vs_unetr"] = same["unetr"] / entry["median_s"]
        entry["speedup_vs_nnunet"] = same["nnunet"] / entry["median_s"]


def time_per_volume(
    config: BenchConfig,
    device: torch.device,
    volume_scale: float,
    mirrors: Sequence[bool] = (False,),
    repeats: int = 3,
    warmup: int = 1,
    progress: Callable[[Iterator[int], int], Iterator[int]] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Predict one phantom scan per (network, mirroring) per round, interleaved, and summarise the rounds.

    The scan and the predictions are written to a temporary folder (``$TMPDIR``), removed afterwards.
    Weights are random: the cost of a volume does not depend on what is predicted.
    """
    backends = configure_backends(device)
    with tempfile.TemporaryDirectory(prefix="nnunet_scd_per_volume_") as tmp:
        folder = Path(tmp)
        log(f"writing the phantom scan ({volume_scale} x the {config.name} patch after resampling) to {folder}")
        scan = write_scan(config, volume_scale, folder / "input")
        plans = bench_plans(config, scan.target_spacing_zyx, scan.intensities)
        dataset_json = bench_dataset_json(config)
        runs: dict[str, VolumeRun] = {}
        for name, network in _networks(config, device).items():
            parameters = _fold_parameters(network)  # one copy per network, shared by its mirroring settings
            for mirror in mirrors:
                key = _run_key(name, mirror)
                runs[key] = VolumeRun(name, network, parameters, mirror, scan, plans, dataset_json, device,
                                      folder / key.replace("/", "_").replace(" ", "_"))
        tiles = tile_count(scan.network_shape_zyx, config.patch_size)
        log(f"scan {'x'.join(map(str, scan.shape_zyx))} voxels, preprocessed to "
            f"{'x'.join(map(str, scan.network_shape_zyx))}: {tiles} tiles of {'x'.join(map(str, config.patch_size))}; "
            f"{len(runs)} runs x {warmup + repeats} rounds ({warmup} warm-up) on {device} {backends}")
        wrap = None if progress is None else (lambda it: progress(it, warmup + repeats))
        times = time_interleaved({key: (run.start, run) for key, run in runs.items()}, repeats, warmup, device, wrap)
    shapes = {run.preprocessed_shape for run in runs.values()}
    if shapes != {scan.network_shape_zyx}:  # nnU-Net cropped or resampled otherwise than planned: tiles differ
        raise RuntimeError(f"the scan was preprocessed to {sorted(shapes)}, not the planned {scan.network_shape_zyx}")
    entries = [_entry(run, times[key], warmup) for key, run in runs.items()]
    _add_ratios(entries)
    return {
        "mode": "per-volume",
        "config": config.as_dict(),
        "device": str(device),
        "backends": backends,
        "repeats": repeats,
        "warmup": warmup,
        "volume_scale": volume_scale,
        "scan": {**scan.geometry(), "tiles": tiles, "tile_step": TILE_STEP},
        "memory_kind": {"cpu": PeakMemory.CPU_KIND, **({"cuda": PeakMemory.CUDA_KIND} if device.type == "cuda"
                                                       else {})},
        "runs": entries,
    }
