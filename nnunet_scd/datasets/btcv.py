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

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

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


class BTCVFolderError(ValueError):
    """The input folder does not have the BTCV ``RawData`` layout; the message lists what is wrong."""


@dataclass(frozen=True)
class BTCVCase:
    """One case: its nnU-Net identifier, image and (for training cases) label file."""

    identifier: str
    image: Path
    label: Path | None


def _numbered(folder: Path, pattern: re.Pattern[str]) -> dict[str, Path]:
    found = {}
    for path in sorted(folder.iterdir()):
        match = pattern.fullmatch(path.name)
        if match:
            found[match.group(1)] = path
    return found


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
    problems += [f"image {images[n]} has no label {label_dir / f'label{n}.nii.gz'}"
                 for n in sorted(images.keys() - labels.keys())]
    problems += [f"label {labels[n]} has no image {img_dir / f'img{n}.nii.gz'}"
                 for n in sorted(labels.keys() - images.keys())]
    if problems:
        raise BTCVFolderError(f"{raw_dir} is incomplete:\n  - " + "\n  - ".join(problems))
    training = [BTCVCase(f"img{n}", images[n], labels[n]) for n in sorted(images)]
    test_dir = root / "Testing" / "img"
    tests = _numbered(test_dir, _IMAGE) if test_dir.is_dir() else {}
    testing = [BTCVCase(f"img{n}", tests[n], None) for n in sorted(tests)]
    clash = sorted({c.identifier for c in training} & {c.identifier for c in testing})
    if clash:
        raise BTCVFolderError(f"{raw_dir}: the same case number is both in Training and Testing: {clash}")
    return training, testing


def _checked_label(case: BTCVCase, image):  # (BTCVCase, sitk.Image) -> sitk.Image
    """Read the label, check it fits its image and holds BTCV labels only; return it as uint8."""
    import numpy as np
    import SimpleITK as sitk  # noqa: N813

    label = sitk.ReadImage(str(case.label))
    errors = []
    if label.GetSize() != image.GetSize():
        errors.append(f"size {label.GetSize()} != image size {image.GetSize()}")
    for what in ("Spacing", "Origin", "Direction"):
        ours, theirs = getattr(label, f"Get{what}")(), getattr(image, f"Get{what}")()
        if not np.allclose(ours, theirs, rtol=_GEOMETRY_TOLERANCE, atol=_GEOMETRY_TOLERANCE):
            errors.append(f"{what.lower()} {tuple(round(v, 4) for v in ours)} != image "
                          f"{tuple(round(v, 4) for v in theirs)}")
    if errors:
        raise BTCVFolderError(f"{case.label} does not match {case.image}: " + "; ".join(errors))
    array = sitk.GetArrayViewFromImage(label)
    values = np.unique(array)
    unknown = [v for v in values.tolist() if v not in BTCV_LABELS.values()]
    if unknown:
        raise BTCVFolderError(f"{case.label} holds values {unknown} outside the 13 BTCV labels (0..13)")
    fixed = sitk.GetImageFromArray(array.astype(np.uint8))
    fixed.CopyInformation(image)  # identical geometry, so nnU-Net's integrity check passes exactly
    return fixed


def convert_btcv(raw_dir: str | Path, raw_root: str | Path, progress: bool = False) -> Path:
    """Convert BTCV ``RawData`` into ``<raw_root>/Dataset017_AbdominalOrganSegmentation``; returns it.

    Cases already converted are skipped, so an interrupted conversion resumes.
    """
    import SimpleITK as sitk  # noqa: N813
    from tqdm import tqdm

    from nnunet_scd.datasets.raw import (
        FILE_ENDING,
        PARTIAL_DIR,
        dataset_folder,
        write_dataset_json,
        write_image_atomic,
    )

    training, testing = find_btcv_cases(raw_dir)
    folder = dataset_folder(Path(raw_root), BTCV_DATASET_ID, BTCV_DATASET_NAME)
    todo = [("Tr", c) for c in training] + [("Ts", c) for c in testing]
    for split, case in tqdm(todo, desc=f"BTCV -> {folder.name}", unit="case", disable=not progress):
        image_out = folder / f"images{split}" / f"{case.identifier}_0000{FILE_ENDING}"
        label_out = folder / "labelsTr" / f"{case.identifier}{FILE_ENDING}"
        if image_out.is_file() and (case.label is None or label_out.is_file()):
            continue
        image = sitk.ReadImage(str(case.image))
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise BTCVFolderError(f"{case.image} is not a single-channel 3D volume")
        label = _checked_label(case, image) if case.label is not None else None
        write_image_atomic(image, image_out)
        if label is not None:  # written last: a training case is complete once its label exists
            write_image_atomic(label, label_out)
    write_dataset_json(
        folder, BTCV_LABELS, len(training), {"0": "CT"}, dataset_name=folder.name,
        reference="https://www.synapse.org/#!Synapse:syn3193805/wiki/217789",
        description="Multi-Atlas Labeling Beyond the Cranial Vault (BTCV) abdomen, 13 organs, CT",
        license="see Synapse syn3193805", converted_by="nnunet-scd convert-btcv",
    )
    shutil.rmtree(folder / PARTIAL_DIR, ignore_errors=True)
    return folder
