"""Shim found by nnU-Net through nnUNet_extTrainer: it only imports the joint-search and slim trainers.

Keep the code in nnunet_scd.nnunet.search_trainers.
"""

from nnunet_scd.nnunet.search_trainers import (
    nnUNetTrainerSCDSearch,
    nnUNetTrainerSCDSearch_Tiny,
    nnUNetTrainerSCDSearch_Tiny_5epochs,
    nnUNetTrainerSCDSlim,
    nnUNetTrainerSCDSlim_NoPixelClassifier,
    nnUNetTrainerSCDSlim_NoPixelClassifier_Tiny,
    nnUNetTrainerSCDSlim_Tiny,
    nnUNetTrainerSCDSlim_Tiny_5epochs,
    nnUNetTrainerUNETRSearch,
    nnUNetTrainerUNETRSearch_Tiny,
    nnUNetTrainerUNETRSearch_Tiny_5epochs,
    nnUNetTrainerUNETRSlim,
    nnUNetTrainerUNETRSlim_NoPixelClassifier_Tiny,
    nnUNetTrainerUNETRSlim_Tiny,
    nnUNetTrainerUNETRSlim_Tiny_5epochs,
)

__all__ = [
    "nnUNetTrainerSCDSearch",
    "nnUNetTrainerSCDSearch_Tiny",
    "nnUNetTrainerSCDSearch_Tiny_5epochs",
    "nnUNetTrainerSCDSlim",
    "nnUNetTrainerSCDSlim_NoPixelClassifier",
    "nnUNetTrainerSCDSlim_NoPixelClassifier_Tiny",
    "nnUNetTrainerSCDSlim_Tiny",
    "nnUNetTrainerSCDSlim_Tiny_5epochs",
    "nnUNetTrainerUNETRSearch",
    "nnUNetTrainerUNETRSearch_Tiny",
    "nnUNetTrainerUNETRSearch_Tiny_5epochs",
    "nnUNetTrainerUNETRSlim",
    "nnUNetTrainerUNETRSlim_NoPixelClassifier_Tiny",
    "nnUNetTrainerUNETRSlim_Tiny",
    "nnUNetTrainerUNETRSlim_Tiny_5epochs",
]
