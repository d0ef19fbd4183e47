"""Which tokens a trained SCD fold keeps on its held-out cases: foreground and per-class enrichment per stage,
and Dice.

The check runs nnU-Net's own pieces only: the fold's checkpoint through ``nnUNetPredictor``, the
fold's validation cases from ``splits_final.json`` as nnU-Net preprocessed them, and the predictor's
sliding-window tiles (padded as it pads). Every tile goes through the network in eval mode, and
``SCDNet.kept_indices`` is compared with the tokens that hold foreground in the reference.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

from nnunet_scd.model.guidance import class_presence, enrichment, enrichment_counts, token_foreground
from nnunet_scd.nnunet.checkpoints import check_checkpoint_readable
from nnunet_scd.nnunet.label_masks import class_names, label_classes
from nnunet_scd.nnunet.predictor import load_predictor
from nnunet_scd.unwrap import unwrap

__all__ = ["FoldTokenSelection", "fold_token_selection", "validation_dice"]


@dataclass(frozen=True)
class FoldTokenSelection:
    """One trained fold: per-stage enrichment on its validation cases, and nnU-Net's validation Dice.

    ``class_enrichment`` holds, per stage, one figure per class of ``classes`` (dataset.json's foreground
    labels, or its regions), nan for a class absent from every tile.
    """

    fold: int
    cases: int
    tiles: int
    kept_per_stage: tuple[int, ...]
    enrichment: tuple[float, ...]
    foreground_share: float  # of all tokens in the tiles
    dice: float | None  # mean foreground Dice of nnU-Net's final validation, if it ran
    classes: tuple[str, ...]
    class_enrichment: tuple[tuple[float, ...], ...]


def validation_dice(fold_dir: Path) -> float | None:
    """``foreground_mean`` Dice from nnU-Net's ``validation/summary.json``, or None before validation ran."""
    summary = Path(fold_dir) / "validation" / "summary.json"
    if not summary.is_file():
        return None
    return float(json.loads(summary.read_text())["foreground_mean"]["Dice"])


def fold_token_selection(model_folder: Path, fold: int, checkpoint: str = "checkpoint_final.pth",
                         max_cases: int | None = None) -> FoldTokenSelection:
    """Run the fold's SCD network over every sliding-window tile of the fold's validation cases."""
    fold_dir = Path(model_folder) / f"fold_{fold}"
    if not (fold_dir / checkpoint).is_file():
        raise FileNotFoundError(f"no {checkpoint} in {fold_dir}; train that fold first (nnUNetv2_train ... {fold}).")
    # Before nnU-Net's predictor unpickles it fully: a corrupt file is then named, and one naming code never runs.
    check_checkpoint_readable(fold_dir / checkpoint)
    predictor = load_predictor(Path(model_folder), fold, checkpoint)
    network = unwrap(predictor.network, core=True)
    if not getattr(network, "is_sparse", False):
        raise ValueError(f"{model_folder} holds a dense network: it keeps every token, so there is nothing to report.")
    preprocessed = Path(os.environ["nnUNet_preprocessed"]) / predictor.plans_manager.dataset_name
    splits = json.loads((preprocessed / "splits_final.json").read_text())
    cases = splits[fold]["val"][:max_cases]
    data_folder = preprocessed / predictor.configuration_manager.data_identifier
    dataset = infer_dataset_class(str(data_folder))(str(data_folder), cases)
    ignore = predictor.label_manager.ignore_label
    patch_size = predictor.configuration_manager.patch_size

    counts, class_counts, tiles = None, None, 0
    with torch.no_grad():
        for case in cases:
            # Zero-padded up to the patch, as nnUNetPredictor pads a small case.
            data, seg = (pad_nd_image(np.asarray(array), patch_size, "constant", {"constant_values": 0})
                         for array in dataset.load_case(case)[:2])
            for slicer in predictor._internal_get_sliding_window_slicers(data.shape[1:]):
                labels = torch.from_numpy(np.ascontiguousarray(seg[slicer]))
                foreground = (labels > 0) if ignore is None else (labels > 0) & (labels != ignore)
                network(torch.from_numpy(np.ascontiguousarray(data[slicer][None])).float())
                tile_counts = enrichment_counts(network.kept_indices, token_foreground(foreground, network.token_size))
                counts = tile_counts if counts is None else counts + tile_counts
                classes = class_presence(label_classes(labels, predictor.label_manager), network.token_size)
                tile_class_counts = enrichment_counts(network.kept_indices, classes)
                class_counts = tile_class_counts if class_counts is None else class_counts + tile_class_counts
                tiles += 1
    return FoldTokenSelection(
        fold=fold, cases=len(cases), tiles=tiles,
        kept_per_stage=tuple(int(k.shape[1]) for k in network.kept_indices),
        enrichment=tuple(enrichment(counts)),
        foreground_share=float(counts[0, 2] / counts[0, 3]) if counts is not None else math.nan,
        dice=validation_dice(fold_dir),
        classes=tuple(class_names(predictor.label_manager)),
        class_enrichment=tuple(map(tuple, enrichment(class_counts))) if class_counts is not None else (),
    )
