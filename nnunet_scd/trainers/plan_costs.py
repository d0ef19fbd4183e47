"""What a trainer builds from a plans configuration: patch, tokens and forward FLOPs, for comparing plans."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_scd.measure import count_flops
from nnunet_scd.trainers.base import ViTTrainer
from nnunet_scd.trainers.catalog import TRAINERS

__all__ = ["PlanCost", "plan_cost", "trainer_class"]


@dataclass(frozen=True)
class PlanCost:
    """The network one trainer builds on one configuration of one plans file."""

    plans_name: str
    configuration: str
    spacing: tuple[float, ...]
    patch_size: tuple[int, ...]
    token_size: tuple[int, ...]
    num_tokens: int
    gflops: float  # one eval-mode forward pass of one patch


def trainer_class(name: str) -> type[ViTTrainer]:
    """The ViT trainer class called ``name``, or a ValueError naming the choices."""
    cls = TRAINERS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, ViTTrainer)):
        raise ValueError(f"{name!r} is not an nnunet-scd ViT trainer; use one of nnunet_scd.trainers.catalog, e.g. "
                         "nnUNetTrainerSCD or nnUNetTrainerSCD_Tiny")
    return cls


def plan_cost(plans: dict[str, Any], dataset_json: dict[str, Any], configuration: str,
              trainer: type[ViTTrainer]) -> PlanCost:
    """Patch, tokens and GFLOPs of the network ``trainer`` builds for ``configuration`` of ``plans``.

    The trainer's own ``token_config`` and ``build_network_architecture`` run, so default plans get
    the trainer's adjustment and SCD plans their recorded tokens, as in training. The network is
    built and counted on the meta device: no weights are allocated and no arithmetic runs.
    """
    manager = PlansManager(copy.deepcopy(plans))
    if configuration not in manager.available_configurations:
        raise ValueError(f"plans {manager.plans_name} have no configuration {configuration!r}; they have "
                         f"{list(manager.available_configurations)}")
    config = manager.get_configuration(configuration)
    tokens = trainer.token_config(config, configuration)
    channels = determine_num_input_channels(manager, config, dataset_json)
    classes = manager.get_label_manager(dataset_json).num_segmentation_heads
    with torch.device("meta"):
        network = trainer.build_network_architecture(manager, config, channels, classes, False)
    flops = count_flops(network, (1, channels, *tokens.patch_size))
    return PlanCost(manager.plans_name, configuration, tuple(float(s) for s in config.spacing), tokens.patch_size,
                    tokens.token_size, tokens.num_tokens, flops / 1e9)
