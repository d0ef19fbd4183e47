"""The search/slim glue on a fake nnU-Net results folder: slim plans, rebuild, weights, clear errors."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_scd.commands import slim as slim_command
from nnunet_scd.nnunet.slim_plans import plans_identifier, sliced_weights_file, slim_record
from nnunet_scd.search import WithPixelClassifier, load_sliced_state, masked_blocks, token_masks
from nnunet_scd.search.plot import plot_mask_distribution
from nnunet_scd.search.token_masks import token_counts
from nnunet_scd.trainers import derive_slim
from nnunet_scd.trainers.catalog import TRAINERS
from nnunet_scd.trainers.derive_slim import derive_slim_plans
from nnunet_scd.trainers.search import (
    SearchTrainer,
    SlimTrainer,
    nnUNetTrainerSCDSearch_Tiny,
    nnUNetTrainerSCDSlim_NoPixelClassifier_Tiny,
    nnUNetTrainerSCDSlim_Tiny,
    nnUNetTrainerUNETRSlim_Tiny,
)

DATASET = "Dataset991_Fake"
DATASET_JSON = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1, "b": 2}, "file_ending": ".nii.gz"}
SEARCH = "nnUNetTrainerSCDSearch_Tiny"


def _build(trainer: type, plans: dict) -> torch.nn.Module:
    manager = PlansManager(plans)
    return trainer.build_network_architecture(manager, manager.get_configuration("3d_fullres"), 1, 3, False)


@pytest.fixture
def plans(make_plans) -> dict:
    """Plans of a search run: the token geometry the trainer recorded, as in a results folder's plans.json."""
    return make_plans([8, 32, 32], [2.5, 0.8, 0.8], dataset_name=DATASET,
                      scd_tokens={"token_size": [2, 8, 8], "planned_patch_size": [8, 32, 32]})


@pytest.fixture()
def search_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plans: dict) -> Path:
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    run = tmp_path / "results" / DATASET / f"{SEARCH}__nnUNetPlans__3d_fullres"
    (run / "fold_0").mkdir(parents=True)
    (run / "plans.json").write_text(json.dumps(plans))
    (run / "dataset.json").write_text(json.dumps(DATASET_JSON))
    network = _build(nnUNetTrainerSCDSearch_Tiny, plans)
    with torch.no_grad():
        for block in masked_blocks(network):
            block.attn.head_mask.uniform_(0, 1)
            block.mlp.neuron_mask.uniform_(0, 1)
    checkpoint = {"network_weights": network.state_dict(), "trainer_name": SEARCH}
    torch.save(checkpoint, run / "fold_0" / "checkpoint_final.pth")
    return tmp_path


def _derive(fold: int = 0, budget: float = 0.7):
    return derive_slim_plans(DATASET, "3d_fullres", fold, budget, trainer_name=SEARCH, repeats=1)


def test_slim_plans_rebuild_the_sliced_network_with_its_weights(search_run: Path):
    result = _derive()
    assert result.plans_identifier == plans_identifier("nnUNetPlans", 0.7) == "nnUNetPlans_slim0p7"
    plans = json.loads(result.plans_file.read_text())
    record = slim_record(plans["configurations"]["3d_fullres"])
    assert record["blocks"] == result.widths and plans["plans_name"] == "nnUNetPlans_slim0p7"
    slim, dense = result.costs["slim"], result.costs["dense"]
    # The budget is the share of the encoder's cost kept, measured on the sliced network.
    assert 0.6 * dense.encoder_params <= slim.encoder_params <= 0.7 * dense.encoder_params
    assert 0.6 * dense.encoder_flops <= slim.encoder_flops <= 0.7 * dense.encoder_flops

    rebuilt = _build(nnUNetTrainerSCDSlim_Tiny, plans)
    assert isinstance(rebuilt, WithPixelClassifier)
    weights = sliced_weights_file(search_run / "preprocessed" / DATASET, record, 0)
    load_sliced_state(rebuilt.network, torch.load(weights, weights_only=True))
    plain = _build(nnUNetTrainerSCDSlim_NoPixelClassifier_Tiny, plans)
    load_sliced_state(plain, torch.load(weights, weights_only=True))
    x = torch.randn(1, 1, 8, 32, 32)
    torch.testing.assert_close(rebuilt.eval()(x), plain.eval()(x))


