"""Foreground guidance, enrichment, random pruning, and a scorer that must learn which tokens matter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nnunet_scd.model.guidance import enrichment, enrichment_counts, foreground_guidance_loss, token_foreground
from nnunet_scd.model.stp import RandomTokenPruning, SoftTopKPruning


def test_token_foreground_marks_cells_with_any_foreground_voxel():
    voxels = torch.zeros(1, 4, 8, 8, dtype=torch.bool)
    voxels[0, 3, 7, 0] = True  # one voxel in the last z-row of cells, last y cell, first x cell
    cells = token_foreground(voxels, (2, 4, 4))  # grid 2 x 2 x 2, C order
    assert cells.shape == (1, 8)
    assert cells[0].nonzero().flatten().tolist() == [1 * 4 + 1 * 2 + 0]
    assert token_foreground(torch.ones(2, 8, 8, dtype=torch.bool), (4, 4)).all()


def test_guidance_loss_is_bce_on_the_scored_tokens_and_skips_unannotated_ones():
    foreground = torch.tensor([[True, False, True, False]])
    logits = [torch.tensor([[3.0, -3.0, 0.0]])]
    positions = [torch.tensor([[0, 1, 3]])]
    expected = F.binary_cross_entropy_with_logits(logits[0], torch.tensor([[1.0, 0.0, 0.0]]))
    torch.testing.assert_close(foreground_guidance_loss(logits, positions, foreground), expected)
    valid = torch.tensor([[True, True, True, False]])  # position 3 holds only ignore-label voxels
    expected_valid = F.binary_cross_entropy_with_logits(logits[0][:, :2], torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(foreground_guidance_loss(logits, positions, foreground, valid), expected_valid)
    assert foreground_guidance_loss([], [], foreground) == 0


def test_enrichment_is_one_for_a_random_choice_and_one_over_keep_for_a_perfect_one():
    foreground = torch.zeros(4, 100, dtype=torch.bool)
    foreground[:, :10] = True
    perfect = [torch.arange(10).expand(4, 10)]
    assert enrichment(enrichment_counts(perfect, foreground)) == [pytest.approx(10.0)]
    generator = torch.Generator().manual_seed(0)
    draws = [torch.rand(4, 100, generator=generator).argsort(1)[:, :25] for _ in range(200)]
    pooled = sum(enrichment_counts([d], foreground) for d in draws)
    assert enrichment(pooled)[0] == pytest.approx(1.0, abs=0.05)
    none = torch.zeros(1, 10, dtype=torch.bool)
    assert torch.isnan(torch.tensor(enrichment(enrichment_counts([torch.tensor([[0, 1]])], none))[0]))


def test_random_pruning_is_seeded_at_inference_and_fresh_in_training():
    stage = RandomTokenPruning(keep_ratio=0.25)
    x, positions = torch.randn(2, 40, 8), torch.arange(40).expand(2, 40)
    assert not list(stage.parameters())
    stage.eval()
    first, second = stage(x, positions), stage(x, positions)
    assert torch.equal(first.kept_positions, second.kept_positions) and first.logits is None
    assert first.kept.shape == (2, 10, 8) and first.pruned.shape == (2, 30, 8)
    stage.train()
    draws = {tuple(stage(x, positions).kept_positions[0].tolist()) for _ in range(5)}
    assert len(draws) > 1


def test_random_pruning_network_has_no_scorer_and_no_guidance(tiny_scdnet):
    net = tiny_scdnet(1, 2, (16, 32, 32), (4, 8, 8), keep_ratios=(0.5, 0.5, 0.5), token_selection="random")
    assert not any("scorer" in name for name, _ in net.named_parameters())
    net(torch.randn(2, 1, 16, 32, 32))
    assert [k.shape[1] for k in net.kept_indices] == [32, 16, 8] and net.scorer_logits == []
    assert net.guidance_loss(torch.ones(2, 16, 32, 32, dtype=torch.bool)) == 0
    with pytest.raises(ValueError, match="token_selection must be one of"):
        tiny_scdnet(1, 2, (16, 32, 32), (4, 8, 8), token_selection="uniform")


def test_scorer_and_sampler_run_in_fp32_under_autocast():
    stage = SoftTopKPruning(dim=16, keep_ratio=0.5)
    x = torch.randn(2, 20, 16, dtype=torch.bfloat16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = stage(x, torch.arange(20).expand(2, 20))
        out.kept.float().sum().backward()
    assert out.logits.dtype == torch.float32 and out.kept.dtype == torch.bfloat16
    assert stage.scorer.head[-1].weight.grad.abs().sum() > 0


def test_a_network_with_a_pending_graph_can_still_be_copied(tiny_scdnet):
    import copy

    net = tiny_scdnet(1, 2, (16, 32, 32), (4, 8, 8), keep_ratios=(0.5, 0.5, 0.5))
    net(torch.randn(1, 1, 16, 32, 32))
    assert len(net.scorer_logits) == 3 and net.scorer_logits[0].requires_grad
    clone = copy.deepcopy(net)
    assert clone.scorer_logits == [] and len(net.scorer_logits) == 3
    torch.testing.assert_close(clone.state_dict()["pruning.0.scorer.head.4.weight"],
                               net.state_dict()["pruning.0.scorer.head.4.weight"])
