"""Demo trainer variants: SCD with the Ti ViT, its dense twin and stock nnU-Net, with the demo's short budgets.

The ViTs are ``nnUNetTrainerSCD`` and ``nnUNetTrainerUNETR`` with the ``Ti`` size (192 wide, 12
blocks, pruning after 3/6/9); stock nnU-Net is ``nnUNetTrainer`` unchanged. The ViTs get the demo's
budget with the CPU recipe of ``RECIPES["cpuShort"]`` (lr
1e-3 after a warm-up, a checkpoint every epoch, no mirroring); stock nnU-Net gets the same budget
and mirroring with its own optimiser (SGD, lr 1e-2, poly decay, deep supervision). All are seeded.
The end-of-training validation is left out because the demo predicts the same validation cases
with ``nnUNetv2_predict`` and evaluates them itself.
"""

from __future__ import annotations

from dataclasses import replace

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_scd.demo.config import DEFAULT, QUICK, TrainingBudget
from nnunet_scd.nnunet.epoch_timing import EpochTimeBreakdown
from nnunet_scd.nnunet.recipes import RECIPES, Recipe, RecipeTraining
from nnunet_scd.nnunet.seeding import SeededTraining
from nnunet_scd.nnunet.trainers import defined_trainers, nnUNetTrainerSCD, nnUNetTrainerUNETR


def _demo_recipe(budget: TrainingBudget, base: Recipe) -> Recipe:
    """``base`` (its lr, warm-up, checkpoints and mirroring) at the demo budget's length."""
    return replace(base, epochs=budget.epochs, iterations_per_epoch=budget.iterations_per_epoch,
                   val_iterations_per_epoch=budget.val_iterations_per_epoch)


# The ViTs' CPU recipe; stock nnU-Net keeps its own optimiser (lr None) and gets the same length and mirroring.
_VIT = RECIPES["cpuShort"]
_STOCK = Recipe(checkpoint_every=_VIT.checkpoint_every, mirroring=_VIT.mirroring)


class _NoFinalValidation:
    """Mixin: skip nnU-Net's end-of-training validation (the demo predicts and evaluates itself)."""

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        self.print_to_log_file(
            "Skipping nnU-Net's end-of-training validation: `nnunet-scd demo` predicts the validation "
            "cases with nnUNetv2_predict and evaluates them itself."
        )


# A checkpoint every epoch is what lets an interrupted demo resume (``--c``) from the last finished epoch.
class nnUNetTrainerSCD_Ti_demo(_NoFinalValidation, nnUNetTrainerSCD):
    vit_size = "Ti"
    recipe = _demo_recipe(DEFAULT.budget, _VIT)


class nnUNetTrainerUNETR_Ti_demo(_NoFinalValidation, nnUNetTrainerUNETR):
    vit_size = "Ti"
    recipe = _demo_recipe(DEFAULT.budget, _VIT)


class nnUNetTrainerSCD_Ti_demoQuick(nnUNetTrainerSCD_Ti_demo):
    recipe = _demo_recipe(QUICK.budget, _VIT)


class nnUNetTrainerUNETR_Ti_demoQuick(nnUNetTrainerUNETR_Ti_demo):
    recipe = _demo_recipe(QUICK.budget, _VIT)


class nnUNetTrainer_demo(_NoFinalValidation, RecipeTraining, SeededTraining, EpochTimeBreakdown, nnUNetTrainer):
    """Stock nnU-Net (network, loss, optimiser, schedule, deep supervision) with only the demo's length changed."""

    recipe = _demo_recipe(DEFAULT.budget, _STOCK)


class nnUNetTrainer_demoQuick(nnUNetTrainer_demo):
    recipe = _demo_recipe(QUICK.budget, _STOCK)


__all__ = defined_trainers(globals())