@pytest.mark.slow
def test_another_fold_reuses_the_recorded_widths(search_run: Path, plans: dict):
    first = _derive(fold=0)
    run = search_run / "results" / DATASET / f"{SEARCH}__nnUNetPlans__3d_fullres"
    (run / "fold_1").mkdir()
    other = _build(nnUNetTrainerSCDSearch_Tiny, plans)
    with torch.no_grad():
        for block in masked_blocks(other):
            block.attn.head_mask.uniform_(0, 1)
    torch.save({"network_weights": other.state_dict(), "trainer_name": SEARCH}, run / "fold_1" / "checkpoint_final.pth")
    second = _derive(fold=1)
    assert second.reused_widths and second.widths == first.widths
    assert second.weights_file.name == "fold_1.pth"


def test_slim_trainer_of_another_network_is_refused(search_run: Path):
    plans = json.loads(_derive().plans_file.read_text())
    with pytest.raises(ValueError, match="keep_ratios.*-tr nnUNetTrainerSCDSlim_Tiny"):
        _build(nnUNetTrainerUNETRSlim_Tiny, plans)


def test_plans_without_slim_record_give_a_clear_error(plans: dict):
    with pytest.raises(ValueError, match="nnunet-scd slim"):
        _build(nnUNetTrainerSCDSlim_Tiny, plans)


def test_missing_fold_weights_name_the_command(search_run: Path):
    record = slim_record(json.loads(_derive().plans_file.read_text())["configurations"]["3d_fullres"])
    with pytest.raises(ValueError, match="nnunet-scd slim -f 3"):
        sliced_weights_file(search_run / "preprocessed" / DATASET, record, 3)


def test_missing_checkpoint_and_bad_budget_give_clear_errors(search_run: Path):
    with pytest.raises(ValueError, match="no search checkpoint"):
        derive_slim_plans(DATASET, "3d_fullres", 2, 0.7, trainer_name=SEARCH)
    with pytest.raises(ValueError, match="budget"):
        derive_slim_plans(DATASET, "3d_fullres", 0, 1.5, trainer_name=SEARCH)
    with pytest.raises(ValueError, match="not a joint-search trainer"):
        derive_slim_plans(DATASET, "3d_fullres", 0, 0.7, trainer_name="nnUNetTrainerSCD_Tiny")


def test_slim_command_rejects_a_budget_outside_the_unit_interval(capsys: pytest.CaptureFixture):
    parser = argparse.ArgumentParser()
    slim_command.add_parser(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["slim", "-d", "1", "-c", "3d_fullres", "-f", "0", "--budget", "0"])
    assert "(0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize("name", [n for n, cls in TRAINERS.items() if issubclass(cls, SearchTrainer)])
def test_every_search_trainer_names_a_slim_trainer_of_its_network_and_recipe(name: str):
    search = TRAINERS[name]
    slim = TRAINERS[search.slim_trainer]
    assert issubclass(slim, SlimTrainer) and slim.pixel_classifier
    assert slim.network_kwargs() == search.network_kwargs()
    assert slim.recipe == search.recipe


def test_slim_plans_record_the_slim_trainer_and_a_mismatched_subclass_gets_none(search_run: Path):
    assert _derive().slim_trainer == "nnUNetTrainerSCDSlim_Tiny"

    class MySearch(nnUNetTrainerSCDSearch_Tiny):  # inherits slim_trainer, but not the network it names
        keep_ratios = (0.5, 0.5, 0.5)

    assert derive_slim._slim_trainer(MySearch) is None


def test_mask_distribution_plot_is_written(tmp_path: Path, plans: dict):
    path = plot_mask_distribution(_build(nnUNetTrainerSCDSearch_Tiny, plans), tmp_path / "masks.png", "test")
    assert path.stat().st_size > 1000


def _save_search_checkpoint(root: Path, plans: dict, fold: int, seed: int, decoy: bool = False) -> None:
    """A search checkpoint with random masks; ``decoy``: in block 2, the one head with a strong channel
    has the smallest mask L1 (one channel 0.9), the others many weak ones (48 x 0.05)."""
    run = root / "results" / DATASET / f"{SEARCH}__nnUNetPlans__3d_fullres"
    (run / f"fold_{fold}").mkdir(exist_ok=True)
    torch.manual_seed(seed)
    network = _build(nnUNetTrainerSCDSearch_Tiny, plans)
    with torch.no_grad():
        for block in masked_blocks(network):
            block.attn.head_mask.uniform_(0, 1)
            block.mlp.neuron_mask.uniform_(0, 1)
        if decoy:
            mask = masked_blocks(network)[2].attn.head_mask
            mask.fill_(0.05)
            mask[0].zero_()
            mask[0, 0] = 0.9
    torch.save({"network_weights": network.state_dict(), "trainer_name": SEARCH},
               run / f"fold_{fold}" / "checkpoint_final.pth")


