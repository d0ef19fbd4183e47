"""``nnunet-scd bench --per-volume``: a phantom file through nnU-Net's prediction steps, per network, timed by part.

No speed assertions: only that the mode runs, that its parts are parts of the total, that the network part counts
the network's forward calls, and that timing the network leaves nnU-Net's logits as they are.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nnunet_scd.bench.per_volume import PARTS, _fold_parameters, time_per_volume
from nnunet_scd.bench.scan import bench_dataset_json, bench_plans, bench_predictor, network_shape, tile_count
from nnunet_scd.bench.timing import PeakMemory, build_network
from nnunet_scd.geometry import CONFIGS
from nnunet_scd.measure import ForwardTimer

TINY = CONFIGS["tiny"]



@pytest.mark.slow
def test_per_volume_mode_predicts_the_scan_with_each_network_with_and_without_mirroring(tmp_path, capsys, parse_bench):
    out = tmp_path / "per_volume.json"
    args = parse_bench("--config", "tiny", "--per-volume", "--mirror", "both", "--repeats", "1", "--warmup", "0",
                  "--json", str(out), "--quiet")
    assert args.run(args) == 0
    result = json.loads(out.read_text())
    assert {(r["network"], r["mirror"]) for r in result["runs"]} == {
        (n, m) for n in ("scd", "unetr", "nnunet") for m in (False, True)}
    assert result["scan"]["tiles"] == 8 and result["scan"]["network_shape_zyx"] == [24, 24, 24]
    for run in result["runs"]:
        assert run["median_s"] > 0
        assert run["peak_cpu_bytes"] is None or run["peak_cpu_bytes"] >= 0
        # Mirroring along the three axes predicts each tile 8 times, and the network part counts those calls.
        assert run["forward_calls"] == 8 * (8 if run["mirror"] else 1)
    table = capsys.readouterr().out
    assert "| SCD | on |" in table and "| stock nnU-Net (PlainConvUNet) | off |" in table

    args = parse_bench("--from-json", str(out))  # docs tables are re-rendered from such a file
    assert args.run(args) == 0
    assert capsys.readouterr().out == table


def test_the_parts_of_a_volume_add_up_to_no_more_than_its_total():
    result = time_per_volume(TINY, torch.device("cpu"), 1.5, (False,), repeats=2, warmup=0, log=lambda _: None)
    for run in result["runs"]:
        assert list(run["parts"]) == list(PARTS)
        for r, total in enumerate(run["seconds"]):
            parts = [run["parts"][name][r] for name in PARTS]
            assert all(p >= 0 for p in parts) and run["parts"]["network"][r] > 0
            assert sum(parts) <= total
    speedups = {r["network"]: (r["speedup_vs_unetr"], r["speedup_vs_nnunet"]) for r in result["runs"]}
    assert speedups["unetr"][0] == speedups["nnunet"][1] == 1.0


def test_timing_the_network_leaves_nnunets_logits_unchanged():
    # The bench runs nnU-Net's own prediction path; the one thing it adds is the timing wrapper around the network.
    net = build_network(TINY, TINY.keep_ratio, torch.device("cpu")).eval()
    plans, dataset_json = bench_plans(TINY), bench_dataset_json(TINY)
    volume = torch.randn(1, 24, 24, 24, generator=torch.Generator().manual_seed(0))
    stock = bench_predictor(net, plans, dataset_json, torch.device("cpu"), True,
                            [{k: v.clone() for k, v in net.state_dict().items()}])
    timed = bench_predictor(ForwardTimer(net), plans, dataset_json, torch.device("cpu"), True, _fold_parameters(net))
    expected = stock.predict_logits_from_preprocessed_data(volume).float()
    got = timed.predict_logits_from_preprocessed_data(volume).float()
    assert torch.allclose(got, expected, atol=1e-4, rtol=0)
    assert timed.network.calls == 8 * 8 and timed.network.seconds > 0


@pytest.mark.parametrize("config,scale,tiles", [
    ("paper-btcv", 2.5, 64),  # docs/benchmark.md's ViT-B command: 240^3 voxels, 4 tiles per axis
    ("paper-btcv", 2.0, 27),
    ("demo", 3.0, 125),  # its demo command: 84x168x168, 3.5x the demo's 24x48x48 phantoms per axis
    ("tiny", 1.0, 1),
])
def test_volume_scale_gives_the_documented_tile_counts(config, scale, tiles):
    patch = CONFIGS[config].patch_size
    assert tile_count(network_shape(patch, scale), patch) == tiles


def test_peak_memory_belongs_to_the_stretch_after_start():
    memory = PeakMemory(torch.device("cpu"))
    memory.start()
    ballast = np.ones(2**28 // 8)  # 256 MiB, touched
    del ballast
    big = memory.peak()["cpu_bytes"]
    if big is None:
        pytest.skip("VmHWM cannot be reset here (/proc/self/clear_refs)")
    memory.start()  # the 256 MiB peak above is not this stretch's
    small = memory.peak()["cpu_bytes"]
    assert big >= 2**28 * 0.9 and small < 2**26
