"""Joint multi-dimensional search: masked blocks and tokens, L1 penalty, global thresholds, physical slicing."""

from nnunet_scd.search.cost import EncoderCost, block_tokens, encoder_cost
from nnunet_scd.search.derive import (
    Selection,
    check_budget,
    derive_keep,
    derive_selection,
    fit_keep,
    global_keep,
    keep_widths,
)
from nnunet_scd.search.masked_vit import SlimAttention, SlimBlock, SlimMlp
from nnunet_scd.search.measure import Cost, measure_costs
from nnunet_scd.search.penalty import mask_penalty, mask_statistics
from nnunet_scd.search.pixel_classifier import PixelClassifier, WithPixelClassifier
from nnunet_scd.search.slicing import (
    apply_widths,
    block_widths,
    load_sliced_state,
    mask_blocks,
    mask_parameters,
    masked_blocks,
    slice_block,
    slice_blocks,
    token_masks,
)
from nnunet_scd.search.token_masks import LOGIT_LR_SCALE, TOKEN_MASKS, TokenMasks, TokenSchedule

__all__ = [
    "LOGIT_LR_SCALE",
    "TOKEN_MASKS",
    "Cost",
    "EncoderCost",
    "PixelClassifier",
    "Selection",
    "SlimAttention",
    "SlimBlock",
    "SlimMlp",
    "TokenMasks",
    "TokenSchedule",
    "WithPixelClassifier",
    "apply_widths",
    "block_tokens",
    "block_widths",
    "check_budget",
    "derive_keep",
    "derive_selection",
    "encoder_cost",
    "fit_keep",
    "global_keep",
    "keep_widths",
    "load_sliced_state",
    "mask_blocks",
    "mask_parameters",
    "mask_penalty",
    "mask_statistics",
    "measure_costs",
    "masked_blocks",
    "slice_block",
    "slice_blocks",
    "token_masks",
]
