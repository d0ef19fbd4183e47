"""``nnunet-scd study``: the convergence study, arms that differ only in token selection, through nnU-Net.

Trains each (arm, seed) with the stock ``nnUNetv2_train`` on the same phantoms, fold and seeds; each
run ends with nnU-Net's own sliding-window validation of the fold's held-out cases and its evaluator.
Every finished run is recorded in the results file (one JSON line each, meant to be committed), and
the table and figure are rebuilt from that file alone, so a study can be finished over several
sittings and machines: a rerun skips what the file holds. Arms: dense, guided, unguided, random,
oracle (keep 0.25); guided@0.1, random@0.1, oracle@0.1; nnU-Net (stock, the dense arm's CPU time);
the scorer designs evenly, boundary, context, topk and quota at keep 0.25 and 0.1; the joint search
of the dense UNETR (search-channels, search-position, search-rank: search, `nnunet-scd slim` at
budget 0.7 into plans of each seed, fine-tune), compared with the dense arm.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnunet_scd.commands.arguments import UniqueValues, int_at_least, writable_file

RESULTS_FOLDER = Path("docs/studies")


def run(args: argparse.Namespace) -> int:
    from nnunet_scd.demo.steps import DemoError
    from nnunet_scd.studies.convergence import SETTINGS
    from nnunet_scd.studies.report import build_report, plot_curves, report_markdown
    from nnunet_scd.studies.results import ResultsFileError, load_records
    from nnunet_scd.studies.runner import run_study, setting_id

    setting = SETTINGS[args.setting]
    if args.results is None:
        args.results = RESULTS_FOLDER / f"{setting.name}_results.jsonl"
    try:
        arms = [setting.arm(name) for name in args.arms] if args.arms else list(setting.arms)
        seeds = sorted(args.seeds) if args.seeds else list(setting.seeds)
        if not args.report_only:
            run_study(Path(args.work_dir), setting, arms, seeds, args.results, device=args.device, jobs=args.jobs)
        records = [r for r in load_records(args.results) if r["setting"] == setting_id(setting)]
    except (KeyError, DemoError, ResultsFileError) as error:
        print(f"nnunet-scd study: {error.args[0] if isinstance(error, KeyError) else error}", file=sys.stderr)
        return 1
    if not records:
        print(f"nnunet-scd study: {args.results} holds no run of '{setting_id(setting)}' yet; run the study first.",
              file=sys.stderr)
        return 1
    out = args.results.parent
    report = build_report(records, setting.arms)
    walls = {}
    for record in records:
        walls[record.get("device", "?")] = walls.get(record.get("device", "?"), 0.0) + (record.get("wall_seconds") or 0)
    notes = [f"setting: {setting_id(setting)}; {len(records)} runs in {args.results}",
             "time: " + "; ".join(f"{s / 3600:.2f} h of training on {d}" for d, s in walls.items()),
             f"command: nnunet-scd study --setting {setting.name} (see docs/studies/convergence.md)"]
    table = report_markdown(report, notes)
    (out / f"{setting.name}_table.md").write_text(table)
    figure = plot_curves(records, setting.arms, out / f"{setting.name}_curves.png",
                         f"{setting_id(setting)}: validation pseudo Dice during training")
    print("\n" + table)
    print(f"Table: {out / f'{setting.name}_table.md'}; figure: {figure}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "study",
        help="the convergence study: dense, guided, unguided, random and oracle token selection, the scorer "
             "designs and the joint search, through nnUNetv2_train, recorded run by run (hours on CPU)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from nnunet_scd.studies.convergence import ARMS, SETTINGS  # tables of names, no torch

    parser.add_argument("--setting", choices=tuple(SETTINGS), default="convergence",
                        help="the phantoms: 'convergence' (standard intensities, the default) or 'low-contrast' "
                             "(organs that look alike, so their class must come from context)")
    parser.add_argument("--arms", nargs="+", action=UniqueValues, metavar="ARM",
                        help=f"arms to run (default: all): {' '.join(a.name for a in ARMS)}")
    parser.add_argument("--seeds", nargs="+", type=int_at_least(0), action=UniqueValues, metavar="SEED",
                        help="training seeds (default: 0 1 2)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="nnUNetv2_train's -device (default: cpu); the record says which device ran")
    parser.add_argument("--jobs", type=int_at_least(1), default=1, metavar="N",
                        help="trainings at once (default 1; on 2 CPU cores more only slows each run)")
    parser.add_argument("--work-dir", default="nnunet_scd_work/study", metavar="DIR",
                        help="phantoms, nnU-Net folders and logs (default: ./nnunet_scd_work/study)")
    parser.add_argument("--results", type=writable_file, default=None, metavar="FILE",
                        help=f"the results file, one JSON line per run; the table and figure are written beside it "
                             f"(default: {RESULTS_FOLDER}/<setting>_results.jsonl)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: rebuild the table and figure from the results file")
    parser.set_defaults(run=run)
