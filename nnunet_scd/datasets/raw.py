"""Small helpers for writing nnU-Net v2 raw datasets safely (atomic files, one folder per dataset id)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import SimpleITK as sitk  # noqa: N813

FILE_ENDING = ".nii.gz"
PARTIAL_DIR = ".partial"  # temporary files of unfinished writes


def raw_root_from_env(out: str | os.PathLike | None) -> Path:
    """The nnU-Net raw folder: ``out`` if given, else ``$nnUNet_raw``; a clear error when neither is set."""
    if out:
        return Path(out)
    env = os.environ.get("nnUNet_raw")
    if not env:
        raise SystemExit(
            "No output folder: pass --out RAW_FOLDER or set the environment variable nnUNet_raw "
            "(e.g. export nnUNet_raw=$PWD/nnUNet_raw), the folder nnU-Net reads raw datasets from."
        )
    return Path(env)


def dataset_folder(raw_root: Path, dataset_id: int, name: str) -> Path:
    """``<raw_root>/Dataset<id>_<name>``; refuses when another dataset already uses that id.

    nnU-Net resolves ``-d <id>`` by the id alone, so two folders with one id make every later
    nnU-Net command fail.
    """
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset id must be within 1..999 (nnU-Net uses three digits), got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise ValueError(f"dataset name {name!r} may only contain letters, digits, '_' and '-'")
    folder = raw_root / f"Dataset{dataset_id:03d}_{name}"
    if raw_root.is_dir():
        clashes = sorted(p.name for p in raw_root.glob(f"Dataset{dataset_id:03d}_*") if p != folder)
        if clashes:
            raise FileExistsError(
                f"{raw_root} already holds {', '.join(clashes)} with dataset id {dataset_id}. nnU-Net needs "
                f"ids to be unique: choose another id or remove that folder."
            )
    return folder


def _default_permissions(path: str) -> None:
    # mkstemp creates files readable by the owner only; give them the mode a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_image_atomic(image: sitk.Image, path: Path) -> None:
    """Write ``image`` to ``path`` through a temporary file, then rename it.

    An interrupted run therefore never leaves a half-written file under the final name. The
    temporary file lives in ``<dataset>/.partial`` (beside ``imagesTr``), never in an image folder,
    because nnU-Net lists every ``.nii.gz`` file there, hidden or not. It keeps the ``.nii.gz``
    ending so SimpleITK picks the NIfTI writer.
    """
    import SimpleITK as sitk  # noqa: N813

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent.parent / PARTIAL_DIR
    partial.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="tmp_", suffix=FILE_ENDING, dir=partial)
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp, useCompression=True)
        _default_permissions(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(text: str, path: Path) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        _default_permissions(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_dataset_json(folder: Path, labels: dict[str, int], num_training: int, channel_names: dict[str, str],
                       **extra: object) -> None:
    """Write ``dataset.json`` with nnunetv2's own ``generate_dataset_json``, atomically."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    with tempfile.TemporaryDirectory(dir=folder, prefix=".tmp_") as tmp:
        # generate_dataset_json edits the dicts it is given, so hand it copies.
        generate_dataset_json(tmp, dict(channel_names), dict(labels), num_training, FILE_ENDING, **extra)
        os.replace(Path(tmp) / "dataset.json", folder / "dataset.json")
