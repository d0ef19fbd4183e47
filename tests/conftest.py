"""Shared fixtures: small SCDNets for CPU tests, fake nnU-Net plans, and nnU-Net's folders in a temp dir."""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from nnunet_scd import SCDNet
from nnunet_scd.commands import bench
from nnunet_scd.trainers.ext_trainer import TRAINER_SHIM_DIR

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_denormals() -> Iterator[None]:
    # The bench flushes denormals (configure_backends): process-wide state that outlived the test and made the
    # hypothesis tests after it fail (they refuse to run without subnormal floats). torch's default is off.
    yield
    torch.set_flush_denormal(False)


@pytest.fixture
def tiny_sizes() -> dict[str, Any]:
    """SCDNet sizes small enough for a CPU test, deep enough for three pruning stages and UNETR skips at 1/2/3."""
    return dict(embed_dim=32, depth=4, num_heads=2, prune_after=(1, 2, 3), feature_size=4)


@pytest.fixture
def tiny_scdnet(tiny_sizes: dict[str, Any]) -> Callable[..., SCDNet]:
    """``SCDNet(...)`` with the tiny sizes; keywords given override them."""
    def build(*args: Any, **kwargs: Any) -> SCDNet:
        return SCDNet(*args, **{**tiny_sizes, **kwargs})
    return build


def fake_plans(
    patch: list[int],
    spacing: list[float],
    configuration: str = "3d_fullres",
    dataset_name: str = "Dataset999_Unit",
    other_configurations: dict[str, dict] | None = None,
    **entries: Any,
) -> dict[str, Any]:
    """The parts of an nnU-Net plans file that trainers, token configuration and slim plans read before any data.

    ``entries`` are added to the configuration (e.g. ``scd_tokens``); ``other_configurations`` are added
    beside it as given (e.g. a cascade stage that inherits from it).
    """
    # Deep copies: code under test edits plans in place, and the arguments may be shared constants.
    entries, other_configurations = copy.deepcopy(entries), copy.deepcopy(other_configurations or {})
    return {
        "dataset_name": dataset_name,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing),
        "original_median_shape_after_transp": [2 * p for p in patch],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": list(range(len(patch))),
        "transpose_backward": list(range(len(patch))),
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {},
        "configurations": {
            configuration: {
                "data_identifier": f"nnUNetPlans_{configuration}",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": list(patch),
                "spacing": list(spacing),
                "normalization_schemes": ["CTNormalization"],
                "use_mask_for_norm": [False],
                "batch_dice": False,
                "architecture": {"network_class_name": "unused", "arch_kwargs": {}, "_kw_requires_import": []},
                **entries,
            },
            **other_configurations,
        },
    }


@pytest.fixture
def make_plans() -> Callable[..., dict[str, Any]]:
    """The one builder of fake plans (``fake_plans``); each call returns a fresh dict."""
    return fake_plans


def _parse_bench(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nnunet-scd")
    bench.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["bench", *argv])


@pytest.fixture
def parse_bench() -> Callable[..., argparse.Namespace]:
    """``nnunet-scd bench ARGV`` parsed as the command line parses it: ``parse_bench("--config", "tiny")``."""
    return _parse_bench


@pytest.fixture
def nnunet_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """nnU-Net's three folders in ``tmp_path`` and our shim folder in nnUNet_extTrainer."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    monkeypatch.setenv("nnUNet_extTrainer", str(TRAINER_SHIM_DIR))
    return tmp_path


class _RunsCode:
    """Unpickles into a call of ``os.makedirs(marker)``: what any code a hostile checkpoint names could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        import os

        return os.makedirs, (str(self.marker),)


@pytest.fixture
def code_running_checkpoint(tmp_path: Path) -> Callable[[Path], Path]:
    """Write, at a given path, a checkpoint whose full unpickle creates a marker folder; returns the marker."""

    def write(path: Path) -> Path:
        marker = tmp_path / "code_ran"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"network_weights": {}, "trainer_name": "nnUNetTrainerSCD", "payload": _RunsCode(marker)}, path)
        return marker

    return write
