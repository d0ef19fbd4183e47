"""Every trainer nnunet-scd ships, by class name, and the shorter CPU lengths generated from one table.

The written trainers live in ``public``, ``ablations`` and ``search``. Each row of ``VARIANTS`` below
makes one more class: a written trainer at a row of ``recipe.LENGTHS``, with at most a keep ratio or
size changed, under the name that nnU-Net records in checkpoints and results folders (so a name,
once shipped, stays). The shim that nnU-Net imports (``shim/nnunet_scd_trainers.py``) star-imports
this module; ``TRAINERS`` is the same set as a dictionary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_scd.trainers import ablations, public, search
from nnunet_scd.trainers.ablations import (
    nnUNetTrainerSCD_BoundaryGuidance_Tiny,
    nnUNetTrainerSCD_ClassQuota_Tiny,
    nnUNetTrainerSCD_Context_Tiny,
    nnUNetTrainerSCD_EvenlySpaced_Tiny,
    nnUNetTrainerSCD_FullWidthCompletion_Tiny,
    nnUNetTrainerSCD_NoGuidance_Tiny,
    nnUNetTrainerSCD_Oracle_Tiny,
    nnUNetTrainerSCD_SharedSkips_Tiny,
    nnUNetTrainerSCD_TopKTraining_Tiny,
)
from nnunet_scd.trainers.base import RecipeTrainer
from nnunet_scd.trainers.public import (
    nnUNetTrainerSCD,
    nnUNetTrainerSCD_MIM_Tiny,
    nnUNetTrainerSCD_RandomPruning_Tiny,
    nnUNetTrainerSCD_Tiny,
    nnUNetTrainerSCD_Zhou2023BraTS_Tiny,
    nnUNetTrainerSCD_Zhou2023Recipe_Tiny,
    nnUNetTrainerUNETR,
    nnUNetTrainerUNETR_Tiny,
)
from nnunet_scd.trainers.recipe import LENGTHS
from nnunet_scd.trainers.search import (
    nnUNetTrainerSCDSearch_Tiny,
    nnUNetTrainerSCDSearchRankTokens_Tiny,
    nnUNetTrainerSCDSlim_Tiny,
    nnUNetTrainerUNETRSearch_Tiny,
    nnUNetTrainerUNETRSearchPositionTokens_Tiny,
    nnUNetTrainerUNETRSearchRankTokens_Tiny,
    nnUNetTrainerUNETRSlim_NoPixelClassifier_Tiny,
    nnUNetTrainerUNETRSlim_Tiny,
)

KEEP_0P1 = (0.1, 0.1, 0.1)


@dataclass(frozen=True)
class Variant:
    """One generated trainer: ``base`` at the length ``LENGTHS[length]``, with ``changes`` to its class attributes."""

    name: str
    base: type
    length: str
    changes: dict[str, Any] = field(default_factory=dict)

    def make(self, module: str) -> type:
        recipe = LENGTHS[self.length].apply(self.base.recipe)
        doc = f"{self.base.__name__} at the {self.length!r} length" + "".join(
            f", {key} {value!r}" for key, value in self.changes.items())
        return type(self.name, (self.base,), {"recipe": recipe, "__module__": module, "__qualname__": self.name,
                                              "__doc__": doc + ".", **self.changes})


VARIANTS: tuple[Variant, ...] = (
    # nnU-Net's own shortening.
    Variant("nnUNetTrainerSCD_Tiny_5epochs", nnUNetTrainerSCD_Tiny, "5epochs"),
    Variant("nnUNetTrainerUNETR_Tiny_5epochs", nnUNetTrainerUNETR_Tiny, "5epochs"),
    # The end-to-end test.
    Variant("nnUNetTrainerSCD_Tiny_cpuSmoke", nnUNetTrainerSCD_Tiny, "cpuSmoke"),
    Variant("nnUNetTrainerUNETR_Tiny_cpuSmoke", nnUNetTrainerUNETR_Tiny, "cpuSmoke"),
    # The STP study: guided STP against random pruning, at keep 0.25 and 0.1.
    Variant("nnUNetTrainerSCD_Tiny_cpuStudy", nnUNetTrainerSCD_Tiny, "cpuStudy"),
    Variant("nnUNetTrainerSCD_RandomPruning_Tiny_cpuStudy", nnUNetTrainerSCD_RandomPruning_Tiny, "cpuStudy"),
    Variant("nnUNetTrainerSCD_keep0p1_Tiny_cpuStudy", nnUNetTrainerSCD_Tiny, "cpuStudy", {"keep_ratios": KEEP_0P1}),
    Variant("nnUNetTrainerSCD_RandomPruning_keep0p1_Tiny_cpuStudy", nnUNetTrainerSCD_RandomPruning_Tiny, "cpuStudy",
            {"keep_ratios": KEEP_0P1}),
    # The reproduction study: MTA against the MIM baseline, per-depth against shared skips, our recipe against the
    # authors'; and the completion study: quarter-width against full-width completion.
    Variant("nnUNetTrainerSCD_MIM_Tiny_cpuStudy", nnUNetTrainerSCD_MIM_Tiny, "cpuStudy"),
    Variant("nnUNetTrainerSCD_SharedSkips_Tiny_cpuStudy", nnUNetTrainerSCD_SharedSkips_Tiny, "cpuStudy"),
    Variant("nnUNetTrainerSCD_Zhou2023Recipe_Tiny_cpuStudy", nnUNetTrainerSCD_Zhou2023Recipe_Tiny, "cpuStudy"),
    Variant("nnUNetTrainerSCD_Zhou2023BraTS_Tiny_cpuStudy", nnUNetTrainerSCD_Zhou2023BraTS_Tiny, "cpuStudy"),
    Variant("nnUNetTrainerSCD_FullWidthCompletion_Tiny_cpuStudy", nnUNetTrainerSCD_FullWidthCompletion_Tiny,
            "cpuStudy"),
    # The CPU search-then-fine-tune walk-through, and its unsliced references.
    Variant("nnUNetTrainerSCDSearch_Tiny_cpuShort", nnUNetTrainerSCDSearch_Tiny, "cpuShort",
            {"slim_trainer": "nnUNetTrainerSCDSlim_Tiny_cpuShort"}),
    Variant("nnUNetTrainerUNETRSearch_Tiny_cpuShort", nnUNetTrainerUNETRSearch_Tiny, "cpuShort",
            {"slim_trainer": "nnUNetTrainerUNETRSlim_Tiny_cpuShort"}),
    Variant("nnUNetTrainerSCDSlim_Tiny_cpuShort", nnUNetTrainerSCDSlim_Tiny, "cpuShort"),
    Variant("nnUNetTrainerUNETRSlim_Tiny_cpuShort", nnUNetTrainerUNETRSlim_Tiny, "cpuShort"),
    Variant("nnUNetTrainerUNETRSlim_NoPixelClassifier_Tiny_cpuShort", nnUNetTrainerUNETRSlim_NoPixelClassifier_Tiny,
            "cpuShort"),
    # Joint search in the convergence study's regime: channels only, and with position or rank token masks, each
    # sliced at one FLOP budget and fine-tuned by the same slim trainer (docs/joint-search.md).
    Variant("nnUNetTrainerUNETRSearch_Tiny_converge", nnUNetTrainerUNETRSearch_Tiny, "converge",
            {"slim_trainer": "nnUNetTrainerUNETRSlim_Tiny_converge"}),
    Variant("nnUNetTrainerUNETRSearchPositionTokens_Tiny_converge", nnUNetTrainerUNETRSearchPositionTokens_Tiny,
            "converge", {"slim_trainer": "nnUNetTrainerUNETRSlim_Tiny_converge"}),
    Variant("nnUNetTrainerUNETRSearchRankTokens_Tiny_converge", nnUNetTrainerUNETRSearchRankTokens_Tiny, "converge",
            {"slim_trainer": "nnUNetTrainerUNETRSlim_Tiny_converge"}),
    Variant("nnUNetTrainerSCDSearchRankTokens_Tiny_converge", nnUNetTrainerSCDSearchRankTokens_Tiny, "converge",
            {"slim_trainer": "nnUNetTrainerSCDSlim_Tiny_converge"}),
    Variant("nnUNetTrainerUNETRSlim_Tiny_converge", nnUNetTrainerUNETRSlim_Tiny, "converge"),
    Variant("nnUNetTrainerSCDSlim_Tiny_converge", nnUNetTrainerSCDSlim_Tiny, "converge"),
    Variant("nnUNetTrainerSCD_Tiny_cpuShort2x", nnUNetTrainerSCD_Tiny, "cpuShort2x"),
    Variant("nnUNetTrainerUNETR_Tiny_cpuShort2x", nnUNetTrainerUNETR_Tiny, "cpuShort2x"),
    # The convergence study (docs/studies/convergence.md): arms that differ only in token selection, at keep 0.25
    # and 0.1, and stock nnU-Net for scale.
    Variant("nnUNetTrainerUNETR_Tiny_converge", nnUNetTrainerUNETR_Tiny, "converge"),
    Variant("nnUNetTrainerSCD_Tiny_converge", nnUNetTrainerSCD_Tiny, "converge"),
    Variant("nnUNetTrainerSCD_NoGuidance_Tiny_converge", nnUNetTrainerSCD_NoGuidance_Tiny, "converge"),
    Variant("nnUNetTrainerSCD_RandomPruning_Tiny_converge", nnUNetTrainerSCD_RandomPruning_Tiny, "converge"),
    Variant("nnUNetTrainerSCD_Oracle_Tiny_converge", nnUNetTrainerSCD_Oracle_Tiny, "converge"),
    Variant("nnUNetTrainerSCD_keep0p1_Tiny_converge", nnUNetTrainerSCD_Tiny, "converge", {"keep_ratios": KEEP_0P1}),
    Variant("nnUNetTrainerSCD_RandomPruning_keep0p1_Tiny_converge", nnUNetTrainerSCD_RandomPruning_Tiny, "converge",
            {"keep_ratios": KEEP_0P1}),
    Variant("nnUNetTrainerSCD_NoGuidance_keep0p1_Tiny_converge", nnUNetTrainerSCD_NoGuidance_Tiny, "converge",
            {"keep_ratios": KEEP_0P1}),
    Variant("nnUNetTrainerSCD_Oracle_keep0p1_Tiny_converge", nnUNetTrainerSCD_Oracle_Tiny, "converge",
            {"keep_ratios": KEEP_0P1}),
    Variant("nnUNetTrainer_converge", RecipeTrainer, "convergeStock"),
    # The scorer designs beside guidance, in the convergence study's regime.
    Variant("nnUNetTrainerSCD_EvenlySpaced_Tiny_converge", nnUNetTrainerSCD_EvenlySpaced_Tiny, "converge"),
    Variant("nnUNetTrainerSCD_BoundaryGuidance_Tiny_converge", nnUNetTrainerSCD_BoundaryGuidance_Tiny, "converge"),
    Variant("nnUNetTrainerSCD_Context_Tiny_converge", nnUNetTrainerSCD_Context_Tiny, "converge"),
    Variant("nnUNetTrainerSCD_TopKTraining_Tiny_converge", nnUNetTrainerSCD_TopKTraining_Tiny, "converge"),
    Variant("nnUNetTrainerSCD_EvenlySpaced_keep0p1_Tiny_converge", nnUNetTrainerSCD_EvenlySpaced_Tiny, "converge",
            {"keep_ratios": KEEP_0P1}),
    Variant("nnUNetTrainerSCD_BoundaryGuidance_keep0p1_Tiny_converge", nnUNetTrainerSCD_BoundaryGuidance_Tiny,
            "converge", {"keep_ratios": KEEP_0P1}),
    Variant("nnUNetTrainerSCD_Context_keep0p1_Tiny_converge", nnUNetTrainerSCD_Context_Tiny, "converge",
            {"keep_ratios": KEEP_0P1}),
    Variant("nnUNetTrainerSCD_TopKTraining_keep0p1_Tiny_converge", nnUNetTrainerSCD_TopKTraining_Tiny, "converge",
            {"keep_ratios": KEEP_0P1}),
    Variant("nnUNetTrainerSCD_ClassQuota_Tiny_converge", nnUNetTrainerSCD_ClassQuota_Tiny, "converge"),
    Variant("nnUNetTrainerSCD_ClassQuota_keep0p1_Tiny_converge", nnUNetTrainerSCD_ClassQuota_Tiny, "converge",
            {"keep_ratios": KEEP_0P1}),
    # `nnunet-scd demo` (demo/config.py): SCD with the Ti ViT, its dense twin and stock nnU-Net, at one length.
    Variant("nnUNetTrainerSCD_Ti_demo", nnUNetTrainerSCD, "demo", {"vit_size": "Ti"}),
    Variant("nnUNetTrainerUNETR_Ti_demo", nnUNetTrainerUNETR, "demo", {"vit_size": "Ti"}),
    Variant("nnUNetTrainer_demo", RecipeTrainer, "demo"),
    Variant("nnUNetTrainerSCD_Ti_demoQuick", nnUNetTrainerSCD, "demoQuick", {"vit_size": "Ti"}),
    Variant("nnUNetTrainerUNETR_Ti_demoQuick", nnUNetTrainerUNETR, "demoQuick", {"vit_size": "Ti"}),
    Variant("nnUNetTrainer_demoQuick", RecipeTrainer, "demoQuick"),
)


def _written(module: ModuleType) -> dict[str, type]:
    """The nnU-Net trainers a module defines (not those it imports), by name."""
    return {name: getattr(module, name) for name in module.__all__
            if isinstance(getattr(module, name), type) and issubclass(getattr(module, name), nnUNetTrainer)
            and name.startswith("nnUNetTrainer") and getattr(module, name).__module__ == module.__name__}


def _catalog() -> dict[str, type]:
    trainers = {name: cls for module in (public, ablations, search) for name, cls in _written(module).items()}
    for variant in VARIANTS:
        if variant.name in trainers:
            raise ValueError(f"{variant.name} is shipped twice")
        trainers[variant.name] = variant.make(__name__)
    return dict(sorted(trainers.items()))


TRAINERS: dict[str, type] = _catalog()
globals().update(TRAINERS)  # so that nnU-Net, pickle and DDP workers find each class by module and name
__all__ = ["TRAINERS", "VARIANTS", "Variant", *TRAINERS]
