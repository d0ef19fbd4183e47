"""``nnunet-scd bench``: SCD against the dense UNETR with the same ViT, timed interleaved in one process."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from nnunet_scd.atomic import write_text_atomic
from nnunet_scd.commands.arguments import check_writable, float_at_least, int_at_least, writable_file
from nnunet_scd.geometry import CONFIGS

DEFAULT_REPEATS = {"paper-btcv": 3, "paper-brats": 3, "quick": 5, "demo": 5, "tiny": 3}
PER_VOLUME_REPEATS = 3
MIRRORS = {"off": (False,), "on": (True,), "both": (False, True)}


def _keep_list(text: str) -> list[float]:
    try:
        keeps = [float(t) for t in text.split(",") if t.strip()]
    except ValueError as error:
        message = f"--sweep takes comma-separated keep ratios such as 1,0.5,0.25, got {text!r}"
        raise argparse.ArgumentTypeError(message) from error
    if any(not 0.0 < k <= 1.0 for k in keeps):
        raise argparse.ArgumentTypeError(f"keep ratios must be in (0, 1], got {text!r}")
    return keeps


def _device(name: str):
    # Imported when the command runs, not at the top: `nnunet-scd --help` must not load torch or nnU-Net.
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda was requested but torch sees no CUDA device; use --device cpu.")
    return torch.device(name)


def _check_network(config) -> None:  # (BenchConfig) -> None
    """Build the sparse network on the meta device: a keyword SCDNet refuses is a one-line error before any timing."""
    import torch

    from nnunet_scd import SCDNet

    try:
        with torch.device("meta"):
            SCDNet(**config.network_kwargs(config.keep_ratio))
    except ValueError as error:
        raise SystemExit(f"error: the {config.name} configuration with these options is not a valid SCDNet: {error}") \
            from None


def _run_per_volume(args: argparse.Namespace, config, device, progress, log) -> int:  # config: BenchConfig
    from nnunet_scd.bench.per_volume import time_per_volume
    from nnunet_scd.bench.report import per_volume_table
    from nnunet_scd.bench.scan import check_scan_fits

    try:
        check_scan_fits(config, args.volume_scale)
    except ValueError as error:
        raise SystemExit(f"error: --per-volume --volume-scale {args.volume_scale:g}: {error}") from None
    result = time_per_volume(config, device, args.volume_scale, MIRRORS[args.mirror or "off"],
                             args.repeats or PER_VOLUME_REPEATS, args.warmup, progress, log)
    print(per_volume_table(result))
    if args.json:
        write_text_atomic(json.dumps(result, indent=2, default=str) + "\n", args.json)
        log(f"wrote {args.json}")
    return 0


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs, not at the top: `nnunet-scd --help` must not load torch or nnU-Net.
    from tqdm import tqdm

    from nnunet_scd.bench.report import markdown_table, plot_sweep, table_from_json, write_json
    from nnunet_scd.bench.run import run_benchmark

    if args.from_json:
        try:
            print(table_from_json(args.from_json))
        except (ValueError, OSError) as error:
            raise SystemExit(f"error: --from-json: {error}") from None
        except (KeyError, TypeError) as error:  # the right keys at the top, but not a bench run's values below
            raise SystemExit(f"error: --from-json: {args.from_json} is not a complete nnunet-scd bench result "
                             f"({type(error).__name__}: {error}); give the --json file of a bench run") from None
        return 0
    if args.mirror is not None and not args.per_volume:
        raise SystemExit("error: --mirror applies to --per-volume only (the other modes predict without mirroring)")
    device = _device(args.device)
    config = CONFIGS[args.config]
    if args.keep is not None:
        if not 0.0 < args.keep <= 1.0:
            raise SystemExit(f"error: --keep must be in (0, 1], got {args.keep}.")
        config = replace(config, keep_ratio=args.keep)
    if args.repeats is not None and args.repeats < 1:
        raise SystemExit(f"error: --repeats must be at least 1, got {args.repeats}.")
    overrides = {k: v for k, v in (("feature_size", args.feature_size),) if v is not None}
    extra = {k: v for k, v in (("completion_dim", args.completion_dim), ("completion_depth", args.completion_depth))
             if v is not None}
    config = replace(config, **overrides).with_extra(**extra)
    _check_network(config)
    log = (lambda msg: print(msg, file=sys.stderr)) if not args.quiet else (lambda msg: None)
    progress = None if args.quiet else (lambda it, total: tqdm(it, total=total, desc="rounds", file=sys.stderr))

    if args.per_volume:
        return _run_per_volume(args, config, device, progress, log)

    if args.profile:
        from nnunet_scd.bench.profile import profile_training_step

        keep = None if args.profile == "dense" else config.keep_ratio
        parts = profile_training_step(config, device, keep, steps=args.repeats or 1)
        whole = parts.pop("whole step")
        print(f"| part of one {args.profile} training step ({config.name}) | seconds | share |\n|---|---|---|")
        for name, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
            print(f"| {name} | {seconds:.2f} | {seconds / whole:.0%} |")
        print(f"| whole step | {whole:.2f} | 100% |")
        return 0

    if args.whole_volume:
        from nnunet_scd.bench.sliding_window import time_sliding_window

        result = time_sliding_window(config, device, args.volume_scale, args.repeats or 1, log)
        print("| network | whole-volume seconds (median) | speed-up vs dense UNETR |\n|---|---|---|")
        for name, seconds in result["median_s"].items():
            print(f"| {name} | {seconds:.2f} | {result['speedup_vs_unetr'][name]:.2f}x |")
        if args.json:
            write_text_atomic(json.dumps({"config": config.as_dict(), **result}, indent=2, default=str) + "\n",
                              args.json)
        return 0

    if args.plot and args.sweep and (problem := check_writable(args.plot)):
        # Checked now, not after the minutes of timing whose plot it would lose.
        raise SystemExit(f"error: --plot: {problem}; choose another path")
    repeats = args.repeats or DEFAULT_REPEATS[args.config]
    results = run_benchmark(config, device, repeats, args.warmup, args.sweep, not args.no_memory, progress, log)
    print(markdown_table(results))
    if args.json:
        write_json(results, args.json)
        log(f"wrote {args.json}")
    if args.plot and results["sweep"]:
        plot_sweep(results, args.plot)
        log(f"wrote {args.plot}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time SCD against the dense UNETR (training step, inference, FLOPs, memory, keep-ratio sweep)",
        description=(
            "Times SCDNet and the dense UNETR with the same ViT in one process, runs interleaved (dense, sparse, "
            "dense, ...) after warm-up: a training step (forward, cross-entropy, backward, AdamW step) and "
            "inference (eval mode, inference_mode). Inputs and labels are random: step cost does not depend on "
            "image content. Reports median patches/s, speed-ups, FLOPs (torch.utils.flop_counter), peak training "
            "memory (fresh process per network) and a keep-ratio sweep; ratios are dense / sparse. "
            "--whole-volume and --per-volume time nnU-Net's prediction instead, with stock nnU-Net beside them "
            "(docs/benchmark.md)."
        ),
    )
    parser.add_argument("--config", choices=tuple(CONFIGS), default="paper-btcv",
                        help="paper-btcv: the authors' BTCV run, ViT-B, 96^3 crop, 1 channel, 8^3 tokens, keep 0.1 "
                             "after blocks 3/6/9, batch 2; paper-brats: their MSD BraTS run, 128^3, 4 channels, "
                             "keep 0.25 (both slow on CPU); quick: width 192, 64^3; demo: the network of "
                             "`nnunet-scd demo` (ViT-Ti, 28x56x56 patch, 2x8x8 tokens, keep 0.25, 8 classes); "
                             "tiny: for tests; default: paper-btcv")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=int_at_least(1), default=None,
                        help="timed rounds per run (default: paper 3, quick 5, demo 5, tiny 3; whole volume 1; "
                             "per volume 3)")
    parser.add_argument("--warmup", type=int_at_least(0), default=1, help="untimed rounds first (default: 1)")
    parser.add_argument("--keep", type=float, default=None, help="keep ratio per stage for the headline SCD run")
    parser.add_argument("--sweep", type=_keep_list, default=[1.0, 0.5, 0.25, 0.1],
                        help="keep ratios for the sweep, comma-separated; '' for none (default: 1,0.5,0.25,0.1)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--json", type=writable_file, default=None, metavar="FILE", help="write all results as JSON")
    parser.add_argument("--plot", type=Path, default=Path("bench_speedup.png"), metavar="FILE",
                        help="speed-up vs keep ratio plot (default: bench_speedup.png)")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--whole-volume", action="store_true",
                       help="time nnU-Net's sliding-window prediction of one synthetic volume for SCD, dense UNETR "
                            "and stock nnU-Net (PlainConvUNet); use with --config quick on CPU")
    modes.add_argument("--per-volume", action="store_true",
                       help="predict a synthetic CT phantom written as NIfTI through nnU-Net's own prediction steps "
                            "(as nnUNetv2_predict, one fold, one case at a time) with SCD, dense UNETR and stock "
                            "nnU-Net, interleaved by round, and break the seconds per volume down into read, "
                            "preprocess (nnU-Net's DefaultPreprocessor: crop, CT normalisation, resampling), network "
                            "(its forward calls), accumulation (the rest of the sliding window: weights loading, "
                            "tiling, mirroring flips, Gaussian weighting and adding), resample (logits back to the "
                            "file's grid, argmax) and write; peak memory: on CPU the peak RSS above the RSS at the "
                            "volume's start, on CUDA max_memory_allocated above the allocation at its start. The "
                            "file is at 0.8x0.8x2.5 mm and resampled as a BTCV scan to the paper's spacing; "
                            "medians over --repeats rounds (default 3)")
    parser.add_argument("--mirror", choices=tuple(MIRRORS), default=None,
                        help="--per-volume: test-time mirroring off, on (all axes: 8 forwards per tile, what "
                             "nnUNetv2_predict does unless --disable_tta) or both (default: off)")
    parser.add_argument("--volume-scale", type=float_at_least(1.0, " (a smaller volume is padded to one patch)"),
                        default=1.5, help="--whole-volume and --per-volume: size of the volume the network sees / "
                                          "patch size, per axis, at least 1 (default 1.5: 8 tiles; 2: 27; 2.5: 64)")
    parser.add_argument("--feature-size", type=int_at_least(1), default=None,
                        help="override the UNETR decoder feature size")
    parser.add_argument("--completion-dim", type=int_at_least(1), default=None,
                        help="override the completion width (default: SCDNet's, a quarter of the embed dim, at least "
                             "64; the embed dim is the authors' full-width block)")
    parser.add_argument("--completion-depth", type=int_at_least(0), default=None,
                        help="override the MTA depth; 0: assembly without a completion block (default: 1)")
    modes.add_argument("--profile", choices=("sparse", "dense"), default=None,
                       help="instead of the benchmark, break one training step down by part (hooks; --repeats steps)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or log lines; only the table")
    parser.add_argument("--from-json", type=Path, default=None, metavar="FILE",
                        help="print the table of an earlier run's --json file (a benchmark's or a --per-volume "
                             "run's) instead of running (how the tables in docs/benchmark.md are made)")
    parser.set_defaults(run=run)
