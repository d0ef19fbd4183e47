"""The demo's nnU-Net steps, each resumable: phantoms, plan/preprocess, train, predict, evaluate.

nnU-Net runs as subprocesses of its own console scripts (from this interpreter's environment), with
nnUNet_raw/preprocessed/results pointing into the demo's work folder. Their output goes to a log
file per step; a terminal gets a progress bar and a short summary, a log file (stdout not a
terminal) one line per finished step. Each training seed has its own nnUNet_results folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from nnunet_scd.atomic import atomic_target
from nnunet_scd.demo.config import DemoConfig
from nnunet_scd.trainers.ext_trainer import trainer_shim_dir
from nnunet_scd.trainers.seeding import SEED_ENVIRONMENT_VARIABLE
from nnunet_scd.trainers.training_log import EPOCH_TIME, PSEUDO_DICE, pseudo_dice_values

__all__ = ["DemoError", "Workspace", "log", "nnunet_script", "progress", "run_logged", "stage"]


class DemoError(RuntimeError):
    """A demo step failed; the message says which step and where its log is."""


def log(message: str) -> None:
    """Print a timestamped line, as nnU-Net's own logs do."""
    print(f"{datetime.now()}: {message}", flush=True)


def progress(**kwargs):
    """A tqdm bar on a terminal; nothing when output goes to a file or a CI log, where redrawn bars
    would print hundreds of partial lines (``stage`` logs one line per finished step instead)."""
    from tqdm import tqdm

    return tqdm(disable=None, **kwargs)


class Setting(Protocol):
    """What a workspace needs of its run's setting: the demo's ``DemoConfig``, or a study's."""

    name: str
    dataset_id: int
    dataset_name: str
    num_cases: int
    shape_zyx: tuple[int, int, int]
    seed: int
    configuration: str
    fold: int
    organ_contrast: float


@dataclass(frozen=True)
class Workspace:
    """The folders of a demo or study run inside ``root``; nnU-Net's three folders live here too."""

    root: Path
    config: DemoConfig | Setting

    @property
    def raw(self) -> Path:
        return self.root / "nnUNet_raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "nnUNet_preprocessed"

    def results(self, seed: int) -> Path:
        """nnUNet_results of one training seed: nnU-Net names result folders by trainer, plans and fold only."""
        return self.root / "nnUNet_results" / f"seed_{seed}"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run_dir(self) -> Path:
        """Per-setting outputs (validation copies, predictions, report), so --quick never mixes with the default."""
        return self.root / self.config.name

    @property
    def report(self) -> Path:
        return self.run_dir / "report"

    @property
    def dataset_folder_name(self) -> str:
        return f"Dataset{self.config.dataset_id:03d}_{self.config.dataset_name}"

    def fold_dir(self, trainer: str, seed: int, plans: str = "nnUNetPlans") -> Path:
        c = self.config
        return (self.results(seed) / self.dataset_folder_name / f"{trainer}__{plans}__{c.configuration}"
                / f"fold_{c.fold}")

    def predictions(self, trainer: str, seed: int) -> Path:
        return self.run_dir / "predictions" / f"seed_{seed}" / trainer

    def environment(self, seed: int = 0) -> dict[str, str]:
        """Variables for nnU-Net (subprocesses and this process): our folders, our trainers, the training seed,
        CPU settings."""
        ext = [str(trainer_shim_dir())]
        ext += [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p and p not in ext]
        return {
            "nnUNet_raw": str(self.raw),
            "nnUNet_preprocessed": str(self.preprocessed),
            "nnUNet_results": str(self.results(seed)),
            "nnUNet_extTrainer": os.pathsep.join(ext),
            "nnUNet_n_proc_DA": os.environ.get("nnUNet_n_proc_DA", "1"),
            "nnUNet_compile": "f",
            SEED_ENVIRONMENT_VARIABLE: str(seed),
        }


@contextmanager
def stage(name: str, logs: Path) -> Iterator[None]:
    """Log one line when the step finishes; turn an unexpected error inside it into a DemoError naming it."""
    start = time.perf_counter()
    try:
        yield
    except (DemoError, KeyboardInterrupt):
        raise
    except Exception as error:
        raise DemoError(f"Step '{name}' failed: {type(error).__name__}: {error}\nLogs of the nnU-Net steps: "
                        f"{logs}") from error
    log(f"Done: {name} ({time.perf_counter() - start:.0f} s)")


def nnunet_script(name: str) -> str:
    """Path of an nnU-Net console script installed beside this interpreter."""
    path = Path(sys.executable).parent / name
    if not path.is_file():
        found = shutil.which(name)
        if found is None:
            raise DemoError(
                f"Cannot find nnU-Net's `{name}` next to {sys.executable} or on PATH. Install nnunetv2 into the "
                "same environment as nnunet-scd."
            )
        return found
    return str(path)


