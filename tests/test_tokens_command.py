"""``nnunet-scd tokens``: help, and clear one-line errors for what a user can get wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_scd.cli import main


def test_tokens_help_documents_the_measure_and_the_options() -> None:
    result = subprocess.run([sys.executable, "-m", "nnunet_scd.cli", "tokens", "--help"], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    for text in ("enrichment", "Random pruning gives 1", "-tr", "--folds", "--json"):
        assert text in result.stdout


@pytest.fixture
def empty_nnunet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    return tmp_path


def test_unknown_dataset_is_a_clear_error(empty_nnunet: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["tokens", "-d", "912", "-tr", "nnUNetTrainerSCD"]) == 2
    assert "nnunet-scd tokens:" in capsys.readouterr().err


def test_untrained_fold_names_the_missing_checkpoint(empty_nnunet: Path, capsys: pytest.CaptureFixture) -> None:
    (empty_nnunet / "nnUNet_raw" / "Dataset912_Unit").mkdir()
    assert main(["tokens", "-d", "912", "-tr", "nnUNetTrainerSCD", "-f", "3"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint_final.pth in" in err and "fold_3" in err and "nnUNetv2_train" in err


def _fold_folder(root: Path) -> Path:
    """A trained-looking fold of Dataset912 (plans.json and dataset.json beside it, as nnU-Net leaves them)."""
    (root / "nnUNet_raw" / "Dataset912_Unit").mkdir()
    model = root / "nnUNet_results" / "Dataset912_Unit" / "nnUNetTrainerSCD__nnUNetPlans__3d_fullres"
    (model / "fold_0").mkdir(parents=True)
    (model / "plans.json").write_text('{"dataset_name": "Dataset912_Unit", "configurations": {}}')
    (model / "dataset.json").write_text('{"labels": {"background": 0, "a": 1}, "channel_names": {"0": "CT"}}')
    return model / "fold_0"


def test_a_corrupt_checkpoint_is_one_line_naming_it(empty_nnunet: Path, capsys: pytest.CaptureFixture) -> None:
    # Regression: a 27-line traceback from torch that did not name the file.
    checkpoint = _fold_folder(empty_nnunet) / "checkpoint_final.pth"
    checkpoint.write_bytes(b"PK\x03\x04 not the rest of a zip file")
    assert main(["tokens", "-d", "912", "-tr", "nnUNetTrainerSCD"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{checkpoint} is truncated or corrupt" in err


def test_a_checkpoint_whose_pickle_would_run_code_is_refused(empty_nnunet: Path, code_running_checkpoint,
                                                             capsys: pytest.CaptureFixture) -> None:
    # Regression: nnU-Net's predictor unpickled it fully, so its code ran; our check now comes first.
    marker = code_running_checkpoint(_fold_folder(empty_nnunet) / "checkpoint_final.pth")
    assert main(["tokens", "-d", "912", "-tr", "nnUNetTrainerSCD"]) == 2
    assert "holds pickled Python objects" in capsys.readouterr().err
    assert not marker.exists()


@pytest.mark.parametrize("argv,message", [
    (["--max-cases", "-1"], "--max-cases: must be at least 1, got -1"),  # silently dropped the last case
    (["--max-cases", "0"], "--max-cases: must be at least 1, got 0"),  # crashed
    (["-f", "0", "0", "0"], "-f/--folds: 0 given more than once"),  # counted fold 0 three times, n=3
    (["-f", "-1"], "--folds: must be at least 0"),
    (["-tr", "A", "A"], "-tr/--trainers: A given more than once"),
    (["-p", "../x"], "is not a plans identifier"),
])
def test_bad_arguments_are_one_line_before_any_work(argv: list[str], message: str,
                                                    capsys: pytest.CaptureFixture) -> None:
    argv = argv if "-tr" in argv else [*argv, "-tr", "nnUNetTrainerSCD"]
    with pytest.raises(SystemExit) as exit_info:
        main(["tokens", "-d", "912", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_json_path_that_cannot_be_written_is_refused_before_the_work(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    # Regression: the write failed with a traceback after every fold had been run.
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main(["tokens", "-d", "912", "-tr", "nnUNetTrainerSCD", "--json", str(tmp_path / "a_file" / "t.json")])
    assert exit_info.value.code == 2
    assert "--json: cannot create" in capsys.readouterr().err
