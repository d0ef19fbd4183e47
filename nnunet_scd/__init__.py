"""Token-sparse vision transformers for nnU-Net v2.

``from nnunet_scd import SCDNet`` gives the network; the nnU-Net glue lives in
``nnunet_scd.nnunet`` and the trainers are found through ``nnUNet_extTrainer``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["SCDNet", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy so that `nnunet-scd --help` does not pay for importing torch.
    if name == "SCDNet":
        from nnunet_scd.model.scd import SCDNet

        return SCDNet
    raise AttributeError(f"module 'nnunet_scd' has no attribute {name!r}")
