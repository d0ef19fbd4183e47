"""Runs the demo end to end and writes the report folder.

Steps 1-5 (phantoms, plan/preprocess, train, predict, evaluate) are in ``steps``; this module adds
the measurements, the figures and the table. Training, prediction and evaluation run once per
training seed; the table gives mean ± sd over seeds. Every finished step is reused by a rerun (so
``--seeds 3`` after a one-seed run trains only seeds 1 and 2); the measurements and figures are
cheap and redone each time.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_scd.demo import steps
from nnunet_scd.demo.config import DemoConfig
from nnunet_scd.demo.steps import Workspace, log, progress, stage

__all__ = ["run_demo"]


def _read(path: Path) -> np.ndarray:
    import SimpleITK

    return SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(str(path)))


def _crop_around(array: np.ndarray, centre: np.ndarray, size: tuple[int, ...]) -> tuple[slice, ...]:
    """Slices of ``size`` inside ``array``'s trailing axes, centred on ``centre`` as far as the bounds allow."""
    shape = array.shape[-len(size):]
    starts = [int(np.clip(round(c - s / 2), 0, n - s)) for c, s, n in zip(centre, size, shape, strict=True)]
    return tuple(slice(a, a + s) for a, s in zip(starts, size, strict=True))


def token_figure(ws: Workspace, predictor, case: str, path: Path) -> Path:
    """Run the trained SCD network on one patch of a validation case and draw the kept tokens per stage."""
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    from nnunet_scd.demo.plots import plot_token_overlay, token_boxes, tokens_on_slice
    from nnunet_scd.model.guidance import enrichment, enrichment_counts, token_foreground

    raw = ws.raw / ws.dataset_folder_name
    io = SimpleITKIO()
    image, props = io.read_images([str(raw / "imagesTr" / f"{case}_0000.nii.gz")])
    seg, _ = io.read_seg(str(raw / "labelsTr" / f"{case}.nii.gz"))
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    data, seg, _ = preprocessor.run_case_npy(image, seg, props, predictor.plans_manager,
                                             predictor.configuration_manager, predictor.dataset_json)
    network = predictor.network
    patch = tuple(network.patch_size)
    # Centre a case smaller than the patch in it, as nnU-Net's sliding window pads (with zeros).
    pad = [(0, 0)] + [((p - s) // 2, p - s - (p - s) // 2) if p > s else (0, 0)
                      for p, s in zip(patch, data.shape[1:], strict=True)]
    data, seg = np.pad(data, pad), np.pad(seg, pad)
    centre = np.argwhere(seg[0] > 0).mean(axis=0) if (seg[0] > 0).any() else np.array(seg.shape[1:]) / 2
    window = _crop_around(data, centre, patch)
    crop, seg_crop = data[(slice(None), *window)], seg[(0, *window)]
    network.eval()
    with torch.no_grad():
        network(torch.from_numpy(np.ascontiguousarray(crop[None])).float())
    z = int(np.argmax((seg_crop > 0).sum(axis=(1, 2))))
    boxes = [tokens_on_slice(token_boxes(k[0].cpu().numpy(), network.token_grid, network.token_size), z)
             for k in network.kept_indices]
    kept = [k.shape[1] for k in network.kept_indices]
    fg = token_foreground(torch.from_numpy(seg_crop[None] > 0), network.token_size)
    stage_enrichment = enrichment(enrichment_counts(network.kept_indices, fg))
    title = (f"{case}, patch {'x'.join(map(str, patch))}, slice z={z}: tokens kept by STP per stage "
             f"({' -> '.join(map(str, kept))} of {int(np.prod(network.token_grid))} in the patch)\nforeground "
             f"enrichment in this patch {' / '.join(f'{e:.2f}' for e in stage_enrichment)} (random pruning = 1)")
    return plot_token_overlay(crop[0, z], seg_crop[z], boxes, network.token_grid, network.token_size, path, title,
                              num_labels=len(predictor.dataset_json["labels"]))


def segmentation_figure(ws: Workspace, case: str, labels: dict[str, int], path: Path, seed: int = 0) -> Path:
    from nnunet_scd.demo.plots import plot_segmentations

    raw = ws.raw / ws.dataset_folder_name
    image = _read(raw / "imagesTr" / f"{case}_0000.nii.gz")
    truth = _read(raw / "labelsTr" / f"{case}.nii.gz")
    preds = {name: _read(ws.predictions(trainer, seed) / f"{case}.nii.gz")
             for name, trainer in ws.config.trainers.items()}
    z = int(np.argmax((truth > 0).sum(axis=(1, 2))))
    return plot_segmentations(image[z], truth[z], {n: p[z] for n, p in preds.items()}, labels, path,
                              f"Validation case {case}, slice z={z}: nnU-Net's fold-{ws.config.fold} prediction")


def epoch_breakdown(fold_dir: Path) -> dict[str, float]:
    """Median seconds per epoch part (network steps, waiting for batches, ...) over a fold's training logs."""
    from nnunet_scd.trainers.training_log import epoch_breakdowns

    epochs = epoch_breakdowns(fold_dir)
    return {part: statistics.median(e[part] for e in epochs) for part in epochs[0]} if epochs else {}


def measure(ws: Workspace, images: Path, predictors: dict[str, Any], seed: int) -> dict[str, dict[str, Any]]:
    """Parameters, forward FLOPs per patch, epoch times and inference times for each model of one seed."""
    from nnunet_scd.demo.measure import count_flops, count_parameters, epoch_times, input_shape, time_inference
    from nnunet_scd.nnunet.token_selection import fold_token_selection

    timings = time_inference(predictors, sorted(images.glob("*.nii.gz")))
    out: dict[str, dict[str, Any]] = {}
    for name, trainer in ws.config.trainers.items():
        predictor, fold_dir = predictors[name], ws.fold_dir(trainer, seed)
        out[name] = {"trainer": trainer, "epoch_seconds": epoch_times(fold_dir),
                     "epoch_breakdown": epoch_breakdown(fold_dir),
                     "parameters": count_parameters(predictor.network),
                     "flops": count_flops(predictor.network, (1, *input_shape(predictor))),
                     **timings[name]}
        if getattr(predictor.network, "is_sparse", False):
            selection = fold_token_selection(fold_dir.parent, ws.config.fold)
            out[name]["enrichment"] = list(selection.enrichment)
    return out


def _load() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg()) + f" on {os.cpu_count()} CPUs"
    except OSError:
        return "unknown"


