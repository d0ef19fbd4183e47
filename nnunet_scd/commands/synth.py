"""``nnunet-scd synth``: write seeded synthetic abdominal-CT phantoms as an nnU-Net v2 raw dataset."""

from __future__ import annotations

import argparse
import sys
import time

from nnunet_scd.commands.arguments import float_at_least, int_at_least
from nnunet_scd.datasets.raw import MIN_TRAINING_CASES  # stdlib only, so --help stays fast


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs, not at the top: `nnunet-scd --help` must not load torch or nnU-Net.
    from nnunet_scd.datasets.phantom import summarize, write_phantom_dataset
    from nnunet_scd.datasets.raw import raw_root_from_env

    raw_root = raw_root_from_env(args.out)
    start = time.perf_counter()
    try:
        folder = write_phantom_dataset(
            raw_root, dataset_id=args.dataset_id, num_cases=args.num_cases, shape=tuple(args.shape),
            seed=args.seed, name=args.name, num_test_cases=args.test_cases, progress=True,
            organ_contrast=args.organ_contrast,
        )
    except (ValueError, OSError) as error:  # FileExistsError, a file where a folder should be, no permission
        print(f"nnunet-scd synth: {error}", file=sys.stderr)
        return 2
    stats = summarize(folder)
    print(
        f"{folder}: {stats['cases']} training cases (+{args.test_cases} in imagesTs) in "
        f"{time.perf_counter() - start:.1f} s; foreground fraction {stats['foreground_min']:.3f}-"
        f"{stats['foreground_max']:.3f} (mean {stats['foreground_mean']:.3f})"
    )
    print(f"Next: nnUNetv2_plan_and_preprocess -d {args.dataset_id} --verify_dataset_integrity -c 3d_fullres")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write seeded synthetic abdominal-CT phantoms as an nnU-Net raw dataset",
        description=(
            "Write synthetic abdominal-CT-like volumes (7 organ labels in BTCV order: spleen, kidneys, "
            "gallbladder, liver, stomach, aorta; anisotropic spacing about 0.8 x 0.8 x 2.5 mm) as "
            "<raw>/Dataset<id>_<name> in nnU-Net v2 format. The same seed gives identical data; complete "
            "cases are kept, so an interrupted run resumes. A second run into the same dataset waits for the "
            "first; a shape too large for the available memory is refused before anything is written."
        ),
    )
    parser.add_argument("-n", "--num-cases", default=12,
                        type=int_at_least(MIN_TRAINING_CASES, " (nnU-Net splits the training cases into 5 folds)"),
                        help=f"training cases, at least {MIN_TRAINING_CASES} for nnU-Net's 5 folds (default 12)")
    parser.add_argument("--test-cases", type=int_at_least(0), default=0,
                        help="extra cases in imagesTs/labelsTs (default 0)")
    parser.add_argument("--shape", type=int_at_least(1), nargs=3, default=(48, 96, 96), metavar=("Z", "Y", "X"),
                        help="nominal image size in voxels, z y x; cases vary around it (default 48 96 96)")
    parser.add_argument("-d", "--dataset-id", type=int_at_least(1, maximum=999), default=990,
                        help="nnU-Net dataset id, 1 to 999 (default 990)")
    parser.add_argument("--name", default="SCDPhantom", help="dataset name after the id (default SCDPhantom)")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="random seed, at least 0 (default 0)")
    parser.add_argument("--organ-contrast", type=float_at_least(0.0), default=1.0, metavar="C",
                        help="how far apart the organs' mean intensities lie, 0 to 1: 1 (default) the standard "
                             "HU values, lower pulls them together so organs must be told apart by context")
    parser.add_argument("-o", "--out", default=None,
                        help="nnU-Net raw folder to write into (default: $nnUNet_raw)")
    parser.set_defaults(run=run)
