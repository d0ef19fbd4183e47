"""Small helpers for writing nnU-Net v2 raw datasets safely (atomic files, one folder per dataset id)."""

from __future__ import annotations

import gzip
import math
import os
import re
import tempfile
import zlib
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import SimpleITK as sitk  # noqa: N813
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunet_scd.atomic import atomic_target, write_text_atomic

__all__ = [
    "FILE_ENDING",
    "MIN_TRAINING_CASES",
    "UnreadableImageError",
    "check_image_readable",
    "dataset_folder",
    "raw_root_from_env",
    "write_dataset_json",
    "write_images_atomic",
    "write_text_atomic",
]

FILE_ENDING = ".nii.gz"
# nnU-Net splits the training cases into 5 folds (sklearn KFold) before it trains any fold, so with
# fewer cases every fold, 0 included, fails.
MIN_TRAINING_CASES = 5
_NIFTI1_HEADER_BYTES = 348  # the smallest NIfTI header; NIfTI-2's is larger, so this never over-asks


class UnreadableImageError(ValueError):
    """A source image is truncated, corrupt or not an image; the message names the file."""


def raw_root_from_env(out: str | os.PathLike | None) -> Path:
    """The nnU-Net raw folder: ``out`` if given, else ``$nnUNet_raw``; a clear error when neither is set."""
    if out:
        root = Path(out)
    else:
        env = os.environ.get("nnUNet_raw")
        if not env:
            raise SystemExit(
                "No output folder: pass --out RAW_FOLDER or set the environment variable nnUNet_raw "
                "(e.g. export nnUNet_raw=$PWD/nnUNet_raw), the folder nnU-Net reads raw datasets from."
            )
        root = Path(env)
    if root.exists() and not root.is_dir():
        source = "--out" if out else "nnUNet_raw"
        raise SystemExit(f"error: {source} {root} is a file, not a folder; give the folder nnU-Net reads raw "
                         "datasets from (it is created if missing).")
    return root


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


def write_images_atomic(items: Sequence[tuple[sitk.Image, Path]]) -> None:
    """Write several images (one case: its image and label) so that all or none of them appear.

    Each goes to a temporary file with a name unique to this write, in the dataset folder (the
    parent of ``imagesTr``), never in an image folder, because nnU-Net lists every ``.nii.gz`` file
    there, hidden or not. Only when every one is written are they renamed into place; a failure
    removes this write's temporary files and nothing else. The temporary names keep the ``.nii.gz``
    ending so SimpleITK picks the NIfTI writer.
    """
    with ExitStack() as stack:
        # ExitStack renames the last-entered file first, so enter in reverse: the files then appear in the
        # order given, a case's label (which marks it complete) last.
        temporary = {path: stack.enter_context(atomic_target(path, FILE_ENDING, tmp_dir=path.parent.parent))
                     for _, path in reversed(items)}
        for image, path in items:
            sitk.WriteImage(image, temporary[path], useCompression=True)


def check_image_readable(path: Path) -> None:
    """Raise ``UnreadableImageError`` unless ``path`` is a complete, readable single image.

    SimpleITK zero-fills the voxels a truncated ``.nii.gz`` is missing and reports no error, so
    the gzip stream is read to its end first: that checks its length and CRC. Then the header must
    parse and the decompressed data must hold every voxel the header declares.
    """
    data_bytes = None
    if path.name.endswith(".gz"):
        try:
            data_bytes = _gzip_length(path)
        except (OSError, EOFError, zlib.error) as error:
            raise UnreadableImageError(f"{path} is truncated or corrupt ({error}); download it again") from None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise UnreadableImageError(f"{path} is not an image SimpleITK can read; download it again") from None
    if data_bytes is None or not path.name.endswith(".nii.gz"):
        return
    # The bytes per voxel of the header's pixel type, from a one-voxel image of that type.
    voxel = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(), reader.GetNumberOfComponents())
    needed = _NIFTI1_HEADER_BYTES + math.prod(reader.GetSize()) * sitk.GetArrayViewFromImage(voxel).nbytes
    if data_bytes < needed:
        raise UnreadableImageError(
            f"{path} holds {data_bytes} bytes of image data but its header declares {needed}: the file was "
            "truncated before it was compressed; download it again"
        )


def _gzip_length(path: Path) -> int:
    # Reading to the end makes gzip check the stream's CRC and length; EOFError when it is cut short.
    length = 0
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(1 << 22):
            length += len(chunk)
    return length


def write_dataset_json(folder: Path, labels: dict[str, int], num_training: int, channel_names: dict[str, str],
                       **extra: object) -> None:
    """Write ``dataset.json`` with nnunetv2's own ``generate_dataset_json``, atomically."""
    # generate_dataset_json writes straight into a folder, so it writes into a scratch folder and the
    # text then goes into place by the one atomic writer.
    with tempfile.TemporaryDirectory(prefix="nnunet_scd_") as scratch:
        # generate_dataset_json edits the dicts it is given, so hand it copies.
        generate_dataset_json(scratch, dict(channel_names), dict(labels), num_training, FILE_ENDING, **extra)
        text = (Path(scratch) / "dataset.json").read_text()
    write_text_atomic(text, folder / "dataset.json")
