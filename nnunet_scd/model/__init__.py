"""Pure-PyTorch models (no nnU-Net imports): ViT parts, STP, MTA, UNETR decoder and SCDNet."""

from nnunet_scd.model.mta import MaskTokenCompletion, MultiLayerTokenAssembly
from nnunet_scd.model.scd import SCDNet
from nnunet_scd.model.stp import SoftTopKPruning, TokenScorer, keep_count
from nnunet_scd.model.unetr import UNETRDecoder

__all__ = [
    "MaskTokenCompletion",
    "MultiLayerTokenAssembly",
    "SCDNet",
    "SoftTopKPruning",
    "TokenScorer",
    "UNETRDecoder",
    "keep_count",
]
