"""``nnunet-scd tokens``: foreground and per-class enrichment of the tokens trained SCD folds keep, with Dice, over
folds."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence

from nnunet_scd.atomic import write_text_atomic
from nnunet_scd.commands.arguments import UniqueValues, int_at_least, plans_identifier, writable_file


def _mean_sd(values: Sequence[float | None]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.3f} ± {sd:.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def _print_class_enrichment(trainer: str, rows: Sequence[dict]) -> None:
    """One line per class: its enrichment per stage, mean ± sd over the folds in ``rows``."""
    stages = len(rows[0]["class_enrichment"])
    width = max(len(c) for c in rows[0]["classes"]) + 2
    print(f"  {trainer}\n    {'class':<{width}}" + "".join(f"{f'stage {s + 1}':>18}" for s in range(stages)))
    for c, name in enumerate(rows[0]["classes"]):
        figures = [_mean_sd([r["class_enrichment"][s][c] for r in rows]) for s in range(stages)]
        print(f"    {name:<{width}}" + "".join(f"{f:>18}" for f in figures))


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs, not at the top: `nnunet-scd --help` must not load torch or nnU-Net.
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.file_path_utilities import get_output_folder
    from tqdm import tqdm

    from nnunet_scd.nnunet.token_selection import fold_token_selection

    try:
        dataset = maybe_convert_to_dataset_name(args.dataset)
    except RuntimeError as error:
        print(f"nnunet-scd tokens: {error}", file=sys.stderr)
        return 2
    report: dict[str, list[dict]] = {}
    print(f"{'trainer':<56}{'fold':>5}{'kept per stage':>20}{'fg tokens':>10}{'enrichment per stage':>26}"
          f"{'Dice':>8}")
    for trainer in args.trainers:
        folder = get_output_folder(dataset, trainer, args.plans, args.configuration)
        rows = report.setdefault(trainer, [])
        for fold in tqdm(args.folds, desc=trainer, leave=False, disable=not sys.stderr.isatty()):
            try:
                result = fold_token_selection(folder, fold, args.checkpoint, args.max_cases)
            except (FileNotFoundError, ValueError) as error:
                print(f"nnunet-scd tokens: {error}", file=sys.stderr)
                return 2
            rows.append(result.__dict__)
            dice = "n/a" if result.dice is None else f"{result.dice:.3f}"
            print(f"{trainer:<56}{fold:>5}{'/'.join(map(str, result.kept_per_stage)):>20}"
                  f"{result.foreground_share:>10.1%}{' '.join(f'{e:.2f}' for e in result.enrichment):>26}{dice:>8}")
    print("\nMean ± sd over folds (random pruning has enrichment 1; keeping only foreground tokens gives up to "
          "1 / fraction kept, and at most 1 / share of foreground tokens):")
    for trainer, rows in report.items():
        stages = len(rows[0]["enrichment"])
        per_stage = "; ".join(f"stage {s + 1} {_mean_sd([r['enrichment'][s] for r in rows])}" for s in range(stages))
        print(f"  {trainer}: enrichment {per_stage}; Dice {_mean_sd([r['dice'] for r in rows])} (n={len(rows)})")
    print("\nPer class, mean ± sd over folds: P(token holds the class | kept) / P(token holds the class); a small "
          "organ the scorer leaves out shows here, where the foreground figure averages it away:")
    for trainer, rows in report.items():
        _print_class_enrichment(trainer, rows)
    if args.json:
        write_text_atomic(json.dumps({"dataset": dataset, "configuration": args.configuration, "plans": args.plans,
                                      "trainers": report}, indent=2), args.json)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tokens",
        help="foreground and per-class enrichment of the tokens trained SCD folds keep on their validation cases, "
             "and Dice",
        description=(
            "For each trainer and fold in nnUNet_results, run the fold's checkpoint (nnU-Net's predictor, CPU, "
            "eval mode) over every sliding-window tile of the fold's validation cases as nnU-Net preprocessed "
            "them, and report per pruning stage the foreground enrichment of the kept tokens: P(token holds "
            "foreground | kept) / P(token holds foreground), pooled over tiles, and the same per class "
            "(label or region). Random pruning gives 1. The fold's mean foreground Dice comes from nnU-Net's "
            "validation/summary.json. Ends with mean ± sd over the folds given."
        ),
    )
    parser.add_argument("-d", "--dataset", required=True, help="dataset name or id")
    parser.add_argument("-c", "--configuration", default="3d_fullres", help="configuration (default 3d_fullres)")
    parser.add_argument("-tr", "--trainers", nargs="+", action=UniqueValues, required=True,
                        help="one or more SCD trainer class names")
    parser.add_argument("-f", "--folds", nargs="+", type=int_at_least(0), action=UniqueValues, default=[0],
                        help="folds, each once (default 0)")
    parser.add_argument("-p", "--plans", type=plans_identifier, default="nnUNetPlans",
                        help="plans identifier (default nnUNetPlans)")
    parser.add_argument("--checkpoint", default="checkpoint_final.pth", help="checkpoint file in the fold folder")
    parser.add_argument("--max-cases", type=int_at_least(1), default=None,
                        help="at most this many validation cases per fold (at least 1)")
    parser.add_argument("--json", type=writable_file, default=None, metavar="FILE",
                        help="also write every fold's figures as JSON")
    parser.set_defaults(run=run)
