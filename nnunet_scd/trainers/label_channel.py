"""The ground-truth foreground as an extra input channel, for the oracle token selection.

The oracle (``SCDNet(token_selection="oracle")``) ranks tokens by the foreground they hold, so it must
see the label wherever nnU-Net runs the network on labelled data: the training and validation batches
(built from nnU-Net's augmented target) and the end-of-training sliding-window validation (built from
the preprocessed case, so the predictor tiles and pads image and label together; padding is background).
"""

from __future__ import annotations

import numpy as np
import torch
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunet_scd.nnunet.label_masks import foreground_masks

__all__ = ["dataset_with_label_channel", "with_label_channel"]


def with_label_channel(batch: dict, label_manager: LabelManager) -> dict:
    """nnU-Net's batch with the target's foreground (any class, ignore label excluded) appended to ``data``."""
    foreground, _ = foreground_masks(batch["target"], label_manager)
    data = batch["data"]
    return {**batch, "data": torch.cat([data, foreground[:, None].to(data.dtype)], dim=1)}


def dataset_with_label_channel(dataset_class: type, label_manager: LabelManager) -> type:
    """A subclass of an nnU-Net dataset class whose ``load_case`` appends the case's foreground to the image."""
    ignore = label_manager.ignore_label

    class WithLabelChannel(dataset_class):
        def load_case(self, identifier: str):  # noqa: ANN202 - nnU-Net's (data, seg, seg_prev, properties)
            data, seg, seg_prev, properties = super().load_case(identifier)
            data, labels = np.asarray(data[:]), np.asarray(seg[:])[0]
            # Preprocessed segmentations mark voxels outside the nonzero mask with -1: background here.
            foreground = (labels > 0) if ignore is None else (labels > 0) & (labels != ignore)
            return np.concatenate([data, foreground[None].astype(data.dtype)]), seg, seg_prev, properties

    WithLabelChannel.__name__ = WithLabelChannel.__qualname__ = f"{dataset_class.__name__}WithLabelChannel"
    return WithLabelChannel
