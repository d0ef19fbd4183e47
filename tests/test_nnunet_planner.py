"""The token-aware planner: token budget, patch and tokens per configuration, presets, plans file and command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from nnunet_scd.geometry import PRESETS, PlanPreset
from nnunet_scd.nnunet.token_budget import memory_batch_size, plan_token_geometry, token_budget
from nnunet_scd.nnunet.token_config import TokenConfig

VIT_B = dict(embed_dim=768, depth=12, mlp_ratio=4.0)
VIT_TINY = dict(embed_dim=192, depth=6, mlp_ratio=4.0)


def test_budget_is_set_by_attention_cost_at_the_default_memory() -> None:
    b = token_budget(**VIT_B)
    assert (b.max_tokens, b.bound) == (6 * 768, "attention")  # attention FLOPs = linear FLOPs at (2 + r) D tokens
    assert token_budget(**VIT_TINY).max_tokens == 6 * 192
    # The paper's two settings (1728 and 4096 tokens of ViT-B) fit the budget.
    assert 4096 <= b.max_tokens


def test_budget_is_set_by_memory_on_a_small_gpu_and_grows_with_it() -> None:
    small = token_budget(**VIT_B, gpu_memory_gb=2)
    assert small.bound == "memory" and small.max_tokens < token_budget(**VIT_B).max_tokens
    assert token_budget(**VIT_B, gpu_memory_gb=4).memory_tokens == 2 * small.memory_tokens
    # The memory limit is the encoder's activations at batch 2 in half the target.
    per_token = 12 * (18 + 4 * 4.0) * 768
    assert small.memory_tokens == int(0.5 * 2 * 2**30 / (2 * per_token))


def test_budget_refuses_a_nonsensical_vit_or_memory() -> None:
    with pytest.raises(ValueError, match="positive ViT size and memory"):
        token_budget(embed_dim=0, depth=12)
    with pytest.raises(ValueError, match="cannot hold one token"):
        token_budget(embed_dim=768, depth=12, gpu_memory_gb=1e-9)


@pytest.mark.parametrize(
    ("spacing", "median_shape", "cnn_patch", "expected_tokens"),
    [
        ((1.0, 1.0, 1.0), (128, 128, 128), (128, 128, 128), (8, 8, 8)),  # isotropic
        ((3.0, 0.7, 0.7), (100, 512, 512), (40, 224, 192), (2, 8, 8)),  # thick-slice CT
        ((5.0, 1.56, 1.56), (10, 246, 213), (10, 256, 224), (2, 8, 8)),  # ACDC-like cine MRI
        ((0.7, 0.7), (512, 512), (512, 512), (8, 8)),  # 2d
        ((2.5, 0.8, 0.8), (24, 48, 48), (28, 56, 56), (2, 8, 8)),  # the demo phantom
    ],
)
@pytest.mark.parametrize("vit", [VIT_B, VIT_TINY], ids=["B", "Tiny"])
def test_planned_patch_is_a_token_multiple_within_the_budget_with_spacing_aware_tokens(
    spacing: tuple, median_shape: tuple, cnn_patch: tuple, expected_tokens: tuple, vit: dict
) -> None:
    budget = token_budget(**vit).max_tokens
    tokens = plan_token_geometry(spacing, median_shape, cnn_patch, budget)
    assert tokens.token_size == expected_tokens  # never coarsened to fit the budget
    assert all(p % t == 0 and p >= t for p, t in zip(tokens.patch_size, tokens.token_size))
    assert tokens.num_tokens <= budget
    assert tokens.planned_patch_size == cnn_patch
    # Never more voxels than nnU-Net's CNN patch beyond rounding up to one token per axis.
    assert all(p < c + t for p, c, t in zip(tokens.patch_size, cnn_patch, tokens.token_size))


def test_a_patch_within_budget_is_only_rounded_up_and_an_oversized_one_shrinks_in_token_steps() -> None:
    within = plan_token_geometry((2.5, 0.8, 0.8), (24, 48, 48), (28, 56, 56), max_tokens=4608)
    assert within.patch_size == (28, 56, 56) and within.num_tokens == 14 * 7 * 7
    thick = plan_token_geometry((3.0, 0.7, 0.7), (100, 512, 512), (40, 224, 192), max_tokens=4608)
    assert thick.token_size == (2, 8, 8)
    assert thick.patch_size == (28, 144, 144) and thick.num_tokens == 4536
    # One token fewer along any shrinkable axis must not have been needed.
    assert all(math.prod(g + (i == a) for i, g in enumerate(thick.grid)) > 4608 for a in range(3))


def test_a_token_never_exceeds_a_short_image_axis() -> None:
    tokens = plan_token_geometry((1.0, 1.0, 1.0), (4, 64, 64), (4, 64, 64), max_tokens=4608)
    assert tokens.token_size == (4, 8, 8) and tokens.patch_size == (4, 64, 64)


def test_memory_lowers_the_batch_but_never_below_two_or_above_nnunets() -> None:
    assert memory_batch_size(256, 53, **VIT_TINY) == 53
    assert memory_batch_size(4608, 12, **VIT_B) == 2  # 1.45 GB of activations per sample in 4 GiB
    assert memory_batch_size(4096, 64, **VIT_B, gpu_memory_gb=40) == int(0.5 * 40 * 2**30 // (12 * 34 * 768 * 4096))
    assert memory_batch_size(10**6, 2, **VIT_B) == 2


def test_paper_presets_give_the_papers_crops_and_token_counts() -> None:
    btcv, brats = PRESETS["paper-btcv"], PRESETS["paper-brats"]
    assert btcv.patch_size == (96, 96, 96) and btcv.token_size == (8, 8, 8)
    assert TokenConfig(btcv.token_size, btcv.patch_size, btcv.patch_size).num_tokens == 1728
    assert btcv.target_spacing == (2.0, 1.5, 1.5)  # z first: 1.5 x 1.5 x 2.0 mm in (x, y, z)
    assert brats.patch_size == (128, 128, 128)
    assert TokenConfig(brats.token_size, brats.patch_size, brats.patch_size).num_tokens == 4096


def test_a_preset_whose_patch_is_not_a_token_multiple_is_refused() -> None:
    with pytest.raises(ValueError, match="not a multiple of the token size"):
        PlanPreset("odd", (96, 96, 90), (8, 8, 8))


# ---------------------------------------------------------------- the planner inside nnU-Net


@pytest.fixture
def nnunet_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"nnUNet_{name}", str(tmp_path / name))
    return tmp_path


def _dataset(root: Path, dataset_id: int, spacing: tuple, shape: tuple) -> str:
    from nnunet_scd.datasets.fingerprint import write_fingerprint_dataset

    return write_fingerprint_dataset(root / "raw", root / "preprocessed", dataset_id, "Test", spacing, shape)


@pytest.mark.slow
def test_planner_keeps_thick_slice_tokens_that_the_trainer_then_keeps(nnunet_dirs: Path) -> None:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_scd.nnunet.planner import plan_dataset
    from nnunet_scd.nnunet.token_config import resolve_token_config
    from nnunet_scd.trainers.catalog import nnUNetTrainerSCD

    name = _dataset(nnunet_dirs, 901, (3.0, 0.7, 0.7), (100, 512, 512))
    result = plan_dataset(901)
    assert result.plans_file == nnunet_dirs / "preprocessed" / name / "nnUNetPlans_SCD.json"
    plans = json.loads(result.plans_file.read_text())
    assert plans["plans_name"] == "nnUNetPlans_SCD"
    budget = token_budget(**VIT_B).max_tokens
    for configuration in ("2d", "3d_lowres", "3d_fullres"):
        config = plans["configurations"][configuration]
        record = config["scd_tokens"]
        assert record["planner"] == "nnUNetPlannerSCD" and record["token_budget"] == budget
        grid = [p // t for p, t in zip(config["patch_size"], record["token_size"])]
        assert all(p % t == 0 for p, t in zip(config["patch_size"], record["token_size"]))
        assert math.prod(grid) <= budget
        assert config["data_identifier"] == f"nnUNetPlans_SCD_{configuration}"
    fullres = plans["configurations"]["3d_fullres"]
    assert fullres["scd_tokens"]["planned_patch_size"] == [40, 224, 192]  # what nnU-Net's CNN planner chose
    assert fullres["scd_tokens"]["token_size"] == [2, 8, 8]

    # The trainer (4096-token cap on default plans) takes the planned tokens as they are ...
    manager = PlansManager(plans)
    tokens = nnUNetTrainerSCD.token_config(manager.get_configuration("3d_fullres"), "3d_fullres")
    assert tokens.token_size == (2, 8, 8) and list(tokens.patch_size) == fullres["patch_size"]
    # ... where on the CNN's patch it coarsens them to 8^3.
    default = {"patch_size": [40, 224, 192], "spacing": [3.0, 0.7, 0.7]}
    assert resolve_token_config(default, "3d_fullres", max_tokens=nnUNetTrainerSCD.max_tokens).token_size == (8, 8, 8)


def test_trainer_builds_its_network_from_the_planned_tokens(nnunet_dirs: Path) -> None:
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_scd.nnunet.planner import plan_dataset
    from nnunet_scd.trainers.catalog import nnUNetTrainerSCD_Tiny

    _dataset(nnunet_dirs, 902, (5.0, 1.56, 1.56), (10, 246, 213))
    plans = plan_dataset(902, vit_size="Tiny").plans
    manager = PlansManager(plans)
    config = manager.get_configuration("3d_fullres")
    with torch.device("meta"):
        net = nnUNetTrainerSCD_Tiny.build_network_architecture(manager, config, 1, 2, False)
    assert net.token_size == tuple(plans["configurations"]["3d_fullres"]["scd_tokens"]["token_size"]) == (2, 8, 8)
    assert math.prod(net.token_grid) <= token_budget(**VIT_TINY).max_tokens


@pytest.mark.slow
def test_paper_btcv_preset_plans_96_cubed_at_the_papers_spacing(nnunet_dirs: Path) -> None:
    from nnunet_scd.nnunet.planner import plan_dataset

    _dataset(nnunet_dirs, 903, (3.0, 0.76, 0.76), (148, 512, 512))
    plans = plan_dataset(903, preset="paper-btcv").plans
    fullres = plans["configurations"]["3d_fullres"]
    assert fullres["spacing"] == [2.0, 1.5, 1.5]
    assert fullres["patch_size"] == [96, 96, 96] and fullres["scd_tokens"]["token_size"] == [8, 8, 8]
    assert fullres["scd_tokens"]["preset"] == "paper-btcv"
    assert all(c["scd_tokens"]["preset"] is None for n, c in plans["configurations"].items()
               if n in ("2d", "3d_lowres"))  # planned by the budget, not pinned
    assert math.prod(p // t for p, t in zip(fullres["patch_size"], fullres["scd_tokens"]["token_size"])) == 1728


def test_preset_on_a_2d_dataset_is_refused_before_any_plans_are_written(nnunet_dirs: Path) -> None:
    from nnunet_scd.nnunet.planner import plan_dataset

    name = _dataset(nnunet_dirs, 904, (999.0, 0.5, 0.5), (1, 256, 256))
    with pytest.raises(ValueError, match="2D dataset; plan it without --preset"):
        plan_dataset(904, preset="paper-brats")
    assert not (nnunet_dirs / "preprocessed" / name / "nnUNetPlans_SCD.json").exists()
    plans = plan_dataset(904).plans  # without the preset it plans the 2d configuration
    assert list(plans["configurations"]) == ["2d"]


def test_replanning_keeps_configurations_added_by_hand(nnunet_dirs: Path) -> None:
    from nnunet_scd.nnunet.planner import plan_dataset

    _dataset(nnunet_dirs, 905, (1.0, 1.0, 1.0), (64, 64, 64))
    first = plan_dataset(905)
    plans = json.loads(first.plans_file.read_text())
    plans["configurations"]["3d_custom"] = {"inherits_from": "3d_fullres", "batch_size": 4}
    first.plans_file.write_text(json.dumps(plans))
    plan_dataset(905)
    assert json.loads(first.plans_file.read_text())["configurations"]["3d_custom"]["batch_size"] == 4
    assert not list(first.plans_file.parent.glob(".tmp_*")), "a temporary plans file was left behind"


# ---------------------------------------------------------------- the command


def test_plan_command_help_names_the_presets(capsys: pytest.CaptureFixture) -> None:
    from nnunet_scd.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["plan", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "paper-btcv" in out and "paper-brats" in out and "nnUNetPlans_SCD" in out


def test_plan_command_refuses_an_unknown_preset_with_the_choices(capsys: pytest.CaptureFixture) -> None:
    from nnunet_scd.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["plan", "-d", "17", "--preset", "paper-acdc"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'paper-acdc' (choose from" in capsys.readouterr().err


def test_plan_command_on_a_missing_dataset_says_so_in_one_line(nnunet_dirs: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    from nnunet_scd.cli import main

    assert main(["plan", "-d", "17"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nnunet-scd plan: Could not find a dataset with the ID 17") and "\n" not in err


def test_plan_command_refuses_an_unknown_vit_size(nnunet_dirs: Path, capsys: pytest.CaptureFixture) -> None:
    from nnunet_scd.cli import main

    _dataset(nnunet_dirs, 906, (1.0, 1.0, 1.0), (64, 64, 64))
    assert main(["plan", "-d", "906", "--vit-size", "L"]) == 2
    from nnunet_scd.geometry import VIT_SIZES

    assert f"unknown ViT size 'L'; choose one of {sorted(VIT_SIZES)}" in capsys.readouterr().err


def test_plan_command_prints_the_plans_and_the_next_commands(nnunet_dirs: Path, capsys: pytest.CaptureFixture) -> None:
    from nnunet_scd.cli import main

    _dataset(nnunet_dirs, 17, (3.0, 0.76, 0.76), (148, 512, 512))
    assert main(["plan", "-d", "17", "--preset", "paper-btcv"]) == 0
    out = capsys.readouterr().out
    assert "preset paper-btcv" in out
    assert "3d_fullres" in out and "96x96x96" in out and "1728" in out
    assert "nnUNetv2_preprocess -d 17 -plans_name nnUNetPlans_SCD" in out
    assert "nnUNetv2_train 017 3d_fullres 0 -tr nnUNetTrainerSCD -p nnUNetPlans_SCD" in out


def test_plan_command_compare_needs_nnunets_default_plans_and_says_how_to_write_them(
    nnunet_dirs: Path, capsys: pytest.CaptureFixture
) -> None:
    from nnunet_scd.cli import main

    _dataset(nnunet_dirs, 18, (1.0, 1.0, 1.0), (64, 64, 64))
    assert main(["plan", "-d", "18", "--compare"]) == 2
    assert "nnUNetv2_plan_experiment -d Dataset018_Test" in capsys.readouterr().err


def test_a_preset_says_when_it_pads_small_images_and_sets_the_2d_spacing(nnunet_dirs: Path) -> None:
    # Regression: a preset silently padded images smaller than its patch and changed the 2d spacing.
    from nnunet_scd.nnunet.planner import plan_dataset

    _dataset(nnunet_dirs, 905, (3.0, 0.76, 0.76), (20, 100, 100))  # 30 x 51 x 51 voxels at 2 x 1.5 x 1.5 mm
    result = plan_dataset(905, preset="paper-btcv")
    assert result.plans["configurations"]["3d_fullres"]["patch_size"] == [96, 96, 96]
    assert any("patch 96x96x96 is larger than the median image" in w and "padding" in w for w in result.warnings)
    assert result.plans["configurations"]["2d"]["spacing"] == [1.5, 1.5]
    assert any("also sets the 2d configuration's spacing to 1.5x1.5 mm" in w for w in result.warnings)
    _dataset(nnunet_dirs, 906, (3.0, 0.76, 0.76), (20, 100, 100))
    assert plan_dataset(906).warnings == ()
