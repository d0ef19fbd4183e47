"""``nnunet-scd plan``: plan a dataset for token-sparse ViTs (nnUNetPlans_SCD) and print the next nnU-Net commands."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from nnunet_scd.commands.arguments import float_at_least, int_at_least, plans_identifier
from nnunet_scd.geometry import PRESETS
from nnunet_scd.nnunet.token_budget import SCD_PLANS

CONFIGURATIONS = ("2d", "3d_lowres", "3d_fullres")  # what nnU-Net plans; the cascade inherits 3d_fullres


def _fmt(values: object) -> str:
    return "x".join(str(round(v, 2) if isinstance(v, float) else v) for v in values)


def _print_plans(plans: dict) -> None:
    print(f"{'configuration':<15}{'spacing (mm)':>18}{'nnU-Net patch':>16}{'SCD patch':>16}{'token size':>12}"
          f"{'tokens':>8}{'batch':>7}")
    for name in CONFIGURATIONS:
        config = plans["configurations"].get(name)
        if config is None:
            continue
        record = config["scd_tokens"]
        tokens = math.prod(p // t for p, t in zip(config["patch_size"], record["token_size"]))
        print(f"{name:<15}{_fmt(config['spacing']):>18}{_fmt(record['planned_patch_size']):>16}"
              f"{_fmt(config['patch_size']):>16}{_fmt(record['token_size']):>12}{tokens:>8}{config['batch_size']:>7}")


def _compare(dataset_name: str, plans: dict, default_plans_name: str, trainer_name: str) -> None:
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw

    from nnunet_scd.trainers.plan_costs import plan_cost, trainer_class

    trainer = trainer_class(trainer_name)
    default_file = Path(nnUNet_preprocessed) / dataset_name / f"{default_plans_name}.json"
    if not default_file.is_file():
        raise ValueError(f"no default plans to compare with: {default_file} does not exist; write them with "
                         f"`nnUNetv2_plan_experiment -d {dataset_name}` or drop --compare")
    default = json.loads(default_file.read_text())
    dataset_json = json.loads((Path(nnUNet_raw) / dataset_name / "dataset.json").read_text())
    print(f"\nWhat {trainer_name} builds (forward pass of one patch, eval mode, GFLOPs counted on the meta device):")
    print(f"{'configuration':<15}{'plans':<22}{'patch':>16}{'token size':>12}{'tokens':>8}{'GFLOPs':>9}")
    for name in CONFIGURATIONS:
        for source in (default, plans):
            if name not in source["configurations"]:
                continue
            cost = plan_cost(source, dataset_json, name, trainer)
            print(f"{name:<15}{cost.plans_name:<22}{_fmt(cost.patch_size):>16}{_fmt(cost.token_size):>12}"
                  f"{cost.num_tokens:>8}{cost.gflops:>9.1f}")


def run(args: argparse.Namespace) -> int:
    from nnunet_scd.nnunet.planner import plan_dataset
    from nnunet_scd.trainers.ext_trainer import ext_trainer_status

    try:
        result = plan_dataset(args.dataset, preset=args.preset, vit_size=args.vit_size, gpu_memory_gb=args.gpu_memory,
                              plans_name=args.plans_name, token_base=args.token_base,
                              num_processes=args.num_processes, verbose=args.verbose)
    except (ValueError, OSError) as error:
        print(f"nnunet-scd plan: {error}", file=sys.stderr)
        return 2
    plans = result.plans
    if result.extracted_fingerprint:
        print(f"Extracted the dataset fingerprint of {result.dataset_name} (as nnUNetv2_extract_fingerprint does).")
    record = next(c["scd_tokens"] for c in plans["configurations"].values() if "scd_tokens" in c)
    preset = f"; preset {args.preset} ({PRESETS[args.preset].description})" if args.preset else ""
    print(f"Planned {result.dataset_name} for ViT-{args.vit_size}: at most {record['token_budget']} tokens per patch "
          f"(set by {record['budget_bound']}; {args.gpu_memory:g} GiB){preset}.")
    _print_plans(plans)
    for warning in result.warnings:
        print(f"Warning: {warning}", file=sys.stderr)
    print(f"Wrote {result.plans_file}")
    if args.compare:
        try:
            _compare(result.dataset_name, plans, args.compare_with, args.trainer)
        except (ValueError, OSError) as error:
            print(f"nnunet-scd plan: {error}", file=sys.stderr)
            return 2

    dataset_id = int(result.dataset_name[7:10])
    configuration = "3d_fullres" if "3d_fullres" in plans["configurations"] else "2d"
    print("\nNext:")
    print(f"  nnUNetv2_preprocess -d {dataset_id} -plans_name {args.plans_name}")
    print(f"  nnUNetv2_train {dataset_id:03d} {configuration} 0 -tr {args.trainer} -p {args.plans_name}")
    print(f"  nnUNetv2_predict -i INPUT -o OUTPUT -d {dataset_id:03d} -c {configuration} -tr {args.trainer} "
          f"-p {args.plans_name}")
    status = ext_trainer_status()
    if status is not None:
        print(f"\nNote: {status}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="plan a dataset for token-sparse ViTs: write nnUNetPlans_SCD and print the next nnU-Net commands",
        description=(
            "Run nnU-Net's experiment planner with the SCD changes (nnUNetPlannerSCD): per configuration a token "
            "size from the spacing (finer along thick slices), a patch that is a multiple of it and holds at most "
            "the ViT's token budget, and a batch size whose encoder activations fit the memory target. The budget "
            "is the smaller of (2 + mlp_ratio) x embed_dim tokens (beyond it attention costs more than the linear "
            "layers) and what the memory target holds at batch size 2. Writes the plans identifier "
            f"{SCD_PLANS} beside nnU-Net's plans, extracting the dataset fingerprint first if it is missing. "
            "Then preprocess and train with the stock commands it prints (-plans_name / -p)."
        ),
    )
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name, e.g. 17 or Dataset017_BTCV")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="pin the 3d_fullres geometry to a paper's: " + "; ".join(
                            f"{name}: {preset.description}" for name, preset in sorted(PRESETS.items())))
    parser.add_argument("--vit-size", default="B",
                        help="ViT whose size sets the token budget: B (default; nnUNetTrainerSCD) or Tiny")
    parser.add_argument("--gpu-memory", type=float_at_least(0.5), default=8.0, metavar="GIB",
                        help="GPU memory to plan for, in GiB (default 8, as nnU-Net's planner)")
    parser.add_argument("--token-base", type=int_at_least(1), default=8,
                        help="token size along the finest axis, a power of two (default 8)")
    parser.add_argument("--plans-name", type=plans_identifier, default=SCD_PLANS,
                        help=f"plans identifier to write, a plain name (default {SCD_PLANS})")
    parser.add_argument("-np", "--num-processes", type=int_at_least(1), default=4,
                        help="processes for the fingerprint extraction, if it is needed (default 4)")
    parser.add_argument("-tr", "--trainer", default="nnUNetTrainerSCD",
                        help="trainer shown in the next commands and costed by --compare (default nnUNetTrainerSCD)")
    parser.add_argument("--compare", action="store_true",
                        help="also show patch, tokens and forward GFLOPs of the trainer's network on the default "
                             "plans and on the new plans")
    parser.add_argument("--compare-with", type=plans_identifier, default="nnUNetPlans", metavar="PLANS",
                        help="plans identifier --compare reads as the default (default nnUNetPlans)")
    parser.add_argument("--verbose", action="store_true", help="show nnU-Net's own planning printout")
    parser.set_defaults(run=run)
