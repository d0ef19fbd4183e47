from __future__ import annotations

import pytest
import torch

from nnunet_scd.model.stp import (
    SoftTopKPruning,
    TokenScorer,
    gaussian_perturbed_topk,
    gumbel_soft_topk,
    keep_count,
)


def test_keep_count_follows_the_paper_schedule():
    counts = [4096]
    for _ in range(3):
        counts.append(keep_count(counts[-1], 0.25))
    assert counts == [4096, 1024, 256, 64]
    assert [keep_count(n, 0.1) for n in (1728, 173, 17)] == [173, 17, 2]
    assert keep_count(3, 0.1) == 1  # never prunes everything


def test_scorer_maps_tokens_to_log_probabilities():
    scores = TokenScorer(16)(torch.randn(2, 10, 16))
    assert scores.shape == (2, 10)
    assert (scores <= 0).all()


def test_scorer_global_half_sees_the_whole_token_set():
    scorer = TokenScorer(16).eval()
    x = torch.randn(1, 10, 16)
    y = x.clone()
    y[:, 5:] = torch.randn(1, 5, 16)
    # Token 0 is unchanged, but its score moves because the global summary changed.
    assert not torch.allclose(scorer(x)[0, 0], scorer(y)[0, 0])


@pytest.mark.parametrize("sampler", [gumbel_soft_topk, gaussian_perturbed_topk])
def test_straight_through_mask_is_the_hard_indicator_in_the_forward_pass(sampler):
    scores = torch.randn(3, 50, requires_grad=True)
    order, mask = sampler(scores, 12)
    kept = torch.gather(mask, 1, order[:, :12])
    pruned = torch.gather(mask, 1, order[:, 12:])
    torch.testing.assert_close(kept, torch.ones_like(kept))
    torch.testing.assert_close(pruned, torch.zeros_like(pruned))
    assert sorted(order[0].tolist()) == list(range(50))


def test_gaussian_perturbed_topk_gradient_raises_the_odds_of_a_borderline_token():
    # Token 3 sits on the top-k boundary; raising its score must raise its inclusion probability.
    scores = torch.tensor([[0.5, 0.4, 0.3, 0.2, 0.1, 0.0]], requires_grad=True)
    _, mask = gaussian_perturbed_topk(scores, k=3, sigma=0.1, num_samples=2000)
    mask[0, 3].backward()
    assert scores.grad[0, 3] > 0
    assert scores.grad[0, 0] <= scores.grad[0, 3]


def test_eval_keeps_the_highest_scoring_tokens():
    stage = SoftTopKPruning(dim=16, keep_ratio=0.3).eval()
    x = torch.randn(2, 40, 16)
    positions = torch.arange(40).expand(2, 40)
    out = stage(x, positions)
    expected = stage.scorer(x).topk(12, dim=1).indices
    assert out.kept.shape == (2, 12, 16) and out.pruned.shape == (2, 28, 16)
    for b in range(2):
        assert set(out.kept_positions[b].tolist()) == set(expected[b].tolist())


def test_pruning_carries_original_positions_not_local_indices():
    stage = SoftTopKPruning(dim=8, keep_ratio=0.5).eval()
    positions = torch.tensor([[10, 20, 30, 40, 50, 60]])
    x = torch.randn(1, 6, 8)
    out = stage(x, positions)
    assert set(out.kept_positions[0].tolist()) | set(out.pruned_positions[0].tolist()) == {10, 20, 30, 40, 50, 60}
    for tokens, pos in ((out.kept, out.kept_positions), (out.pruned, out.pruned_positions)):
        for j, p in enumerate(pos[0].tolist()):
            torch.testing.assert_close(tokens[0, j], x[0, p // 10 - 1])


@pytest.mark.parametrize("keep_ratio", [0.0, -0.1, 1.5])
def test_keep_ratio_outside_unit_interval_is_rejected(keep_ratio):
    with pytest.raises(ValueError, match=r"keep ratio must be in \(0, 1\]"):
        SoftTopKPruning(dim=8, keep_ratio=keep_ratio)


def test_unknown_sampler_is_rejected():
    with pytest.raises(ValueError, match="sampler must be one of"):
        SoftTopKPruning(dim=8, keep_ratio=0.5, sampler="uniform")
