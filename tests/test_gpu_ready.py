"""What CUDA training needs from SCDNet, checked on a CPU: fp32 scoring under autocast, attention on
SDPA's fused kernels, a gradient for every parameter (DDP without find_unused_parameters) and torch.compile."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from nnunet_scd import SCDNet
from nnunet_scd.model.stp import SoftTopKPruning

VARIANTS = {
    "stp": dict(keep_ratios=(0.5, 0.5, 0.5)),
    "random": dict(keep_ratios=(0.5, 0.5, 0.5), token_selection="random"),
    "gaussian": dict(keep_ratios=(0.5, 0.5, 0.5), sampler="gaussian"),
    "mask": dict(keep_ratios=(0.5, 0.5, 0.5), completion="mask"),
    "shared_pooled": dict(keep_ratios=(0.5, 0.5, 0.5), skip_assembly="shared", pooled_bottleneck=True),
    "keep_one": dict(keep_ratios=(1.0, 1.0, 1.0)),
    "dense": dict(keep_ratios=None),
}


def _training_step(net: SCDNet, x: torch.Tensor) -> None:
    labels = torch.randint(0, 2, (x.shape[0], *x.shape[2:]))
    loss = torch.nn.functional.cross_entropy(net(x), labels) + net.guidance_loss(labels > 0)
    loss.backward()


def test_scorer_and_top_k_run_in_fp32_under_autocast():
    stage = SoftTopKPruning(32, keep_ratio=0.5).train()
    x = torch.randn(2, 16, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.nn.Linear(32, 1)(x).dtype == torch.bfloat16  # autocast is on: a plain layer drops to bf16
        result = stage(x, torch.arange(16).expand(2, 16))
    assert result.logits.dtype == torch.float32
    result.kept.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in stage.scorer.parameters())


def test_scdnet_trains_under_autocast_with_fp32_scorer_logits(tiny_scdnet):
    net = tiny_scdnet(1, 2, (16, 16, 16), (4, 4, 4), keep_ratios=(0.5, 0.5, 0.5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.randn(2, 1, 16, 16, 16))
    assert out.dtype == torch.bfloat16
    assert all(logits.dtype == torch.float32 for logits in net.scorer_logits)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_parameter_receives_a_gradient(variant, tiny_scdnet):
    # nnU-Net wraps the network in DistributedDataParallel without find_unused_parameters, which fails on the
    # second step if any parameter was left out of the first one's backward pass.
    net = tiny_scdnet(1, 2, (16, 16, 16), (4, 4, 4), **VARIANTS[variant]).train()
    _training_step(net, torch.randn(2, 1, 16, 16, 16))
    missing = [name for name, p in net.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("variant", ["stp", "dense"])
def test_attention_calls_sdpa_without_a_mask_and_runs_on_the_flash_kernel(variant, monkeypatch, tiny_scdnet):
    # CUDA's flash and memory-efficient kernels take no explicit mask, so every attention call (encoder and
    # completion) must reach SDPA without one.
    net = tiny_scdnet(1, 2, (16, 16, 16), (4, 4, 4), **VARIANTS[variant]).train()
    sdpa, calls = torch.nn.functional.scaled_dot_product_attention, []

    def recording_sdpa(q, k, v, attn_mask=None, *args, **kwargs):
        calls.append(attn_mask)
        return sdpa(q, k, v, attn_mask, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # restricted to it, SDPA raises instead of falling back
        _training_step(net, torch.randn(2, 1, 16, 16, 16))
    attentions = [m for m in net.modules() if type(m).__name__ == "Attention"]
    assert len(calls) == len(attentions) > 0
    assert all(mask is None for mask in calls)


def test_vit_b_attention_heads_are_64_wide_in_the_encoder_and_the_completion():
    with torch.device("meta"):
        net = SCDNet(1, 14, (96, 96, 96), (8, 8, 8), keep_ratios=(0.1, 0.1, 0.1))
    attentions = [m for m in net.modules() if type(m).__name__ == "Attention"]
    assert len(attentions) == 13  # 12 encoder blocks and the completion block
    assert all(a.head_dim == 64 and a.fused_attn for a in attentions)
    assert net.completion.transformer.blocks[0].attn.qkv.in_features == 192


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="inductor needs a C++ compiler on CPU")
@pytest.mark.slow
def test_scdnet_compiles_with_inductor_in_one_graph(tiny_scdnet):
    # nnU-Net compiles the network by default on CUDA. Inductor's CPU backend exercises the same tracing and
    # autograd: one graph without breaks, eager's outputs in eval mode, and a gradient for every parameter.
    net = tiny_scdnet(1, 2, (16, 16, 16), (4, 4, 4), **VARIANTS["stp"])
    x = torch.randn(2, 1, 16, 16, 16)
    explanation = torch._dynamo.explain(net.train())(x)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons
    # nnU-Net's sliding window predicts one tile at a time; on the CPU a batch of one takes the decoder's oneDNN
    # convolution path, whose checks must not break the graph either.
    with torch.no_grad():
        explanation = torch._dynamo.explain(net.eval())(x[:1])
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons

    compiled = torch.compile(net)
    with torch.no_grad():
        torch.testing.assert_close(compiled.eval()(x), net(x), rtol=1e-4, atol=1e-4)
    _training_step(compiled.train(), x)
    assert all(p.grad is not None for p in net.parameters())
