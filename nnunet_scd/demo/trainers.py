"""Demo trainer variants: the Tiny SCD trainer and its dense twin with the demo's short budgets.

Only the training length changes (and the end-of-training validation is left out, because the demo
predicts the same validation cases with ``nnUNetv2_predict`` and evaluates them itself). The
network and recipe are exactly those of ``nnUNetTrainerSCD_Tiny`` / ``nnUNetTrainerUNETR_Tiny``.
"""

from __future__ import annotations

from nnunet_scd.demo.config import DEFAULT, QUICK, TrainingBudget
from nnunet_scd.nnunet.trainers import nnUNetTrainerSCD_Tiny, nnUNetTrainerUNETR_Tiny

__all__ = [
    "nnUNetTrainerSCD_Tiny_demo",
    "nnUNetTrainerSCD_Tiny_demoQuick",
    "nnUNetTrainerUNETR_Tiny_demo",
    "nnUNetTrainerUNETR_Tiny_demoQuick",
]


class _DemoBudget:
    """Mixin: a fixed epoch/iteration budget, one checkpoint per epoch, no final validation."""

    budget: TrainingBudget = DEFAULT.budget
    checkpoint_every = 1  # so an interrupted demo resumes (``--c``) from the last finished epoch

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.epochs = cls.budget.epochs
        cls.iterations_per_epoch = cls.budget.iterations_per_epoch
        cls.val_iterations_per_epoch = cls.budget.val_iterations_per_epoch

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        self.print_to_log_file(
            "Skipping nnU-Net's end-of-training validation: `nnunet-scd demo` predicts the validation "
            "cases with nnUNetv2_predict and evaluates them itself."
        )


class nnUNetTrainerSCD_Tiny_demo(_DemoBudget, nnUNetTrainerSCD_Tiny):
    budget = DEFAULT.budget


class nnUNetTrainerUNETR_Tiny_demo(_DemoBudget, nnUNetTrainerUNETR_Tiny):
    budget = DEFAULT.budget


class nnUNetTrainerSCD_Tiny_demoQuick(_DemoBudget, nnUNetTrainerSCD_Tiny):
    budget = QUICK.budget


class nnUNetTrainerUNETR_Tiny_demoQuick(_DemoBudget, nnUNetTrainerUNETR_Tiny):
    budget = QUICK.budget
