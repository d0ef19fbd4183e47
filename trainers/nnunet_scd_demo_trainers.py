"""Shim found by nnU-Net through nnUNet_extTrainer: it only imports the demo's trainer variants.

Keep the code in nnunet_scd.demo.trainers.
"""

from nnunet_scd.demo.trainers import (
    nnUNetTrainer_demo,
    nnUNetTrainer_demoQuick,
    nnUNetTrainerSCD_Ti_demo,
    nnUNetTrainerSCD_Ti_demoQuick,
    nnUNetTrainerUNETR_Ti_demo,
    nnUNetTrainerUNETR_Ti_demoQuick,
)

__all__ = [
    "nnUNetTrainer_demo",
    "nnUNetTrainer_demoQuick",
    "nnUNetTrainerSCD_Ti_demo",
    "nnUNetTrainerSCD_Ti_demoQuick",
    "nnUNetTrainerUNETR_Ti_demo",
    "nnUNetTrainerUNETR_Ti_demoQuick",
]
