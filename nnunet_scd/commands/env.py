"""``nnunet-scd env``: print the environment variables nnU-Net needs to find our trainers."""

from __future__ import annotations

import argparse
import shlex

from nnunet_scd.trainers.ext_trainer import trainer_shim_dir


def run(args: argparse.Namespace) -> int:
    # Quoted, so that `eval "$(nnunet-scd env)"` keeps a path with spaces or shell characters whole.
    print(f"export nnUNet_extTrainer={shlex.quote(str(trainer_shim_dir()))}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "env",
        help="print the export line that lets nnU-Net find the nnunet-scd trainers",
        description="Print `export nnUNet_extTrainer=...` for this installation. Use: eval \"$(nnunet-scd env)\"",
    )
    parser.set_defaults(run=run)
