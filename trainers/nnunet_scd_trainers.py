"""Shim found by nnU-Net through nnUNet_extTrainer: it only imports the installed trainers.

nnU-Net imports every module in this folder as a top-level module and looks the trainer up by
class name; keep the code in nnunet_scd.nnunet.trainers.
"""

from nnunet_scd.nnunet.trainers import (
    nnUNetTrainerSCD,
    nnUNetTrainerSCD_keep0p1,
    nnUNetTrainerSCD_keep0p5,
    nnUNetTrainerSCD_MIM,
    nnUNetTrainerSCD_MIM_Tiny,
    nnUNetTrainerSCD_NoGuidance,
    nnUNetTrainerSCD_NoGuidance_Tiny,
    nnUNetTrainerSCD_RandomPruning,
    nnUNetTrainerSCD_RandomPruning_Tiny,
    nnUNetTrainerSCD_RandomPruning_Tiny_360iters,
    nnUNetTrainerSCD_RandomPruning_Tiny_keep0p1_360iters,
    nnUNetTrainerSCD_Tiny,
    nnUNetTrainerSCD_Tiny_5epochs,
    nnUNetTrainerSCD_Tiny_10epochs_40iters_lr1e3_NoMirroring,
    nnUNetTrainerSCD_Tiny_360iters,
    nnUNetTrainerSCD_Tiny_keep0p1_360iters,
    nnUNetTrainerSCD_Tiny_keep0p5,
    nnUNetTrainerUNETR,
    nnUNetTrainerUNETR_Tiny,
    nnUNetTrainerUNETR_Tiny_5epochs,
    nnUNetTrainerUNETR_Tiny_10epochs_40iters_lr1e3_NoMirroring,
)

__all__ = [
    "nnUNetTrainerSCD",
    "nnUNetTrainerSCD_MIM",
    "nnUNetTrainerSCD_MIM_Tiny",
    "nnUNetTrainerSCD_NoGuidance",
    "nnUNetTrainerSCD_NoGuidance_Tiny",
    "nnUNetTrainerSCD_RandomPruning",
    "nnUNetTrainerSCD_RandomPruning_Tiny",
    "nnUNetTrainerSCD_RandomPruning_Tiny_360iters",
    "nnUNetTrainerSCD_RandomPruning_Tiny_keep0p1_360iters",
    "nnUNetTrainerSCD_Tiny",
    "nnUNetTrainerSCD_Tiny_10epochs_40iters_lr1e3_NoMirroring",
    "nnUNetTrainerSCD_Tiny_360iters",
    "nnUNetTrainerSCD_Tiny_5epochs",
    "nnUNetTrainerSCD_Tiny_keep0p1_360iters",
    "nnUNetTrainerSCD_Tiny_keep0p5",
    "nnUNetTrainerSCD_keep0p1",
    "nnUNetTrainerSCD_keep0p5",
    "nnUNetTrainerUNETR",
    "nnUNetTrainerUNETR_Tiny",
    "nnUNetTrainerUNETR_Tiny_10epochs_40iters_lr1e3_NoMirroring",
    "nnUNetTrainerUNETR_Tiny_5epochs",
]
