"""The one shim nnU-Net imports through nnUNet_extTrainer: every nnunet-scd trainer, by class name.

nnU-Net imports each module of the folders nnUNet_extTrainer lists and looks a trainer up by class
name. Each trainer module lists the trainers it defines in its ``__all__`` (computed, so a trainer is
written once, as its class); keep the code in those modules, not here.
"""

from nnunet_scd.demo.trainers import *  # noqa: F403
from nnunet_scd.nnunet.search_trainers import *  # noqa: F403
from nnunet_scd.nnunet.trainers import *  # noqa: F403
