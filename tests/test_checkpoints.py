"""Our checkpoint loaders read nnU-Net's checkpoints with weights_only=True, and refuse one that names code."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from nnunetv2.training.logging.nnunet_logger import MetaLogger

from nnunet_scd.nnunet.checkpoints import (
    CorruptCheckpointError,
    UnsafeCheckpointError,
    check_checkpoint_readable,
    read_checkpoint,
)


def _nnunet_checkpoint() -> dict:
    """What nnUNetTrainer.save_checkpoint stores, with NumPy scalars in the log as a real training leaves."""
    logger = MetaLogger(tempfile.mkdtemp(), False)
    for epoch in range(2):
        logger.log("mean_fg_dice", np.nanmean([np.float64(0.5), np.float64(0.7)]), epoch)
        logger.log("dice_per_class_or_region", [np.float64(0.5), np.float64(0.7)], epoch)
        logger.log("train_losses", np.mean(np.array([0.5, 0.3], dtype=np.float32)), epoch)
        logger.log("val_losses", np.mean(np.array([0.5, 0.3], dtype=np.float32)), epoch)
        logger.log("lrs", 0.01, epoch)
        logger.log("epoch_start_timestamps", 1.0, epoch)
        logger.log("epoch_end_timestamps", 2.0, epoch)
    network = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    network(torch.randn(1, 2)).sum().backward()
    optimizer.step()
    return {
        "network_weights": network.state_dict(), "optimizer_state": optimizer.state_dict(),
        "grad_scaler_state": torch.amp.GradScaler("cpu").state_dict(), "logging": logger.get_checkpoint(),
        "_best_ema": logger.get_value("ema_fg_dice", step=-1), "current_epoch": 2,
        "init_args": {"plans": {"configurations": {}}, "configuration": "3d_fullres", "fold": 0,
                      "dataset_json": {"labels": {"background": 0}}, "device": torch.device("cpu")},
        "trainer_name": "nnUNetTrainerSCD", "inference_allowed_mirroring_axes": (0, 1, 2),
    }


def test_an_nnunet_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint_final.pth"
    saved = _nnunet_checkpoint()
    torch.save(saved, path)
    check_checkpoint_readable(path)
    loaded = read_checkpoint(path)
    assert loaded["_best_ema"] == saved["_best_ema"] and isinstance(loaded["_best_ema"], np.float64)
    assert loaded["logging"]["train_losses"] == saved["logging"]["train_losses"]
    assert torch.equal(loaded["network_weights"]["weight"], saved["network_weights"]["weight"])


def test_a_checkpoint_whose_pickle_would_run_code_is_refused_and_the_code_does_not_run(
    tmp_path: Path, code_running_checkpoint: Callable[[Path], Path]
) -> None:
    path = tmp_path / "checkpoint_final.pth"
    marker = code_running_checkpoint(path)
    for load in (read_checkpoint, check_checkpoint_readable):
        with pytest.raises(UnsafeCheckpointError, match=r"checkpoint_final\.pth holds pickled Python objects.*os"):
            load(path)
    assert not marker.exists()
    assert issubclass(UnsafeCheckpointError, CorruptCheckpointError)  # the trainer's --c fallback treats both alike
