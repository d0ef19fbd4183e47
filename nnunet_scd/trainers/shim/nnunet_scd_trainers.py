"""The one module nnU-Net imports through nnUNet_extTrainer: every nnunet-scd trainer, by class name.

nnU-Net imports each module of the folders nnUNet_extTrainer lists as a top-level module and looks a
trainer up by class name, so this folder holds this module alone and it imports the trainers by their
absolute names (``nnunet_scd.trainers.catalog``); the code stays there.
"""

from nnunet_scd.trainers.catalog import *  # noqa: F403
