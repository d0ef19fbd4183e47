"""Token masks, the joint search's third dimension: masking, derivation, slicing, assembly, budget."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from nnunet_scd import SCDNet
from nnunet_scd.measure import count_flops
from nnunet_scd.model.stp import spread_priority
from nnunet_scd.search import (
    apply_widths,
    block_widths,
    derive_selection,
    encoder_cost,
    load_sliced_state,
    mask_blocks,
    mask_parameters,
    mask_penalty,
    masked_blocks,
    slice_blocks,
    token_masks,
)
from nnunet_scd.search.token_masks import schedule_tokens, stage_ratios, token_counts

PATCH, TOKEN = (16, 32, 32), (4, 8, 8)  # a 4 x 4 x 4 grid: 64 tokens
NUM_TOKENS = 64


def _net(keep_ratios=None, **kwargs) -> SCDNet:
    sizes = dict(embed_dim=48, depth=4, num_heads=4, prune_after=(1, 2, 3), feature_size=4)
    return SCDNet(1, 3, PATCH, TOKEN, keep_ratios=keep_ratios, **{**sizes, **kwargs}).eval()


def _set_token_values(net: torch.nn.Module, values: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for logits, value in zip(token_masks(net).logits, values):
            logits.copy_(torch.atanh(value))


def _full_channels(net: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.ones_like(b.attn.head_mask, dtype=torch.bool), torch.ones_like(b.mlp.neuron_mask, dtype=torch.bool))
            for b in masked_blocks(net)]


def _gate_positions(net: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The grid positions each block processed in one forward pass, in the order it saw them."""
    seen = {}
    handle = net.token_gate.register_forward_hook(lambda m, args, out: seen.__setitem__(args[0], out.positions))
    with torch.no_grad():
        net(x)
    handle.remove()
    return [seen[i] for i in range(len(net.blocks))]


@pytest.mark.parametrize("kind,keep_ratios", [("position", None), ("rank", None), ("rank", (0.5, 0.5, 0.5))])
def test_token_masks_of_one_leave_the_network_unchanged_and_start_at_tanh_3(kind, keep_ratios):
    torch.manual_seed(0)
    net = _net(keep_ratios)
    x = torch.randn(2, 1, *PATCH)
    with torch.no_grad():
        reference = net(x)
    mask_blocks(net, token_mask=kind)
    assert all(torch.allclose(v, torch.tanh(torch.tensor(3.0))) for v in token_masks(net).values())
    with torch.no_grad():
        for logits in token_masks(net).logits:
            logits.fill_(20.0)  # tanh = 1 in float32: the masks multiply the normalised inputs by one
        torch.testing.assert_close(net(x), reference, atol=1e-5, rtol=1e-4)


def test_position_masks_are_refused_on_a_network_that_prunes_tokens():
    with pytest.raises(ValueError, match="token_mask='rank'"):
        mask_blocks(_net((0.5, 0.5, 0.5)), token_mask="position")
    with pytest.raises(ValueError, match="token_mask must be one of"):
        mask_blocks(_net(), token_mask="patch")


def test_gradients_reach_every_token_mask_and_the_optimiser_finds_them():
    net = mask_blocks(_net((0.5, 0.5, 0.5)), token_mask="rank").train()
    net(torch.randn(2, 1, *PATCH)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in token_masks(net).logits)
    assert {id(p) for p in token_masks(net).logits} <= {id(p) for p in mask_parameters(net)}


def test_penalty_includes_the_token_masks_with_their_own_weight():
    net = mask_blocks(_net(), token_mask="position")
    with torch.no_grad():
        for logits in token_masks(net).logits:
            logits.uniform_(-2, 2)
    blocks = masked_blocks(net)
    attn = sum(b.attn.head_mask.abs().sum() for b in blocks)
    mlp = sum(b.mlp.neuron_mask.abs().sum() for b in blocks)
    tokens = sum(torch.tanh(p).abs().sum() for p in token_masks(net).logits)
    torch.testing.assert_close(mask_penalty(net, 2e-4, 5e-5, 1e-4), 2e-4 * attn + 5e-5 * mlp + 1e-4 * tokens)
    torch.testing.assert_close(mask_penalty(net, 2e-4, 5e-5, 0.0), 2e-4 * attn + 5e-5 * mlp)


# Known position masks, 0.9 kept and 0.05 below the threshold of 0.5. Positions 5 and 50 are below it in
# blocks 1 and 2 but kept in block 3, so nesting keeps them in blocks 1 and 2 too; 7 is kept by no block.
KEPT_BY = {0: set(range(64)) - {7}, 1: set(range(40)) - {5, 7}, 2: set(range(24)) - {5, 7},
           3: set(range(10)) - {7} | {50}}
LAST_KEPT = {p: max((b + 1 for b, kept in KEPT_BY.items() if p in kept), default=0) for p in range(64)}


