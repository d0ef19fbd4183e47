"""The oracle arm: it keeps exactly the tokens with the most ground-truth foreground, and sees the label everywhere
nnU-Net runs it on labelled data."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_scd.model.stp import PriorityTokenPruning
from nnunet_scd.trainers import catalog as tr
from nnunet_scd.trainers.label_channel import dataset_with_label_channel, with_label_channel

DATASET_JSON = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "spleen": 2},
                "numTraining": 4, "file_ending": ".nii.gz"}


def _known_label() -> torch.Tensor:
    """(1, 1, 4, 16, 16) label on a (2, 4, 4) token grid of (2, 4, 4) tokens: four tokens with 32, 16, 8 and 1
    foreground voxels, every other token empty."""
    label = torch.zeros(1, 1, 4, 16, 16)
    label[..., :2, :4, :4] = 1  # token 0: 32 voxels
    label[..., :2, 4:8, :2] = 1  # token 4: 16 voxels
    label[..., 2:, 8:12, 0] = 1  # token 24: 8 voxels
    label[..., 3, 15, 15] = 1  # token 31: 1 voxel
    return label


@pytest.mark.parametrize("training", [False, True])
def test_oracle_stage_keeps_the_tokens_with_the_most_foreground_in_order(training: bool) -> None:
    stage = PriorityTokenPruning(keep_ratio=0.125).train(training)  # 4 of 32
    counts = torch.zeros(2, 32)
    counts[:, [0, 4, 24, 31]] = torch.tensor([32.0, 16.0, 8.0, 1.0])
    counts[1, 7] = 20.0  # the second image's ranking differs
    out = stage(torch.randn(2, 32, 8), torch.arange(32).expand(2, 32), counts)
    assert out.kept_positions[0].tolist() == [0, 4, 24, 31]
    assert out.kept_positions[1].tolist() == [0, 7, 4, 24]
    assert sorted(out.kept_positions[0].tolist() + out.pruned_positions[0].tolist()) == list(range(32))


def test_oracle_breaks_ties_among_empty_tokens_at_random_seeded_at_inference() -> None:
    stage = PriorityTokenPruning(keep_ratio=0.5, seed=3).eval()
    x, positions, counts = torch.randn(1, 32, 8), torch.arange(32)[None], torch.zeros(1, 32)
    first = stage(x, positions, counts).kept_positions
    assert torch.equal(first, stage(x, positions, counts).kept_positions)  # the same set in every tile
    assert first[0].tolist() != list(range(16))  # not the first tokens of the grid


def test_oracle_scdnet_keeps_the_known_set_at_every_stage(tiny_scdnet) -> None:
    net = tiny_scdnet(1, 3, (4, 16, 16), (2, 4, 4), keep_ratios=(0.125, 0.75, 0.67), token_selection="oracle").eval()
    with torch.no_grad():
        out = net(torch.cat([torch.randn(1, 1, 4, 16, 16), _known_label()], dim=1))
    assert out.shape == (1, 3, 4, 16, 16)
    assert [k[0].tolist() for k in net.kept_indices] == [[0, 4, 24, 31], [0, 4, 24], [0, 4]]


def test_oracle_scdnet_without_the_label_channel_says_it_cannot_predict_unlabelled_images(tiny_scdnet) -> None:
    net = tiny_scdnet(1, 3, (4, 16, 16), (2, 4, 4), token_selection="oracle").eval()
    with pytest.raises(ValueError, match="oracle.*cannot predict unlabelled images"):
        net(torch.randn(1, 1, 4, 16, 16))


def test_dense_network_has_no_label_channel(tiny_scdnet) -> None:
    net = tiny_scdnet(1, 3, (4, 16, 16), (2, 4, 4), keep_ratios=None, token_selection="oracle")
    assert net.label_channels == 0 and net(torch.randn(1, 1, 4, 16, 16)).shape == (1, 3, 4, 16, 16)


def test_label_channel_of_a_batch_is_the_targets_foreground_without_the_ignore_label() -> None:
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    target = torch.tensor([0, 1, 2, 3]).float().reshape(1, 1, 1, 2, 2)
    manager = LabelManager({"background": 0, "liver": 1, "spleen": 2, "ignore": 3}, regions_class_order=None)
    batch = with_label_channel({"data": torch.randn(1, 1, 1, 2, 2), "target": target}, manager)
    assert batch["data"].shape == (1, 2, 1, 2, 2)
    assert batch["data"][0, 1].flatten().tolist() == [0.0, 1.0, 1.0, 0.0]


def test_final_validation_dataset_appends_the_cases_foreground() -> None:
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    class FakeDataset:
        def load_case(self, identifier: str):
            seg = np.array([[[[-1, 0], [1, 2]]]], dtype=np.int8)  # -1: outside nnU-Net's nonzero mask
            return np.ones((1, 1, 2, 2), dtype=np.float32), seg, None, {"id": identifier}

    dataset = dataset_with_label_channel(FakeDataset, LabelManager({"background": 0, "a": 1, "b": 2}, None))()
    data, seg, _, properties = dataset.load_case("case_0")
    assert data.shape == (2, 1, 2, 2) and properties == {"id": "case_0"}
    assert data[1].flatten().tolist() == [0.0, 0.0, 1.0, 1.0]


def test_oracle_trainer_trains_and_validates_on_the_label_channel(nnunet_env: Path, make_plans) -> None:
    plans = make_plans([8, 16, 16], [1.0, 1.0, 1.0])
    plans["continue_training"] = False
    trainer = tr.nnUNetTrainerSCD_Oracle_Tiny(plans, "3d_fullres", 0, copy.deepcopy(DATASET_JSON), torch.device("cpu"))
    assert trainer.network_kwargs() == {**tr.nnUNetTrainerSCD_Tiny.network_kwargs(), "token_selection": "oracle"}
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(trainer.plans_manager.plans)
    trainer.network = trainer.build_network_architecture(manager, manager.get_configuration("3d_fullres"), 1, 3)
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    trainer.loss = trainer._build_loss()
    target = torch.zeros(2, 1, 8, 16, 16)
    target[:, :, :4, :8, :8] = 1  # one token of 4 x 8 x 8 (the Tiny grid at 1 mm is 2 x 2 x 2 tokens)
    batch = {"data": torch.randn(2, 1, 8, 16, 16), "target": target}
    assert np.isfinite(trainer.train_step(batch)["loss"])
    trainer.validation_step(batch)
    assert all(k[:, 0].tolist() == [0, 0] for k in trainer.network.kept_indices)
