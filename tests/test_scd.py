from __future__ import annotations

import pytest
import torch

from nnunet_scd import SCDNet
from nnunet_scd.measure import count_flops


@pytest.mark.parametrize(
    "patch_size, token_size",
    [((32, 32, 32), (8, 8, 8)), ((16, 64, 64), (4, 16, 16)), ((32, 64, 48), (2, 8, 8)), ((64, 48), (8, 8)),
     ((64, 64), (4, 16))],
)
@pytest.mark.parametrize("keep_ratios", [(0.5, 0.5, 0.5), None])
def test_logits_have_the_input_spatial_size(patch_size, token_size, keep_ratios, tiny_scdnet):
    net = tiny_scdnet(2, 3, patch_size, token_size, keep_ratios=keep_ratios)
    x = torch.randn(2, 2, *patch_size)
    assert net(x).shape == (2, 3, *patch_size)


@pytest.mark.parametrize("completion, skip_assembly", [("mta", "per_depth"), ("mta", "shared"), ("mask", "shared")])
@pytest.mark.parametrize("sampler", ["gumbel", "gaussian"])
@pytest.mark.parametrize("pooled_bottleneck", [False, True])
def test_every_sparse_variant_trains(completion, skip_assembly, sampler, pooled_bottleneck, tiny_scdnet):
    net = tiny_scdnet(1, 2, (16, 32, 32), (4, 8, 8), completion=completion, skip_assembly=skip_assembly,
                      sampler=sampler, keep_ratios=(0.5, 0.5, 0.5), pooled_bottleneck=pooled_bottleneck)
    out = net(torch.randn(2, 1, 16, 32, 32))
    out.square().mean().backward()
    assert out.shape == (2, 2, 16, 32, 32)
    assert net.patch_embed.proj.weight.grad.abs().sum() > 0


def test_kept_counts_per_stage_are_exact(tiny_scdnet):
    net = tiny_scdnet(1, 2, (64, 64, 64), (4, 4, 4), keep_ratios=(0.25, 0.25, 0.25))  # 4096 tokens
    net(torch.randn(1, 1, 64, 64, 64))
    assert [k.shape for k in net.kept_indices] == [(1, 1024), (1, 256), (1, 64)]

    net = tiny_scdnet(1, 2, (24, 32, 32), (4, 4, 4), keep_ratios=(0.5, 0.3, 0.9))  # 6*8*8 = 384 tokens
    net(torch.randn(2, 1, 24, 32, 32))
    assert [k.shape[1] for k in net.kept_indices] == [192, 58, 52]
    # Every stage keeps a subset of the previous one, and indices are distinct grid positions.
    for earlier, later in zip(net.kept_indices, net.kept_indices[1:]):
        for b in range(2):
            assert set(later[b].tolist()) <= set(earlier[b].tolist())
            assert len(set(later[b].tolist())) == later.shape[1]


def test_eval_is_deterministic_and_training_is_stochastic(tiny_scdnet):
    net = tiny_scdnet(1, 2, (16, 32, 32), (4, 8, 8), keep_ratios=(0.5, 0.5, 0.5))
    x = torch.randn(1, 1, 16, 32, 32)
    net.eval()
    with torch.no_grad():
        first, first_kept = net(x), net.kept_indices
        second, second_kept = net(x), net.kept_indices
    assert torch.equal(first, second)
    assert all(torch.equal(a, b) for a, b in zip(first_kept, second_kept))

    net.train()
    kept_sets = []
    for _ in range(3):
        net(x)
        kept_sets.append(frozenset(net.kept_indices[0][0].tolist()))
    assert len(set(kept_sets)) > 1


@pytest.mark.parametrize("sampler", ["gumbel", "gaussian"])
def test_gradient_reaches_every_scorer_parameter(sampler, tiny_scdnet):
    net = tiny_scdnet(1, 2, (16, 32, 32), (4, 8, 8), keep_ratios=(0.5, 0.5, 0.5), sampler=sampler)
    net(torch.randn(2, 1, 16, 32, 32)).square().mean().backward()
    scorer_params = list(net.pruning.named_parameters())
    assert len(scorer_params) == 3 * 10  # LayerNorm + 4 Linear layers, weight and bias each
    for name, param in scorer_params:
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


