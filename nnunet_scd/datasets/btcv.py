"""Convert the BTCV "Beyond the Cranial Vault" abdomen ``RawData`` folder to nnU-Net v2's Dataset017.

Expected input (the layout of the Synapse ``RawData.zip``)::

    RawData/Training/img/img0001.nii.gz     CT volume
    RawData/Training/label/label0001.nii.gz its 13-organ label map, same geometry
    RawData/Testing/img/img0061.nii.gz      optional, unlabelled -> imagesTs

Output: ``Dataset017_AbdominalOrganSegmentation`` with ``imagesTr/img0001_0000.nii.gz``,
``labelsTr/img0001.nii.gz``, ``imagesTs/...`` and ``dataset.json``. Volumes are read and written
with SimpleITK, so spacing, origin and direction are kept.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813
from tqdm import tqdm

from nnunet_scd.atomic import folder_lock
from nnunet_scd.datasets.raw import (
    FILE_ENDING,
    check_image_readable,
    dataset_folder,
    write_dataset_json,
    write_images_atomic,
    write_text_atomic,
)

BTCV_DATASET_ID = 17
BTCV_DATASET_NAME = "AbdominalOrganSegmentation"
BTCV_LABELS: dict[str, int] = {
    "background": 0,
    "spleen": 1,
    "right_kidney": 2,
    "left_kidney": 3,
    "gallbladder": 4,
    "esophagus": 5,
    "liver": 6,
    "stomach": 7,
    "aorta": 8,
    "inferior_vena_cava": 9,
    "portal_vein_and_splenic_vein": 10,
    "pancreas": 11,
    "right_adrenal_gland": 12,
    "left_adrenal_gland": 13,
}
_IMAGE = re.compile(r"img(\d+)\.nii\.gz")
_LABEL = re.compile(r"label(\d+)\.nii\.gz")
# Label and image geometry may differ by float rounding in the NIfTI header, not more.
_GEOMETRY_TOLERANCE = 1e-3
# In the dataset folder: per converted case, the size and mtime of the source files it was made from.
_SOURCES_FILE = "btcv_sources.json"


class BTCVFolderError(ValueError):
    """The input folder does not have the BTCV ``RawData`` layout; the message lists what is wrong."""


@dataclass(frozen=True)
class BTCVCase:
    """One case: its nnU-Net identifier, image and (for training cases) label file."""

    identifier: str
    image: Path
    label: Path | None


def _numbered(folder: Path, pattern: re.Pattern[str]) -> dict[int, Path]:
    """The files of ``folder`` by case number; two names of one number (img1, img0001) are refused."""
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        match = pattern.fullmatch(path.name)
        if match:
            number = int(match.group(1))
            if number in found:
                raise BTCVFolderError(f"{found[number]} and {path} are both case {number}; keep one of them")
            found[number] = path
    return found


def _identifier(image: Path) -> str:
    # The image's own digits, so that the usual img0001.nii.gz keeps its name img0001.
    return f"img{_IMAGE.fullmatch(image.name).group(1)}"


def find_btcv_cases(raw_dir: str | Path) -> tuple[list[BTCVCase], list[BTCVCase]]:
    """Training and test cases of a BTCV ``RawData`` folder (or of its parent).

    Raises:
        BTCVFolderError: listing every missing folder, image without label and label without image.
    """
    root = Path(raw_dir)
    if not root.is_dir():
        raise BTCVFolderError(f"{root} is not a folder. Pass the BTCV RawData folder (with Training/img).")
    if not (root / "Training").is_dir() and (root / "RawData" / "Training").is_dir():
        root = root / "RawData"
    img_dir, label_dir = root / "Training" / "img", root / "Training" / "label"
    problems = [f"missing folder {d}" for d in (img_dir, label_dir) if not d.is_dir()]
    if problems:
        raise BTCVFolderError(
            f"{raw_dir} does not look like the BTCV RawData folder:\n  - " + "\n  - ".join(problems)
            + "\nExpected RawData/Training/img/img0001.nii.gz and RawData/Training/label/label0001.nii.gz."
        )
    images, labels = _numbered(img_dir, _IMAGE), _numbered(label_dir, _LABEL)
    if not images:
        problems.append(f"no images named img0001.nii.gz, img0002.nii.gz, ... in {img_dir}")
    problems += [f"image {images[n]} has no label {label_dir / f'label{n:04d}.nii.gz'}"
                 for n in sorted(images.keys() - labels.keys())]
    problems += [f"label {labels[n]} has no image {img_dir / f'img{n:04d}.nii.gz'}"
                 for n in sorted(labels.keys() - images.keys())]
    if problems:
        raise BTCVFolderError(f"{raw_dir} is incomplete:\n  - " + "\n  - ".join(problems))
    training = [BTCVCase(_identifier(images[n]), images[n], labels[n]) for n in sorted(images)]
    test_dir = root / "Testing" / "img"
    tests = _numbered(test_dir, _IMAGE) if test_dir.is_dir() else {}
    testing = [BTCVCase(_identifier(tests[n]), tests[n], None) for n in sorted(tests)]
    clash = sorted(f"img{n:04d}" for n in images.keys() & tests.keys())
    if clash:
        raise BTCVFolderError(f"{raw_dir}: the same case number is both in Training and Testing: {clash}")
    return training, testing


def _check_label(case: BTCVCase, label, image) -> None:  # (BTCVCase, sitk.Image, sitk.Image | reader) -> None
    """Raise BTCVFolderError unless ``label`` fits its image's geometry and holds BTCV labels only.

    ``image`` may be the image or a SimpleITK reader holding its header: only the geometry is used.
    """
    errors = []
    if tuple(label.GetSize()) != tuple(image.GetSize()):
        errors.append(f"size {label.GetSize()} != image size {image.GetSize()}")
    for what in ("Spacing", "Origin", "Direction"):
        ours, theirs = getattr(label, f"Get{what}")(), getattr(image, f"Get{what}")()
        if not np.allclose(ours, theirs, rtol=_GEOMETRY_TOLERANCE, atol=_GEOMETRY_TOLERANCE):
            errors.append(f"{what.lower()} {tuple(round(v, 4) for v in ours)} != image "
                          f"{tuple(round(v, 4) for v in theirs)}")
    if errors:
        raise BTCVFolderError(f"{case.label} does not match {case.image}: " + "; ".join(errors))
    unknown = [v for v in np.unique(sitk.GetArrayViewFromImage(label)).tolist() if v not in BTCV_LABELS.values()]
    if unknown:
        raise BTCVFolderError(f"{case.label} holds values {unknown} outside the 13 BTCV labels (0..13)")


def _verify_sources(case: BTCVCase) -> None:
    """Read every file of a case completely and check it, so that a bad source stops the run before it writes."""
    for path in (case.image, case.label):
        if path is not None:
            check_image_readable(path)
    header = sitk.ImageFileReader()
    header.SetFileName(str(case.image))
    header.ReadImageInformation()
    if header.GetDimension() != 3 or header.GetNumberOfComponents() != 1:
        raise BTCVFolderError(f"{case.image} is not a single-channel 3D volume")
    if case.label is not None:
        _check_label(case, sitk.ReadImage(str(case.label)), header)


def _stamp(case: BTCVCase) -> dict[str, list[int] | None]:
    """What a converted case was made from: size and modification time of each source file.

    A re-downloaded source differs in one of them, so its case is converted again.
    """
    def of(path: Path | None) -> list[int] | None:
        return None if path is None else [path.stat().st_size, path.stat().st_mtime_ns]

    return {"image": of(case.image), "label": of(case.label)}


def _outputs(folder: Path, split: str, case: BTCVCase) -> tuple[Path, Path | None]:
    image = folder / f"images{split}" / f"{case.identifier}_0000{FILE_ENDING}"
    label = folder / "labelsTr" / f"{case.identifier}{FILE_ENDING}" if case.label is not None else None
    return image, label


def _convert_case(case: BTCVCase, image_out: Path, label_out: Path | None) -> None:
    """Convert one verified case; its image and label appear together or not at all."""
    image = sitk.ReadImage(str(case.image))
    items = [(image, image_out)]
    if case.label is not None:
        label = sitk.ReadImage(str(case.label))
        fixed = sitk.GetImageFromArray(sitk.GetArrayViewFromImage(label).astype(np.uint8))
        fixed.CopyInformation(image)  # identical geometry, so nnU-Net's integrity check passes exactly
        items.append((fixed, label_out))
    write_images_atomic(items)


def _stale_outputs(folder: Path, wanted: set[Path]) -> list[Path]:
    """Case files in ``folder`` that no source case makes: sources since deleted, or a taken-over folder's own."""
    stale = []
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        if (folder / sub).is_dir():
            stale += [p for p in sorted((folder / sub).iterdir()) if p.name.endswith(FILE_ENDING) and p not in wanted]
    return stale


