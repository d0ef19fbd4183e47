"""A dataset that exists only as nnU-Net's fingerprint, for asking what a planner would choose.

nnU-Net's planners read nothing but ``dataset.json`` and ``dataset_fingerprint.json``. Writing
those two for a given spacing and image size shows what nnU-Net (or the SCD planner) plans for
such a dataset without its images: the thick-slice and BTCV-like rows of docs/planning.md, and the planner
tests. ``dataset.json`` lists its cases explicitly and names its reader, so no image is opened;
preprocessing such a dataset fails, because there are no images.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from nnunet_scd.atomic import write_text_atomic

__all__ = ["write_fingerprint_dataset"]


def write_fingerprint_dataset(
    raw_root: str | Path,
    preprocessed_root: str | Path,
    dataset_id: int,
    name: str,
    spacing_zyx: Sequence[float],
    shape_zyx: Sequence[int],
    num_cases: int = 20,
    num_classes: int = 2,
    channel: str = "CT",
) -> str:
    """Write ``dataset.json`` and ``dataset_fingerprint.json`` for ``num_cases`` identical cases; returns the name.

    Spacing and shape are in nnU-Net's array order (z, y, x); a 2D dataset has shape (1, y, x).
    """
    if len(spacing_zyx) != 3 or len(shape_zyx) != 3:
        raise ValueError(f"spacing and shape need 3 values (z, y, x), got {list(spacing_zyx)} and {list(shape_zyx)}")
    dataset_name = f"Dataset{dataset_id:03d}_{name}"
    cases = {
        f"case_{i:03d}": {"images": [f"imagesTr/case_{i:03d}_0000.nii.gz"], "label": f"labelsTr/case_{i:03d}.nii.gz"}
        for i in range(num_cases)
    }
    dataset_json = {
        "channel_names": {"0": channel},
        "labels": {"background": 0, **{f"class_{c}": c for c in range(1, num_classes)}},
        "numTraining": num_cases,
        "file_ending": ".nii.gz",
        "overwrite_image_reader_writer": "SimpleITKIO",
        "dataset": cases,
    }
    # Intensities only feed the normalisation scheme, which planning copies without using.
    intensities = {"max": 1000.0, "mean": 50.0, "median": 50.0, "min": -1000.0, "percentile_00_5": -900.0,
                   "percentile_99_5": 900.0, "std": 100.0}
    fingerprint = {
        "spacings": [[float(s) for s in spacing_zyx]] * num_cases,
        "shapes_after_crop": [[int(s) for s in shape_zyx]] * num_cases,
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {"0": intensities},
    }
    write_text_atomic(json.dumps(dataset_json, indent=2), Path(raw_root) / dataset_name / "dataset.json")
    write_text_atomic(json.dumps(fingerprint, indent=2),
                      Path(preprocessed_root) / dataset_name / "dataset_fingerprint.json")
    return dataset_name