def test_dense_network_is_a_plain_unetr_computation(tiny_scdnet):
    net = tiny_scdnet(1, 3, (16, 32, 32), (4, 8, 8), keep_ratios=None).eval()
    assert not net.is_sparse and len(net.pruning) == 0
    x = torch.randn(2, 1, 16, 32, 32)
    tokens = net.patch_embed(x) + net.pos_embed.pos_embed
    hidden = []
    for block in net.blocks:
        tokens = block(tokens)
        hidden.append(tokens)
    expected = net.decoder(x, net.norm(tokens), [hidden[0], hidden[1], hidden[2]], net.token_grid)
    with torch.no_grad():
        assert torch.equal(net(x), expected)


def _replace_pruned_tokens(net: SCDNet, value: float) -> None:
    """Every pruning stage hands on its pruned tokens as a constant (instance attribute over the class forward)."""

    def constant_pruned(prune):
        def forward(tokens, positions, priority=None):
            kept, kept_positions, pruned, *rest = prune(tokens, positions, priority)
            return kept, kept_positions, torch.full_like(pruned, value), *rest
        return forward

    for stage in net.pruning:
        stage.forward = constant_pruned(stage.forward)


@pytest.mark.parametrize("pooled_bottleneck", [False, True])
def test_no_pruned_token_reaches_the_output_of_the_mim_baseline(pooled_bottleneck, tiny_scdnet):
    x = torch.randn(2, 1, 16, 32, 32)
    moved = {}
    for completion in ("mask", "mta"):
        net = tiny_scdnet(1, 3, (16, 32, 32), (4, 8, 8), completion=completion,
                          pooled_bottleneck=pooled_bottleneck).eval()
        with torch.no_grad():
            reference = net(x)
            _replace_pruned_tokens(net, 3.0)
            moved[completion] = (net(x) - reference).abs().max().item()
    assert moved["mask"] == 0.0  # the MIM baseline: last kept tokens and the mask token only
    assert moved["mta"] > 1e-3  # the same check sees MTA's pruned tokens, so it can fail


def test_mim_baseline_refuses_per_depth_skips_that_would_leak_pruned_tokens(tiny_scdnet):
    assert tiny_scdnet(1, 2, (16, 32, 32), (4, 8, 8), completion="mask").skip_assembly == "shared"
    assert tiny_scdnet(1, 2, (16, 32, 32), (4, 8, 8)).skip_assembly == "per_depth"
    with pytest.raises(ValueError, match="MIM baseline"):
        tiny_scdnet(1, 2, (16, 32, 32), (4, 8, 8), completion="mask", skip_assembly="per_depth")


def test_skips_are_the_outputs_of_blocks_3_6_9_of_12():
    # UNETR's z3, z6, z9 (1-based block outputs), which are also where SCD prunes; MONAI indexes blocks 4, 7, 10.
    # (With keep ratio 1 the sparse net feeds the same skips: test_keep_ratio_one_feeds_the_decoder_...)
    net = SCDNet(1, 2, (16, 16, 16), (8, 8, 8), keep_ratios=None, embed_dim=16, depth=12, num_heads=2).eval()
    outputs, skips = {}, []
    for i, block in enumerate(net.blocks, start=1):
        block.register_forward_hook(lambda m, args, out, i=i: outputs.__setitem__(i, out))
    net.decoder.register_forward_hook(lambda m, args, out: skips.extend(args[2]))
    with torch.no_grad():
        net(torch.randn(1, 1, 16, 16, 16))
    assert net.skip_depths == (3, 6, 9) and len(skips) == 3
    for skip, depth in zip(skips, (3, 6, 9)):
        assert torch.equal(skip, outputs[depth]), depth


