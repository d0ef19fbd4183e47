"""Runs a study's arms through nnU-Net's own commands and records each finished run in the results file.

Every (arm, seed) is one ``nnUNetv2_train`` of the study's fold on the same preprocessed phantoms,
ending with nnU-Net's own sliding-window validation of the held-out cases and its evaluator
(``validation/summary.json``). A joint-search arm is three steps: ``nnUNetv2_train`` of its search
trainer, ``nnunet-scd slim`` into plans of that arm and seed, and ``nnUNetv2_train`` of its slim
trainer on those plans; its record is the fine-tuned subnet's, with the slim report's costs.
The phantoms, plans and per-seed results folders live in the work folder (the demo's layout); the
record goes to the results file. A run already recorded for the same setting is skipped, a finished
but unrecorded one is recorded without training, and an interrupted one continues where it stopped.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_scd.atomic import write_text_atomic
from nnunet_scd.demo import steps
from nnunet_scd.demo.steps import DemoError, Workspace, log, stage
from nnunet_scd.studies.convergence import Arm, StudySetting
from nnunet_scd.studies.results import append_record, load_records, record_key

__all__ = ["fold_record", "run_study", "setting_id", "write_default_splits"]


def setting_id(setting: StudySetting) -> str:
    """What a record must share to sit in one table: the study, its phantoms and fold (each record keeps its recipe)."""
    contrast = "" if setting.organ_contrast == 1.0 else f", organ contrast {setting.organ_contrast}"
    return (f"{setting.name}: {setting.num_cases} phantoms {'x'.join(map(str, setting.shape_zyx))} (seed "
            f"{setting.seed}{contrast}), {setting.configuration} fold {setting.fold}")


def _cpu_model() -> str:
    """The processor's name where Linux gives it: wall times of runs on different CPUs are not comparable."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _device_name(device: str) -> str:
    if device == "cpu":
        return f"cpu ({os.cpu_count()} cores, {_cpu_model()})"
    import torch

    return f"{device} ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else device


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:  # e.g. nnunet-scd run from a source tree on PYTHONPATH
            return "not installed"

    return {name: installed(name) for name in ("torch", "nnunetv2", "nnunet-scd")}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).resolve().parent).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def _trainer_recipe(trainer: str) -> dict[str, Any]:
    from nnunet_scd.trainers.catalog import TRAINERS

    return asdict(TRAINERS[trainer].recipe)


def slim_plans_name(arm: Arm, seed: int) -> str:
    """The plans a joint-search arm's seed is sliced into: each search derives its own subnet."""
    return f"nnUNetPlans_slim{format(arm.budget, 'g').replace('.', 'p')}_{arm.name}_seed{seed}"


def fold_record(ws: Workspace, setting: StudySetting, arm: Arm, seed: int) -> dict[str, Any]:
    """The record of one finished (arm, seed) from its fold folder: nnU-Net's validation summary and log."""
    from nnunet_scd.trainers.training_log import epoch_times, last_enrichment, pseudo_dice

    fold_dir = ws.fold_dir(arm.trainer, seed, slim_plans_name(arm, seed) if arm.search else "nnUNetPlans")
    summary_file = fold_dir / "validation" / "summary.json"
    if not summary_file.is_file():
        raise DemoError(f"{summary_file} is missing: the training of {arm.name} (seed {seed}) did not reach nnU-Net's "
                        f"final validation. Rerun the study to continue it; its log is in {fold_dir}.")
    summary = json.loads(summary_file.read_text())
    labels = json.loads((fold_dir.parent / "dataset.json").read_text())["labels"]
    names = {str(v): k for k, v in labels.items() if int(v) > 0}
    recipe = _trainer_recipe(arm.trainer)
    per_epoch = pseudo_dice(fold_dir)
    enrichment = last_enrichment(fold_dir)
    return {
        "setting": setting_id(setting),
        "arm": arm.name,
        "trainer": arm.trainer,
        "keep": arm.keep,
        "fold": setting.fold,
        "seed": seed,
        "dice": {names[k]: v["Dice"] for k, v in summary["mean"].items() if k in names},
        "dice_mean": summary["foreground_mean"]["Dice"],
        "validation_cases": len(summary["metric_per_case"]),
        "recipe": recipe,
        "iterations": recipe["epochs"] * recipe["iterations_per_epoch"],
        "curve": {"iterations": [(e + 1) * recipe["iterations_per_epoch"] for e in range(len(per_epoch))],
                  "pseudo_dice": [float(np.nanmean(d)) if not np.all(np.isnan(d)) else None for d in per_epoch]},
        "epoch_seconds_total": round(sum(epoch_times(fold_dir)), 1),
        # Of the last epoch's validation batches: how much more often kept tokens hold foreground (each class) than
        # all tokens do; random pruning scores 1.
        "enrichment": None if enrichment is None else enrichment[0],
        "class_enrichment": None if enrichment is None else enrichment[1],
    }


