"""Class-balanced quotas: the per-class presence target, the quota each predicted-present class keeps, and
per-class enrichment. The quotas choose from the scorer's predictions alone, never from the label."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nnunet_scd import SCDNet
from nnunet_scd.model.guidance import class_presence, enrichment, enrichment_counts, foreground_guidance_loss
from nnunet_scd.model.quota import quota_tokens
from nnunet_scd.model.stp import SoftTopKPruning
from nnunet_scd.trainers import catalog as tr
from nnunet_scd.trainers.recipe import LENGTHS


def _class_logits(num_tokens: int, present: dict[int, list[int]], num_classes: int = 3) -> torch.Tensor:
    """(1, N, C) presence log-odds: -4 everywhere; each class's listed tokens at +4, +3.9, ... (best first)."""
    logits = torch.full((1, num_tokens, num_classes), -4.0)
    for c, tokens in present.items():
        logits[0, tokens, c] = 4.0 - 0.1 * torch.arange(len(tokens), dtype=torch.float32)
    return logits


def test_class_presence_marks_the_cells_holding_each_class() -> None:
    classes = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    classes[0, 0, 0, 1] = True  # class 0 in token (0, 0)
    classes[0, 1, 3, 3] = True  # class 1 in token (1, 1)
    classes[0, 1, 1, 1] = True  # and in token (0, 0): classes may share a token
    presence = class_presence(classes, (2, 2))
    assert presence.shape == (1, 4, 2)
    assert presence[0].tolist() == [[True, True], [False, False], [False, False], [False, True]]


def test_presence_loss_is_per_class_bce_and_skips_tokens_without_annotation() -> None:
    logits = [torch.tensor([[[2.0, -1.0], [0.5, 0.0], [-2.0, 3.0]]])]  # (B, N_s, C) for grid positions 0, 2, 3
    positions = [torch.tensor([[0, 2, 3]])]
    target = torch.tensor([[[True, False], [False, False], [False, True], [True, True]]])  # (B, N, C)
    expected = F.binary_cross_entropy_with_logits(logits[0], target[:, [0, 2, 3]].float())
    torch.testing.assert_close(foreground_guidance_loss(logits, positions, target), expected)
    valid = torch.tensor([[True, True, False, True]])  # grid position 2 holds only ignore-label voxels
    kept_rows = logits[0][:, [0, 2]]
    expected_valid = F.binary_cross_entropy_with_logits(kept_rows, target[:, [0, 3]].float())
    torch.testing.assert_close(foreground_guidance_loss(logits, positions, target, valid), expected_valid)


def test_each_predicted_present_class_gets_an_even_share_of_its_best_tokens() -> None:
    # Class 0: a large organ over tokens 0-7; class 1: a small one on tokens 10, 11, 12; class 2: predicted absent.
    logits = _class_logits(16, {0: list(range(8)), 1: [10, 11, 12]})
    assert quota_tokens(logits, 4)[0].nonzero().flatten().tolist() == [0, 1, 10, 11]
    # The fifth place goes to the class predicted smallest.
    assert quota_tokens(logits, 5)[0].nonzero().flatten().tolist() == [0, 1, 10, 11, 12]
    # One place for two classes: the small one takes it.
    assert quota_tokens(logits, 1)[0].nonzero().flatten().tolist() == [10]
    assert not quota_tokens(torch.full((2, 16, 3), -1.0), 4).any()  # nothing predicted present: no quota


def test_a_token_in_two_classes_shares_counts_once_for_each() -> None:
    logits = _class_logits(8, {0: [3, 0], 1: [3, 5]}, num_classes=2)
    assert quota_tokens(logits, 4)[0].nonzero().flatten().tolist() == [0, 3, 5]


def _stage_with_logits(monkeypatch: pytest.MonkeyPatch, keep: torch.Tensor, classes: torch.Tensor,
                       **kwargs) -> SoftTopKPruning:
    stage = SoftTopKPruning(dim=8, keep_ratio=0.25, class_quota=0.5, quota_classes=classes.shape[-1], **kwargs)
    monkeypatch.setattr(stage.scorer, "split_logits", lambda x: (keep.expand(x.shape[0], -1), classes))
    return stage