def test_pooled_bottleneck_is_the_authors_x8_decoder(tiny_scdnet):
    net = tiny_scdnet(1, 2, (32, 32, 32), (8, 8, 8), pooled_bottleneck=True).eval()  # 4^3 tokens
    plain = tiny_scdnet(1, 2, (32, 32, 32), (8, 8, 8))
    assert (len(net.decoder.decoders), len(plain.decoder.decoders)) == (4, 3)
    seen = []
    net.decoder.decoders[-1].register_forward_hook(lambda m, args, out: seen.append((args[0].shape, out.shape)))
    with torch.no_grad():
        assert net(torch.randn(1, 1, 32, 32, 32)).shape == (1, 2, 32, 32, 32)
    (bottleneck, top), = seen
    assert bottleneck[2:] == (2, 2, 2) and top[2:] == (4, 4, 4)  # half the token grid, then back to it
    # An odd axis is not pooled, and a two-token axis is averaged pairwise.
    odd = tiny_scdnet(1, 2, (40, 16, 32), (8, 8, 8), pooled_bottleneck=True)
    assert odd.decoder.pool_strides == (1, 2, 2)
    assert odd(torch.randn(1, 1, 40, 16, 32)).shape == (1, 2, 40, 16, 32)


def test_keep_ratio_one_feeds_the_decoder_the_dense_hidden_states(tiny_scdnet):
    sparse = tiny_scdnet(1, 3, (16, 32, 32), (4, 8, 8), keep_ratios=(1.0, 1.0, 1.0)).eval()
    dense = tiny_scdnet(1, 3, (16, 32, 32), (4, 8, 8), keep_ratios=None).eval()
    missing, unexpected = dense.load_state_dict(sparse.state_dict(), strict=False)
    assert not missing and all(k.startswith(("pruning.", "completion.")) for k in unexpected)
    seen = {}
    for name, net in (("sparse", sparse), ("dense", dense)):
        net.decoder.register_forward_hook(lambda m, args, out, name=name: seen.__setitem__(name, args[2]))
    x = torch.randn(2, 1, 16, 32, 32)
    with torch.no_grad():
        sparse(x)
        dense(x)
    for a, b in zip(seen["sparse"], seen["dense"]):
        torch.testing.assert_close(a, b)


def test_flops_fall_with_the_keep_ratio():
    shape = (1, 1, 32, 64, 64)
    kwargs = dict(embed_dim=96, depth=8, num_heads=4, prune_after=(2, 4, 6), feature_size=4)
    dense = count_flops(SCDNet(1, 2, (32, 64, 64), (4, 8, 8), keep_ratios=None, **kwargs), shape)
    sparse = [
        count_flops(SCDNet(1, 2, (32, 64, 64), (4, 8, 8), keep_ratios=(r, r, r), **kwargs), shape)
        for r in (1.0, 0.7, 0.5, 0.25, 0.1)
    ]
    assert all(a > b for a, b in zip(sparse, sparse[1:])), sparse
    assert sparse[-2] < dense


def test_vit_b16_unetr_has_the_published_parameter_count():
    net = SCDNet(1, 14, (96, 96, 96), (16, 16, 16), keep_ratios=None)
    count = sum(p.numel() for p in net.parameters())
    print(f"dense ViT-B/16 UNETR at 96^3: {count / 1e6:.2f}M parameters")
    assert 85e6 < count < 100e6  # UNETR paper: 92.58M


def test_scorers_are_under_five_percent_of_the_encoder():
    net = SCDNet(1, 14, (96, 96, 96), (8, 8, 8))
    encoder = sum(p.numel() for n, p in net.named_parameters() if n.startswith(("patch_embed", "pos_embed", "blocks")))
    scorers = sum(p.numel() for p in net.pruning.parameters())
    assert scorers < 0.05 * encoder


def test_runs_on_a_token_grid_other_than_the_one_it_was_built_for(tiny_scdnet):
    net = tiny_scdnet(1, 2, (16, 32, 32), (4, 8, 8)).eval()
    assert net(torch.randn(1, 1, 24, 48, 32)).shape == (1, 2, 24, 48, 32)


