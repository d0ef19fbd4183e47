"""Shim found by nnU-Net through nnUNet_extTrainer: it only imports the demo's trainer variants.

Keep the code in nnunet_scd.demo.trainers.
"""

from nnunet_scd.demo.trainers import (
    nnUNetTrainer_demo,
    nnUNetTrainer_demoQuick,
    nnUNetTrainerSCD_Tiny_demo,
    nnUNetTrainerSCD_Tiny_demoQuick,
    nnUNetTrainerUNETR_Tiny_demo,
    nnUNetTrainerUNETR_Tiny_demoQuick,
)

__all__ = [
    "nnUNetTrainer_demo",
    "nnUNetTrainer_demoQuick",
    "nnUNetTrainerSCD_Tiny_demo",
    "nnUNetTrainerSCD_Tiny_demoQuick",
    "nnUNetTrainerUNETR_Tiny_demo",
    "nnUNetTrainerUNETR_Tiny_demoQuick",
]
