"""``nnunet-scd slim``: derive and physically slice the subnet of a joint-search run, write slim plans."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from nnunet_scd.atomic import write_text_atomic
from nnunet_scd.commands.arguments import int_at_least, plans_identifier, writable_file

if TYPE_CHECKING:  # `nnunet-scd --help` must not load torch
    from nnunet_scd.search.measure import Cost


def _budget(text: str) -> float:
    from nnunet_scd.search.derive import check_budget  # lazy: torch loads only when the command runs

    try:
        return check_budget(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _ratio(before: float, after: float) -> str:
    return f"{after / before:.3f}" if before else "n/a"


def _print_blocks(widths: list[dict], dense: Cost, slim: Cost) -> None:
    """Per block: the kept widths, then tokens, parameters, FLOPs and fastest latency, unsliced -> slim."""
    print(f"{'block':<7}{'head widths | MLP':<26}{'tokens':>14}{'params':>22}{'MFLOPs':>20}{'ms':>16}")
    for i, width in enumerate(widths):
        kept = f"{width['head_dims']} | {width['mlp_hidden']}"
        tokens = f"{dense.block_tokens[i]} -> {slim.block_tokens[i]}"
        params = f"{dense.block_params[i]:,} -> {slim.block_params[i]:,}"
        flops = f"{dense.block_flops[i] / 1e6:.1f} -> {slim.block_flops[i] / 1e6:.1f}"
        latency = f"{dense.block_latency_ms[i]:.2f} -> {slim.block_latency_ms[i]:.2f}"
        print(f"{i:<7}{kept:<26}{tokens:>14}{params:>22}{flops:>20}{latency:>16}")


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs, not at the top: `nnunet-scd --help` must not load torch or nnU-Net.
    from nnunet_scd.trainers.derive_slim import derive_slim_plans

    try:
        result = derive_slim_plans(
            args.dataset, args.configuration, args.fold, args.budget, trainer_name=args.trainer, plans=args.plans,
            checkpoint=args.checkpoint, repeats=args.repeats, rederive=args.rederive,
            plans_name=args.plans_name, equal_heads=not args.uneven_heads, overwrite=args.overwrite,
        )
    except (ValueError, OSError) as error:  # OSError: a results or preprocessed file that cannot be read or written
        print(f"nnunet-scd slim: {error}", file=sys.stderr)
        return 2
    how = "reused from the existing plans (same architecture for every fold)" if result.reused_widths else "derived"
    dense, slim = result.costs["dense"], result.costs["slim"]
    token_kind = f", {result.tokens['kind']} token masks" if result.tokens else ""
    print(f"Widths {how}{token_kind}. Latency: fastest (median) of interleaved batch-1 passes over one patch, in ms.")
    _print_blocks(result.widths, dense, slim)
    change = "pruned masks not exactly zero" + ("; dropped tokens no longer in attention" if result.tokens else "")
    print(f"Largest output change from slicing ({change}): {result.max_output_change:.3g}")
    print(f"{'network':<26}{'params':>12}{'enc params':>12}{'GFLOPs':>9}{'enc GFLOPs':>12}{'ms':>18}{'enc ms':>18}")
    for name, cost in result.costs.items():
        total = f"{cost.latency_ms:.1f} ({cost.latency_median_ms:.1f})"
        encoder = f"{cost.encoder_latency_ms:.1f} ({cost.encoder_latency_median_ms:.1f})"
        print(f"{name:<26}{cost.params:>12,}{cost.encoder_params:>12,}{cost.flops / 1e9:>9.2f}"
              f"{cost.encoder_flops / 1e9:>12.2f}{total:>18}{encoder:>18}")
    print(f"slim / dense: encoder params {_ratio(dense.encoder_params, slim.encoder_params)}, encoder FLOPs "
          f"{_ratio(dense.encoder_flops, slim.encoder_flops)}, encoder latency "
          f"{_ratio(dense.encoder_latency_ms, slim.encoder_latency_ms)}, total latency "
          f"{_ratio(dense.latency_ms, slim.latency_ms)}")
    if args.json:
        report = {
            "plans_identifier": result.plans_identifier, "widths": result.widths, "tokens": result.tokens,
            "budget": args.budget,
            "costs": {k: v.as_dict() for k, v in result.costs.items()},
        }
        write_text_atomic(json.dumps(report, indent=2), args.json)
    print(f"Wrote {result.plans_file} and {result.weights_file}.")
    slim_trainer = result.slim_trainer or "<the Slim trainer of the same network and length>"
    print(f"Next: nnUNetv2_train {args.dataset} {args.configuration} {args.fold} "
          f"-tr {slim_trainer} -p {result.plans_identifier}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "slim",
        help="derive, slice and save the subnet of a joint-search run as new nnU-Net plans",
        description=(
            "Load a search checkpoint from nnUNet_results and keep the attention channels and MLP neurons (and, if "
            "the search had token masks, the tokens) with the largest masks (one global threshold per type, so "
            "widths and token counts differ by block) such that the ViT encoder's "
            "parameters and forward FLOPs on one patch are each at most BUDGET x the unsliced encoder's. The cost "
            "model counts the tokens each block sees after token pruning, so cheap late-block channels count "
            "for little, and the unsliceable patch embedding, position table and norms. The kept heads of a "
            "block share one width (one attention call per block; --uneven-heads keeps the exact threshold "
            "instead). Then physically slice "
            "the Linear layers and write <plans>_slim<B> plans and the sliced weights into nnUNet_preprocessed. "
            "Reports, per block and in total, tokens, parameters, FLOPs and latency before and after. If the slim "
            "plans exist (another fold), their widths and token schedule are reused so every fold gets the same "
            "architecture."
        ),
    )
    parser.add_argument("-d", "--dataset", required=True, help="dataset name or id")
    parser.add_argument("-c", "--configuration", required=True, help="nnU-Net configuration, e.g. 3d_fullres")
    parser.add_argument("-f", "--fold", type=int_at_least(0), required=True, help="fold of the search run")
    parser.add_argument("--budget", type=_budget, required=True,
                        help="fraction of the encoder's params and FLOPs kept, in (0, 1], e.g. 0.7 (FLOPs alone when "
                             "the search had token masks: tokens cost no parameters)")
    parser.add_argument("-tr", "--trainer", default="nnUNetTrainerSCDSearch", help="search trainer of the run")
    parser.add_argument("-p", "--plans", type=plans_identifier, default="nnUNetPlans",
                        help="plans identifier of the search run")
    parser.add_argument("--plans-name", type=plans_identifier, default=None,
                        help="identifier of the slim plans to write (default <plans>_slim<budget>, e.g. 0.7 -> 0p7)")
    parser.add_argument("--checkpoint", default="checkpoint_final.pth", help="checkpoint file in the fold folder")
    parser.add_argument("--repeats", type=int_at_least(1), default=20,
                        help="timed forward passes per network (default 20)")
    parser.add_argument("--rederive", action="store_true",
                        help="derive new widths even if the slim plans exist (replaces them and this fold's weights)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace this fold's sliced weights if a rerun would write different ones (another "
                             "checkpoint or budget); an identical rerun never needs it")
    parser.add_argument("--uneven-heads", action="store_true",
                        help="keep exactly the channels above the global threshold, so heads of a block may differ in "
                             "width (default: each block's kept heads share one width, one attention call per block)")
    parser.add_argument("--json", type=writable_file, default=None, metavar="FILE",
                        help="also write the widths and costs as JSON")
    parser.set_defaults(run=run)
