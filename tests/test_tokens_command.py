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


def test_a_fold_reports_per_class_enrichment_on_a_known_label(empty_nnunet: Path, monkeypatch: pytest.MonkeyPatch,
                                                              tiny_scdnet) -> None:
    import json
    from types import SimpleNamespace

    import numpy as np
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    from nnunet_scd.nnunet import token_selection

    # Evenly spaced selection keeps, at keep 1/8, the tokens of even coordinates on the 4 x 8 x 8 grid.
    net = tiny_scdnet(1, 3, (8, 32, 32), (2, 4, 4), keep_ratios=(0.125, 0.5, 0.5), token_selection="evenly").eval()
    seg = np.zeros((1, 8, 32, 32), dtype=np.int16)
    seg[0, 0:2] = 1  # class "a": the 64 tokens of the first grid slice, 16 of the 32 kept -> (16/32) / (64/256) = 2
    seg[0, 2:4] = 2  # class "b": the second grid slice, no even coordinate kept -> 0
    predictor = SimpleNamespace(
        network=net, plans_manager=SimpleNamespace(dataset_name="Dataset912_Unit"),
        configuration_manager=SimpleNamespace(patch_size=[8, 32, 32], data_identifier="pp"),
        label_manager=LabelManager({"background": 0, "a": 1, "b": 2}, None),
        _internal_get_sliding_window_slicers=lambda shape: [(slice(None), slice(0, 8), slice(0, 32), slice(0, 32))])

    class OneCase:
        def __init__(self, folder: str, cases: list[str]) -> None:
            pass

        def load_case(self, case: str) -> tuple[np.ndarray, np.ndarray]:
            return np.zeros((1, 8, 32, 32), dtype=np.float32), seg

    monkeypatch.setattr(token_selection, "load_predictor", lambda *args: predictor)
    monkeypatch.setattr(token_selection, "check_checkpoint_readable", lambda path: None)
    monkeypatch.setattr(token_selection, "infer_dataset_class", lambda folder: OneCase)
    model = empty_nnunet / "model"
    (model / "fold_0").mkdir(parents=True)
    (model / "fold_0" / "checkpoint_final.pth").touch()
    preprocessed = empty_nnunet / "nnUNet_preprocessed" / "Dataset912_Unit"
    preprocessed.mkdir()
    (preprocessed / "splits_final.json").write_text(json.dumps([{"train": [], "val": ["case_0"]}]))

    result = token_selection.fold_token_selection(model, 0)
    assert result.classes == ("a", "b") and len(result.class_enrichment) == 3
    assert result.class_enrichment[0] == pytest.approx((2.0, 0.0))
    assert result.enrichment[0] == pytest.approx((16 / 32) / (128 / 256))  # the foreground figure stays


def test_the_report_shows_per_class_enrichment_per_stage_over_folds(empty_nnunet: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    from nnunet_scd.nnunet import token_selection

    def fold_result(model_folder: Path, fold: int, *args) -> token_selection.FoldTokenSelection:
        return token_selection.FoldTokenSelection(
            fold=fold, cases=2, tiles=4, kept_per_stage=(64, 16), enrichment=(2.0, 3.0), foreground_share=0.2,
            dice=0.5, classes=("liver", "gallbladder"), class_enrichment=((1.0 + fold, 4.0), (2.0, float("nan"))))

    monkeypatch.setattr(token_selection, "fold_token_selection", fold_result)
    (empty_nnunet / "nnUNet_raw" / "Dataset912_Unit").mkdir()
    assert main(["tokens", "-d", "912", "-tr", "nnUNetTrainerSCD", "-f", "0", "1"]) == 0
    out = capsys.readouterr().out.split("\nPer class", 1)[1]
    assert "stage 1" in out and "stage 2" in out
    liver, gallbladder = (line.split() for line in out.splitlines()[-2:])
    assert liver == ["liver", "1.500", "±", "0.707", "2.000", "±", "0.000"]
    assert gallbladder == ["gallbladder", "4.000", "±", "0.000", "n/a"]
