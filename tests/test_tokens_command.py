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
