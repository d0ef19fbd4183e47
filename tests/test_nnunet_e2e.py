"""End to end through nnU-Net's own console scripts, as a user runs them, on -device cpu.

One small phantom dataset (3D, anisotropic; also planned as 2d) goes through
plan+preprocess, training of a shortened SCD trainer (killed mid-epoch, then resumed with --c)
and a shortened dense UNETR trainer, a 2d SCD training, model export/install, prediction of a
raw folder with the installed model, evaluation, find_best_configuration (with ensembling and
postprocessing) and apply_postprocessing; a training of the authors' reproduction trainer
(nnUNetTrainerSCD_Zhou2023BraTS, Tiny); and `nnunet-scd plan` followed by preprocessing, training
and prediction with -p nnUNetPlans_SCD. Nothing of nnU-Net is patched: the trainers are found
through nnUNet_extTrainer.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nnunet_scd.trainers.catalog import nnUNetTrainerSCD_Tiny_cpuSmoke
from nnunet_scd.trainers.ext_trainer import TRAINER_SHIM_DIR

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATASET_ID = 987
SCD = "nnUNetTrainerSCD_Tiny_cpuSmoke"
DENSE = "nnUNetTrainerUNETR_Tiny_cpuSmoke"
PLANS = "nnUNetPlans"


def run(env: dict[str, str], *args: str, timeout: float = 1200) -> str:
    """Run one nnUNetv2_* console script; fail the test with its output if it fails."""
    proc = subprocess.run(
        [str(BIN / args[0]), *args[1:]], env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n"
                    f"--- stderr\n{proc.stderr[-4000:]}")
    return proc.stdout


def results_dir(env: dict[str, str], trainer: str, configuration: str) -> Path:
    dataset = next(Path(env["nnUNet_results"]).glob(f"Dataset{DATASET_ID}_*"))
    return dataset / f"{trainer}__{PLANS}__{configuration}"


def train_killed_then_resumed(env: dict[str, str], trainer: str, configuration: str) -> tuple[str, str]:
    """Start a training, SIGKILL it in the middle of epoch 1, then continue it with --c."""
    fold = results_dir_lazy(env, trainer, configuration) / "fold_0"
    args = [str(BIN / "nnUNetv2_train"), str(DATASET_ID), configuration, "0", "-tr", trainer, "-device", "cpu", "--npz"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and proc.poll() is None:
            logs = list(fold.glob("training_log_*.txt")) if fold.is_dir() else []
            # "Epoch 1" is logged after epoch 0's checkpoint_latest.pth was written (and renamed into place).
            if logs and 1 in logged_epochs(logs[0].read_text()):
                # At once: since the oneDNN decoder convs an epoch of this recipe can take under 3 s on CPU.
                time.sleep(0.3)
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the training ended before it could be interrupted"
        os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its data-augmentation workers
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    first_logs = {p.name for p in fold.glob("training_log_*.txt")}
    killed_in = max(logged_epochs("".join((fold / name).read_text() for name in first_logs)))
    assert killed_in == 1, f"the kill landed in epoch {killed_in}, not in epoch 1"
    assert (fold / "checkpoint_latest.pth").is_file() and not (fold / "checkpoint_final.pth").exists()
    time.sleep(1.1)  # nnU-Net names its log by the second; keep the resumed run's log separate
    out = run(env, "nnUNetv2_train", str(DATASET_ID), configuration, "0", "-tr", trainer, "-device", "cpu",
              "--npz", "--c")
    resumed_log = [p for p in fold.glob("training_log_*.txt") if p.name not in first_logs]
    assert len(resumed_log) == 1
    return out, resumed_log[0].read_text()


def logged_epochs(log: str) -> list[int]:
    """Epoch numbers in the order an nnU-Net training log started them."""
    return [int(m) for m in re.findall(r"^\S+ \S+: Epoch (\d+) ?$", log, flags=re.MULTILINE)]


def results_dir_lazy(env: dict[str, str], trainer: str, configuration: str) -> Path:
    dataset = f"Dataset{DATASET_ID}_SCDPhantom"
    return Path(env["nnUNet_results"]) / dataset / f"{trainer}__{PLANS}__{configuration}"


def dice_scores(summary: Path) -> tuple[float, float]:
    """Mean foreground Dice and the best single organ's Dice from an nnU-Net summary.json."""
    content = json.loads(summary.read_text())
    per_class = [v["Dice"] for v in content["mean"].values() if not np.isnan(v["Dice"])]
    return float(content["foreground_mean"]["Dice"]), float(max(per_class))


