"""Synthetic phantoms, the BTCV converter and their commands."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

from nnunet_scd.commands import convert_btcv as convert_btcv_command
from nnunet_scd.commands import synth as synth_command
from nnunet_scd.datasets.btcv import BTCV_LABELS, BTCVFolderError, convert_btcv, find_btcv_cases
from nnunet_scd.datasets.phantom import LABELS, generate_phantom, summarize, write_phantom_dataset
from nnunet_scd.datasets.raw import UnreadableImageError

SMALL = (24, 48, 48)


def _read(path: Path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("raw")
    return write_phantom_dataset(raw, dataset_id=990, num_cases=5, shape=SMALL, seed=3, num_test_cases=1)


# ---------------------------------------------------------------- phantoms


def test_same_seed_gives_identical_arrays_and_other_seed_differs() -> None:
    a = generate_phantom(np.random.default_rng(7))
    b = generate_phantom(np.random.default_rng(7))
    c = generate_phantom(np.random.default_rng(8))
    assert a.image.tobytes() == b.image.tobytes() and a.label.tobytes() == b.label.tobytes()
    assert a.spacing_xyz == b.spacing_xyz
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)


def test_written_dataset_is_reproducible_from_seed(tmp_path: Path, phantom_set: Path) -> None:
    again = write_phantom_dataset(tmp_path, dataset_id=990, num_cases=5, shape=SMALL, seed=3, num_test_cases=1)
    for sub in ("imagesTr/phantom_002_0000.nii.gz", "labelsTr/phantom_002.nii.gz",
                "imagesTs/phantom_ts_000_0000.nii.gz"):
        assert np.array_equal(_read(phantom_set / sub)[0], _read(again / sub)[0]), sub


@pytest.mark.parametrize("index", range(6))
def test_every_organ_is_present_and_gallbladder_is_small(index: int) -> None:
    phantom = generate_phantom(np.random.default_rng([0, 0, index]))
    counts = np.bincount(phantom.label.ravel(), minlength=len(LABELS))
    assert len(counts) == len(LABELS) == 8  # background + 7 organs, no stray values
    missing = [name for name, value in LABELS.items() if counts[value] == 0]
    assert not missing, f"case {index} lacks {missing}"
    assert counts[LABELS["gallbladder"]] < 0.01 * phantom.label.size  # the small one
    assert counts[LABELS["liver"]] == counts[1:].max()  # the big one


@pytest.mark.parametrize("index", range(6))
def test_foreground_is_a_small_fraction_like_btcv(index: int) -> None:
    phantom = generate_phantom(np.random.default_rng([0, 0, index]))
    assert 0.02 <= phantom.foreground_fraction <= 0.15
    assert (phantom.image < -900).mean() > 0.2  # air around the body, in HU
    body = phantom.image > -500
    assert 0.2 < body.mean() < 0.8


def test_intensities_separate_tissues_in_hu() -> None:
    phantom = generate_phantom(np.random.default_rng(1))
    median = {name: float(np.median(phantom.image[phantom.label == value])) for name, value in LABELS.items()}
    assert median["background"] < -100  # air and fat dominate the unlabelled voxels
    assert median["aorta"] > median["liver"] > median["gallbladder"]
    assert 60 < median["liver"] < 160 and -30 < median["gallbladder"] < 60


def test_organ_contrast_pulls_organ_intensities_together_and_leaves_the_anatomy() -> None:
    standard = generate_phantom(np.random.default_rng(1))
    alike = generate_phantom(np.random.default_rng(1), organ_contrast=0.0)
    assert np.array_equal(standard.label, alike.label)
    # The blur carries organ intensity a voxel or two into the background; the rest of it is unchanged.
    assert np.mean(standard.image[standard.label == 0] == alike.image[alike.label == 0]) > 0.9

    def organ_medians(phantom) -> np.ndarray:
        return np.array([np.median(phantom.image[phantom.label == v]) for n, v in LABELS.items() if v])

    # Standard: gallbladder to aorta spans about 180 HU; with contrast 0 only each organ's own jitter is left.
    assert np.ptp(organ_medians(standard)) > 120
    assert np.ptp(organ_medians(alike)) < 40
    with pytest.raises(ValueError, match=r"organ_contrast must be in \[0, 1\]"):
        generate_phantom(np.random.default_rng(1), organ_contrast=1.5)


def test_images_vary_in_size_and_spacing_is_anisotropic_in_sitk_order(phantom_set: Path) -> None:
    shapes = set()
    for label_path in sorted((phantom_set / "labelsTr").glob("*.nii.gz")):
        image_path = phantom_set / "imagesTr" / label_path.name.replace(".nii.gz", "_0000.nii.gz")
        array, image = _read(image_path)
        _, label = _read(label_path)
        x, y, z = image.GetSpacing()  # SimpleITK order is (x, y, z)
        assert x == pytest.approx(y) and 0.6 < x < 1.0 and 1.5 < z < 3.5 and z > 2 * x
        assert array.shape == image.GetSize()[::-1] and array.dtype == np.int16
        assert label.GetSize() == image.GetSize() and label.GetSpacing() == image.GetSpacing()
        assert label.GetPixelID() == sitk.sitkUInt8
        shapes.add(array.shape)
    assert len(shapes) > 1


@pytest.mark.slow
def test_dataset_json_is_accepted_by_nnunet(phantom_set: Path) -> None:
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    dataset_json = json.loads((phantom_set / "dataset.json").read_text())
    assert dataset_json["channel_names"] == {"0": "CT"}
    assert dataset_json["labels"] == LABELS and dataset_json["numTraining"] == 5
    cases = get_filenames_of_train_images_and_targets(str(phantom_set), dataset_json)
    assert sorted(cases) == [f"phantom_{i:03d}" for i in range(5)]
    verify_dataset_integrity(str(phantom_set), num_processes=1)  # raises on any problem
    assert 0.02 < summarize(phantom_set)["foreground_mean"] < 0.15


def test_rerun_keeps_finished_cases_and_redoes_unfinished_ones(tmp_path: Path) -> None:
    folder = write_phantom_dataset(tmp_path, dataset_id=991, num_cases=6, shape=SMALL)
    kept = folder / "imagesTr" / "phantom_000_0000.nii.gz"
    os.utime(kept, (1, 1))
    broken = folder / "labelsTr" / "phantom_001.nii.gz"
    reference = _read(broken)[0]
    broken.unlink()  # as if interrupted between the image and its label
    write_phantom_dataset(tmp_path, dataset_id=991, num_cases=5, shape=SMALL)
    assert kept.stat().st_mtime == 1
    assert np.array_equal(_read(broken)[0], reference)
    assert not (folder / "labelsTr" / "phantom_005.nii.gz").exists()  # fewer cases asked for
    assert not (folder / "imagesTr" / "phantom_005_0000.nii.gz").exists()
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 5
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_existing_folder_with_other_parameters_is_refused(tmp_path: Path) -> None:
    write_phantom_dataset(tmp_path, dataset_id=992, num_cases=5, shape=SMALL, seed=0)
    with pytest.raises(FileExistsError, match="another dataset id"):
        write_phantom_dataset(tmp_path, dataset_id=992, num_cases=5, shape=SMALL, seed=1)
    with pytest.raises(FileExistsError, match="unique"):
        write_phantom_dataset(tmp_path, dataset_id=992, num_cases=5, shape=SMALL, name="Other")
    with pytest.raises(FileExistsError, match="organ_contrast"):
        write_phantom_dataset(tmp_path, dataset_id=992, num_cases=5, shape=SMALL, seed=0, organ_contrast=0.5)


@pytest.mark.parametrize("num_cases", [2, 4])
def test_fewer_training_cases_than_five_folds_are_refused_before_writing(tmp_path: Path, num_cases: int) -> None:
    # nnU-Net's KFold(5) split fails on fewer than 5 cases for every fold, so such a dataset is useless.
    with pytest.raises(ValueError, match="at least 5 training cases"):
        write_phantom_dataset(tmp_path, dataset_id=994, num_cases=num_cases, shape=SMALL)
    with pytest.raises(ValueError, match="negative"):
        write_phantom_dataset(tmp_path, dataset_id=994, num_cases=5, shape=SMALL, num_test_cases=-3)
    assert not (tmp_path / "Dataset994_SCDPhantom").exists()


def test_a_run_removes_the_temporary_files_a_killed_run_left_and_nothing_else(tmp_path: Path) -> None:
    # Every writer of a dataset folder holds its lock, so a .tmp_ file there is a leftover of a run killed
    # with kill -9. A .partial folder (an older run's scratch, the subject of an earlier regression) is not ours.
    folder = write_phantom_dataset(tmp_path, dataset_id=995, num_cases=5, shape=SMALL)
    (folder / ".partial").mkdir()
    kept = folder / ".partial" / "tmp_abc.nii.gz"
    kept.write_bytes(b"not ours")
    leftover = folder / ".tmp_phantom_005.nii.gz.xyz.nii.gz"
    leftover.write_bytes(b"a killed run was writing this")
    write_phantom_dataset(tmp_path, dataset_id=995, num_cases=6, shape=SMALL)
    assert kept.read_bytes() == b"not ours" and not leftover.exists()


def test_two_runs_writing_one_dataset_at_once_both_succeed(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def run(_: int) -> Path:
        return write_phantom_dataset(tmp_path, dataset_id=996, num_cases=5, shape=(12, 24, 24))

    with ThreadPoolExecutor(2) as pool:
        folders = list(pool.map(run, range(2)))
    assert folders[0] == folders[1]
    assert len(list((folders[0] / "labelsTr").glob("*.nii.gz"))) == 5
    verify_dataset_integrity(str(folders[0]), num_processes=1)
    assert not [p.name for p in folders[0].iterdir() if p.name.startswith(".tmp")]


# ---------------------------------------------------------------- BTCV


def _fake_btcv(root: Path, train: tuple[int, ...] = (1, 2, 3), test: tuple[int, ...] = (61,)) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("Training/img", "Training/label", "Testing/img"):
        (root / "RawData" / sub).mkdir(parents=True, exist_ok=True)
    for number in train + test:
        image = sitk.GetImageFromArray(rng.integers(-1000, 1000, (5, 12, 10)).astype(np.int16))
        image.SetSpacing((0.7, 0.7, 3.0))
        image.SetOrigin((-5.0, 10.0, 20.0))
        split = "Training" if number in train else "Testing"
        sitk.WriteImage(image, str(root / "RawData" / split / "img" / f"img{number:04d}.nii.gz"))
        if number in train:
            label = sitk.GetImageFromArray(rng.integers(0, 14, (5, 12, 10)).astype(np.uint8))
            label.CopyInformation(image)
            sitk.WriteImage(label, str(root / "RawData/Training/label" / f"label{number:04d}.nii.gz"))
    return root / "RawData"


def test_convert_btcv_writes_dataset017_with_13_organs(tmp_path: Path) -> None:
    source = _fake_btcv(tmp_path / "btcv")
    folder = convert_btcv(source, tmp_path / "raw")
    assert folder.name == "Dataset017_AbdominalOrganSegmentation"
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert dataset_json["labels"] == BTCV_LABELS and len(BTCV_LABELS) == 14
    assert dataset_json["labels"]["liver"] == 6 and dataset_json["labels"]["left_adrenal_gland"] == 13
    assert dataset_json["numTraining"] == 3 and dataset_json["channel_names"] == {"0": "CT"}
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["img0061_0000.nii.gz"]
    for number in (1, 2, 3):
        src_image, src_geometry = _read(source / "Training/img" / f"img{number:04d}.nii.gz")
        out_image, out_geometry = _read(folder / "imagesTr" / f"img{number:04d}_0000.nii.gz")
        assert np.array_equal(src_image, out_image)
        assert out_geometry.GetSpacing() == src_geometry.GetSpacing()
        assert out_geometry.GetOrigin() == src_geometry.GetOrigin()
        src_label = _read(source / "Training/label" / f"label{number:04d}.nii.gz")[0]
        assert np.array_equal(src_label, _read(folder / "labelsTr" / f"img{number:04d}.nii.gz")[0])

    verify_dataset_integrity(str(folder), num_processes=1)


def test_convert_btcv_rerun_skips_converted_cases_and_adds_new_ones(tmp_path: Path) -> None:
    source = _fake_btcv(tmp_path / "btcv", train=(1, 2), test=())
    folder = convert_btcv(source, tmp_path / "raw")
    done = folder / "labelsTr" / "img0001.nii.gz"
    os.utime(done, (1, 1))
    _fake_btcv(tmp_path / "btcv", train=(3,), test=())  # one more case; 1 and 2 untouched
    convert_btcv(source, tmp_path / "raw")
    assert done.stat().st_mtime == 1
    assert (folder / "labelsTr" / "img0003.nii.gz").is_file()
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 3


def test_convert_btcv_converts_a_redownloaded_source_again(tmp_path: Path) -> None:
    # Regression: reuse was keyed on the case name alone, so a rerun after re-downloading kept the broken copy.
    source = _fake_btcv(tmp_path / "btcv", train=(1, 2), test=())
    folder = convert_btcv(source, tmp_path / "raw")
    path = source / "Training/img/img0002.nii.gz"
    fixed = sitk.GetImageFromArray(np.full((5, 12, 10), 7, np.int16))
    fixed.CopyInformation(sitk.ReadImage(str(path)))
    sitk.WriteImage(fixed, str(path))
    convert_btcv(source, tmp_path / "raw")
    assert (_read(folder / "imagesTr/img0002_0000.nii.gz")[0] == 7).all()


def _truncate(path: Path) -> None:
    # The repro: `head -c <half> img0002.nii.gz` over the original.
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_convert_btcv_refuses_a_truncated_image_and_writes_nothing(tmp_path: Path) -> None:
    source = _fake_btcv(tmp_path / "btcv")
    _truncate(source / "Training/img/img0002.nii.gz")
    # What SimpleITK alone makes of it: no error, the missing voxels zero-filled.
    assert (_read(source / "Training/img/img0002.nii.gz")[0] == 0).mean() > 0.3
    with pytest.raises(UnreadableImageError, match=r"img0002\.nii\.gz is truncated or corrupt"):
        convert_btcv(source, tmp_path / "raw")
    assert not (tmp_path / "raw" / "Dataset017_AbdominalOrganSegmentation").exists()


def test_convert_btcv_refuses_data_truncated_before_compression(tmp_path: Path) -> None:
    import gzip

    source = _fake_btcv(tmp_path / "btcv")
    path = source / "Training/label/label0003.nii.gz"
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[: len(data) // 2]))  # a valid gzip stream of half a NIfTI file
    with pytest.raises(UnreadableImageError, match=r"label0003\.nii\.gz holds .* bytes"):
        convert_btcv(source, tmp_path / "raw")


def test_failed_rerun_keeps_earlier_cases_and_marks_the_folder_unfinished(tmp_path: Path) -> None:
    source = _fake_btcv(tmp_path / "btcv", train=(1, 2), test=())
    folder = convert_btcv(source, tmp_path / "raw")
    _fake_btcv(tmp_path / "btcv", train=(3,), test=())
    (source / "Training/label/label0003.nii.gz").write_bytes(b"not an image")
    with pytest.raises(UnreadableImageError):
        convert_btcv(source, tmp_path / "raw")
    # Verified before writing: the finished dataset is untouched, still complete and still valid.
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 2
    assert not (folder / "imagesTr/img0003_0000.nii.gz").exists()


def test_malformed_btcv_folder_names_what_is_missing(tmp_path: Path) -> None:
    source = _fake_btcv(tmp_path / "btcv")
    (source / "Training/label/label0002.nii.gz").unlink()
    (source / "Training/img/img0003.nii.gz").unlink()
    with pytest.raises(BTCVFolderError) as error:
        find_btcv_cases(source)
    assert "img0002.nii.gz has no label" in str(error.value) and "label0002.nii.gz" in str(error.value)
    assert "label0003.nii.gz has no image" in str(error.value)
    with pytest.raises(BTCVFolderError, match=r"missing folder .*Training[/\\]img"):
        find_btcv_cases(tmp_path)  # neither RawData nor Training here
    assert not (tmp_path / "raw").exists()


def test_btcv_label_with_other_geometry_is_refused(tmp_path: Path) -> None:
    source = _fake_btcv(tmp_path / "btcv", train=(1, 2))
    path = source / "Training/label/label0002.nii.gz"
    label = sitk.ReadImage(str(path))
    label.SetSpacing((0.7, 0.7, 5.0))
    sitk.WriteImage(label, str(path))
    with pytest.raises(BTCVFolderError, match=r"label0002\.nii\.gz does not match .*spacing"):
        convert_btcv(source, tmp_path / "raw")


# ---------------------------------------------------------------- commands


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet-scd")
    subparsers = parser.add_subparsers(dest="command", required=True)
    synth_command.add_parser(subparsers)
    convert_btcv_command.add_parser(subparsers)
    return parser


@pytest.mark.parametrize("command,expected", [("synth", "--num-cases"), ("convert-btcv", "RAW_DIR")])
def test_command_help(command: str, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert expected in capsys.readouterr().out


def test_synth_command_writes_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["synth", "-n", "5", "--shape", "16", "32", "32", "-d", "993", "-o", str(tmp_path)])
    assert args.run(args) == 0
    assert "foreground fraction" in capsys.readouterr().out
    assert len(list((tmp_path / "Dataset993_SCDPhantom" / "labelsTr").glob("*.nii.gz"))) == 5


@pytest.mark.parametrize("argv,message", [
    (["-n", "4"], "at least 5, got 4 (nnU-Net splits the training cases into 5 folds)"),
    (["-n", "two"], "expected an integer"),
    (["--test-cases", "-3"], "--test-cases: must be at least 0, got -3"),
    (["--shape", "0", "32", "32"], "must be at least 1"),
    (["--organ-contrast", "-0.5"], "must be a number of at least 0"),
])
def test_synth_refuses_bad_numbers_in_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["synth", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_output_folder_that_is_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    a_file = tmp_path / "raw.txt"
    a_file.write_text("")
    for argv in (["synth", "-o", str(a_file)], ["convert-btcv", str(tmp_path), "-o", str(a_file)]):
        args = _parser().parse_args(argv)
        with pytest.raises(SystemExit, match=r"raw\.txt is a file, not a folder"):
            args.run(args)


def test_commands_without_output_folder_say_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("nnUNet_raw", raising=False)
    for argv in (["synth"], ["convert-btcv", "somewhere"]):
        args = _parser().parse_args(argv)
        with pytest.raises(SystemExit, match="nnUNet_raw"):
            args.run(args)


def test_convert_btcv_command_reports_malformed_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["convert-btcv", str(tmp_path), "-o", str(tmp_path / "raw")])
    assert args.run(args) == 2
    assert "Training" in capsys.readouterr().err


def test_convert_btcv_command_on_an_unreadable_label_is_one_line_and_leaves_no_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _fake_btcv(tmp_path / "btcv")
    _truncate(source / "Training/label/label0003.nii.gz")
    args = _parser().parse_args(["convert-btcv", str(source), "-o", str(tmp_path / "raw")])
    assert args.run(args) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after tqdm's progress lines
    assert last.startswith("nnunet-scd convert-btcv: ") and "label0003.nii.gz is truncated" in last
    assert "download it again" in last and "Traceback" not in err
    assert not (tmp_path / "raw" / "Dataset017_AbdominalOrganSegmentation").exists()


# ---------------------------------------------------------------- refusals before any writing, and concurrent runs


def test_synth_negative_seed_is_refused_by_name_and_leaves_no_folder(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    # Regression: numpy's vague "expected non-negative integer", after a phantom.json that blocked the next run.
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["synth", "--seed", "-5", "-o", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--seed: must be at least 0, got -5" in capsys.readouterr().err
    with pytest.raises(ValueError, match="seed must be an integer of at least 0, got -5"):
        write_phantom_dataset(tmp_path, dataset_id=980, num_cases=5, shape=SMALL, seed=-5)
    assert not list(tmp_path.glob("Dataset980_*"))


def test_synth_shape_too_large_for_memory_is_refused_before_writing(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    # Regression: a MemoryError traceback from numpy.
    args = _parser().parse_args(["synth", "--shape", "3000", "3000", "3000", "-d", "981", "-o", str(tmp_path)])
    assert args.run(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GiB of memory" in err and "choose a smaller shape" in err
    assert not list(tmp_path.glob("Dataset981_*"))


@pytest.mark.slow
def test_second_synth_run_into_one_id_waits_for_the_first_and_leaves_a_consistent_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: two runs with different -n both exited 0 and left labelsTr and numTraining disagreeing.
    import threading

    from nnunet_scd.datasets import phantom

    first_is_writing, release_first = threading.Event(), threading.Event()
    real_generate = phantom.generate_phantom

    def generate(*args, **kwargs):
        if threading.current_thread().name == "first" and not release_first.is_set():
            first_is_writing.set()
            release_first.wait(30)
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(phantom, "generate_phantom", generate)
    errors: list[BaseException] = []

    def run(num_cases: int) -> None:
        try:
            write_phantom_dataset(tmp_path, dataset_id=982, num_cases=num_cases, shape=(12, 24, 24))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    first = threading.Thread(target=run, args=(5,), name="first")
    first.start()
    second = threading.Thread(target=run, args=(7,), name="second")
    try:
        assert first_is_writing.wait(30)
        second.start()
        second.join(1.0)
        assert second.is_alive(), "the second run did not wait for the first"
    finally:
        release_first.set()
    first.join(60)
    second.join(60)
    assert not errors
    folder = tmp_path / "Dataset982_SCDPhantom"
    assert len(list((folder / "labelsTr").glob("*.nii.gz"))) == 7
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 7
    verify_dataset_integrity(str(folder), num_processes=1)


def test_convert_btcv_refuses_a_dataset017_it_did_not_make_unless_forced(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    # Regression: it rewrote the foreign folder's dataset.json and mixed its cases in.
    source = _fake_btcv(tmp_path / "btcv", train=(1, 2), test=())
    theirs = tmp_path / "raw" / "Dataset017_AbdominalOrganSegmentation"
    (theirs / "imagesTr").mkdir(parents=True)
    (theirs / "imagesTr" / "their_case_0000.nii.gz").write_bytes(b"someone else's data")
    (theirs / "dataset.json").write_text('{"name": "theirs"}')
    args = _parser().parse_args(["convert-btcv", str(source), "-o", str(tmp_path / "raw")])
    assert args.run(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(theirs) in err and "not made by nnunet-scd convert-btcv" in err and "--force" in err
    assert (theirs / "dataset.json").read_text() == '{"name": "theirs"}'
    assert sorted(p.name for p in (theirs / "imagesTr").iterdir()) == ["their_case_0000.nii.gz"]

    args = _parser().parse_args(["convert-btcv", str(source), "-o", str(tmp_path / "raw"), "--force"])
    assert args.run(args) == 0
    assert sorted(p.name for p in (theirs / "imagesTr").iterdir()) == ["img0001_0000.nii.gz", "img0002_0000.nii.gz"]
    verify_dataset_integrity(str(theirs), num_processes=1)


def test_convert_btcv_rerun_after_deleting_source_cases_equals_a_fresh_run(tmp_path: Path) -> None:
    # Regression: cases deleted from the source stayed in imagesTr/labelsTr/imagesTs and in numTraining.
    source = _fake_btcv(tmp_path / "btcv", train=(1, 2, 3), test=(61,))
    folder = convert_btcv(source, tmp_path / "raw")
    for path in ("Training/img/img0002.nii.gz", "Training/label/label0002.nii.gz", "Testing/img/img0061.nii.gz"):
        (source / path).unlink()
    convert_btcv(source, tmp_path / "raw")
    fresh = convert_btcv(source, tmp_path / "fresh")

    def files(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    assert files(folder) == files(fresh)
    assert sorted(json.loads((folder / "btcv_sources.json").read_text())) == ["img0001", "img0003"]
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 2
    verify_dataset_integrity(str(folder), num_processes=1)


def test_btcv_folder_with_two_names_for_one_case_is_refused(tmp_path: Path) -> None:
    source = _fake_btcv(tmp_path / "btcv", train=(1, 2), test=())
    (source / "Training/img/img1.nii.gz").write_bytes((source / "Training/img/img0001.nii.gz").read_bytes())
    with pytest.raises(BTCVFolderError, match=r"img0001\.nii\.gz and .*img1\.nii\.gz are both case 1"):
        find_btcv_cases(source)
