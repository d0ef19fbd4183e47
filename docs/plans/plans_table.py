"""Regenerate the README's plans table: default nnUNetPlans vs nnUNetPlans_SCD on three geometries.

    OMP_NUM_THREADS=1 python docs/plans/plans_table.py > docs/plans/plans_table.md

Rows: the demo phantom (images written and fingerprinted by nnU-Net), a thick-slice CT dataset and
a BTCV-like CT dataset (fingerprint only: 20 / 30 identical cases of the stated spacing and size).
Default plans come from nnU-Net's ExperimentPlanner (what nnUNetv2_plan_experiment writes); the SCD
plans from nnUNetPlannerSCD (``nnunet-scd plan``), with the paper-btcv preset for the BTCV-like
row. Each cell is what nnUNetTrainerSCD (ViT-B, keep 0.25) builds for 3d_fullres: the default plans
get the trainer's own adjustment, the SCD plans their recorded tokens. Everything runs in a
temporary folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path


def _fmt(values: tuple) -> str:
    return " x ".join(str(round(v, 2)) for v in values)


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="plans_table_"))
    for name in ("raw", "preprocessed", "results"):
        os.environ[f"nnUNet_{name}"] = str(root / name)

    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset

    from nnunet_scd.datasets.fingerprint import write_fingerprint_dataset
    from nnunet_scd.datasets.phantom import write_phantom_dataset
    from nnunet_scd.demo.config import DEFAULT
    from nnunet_scd.nnunet.planner import plan_dataset
    from nnunet_scd.trainers.plan_costs import plan_cost
    from nnunet_scd.trainers.public import nnUNetTrainerSCD

    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet:
        write_phantom_dataset(root / "raw", DEFAULT.dataset_id, num_cases=DEFAULT.num_cases, shape=DEFAULT.shape_zyx,
                              seed=DEFAULT.seed)
        extract_fingerprint_dataset(DEFAULT.dataset_id, num_processes=1, show_progress_bar=False)
    write_fingerprint_dataset(root / "raw", root / "preprocessed", 991, "ThickSlice", (3.0, 0.7, 0.7), (100, 512, 512))
    write_fingerprint_dataset(root / "raw", root / "preprocessed", 992, "BTCVlike", (3.0, 0.76, 0.76), (148, 512, 512),
                              num_cases=30, num_classes=14)
    rows = [
        ("demo phantom (12 cases, 24 x 48 x 48)", DEFAULT.dataset_id, None),
        ("thick-slice CT (fingerprint: 3.0 x 0.7 x 0.7 mm, 100 x 512 x 512)", 991, None),
        ("BTCV-like CT (fingerprint: 3.0 x 0.76 x 0.76 mm, 148 x 512 x 512)", 992, "paper-btcv"),
    ]
    print("| dataset (z, y, x) | plans | spacing (mm) | patch | token size | tokens | GFLOPs |")
    print("|---|---|---|---|---|---|---|")
    for label, dataset_id, preset in rows:
        with quiet:
            default = ExperimentPlanner(dataset_id).plan_experiment()
        scd = plan_dataset(dataset_id, preset=preset).plans
        name = default["dataset_name"]
        dataset_json = json.loads((root / "raw" / name / "dataset.json").read_text())
        scd_tag = f"nnUNetPlans_SCD (--preset {preset})" if preset else "nnUNetPlans_SCD"
        for plans, tag in ((default, "nnUNetPlans"), (scd, scd_tag)):
            cost = plan_cost(json.loads(json.dumps(plans)), dataset_json, "3d_fullres", nnUNetTrainerSCD)
            print(f"| {label} | {tag} | {_fmt(cost.spacing)} | {_fmt(cost.patch_size)} | {_fmt(cost.token_size)} | "
                  f"{cost.num_tokens} | {cost.gflops:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