def assert_well_above_chance(summary: Path, chance: float, what: str) -> None:
    # A few CPU iterations learn the big organs first, so both the mean over all organs and the
    # best organ are checked: the mean against a frequency-matched random guess, the best organ
    # against an absolute bar that a guess cannot reach.
    mean, best = dice_scores(summary)
    print(f"{what}: mean foreground Dice {mean:.3f}, best organ {best:.3f}, chance {chance:.3f}")
    assert mean > 4 * chance and best > 0.3, f"{what}: Dice {mean:.3f} (best organ {best:.3f}), chance {chance:.3f}"


def chance_dice(label_folder: Path) -> float:
    """Mean over organs of the Dice a voxel-wise random guess with the true class frequencies gets."""
    import SimpleITK as sitk  # noqa: N813

    counts = np.zeros(16)
    for path in sorted(label_folder.glob("*.nii.gz")):
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).ravel()
        counts[: labels.max() + 1] += np.bincount(labels)
    freq = counts / counts.sum()
    return float(freq[1:][counts[1:] > 0].mean())  # E[Dice] of such a guess is the class frequency


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from nnunet_scd.datasets.phantom import write_phantom_dataset

    root = tmp_path_factory.mktemp("nnunet")
    environment = dict(os.environ)
    environment.update(
        nnUNet_raw=str(root / "raw"),
        nnUNet_preprocessed=str(root / "preprocessed"),
        nnUNet_results=str(root / "results"),
        nnUNet_extTrainer=str(TRAINER_SHIM_DIR),
        nnUNet_n_proc_DA="1",
        nnUNet_def_n_proc="1",
        nnUNet_compile="0",
    )
    write_phantom_dataset(root / "raw", DATASET_ID, num_cases=8, shape=(10, 32, 32), seed=3, num_test_cases=2,
                          spacing_xyz=(1.6, 1.6, 4.0))
    run(environment, "nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "3d_fullres", "2d",
        "-np", "1", "-npfp", "1", "--verify_dataset_integrity")
    return environment


@pytest.fixture(scope="module")
def trained(env: dict[str, str]) -> dict[str, object]:
    """Fold 0 of the SCD (killed + resumed) and dense trainers in 3D, and of SCD in 2D."""
    started = time.monotonic()
    _, resumed_log = train_killed_then_resumed(env, SCD, "3d_fullres")
    run(env, "nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-tr", DENSE, "-device", "cpu", "--npz")
    run(env, "nnUNetv2_train", str(DATASET_ID), "2d", "0", "-tr", SCD, "-device", "cpu", "--npz")
    seconds = time.monotonic() - started
    print(f"trainings took {seconds:.0f} s")
    return {"resumed_log": resumed_log, "seconds": seconds}


def test_results_folder_records_the_token_geometry(env: dict[str, str], trained: dict) -> None:
    for trainer, configuration in ((SCD, "3d_fullres"), (DENSE, "3d_fullres"), (SCD, "2d")):
        folder = results_dir(env, trainer, configuration)
        config = json.loads((folder / "plans.json").read_text())["configurations"][configuration]
        tokens = config["scd_tokens"]["token_size"]
        assert len(tokens) == len(config["patch_size"]) == (3 if configuration == "3d_fullres" else 2)
        assert all(p % t == 0 for p, t in zip(config["patch_size"], tokens, strict=True))
        assert (folder / "fold_0" / "checkpoint_final.pth").is_file()
        assert not (folder / "fold_0" / "checkpoint_latest.pth").exists()
        assert not list((folder / "fold_0").glob("*.tmp")), "a temporary checkpoint was left behind"
        assert (folder / "fold_0" / "validation" / "summary.json").is_file()
        assert list((folder / "fold_0" / "validation").glob("*.npz")), "--npz wrote no probabilities"
    # Anisotropic phantom (4 mm slices, 1.6 mm in plane): finer tokens along z.
    config = json.loads((results_dir(env, SCD, "3d_fullres") / "plans.json").read_text())
    assert config["configurations"]["3d_fullres"]["scd_tokens"]["token_size"] == [4, 8, 8]