def _weights(result) -> dict[str, torch.Tensor]:
    return torch.load(result.weights_file, weights_only=True)


@pytest.mark.slow
def test_rerunning_slim_on_the_deriving_fold_keeps_its_channels_and_weights(search_run: Path, plans: dict):
    # Regression: the rerun found the plans and fitted the widths with fit_keep, which ranks heads by their
    # L1, so it kept other channels than the first run and overwrote its weights.
    from nnunet_scd.search import derive_keep, fit_keep

    _save_search_checkpoint(search_run, plans, 0, seed=0, decoy=True)
    first = _derive()
    saved = _weights(first)
    mtime = first.weights_file.stat().st_mtime_ns
    second = _derive()
    assert second.widths == first.widths
    assert all(torch.equal(saved[k], v) for k, v in _weights(second).items())
    assert first.weights_file.stat().st_mtime_ns == mtime  # identical, so not even rewritten
    # The test means something only if the other rule would have picked other channels here.
    network = _build(nnUNetTrainerSCDSearch_Tiny, plans)
    checkpoint = search_run / "results" / DATASET / f"{SEARCH}__nnUNetPlans__3d_fullres" / "fold_0"
    network.load_state_dict(torch.load(checkpoint / "checkpoint_final.pth", weights_only=False)["network_weights"])
    derived, fitted = derive_keep(network, 0.7), fit_keep(network, first.widths)
    assert any(not torch.equal(a, b) for (a, _), (b, _) in zip(derived, fitted))


@pytest.mark.slow
def test_rerunning_slim_with_another_checkpoint_needs_overwrite(search_run: Path, plans: dict):
    first = _weights(_derive())
    _save_search_checkpoint(search_run, plans, 0, seed=1)  # e.g. the search trained on, or --checkpoint best
    with pytest.raises(ValueError, match="already holds other sliced weights.*--overwrite"):
        _derive()
    assert all(torch.equal(first[k], v) for k, v in torch.load(
        search_run / "preprocessed" / DATASET / "nnUNetPlans_slim0p7_sliced_weights" / "fold_0.pth",
        weights_only=True).items())
    replaced = derive_slim_plans(DATASET, "3d_fullres", 0, 0.7, trainer_name=SEARCH, repeats=1, overwrite=True)
    assert not all(torch.equal(first[k], v) for k, v in _weights(replaced).items())


def test_two_folds_sliced_at_once_agree_on_one_architecture(search_run: Path, plans: dict):
    from concurrent.futures import ThreadPoolExecutor

    _save_search_checkpoint(search_run, plans, 1, seed=2)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda fold: _derive(fold=fold), (0, 1)))
    plans = json.loads(results[0].plans_file.read_text())
    recorded = slim_record(plans["configurations"]["3d_fullres"])["blocks"]
    assert results[0].widths == results[1].widths == recorded
    left = [p.name for p in (search_run / "preprocessed" / DATASET).rglob("*") if ".tmp" in p.name]
    assert left == []


def test_a_truncated_search_checkpoint_is_a_one_line_error_naming_it(search_run: Path):
    path = search_run / "results" / DATASET / f"{SEARCH}__nnUNetPlans__3d_fullres" / "fold_0" / "checkpoint_final.pth"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"checkpoint_final\.pth is truncated or corrupt.*--checkpoint"):
        _derive()


def _run_slim(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    slim_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["slim", *argv])
    return args.run(args)


