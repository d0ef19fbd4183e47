"""nnU-Net's predictor for one trained fold on the CPU, as the demo and the token-selection report use it."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

__all__ = ["load_predictor"]


def load_predictor(model_folder: Path, fold: int, checkpoint: str = "checkpoint_final.pth"):
    """``nnUNetPredictor`` for ``model_folder``/fold_``fold`` on the CPU, without mirroring (as the demo predicts)."""
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"),
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net narrates its trainer-class search
        predictor.initialize_from_trained_model_folder(str(model_folder), use_folds=(fold,),
                                                       checkpoint_name=checkpoint)
    predictor.network.eval()
    return predictor