def test_killed_training_resumes_from_its_last_checkpoint(trained: dict) -> None:
    log = trained["resumed_log"]
    epochs = logged_epochs(log)
    last = nnUNetTrainerSCD_Tiny_cpuSmoke.recipe.epochs - 1
    assert epochs and epochs[0] == 1 and epochs[-1] == last, f"resumed run trained epochs {epochs}"
    assert "Training done." in log


def test_training_learns_well_above_chance(env: dict[str, str], trained: dict) -> None:
    chance = chance_dice(Path(env["nnUNet_raw"]) / f"Dataset{DATASET_ID}_SCDPhantom" / "labelsTr")
    for trainer, configuration in ((SCD, "3d_fullres"), (DENSE, "3d_fullres"), (SCD, "2d")):
        summary = results_dir(env, trainer, configuration) / "fold_0" / "validation" / "summary.json"
        assert_well_above_chance(summary, chance, f"{trainer} {configuration} fold-0 validation")


def test_export_install_predict_evaluate(env: dict[str, str], trained: dict, tmp_path: Path) -> None:
    raw = Path(env["nnUNet_raw"]) / f"Dataset{DATASET_ID}_SCDPhantom"
    archive = tmp_path / "scd.zip"
    run(env, "nnUNetv2_export_model_to_zip", "-d", str(DATASET_ID), "-o", str(archive), "-c", "3d_fullres",
        "-tr", SCD, "-f", "0")
    installed = dict(env, nnUNet_results=str(tmp_path / "installed_results"))
    run(installed, "nnUNetv2_install_pretrained_model_from_zip", str(archive))

    prediction = tmp_path / "pred"
    run(installed, "nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(prediction), "-d", str(DATASET_ID),
        "-c", "3d_fullres", "-tr", SCD, "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1")
    assert sorted(p.name for p in prediction.glob("*.nii.gz")) == sorted(p.name for p in (raw / "labelsTs").iterdir())

    plans = results_dir(env, SCD, "3d_fullres") / "plans.json"
    run(env, "nnUNetv2_evaluate_folder", str(raw / "labelsTs"), str(prediction), "-djfile", str(raw / "dataset.json"),
        "-pfile", str(plans), "-np", "1")
    assert_well_above_chance(prediction / "summary.json", chance_dice(raw / "labelsTs"), f"{SCD} on imagesTs")


def test_find_best_configuration_and_postprocessing(env: dict[str, str], trained: dict, tmp_path: Path) -> None:
    # Every (trainer, configuration) pair must exist, so the ensemble is SCD + dense UNETR in 3D.
    out = run(env, "nnUNetv2_find_best_configuration", str(DATASET_ID), "-c", "3d_fullres",
              "-tr", SCD, DENSE, "-f", "0", "-np", "1")
    dataset_results = Path(env["nnUNet_results"]) / f"Dataset{DATASET_ID}_SCDPhantom"
    instructions = (dataset_results / "inference_instructions.txt").read_text()
    assert "nnUNetv2_apply_postprocessing" in instructions
    ensembles = list(dataset_results.glob("ensembles/ensemble___*"))
    assert ensembles and all((e / "summary.json").is_file() for e in ensembles)
    assert "ensemble" in out.lower()

    # Apply the chosen postprocessing (of whichever model or ensemble won) to the SCD 3d validation
    # predictions, as the instructions say.
    best = json.loads((dataset_results / "inference_information.json").read_text())["best_model_or_ensemble"]
    pkl = Path(best["postprocessing_file"])
    assert pkl.is_file()
    validation = results_dir(env, SCD, "3d_fullres") / "fold_0" / "validation"
    target = tmp_path / "postprocessed"
    run(env, "nnUNetv2_apply_postprocessing", "-i", str(validation), "-o", str(target),
        "-pp_pkl_file", str(pkl), "-np", "1", "-plans_json", best["some_plans_file"],
        "-dataset_json", str(Path(best["some_plans_file"]).parent / "dataset.json"))
    assert len(list(target.glob("*.nii.gz"))) == len(list(validation.glob("*.nii.gz")))


