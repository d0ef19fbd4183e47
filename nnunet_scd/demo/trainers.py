"""Demo trainer variants: the Tiny SCD trainer and its dense twin with the demo's short budgets.

The network is exactly that of ``nnUNetTrainerSCD_Tiny`` / ``nnUNetTrainerUNETR_Tiny``; the
training length is the demo's budget with the short-run recipe (``ShortRunRecipe``: lr 1e-3 after a
warm-up, no test-time mirroring), and the end-of-training validation is left out because the demo
predicts the same validation cases with ``nnUNetv2_predict`` and evaluates them itself.
"""

from __future__ import annotations

from nnunet_scd.demo.config import DEFAULT, QUICK, TrainingBudget
from nnunet_scd.nnunet.trainers import ShortRunRecipe, nnUNetTrainerSCD_Tiny, nnUNetTrainerUNETR_Tiny

__all__ = [
    "nnUNetTrainerSCD_Tiny_demo",
    "nnUNetTrainerSCD_Tiny_demoQuick",
    "nnUNetTrainerUNETR_Tiny_demo",
    "nnUNetTrainerUNETR_Tiny_demoQuick",
]


class _DemoBudget(ShortRunRecipe):
    """Mixin: a fixed epoch/iteration budget with the short-run recipe, no final validation.

    The recipe's checkpoint every epoch is what lets an interrupted demo resume (``--c``) from the
    last finished epoch.
    """

    budget: TrainingBudget = DEFAULT.budget

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
