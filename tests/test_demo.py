"""Unit tests for the pieces of ``nnunet-scd demo`` (the full pipeline runs nnU-Net for minutes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_scd.demo.measure import count_flops, count_parameters, epoch_times
from nnunet_scd.demo.plots import (
    plot_dice_vs_throughput,
    plot_segmentations,
    plot_token_overlay,
    token_boxes,
    tokens_on_slice,
)
from nnunet_scd.demo.report import build_table, table_to_markdown, write_table

REPO = Path(__file__).resolve().parents[1]
LABELS = {"background": 0, "spleen": 1, "liver": 2}


def _metrics(dice: float, n_ref: int, total: int = 1000) -> dict:
    tp = int(dice * n_ref)
    return {"Dice": dice, "IoU": dice, "TP": tp, "FP": n_ref - tp, "FN": n_ref - tp,
            "TN": total - 2 * n_ref + tp, "n_pred": n_ref, "n_ref": n_ref}


def _fake_summary(path: Path, spleen: float, liver: float) -> dict:
    """A summary.json as nnU-Net's evaluator writes it, read back from disk (string keys)."""
    case = {"metrics": {"1": _metrics(spleen, 10), "2": _metrics(liver, 50)},
            "reference_file": "a.nii.gz", "prediction_file": "b.nii.gz"}
    summary = {"metric_per_case": [case], "mean": {"1": {"Dice": spleen}, "2": {"Dice": liver}},
               "foreground_mean": {"Dice": (spleen + liver) / 2}}
    path.write_text(json.dumps(summary))
    return json.loads(path.read_text())


def _measurement(trainer: str, epoch: list[float], volume: float, patch: float, flops: float,
                 network_steps: float = 4.0) -> dict:
    return {"trainer": trainer, "epoch_seconds": epoch, "seconds_per_volume": volume, "seconds_per_patch": patch,
            "parameters": 2_000_000, "flops": flops,
            "epoch_breakdown": {"network steps": network_steps, "waiting for batches": 0.5, "validation": 0.25,
                                "end of epoch": 0.5}}


def test_table_is_built_from_summary_json_with_ratios_and_chance(tmp_path: Path) -> None:
    summaries = {"SCD": _fake_summary(tmp_path / "a.json", 0.5, 0.9),
                 "dense UNETR": _fake_summary(tmp_path / "b.json", 0.6, 0.8),
                 "nnU-Net": _fake_summary(tmp_path / "c.json", 0.7, 0.9)}
    measurements = {"SCD": _measurement("S", [9.0, 4.0, 5.0], 1.0, 0.1, 2e9),
                    "dense UNETR": _measurement("D", [12.0, 6.0, 8.0], 1.5, 0.2, 3e9),
                    "nnU-Net": _measurement("N", [20.0, 20.0], 2.0, 0.4, 9e9)}
    table = build_table([summaries], [measurements], LABELS, notes={"setting": "test"})
    scd, dense, stock = table["models"]
    assert scd["dice"] == {"spleen": 0.5, "liver": 0.9}
    assert scd["mean_dice"] == pytest.approx(0.7) and scd["mean_dice_sd"] == 0.0
    assert scd["train_seconds_per_epoch"] == 5.0  # median, so the warm-up epoch does not dominate
    assert dense["gflops_per_patch"] == pytest.approx(3.0)
    assert table["over_sparse"]["dense UNETR"]["seconds_per_volume"] == pytest.approx(1.5)
    assert table["over_sparse"]["dense UNETR"]["train_seconds_per_epoch"] == pytest.approx(8.0 / 5.0)
    assert table["over_sparse"]["nnU-Net"]["train_seconds_per_epoch"] == pytest.approx(4.0)
    assert stock["epoch_breakdown"]["network steps"] == 4.0
    # chance = mean over classes of the class's voxel fraction: (10 + 50) / 1000 / 2
    assert table["chance_dice"] == pytest.approx(0.03)

    markdown = table_to_markdown(table)
    assert "| | SCD | dense UNETR | nnU-Net | dense UNETR / SCD | nnU-Net / SCD |" in markdown
    assert "| Dice spleen | 0.500 | 0.600 | 0.700 |" in markdown
    assert "**0.700**" in markdown and "1.50x" in markdown and "4.00x" in markdown and "setting: test" in markdown
    assert "of which network steps" in markdown and "±" not in markdown
    json_path, md_path = write_table(table, tmp_path / "report")
    assert json.loads(json_path.read_text())["models"][2]["model"] == "nnU-Net"
    assert md_path.read_text() == markdown