@pytest.mark.parametrize("training", [False, True])
def test_the_kept_set_holds_every_class_quota_and_the_score_ranks_the_rest(monkeypatch: pytest.MonkeyPatch,
                                                                            training: bool) -> None:
    # 64 tokens, keep 16: the score prefers tokens 0-31 (a large organ), so the small organ (class 1, tokens 40-45)
    # would lose every place; with quota 8 of 16 each present class keeps its 4 best tokens.
    keep_logits = torch.where(torch.arange(64) < 32, 5.0, -5.0)[None]
    classes = _class_logits(64, {0: list(range(20, 32)), 1: [40, 41, 42, 43, 44, 45]}, num_classes=2)
    stage = _stage_with_logits(monkeypatch, keep_logits, classes, sampler="topk").train(training)
    out = stage(torch.randn(1, 64, 8), torch.arange(64)[None])
    kept = set(out.kept_positions[0].tolist())
    assert len(kept) == 16 and {20, 21, 22, 23, 40, 41, 42, 43} <= kept
    assert kept - {40, 41, 42, 43} <= set(range(32))  # the rest by the keep score


def test_quota_training_keeps_the_quota_and_passes_gradient_to_the_scorer() -> None:
    stage = SoftTopKPruning(dim=8, keep_ratio=0.25, class_quota=0.5, quota_classes=3).train()
    x = torch.randn(2, 64, 8, requires_grad=True)
    out = stage(x, torch.arange(64).expand(2, 64))
    assert out.class_logits.shape == (2, 64, 3)
    chosen = quota_tokens(out.class_logits.detach(), 8)
    for b in range(2):
        assert set(chosen[b].nonzero().flatten().tolist()) <= set(out.kept_positions[b].tolist())
    # Straight-through: the forward values are the tokens themselves, the backward reaches the scorer.
    assert torch.allclose(out.kept, torch.gather(x, 1, out.kept_positions[..., None].expand(-1, -1, 8)))
    out.kept.sum().backward()
    assert stage.scorer.head[-1].weight.grad[0].abs().sum() > 0


def test_topk_training_with_quotas_keeps_the_inference_set() -> None:
    stage = SoftTopKPruning(dim=8, keep_ratio=0.25, sampler="topk", class_quota=0.5, quota_classes=3)
    x, positions = torch.randn(2, 64, 8), torch.arange(64).expand(2, 64)
    assert torch.equal(stage.train()(x, positions).kept_positions, stage.eval()(x, positions).kept_positions)


def test_quotas_and_context_share_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    keep_logits = torch.where(torch.arange(64) < 32, 5.0, -5.0)[None]
    classes = _class_logits(64, {0: [50, 51, 52, 53, 54, 55, 56, 57]}, num_classes=1)
    stage = _stage_with_logits(monkeypatch, keep_logits, classes, context_fraction=0.25).eval()
    priority = torch.arange(64.0).flip(0)[None]  # tokens 0-3 are the best spread
    out = stage(torch.randn(1, 64, 8), torch.arange(64)[None], priority)
    assert out.kept_positions[0, :4].tolist() == [0, 1, 2, 3]
    assert set(range(50, 58)) <= set(out.kept_positions[0].tolist())  # quota 8 of 16 after context 4


def test_quota_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="class quotas need at least one class"):
        SoftTopKPruning(dim=8, keep_ratio=0.5, class_quota=0.5)
    with pytest.raises(ValueError, match="class_quota must be in"):
        SoftTopKPruning(dim=8, keep_ratio=0.5, class_quota=0.8, context_fraction=0.25, quota_classes=2)
    with pytest.raises(ValueError, match="has no scorer, so leave class_quota at 0"):
        SCDNet(1, 3, (8, 32, 32), (2, 4, 4), embed_dim=32, depth=4, num_heads=2, token_selection="evenly",
               class_quota=0.5)
    with pytest.raises(ValueError, match="class quotas need 1 to num_classes=1 quota classes"):
        SCDNet(1, 1, (8, 32, 32), (2, 4, 4), embed_dim=32, depth=4, num_heads=2, class_quota=0.5)


def test_a_quota_network_predicts_from_the_image_and_learns_presence_from_the_label(tiny_scdnet) -> None:
    net = tiny_scdnet(1, 3, (8, 32, 32), (2, 4, 4), class_quota=0.5)
    assert net.quota_classes == 2 and net.label_channels == 0
    assert tiny_scdnet(1, 3, (8, 32, 32), (2, 4, 4), class_quota=0.5, quota_classes=3).quota_classes == 3  # regions
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 8, 32, 32)).shape == (1, 3, 8, 32, 32)
    net.train()
    net(torch.randn(2, 1, 8, 32, 32))
    assert [c.shape[-1] for c in net.scorer_class_logits] == [2, 2, 2]
    classes = torch.zeros(2, 2, 8, 32, 32, dtype=torch.bool)
    classes[:, 0, :, :16] = True
    classes[:, 1, 2:4, 20:24, 20:24] = True
    foreground = classes.any(1)
    with pytest.raises(ValueError, match="learn from"):
        net.guidance_loss(foreground)
    loss = net.guidance_loss(foreground, classes=classes)
    loss.backward()
    class_rows = net.pruning[0].scorer.head[-1].weight.grad[1:]
    assert torch.isfinite(loss) and class_rows.abs().sum(dim=1).gt(0).all()


def test_quota_free_networks_keep_their_state_dict_keys_and_shapes(tiny_scdnet) -> None:
    plain = tiny_scdnet(1, 3, (8, 32, 32), (2, 4, 4))
    assert plain.pruning[0].scorer.head[-1].weight.shape == (1, 8)
    assert plain.quota_classes == 0 and plain.scorer_class_logits == []


def test_per_class_enrichment_on_a_known_label() -> None:
    # 10 tokens; class 0 in tokens 0-4 (half the grid), class 1 in token 9 only, class 2 nowhere.
    presence = torch.zeros(1, 10, 3, dtype=torch.bool)
    presence[0, :5, 0] = True
    presence[0, 9, 1] = True
    kept = [torch.tensor([[0, 9]]), torch.tensor([[0]])]
    counts = enrichment_counts(kept, presence)
    assert counts.shape == (2, 3, 4)
    stage_1, stage_2 = enrichment(counts)
    assert stage_1[:2] == [pytest.approx(1.0), pytest.approx(5.0)]  # (1/2) / (5/10) and (1/2) / (1/10)
    assert stage_2[:2] == [pytest.approx(2.0), pytest.approx(0.0)]
    assert all(torch.isnan(torch.tensor(s[2])) for s in (stage_1, stage_2))  # class absent


def test_class_quota_trainers_change_only_the_quota() -> None:
    cls = tr.nnUNetTrainerSCD_ClassQuota_Tiny
    assert cls.network_kwargs() == {**tr.nnUNetTrainerSCD_Tiny.network_kwargs(), "class_quota": 0.5}
    for name in ("nnUNetTrainerSCD_ClassQuota_Tiny_converge", "nnUNetTrainerSCD_ClassQuota_keep0p1_Tiny_converge"):
        variant = getattr(tr, name)
        assert variant.recipe == LENGTHS["converge"].apply(cls.recipe) and issubclass(variant, cls)
    assert tr.nnUNetTrainerSCD_ClassQuota_keep0p1_Tiny_converge.keep_ratios == (0.1, 0.1, 0.1)


def test_class_quota_arms_are_in_the_convergence_study() -> None:
    from nnunet_scd.studies.convergence import CONVERGENCE

    assert CONVERGENCE.arm("quota").trainer == "nnUNetTrainerSCD_ClassQuota_Tiny_converge"
    assert CONVERGENCE.arm("quota@0.1").keep == 0.1