def _search_and_slim(ws: Workspace, setting: StudySetting, arm: Arm, seed: int, device: str) -> dict[str, Any]:
    """A joint-search arm's first two steps, each skipped when done: the search, then ``nnunet-scd slim`` at the
    arm's budget. Returns the slim report (``nnunet-scd slim --json``)."""
    plans = slim_plans_name(arm, seed)
    report_file = ws.logs / f"slim_{plans}.json"
    with stage(f"search {arm.name}, seed {seed}", ws.logs):
        steps.train(ws, f"{arm.name} search", arm.search, seed, device=device,
                    epochs=_trainer_recipe(arm.search)["epochs"])
    if not report_file.is_file():
        command = [sys.executable, "-m", "nnunet_scd.cli", "slim", "-d", str(setting.dataset_id),
                   "-c", setting.configuration, "-f", str(setting.fold), "--budget", f"{arm.budget:g}",
                   "-tr", arm.search, "--plans-name", plans, "--json", str(report_file)]
        log(f"Slimming {arm.name}, seed {seed}: nnunet-scd {' '.join(command[3:])}")
        with stage(f"slim {arm.name}, seed {seed}", ws.logs):
            steps.run_logged(f"slim {arm.name}", command, ws.logs / f"slim_{plans}.log", ws.environment(seed))
    return json.loads(report_file.read_text())


def _train(ws: Workspace, setting: StudySetting, arm: Arm, seed: int, device: str) -> dict[str, Any]:
    """Train one (arm, seed), or reuse its finished fold, and return its record."""
    plans = slim_plans_name(arm, seed) if arm.search else "nnUNetPlans"
    already = (ws.fold_dir(arm.trainer, seed, plans) / "validation" / "summary.json").is_file()
    start = time.perf_counter()
    slim = _search_and_slim(ws, setting, arm, seed, device) if arm.search else None
    with stage(f"train {arm.name}, seed {seed}", ws.logs):
        steps.train(ws, arm.name, arm.trainer, seed, device=device, epochs=_trainer_recipe(arm.trainer)["epochs"],
                    plans=plans)
    record = fold_record(ws, setting, arm, seed)
    train = f"nnUNet_SCD_seed={seed} nnUNetv2_train {setting.dataset_id} {setting.configuration} {setting.fold} -tr"
    commands = [f"{train} {arm.trainer}{'' if plans == 'nnUNetPlans' else f' -p {plans}'} -device {device}"]
    if slim is not None:
        from nnunet_scd.trainers.training_log import epoch_times

        search = _trainer_recipe(arm.search)
        record["search"] = {
            "trainer": arm.search, "budget": arm.budget, "plans": plans,
            "iterations": search["epochs"] * search["iterations_per_epoch"],
            "epoch_seconds_total": round(sum(epoch_times(ws.fold_dir(arm.search, seed))), 1),
            "widths": slim["widths"], "tokens": slim["tokens"], "costs": slim["costs"]}
        commands[:0] = [f"{train} {arm.search} -device {device}",
                        f"nnunet-scd slim -d {setting.dataset_id} -c {setting.configuration} -f {setting.fold} "
                        f"--budget {arm.budget:g} -tr {arm.search} --plans-name {plans}"]
    record.update({
        "wall_seconds": None if already else round(time.perf_counter() - start, 1),
        "device": _device_name(device),
        "host": platform.node(),
        "versions": _versions(),
        "git_commit": _git_commit(),
        "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "; ".join(commands),
    })
    return record


def write_default_splits(ws: Workspace) -> Path:
    """nnU-Net's default 5-fold split (what its first training would write), written before parallel trainings
    start: each of them would otherwise write ``splits_final.json`` while others read it."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    base = ws.preprocessed / ws.dataset_folder_name
    splits_file = base / "splits_final.json"
    if not splits_file.is_file():
        data = base / f"nnUNetPlans_{ws.config.configuration}"
        identifiers = sorted(infer_dataset_class(str(data)).get_identifiers(str(data)))
        splits = generate_crossval_split(identifiers, seed=12345, n_splits=5)
        write_text_atomic(json.dumps(splits, indent=4), splits_file)
    return splits_file


def run_study(work_dir: Path, setting: StudySetting, arms: list[Arm], seeds: list[int], results: Path,
              device: str = "cpu", jobs: int = 1) -> list[dict[str, Any]]:
    """Train and record every (arm, seed) the results file lacks; ``jobs`` trainings run at once."""
    ws = Workspace(work_dir.resolve(), setting)
    os.environ.update(ws.environment())
    done = {record_key(r) for r in load_records(results)}
    todo = [(arm, seed) for seed in seeds for arm in arms
            if (setting_id(setting), arm.name, setting.fold, seed) not in done]
    log(f"nnunet-scd study {setting.name}: {len(todo)} of {len(arms) * len(seeds)} runs to do on {device} "
        f"({jobs} at a time); work folder {ws.root}; results {results}")
    if not todo:
        return []
    with stage("generate phantoms", ws.logs):
        steps.make_dataset(ws)
    with stage("plan and preprocess", ws.logs):
        steps.plan_and_preprocess(ws)

    def record(run: dict[str, Any]) -> dict[str, Any]:
        # Only this thread writes the results file, one finished run at a time.
        append_record(results, run)
        log(f"Recorded {run['arm']}, seed {run['seed']}: mean Dice {run['dice_mean']:.3f} -> {results}")
        return run

    write_default_splits(ws)
    records: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_train, ws, setting, arm, seed, device) for arm, seed in todo]
        failures = []
        for future in as_completed(futures):
            try:
                records.append(record(future.result()))
            except DemoError as error:  # the other runs go on; each finished one is recorded
                log(f"A run failed: {error}")
                failures.append(str(error))
    if failures:
        raise DemoError(f"{len(failures)} of {len(todo)} runs failed; the others are recorded in {results}:\n"
                        + "\n".join(failures))
    return records
