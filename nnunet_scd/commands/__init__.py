"""Subcommands of ``nnunet-scd``; each module exposes ``add_parser(subparsers)``."""
