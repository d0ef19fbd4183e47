"""One way to reach the network inside its wrappers: DDP, ``torch.compile`` and composition wrappers.

nnU-Net wraps the network in DistributedDataParallel (``.module``) and compiles it
(``._orig_mod``); the slim trainers wrap the SCDNet in ``WithPixelClassifier``, which holds it as
``.network``. Optimiser groups and mask statistics need the module without DDP and compile (the
pixel classifier included); token diagnostics, slicing and costs need the SCDNet itself.
"""

from __future__ import annotations

from torch import nn

__all__ = ["unwrap"]


def unwrap(network: nn.Module, core: bool = False) -> nn.Module:
    """``network`` without DDP's ``module`` and torch.compile's ``_orig_mod``.

    Args:
        network: what nnU-Net or a caller holds.
        core: also step inside a composition wrapper that holds its network as ``.network``
            (``WithPixelClassifier``), to reach the SCDNet.
    """
    network = getattr(network, "module", network)
    network = getattr(network, "_orig_mod", network)
    if core:
        inner = getattr(network, "network", None)
        if isinstance(inner, nn.Module):
            return inner
    return network
