"""The bench runs end to end on a tiny config and reports finite positive ratios (no speed assertions)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace

import pytest
import torch

from nnunet_scd.bench.report import markdown_table, read_json
from nnunet_scd.bench.timing import config_flops, peak_training_memory
from nnunet_scd.geometry import CONFIGS


@pytest.mark.slow
def test_bench_writes_the_design_json_keys_with_finite_positive_values(tmp_path, capsys, parse_bench):
    out, plot = tmp_path / "bench.json", tmp_path / "speedup.png"
    args = parse_bench("--config", "tiny", "--repeats", "1", "--warmup", "0", "--sweep", "1,0.5",
                  "--json", str(out), "--plot", str(plot), "--quiet")
    assert args.run(args) == 0
    result = json.loads(out.read_text())
    for key in ("train_speedup", "infer_speedup", "flop_ratio", "train_mem_ratio"):
        assert math.isfinite(result[key]) and result[key] > 0, key
    assert [p["keep_ratio"] for p in result["sweep"]] == [1.0, 0.5, 0.25]
    assert result["dense"]["train"]["patches_per_s"] > 0
    assert plot.stat().st_size > 0
    table = capsys.readouterr().out
    assert "dense / sparse" in table

    # The README's tables are re-rendered from such a file: the same table, without running anything.
    args = parse_bench("--from-json", str(out))
    assert args.run(args) == 0
    assert capsys.readouterr().out == table


@pytest.mark.slow
def test_the_table_shows_the_papers_figures_beside_ours(tmp_path, parse_bench):
    out = tmp_path / "bench.json"
    args = parse_bench("--config", "tiny", "--repeats", "1", "--warmup", "0", "--sweep", "", "--no-memory",
                  "--json", str(out), "--quiet")
    assert args.run(args) == 0
    results = read_json(out)
    assert "paper (A100" not in markdown_table(results)
    results["config"]["paper"] = asdict(CONFIGS["paper-btcv"].paper)
    table = markdown_table(results)
    assert "paper (A100, best case)" in table
    train_row = next(line for line in table.splitlines() if line.startswith("| train patches/s"))
    assert train_row.endswith("| 2.20x |")
    assert "| 146.6 (SCD) |" in table


def test_paper_configs_are_the_authors_runs():
    btcv, brats = CONFIGS["paper-btcv"], CONFIGS["paper-brats"]
    assert (btcv.patch_size, btcv.keep_ratio, btcv.input_channels) == ((96,) * 3, 0.1, 1)
    assert (brats.patch_size, brats.keep_ratio, brats.input_channels) == ((128,) * 3, 0.25, 4)
    assert btcv.token_size == brats.token_size == (8, 8, 8)


def test_the_demo_row_is_the_network_the_demo_trains():
    # The per-volume docs time "the demo's Ti network" with this row; it must not drift from the demo's trainer.
    from nnunet_scd.nnunet.token_config import resolve_token_config
    from nnunet_scd.trainers.catalog import nnUNetTrainerSCD_Ti_demo as trainer

    row = CONFIGS["demo"].network_kwargs(CONFIGS["demo"].keep_ratio)
    assert {k: row[k] for k in ("embed_dim", "depth", "num_heads", "prune_after", "feature_size", "keep_ratios")} \
        == {k: trainer.network_kwargs()[k] for k in ("embed_dim", "depth", "num_heads", "prune_after", "feature_size",
                                                     "keep_ratios")}
    # nnU-Net plans a [28, 56, 56] patch at the demo phantoms' 2.5 x 0.8 x 0.8 mm (z, y, x).
    tokens = resolve_token_config({"patch_size": [28, 56, 56], "spacing": [2.5, 0.8, 0.8]}, "3d_fullres",
                                  base=trainer.token_base, fixed_token_size=trainer.token_size,
                                  max_tokens=trainer.max_tokens)
    assert (tokens.patch_size, tokens.token_size) == (row["patch_size"], row["token_size"])


@pytest.mark.parametrize("name", ["paper-btcv", "paper-brats"])
def test_scdnet_defaults_reach_the_papers_flop_ratio(name):
    # Counted on the meta device with SCDNet's default completion: the paper's 2.2x needs completion to be cheap.
    config = replace(CONFIGS[name], batch_size=1)
    assert config_flops(config, None, training=False) / config_flops(config, config.keep_ratio, training=False) >= 2.2


def test_flops_shrink_with_the_keep_ratio_and_are_counted_without_arithmetic():
    config = CONFIGS["tiny"]
    dense = config_flops(config, None, training=False)
    assert dense > config_flops(config, 0.5, training=False) > config_flops(config, 0.1, training=False) > 0
    assert config_flops(config, 0.5, training=True) > 2 * config_flops(config, 0.5, training=False)


@pytest.mark.slow
def test_whole_volume_mode_times_scd_unetr_and_nnunet(tmp_path, parse_bench):
    out = tmp_path / "wv.json"
    args = parse_bench("--config", "tiny", "--whole-volume", "--json", str(out), "--quiet")
    assert args.run(args) == 0
    result = json.loads(out.read_text())
    assert set(result["median_s"]) == {"scd", "unetr", "nnunet"}
    assert all(s > 0 for s in result["median_s"].values())


@pytest.mark.parametrize("argv", [["--sweep", "0.5,2"], ["--config", "huge"], ["--device", "tpu"]])
def test_bad_arguments_are_rejected(argv, parse_bench):
    with pytest.raises(SystemExit):
        parse_bench(*argv)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_cuda_device_is_a_clear_error(parse_bench):
    args = parse_bench("--config", "tiny", "--device", "cuda")
    with pytest.raises(SystemExit, match="no CUDA device"):
        args.run(args)


def test_profile_breaks_a_training_step_into_named_parts():
    from nnunet_scd.bench.profile import profile_training_step

    parts = profile_training_step(CONFIGS["tiny"], torch.device("cpu"), keep_ratio=0.5, warmup=0)
    for name in ("encoder blocks fwd", "decoder bwd", "scorer (STP) fwd", "completion (MTA) bwd", "optimizer step"):
        assert parts[name] > 0, name
    assert parts["whole step"] >= parts["decoder fwd"]


def _own_peak_rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


@pytest.mark.slow
def test_peak_memory_of_a_spawned_process_is_its_own_not_the_parents():
    # Regression: getrusage's ru_maxrss survives execve, so every spawned measurement reported the
    # benchmark process's own peak (dense and sparse both 9.03 GiB at the paper config).
    ballast = torch.ones(2**30 // 4)  # 1 GiB, touched: the parent's peak is far above a tiny network's
    parent_peak = _own_peak_rss()
    del ballast
    result = peak_training_memory(CONFIGS["tiny"], 0.5, torch.device("cpu"), steps=1)
    assert 0 < result["peak_bytes"] < result["peak_rss_bytes"] < parent_peak - 2**29
