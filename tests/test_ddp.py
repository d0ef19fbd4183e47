"""Every shipped network trains under nnU-Net's multi-GPU wrapping: DistributedDataParallel without
``find_unused_parameters``, which fails at the second step when any parameter got no gradient.

Two ranks of a gloo process group on CPU, spawned as ``nnUNetv2_train -num_gpus 2`` spawns them.
The networks are built by the trainers' own ``build_network_architecture`` from a small plan.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from torch.nn.parallel import DistributedDataParallel

from nnunet_scd.nnunet.slim_plans import SLIM_PLANS_KEY
from nnunet_scd.search import mask_penalty
from nnunet_scd.trainers import catalog
from nnunet_scd.trainers.search import SearchTrainer, SlimTrainer
from nnunet_scd.unwrap import unwrap

PATCH, TOKENS, CLASSES = (8, 32, 32), (2, 8, 8), 3
# Widths a slim derivation can give the Tiny ViT (4 heads of 48, MLP 768): blocks without heads (their
# attention pruned away), an MLP pruned to nothing, heads of uneven width.
SLIM_WIDTHS = [
    {"head_dims": [48, 48, 48, 48], "mlp_hidden": 768},
    {"head_dims": [40, 40, 24], "mlp_hidden": 300},
    {"head_dims": [32], "mlp_hidden": 0},
    {"head_dims": [], "mlp_hidden": 120},
    {"head_dims": [], "mlp_hidden": 0},
    {"head_dims": [16, 16], "mlp_hidden": 8},
]
TRAINERS = [
    "nnUNetTrainerSCD_Tiny", "nnUNetTrainerUNETR_Tiny", "nnUNetTrainerSCD_MIM_Tiny",
    "nnUNetTrainerSCD_RandomPruning_Tiny", "nnUNetTrainerSCD_SharedSkips_Tiny", "nnUNetTrainerSCD_NoGuidance_Tiny",
    "nnUNetTrainerSCD_Zhou2023_Tiny", "nnUNetTrainerSCDSearch_Tiny", "nnUNetTrainerUNETRSearch_Tiny",
    "nnUNetTrainerSCDSlim_Tiny", "nnUNetTrainerSCDSlim_NoPixelClassifier_Tiny", "nnUNetTrainerUNETRSlim_Tiny",
]


def _trainer(name: str) -> type:
    return catalog.TRAINERS[name]


def _plans(trainer: type, base: dict) -> dict:
    plans = copy.deepcopy(base)
    if issubclass(trainer, SlimTrainer):
        plans["configurations"]["3d_fullres"][SLIM_PLANS_KEY] = {
            "budget": 0.5, "search_trainer": trainer.__name__.replace("Slim", "Search"), "source_plans": "nnUNetPlans",
            "network": json.loads(json.dumps(trainer.network_kwargs())), "blocks": SLIM_WIDTHS, "weights": "unused",
        }
    return plans


def _build(name: str, plans: dict) -> torch.nn.Module:
    trainer = _trainer(name)
    manager = PlansManager(_plans(trainer, plans))
    return trainer.build_network_architecture(manager, manager.get_configuration("3d_fullres"), 1, CLASSES, False)


def _loss(name: str, network: torch.nn.Module, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The trainers' training loss: the task loss, plus the scorers' guidance and the search masks' L1 penalty."""
    trainer = _trainer(name)
    loss = torch.nn.functional.cross_entropy(output, target)
    scd = unwrap(network, core=True)
    if trainer.guidance_weight and scd.scorer_logits:
        loss = loss + trainer.guidance_weight * scd.guidance_loss(target > 0)
    if issubclass(trainer, SearchTrainer):
        loss = loss + mask_penalty(unwrap(network), trainer.attn_penalty, trainer.mlp_penalty)
    return loss


@pytest.fixture
def plans(make_plans) -> dict:
    return make_plans(list(PATCH), [2.5, 0.8, 0.8], scd_tokens={"token_size": list(TOKENS),
                                                               "planned_patch_size": list(PATCH)})


def _train_two_steps(rank: int, world_size: int, init_file: str, names: list[str], plans: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        for name in names:
            torch.manual_seed(0)
            network = DistributedDataParallel(_build(name, plans))  # as nnU-Net wraps it: no find_unused_parameters
            optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
            for step in range(2):
                generator = torch.Generator().manual_seed(10 * rank + step)
                x = torch.randn(1, 1, *PATCH, generator=generator)
                target = torch.randint(0, CLASSES, (1, *PATCH), generator=generator)
                optimizer.zero_grad(set_to_none=True)
                try:
                    _loss(name, network, network(x), target).backward()
                except RuntimeError as error:
                    raise RuntimeError(f"{name}, step {step + 1}: {str(error).splitlines()[0]}") from error
                optimizer.step()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_every_shipped_network_trains_two_steps_under_ddp(tmp_path: Path, plans: dict) -> None:
    init_file = tmp_path / "rendezvous"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_train_two_steps, args=(2, str(init_file), TRAINERS, plans), nprocs=2, join=True)


def test_the_slim_plans_used_above_hold_blocks_without_heads_and_without_mlp(plans: dict) -> None:
    # The DDP test is only a test of head-less blocks if the network it trains has them.
    network = unwrap(_build("nnUNetTrainerSCDSlim_Tiny", plans), core=True)
    widths = [block.widths for block in network.blocks]
    assert widths == SLIM_WIDTHS
    assert any(not w["head_dims"] for w in widths) and any(w["mlp_hidden"] == 0 for w in widths)
