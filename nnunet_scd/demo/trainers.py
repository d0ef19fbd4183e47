"""Demo trainer variants: SCD with the Ti ViT, its dense twin and stock nnU-Net, with the demo's short budgets.

The ViTs are ``nnUNetTrainerSCD`` and ``nnUNetTrainerUNETR`` with the ``Ti`` size (192 wide, 12
blocks, pruning after 3/6/9); stock nnU-Net is ``nnUNetTrainer`` unchanged. The ViTs get the demo's
budget with the short-run recipe (``ShortRunRecipe``: lr 1e-3 after a warm-up, no test-time
mirroring); stock nnU-Net gets the same budget with its own recipe (SGD, lr 1e-2, poly decay, deep
supervision). All are seeded. The end-of-training validation is left out because the demo predicts
the same validation cases with ``nnUNetv2_predict`` and evaluates them itself.
"""

from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_scd.demo.config import DEFAULT, QUICK, TrainingBudget
from nnunet_scd.nnunet.epoch_timing import EpochTimeBreakdown
from nnunet_scd.nnunet.seeding import SeededTraining
from nnunet_scd.nnunet.trainers import (
    NoTestTimeMirroring,
    ShortRunRecipe,
    nnUNetTrainerSCD,
    nnUNetTrainerUNETR,
)

_CUDA = torch.device("cuda")  # nnU-Net's default device for trainer constructors

__all__ = [
    "nnUNetTrainer_demo",
    "nnUNetTrainer_demoQuick",
    "nnUNetTrainerSCD_Ti_demo",
    "nnUNetTrainerSCD_Ti_demoQuick",
    "nnUNetTrainerUNETR_Ti_demo",
    "nnUNetTrainerUNETR_Ti_demoQuick",
]


class _NoFinalValidation:
    """Mixin: skip nnU-Net's end-of-training validation (the demo predicts and evaluates itself)."""

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        self.print_to_log_file(
            "Skipping nnU-Net's end-of-training validation: `nnunet-scd demo` predicts the validation "
            "cases with nnUNetv2_predict and evaluates them itself."
        )


class _DemoBudget(_NoFinalValidation, ShortRunRecipe):
    """Mixin for the ViT trainers: a fixed epoch/iteration budget with the short-run recipe.

    The recipe's checkpoint every epoch is what lets an interrupted demo resume (``--c``) from the
    last finished epoch.
    """

    budget: TrainingBudget = DEFAULT.budget

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.epochs = cls.budget.epochs
        cls.iterations_per_epoch = cls.budget.iterations_per_epoch
        cls.val_iterations_per_epoch = cls.budget.val_iterations_per_epoch


class _StockDemoBudget(_NoFinalValidation, NoTestTimeMirroring, SeededTraining, EpochTimeBreakdown, nnUNetTrainer):
    """Stock nnU-Net (network, loss, optimiser, schedule, deep supervision) with only the demo's length changed."""

    budget: TrainingBudget = DEFAULT.budget

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = _CUDA):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.budget.epochs
        self.num_iterations_per_epoch = self.budget.iterations_per_epoch
        self.num_val_iterations_per_epoch = self.budget.val_iterations_per_epoch
        self.save_every = 1


class nnUNetTrainerSCD_Ti_demo(_DemoBudget, nnUNetTrainerSCD):
    vit_size = "Ti"
    budget = DEFAULT.budget


class nnUNetTrainerUNETR_Ti_demo(_DemoBudget, nnUNetTrainerUNETR):
    vit_size = "Ti"
    budget = DEFAULT.budget


class nnUNetTrainerSCD_Ti_demoQuick(nnUNetTrainerSCD_Ti_demo):
    budget = QUICK.budget


class nnUNetTrainerUNETR_Ti_demoQuick(nnUNetTrainerUNETR_Ti_demo):
    budget = QUICK.budget


class nnUNetTrainer_demo(_StockDemoBudget):
    budget = DEFAULT.budget


class nnUNetTrainer_demoQuick(_StockDemoBudget):
    budget = QUICK.budget
