"""The decoder's Conv3d: the same maths as nn.Conv3d, on oneDNN for a single CPU volume."""

from __future__ import annotations

import torch
from torch.profiler import profile

from nnunet_scd.model.unetr import Conv3d


def _kernels(fn) -> set[str]:
    with profile() as prof:
        fn()
    return {e.key for e in prof.key_averages() if "conv" in e.key}


def test_single_small_volume_matches_nn_conv3d_and_runs_on_onednn() -> None:
    torch.manual_seed(0)
    ours = Conv3d(8, 8, 3, padding=1, bias=False)
    reference = torch.nn.Conv3d(8, 8, 3, padding=1, bias=False)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(1, 8, 12, 24, 24, requires_grad=True)  # N*C*D*H = 2304: under PyTorch's native threshold
    out, expected = ours(x), reference(x)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), (x, ours.weight))
    expected_grads = torch.autograd.grad(expected.square().sum(), (x, reference.weight))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    if torch.backends.mkldnn.is_available():
        assert "aten::mkldnn_convolution" in _kernels(lambda: ours(x))
        assert "aten::mkldnn_convolution" not in _kernels(lambda: reference(x))  # the dispatcher's own choice


def test_batches_and_state_dict_keys_are_nn_conv3d_s() -> None:
    conv = Conv3d(4, 2, 1)
    assert set(conv.state_dict()) == {"weight", "bias"}
    x = torch.randn(3, 4, 5, 6, 7)
    torch.testing.assert_close(conv(x), torch.nn.functional.conv3d(x, conv.weight, conv.bias))