def convert_btcv(raw_dir: str | Path, raw_root: str | Path, progress: bool = False, force: bool = False) -> Path:
    """Convert BTCV ``RawData`` into ``<raw_root>/Dataset017_AbdominalOrganSegmentation``; returns it.

    Every source file that needs converting is first read completely and checked (``_verify_sources``),
    so a truncated download or a wrong label stops the run before it writes anything. Cases already
    converted from the same source files (same size and modification time, recorded in
    ``btcv_sources.json``) are skipped, so an interrupted conversion resumes and a re-downloaded
    file is converted again; cases no longer in ``raw_dir`` are removed, so a rerun gives what a
    fresh run gives. ``dataset.json`` is written last: a folder without it is unfinished. A failed
    first conversion removes the folder it created.

    ``btcv_sources.json``, written before any case, marks the folder as this converter's: a
    Dataset017 folder without it came from elsewhere and is refused, unless ``force``, which replaces
    its cases by BTCV's. A second run waits for the first (``folder_lock``).
    """
    training, testing = find_btcv_cases(raw_dir)
    folder = dataset_folder(Path(raw_root), BTCV_DATASET_ID, BTCV_DATASET_NAME)
    on_wait = (lambda line: print(line, file=sys.stderr)) if progress else None
    with folder_lock(folder, on_wait):
        return _convert_locked(training, testing, folder, progress, force)


