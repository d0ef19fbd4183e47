"""nnU-Net's training target as voxel masks: foreground, annotated voxels and one mask per class or region.

The guidance of STP's scorers, the per-class quotas and the enrichment figures all read these, in training
(``trainers``) and in the held-out report behind ``nnunet-scd tokens`` (``token_selection``).
"""

from __future__ import annotations

import numpy as np
import torch
from nnunetv2.utilities.label_handling.label_handling import LabelManager

__all__ = ["class_masks", "class_names", "foreground_masks", "label_classes"]


def foreground_masks(target: torch.Tensor, label_manager: LabelManager) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Voxels of any foreground class and, with an ignore label, the annotated voxels: (B, *S) bool each.

    ``target`` is nnU-Net's training target (B, 1, *S) of labels, or (B, R, *S) of regions with
    the ignore mask as the last channel when the plans have both regions and an ignore label.
    """
    ignore = label_manager.ignore_label
    if label_manager.has_regions:
        if ignore is None:
            return target.bool().any(1), None
        valid = ~target[:, -1].bool()
        return target[:, :-1].bool().any(1) & valid, valid
    labels = target[:, 0]
    if ignore is None:
        return labels > 0, None
    valid = labels != ignore
    return (labels > 0) & valid, valid


def class_masks(target: torch.Tensor, label_manager: LabelManager) -> torch.Tensor:
    """Voxels of each foreground class (B, C, *S) bool, C = foreground labels or regions, in output-channel order.

    ``target`` as in ``foreground_masks``. Ignore-label voxels belong to no class.
    """
    if not label_manager.has_regions:
        return label_classes(target[:, 0], label_manager)
    regions = target[:, :len(label_manager.foreground_regions)].bool()
    return regions & ~target[:, -1:].bool() if label_manager.has_ignore_label else regions


def label_classes(labels: torch.Tensor, label_manager: LabelManager) -> torch.Tensor:
    """(B, *S) label map -> (B, C, *S) bool, one channel per foreground label, or per region where the plans have
    regions (a region holds several labels). Ignore-label voxels belong to no class."""
    classes = label_manager.foreground_regions if label_manager.has_regions else label_manager.foreground_labels
    return torch.stack([torch.isin(labels, torch.as_tensor(c, device=labels.device)) for c in classes], dim=1)


def class_names(label_manager: LabelManager) -> list[str]:
    """dataset.json's name of each class of ``class_masks``, in the same order."""
    classes = label_manager.foreground_regions if label_manager.has_regions else label_manager.foreground_labels

    def key(value) -> tuple[int, ...]:  # a label, or a region's labels, as dataset.json or the manager writes it
        return tuple(int(v) for v in np.ravel(value))

    by_value = {key(v): name for name, v in label_manager.label_dict.items() if name != "ignore"}
    return [by_value.get(key(c), str(c)) for c in classes]
