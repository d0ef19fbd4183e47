"""Where nnU-Net finds our trainers: the shim folder that ``nnUNet_extTrainer`` must list.

nnU-Net imports every module in the folders ``nnUNet_extTrainer`` lists and looks a trainer up by
class name. Ours is ``shim/`` inside this package, so an installed wheel exposes the trainers as a
source checkout does. The demo sets the variable for its subprocesses; ``nnunet-scd env`` prints it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SHIM_MODULE", "TRAINER_SHIM_DIR", "ext_trainer_status", "trainer_shim_dir"]

TRAINER_SHIM_DIR = Path(__file__).resolve().parent / "shim"
SHIM_MODULE = "nnunet_scd_trainers.py"


def trainer_shim_dir() -> Path:
    """The shim folder, or FileNotFoundError saying how to reinstall so that it exists."""
    if not (TRAINER_SHIM_DIR / SHIM_MODULE).is_file():
        raise FileNotFoundError(
            f"The trainer shim {TRAINER_SHIM_DIR / SHIM_MODULE} is missing from the installed nnunet-scd; "
            "reinstall it (`pip install --force-reinstall nnunet-scd`, or `pip install -e .` in a checkout)."
        )
    return TRAINER_SHIM_DIR


def ext_trainer_status() -> str | None:
    """Return None when ``nnUNet_extTrainer`` lists our shim folder, else a message saying how to fix it."""
    wanted = trainer_shim_dir()
    listed = [Path(p).resolve() for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if wanted in listed:
        return None
    return (
        "nnU-Net cannot find the nnunet-scd trainers: the environment variable nnUNet_extTrainer does not "
        f"list {wanted}.\nSet it with:\n    export nnUNet_extTrainer={wanted}\n"
        "(or run: eval \"$(nnunet-scd env)\"). It is needed for nnUNetv2_train and nnUNetv2_predict alike."
    )
