"""Joint-search and slim trainers: learn masks with the weights, then fine-tune the physically sliced subnet.

1. ``nnUNetTrainerSCDSearch`` trains the SCD network with learnable masks on every encoder block
   (head-dim channels shared by q/k/v, MLP neurons; tokens in the ``*Tokens`` trainers) and nnU-Net's
   loss plus an L1 penalty on the masks. Each epoch the mask statistics go to the log and
   ``mask_distribution.png`` to the fold folder.
2. ``nnunet-scd slim`` (``derive_slim``) derives widths at a budget, slices the weights and writes
   slim plans.
3. ``nnUNetTrainerSCDSlim -p <slim plans>`` rebuilds the sliced network from the plans (with the
   pixel classification module), starts from the sliced weights and fine-tunes; prediction with
   the same plans rebuilds it.

``SearchTrainer`` and ``SlimTrainer`` are ``ViTTrainer``s; a named search or slim trainer sets the
network it searches as the public trainers do (``keep_ratios``, ``vit_size``), and a search trainer
names the slim trainer that fine-tunes what it found (``slim_trainer``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunet_scd.nnunet.slim_plans import check_network_matches, sliced_weights_file, slim_record
from nnunet_scd.search import (
    LOGIT_LR_SCALE,
    WithPixelClassifier,
    apply_widths,
    load_sliced_state,
    mask_blocks,
    mask_parameters,
    mask_penalty,
    mask_statistics,
    token_masks,
)
from nnunet_scd.search.plot import plot_mask_distribution
from nnunet_scd.trainers.base import ViTTrainer
from nnunet_scd.trainers.public import nnUNetTrainerSCD
from nnunet_scd.unwrap import unwrap

__all__ = [
    "SearchTrainer",
    "SlimTrainer",
    "nnUNetTrainerSCDSearch",
    "nnUNetTrainerSCDSearchRankTokens",
    "nnUNetTrainerSCDSearchRankTokens_Tiny",
    "nnUNetTrainerSCDSearch_Tiny",
    "nnUNetTrainerSCDSlim",
    "nnUNetTrainerSCDSlim_NoPixelClassifier",
    "nnUNetTrainerSCDSlim_NoPixelClassifier_Tiny",
    "nnUNetTrainerSCDSlim_Tiny",
    "nnUNetTrainerUNETRSearch",
    "nnUNetTrainerUNETRSearchPositionTokens",
    "nnUNetTrainerUNETRSearchPositionTokens_Tiny",
    "nnUNetTrainerUNETRSearchRankTokens",
    "nnUNetTrainerUNETRSearchRankTokens_Tiny",
    "nnUNetTrainerUNETRSearch_Tiny",
    "nnUNetTrainerUNETRSlim",
    "nnUNetTrainerUNETRSlim_NoPixelClassifier_Tiny",
    "nnUNetTrainerUNETRSlim_Tiny",
]


class _PenalisedLoss:
    """nnU-Net's loss plus the mask L1 penalty while the network trains (validation loss stays comparable)."""

    def __init__(self, loss: Callable, network: nn.Module, attn_weight: float, mlp_weight: float,
                 token_weight: float) -> None:
        self.loss, self.network = loss, network
        self.weights = (attn_weight, mlp_weight, token_weight)

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.loss(output, target)
        if self.network.training:
            loss = loss + mask_penalty(self.network, *self.weights)
        return loss