def test_seeds_are_reported_as_mean_and_sd(tmp_path: Path) -> None:
    runs = [(0.5, 0.9, 5.0, 1.0), (0.3, 0.7, 7.0, 1.2), (0.4, 0.8, 6.0, 1.1)]
    summaries, measurements = [], []
    for i, (spleen, liver, epoch, volume) in enumerate(runs):
        summaries.append({"SCD": _fake_summary(tmp_path / f"s{i}.json", spleen, liver),
                          "dense UNETR": _fake_summary(tmp_path / f"d{i}.json", spleen, liver)})
        measurements.append({"SCD": {**_measurement("S", [epoch], volume, 0.1, 2e9), "enrichment": [2.0 + i, 3.0]},
                             "dense UNETR": _measurement("D", [2 * epoch], 2 * volume, 0.2, 3e9)})
    table = build_table(summaries, measurements, LABELS)
    scd = table["models"][0]
    assert scd["seeds"] == table["seeds"] == 3
    assert scd["mean_dice"] == pytest.approx(0.6) and scd["mean_dice_sd"] == pytest.approx(0.1)
    assert scd["mean_dice_per_seed"] == pytest.approx([0.7, 0.5, 0.6])
    assert scd["dice"]["liver"] == pytest.approx(0.8)
    assert scd["train_seconds_per_epoch"] == pytest.approx(6.0) and scd["train_seconds_per_epoch_sd"] == 1.0
    assert scd["token_enrichment"] == pytest.approx([3.0, 3.0])
    ratios = table["over_sparse"]["dense UNETR"]
    assert ratios["train_seconds_per_epoch"] == pytest.approx(2.0)
    assert ratios["seconds_per_volume_per_seed"] == pytest.approx([2.0, 2.0, 2.0])
    markdown = table_to_markdown(table)
    assert "**0.600 ± 0.100**" in markdown and "6.0 ± 1.0" in markdown and "3 training seeds: mean ± sd" in markdown


def test_epoch_times_are_parsed_from_every_training_log(tmp_path: Path) -> None:
    (tmp_path / "training_log_2026_01_01_00_00_00.txt").write_text(
        "2026-01-01 00:00:01.0: Epoch 0\n2026-01-01 00:00:09.0: Epoch time: 8.25 s\n"
        "2026-01-01 00:00:09.1: Epoch 1\n2026-01-01 00:00:15.0: Epoch time: 5.9 s\n")
    (tmp_path / "training_log_2026_01_01_01_00_00.txt").write_text(  # a resumed run
        "2026-01-01 01:00:00.0: Epoch 2\n2026-01-01 01:00:07.0: Epoch time: 7 s\n")
    (tmp_path / "debug.json").write_text("{}")
    assert epoch_times(tmp_path) == [8.25, 5.9, 7.0]
    assert epoch_times(tmp_path / "missing") == []


def test_token_boxes_map_grid_positions_to_voxels() -> None:
    grid, token = (2, 3, 4), (2, 8, 8)
    boxes = token_boxes([0, 23, 5], grid, token)
    assert boxes[0].tolist() == [0, 0, 0, 2, 8, 8]
    assert boxes[1].tolist() == [2, 16, 24, 4, 24, 32]  # 23 = (1, 2, 3) in C order
    assert boxes[2].tolist() == [0, 8, 8, 2, 16, 16]  # 5 = (0, 1, 1)
    assert tokens_on_slice(boxes, 3).tolist() == [[16, 24, 24, 32]]
    assert tokens_on_slice(boxes, 1).tolist() == [[0, 0, 8, 8], [8, 8, 16, 16]]


def test_token_boxes_agree_with_the_patch_embedding_layout() -> None:
    """A voxel inside token i's box changes only embedding row i, so the boxes match SCDNet's token order."""
    from nnunet_scd.model.vit import PatchEmbed

    grid, token = (2, 3, 4), (2, 4, 4)
    embed = PatchEmbed(1, 8, token).eval()
    zeros = torch.zeros(1, 1, *(g * t for g, t in zip(grid, token, strict=True)))
    for index in (0, 7, 23):
        z0, y0, x0, *_ = token_boxes([index], grid, token)[0]
        x = zeros.clone()
        x[0, 0, z0, y0, x0] = 1.0
        with torch.no_grad():
            changed = (embed(x) - embed(zeros)).abs().sum(-1)[0]
        assert changed.nonzero().flatten().tolist() == [index]


def test_kept_indices_of_a_real_network_map_inside_the_patch() -> None:
    from nnunet_scd import SCDNet

    patch, token = (8, 32, 32), (2, 8, 8)
    net = SCDNet(1, 3, patch, token, embed_dim=32, depth=4, num_heads=2, prune_after=(1, 2, 3),
                 feature_size=4).eval()
    with torch.no_grad():
        net(torch.randn(1, 1, *patch))
    sizes = []
    for kept in net.kept_indices:
        boxes = token_boxes(kept[0].numpy(), net.token_grid, net.token_size)
        assert (boxes[:, :3] >= 0).all() and (boxes[:, 3:] <= np.array(patch)).all()
        sizes.append(len(boxes))
    assert sizes == sorted(sizes, reverse=True) and sizes[0] < np.prod(net.token_grid)
    assert count_parameters(net) > 0 and count_flops(net, (1, 1, *patch)) > 0


def _png_shape(path: Path) -> tuple[int, ...]:
    import matplotlib.image

    return matplotlib.image.imread(str(path)).shape