def _known_position_masks() -> tuple[SCDNet, list[torch.Tensor], dict]:
    net = mask_blocks(_net(), token_mask="position")
    values = [torch.full((NUM_TOKENS,), 0.05) for _ in range(4)]
    for block, kept in KEPT_BY.items():
        values[block][sorted(kept)] = 0.9
    _set_token_values(net, values)
    keep = [v.abs() >= 0.5 for v in token_masks(net).values()]
    return net, keep, schedule_tokens("position", keep, values, NUM_TOKENS, stage_ratios(net))


def test_sliced_net_drops_exactly_the_position_tokens_below_the_threshold_and_nests_them():
    net, _, schedule = _known_position_masks()
    assert schedule["kept"] == [LAST_KEPT[p] for p in range(NUM_TOKENS)]
    slice_blocks(net, _full_channels(net), schedule)
    seen = _gate_positions(net, torch.randn(2, 1, *PATCH))
    for block, positions in enumerate(seen):
        expected = {p for p in range(NUM_TOKENS) if LAST_KEPT[p] > block}
        assert (positions == positions[:1]).all()  # the same positions in every batch element
        assert set(positions[0].tolist()) == expected  # exactly the nested set, each once
        assert positions.shape[1] == len(expected)
        if block:
            assert set(positions[0].tolist()) <= set(seen[block - 1][0].tolist())
    assert 5 in seen[2][0].tolist() and 7 not in seen[0][0].tolist()


def test_pruned_positions_reach_the_decoder_from_the_last_block_that_kept_them():
    net, _, schedule = _known_position_masks()
    slice_blocks(net, _full_channels(net), schedule)
    states = {}  # position -> its state after each block that processed it, and the embedding
    gate_out = {}
    hooks = [net.token_gate.register_forward_hook(lambda m, args, out: gate_out.__setitem__("last", out))]
    for i, block in enumerate(net.blocks):
        hooks.append(block.register_forward_hook(
            lambda m, args, out, i=i: states.__setitem__(i, (gate_out["last"].positions, out))))
    decoder_in = {}
    hooks.append(net.decoder.register_forward_pre_hook(lambda m, args: decoder_in.update(args=args)))
    x = torch.randn(2, 1, *PATCH)
    with torch.no_grad():
        net(x)
        embedding = net.patch_embed(x) + net.pos_embed(net.token_grid)
    for hook in hooks:
        hook.remove()
    _, completed, skips, _ = decoder_in["args"]

    def state_after(block: int, position: int) -> torch.Tensor:
        """The token at ``position`` as the last block up to ``block`` that processed it left it."""
        last = min(LAST_KEPT[position], block + 1) - 1
        if last < 0:
            return embedding[:, position]
        positions, out = states[last]
        return out[torch.arange(2), (positions == position).float().argmax(1)]

    for position in range(NUM_TOKENS):
        torch.testing.assert_close(completed[:, position], net.norm(state_after(3, position)))
        for skip, depth in zip(skips, net.skip_depths):  # per-depth skips: the state at that depth
            torch.testing.assert_close(skip[:, position], state_after(depth - 1, position))


def test_derived_token_schedule_is_a_global_threshold_over_all_blocks():
    torch.manual_seed(3)
    net = mask_blocks(_net(), token_mask="position")
    _set_token_values(net, [torch.rand(NUM_TOKENS) * 0.98 + 0.01 for _ in range(4)])
    selection = derive_selection(net, 0.6)
    kept = torch.tensor(selection.tokens["kept"])
    values = torch.stack([v.detach().abs() for v in token_masks(net).values()])  # (blocks, positions)
    assert 0 < kept.sum() < 4 * NUM_TOKENS
    # A position's last block kept it on its own value; no value of a block after that passed the threshold.
    own = values[(kept - 1).clamp(min=0), torch.arange(NUM_TOKENS)][kept > 0]
    after = values[torch.arange(4)[:, None] >= kept[None, :]]
    assert own.min() > after.max()


def test_rank_masks_keep_the_derived_count_per_block_in_the_selection_s_order():
    torch.manual_seed(4)
    net = mask_blocks(_net((0.5, 0.5, 0.5)), token_mask="rank")
    assert [v.numel() for v in token_masks(net).values()] == [64, 32, 16, 8]  # the tokens each block sees
    # Block 0 keeps its 40 best ranks, block 1 all 32, block 2 10 of 16, block 3 none (at least one stays).
    wanted = [40, 32, 10, 0]
    values = [torch.where(torch.arange(n) < w, 0.9, 0.05)[torch.randperm(n)] for n, w in zip((64, 32, 16, 8), wanted)]
    _set_token_values(net, values)
    keep = [v.abs() >= 0.5 for v in token_masks(net).values()]
    schedule = schedule_tokens("rank", keep, values, NUM_TOKENS, stage_ratios(net))
    # Block 1 receives half of block 0's 40 (the stage keeps its ratio of what it gets), not 32.
    assert schedule["kept"] == [40, 20, 10, 1]
    slice_blocks(net, _full_channels(net), schedule)
    x = torch.randn(2, 1, *PATCH)
    seen = _gate_positions(net, x)
    assert [p.shape[1] for p in seen] == [40, 20, 10, 1]
    # Before the first stage the evenly spaced rule decides which; after it, the stage's order (STP's scores).
    evenly = torch.sort(spread_priority(net.token_grid), descending=True, stable=True).indices
    assert (seen[0] == evenly[:40]).all()
    for stage, block in enumerate((1, 2, 3)):
        assert torch.equal(seen[block], net.kept_indices[stage][:, :seen[block].shape[1]])
        assert set(seen[block][0].tolist()) <= set(seen[block - 1][0].tolist())


