"""``nnunet-scd demo``: SCD next to its dense UNETR twin and stock nnU-Net through the whole nnU-Net pipeline, on CPU.

Generates synthetic abdominal-CT phantoms, runs nnUNetv2_plan_and_preprocess, trains the SCD
trainer (a ViT-Ti encoder), its dense UNETR twin and stock nnU-Net (nnUNetTrainer) with the same
budget on fold 0 (nnUNetv2_train -device cpu), predicts the fold's validation cases
(nnUNetv2_predict), evaluates them with nnU-Net's evaluator and writes a report: a table (Dice per
organ and mean, training s/epoch and where an epoch goes, inference s/volume, parameters, FLOPs;
mean ± sd over training seeds), a Dice-vs-throughput plot, the tokens STP kept, and predicted vs
true segmentations.

Everything lives in the work folder, including nnU-Net's own nnUNet_raw, nnUNet_preprocessed and
nnUNet_results: the demo ignores those environment variables, so it never touches your real nnU-Net
folders. Interrupt at any time; rerunning the same command reuses every finished step (a training
continues from its last epoch with --c).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnunet_scd.commands.arguments import int_at_least


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs, not at the top: `nnunet-scd --help` must not load torch or nnU-Net.
    from nnunet_scd.demo.config import DEFAULT, QUICK
    from nnunet_scd.demo.pipeline import run_demo
    from nnunet_scd.demo.steps import DemoError

    try:
        run_demo(Path(args.work_dir), QUICK if args.quick else DEFAULT, seeds=args.seeds)
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
                        help="a very short training budget (a smoke test: under 3 minutes, Dice near chance); "
                             "the default budget takes under 15 minutes on 2 idle CPU cores and learns the organs")
    parser.add_argument("--seeds", type=int_at_least(1), default=1, metavar="N",
                        help="train every model with seeds 0..N-1 and report mean ± sd over seeds (default: 1; "
                             "each seed costs about as long as the one-seed demo, and finished seeds are reused)")
    parser.add_argument("--work-dir", default="nnunet_scd_work", metavar="DIR",
                        help="work folder for data, nnU-Net folders, logs and the report "
                             "(default: ./nnunet_scd_work; the report is in DIR/default/report or DIR/quick/report)")
    parser.set_defaults(run=run)