def test_token_selection_is_logged_plotted_and_reported_on_held_out_cases(env: dict[str, str], trained: dict,
                                                                           tmp_path: Path) -> None:
    for configuration in ("3d_fullres", "2d"):
        fold = results_dir(env, SCD, configuration) / "fold_0"
        assert (fold / "token_selection.png").stat().st_size > 10_000
        assert "STP foreground enrichment of kept tokens" in "".join(
            p.read_text() for p in fold.glob("training_log_*.txt"))
    report = tmp_path / "tokens.json"
    out = run(env, "nnunet-scd", "tokens", "-d", str(DATASET_ID), "-c", "3d_fullres", "-tr", SCD, "-f", "0",
              "--json", str(report))
    assert "Mean ± sd over folds" in out
    (row,) = json.loads(report.read_text())["trainers"][SCD]
    # Random pruning gives 1; the guided scorer, trained 400 iterations, keeps foreground well above that.
    assert row["cases"] == 2 and row["tiles"] >= 2 and len(row["enrichment"]) == 3
    assert row["enrichment"][0] > 1.2, row
    assert row["dice"] == pytest.approx(dice_scores(results_dir(env, SCD, "3d_fullres") / "fold_0" / "validation"
                                                     / "summary.json")[0])


def test_scd_plans_train_and_predict_through_stock_nnunet(env: dict[str, str], tmp_path: Path) -> None:
    """`nnunet-scd plan`, then the printed stock commands with -p nnUNetPlans_SCD, end to end on CPU."""
    trainer, plans_name = "nnUNetTrainerSCD_Ti_demoQuick", "nnUNetPlans_SCD"  # 2 epochs x 10 iterations
    out = run(env, "nnunet-scd", "plan", "-d", str(DATASET_ID), "--vit-size", "Tiny", "-tr", trainer)
    assert f"nnUNetv2_preprocess -d {DATASET_ID} -plans_name {plans_name}" in out
    assert f"nnUNetv2_train {DATASET_ID} 3d_fullres 0 -tr {trainer} -p {plans_name}" in out
    run(env, "nnUNetv2_preprocess", "-d", str(DATASET_ID), "-plans_name", plans_name, "-c", "3d_fullres", "-np", "1")
    run(env, "nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-tr", trainer, "-p", plans_name, "-device", "cpu")

    dataset = f"Dataset{DATASET_ID}_SCDPhantom"
    planned = json.loads((Path(env["nnUNet_preprocessed"]) / dataset / f"{plans_name}.json").read_text())
    folder = Path(env["nnUNet_results"]) / dataset / f"{trainer}__{plans_name}__3d_fullres"
    used = json.loads((folder / "plans.json").read_text())
    # The trainer took the planned geometry as it was, and the results folder records it for prediction.
    for key in ("patch_size", "scd_tokens"):
        assert used["configurations"]["3d_fullres"][key] == planned["configurations"]["3d_fullres"][key]
    assert used["configurations"]["3d_fullres"]["scd_tokens"]["planner"] == "nnUNetPlannerSCD"
    assert (folder / "fold_0" / "checkpoint_final.pth").is_file()

    raw = Path(env["nnUNet_raw"]) / dataset
    prediction = tmp_path / "pred"
    run(env, "nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(prediction), "-d", str(DATASET_ID),
        "-c", "3d_fullres", "-tr", trainer, "-p", plans_name, "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1")
    assert sorted(p.name for p in prediction.glob("*.nii.gz")) == sorted(p.name for p in (raw / "labelsTs").iterdir())


def test_the_authors_reproduction_trainer_trains_through_stock_nnunet(env: dict[str, str]) -> None:
    """The Zhou2023 family (shared skips, pooled x8 decoder, layer decay, cosine) runs as any nnU-Net trainer."""
    trainer = "nnUNetTrainerSCD_Zhou2023BraTS_Tiny_cpuStudy"
    run(env, "nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-tr", trainer, "-device", "cpu")
    fold = results_dir(env, trainer, "3d_fullres") / "fold_0"
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "'skip_assembly': 'shared', 'pooled_bottleneck': True" in log
    assert "layer-wise lr decay 0.75" in log and "then cosine decay over 12 epochs; grad clip None" in log
    assert "Training done." in log and (fold / "checkpoint_final.pth").is_file()
    mean_dice, _ = dice_scores(fold / "validation" / "summary.json")
    assert 0.0 <= mean_dice <= 1.0, mean_dice  # NaN (no validation written) fails too