def run_logged(step: str, command: list[str], log_file: Path, env: dict[str, str],
               on_line: Callable[[str], None] | None = None) -> None:
    """Run ``command``, writing its output to ``log_file`` and passing each line to ``on_line``.

    Raises DemoError naming the step, the last lines of output and the log file if it fails.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=15)
    with open(log_file, "a") as out:
        out.write(f"\n# {datetime.now()}: {' '.join(command)}\n")
        out.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, bufsize=1)
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                out.write(raw)
                out.flush()
                for line in raw.rstrip("\n").split("\r"):
                    if line.strip():
                        tail.append(line)
                        if on_line is not None:
                            on_line(line)
            code = process.wait()
        except BaseException:
            process.terminate()
            process.wait()
            raise
    if code != 0:
        last = "\n    ".join(tail)
        raise DemoError(f"Step '{step}' failed (exit code {code}). Last output:\n    {last}\nFull log: {log_file}")


# ---------------------------------------------------------------------------------------------- steps
def make_dataset(ws: Workspace) -> Path:
    """Step 1: the phantom dataset (cached by the generator itself)."""
    from nnunet_scd.datasets.phantom import summarize, write_phantom_dataset

    c = ws.config
    folder = write_phantom_dataset(ws.raw, c.dataset_id, num_cases=c.num_cases, shape=c.shape_zyx, seed=c.seed,
                                   name=c.dataset_name, progress=sys.stderr.isatty(),
                                   organ_contrast=c.organ_contrast)
    stats = summarize(folder)
    log(f"Phantoms ready: {folder} ({stats['cases']} cases, foreground {100 * stats['foreground_mean']:.1f}% "
        "of the volume on average)")
    return folder


def plan_and_preprocess(ws: Workspace) -> None:
    """Step 2: ``nnUNetv2_plan_and_preprocess``; skipped when a previous run finished it."""
    c = ws.config
    done = ws.preprocessed / ws.dataset_folder_name / ".nnunet_scd_demo_done"
    if done.is_file():
        log(f"Plan and preprocess: already done ({done.parent})")
        return
    command = [nnunet_script("nnUNetv2_plan_and_preprocess"), "-d", str(c.dataset_id), "-c", c.configuration,
               "--verify_dataset_integrity", "-np", "2", "-npfp", "2"]
    log_file = ws.logs / "plan_and_preprocess.log"
    log(f"Plan and preprocess: {' '.join(command[1:])} (log: {log_file})")
    with progress(desc="nnUNetv2_plan_and_preprocess", unit=" lines", leave=False) as bar:
        def show(line: str) -> None:
            bar.set_postfix_str(line.strip()[:60])
            bar.update()
        run_logged("plan and preprocess", command, log_file, ws.environment(), show)
    plans = json.loads((done.parent / "nnUNetPlans.json").read_text())["configurations"][c.configuration]
    log(f"nnU-Net planned patch {plans['patch_size']}, batch {plans['batch_size']}, spacing "
        f"{[round(s, 2) for s in plans['spacing']]}")
    done.write_text(f"{datetime.now()}\n")


def validation_keys(ws: Workspace) -> list[str]:
    """Fold's validation case identifiers from nnU-Net's splits_final.json (written by the first training)."""
    splits = ws.preprocessed / ws.dataset_folder_name / "splits_final.json"
    if not splits.is_file():
        raise DemoError(f"{splits} is missing; nnUNetv2_train writes it. Rerun the demo to redo training.")
    return sorted(json.loads(splits.read_text())[ws.config.fold]["val"])


_EPOCH = re.compile(r"Epoch (\d+)\s*$")


def train(ws: Workspace, label: str, trainer: str, seed: int, device: str = "cpu", epochs: int | None = None,
          plans: str = "nnUNetPlans") -> None:
    """Step 3: ``nnUNetv2_train`` on the fold; a finished fold is skipped, an interrupted one continued.

    ``epochs`` sizes the progress bar (default: the demo budget's).
    """
    c = ws.config
    epochs = c.budget.epochs if epochs is None else epochs
    fold_dir = ws.fold_dir(trainer, seed, plans)
    if (fold_dir / "checkpoint_final.pth").is_file():
        log(f"Training {label} ({trainer}, seed {seed}): already finished ({fold_dir})")
        return
    resume = any((fold_dir / f"checkpoint_{n}.pth").is_file() for n in ("latest", "best"))
    command = [nnunet_script("nnUNetv2_train"), str(c.dataset_id), c.configuration, str(c.fold), "-tr", trainer,
               *(["-p", plans] if plans != "nnUNetPlans" else []), "-device", device] + (["--c"] if resume else [])
    log_file = ws.logs / f"train_{trainer}{'' if plans == 'nnUNetPlans' else f'__{plans}'}_seed_{seed}.log"
    log(f"Training {label}, seed {seed}: {' '.join(command[1:])}{' (continuing)' if resume else ''}; "
        f"{epochs} epochs (log: {log_file})")
    with progress(total=epochs, desc=f"train {label}", unit="epoch") as bar:
        state: dict[str, str] = {}

        def show(line: str) -> None:
            if (m := _EPOCH.search(line)) and int(m.group(1)) > bar.n:
                bar.update(int(m.group(1)) - bar.n)  # resumed runs start past 0
            elif m := EPOCH_TIME.search(line):
                state["s/epoch"] = m.group(1)
            elif m := PSEUDO_DICE.search(line):
                values = pseudo_dice_values(m)
                state["pseudo Dice"] = f"{sum(values) / max(1, len(values)):.3f}"
            elif "train_loss" in line:
                state["loss"] = line.split("train_loss")[-1].strip()
            else:
                return
            bar.set_postfix(state, refresh=True)
        run_logged(f"train {label}", command, log_file, ws.environment(seed), show)
        bar.update(bar.total - bar.n)
    if not (fold_dir / "checkpoint_final.pth").is_file():
        raise DemoError(f"Training {label} ended without {fold_dir / 'checkpoint_final.pth'}. Log: {log_file}")


def stage_validation_cases(ws: Workspace) -> tuple[Path, Path]:
    """Copy the fold's validation images and labels into their own folders (inputs of predict and evaluate)."""
    keys = validation_keys(ws)
    raw = ws.raw / ws.dataset_folder_name
    images, labels = ws.run_dir / "validation" / "imagesVal", ws.run_dir / "validation" / "labelsVal"
    for folder in (images, labels):
        folder.mkdir(parents=True, exist_ok=True)
    for key in keys:
        for src, dst in ((raw / "imagesTr" / f"{key}_0000.nii.gz", images / f"{key}_0000.nii.gz"),
                         (raw / "labelsTr" / f"{key}.nii.gz", labels / f"{key}.nii.gz")):
            if not dst.is_file():
                with atomic_target(dst) as tmp:
                    shutil.copyfile(src, tmp)
    return images, labels


def predict(ws: Workspace, label: str, trainer: str, images: Path, seed: int) -> Path:
    """Step 4: ``nnUNetv2_predict`` on the validation images (no mirroring, to keep CPU time short)."""
    c = ws.config
    out = ws.predictions(trainer, seed)
    done = out / ".nnunet_scd_demo_done"
    if done.is_file():
        log(f"Prediction {label}: already done ({out})")
        return out
    shutil.rmtree(out, ignore_errors=True)  # a half-written folder is cheaper to redo than to check
    command = [nnunet_script("nnUNetv2_predict"), "-i", str(images), "-o", str(out), "-d", str(c.dataset_id),
               "-c", c.configuration, "-tr", trainer, "-f", str(c.fold), "-device", "cpu", "--disable_tta",
               "-npp", "1", "-nps", "1"]
    log_file = ws.logs / f"predict_{trainer}_seed_{seed}.log"
    cases = len(list(images.glob("*.nii.gz")))
    log(f"Predicting {cases} validation cases with {label}: nnUNetv2_predict ... -tr {trainer} (log: {log_file})")
    with progress(total=cases, desc=f"predict {label}", unit="case") as bar:
        def show(line: str) -> None:
            if line.startswith("Predicting ") and bar.n < bar.total:
                bar.update()
        run_logged(f"predict {label}", command, log_file, ws.environment(seed), show)
    done.write_text(f"{datetime.now()}\n")
    return out


def evaluate(ws: Workspace, label: str, trainer: str, labels: Path, seed: int) -> dict:
    """Step 5: nnU-Net's evaluator (``compute_metrics_on_folder2``) -> summary.json in the prediction folder."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder2

    pred = ws.predictions(trainer, seed)
    summary_file = pred / "summary.json"
    compute_metrics_on_folder2(str(labels), str(pred), str(pred / "dataset.json"), str(pred / "plans.json"),
                               str(summary_file), num_processes=1, chill=False)
    summary = json.loads(summary_file.read_text())
    log(f"Evaluated {label}, seed {seed}: mean foreground Dice {summary['foreground_mean']['Dice']:.3f} "
        f"({summary_file})")
    return summary
