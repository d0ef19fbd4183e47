"""A synthetic scan for nnU-Net's predictor: a phantom as NIfTI, plans for a bench network's patch, the predictor.

The per-volume bench predicts the file as ``nnUNetv2_predict`` predicts a case; the whole-volume bench hands the same
plans and predictor an in-memory volume. Only the network differs between the networks compared.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk  # noqa: N813
import torch
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from torch import nn

from nnunet_scd.datasets.phantom import check_phantom_fits, generate_phantom
from nnunet_scd.geometry import PRESETS, BenchConfig

__all__ = [
    "CONFIGURATION",
    "SCAN_SPACING_XYZ",
    "TILE_STEP",
    "Scan",
    "bench_dataset_json",
    "bench_plans",
    "bench_predictor",
    "check_scan_fits",
    "network_shape",
    "tile_count",
    "write_scan",
]

CONFIGURATION = "3d_fullres"
FILE_ENDING = ".nii.gz"
TILE_STEP = 0.5  # nnU-Net's default (nnUNetv2_predict -step_size)
# The file is a scan at the phantom's default spacing (0.8 x 0.8 mm in-plane, 2.5 mm slices, as BTCV's CT), and the
# plans' target spacing is the paper's BTCV spacing, so preprocessing and export resample as for a BTCV case. A file
# already at the target spacing would be no honest test: nnU-Net skips resampling when the shape does not change.
SCAN_SPACING_XYZ = (0.8, 0.8, 2.5)
_TARGET_SPACING_ZYX = PRESETS["paper-btcv"].target_spacing


@dataclass(frozen=True)
class Scan:
    """The phantom files (one per input channel) and the geometry nnU-Net gives them."""

    image_files: tuple[Path, ...]
    shape_zyx: tuple[int, ...]  # of the file
    spacing_xyz: tuple[float, ...]  # of the file
    network_shape_zyx: tuple[int, ...]  # after preprocessing: what the sliding window tiles
    target_spacing_zyx: tuple[float, ...]  # the plans' spacing, chosen so that preprocessing gives network_shape_zyx
    intensities: dict[str, float]  # of the labelled voxels, for CT normalisation (as nnU-Net's fingerprint)

    def geometry(self) -> dict[str, Any]:
        """Everything but the files (which live in a temporary folder)."""
        return {k: v for k, v in asdict(self).items() if k != "image_files"}


def network_shape(patch_size: tuple[int, ...], volume_scale: float) -> tuple[int, ...]:
    """The preprocessed volume: ``volume_scale`` x the patch per axis (at least the patch)."""
    return tuple(max(p, int(round(p * volume_scale))) for p in patch_size)


def tile_count(shape: tuple[int, ...], patch_size: tuple[int, ...], step: float = TILE_STEP) -> int:
    """How many patches nnU-Net's sliding window predicts for a volume of ``shape`` (it pads to the patch first)."""
    padded = [max(s, p) for s, p in zip(shape, patch_size)]
    return math.prod(len(steps) for steps in compute_steps_for_sliding_window(padded, patch_size, step))


def _scan_shape(network_shape_zyx: tuple[int, ...]) -> tuple[int, int, int]:
    scan_spacing_zyx = SCAN_SPACING_XYZ[::-1]
    return tuple(max(8, int(round(n * t / s)))  # type: ignore[return-value]
                 for n, t, s in zip(network_shape_zyx, _TARGET_SPACING_ZYX, scan_spacing_zyx))


def check_scan_fits(config: BenchConfig, volume_scale: float) -> None:
    """Raise ``ValueError`` (one line) for a geometry the phantom cannot be made for, before any work."""
    if len(config.patch_size) != 3:
        raise ValueError(f"the {config.name} configuration has a {len(config.patch_size)}D patch; the phantom is 3D")
    check_phantom_fits(_scan_shape(network_shape(config.patch_size, volume_scale)), "choose a smaller volume scale")


def _intensities(image: np.ndarray, label: np.ndarray) -> dict[str, float]:
    voxels = image[label > 0].astype(np.float64)
    return {"mean": float(voxels.mean()), "std": float(voxels.std()), "median": float(np.median(voxels)),
            "min": float(voxels.min()), "max": float(voxels.max()),
            "percentile_00_5": float(np.percentile(voxels, 0.5)), "percentile_99_5": float(np.percentile(voxels, 99.5))}


