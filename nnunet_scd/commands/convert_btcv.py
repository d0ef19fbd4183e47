"""``nnunet-scd convert-btcv``: turn the BTCV RawData folder into nnU-Net v2's Dataset017."""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs, not at the top: `nnunet-scd --help` must not load torch or nnU-Net.
    from nnunet_scd.datasets.btcv import convert_btcv
    from nnunet_scd.datasets.raw import raw_root_from_env

    raw_root = raw_root_from_env(args.out)
    try:
        folder = convert_btcv(args.raw_dir, raw_root, progress=True, force=args.force)
    except (ValueError, OSError) as error:  # a bad source folder or file (BTCVFolderError, UnreadableImageError); I/O
        print(f"nnunet-scd convert-btcv: {error}", file=sys.stderr)
        return 2
    print(f"Wrote {folder}")
    print("Next: nnUNetv2_plan_and_preprocess -d 17 --verify_dataset_integrity")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert-btcv",
        help="convert the BTCV abdomen RawData folder into Dataset017_AbdominalOrganSegmentation",
        description=(
            "Convert BTCV (Multi-Atlas Labeling Beyond the Cranial Vault, abdomen; RawData.zip from Synapse "
            "syn3193805) into nnU-Net v2's Dataset017_AbdominalOrganSegmentation with its 13 organ labels. "
            "Reads RAW_DIR/Training/img/img00XX.nii.gz and RAW_DIR/Training/label/label00XX.nii.gz, and "
            "RAW_DIR/Testing/img/img00XX.nii.gz into imagesTs when present. Every source file is read "
            "completely and each label is checked against its image geometry before anything is written. "
            "Converted cases are skipped on a rerun unless their source files changed (size or modification "
            "time), so a re-downloaded file is converted again; cases deleted from RAW_DIR are removed, so a rerun "
            "gives what a fresh run gives. A Dataset017 folder convert-btcv did not make is refused unless --force."
        ),
    )
    parser.add_argument("raw_dir", metavar="RAW_DIR", help="the unzipped BTCV RawData folder (or its parent)")
    parser.add_argument("-o", "--out", default=None,
                        help="nnU-Net raw folder to write into (default: $nnUNet_raw)")
    parser.add_argument("--force", action="store_true",
                        help="take over a Dataset017 folder that convert-btcv did not make: its cases are replaced by "
                             "the BTCV cases (default: refuse it)")
    parser.set_defaults(run=run)
