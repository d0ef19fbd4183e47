"""Shim found by nnU-Net through nnUNet_extTrainer: it only imports the joint-search and slim trainers.

Keep the code in nnunet_scd.nnunet.search_trainers.
"""

from nnunet_scd.nnunet.search_trainers import (
    nnUNetTrainerSCD_Tiny_24epochs_25iters_lr1e3_NoMirroring,
    nnUNetTrainerSCDSearch,
    nnUNetTrainerSCDSearch_Tiny,
    nnUNetTrainerSCDSearch_Tiny_5epochs,
    nnUNetTrainerSCDSearch_Tiny_12epochs_25iters_lr1e3_maskLr1e2_NoMirroring,
    nnUNetTrainerSCDSlim,
    nnUNetTrainerSCDSlim_NoPixelClassifier,
    nnUNetTrainerSCDSlim_NoPixelClassifier_Tiny,
    nnUNetTrainerSCDSlim_Tiny,
    nnUNetTrainerSCDSlim_Tiny_5epochs,
    nnUNetTrainerSCDSlim_Tiny_12epochs_25iters_lr1e3_NoMirroring,
    nnUNetTrainerUNETR_Tiny_24epochs_25iters_lr1e3_NoMirroring,
    nnUNetTrainerUNETRSearch,
    nnUNetTrainerUNETRSearch_Tiny,
    nnUNetTrainerUNETRSearch_Tiny_5epochs,
    nnUNetTrainerUNETRSearch_Tiny_12epochs_25iters_lr1e3_maskLr1e2_NoMirroring,
    nnUNetTrainerUNETRSlim,
    nnUNetTrainerUNETRSlim_NoPixelClassifier_Tiny,
    nnUNetTrainerUNETRSlim_NoPixelClassifier_Tiny_12epochs_25iters_lr1e3_NoMirroring,
    nnUNetTrainerUNETRSlim_Tiny,
    nnUNetTrainerUNETRSlim_Tiny_5epochs,
    nnUNetTrainerUNETRSlim_Tiny_12epochs_25iters_lr1e3_NoMirroring,
)

__all__ = [
    "nnUNetTrainerSCDSearch",
    "nnUNetTrainerSCDSearch_Tiny",
    "nnUNetTrainerSCDSearch_Tiny_12epochs_25iters_lr1e3_maskLr1e2_NoMirroring",
    "nnUNetTrainerSCDSearch_Tiny_5epochs",
    "nnUNetTrainerSCDSlim",
    "nnUNetTrainerSCDSlim_NoPixelClassifier",
    "nnUNetTrainerSCDSlim_NoPixelClassifier_Tiny",
    "nnUNetTrainerSCDSlim_Tiny",
    "nnUNetTrainerSCDSlim_Tiny_12epochs_25iters_lr1e3_NoMirroring",
    "nnUNetTrainerSCDSlim_Tiny_5epochs",
    "nnUNetTrainerSCD_Tiny_24epochs_25iters_lr1e3_NoMirroring",
    "nnUNetTrainerUNETRSearch",
    "nnUNetTrainerUNETRSearch_Tiny",
    "nnUNetTrainerUNETRSearch_Tiny_12epochs_25iters_lr1e3_maskLr1e2_NoMirroring",
    "nnUNetTrainerUNETRSearch_Tiny_5epochs",
    "nnUNetTrainerUNETRSlim",
    "nnUNetTrainerUNETRSlim_NoPixelClassifier_Tiny",
    "nnUNetTrainerUNETRSlim_NoPixelClassifier_Tiny_12epochs_25iters_lr1e3_NoMirroring",
    "nnUNetTrainerUNETRSlim_Tiny",
    "nnUNetTrainerUNETRSlim_Tiny_12epochs_25iters_lr1e3_NoMirroring",
    "nnUNetTrainerUNETRSlim_Tiny_5epochs",
    "nnUNetTrainerUNETR_Tiny_24epochs_25iters_lr1e3_NoMirroring",
]