def write_scan(config: BenchConfig, volume_scale: float, folder: Path, seed: int = 0) -> Scan:
    """Write one phantom case into ``folder`` whose preprocessed shape is ``volume_scale`` x the config's patch.

    The phantom's size and spacing vary around the nominal ones, so the plans' target spacing is set from the
    case (close to the paper's BTCV spacing) to make the preprocessed shape exact, and with it the tile count.
    Every input channel gets the same image.
    """
    check_scan_fits(config, volume_scale)
    target = network_shape(config.patch_size, volume_scale)
    phantom = generate_phantom(np.random.default_rng(seed), shape=_scan_shape(target), spacing_xyz=SCAN_SPACING_XYZ)
    image = sitk.GetImageFromArray(phantom.image)
    image.SetSpacing(phantom.spacing_xyz)
    folder.mkdir(parents=True, exist_ok=True)
    files = tuple(folder / f"scan_{c:04d}{FILE_ENDING}" for c in range(config.input_channels))
    for file in files:
        sitk.WriteImage(image, str(file), useCompression=True)
    spacing_zyx = phantom.spacing_xyz[::-1]
    # nnU-Net's new shape is round(spacing / target spacing * shape) per axis, which this makes equal to target.
    target_spacing = tuple(float(s * n / t) for s, n, t in zip(spacing_zyx, phantom.image.shape, target))
    return Scan(files, tuple(phantom.image.shape), phantom.spacing_xyz, target, target_spacing,
                _intensities(phantom.image, phantom.label))


def _resampling_entries() -> dict[str, Any]:
    # nnU-Net's own choice, as its planner writes it into every plans file (these methods read nothing from the
    # planner), so the bench follows nnU-Net's defaults instead of a copy of them.
    data_fn, data_kwargs, seg_fn, seg_kwargs = ExperimentPlanner.determine_resampling(None)
    probabilities_fn, probabilities_kwargs = ExperimentPlanner.determine_segmentation_softmax_export_fn(None)
    return {"resampling_fn_data": data_fn.__name__, "resampling_fn_data_kwargs": data_kwargs,
            "resampling_fn_seg": seg_fn.__name__, "resampling_fn_seg_kwargs": seg_kwargs,
            "resampling_fn_probabilities": probabilities_fn.__name__,
            "resampling_fn_probabilities_kwargs": probabilities_kwargs}


def bench_plans(config: BenchConfig, spacing_zyx: tuple[float, ...] = _TARGET_SPACING_ZYX,
                intensities: dict[str, float] | None = None) -> dict[str, Any]:
    """An nnU-Net plans dict with one 3d_fullres configuration at the config's patch: CT normalisation
    (``intensities``, or none for a predictor that is never given a file), nnU-Net's default resampling."""
    channels = config.input_channels
    configuration = {
        "data_identifier": f"bench_{CONFIGURATION}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": config.batch_size,
        "patch_size": list(config.patch_size),
        "spacing": list(spacing_zyx),
        "normalization_schemes": ["CTNormalization"] * channels,
        "use_mask_for_norm": [False] * channels,
        "architecture": {"network_class_name": "benchmark", "arch_kwargs": {}, "_kw_requires_import": []},
        **_resampling_entries(),
    }
    return {
        "dataset_name": "Dataset000_Bench",
        "plans_name": "bench",
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": list(range(len(config.patch_size))),
        "transpose_backward": list(range(len(config.patch_size))),
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {str(c): intensities for c in range(channels)}
        if intensities else {},
        "configurations": {CONFIGURATION: configuration},
    }


def bench_dataset_json(config: BenchConfig) -> dict[str, Any]:
    """The labels (the config's class count, so logits and their resampling have its size), one CT channel each."""
    return {"channel_names": {str(c): "CT" for c in range(config.input_channels)},
            "labels": {"background": 0, **{f"class{i}": i for i in range(1, config.num_classes)}},
            "file_ending": FILE_ENDING}


def bench_predictor(network: nn.Module, plans: dict[str, Any], dataset_json: dict[str, Any], device: torch.device,
                    mirror: bool = False, parameters: list[dict[str, torch.Tensor]] | None = None) -> nnUNetPredictor:
    """``nnUNetPredictor`` around ``network`` by ``manual_initialization`` (as nnU-Net's trainer validates).

    ``mirror``: test-time mirroring along every axis, nnU-Net's default for 3D (8 forwards per tile).
    ``parameters``: the state dicts ``predict_logits_from_preprocessed_data`` loads, one per fold.
    """
    with contextlib.redirect_stdout(io.StringIO()):  # on CPU nnU-Net prints a notice into the table's stream
        predictor = nnUNetPredictor(tile_step_size=TILE_STEP, use_gaussian=True, use_mirroring=mirror,
                                    perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                                    verbose_preprocessing=False, allow_tqdm=False)
    plans_manager = PlansManager(plans)
    mirror_axes = tuple(range(len(plans_manager.get_configuration(CONFIGURATION).patch_size)))
    predictor.manual_initialization(network, plans_manager, plans_manager.get_configuration(CONFIGURATION),
                                    parameters, dataset_json, "benchmark", mirror_axes)
    return predictor