class SearchTrainer(ViTTrainer):
    """Masks on every encoder block, trained with the weights under an L1 penalty (dense by default, as the base).

    The penalty weights are far below ViT-Slim's 1e-4, because nnU-Net's loss gives a mask a much
    smaller task gradient: at 1e-4 every mask falls alike and leaves no ranking to derive widths
    from (docs/joint-search.md).
    """

    attn_penalty: float = 2e-6
    mlp_penalty: float = 2e-6
    token_penalty: float = 2e-6
    # Token masks too (search.token_masks): "position" (dense networks only) or "rank"; None: channels only.
    token_mask: str | None = None
    # The slim trainer (class name) that fine-tunes the sliced result: the same network and recipe, no masks.
    slim_trainer: str | None = None

    @classmethod
    def build_network_architecture(
        cls,
        plans_manager: PlansManager,
        configuration_manager: ConfigurationManager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> nn.Module:
        return mask_blocks(cls.build_unmasked_network_architecture(
            plans_manager, configuration_manager, num_input_channels, num_output_channels, enable_deep_supervision
        ), token_mask=cls.token_mask)

    @classmethod
    def build_unmasked_network_architecture(
        cls,
        plans_manager: PlansManager,
        configuration_manager: ConfigurationManager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> nn.Module:
        """The network this trainer searches, without the masks: the reference ``nnunet-scd slim`` measures
        the sliced network against."""
        return super().build_network_architecture(
            plans_manager, configuration_manager, num_input_channels, num_output_channels, enable_deep_supervision
        )

    def configure_optimizers(self):  # noqa: ANN201 - nnU-Net's signature
        optimizer, scheduler = super().configure_optimizers()
        # Masks are 2-D for attention and would otherwise be weight-decayed; only the L1 penalty may shrink them.
        network = unwrap(self.network)
        masks = mask_parameters(network)
        mask_ids = {id(p) for p in masks}
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in mask_ids]
        tokens = token_masks(network)
        logits = [] if tokens is None else list(tokens.logits)
        logit_ids = {id(p) for p in logits}
        channel_masks = [p for p in masks if id(p) not in logit_ids]
        mask_lr_scale = self.recipe.optimizer.mask_lr_scale
        for params, lr_scale in ((channel_masks, mask_lr_scale), (logits, mask_lr_scale * LOGIT_LR_SCALE)):
            if params:
                optimizer.add_param_group({"params": params, "weight_decay": 0.0, "lr_scale": lr_scale,
                                           "lr": scheduler.lr_at(0) * lr_scale})
        self.print_to_log_file(
            f"Joint search: {len(channel_masks)} mask tensors without weight decay at {mask_lr_scale} x the "
            f"weights' learning rate; L1 weights attn {self.attn_penalty}, mlp {self.mlp_penalty}"
            + (f"; {self.token_mask} token masks at {mask_lr_scale * LOGIT_LR_SCALE:g} x, L1 weight "
               f"{self.token_penalty}" if logits else "")
        )
        return optimizer, scheduler

    def _build_loss(self):  # noqa: ANN202 - nnU-Net's signature
        return _PenalisedLoss(super()._build_loss(), unwrap(self.network), self.attn_penalty, self.mlp_penalty,
                              self.token_penalty)

    def on_epoch_end(self) -> None:
        if self.local_rank == 0:
            self._log_masks()
        super().on_epoch_end()

    def _log_masks(self) -> None:
        stats = mask_statistics(unwrap(self.network))
        for i, row in enumerate(stats):
            self.print_to_log_file(
                f"masks block {i}: attn mean {row['attn_mean']:.3f} [{row['attn_min']:.3f}, {row['attn_max']:.3f}] "
                f"<0.05: {row['attn_low']:.1%}; mlp mean {row['mlp_mean']:.3f} [{row['mlp_min']:.3f}, "
                f"{row['mlp_max']:.3f}] <0.05: {row['mlp_low']:.1%}"
                + (f"; token mean {row['token_mean']:.3f} [{row['token_min']:.3f}, {row['token_max']:.3f}] "
                   f"<0.05: {row['token_low']:.1%}" if "token_mean" in row else ""),
                also_print_to_console=False,
            )
        try:
            plot_mask_distribution(unwrap(self.network),
                                   os.path.join(self.output_folder, "mask_distribution.png"),
                                   title=f"{self.__class__.__name__}, epoch {self.current_epoch}")
        except Exception as error:  # a failed plot must never stop a training run
            self.print_to_log_file(f"mask distribution plot failed: {error}")


class SlimTrainer(ViTTrainer):
    """The sliced network from the plans' widths; starts from the sliced weights when training starts."""

    pixel_classifier: bool = True
    pixel_classifier_hidden: int = 16

    @classmethod
    def build_network_architecture(
        cls,
        plans_manager: PlansManager,
        configuration_manager: ConfigurationManager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> nn.Module:
        record = slim_record(configuration_manager.configuration, configuration_manager.data_identifier)
        check_network_matches(record, cls.network_kwargs(), cls.__name__)
        network = super().build_network_architecture(
            plans_manager, configuration_manager, num_input_channels, num_output_channels, enable_deep_supervision
        )
        apply_widths(network, record["blocks"], record.get("tokens"))
        return WithPixelClassifier(network, cls.pixel_classifier_hidden) if cls.pixel_classifier else network

    def initialize(self) -> None:
        fresh = not self.was_initialized
        super().initialize()
        if fresh:  # a checkpoint loaded later (--c, validation) overrides these weights, as it should
            record = slim_record(self.configuration_manager.configuration)
            path = sliced_weights_file(self.preprocessed_dataset_folder_base, record, self.fold)
            sliced = torch.load(path, map_location=self.device, weights_only=True)
            load_sliced_state(unwrap(self.network, core=True), sliced, str(path))
            self.print_to_log_file(
                f"Slim network (budget {record['budget']}, from {record['search_trainer']}): started from the "
                f"sliced weights {path}; pixel classifier {'on' if self.pixel_classifier else 'off'}; widths "
                f"{record['blocks']}"
            )


# ---------------------------------------------------------------------- search
class nnUNetTrainerSCDSearch(SearchTrainer):
    """SCD (ViT-B, token pruning) with learnable channel/neuron masks and their L1 penalty."""

    keep_ratios = nnUNetTrainerSCD.keep_ratios
    slim_trainer = "nnUNetTrainerSCDSlim"


class nnUNetTrainerSCDSearch_Tiny(nnUNetTrainerSCDSearch):
    vit_size = "Tiny"
    slim_trainer = "nnUNetTrainerSCDSlim_Tiny"


class nnUNetTrainerUNETRSearch(SearchTrainer):
    """Dense UNETR with the search masks: slim without token pruning."""

    slim_trainer = "nnUNetTrainerUNETRSlim"


class nnUNetTrainerUNETRSearch_Tiny(nnUNetTrainerUNETRSearch):
    vit_size = "Tiny"
    slim_trainer = "nnUNetTrainerUNETRSlim_Tiny"


# Token masks, the third dimension: per grid position (dense networks only) or per rank in the selection's order.
class nnUNetTrainerSCDSearchRankTokens(nnUNetTrainerSCDSearch):
    token_mask = "rank"


class nnUNetTrainerSCDSearchRankTokens_Tiny(nnUNetTrainerSCDSearch_Tiny):
    token_mask = "rank"


class nnUNetTrainerUNETRSearchPositionTokens(nnUNetTrainerUNETRSearch):
    token_mask = "position"


class nnUNetTrainerUNETRSearchPositionTokens_Tiny(nnUNetTrainerUNETRSearch_Tiny):
    token_mask = "position"


class nnUNetTrainerUNETRSearchRankTokens(nnUNetTrainerUNETRSearch):
    token_mask = "rank"


class nnUNetTrainerUNETRSearchRankTokens_Tiny(nnUNetTrainerUNETRSearch_Tiny):
    token_mask = "rank"


# ---------------------------------------------------------------------- slim
class nnUNetTrainerSCDSlim(SlimTrainer):
    """Fine-tunes the sliced SCD network (with the pixel classification module) from the sliced weights."""

    keep_ratios = nnUNetTrainerSCD.keep_ratios


class nnUNetTrainerSCDSlim_NoPixelClassifier(nnUNetTrainerSCDSlim):
    pixel_classifier = False


class nnUNetTrainerSCDSlim_Tiny(nnUNetTrainerSCDSlim):
    vit_size = "Tiny"


class nnUNetTrainerSCDSlim_NoPixelClassifier_Tiny(nnUNetTrainerSCDSlim_Tiny):
    pixel_classifier = False


class nnUNetTrainerUNETRSlim(SlimTrainer):
    """Fine-tunes the sliced dense UNETR (slim without token pruning)."""


class nnUNetTrainerUNETRSlim_Tiny(nnUNetTrainerUNETRSlim):
    vit_size = "Tiny"


class nnUNetTrainerUNETRSlim_NoPixelClassifier_Tiny(nnUNetTrainerUNETRSlim_Tiny):
    pixel_classifier = False
