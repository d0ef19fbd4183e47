"""``nnunet-scd env``: print the environment variables nnU-Net needs to find our trainers."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# The shim folder sits beside the package in a source checkout (README, "Layout").
TRAINER_SHIM_DIR = Path(__file__).resolve().parents[2] / "trainers"


def trainer_shim_dir() -> Path:
    if not (TRAINER_SHIM_DIR / "nnunet_scd_trainers.py").is_file():
        raise FileNotFoundError(
            f"The trainer shim folder {TRAINER_SHIM_DIR} is missing. nnunet-scd must be installed from a "
            "source checkout (`pip install -e .`) so that nnUNet_extTrainer can point at <repo>/trainers."
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


def run(args: argparse.Namespace) -> int:
    print(f"export nnUNet_extTrainer={trainer_shim_dir()}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "env",
        help="print the export line that lets nnU-Net find the nnunet-scd trainers",
        description="Print `export nnUNet_extTrainer=...` for this checkout. Use: eval \"$(nnunet-scd env)\"",
    )
    parser.set_defaults(run=run)