def test_state_dict_keys_do_not_depend_on_mode(tiny_scdnet):
    net = tiny_scdnet(1, 2, (16, 32, 32), (4, 8, 8))
    keys = set(net.state_dict())
    net.eval()
    assert set(net.state_dict()) == keys
    assert "pos_embed.pos_embed" in net.no_weight_decay()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(keep_ratios=(0.25, 0.0, 0.25)), r"keep ratio must be in \(0, 1\]"),
        (dict(keep_ratios=(0.25, 1.2, 0.25)), r"keep ratio must be in \(0, 1\]"),
        (dict(keep_ratios=(0.25, 0.25)), "same length"),
        (dict(prune_after=(3, 2, 1), keep_ratios=(0.5,) * 3), "strictly increasing"),
        (dict(prune_after=(1, 2, 4), keep_ratios=(0.5,) * 3), "depth - 1 = 3"),
        (dict(prune_after=(0, 1, 2), keep_ratios=(0.5,) * 3), "depth - 1"),
        (dict(patch_size=(16, 32, 30)), r"axis 2 \(x\)"),
        (dict(embed_dim=30, num_heads=4), "not divisible by num_heads"),
        (dict(depth=3, prune_after=(1, 2)), "depth must be at least 4"),
        (dict(completion="linear"), "completion must be one of"),
        (dict(skip_assembly="all"), "skip_assembly must be one of"),
        (dict(completion="mask", skip_assembly="per_depth"), "per-depth skips would hand it the pruned tokens"),
        (dict(token_size=(4, 8, 6), patch_size=(16, 32, 36)), "power-of-two"),
        # Each of these used to raise ZeroDivisionError, fail only in forward, or be accepted silently.
        (dict(num_heads=0), "num_heads must be an integer of at least 1, got 0"),
        (dict(embed_dim=0), "embed_dim must be an integer of at least 1, got 0"),
        (dict(feature_size=0), "feature_size must be an integer of at least 1"),
        (dict(num_classes=0), "num_classes must be an integer of at least 1"),
        (dict(input_channels=0), "input_channels must be an integer of at least 1"),
        (dict(drop_path_rate=2.0), r"drop_path_rate must be in \[0, 1\)"),
        (dict(drop_path_rate=-0.1), r"drop_path_rate must be in \[0, 1\)"),
        (dict(prune_after=(1.5, 2, 3), keep_ratios=(0.5,) * 3), "block indices, which are integers"),
        (dict(completion_depth=-1), "completion_depth must be an integer of at least 0, got -1"),
        (dict(completion_dim=0), "completion_dim must be an integer of at least 1"),
        (dict(mlp_ratio=0), "mlp_ratio must be above 0"),
        (dict(embed_dim=32.0), "embed_dim must be an integer"),
    ],
)
def test_bad_configuration_gets_a_clear_value_error(kwargs, message, tiny_sizes):
    config = dict(input_channels=1, num_classes=2, patch_size=(16, 32, 32), token_size=(4, 8, 8), **tiny_sizes)
    config.update(kwargs)
    with pytest.raises(ValueError, match=message):
        SCDNet(**config)


def test_completion_depth_zero_is_token_assembly_without_a_completion_block(tiny_scdnet):
    net = tiny_scdnet(1, 2, (16, 32, 32), (4, 8, 8), completion_depth=0, keep_ratios=(0.5,) * 3)
    assert len(net.completion.transformer.blocks) == 0
    assert net(torch.randn(1, 1, 16, 32, 32)).shape == (1, 2, 16, 32, 32)


def test_an_empty_batch_gets_a_clear_value_error(tiny_scdnet):
    net = tiny_scdnet(1, 2, (16, 32, 32), (4, 8, 8))
    with pytest.raises(ValueError, match="empty batch"):
        net(torch.randn(0, 1, 16, 32, 32))


def test_wrong_input_channels_or_dimensions_get_a_clear_value_error(tiny_scdnet):
    net = tiny_scdnet(2, 2, (16, 32, 32), (4, 8, 8))
    with pytest.raises(ValueError, match="built for 2 input channel"):
        net(torch.randn(1, 1, 16, 32, 32))
    with pytest.raises(ValueError, match="built for 3D images"):
        net(torch.randn(1, 2, 32, 32))
    with pytest.raises(ValueError, match=r"axis 1 \(y\)"):
        net(torch.randn(1, 2, 16, 36, 32))