def test_overlay_writes_a_png_of_the_expected_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image, labels = rng.normal(size=(56, 56)), np.zeros((56, 56), dtype=np.uint8)
    labels[20:30, 10:40] = 2
    boxes = token_boxes(np.arange(0, 98, 3), (2, 7, 7), (2, 8, 8))
    stages = [tokens_on_slice(boxes, 1), tokens_on_slice(boxes[:5], 1), tokens_on_slice(boxes[:1], 1)]
    path = plot_token_overlay(image, labels, stages, (2, 7, 7), (2, 8, 8), tmp_path / "tokens.png")
    assert _png_shape(path)[:2] == (390, 4 * 320)  # figsize (3.2 per panel x 3.9 in) at 100 dpi


def test_segmentation_and_throughput_figures_are_written(tmp_path: Path) -> None:
    truth = np.zeros((40, 50), dtype=np.uint8)
    truth[10:20, 10:20] = 1
    seg = plot_segmentations(np.ones((40, 50)), truth, {"SCD": truth, "dense UNETR": truth * 2}, LABELS,
                             tmp_path / "seg.png")
    assert _png_shape(seg)[:2] == (380, 1200)
    models = [{"model": "SCD", "mean_dice": 0.6, "volumes_per_second": 2.0, "train_seconds_per_epoch": 5.0},
              {"model": "dense UNETR", "mean_dice": 0.62, "volumes_per_second": 1.2, "train_seconds_per_epoch": 7.0}]
    plot = plot_dice_vs_throughput(models, tmp_path / "plot.png", chance=0.02)
    assert _png_shape(plot)[:2] == (380, 900)


def test_demo_trainers_are_twins_next_to_stock_nnunet_with_one_budget() -> None:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_scd.demo.config import DEFAULT, QUICK
    from nnunet_scd.trainers.base import RecipeTrainer
    from nnunet_scd.trainers.catalog import TRAINERS

    for config in (DEFAULT, QUICK):
        scd, dense, stock = (TRAINERS[name] for name in config.trainers.values())
        kwargs = scd.network_kwargs()
        assert (kwargs["embed_dim"], kwargs["depth"], kwargs["prune_after"]) == (192, 12, (3, 6, 9))
        assert dense.network_kwargs() == {**kwargs, "keep_ratios": None}
        for cls in (scd, dense):
            assert (cls.recipe.epochs, cls.recipe.iterations_per_epoch) == (config.budget.epochs,
                                                                            config.budget.iterations_per_epoch)
        assert issubclass(stock, nnUNetTrainer) and issubclass(stock, RecipeTrainer)
        assert (stock.recipe.epochs, stock.recipe.iterations_per_epoch, stock.recipe.val_iterations_per_epoch) == (
            config.budget.epochs, config.budget.iterations_per_epoch, config.budget.val_iterations_per_epoch)
        assert stock.recipe.optimizer is None  # stock nnU-Net keeps its own optimiser
    assert DEFAULT.budget.train_iterations > QUICK.budget.train_iterations


def test_progress_bars_are_silent_when_output_is_not_a_terminal() -> None:
    script = ("from nnunet_scd.demo.steps import progress, stage\n"
              "from pathlib import Path\n"
              "with stage('count', Path('.')):\n"
              "    for _ in progress(iterable=range(50), desc='counting'):\n"
              "        pass\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            check=True)
    assert "counting" not in result.stderr + result.stdout  # no bar redrawn into a log
    assert len(result.stdout.splitlines()) == 1 and "Done: count (" in result.stdout


def test_demo_help_runs_and_documents_the_options() -> None:
    result = subprocess.run([sys.executable, "-m", "nnunet_scd.cli", "demo", "--help"], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    for text in ("--quick", "--seeds", "--work-dir", "nnUNet_raw", "nnunet_scd_work"):
        assert text in result.stdout


def test_a_failed_demo_names_the_command_correctly(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # Regression: f"\nnunet-scd ..." swallowed the "n" into the newline and printed "nunet-scd demo failed".
    import argparse

    from nnunet_scd.commands import demo
    from nnunet_scd.demo import pipeline
    from nnunet_scd.demo.steps import DemoError

    def fail(*_: object, **__: object) -> None:
        raise DemoError("step x failed")

    monkeypatch.setattr(pipeline, "run_demo", fail)
    assert demo.run(argparse.Namespace(work_dir="unused", quick=True, seeds=1)) == 1
    assert capsys.readouterr().err == "\nnnunet-scd demo failed: step x failed\n"


def test_a_failing_step_names_the_step_and_its_log(tmp_path: Path) -> None:
    from nnunet_scd.demo.steps import DemoError, run_logged, stage

    log_file = tmp_path / "logs" / "step.log"
    command = [sys.executable, "-c", "print('working'); raise SystemExit('nnU-Net said no')"]
    expected = r"Step 'train SCD' failed \(exit code 1\)(.|\n)*nnU-Net said no(.|\n)*step.log"
    with pytest.raises(DemoError, match=expected):
        run_logged("train SCD", command, log_file, {})
    assert "working" in log_file.read_text()
    with pytest.raises(DemoError, match="Step 'figures' failed: ValueError: bad slice"), stage("figures", tmp_path):
        raise ValueError("bad slice")
