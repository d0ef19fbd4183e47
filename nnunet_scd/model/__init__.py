"""Pure-PyTorch models (no nnU-Net imports): ViT parts, STP and its random ablation, foreground guidance, MTA,
UNETR decoder and SCDNet."""

from nnunet_scd.model.mta import MaskTokenCompletion, MultiLayerTokenAssembly
from nnunet_scd.model.scd import SCDNet
from nnunet_scd.model.stp import RandomTokenPruning, SoftTopKPruning, TokenScorer, keep_count
from nnunet_scd.model.unetr import UNETRDecoder

__all__ = [
    "MaskTokenCompletion",
    "MultiLayerTokenAssembly",
    "RandomTokenPruning",
    "SCDNet",
    "SoftTopKPruning",
    "TokenScorer",
    "UNETRDecoder",
    "keep_count",
]