def run_demo(work_dir: Path, config: DemoConfig, seeds: int = 1) -> dict[str, Any]:
    """Run every step for ``config`` and training seeds 0..``seeds``-1 in ``work_dir``; returns the results table
    (also written to the report)."""
    from nnunet_scd.demo.measure import load_predictor
    from nnunet_scd.demo.plots import plot_dice_vs_throughput
    from nnunet_scd.demo.report import build_table, table_to_markdown, write_table

    start = time.perf_counter()
    ws = Workspace(work_dir.resolve(), config)
    os.environ.update(ws.environment())  # before nnunetv2 is imported here: it reads them at import
    load_at_start = _load()
    log(f"nnunet-scd demo ({config.name}, {seeds} seed{'s' if seeds > 1 else ''}): work folder {ws.root}; "
        f"system load {load_at_start}")

    with stage("generate phantoms", ws.logs):
        steps.make_dataset(ws)
    with stage("plan and preprocess", ws.logs):
        steps.plan_and_preprocess(ws)
    for seed in range(seeds):
        for name, trainer in config.trainers.items():
            with stage(f"train {name}, seed {seed}", ws.logs):
                steps.train(ws, name, trainer, seed)
    with stage("copy validation cases", ws.logs):
        images, labels_dir = steps.stage_validation_cases(ws)
    summaries: list[dict[str, Any]] = []
    measurements: list[dict[str, dict[str, Any]]] = []
    for seed in range(seeds):
        summaries.append({})
        for name, trainer in config.trainers.items():
            with stage(f"predict {name}, seed {seed}", ws.logs):
                steps.predict(ws, name, trainer, images, seed)
            with stage(f"evaluate {name}, seed {seed}", ws.logs):
                summaries[seed][name] = steps.evaluate(ws, name, trainer, labels_dir, seed)
        log(f"Measuring parameters, FLOPs and inference time of seed {seed} (in-process nnUNetPredictor, "
            "models interleaved)")
        with stage(f"measure seed {seed}", ws.logs):
            predictors = {name: load_predictor(ws.fold_dir(trainer, seed).parent, config.fold)
                          for name, trainer in progress(iterable=config.trainers.items(), desc="load models",
                                                        leave=False)}
            measurements.append(measure(ws, images, predictors, seed))
            if seed == 0:
                figure_predictor = predictors["SCD"]
    labels = {k: int(v) for k, v in figure_predictor.dataset_json["labels"].items()}

    report = ws.report
    case = steps.validation_keys(ws)[0]
    log(f"Drawing figures into {report}")
    with stage("figures", ws.logs):
        overlay = token_figure(ws, figure_predictor, case, report / "kept_tokens.png")
        seg_png = segmentation_figure(ws, case, labels, report / "segmentation.png")

    b = config.budget
    table = build_table(summaries, measurements, labels, notes={
        "setting": f"{config.name}: {b.epochs} epochs x {b.iterations_per_epoch} iterations (batch 2), fold "
                   f"{config.fold} of {config.num_cases} phantom cases, "
                   f"{len(summaries[0]['SCD']['metric_per_case'])} validation cases, CPU, training seeds "
                   f"0-{seeds - 1}",
        "command": f"nnunet-scd demo{' --quick' if config.name == 'quick' else ''}"
                   f"{f' --seeds {seeds}' if seeds > 1 else ''}",
        "Dice": "nnU-Net's evaluator on nnUNetv2_predict output (no test-time mirroring)",
        "train s / epoch": "median of nnU-Net's 'Epoch time' log lines (train + pseudo-validation iterations); "
                           "the rows below it split the epoch (medians of the trainers' 'Epoch breakdown' lines; "
                           "end of epoch = logging, checkpoints and plots, outside nnU-Net's epoch time)",
        "inference": "nnUNetPredictor.predict_single_npy_array in one process (preprocessing, sliding window, "
                     "export resampling), median over cases; network s / patch is one forward pass of one "
                     "sliding-window tile",
        "system load (1/5/15 min)": f"{load_at_start} at start, {_load()} at the end; timings are noisy when shared",
    })
    table["figures"] = {"dice_vs_throughput": str(report / "dice_vs_throughput.png"),
                        "kept_tokens": str(overlay), "segmentation": str(seg_png)}
    plot_dice_vs_throughput(table["models"], report / "dice_vs_throughput.png", table["chance_dice"])
    table["wall_seconds"] = time.perf_counter() - start
    json_path, md_path = write_table(table, report)
    print("\n" + table_to_markdown(table))
    log(f"Report: {md_path}, {json_path}, {', '.join(Path(p).name for p in table['figures'].values())} in {report}")
    log(f"Demo finished in {table['wall_seconds'] / 60:.1f} min (this run; finished steps are reused)")
    return table
