"""``nnUNetPlannerSCD``: nnU-Net's experiment planner, with the patch and tokens chosen for a token-sparse ViT.

Everything nnU-Net plans for its U-Net (spacing, transposition, normalisation, resampling,
3d_lowres and the cascade) is kept; per configuration the planner then replaces the patch and
batch size with a ViT's (see ``token_budget``) and records the token geometry under
``scd_tokens`` in the configuration's entry:

- ``token_size``: tokens per axis (z first), chosen from the spacing;
- ``planned_patch_size``: the patch nnU-Net's CNN planner chose;
- ``planner``, ``vit_size``, ``token_budget``, ``budget_bound``, ``preset``: how it was chosen.

The SCD trainers take a recorded ``token_size`` as it is (``token_config.resolve_token_config``),
and nnU-Net copies the plans into the results folder, so prediction rebuilds the same network.
The ``architecture`` entry stays the CNN planner's; SCD trainers build their own network.

nnU-Net looks for planners only inside nnunetv2 (``-pl``), so ``nnunet-scd plan`` runs this one
and writes its own plans identifier, as nnU-Net's ResEnc planners do; training then uses ``-p``.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.utilities.json_export import recursive_fix_for_json_export

from nnunet_scd.atomic import write_text_atomic
from nnunet_scd.geometry import PRESETS, VIT_SIZES
from nnunet_scd.nnunet.token_budget import SCD_PLANS, memory_batch_size, plan_token_geometry, token_budget
from nnunet_scd.nnunet.token_config import PLANS_KEY, TokenConfig

__all__ = ["SCD_PLANS", "PlanResult", "nnUNetPlannerSCD", "plan_dataset"]


class nnUNetPlannerSCD(ExperimentPlanner):
    """nnU-Net's planner with per-configuration token size, token-budgeted patch and batch size for a ViT.

    Args (beyond ``ExperimentPlanner``'s):
        vit_size: row of ``VIT_SIZES`` whose encoder sets the token budget ("B" for nnUNetTrainerSCD).
        token_base: token size along the finest axis (a power of two).
        preset: name in ``PRESETS``; pins the 3d_fullres patch, tokens and (if the preset has one) the
            target spacing. Other configurations are planned by the budget.
    """

    def __init__(
        self,
        dataset_name_or_id: str | int,
        gpu_memory_target_in_gb: float = 8,
        preprocessor_name: str = "DefaultPreprocessor",
        plans_name: str = SCD_PLANS,
        overwrite_target_spacing: list[float] | tuple[float, ...] | None = None,
        suppress_transpose: bool = False,
        vit_size: str = "B",
        token_base: int = 8,
        preset: str | None = None,
    ):
        if vit_size not in VIT_SIZES:
            raise ValueError(f"unknown ViT size {vit_size!r}; choose one of {sorted(VIT_SIZES)}")
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        self.preset = PRESETS[preset] if preset is not None else None
        if overwrite_target_spacing is None and self.preset is not None and self.preset.target_spacing is not None:
            overwrite_target_spacing = [float(s) for s in self.preset.target_spacing]
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.vit_size = vit_size
        self.vit = VIT_SIZES[vit_size]
        self.warnings: list[str] = []  # what a preset changes beyond the 3d_fullres geometry it pins
        self.token_base = token_base
        self.budget = token_budget(self.vit.embed_dim, self.vit.depth, self.vit.mlp_ratio, gpu_memory_target_in_gb)
        # Refuse before planning, so that no plans file is written: nnU-Net plans 2D data as (1, X, Y) volumes.
        if self.preset is not None and min(np.median(self.dataset_fingerprint["shapes_after_crop"], 0)) <= 1:
            raise ValueError(f"preset {self.preset.name} fixes a 3D geometry, but {self.dataset_name} is a 2D dataset; "
                             "plan it without --preset")

    def get_plans_for_configuration(
        self,
        spacing: np.ndarray | tuple[float, ...] | list[float],
        median_shape: np.ndarray | tuple[int, ...],
        data_identifier: str,
        approximate_n_voxels_dataset: float,
        _cache: dict,
    ) -> dict:
        """nnU-Net's plan for this configuration, with the ViT's patch, batch size and token record."""
        plan = super().get_plans_for_configuration(spacing, median_shape, data_identifier,
                                                   approximate_n_voxels_dataset, _cache)
        cnn_patch = tuple(int(p) for p in plan["patch_size"])
        pinned = self.preset is not None and data_identifier == self.generate_data_identifier("3d_fullres")
        if pinned:
            tokens = TokenConfig(tuple(self.preset.token_size), tuple(self.preset.patch_size), cnn_patch)
            median = [int(round(m)) for m in median_shape]
            if any(p > m for p, m in zip(self.preset.patch_size, median)):
                self.warnings.append(
                    f"preset {self.preset.name}'s patch {'x'.join(map(str, self.preset.patch_size))} is larger than "
                    f"the median image at its spacing ({'x'.join(map(str, median))} voxels): nnU-Net pads those "
                    "images, so part of every patch is padding. Plan without --preset to fit the patch to the data."
                )
        else:
            tokens = plan_token_geometry(spacing, median_shape, cnn_patch, self.budget.max_tokens, self.token_base)
        if self.preset is not None and self.preset.target_spacing is not None and len(spacing) == 2:
            self.warnings.append(
                f"preset {self.preset.name}'s target spacing also sets the 2d configuration's spacing to "
                f"{'x'.join(f'{s:g}' for s in spacing)} mm (nnU-Net plans every configuration at one target spacing). "
                "Plan without --preset (another --plans-name) for nnU-Net's own 2d spacing."
            )
        plan["patch_size"] = tuple(tokens.patch_size)
        plan["batch_size"] = memory_batch_size(tokens.num_tokens, plan["batch_size"], self.vit.embed_dim,
                                               self.vit.depth, self.vit.mlp_ratio, self.UNet_vram_target_GB)
        plan[PLANS_KEY] = {
            **tokens.to_plans(),
            "planner": type(self).__name__,
            "vit_size": self.vit_size,
            "token_budget": self.budget.max_tokens,
            "budget_bound": self.budget.bound,
            "preset": self.preset.name if pinned else None,
        }
        return plan

    def save_plans(self, plans: dict) -> None:
        """Write the plans atomically; configurations added by hand to an existing file are kept, as nnU-Net does."""
        recursive_fix_for_json_export(plans)
        plans_file = Path(nnUNet_preprocessed) / self.dataset_name / f"{self.plans_identifier}.json"
        if plans_file.is_file():
            for name, configuration in json.loads(plans_file.read_text())["configurations"].items():
                plans["configurations"].setdefault(name, configuration)
        write_text_atomic(json.dumps(plans, indent=4), plans_file)


@dataclass(frozen=True)
class PlanResult:
    """What ``plan_dataset`` did: the plans written, where, and whether it had to extract the fingerprint."""

    dataset_name: str
    plans: dict[str, Any]
    plans_file: Path
    extracted_fingerprint: bool
    warnings: tuple[str, ...] = ()


def plan_dataset(
    dataset: str | int,
    preset: str | None = None,
    vit_size: str = "B",
    gpu_memory_gb: float = 8.0,
    plans_name: str = SCD_PLANS,
    token_base: int = 8,
    num_processes: int = 1,
    verbose: bool = False,
) -> PlanResult:
    """Plan ``dataset`` with ``nnUNetPlannerSCD``, extracting nnU-Net's fingerprint first if it is missing.

    nnU-Net's own steps run unchanged (``DatasetFingerprintExtractor``, ``ExperimentPlanner``); without
    ``verbose`` their printout is swallowed, since the caller reports the result. Raises ValueError
    with a reason for a dataset that does not exist or cannot be fingerprinted.
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset
    from nnunetv2.utilities.dataset_name_id_conversion import convert_dataset_name_to_id, maybe_convert_to_dataset_name

    try:
        dataset_name = maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError) as error:
        first = str(error).splitlines()[0]
        raise ValueError(f"{first} (nnUNet_raw and nnUNet_preprocessed must point at your nnU-Net folders)") from None
    output = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    fingerprint = Path(nnUNet_preprocessed) / dataset_name / "dataset_fingerprint.json"
    extracted = not fingerprint.is_file()
    with output:
        if extracted:
            try:
                extract_fingerprint_dataset(convert_dataset_name_to_id(dataset_name), num_processes=num_processes,
                                            show_progress_bar=verbose)
            except (OSError, RuntimeError, AssertionError, KeyError) as error:
                raise ValueError(
                    f"could not extract the fingerprint of {dataset_name} ({type(error).__name__}: {error}); check the "
                    f"raw dataset with `nnUNetv2_extract_fingerprint -d {dataset} --verify_dataset_integrity`"
                ) from None
        planner = nnUNetPlannerSCD(dataset_name, gpu_memory_target_in_gb=gpu_memory_gb, plans_name=plans_name,
                                   vit_size=vit_size, token_base=token_base, preset=preset)
        planner.plan_experiment()
    plans_file = Path(nnUNet_preprocessed) / dataset_name / f"{plans_name}.json"
    # What was written is what nnU-Net will read: JSON types, and any configuration kept from an earlier file.
    return PlanResult(dataset_name, json.loads(plans_file.read_text()), plans_file, extracted,
                      tuple(dict.fromkeys(planner.warnings)))
