"""The ``nnunet-scd`` command.

Every subcommand lives in its own module, which exposes ``add_parser(subparsers)``. The parser
setup of those modules imports nothing heavy, so ``--help`` stays fast; the work imports torch
and nnU-Net only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

# Order is the order shown by --help.
SUBCOMMAND_MODULES = (
    "nnunet_scd.commands.demo",
    "nnunet_scd.commands.study",
    "nnunet_scd.commands.synth",
    "nnunet_scd.commands.plan",
    "nnunet_scd.commands.convert_btcv",
    "nnunet_scd.commands.bench",
    "nnunet_scd.commands.slim",
    "nnunet_scd.commands.tokens",
    "nnunet_scd.commands.env",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-scd",
        description="Token-sparse transformers (SCD) and joint search compression for nnU-Net v2.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


# Warnings from dependencies that are known and harmless here; printed between progress lines they bury them.
# timm's hrnet module applies torch.jit.interface, which torch deprecates, when timm's model registry imports it.
_KNOWN_WARNINGS = ((FutureWarning, r"`torch\.jit\.interface` is deprecated"),)


def main(argv: Sequence[str] | None = None) -> int:
    # At the command level only: a library user of nnunet_scd keeps every warning.
    for category, message in _KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("\nInterrupted. Finished steps are kept; rerun the same command to continue.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