def test_a_search_network_ranks_tokens_after_a_stage_in_its_score_order():
    net = mask_blocks(_net((0.5, 0.5, 0.5)), token_mask="rank")
    x = torch.randn(1, 1, *PATCH)
    seen = _gate_positions(net, x)
    scores = net.scorer_logits[0][0]  # block 0's 64 tokens, scored at the first stage
    scored_order = net.scored_positions[0][0][torch.sort(scores, descending=True, stable=True).indices]
    assert torch.equal(seen[1][0], scored_order[:32])  # rank r of block 1 is the stage's r-th best token


@pytest.mark.parametrize("kind,keep_ratios", [("position", None), ("rank", None), ("rank", (0.5, 0.5, 0.5))])
@pytest.mark.parametrize("budget", [0.7, 0.5])
def test_budget_counts_token_flops_as_measured_on_the_sliced_network(kind, keep_ratios, budget):
    torch.manual_seed(5)
    net = _net(keep_ratios)
    full_flops = _encoder_flops(net)
    mask_blocks(net, token_mask=kind)
    with torch.no_grad():
        for block in masked_blocks(net):
            block.attn.head_mask.uniform_(0.2, 1.5)
            block.mlp.neuron_mask.uniform_(0.2, 1.5)
        for logits in token_masks(net).logits:
            logits.uniform_(-2, 3)
    search_cost = encoder_cost(net)
    selection = derive_selection(net, budget)
    counts = token_counts(selection.tokens, len(net.blocks))
    assert counts != list(search_cost.tokens)  # the budget took some tokens, not only channels
    slice_blocks(net, selection.channels, selection.tokens)
    flops = _encoder_flops(net)
    # The cost model is exact: channels times the tokens each sliced block really processes.
    _, predicted = search_cost.of([int(a.sum()) for a, _ in selection.channels],
                                  [int(m.sum()) for _, m in selection.channels], counts)
    assert flops == predicted
    # With tokens the budget is the share of FLOPs, which all three types cut.
    assert budget - 0.03 <= flops / full_flops <= budget


def _encoder_flops(net: torch.nn.Module) -> int:
    _, per_module = count_flops(net, (1, 1, *PATCH), per_module=True)
    return sum(f for name, f in per_module.items() if re.match(r"^SCDNet\.(patch_embed|blocks\.\d+)$", name))


@pytest.mark.parametrize("kind,keep_ratios", [("position", None), ("rank", (0.5, 0.5, 0.5))])
def test_a_network_rebuilt_from_widths_and_token_schedule_loads_the_sliced_weights(kind, keep_ratios):
    torch.manual_seed(6)
    net = mask_blocks(_net(keep_ratios), token_mask=kind)
    with torch.no_grad():
        for logits in token_masks(net).logits:
            logits.uniform_(-2, 3)
    selection = derive_selection(net, 0.6)
    sliced = slice_blocks(copy.deepcopy(net), selection.channels, selection.tokens)
    rebuilt = apply_widths(_net(keep_ratios), block_widths(sliced), selection.tokens)
    load_sliced_state(rebuilt, sliced.state_dict())  # the schedule is not in the state dict: keys unchanged
    assert set(rebuilt.state_dict()) == set(apply_widths(_net(keep_ratios), block_widths(sliced)).state_dict())
    x = torch.randn(2, 1, *PATCH)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), sliced(x))


def test_slicing_a_token_search_without_its_schedule_is_refused():
    net = mask_blocks(_net(), token_mask="rank")
    with pytest.raises(ValueError, match="token schedule"):
        slice_blocks(net, _full_channels(net))


def test_mask_statistics_and_plot_show_the_token_masks(tmp_path):
    from nnunet_scd.search import mask_statistics
    from nnunet_scd.search.plot import plot_mask_distribution

    net = mask_blocks(_net((0.5, 0.5, 0.5)), token_mask="rank")
    stats = mask_statistics(net)
    assert len(stats) == 4 and all(row["token_min"] == pytest.approx(torch.tanh(torch.tensor(3.0)).item())
                                   for row in stats)
    assert plot_mask_distribution(net, tmp_path / "masks.png").stat().st_size > 1000
