"""The study harness: its results file, resuming from it, the records it reads from nnU-Net, and the report."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from nnunet_scd.cli import main
from nnunet_scd.demo.steps import Workspace
from nnunet_scd.studies import runner
from nnunet_scd.studies.convergence import CONVERGENCE, Arm, StudySetting
from nnunet_scd.studies.report import build_report, last_quarter_gain, report_markdown
from nnunet_scd.studies.results import ResultsFileError, append_record, load_records
from nnunet_scd.trainers.recipe import LENGTHS

SETTING = StudySetting(name="unit", dataset_id=998, num_cases=6, shape_zyx=(8, 16, 16), seeds=(0, 1))
ORGANS = ("liver", "aorta")


def record(arm: str, seed: int, dice: float, keep: float | None = 0.25, curve: list[float] | None = None,
           setting: str | None = None) -> dict[str, Any]:
    curve = curve or [0.1, 0.5, dice, dice]
    return {"setting": setting or runner.setting_id(SETTING), "arm": arm, "trainer": f"T_{arm}", "keep": keep,
            "fold": 0, "seed": seed, "dice": {"liver": dice + 0.1, "aorta": dice - 0.1}, "dice_mean": dice,
            "iterations": 400, "curve": {"iterations": [100, 200, 300, 400], "pseudo_dice": curve},
            "wall_seconds": 60.0, "device": "cpu (2 cores)"}


def test_a_record_replaces_the_same_run_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "docs" / "results.jsonl"
    append_record(path, record("dense", 0, 0.7))
    append_record(path, record("dense", 1, 0.8))
    append_record(path, record("dense", 0, 0.75))
    assert [(r["seed"], r["dice_mean"]) for r in load_records(path)] == [(1, 0.8), (0, 0.75)]
    assert not list(path.parent.glob(".tmp_*"))


def test_a_results_file_with_a_foreign_line_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(record("dense", 0, 0.7)) + "\n{\"not\": \"a record\"}\n")
    with pytest.raises(ResultsFileError, match=r"results.jsonl, line 2: not a study record"):
        load_records(path)


def test_the_study_trains_only_what_the_results_file_lacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results.jsonl"
    append_record(results, record("dense", 0, 0.7))
    append_record(results, record("dense", 1, 0.7, setting="another setting"))  # does not count for this one
    trained = []
    monkeypatch.setattr(runner.steps, "make_dataset", lambda ws: None)
    monkeypatch.setattr(runner.steps, "plan_and_preprocess", lambda ws: None)
    monkeypatch.setattr(runner, "write_default_splits", lambda ws: None)

    def fake_train(ws: Workspace, setting: StudySetting, arm: Arm, seed: int, device: str) -> dict[str, Any]:
        trained.append((arm.name, seed, device))
        return record(arm.name, seed, 0.5)

    monkeypatch.setattr(runner, "_train", fake_train)
    arms = [Arm("dense", "T_dense", None, "all"), Arm("guided", "T_guided", 0.25, "stp")]
    runner.run_study(tmp_path / "work", SETTING, arms, [0, 1], results, device="cuda", jobs=2)
    assert sorted(trained) == [("dense", 1, "cuda"), ("guided", 0, "cuda"), ("guided", 1, "cuda")]
    assert len(load_records(results)) == 5
    trained.clear()
    runner.run_study(tmp_path / "work", SETTING, arms, [0, 1], results)  # a second sitting: nothing left to do
    assert trained == []


def finished_fold(fold: Path, dice: float = 0.6) -> None:
    """What nnU-Net leaves in a fold folder that trained two epochs and ran its final validation."""
    (fold / "validation").mkdir(parents=True)
    (fold.parent / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1, "aorta": 2}}))
    (fold / "validation" / "summary.json").write_text(json.dumps({
        "foreground_mean": {"Dice": dice}, "mean": {"1": {"Dice": 0.9}, "2": {"Dice": 0.3}},
        "metric_per_case": [{}, {}, {}]}))
    (fold / "training_log_2026_1_1_00_00_00.txt").write_text(
        "x: Pseudo dice [np.float32(0.5), np.float32(nan)] \nx: Epoch time: 10.5 s \n"
        "x: STP foreground enrichment of kept tokens (validation; random pruning = 1), per stage: 1.50, 1.20\n"
        "x: Pseudo dice [np.float32(0.9), np.float32(0.3)] \nx: Epoch time: 9.5 s \n"
        "x: STP foreground enrichment of kept tokens (validation; random pruning = 1), per stage: 3.70, 2.10\n"
        "x: STP per-class enrichment of kept tokens (validation; nan: class absent), per stage: liver 3.10, "
        "aorta nan; liver 2.00, aorta 0.50\n")
    (fold / "checkpoint_final.pth").write_bytes(b"")


def test_a_finished_fold_becomes_a_record_from_nnunets_own_files(tmp_path: Path) -> None:
    arm = CONVERGENCE.arm("guided")
    ws = Workspace(tmp_path, SETTING)
    finished_fold(ws.fold_dir(arm.trainer, seed=1))
    rec = runner.fold_record(ws, SETTING, arm, seed=1)
    assert rec["enrichment"] == [3.7, 2.1]  # the last validation's
    assert rec["class_enrichment"][1] == {"liver": 2.0, "aorta": 0.5}
    assert math.isnan(rec["class_enrichment"][0]["aorta"])
    assert rec["dice"] == {"liver": 0.9, "aorta": 0.3} and rec["dice_mean"] == 0.6 and rec["validation_cases"] == 3
    assert rec["curve"]["pseudo_dice"] == pytest.approx([0.5, 0.6])
    per_epoch = LENGTHS["converge"].iterations_per_epoch
    assert rec["curve"]["iterations"] == [per_epoch, 2 * per_epoch] and rec["epoch_seconds_total"] == 20.0
    assert rec["keep"] == 0.25 and rec["trainer"] == arm.trainer


def test_an_unfinished_fold_is_named_with_how_to_continue(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="did not reach nnU-Net's final validation. Rerun the study"):
        runner.fold_record(Workspace(tmp_path, SETTING), SETTING, CONVERGENCE.arm("dense"), seed=0)


def test_last_quarter_gain_compares_the_last_tenth_with_the_tenth_ending_at_three_quarters() -> None:
    curve = [0.1 * i for i in range(20)]  # windows of 2: epochs 18-19 against epochs 13-14
    assert last_quarter_gain(curve) == pytest.approx(0.5)
    assert last_quarter_gain([0.5, None, 0.5]) is None  # too short to tell


def test_report_pairs_seeds_against_dense_and_runs_both_checks() -> None:
    arms = [Arm("dense", "T", None, ""), Arm("guided", "T", 0.25, "", baseline=True),
            Arm("random", "T", 0.25, "", baseline=True), Arm("oracle", "T", 0.25, "", label_free=False)]
    records = [record("dense", 0, 0.80, keep=None, curve=[0.8] * 8),
               record("dense", 1, 0.70, keep=None, curve=[0.8] * 6 + [0.9, 1.0]),
               record("guided", 0, 0.78), record("guided", 1, 0.69), record("random", 0, 0.60),
               record("random", 1, 0.61), record("oracle", 0, 0.95), record("oracle", 1, 0.10)]
    report = build_report(records, arms)
    rows = {r["arm"]: r for r in report["rows"]}
    assert rows["guided"]["vs_reference_per_seed"] == pytest.approx([-0.02, -0.01])
    assert report["checks"]["plateau"]["gains"] == pytest.approx([0.0, 0.2])  # last epoch 1.0, epoch 6 of 8 0.8
    assert not report["checks"]["plateau"]["holds"]  # seed 1 still climbs in its last quarter
    check = report["checks"]["selection matters at keep 0.25"]
    assert check["arms"] == ["guided", "random"]  # the oracle is a bound, not a label-free rule
    assert check["spread"] == pytest.approx(0.13) and check["holds"]
    assert (check["best"], check["worst"]) == ("guided", "random") and check["paired"] == pytest.approx([0.18, 0.08])
    single = build_report([r for r in records if r["seed"] == 0], arms)["checks"]["selection matters at keep 0.25"]
    assert not single["judged"] and not single["holds"]  # one seed has no sd to beat
    text = report_markdown(report)
    assert "| guided | 0.25 | 0, 1 | **0.735 ± 0.064** | -0.015 ± 0.007 |" in text
    assert "plateaued** (validation pseudo Dice gained under 0.01 in the last quarter of training): NO" in text
    assert "guided - random paired by seed: +0.180, +0.080)" in text
    one_seed = report_markdown(build_report([r for r in records if r["seed"] == 0], arms))
    assert "| guided | 0.25 | 0 | **0.780** | -0.020 |" in one_seed  # one seed: no sd to show


def test_report_only_rebuilds_table_and_figure_from_the_results_file(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results.jsonl"
    for seed in (0, 1):
        append_record(results, record("dense", seed, 0.8, keep=None, setting=runner.setting_id(CONVERGENCE)))
        append_record(results, record("guided", seed, 0.7, setting=runner.setting_id(CONVERGENCE)))
    assert main(["study", "--report-only", "--results", str(results)]) == 0
    table = (tmp_path / "convergence_table.md").read_text()
    assert "| dense | all | 0, 1 | **0.800 ± 0.000** |" in table and (tmp_path / "convergence_curves.png").is_file()
    assert "0.07 h of training on cpu (2 cores)" in capsys.readouterr().out


def test_report_only_without_runs_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["study", "--report-only", "--results", str(tmp_path / "none.jsonl")]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_an_unknown_arm_is_one_line_listing_the_arms(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["study", "--arms", "bogus", "--results", str(tmp_path / "r.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "no arm 'bogus'" in err and "guided@0.1" in err and err.count("\n") == 1


def test_each_setting_reads_only_its_own_runs(tmp_path: Path) -> None:
    from nnunet_scd.studies.convergence import LOW_CONTRAST

    results = tmp_path / "results.jsonl"
    append_record(results, record("dense", 0, 0.8, keep=None, setting=runner.setting_id(CONVERGENCE)))
    append_record(results, record("dense", 0, 0.6, keep=None, setting=runner.setting_id(LOW_CONTRAST)))
    assert "organ contrast 0.3" in runner.setting_id(LOW_CONTRAST)
    assert main(["study", "--setting", "low-contrast", "--report-only", "--results", str(results)]) == 0
    table = (tmp_path / "low-contrast_table.md").read_text()
    assert "| dense | all | 0 | **0.600** |" in table and "0.800" not in table


def test_the_enrichment_table_averages_seeds_and_leaves_out_a_class_a_seed_lacked() -> None:
    arms = [Arm("dense", "T", None, ""), Arm("guided", "T", 0.25, "")]
    guided = [record("guided", seed, 0.7) for seed in (0, 1)]
    guided[0]["enrichment"], guided[1]["enrichment"] = [3.0, 2.0], [4.0, 1.0]
    guided[0]["class_enrichment"] = [{"liver": 2.0, "aorta": math.nan}, {"liver": 1.0, "aorta": 1.0}]
    guided[1]["class_enrichment"] = [{"liver": 4.0, "aorta": 5.0}, {"liver": 1.0, "aorta": 3.0}]
    text = report_markdown(build_report([record("dense", 0, 0.8, keep=None), *guided], arms))
    assert "| arm | keep | foreground | liver | aorta |" in text
    assert "| guided | 0.25 | 3.5/1.5 | 3.0/1.0 | 5.0/2.0 |" in text
    assert "| dense |" not in text.split("Enrichment of the kept tokens")[1]  # no selection, no figures


def test_each_label_free_rule_is_paired_with_the_default_and_judged_by_the_scorer_rule() -> None:
    arms = [Arm("dense", "T", None, ""), Arm("guided", "T", 0.25, "", default=True, baseline=True),
            Arm("random", "T", 0.25, "", baseline=True), Arm("evenly", "T", 0.25, ""),
            Arm("oracle", "T", 0.25, "", label_free=False)]
    records = [record("dense", 0, 0.80, keep=None), record("dense", 1, 0.80, keep=None),
               record("guided", 0, 0.70), record("guided", 1, 0.72),
               record("random", 0, 0.75), record("random", 1, 0.76),  # +0.045 against an sd of 0.014
               record("evenly", 0, 0.80), record("evenly", 1, 0.82), record("oracle", 0, 0.9), record("oracle", 1, 0.9)]
    for seed in (0, 1):  # evenly gains on the mean but gives up the aorta
        records[6 + seed]["dice"]["aorta"] = 0.40
    report = build_report(records, arms)
    rows = {r["arm"]: r for r in report["rows"]}
    assert rows["random"]["vs_default_per_seed"] == pytest.approx([0.05, 0.04])
    assert "vs_default" not in rows["guided"] and "vs_default" not in rows["dense"]
    verdicts = {v["arm"]: v for v in report["checks"]["beats the default at keep 0.25"]}
    assert set(verdicts) == {"random", "evenly"}  # the oracle reads the label, so it cannot be the default
    assert verdicts["random"]["holds"] and verdicts["random"]["gain"] == pytest.approx(0.045)
    assert not verdicts["evenly"]["holds"] and verdicts["evenly"]["losses"] == ["aorta"]
    # A design is judged against the default, but does not widen the spread that says whether selection matters.
    assert report["checks"]["selection matters at keep 0.25"]["arms"] == ["guided", "random"]
    text = report_markdown(report)
    assert "| random | 0.25 | 0, 1 | **0.755 ± 0.007** | -0.045 ± 0.007 | +0.045 ± 0.007 |" in text
    assert "  - random: yes (gain over guided +0.045 against sd 0.014; no organ loses)" in text
    assert "  - evenly: no (gain over guided +0.100 against sd 0.014; loses aorta)" in text
    one_seed = build_report([r for r in records if r["seed"] == 0], arms)["checks"]["beats the default at keep 0.25"]
    assert not any(v["holds"] for v in one_seed)  # one paired seed cannot beat the noise


def slim_report(encoder_flops: float, tokens: list[int]) -> dict[str, Any]:
    """An ``nnunet-scd slim --json`` report: the unsearched network, and a slim one that keeps ``encoder_flops`` of its
    encoder FLOPs and half its parameters and latencies."""
    dense = {"params": 100, "encoder_params": 80, "flops": 1000, "encoder_flops": 800, "latency_ms": 10.0,
             "encoder_latency_ms": 4.0, "block_tokens": [256] * len(tokens)}
    slim = {"params": 60, "encoder_params": 40, "flops": 1000 - 800 * (1 - encoder_flops),
            "encoder_flops": 800 * encoder_flops, "latency_ms": 5.0, "encoder_latency_ms": 2.0, "block_tokens": tokens}
    return {"widths": [], "tokens": {"kind": "rank", "kept": tokens}, "budget": 0.7,
            "costs": {"dense": dense, "slim": slim, "slim + pixel classifier": slim}}


def test_a_search_arm_searches_slims_into_plans_of_its_own_and_fine_tunes_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arm = CONVERGENCE.arm("search-rank")
    ws = Workspace(tmp_path, SETTING)
    plans = runner.slim_plans_name(arm, 2)
    assert plans == "nnUNetPlans_slim0p7_search-rank_seed2"  # each seed slices its own search
    steps_run: list[tuple[str, ...]] = []

    def fake_train(ws: Workspace, label: str, trainer: str, seed: int, device: str = "cpu", epochs: int | None = None,
                   plans: str = "nnUNetPlans") -> None:
        steps_run.append(("train", trainer, plans))
        fold = ws.fold_dir(trainer, seed, plans)
        if not fold.is_dir():
            finished_fold(fold, dice=0.8 if trainer == arm.trainer else 0.1)

    def fake_run_logged(step: str, command: list[str], log_file: Path, env: dict[str, str], on_line=None) -> None:
        steps_run.append(("slim", *command[3:]))
        assert env["nnUNet_results"] == str(ws.results(2))  # the slim reads this seed's search
        log_file.parent.mkdir(parents=True, exist_ok=True)
        Path(command[command.index("--json") + 1]).write_text(json.dumps(slim_report(0.5, [256, 128, 64])))

    monkeypatch.setattr(runner.steps, "train", fake_train)
    monkeypatch.setattr(runner.steps, "run_logged", fake_run_logged)
    rec = runner._train(ws, SETTING, arm, 2, "cpu")
    assert steps_run == [
        ("train", arm.search, "nnUNetPlans"),
        ("slim", "slim", "-d", "998", "-c", "3d_fullres", "-f", "0", "--budget", "0.7", "-tr", arm.search,
         "--plans-name", plans, "--json", str(ws.logs / f"slim_{plans}.json")),
        ("train", arm.trainer, plans)]
    assert rec["dice_mean"] == 0.8  # the fine-tuned subnet's validation, not the search's
    assert rec["search"]["trainer"] == arm.search and rec["search"]["costs"]["slim"]["block_tokens"] == [256, 128, 64]
    assert rec["search"]["epoch_seconds_total"] == 20.0
    assert rec["command"].split("; ")[1].startswith("nnunet-scd slim -d 998") and f"-p {plans}" in rec["command"]
    steps_run.clear()
    runner._train(ws, SETTING, arm, 2, "cpu")  # a second sitting: the slim report is there, so no second slim
    assert [s[0] for s in steps_run] == ["train", "train"]


def test_the_search_table_gives_each_arms_kept_share_and_tokens_per_seed() -> None:
    arms = [Arm("dense", "T", None, ""), Arm("search-rank", "T", None, "", search="S", budget=0.7)]
    records = [record("dense", 0, 0.8, keep=None)]
    for seed, share in ((0, 0.6), (1, 0.7)):
        searched = record("search-rank", seed, 0.8, keep=None)
        searched["search"] = {"budget": 0.7, "iterations": 3000, **slim_report(share, [256, 100 + seed])}
        records.append(searched)
    text = report_markdown(build_report(records, arms))
    assert "| search-rank | 0.7 | 3000 + 400 | 0.500 ± 0.000 | 0.650 ± 0.071 | 0.500 ± 0.000 | 0.500 ± 0.000 | " \
           "256/100; 256/101 |" in text
    assert "| dense |" not in text.split("Joint search:")[1]


def test_every_arm_names_trainers_nnunet_finds_and_a_search_arm_fine_tunes_with_its_searchs_slim_trainer() -> None:
    from nnunet_scd.studies.convergence import ARMS
    from nnunet_scd.trainers.catalog import TRAINERS

    for arm in ARMS:
        assert arm.trainer in TRAINERS, arm.name
        if arm.search is not None:
            assert TRAINERS[arm.search].slim_trainer == arm.trainer, arm.name
            assert 0 < arm.budget <= 1 and arm.keep is None
            assert TRAINERS[arm.search].recipe == TRAINERS[arm.trainer].recipe  # search and fine-tune alike long
    searched = [a for a in ARMS if a.search]
    assert {a.budget for a in searched} == {0.7}  # the issue compares them at one FLOP budget