def _convert_locked(training: list[BTCVCase], testing: list[BTCVCase], folder: Path, progress: bool,
                    force: bool) -> Path:
    manifest_path = folder / _SOURCES_FILE
    ours = manifest_path.is_file()
    if not ours and folder.is_dir() and any(not p.name.startswith(".tmp_") for p in folder.iterdir()) and not force:
        raise FileExistsError(
            f"{folder} was not made by nnunet-scd convert-btcv (it has no {_SOURCES_FILE}); not touching it. Move it "
            "away, or pass --force to replace its cases by the BTCV cases."
        )
    converted = json.loads(manifest_path.read_text()) if ours else {}
    todo, wanted = [], set()
    for split, case in [("Tr", c) for c in training] + [("Ts", c) for c in testing]:
        outputs = [p for p in _outputs(folder, split, case) if p is not None]
        wanted.update(outputs)
        if converted.get(case.identifier) != _stamp(case) or not all(p.is_file() for p in outputs):
            todo.append((split, case))
    stale = _stale_outputs(folder, wanted)
    for _, case in tqdm(todo, desc="checking the BTCV files", unit="case", disable=not progress):
        _verify_sources(case)

    created = not folder.exists()
    try:
        if todo or stale or not ours:  # the folder is unfinished until every case is in again
            (folder / "dataset.json").unlink(missing_ok=True)
        identifiers = {case.identifier for case in training + testing}
        converted = {k: v for k, v in converted.items() if k in identifiers}
        write_text_atomic(json.dumps(converted, indent=1), manifest_path)
        for path in stale:
            path.unlink()
        for split, case in tqdm(todo, desc=f"BTCV -> {folder.name}", unit="case", disable=not progress):
            _convert_case(case, *_outputs(folder, split, case))
            converted[case.identifier] = _stamp(case)
            write_text_atomic(json.dumps(converted, indent=1), manifest_path)
        write_dataset_json(
            folder, BTCV_LABELS, len(training), {"0": "CT"}, dataset_name=folder.name,
            reference="https://www.synapse.org/#!Synapse:syn3193805/wiki/217789",
            description="Multi-Atlas Labeling Beyond the Cranial Vault (BTCV) abdomen, 13 organs, CT",
            license="see Synapse syn3193805", converted_by="nnunet-scd convert-btcv",
        )
    except Exception:
        if created:  # nothing of this run is worth keeping; an interrupt (not an Exception) keeps it to resume
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder
