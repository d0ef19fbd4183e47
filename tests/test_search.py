from __future__ import annotations

import copy
import re

import pytest
import torch

from nnunet_scd import SCDNet
from nnunet_scd.measure import count_flops
from nnunet_scd.search import (
    SlimAttention,
    SlimBlock,
    WithPixelClassifier,
    apply_widths,
    block_widths,
    check_budget,
    derive_keep,
    global_keep,
    keep_widths,
    load_sliced_state,
    mask_blocks,
    mask_penalty,
    masked_blocks,
    slice_blocks,
)
from nnunet_scd.search.derive import uniform_heads
from nnunet_scd.search.measure import encoder_modules


@pytest.fixture
def make_net(tiny_scdnet):
    """An SCDNet in eval mode, wider than the tiny one (head_dim 12, MLP 192) so slicing has channels to cut."""
    def make(keep_ratios=(0.5, 0.5, 0.5), **kwargs) -> SCDNet:
        return tiny_scdnet(1, 3, (16, 32, 32), (4, 8, 8), keep_ratios=keep_ratios,
                           **{"embed_dim": 48, "num_heads": 4, **kwargs}).eval()
    return make


def _randomise_masks(net: torch.nn.Module) -> None:
    with torch.no_grad():
        for block in masked_blocks(net):
            block.attn.head_mask.uniform_(0.2, 1.5)
            block.mlp.neuron_mask.uniform_(0.2, 1.5)


def _zero_pruned(net: torch.nn.Module, keep) -> None:
    with torch.no_grad():
        for block, (keep_attn, keep_mlp) in zip(masked_blocks(net), keep):
            block.attn.head_mask[~keep_attn] = 0
            block.mlp.neuron_mask[~keep_mlp] = 0


def test_masked_blocks_with_unit_masks_reproduce_the_dense_network(make_net):
    net = make_net(keep_ratios=None)
    x = torch.randn(2, 1, 16, 32, 32)
    dense = net(x)
    mask_blocks(net)
    torch.testing.assert_close(net(x), dense, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("keep_ratios", [None, (0.5, 0.5, 0.5)])
def test_slicing_is_exact_when_pruned_masks_are_zero(keep_ratios, make_net):
    net = mask_blocks(make_net(keep_ratios))
    _randomise_masks(net)
    keep = derive_keep(net, 0.6)
    _zero_pruned(net, keep)
    x = torch.randn(2, 1, 16, 32, 32)
    masked_out = net(x)
    sliced = slice_blocks(copy.deepcopy(net), keep)
    assert all(b.attn.head_mask is None for b in sliced.blocks)
    torch.testing.assert_close(sliced(x), masked_out, atol=1e-5, rtol=1e-4)


def test_sliced_blocks_keep_no_zeroed_weights(make_net):
    net = mask_blocks(make_net(None))
    _randomise_masks(net)
    keep = derive_keep(net, 0.5)
    slice_blocks(net, keep)
    for block, (keep_attn, keep_mlp) in zip(net.blocks, keep):
        assert block.attn.qkv.out_features == 3 * int(keep_attn.sum())
        assert block.attn.proj.in_features == int(keep_attn.sum())
        assert block.mlp.fc1.out_features == int(keep_mlp.sum()) == block.mlp.fc2.in_features


def test_uneven_head_widths_match_a_per_head_reference():
    attn = SlimAttention(16, [5, 5, 3, 1], scale=0.25).eval()
    x = torch.randn(2, 7, 16)
    q, k, v = attn.qkv(x).split(attn.inner_dim, dim=-1)
    outs, start = [], 0
    for width in attn.head_dims:
        qh, kh, vh = (t[..., start:start + width] for t in (q, k, v))
        weights = torch.softmax(qh @ kh.transpose(1, 2) * 0.25, dim=-1)
        outs.append(weights @ vh)
        start += width
    torch.testing.assert_close(attn(x), attn.proj(torch.cat(outs, dim=-1)), atol=1e-5, rtol=1e-5)


def test_equal_head_widths_must_be_adjacent_and_positive():
    with pytest.raises(ValueError, match="adjacent"):
        SlimAttention(16, [4, 2, 4])
    with pytest.raises(ValueError, match="positive"):
        SlimAttention(16, [4, 0])


def test_a_block_whose_heads_and_neurons_are_all_pruned_still_runs():
    block = SlimBlock(16, [], 0, scale=0.5)
    x = torch.randn(2, 5, 16)
    assert block(x).shape == x.shape


def test_a_block_without_heads_keeps_no_attention_input_and_every_parameter_gets_a_gradient():
    # Regression: its norm1 and attn.qkv got no gradient, so nnU-Net's DDP failed at the second step.
    block = SlimBlock(16, [], 3, scale=0.5)
    assert block.attn.qkv is None and not list(block.norm1.parameters())
    block(torch.randn(2, 5, 16)).square().sum().backward()
    assert [n for n, p in block.named_parameters() if p.grad is None] == []
    assert {n for n, _ in block.named_parameters()} == {
        "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
        "mlp.fc2.weight", "mlp.fc2.bias"}


def _slice_with_a_headless_block(net: torch.nn.Module, block: int = 2) -> list:
    keep = derive_keep(net, 0.6)
    keep[block] = (torch.zeros_like(keep[block][0]), keep[block][1])
    _zero_pruned(net, keep)
    return keep


def test_slicing_away_every_head_of_a_block_stays_exact(make_net):
    net = mask_blocks(make_net())
    _randomise_masks(net)
    keep = _slice_with_a_headless_block(net)
    x = torch.randn(2, 1, 16, 32, 32)
    masked_out = net(x)
    sliced = slice_blocks(copy.deepcopy(net), keep)
    assert sliced.blocks[2].widths["head_dims"] == [] and isinstance(sliced.blocks[2].norm1, torch.nn.Identity)
    torch.testing.assert_close(sliced(x), masked_out, atol=1e-5, rtol=1e-4)


def test_weights_saved_while_head_less_blocks_had_norm1_and_qkv_still_load(make_net):
    net = mask_blocks(make_net())
    _randomise_masks(net)
    sliced = slice_blocks(net, _slice_with_a_headless_block(net))
    old = dict(sliced.state_dict())
    old.update({"blocks.2.norm1.weight": torch.ones(48), "blocks.2.norm1.bias": torch.zeros(48),
                "blocks.2.attn.qkv.weight": torch.zeros(0, 48), "blocks.2.attn.qkv.bias": torch.zeros(0)})
    rebuilt = apply_widths(make_net(), block_widths(sliced))
    load_sliced_state(rebuilt, old)  # nnunet-scd slim's files
    rebuilt.load_state_dict(old)  # nnU-Net's checkpoints, strict
    x = torch.randn(1, 1, 16, 32, 32)
    torch.testing.assert_close(rebuilt(x), sliced(x))


def test_global_ranking_keeps_the_largest_mask_values_over_all_blocks():
    masks = [torch.tensor([[0.9, 0.1], [0.8, 0.7]]), torch.tensor([[0.05, 0.6], [0.3, 0.2]])]
    keep = global_keep(masks, 4)
    assert [k.tolist() for k in keep] == [[[True, False], [True, True]], [[False, True], [False, False]]]
    assert all(k.all() for k in global_keep(masks, 8))


# Tiny-like proportions: 512 tokens of width 64, pruning after blocks 2, 3 and 5 of 6.
TINY_LIKE = dict(embed_dim=64, depth=6, num_heads=4, prune_after=(2, 3, 5), feature_size=4)
TINY_PATCH, TINY_TOKEN = (16, 64, 64), (2, 8, 8)


def _tiny_like(keep_ratios) -> SCDNet:
    return SCDNet(1, 3, TINY_PATCH, TINY_TOKEN, keep_ratios=keep_ratios, **TINY_LIKE).eval()


def _measured_encoder(net: torch.nn.Module) -> tuple[int, int]:
    """Encoder params and FLOPs counted on a mask-free network, independently of the derivation's cost model."""
    params = sum(p.numel() for m in encoder_modules(net) for p in m.parameters())
    _, per_module = count_flops(net, (1, 1, *TINY_PATCH), per_module=True)
    encoder = re.compile(r"^SCDNet\.(patch_embed|blocks\.\d+)$")
    return params, sum(f for name, f in per_module.items() if encoder.match(name))


@pytest.mark.parametrize("keep_ratios", [None, (0.25, 0.25, 0.25)], ids=["dense", "scd"])
@pytest.mark.parametrize("budget", [0.7, 0.5])
@pytest.mark.parametrize("late_low", [False, True], ids=["uniform", "late-blocks-low"])
@pytest.mark.parametrize("equal_heads", [False, True], ids=["exact", "equal-heads"])
def test_budget_is_the_measured_share_of_encoder_params_and_flops(keep_ratios, budget, late_low, equal_heads):
    torch.manual_seed(0)
    net = _tiny_like(keep_ratios)
    full_params, full_flops = _measured_encoder(net)
    mask_blocks(net)
    _randomise_masks(net)
    if late_low:  # the late blocks (few tokens after pruning, so cheap) are cut first
        with torch.no_grad():
            for depth, block in enumerate(masked_blocks(net)):
                block.attn.head_mask.mul_(1 - 0.15 * depth)
                block.mlp.neuron_mask.mul_(1 - 0.15 * depth)
    slice_blocks(net, derive_keep(net, budget, equal_heads))
    params, flops = _measured_encoder(net)
    assert params / full_params <= budget and flops / full_flops <= budget
    # The largest selection within budget: one of the two is binding. With the exact threshold to
    # about one channel; equal head widths round each block down by up to heads - 1 channels.
    assert max(params / full_params, flops / full_flops) >= budget - (0.03 if equal_heads else 0.01)
    if not late_low:  # masks spread evenly over blocks: params and FLOPs fall together
        assert min(params / full_params, flops / full_flops) >= budget - 0.1


def test_kept_heads_of_a_block_share_one_width_within_the_budget():
    torch.manual_seed(1)
    net = _tiny_like((0.25, 0.25, 0.25))
    full_params, full_flops = _measured_encoder(net)
    mask_blocks(net)
    _randomise_masks(net)
    keep = derive_keep(net, 0.6)
    for keep_attn, _ in keep:
        assert len(set(keep_attn.sum(1)[keep_attn.sum(1) > 0].tolist())) <= 1
    slice_blocks(net, keep)
    assert all(len(block.attn.groups) <= 1 for block in net.blocks)  # one attention call per block
    params, flops = _measured_encoder(net)
    assert params / full_params <= 0.6 and flops / full_flops <= 0.6


def test_uneven_heads_keep_exactly_the_global_threshold():
    torch.manual_seed(2)
    net = mask_blocks(_tiny_like((0.25, 0.25, 0.25)))
    _randomise_masks(net)
    keep = derive_keep(net, 0.6, equal_heads=False)
    masks = torch.cat([b.attn.head_mask.detach().flatten() for b in masked_blocks(net)])
    kept = torch.cat([k.flatten() for k, _ in keep])
    assert 0 < kept.sum() < kept.numel()
    assert masks[kept].min() >= masks[~kept].max()
    assert len({tuple(k.sum(1).tolist()) for k, _ in keep}) > 1


def test_uniform_heads_keeps_each_kept_head_s_largest_channels():
    mask = torch.tensor([[0.9, 0.8, 0.1, 0.7], [0.2, 0.6, 0.5, 0.1], [0.3, 0.3, 0.3, 0.3], [0.1, 0.2, 0.4, 0.9]])
    keep = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.bool)
    uniform = uniform_heads(keep, mask)  # 6 channels over 3 kept heads: 2 each, head 2 stays dropped
    assert uniform.tolist() == [[True, True, False, False], [False, True, True, False], [False] * 4,
                                [False, False, True, True]]
    assert not uniform_heads(torch.zeros(4, 4, dtype=torch.bool), mask).any()


def test_budget_one_keeps_everything_and_a_budget_below_the_fixed_part_is_refused():
    net = mask_blocks(_tiny_like((0.25, 0.25, 0.25)))
    _randomise_masks(net)
    assert all(a.all() and m.all() for a, m in derive_keep(net, 1.0))
    with pytest.raises(ValueError, match="patch embedding"):
        derive_keep(net, 0.01)


def test_widths_differ_by_layer_and_are_recorded_decreasing(make_net):
    net = mask_blocks(make_net(None))
    with torch.no_grad():
        net.blocks[0].attn.head_mask[1:] = 0.01  # block 0 keeps only its first head
        net.blocks[3].mlp.neuron_mask[:100] = 0.01
    keep = derive_keep(net, 0.7)
    widths = keep_widths(keep)
    assert widths[0]["head_dims"] == [12]
    assert widths[3]["mlp_hidden"] < widths[1]["mlp_hidden"]
    slice_blocks(net, keep)
    assert block_widths(net) == widths


@pytest.mark.parametrize("budget", [0, -0.1, 1.01, float("nan"), "x"])
def test_bad_budgets_are_rejected_with_a_clear_error(budget):
    with pytest.raises(ValueError, match=r"budget"):
        check_budget(budget)


def test_rebuilt_network_from_widths_loads_the_sliced_weights(make_net):
    net = mask_blocks(make_net())
    _randomise_masks(net)
    slice_blocks(net, derive_keep(net, 0.6))
    rebuilt = apply_widths(make_net(), block_widths(net))
    load_sliced_state(rebuilt, net.state_dict())
    x = torch.randn(1, 1, 16, 32, 32)
    torch.testing.assert_close(rebuilt(x), net(x))


def test_plans_that_do_not_match_the_weights_give_a_clear_error(make_net):
    net = mask_blocks(make_net())
    slice_blocks(net, derive_keep(net, 0.6))
    other = mask_blocks(make_net())
    _randomise_masks(other)
    slice_blocks(other, derive_keep(other, 0.5))
    with pytest.raises(ValueError, match="do not match the network built from these plans"):
        load_sliced_state(apply_widths(make_net(), block_widths(other)), net.state_dict())
    with pytest.raises(ValueError, match="encoder blocks"):
        apply_widths(make_net(), block_widths(net)[:2])


def test_penalty_is_the_weighted_l1_of_the_masks(make_net):
    net = mask_blocks(make_net(None))
    _randomise_masks(net)
    blocks = masked_blocks(net)
    attn = sum(b.attn.head_mask.abs().sum() for b in blocks)
    mlp = sum(b.mlp.neuron_mask.abs().sum() for b in blocks)
    torch.testing.assert_close(mask_penalty(net, 2e-4, 5e-5), 2e-4 * attn + 5e-5 * mlp)
    with pytest.raises(ValueError, match="no search masks"):
        mask_penalty(make_net(None))


def test_gradients_reach_every_mask(make_net):
    net = mask_blocks(make_net()).train()
    loss = net(torch.randn(2, 1, 16, 32, 32)).square().mean() + mask_penalty(net)
    loss.backward()
    for block in masked_blocks(net):
        assert block.attn.head_mask.grad is not None and block.attn.head_mask.grad.abs().sum() > 0
        assert block.mlp.neuron_mask.grad is not None and block.mlp.neuron_mask.grad.abs().sum() > 0


def test_pixel_classifier_starts_as_the_identity_and_learns(make_net):
    net = make_net()
    wrapped = WithPixelClassifier(net).eval()
    x = torch.randn(1, 1, 16, 32, 32)
    torch.testing.assert_close(wrapped(x), net(x))
    wrapped.train()
    wrapped(x).sum().backward()
    assert wrapped.pixel_classifier.out.weight.grad.abs().sum() > 0
    assert all(name.startswith("network.") for name in wrapped.no_weight_decay())


def test_pixel_classifier_composes_through_forward_features_without_hooks(make_net):
    net = make_net().eval()
    keys = set(net.state_dict())
    wrapped = WithPixelClassifier(net).eval()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
    # Checkpoints written before the split load unchanged: the wrapped network's keys only gain the prefix.
    assert {k for k in wrapped.state_dict() if k.startswith("network.")} == {f"network.{k}" for k in keys}
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.no_grad():
        features = net.forward_features(x)
        assert features.shape == (1, net.decoder.out.in_channels, 16, 32, 32)
        torch.testing.assert_close(net.forward_head(features), net(x))