def test_slim_on_an_unknown_dataset_is_one_line(search_run: Path, capsys: pytest.CaptureFixture):
    assert _run_slim(["-d", "999", "-c", "3d_fullres", "-f", "0", "--budget", "0.7", "-tr", SEARCH]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nnunet-scd slim: nnU-Net knows no dataset '999'") and len(err.splitlines()) == 1


def test_slim_refuses_zero_repeats(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit):
        _run_slim(["-d", "1", "-c", "3d_fullres", "-f", "0", "--budget", "0.7", "--repeats", "0"])
    assert "--repeats: must be at least 1, got 0" in capsys.readouterr().err


def test_slim_refuses_a_checkpoint_whose_pickle_would_run_code(search_run: Path, code_running_checkpoint,
                                                               capsys: pytest.CaptureFixture):
    # Regression: slim loaded checkpoints with weights_only=False, so the file's code ran.
    path = search_run / "results" / DATASET / f"{SEARCH}__nnUNetPlans__3d_fullres" / "fold_0" / "checkpoint_final.pth"
    marker = code_running_checkpoint(path)
    assert _run_slim(["-d", DATASET, "-c", "3d_fullres", "-f", "0", "--budget", "0.7", "-tr", SEARCH]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checkpoint_final.pth holds pickled Python objects" in err
    assert not marker.exists()


@pytest.mark.slow
def test_slim_budget_other_than_the_recorded_one_is_refused_not_ignored(search_run: Path):
    # Regression: --budget 0.5 into plans derived at 0.7 silently reused the 0.7 widths.
    first = _derive(budget=0.7)
    weights = first.weights_file.read_bytes()
    with pytest.raises(ValueError, match=r"derived at budget 0\.7, not 0\.5.*--rederive.*--plans-name"):
        derive_slim_plans(DATASET, "3d_fullres", 0, 0.5, trainer_name=SEARCH, repeats=1,
                          plans_name=first.plans_identifier)
    assert first.weights_file.read_bytes() == weights
    # The same budget still reuses the recorded widths, as every later fold does.
    again = derive_slim_plans(DATASET, "3d_fullres", 0, 0.7, trainer_name=SEARCH, repeats=1,
                              plans_name=first.plans_identifier)
    assert again.reused_widths and again.widths == first.widths
    rederived = derive_slim_plans(DATASET, "3d_fullres", 0, 0.5, trainer_name=SEARCH, repeats=1,
                                  plans_name=first.plans_identifier, rederive=True)
    assert not rederived.reused_widths


@pytest.mark.parametrize("option,value,message", [
    ("--plans-name", "../escaped", "is not a plans identifier"),
    ("-p", "a/b", "is not a plans identifier"),
    ("-f", "-1", "must be at least 0"),
])
def test_slim_refuses_paths_as_identifiers_and_negative_folds(option: str, value: str, message: str,
                                                              capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_info:
        _run_slim(["-d", "1", "-c", "3d_fullres", "-f", "0", "--budget", "0.7", option, value])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_slim_json_path_that_cannot_be_written_is_refused_before_the_work(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture):
    # Regression: the JSON write failed with a traceback after the whole derivation and timing.
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        _run_slim(["-d", "1", "-c", "3d_fullres", "-f", "0", "--budget", "0.7", "--json",
                   str(tmp_path / "a_file" / "slim.json")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--json: cannot create" in err and "a_file is a file, not a folder" in err


@pytest.mark.parametrize("search,slim", [
    ("nnUNetTrainerUNETRSearchPositionTokens_Tiny", "nnUNetTrainerUNETRSlim_Tiny"),
    ("nnUNetTrainerSCDSearchRankTokens_Tiny", "nnUNetTrainerSCDSlim_Tiny"),
])
def test_token_mask_search_records_its_schedule_and_the_slim_trainer_rebuilds_it(
        search_run: Path, plans: dict, search: str, slim: str, capsys: pytest.CaptureFixture):
    run = search_run / "results" / DATASET / f"{search}__nnUNetPlans__3d_fullres"
    (run / "fold_0").mkdir(parents=True)
    (run / "plans.json").write_text(json.dumps(plans))
    (run / "dataset.json").write_text(json.dumps(DATASET_JSON))
    network = _build(TRAINERS[search], plans)
    with torch.no_grad():
        for logits in token_masks(network).logits:
            logits.uniform_(-2, 3)
    torch.save({"network_weights": network.state_dict(), "trainer_name": search},
               run / "fold_0" / "checkpoint_final.pth")
    assert _run_slim(["-d", DATASET, "-c", "3d_fullres", "-f", "0", "--budget", "0.6", "-tr", search,
                      "--repeats", "1", "--plans-name", "tokens"]) == 0
    report = capsys.readouterr().out.splitlines()
    assert "token masks" in report[0] and "tokens" in report[1]
    plans = json.loads((search_run / "preprocessed" / DATASET / "tokens.json").read_text())
    record = slim_record(plans["configurations"]["3d_fullres"])
    assert record["tokens"]["kind"] == token_masks(network).kind
    rebuilt = _build(TRAINERS[slim], plans)
    weights = sliced_weights_file(search_run / "preprocessed" / DATASET, record, 0)
    load_sliced_state(rebuilt.network, torch.load(weights, weights_only=True))
    assert rebuilt.network.token_gate.record() == record["tokens"]
    # The report's per-block table: "tokens before -> after" as measured, as the schedule says.
    measured = [re.search(r"(\d+) -> (\d+)", line).group(2) for line in report[2:2 + len(record["blocks"])]]
    assert [int(n) for n in measured] == token_counts(record["tokens"], len(record["blocks"]))
