"""``nnunet-scd demo``: SCD next to its dense UNETR twin through the whole nnU-Net pipeline, on CPU.

Generates synthetic abdominal-CT phantoms, runs nnUNetv2_plan_and_preprocess, trains the Tiny SCD
trainer and the dense Tiny UNETR with the same budget on fold 0 (nnUNetv2_train -device cpu),
predicts the fold's validation cases (nnUNetv2_predict), evaluates them with nnU-Net's evaluator
and writes a report: a table (Dice per organ and mean, training s/epoch, inference s/volume,
parameters, FLOPs), a Dice-vs-throughput plot, the tokens STP kept, and predicted vs true
segmentations.

Everything lives in the work folder, including nnU-Net's own nnUNet_raw, nnUNet_preprocessed and
nnUNet_results: the demo ignores those environment variables, so it never touches your real nnU-Net
folders. Interrupt at any time; rerunning the same command reuses every finished step (a training
continues from its last epoch with --c).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs, not at the top: `nnunet-scd --help` must not load torch or nnU-Net.
    from nnunet_scd.demo.config import DEFAULT, QUICK
    from nnunet_scd.demo.pipeline import run_demo
    from nnunet_scd.demo.steps import DemoError

    try:
        run_demo(Path(args.work_dir), QUICK if args.quick else DEFAULT)
    except DemoError as error:
        print(f"\nnnunet-scd demo failed: {error}", file=sys.stderr)
        return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="SCD vs dense UNETR through nnU-Net's full pipeline on synthetic CT phantoms (CPU, minutes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="a very short training budget (a smoke test: about 5 minutes, Dice near chance); "
                             "the default budget takes about 20 minutes on 2 CPU cores and learns the organs")
    parser.add_argument("--work-dir", default="nnunet_scd_work", metavar="DIR",
                        help="work folder for data, nnU-Net folders, logs and the report "
                             "(default: ./nnunet_scd_work; the report is in DIR/default/report or DIR/quick/report)")
    parser.set_defaults(run=run)
