"""Turn an SCDNet's timm blocks into masked search blocks, and masked blocks into physically sliced ones.

Slicing keeps only the rows of ``qkv``/``fc1`` and the columns of ``proj``/``fc2`` that belong to
kept channels; no zeroed weight survives. The mask values of kept channels are folded into the
weights (q, k and v rows each take the head-channel mask, fc2 columns the neuron mask), so the
sliced block computes exactly what the masked block computed when the pruned masks are zero.
Heads are reordered by width so that equal widths are adjacent (one SDPA call per width).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from nnunet_scd.search.masked_vit import SlimBlock, drop_headless_keys
from nnunet_scd.search.token_masks import TokenMasks, TokenSchedule, make_token_masks

__all__ = [
    "apply_widths",
    "block_widths",
    "load_sliced_state",
    "mask_blocks",
    "mask_parameters",
    "masked_blocks",
    "slice_block",
    "slice_blocks",
    "token_masks",
]


def _drop_rate(block: nn.Module) -> float:
    return float(getattr(block.drop_path1, "drop_prob", 0.0))


def _dense_scale(blocks: nn.ModuleList) -> float:
    block = blocks[0]
    if isinstance(block, SlimBlock):
        return block.attn.scale
    return float(block.attn.scale)


def mask_blocks(network: nn.Module, token_mask: str | None = None) -> nn.Module:
    """Replace ``network.blocks`` (timm ``Block``) in place by masked ``SlimBlock``s with the same weights.

    ``token_mask``: also search the tokens, with masks per grid position ("position") or per rank in the
    token selection's order ("rank"), as ``network.token_gate`` (see ``token_masks``); None: no token masks.
    """
    blocks = network.blocks
    for i, block in enumerate(blocks):
        if isinstance(block, SlimBlock):
            raise ValueError(f"block {i} is already a SlimBlock; mask_blocks expects the dense timm blocks.")
        attn = block.attn
        masked = SlimBlock(
            attn.qkv.in_features, [attn.head_dim] * attn.num_heads, block.mlp.fc1.out_features,
            qkv_bias=attn.qkv.bias is not None, drop_path=_drop_rate(block), scale=float(attn.scale), masked=True,
        )
        missing, unexpected = masked.load_state_dict(block.state_dict(), strict=False)
        if unexpected or set(missing) != {"attn.head_mask", "mlp.neuron_mask"}:
            raise ValueError(f"block {i} is not a plain timm Block: missing {missing}, unexpected {unexpected}.")
        blocks[i] = masked.to(attn.qkv.weight.device)
    if token_mask is not None:
        network.token_gate = make_token_masks(network, token_mask)
    return network


def token_masks(network: nn.Module) -> TokenMasks | None:
    """The search network's token masks, None if it searches no tokens."""
    gate = getattr(network, "token_gate", None)
    return gate if isinstance(gate, TokenMasks) else None


def mask_parameters(network: nn.Module) -> list[nn.Parameter]:
    """Every search mask of a network: head-dim channel and MLP neuron masks, then any token masks."""
    masks = [p for b in masked_blocks(network) for p in (b.attn.head_mask, b.mlp.neuron_mask)]
    tokens = token_masks(network)
    return masks + ([] if tokens is None else list(tokens.logits))


def masked_blocks(network: nn.Module) -> list[SlimBlock]:
    """The masked encoder blocks of a network, or a ValueError if it has none (not a search network)."""
    blocks = [b for b in getattr(network, "blocks", []) if isinstance(b, SlimBlock) and b.attn.head_mask is not None]
    if not blocks or len(blocks) != len(network.blocks):
        raise ValueError("the network has no search masks on its encoder blocks; it was not built by a search trainer.")
    return blocks


@torch.no_grad()
def slice_block(block: SlimBlock, keep_attn: torch.Tensor, keep_mlp: torch.Tensor) -> SlimBlock:
    """A compact copy of a masked block that keeps the channels marked True.

    Args:
        block: a masked block (uniform heads, ``head_mask`` (H, d_head), ``neuron_mask`` (hidden,)).
        keep_attn: bool (H, d_head), head-dim channels to keep.
        keep_mlp: bool (hidden,), MLP neurons to keep.
    """
    attn, mlp = block.attn, block.mlp
    if attn.head_mask is None or mlp.neuron_mask is None:
        raise ValueError("slice_block needs a masked block (built by mask_blocks).")
    if keep_attn.shape != attn.head_mask.shape or keep_mlp.shape != mlp.neuron_mask.shape:
        raise ValueError(
            f"keep masks of shape {tuple(keep_attn.shape)}, {tuple(keep_mlp.shape)} do not match the block's "
            f"masks {tuple(attn.head_mask.shape)}, {tuple(mlp.neuron_mask.shape)}."
        )
    heads, head_dim = attn.head_mask.shape
    widths = keep_attn.sum(1).tolist()
    order = sorted((h for h in range(heads) if widths[h] > 0), key=lambda h: -widths[h])  # stable: ties by index
    channels = torch.cat([h * head_dim + keep_attn[h].nonzero().flatten() for h in order]) if order else (
        torch.zeros(0, dtype=torch.long))
    channels = channels.to(attn.qkv.weight.device)
    scale = attn.head_mask.flatten()[channels]
    neurons = keep_mlp.nonzero().flatten().to(mlp.fc1.weight.device)
    dim = attn.qkv.in_features
    sliced = SlimBlock(
        dim, [widths[h] for h in order], len(neurons), qkv_bias=attn.qkv.bias is not None,
        drop_path=_drop_rate(block), scale=attn.scale,
    ).to(attn.qkv.weight.device)
    if sliced.attn.qkv is not None:  # None: every head pruned
        inner = heads * head_dim
        rows = torch.cat([s * inner + channels for s in range(3)])
        sliced.attn.qkv.weight.copy_(attn.qkv.weight[rows] * scale.repeat(3)[:, None])
        if attn.qkv.bias is not None:
            sliced.attn.qkv.bias.copy_(attn.qkv.bias[rows] * scale.repeat(3))
    sliced.attn.proj.weight.copy_(attn.proj.weight[:, channels])
    sliced.attn.proj.bias.copy_(attn.proj.bias)
    sliced.mlp.fc1.weight.copy_(mlp.fc1.weight[neurons])
    sliced.mlp.fc1.bias.copy_(mlp.fc1.bias[neurons])
    sliced.mlp.fc2.weight.copy_(mlp.fc2.weight[:, neurons] * mlp.neuron_mask[neurons])
    sliced.mlp.fc2.bias.copy_(mlp.fc2.bias)
    for name in ("norm1", "norm2"):
        if isinstance(getattr(sliced, name), nn.LayerNorm):  # a block without heads has no norm1
            getattr(sliced, name).load_state_dict(getattr(block, name).state_dict())
    return sliced


def slice_blocks(
    network: nn.Module, keep: Sequence[tuple[torch.Tensor, torch.Tensor]], tokens: dict[str, Any] | None = None
) -> nn.Module:
    """Replace each masked block of ``network`` in place by its sliced copy; ``keep`` from ``derive``.

    ``tokens``: the token schedule (``Selection.tokens``) that replaces the token masks, which a search
    with token masks needs; the dropped tokens then leave the encoder before the blocks that drop them.
    """
    blocks = masked_blocks(network)
    if len(keep) != len(blocks):
        raise ValueError(f"got keep masks for {len(keep)} blocks but the network has {len(blocks)}.")
    if (token_masks(network) is None) != (tokens is None):
        raise ValueError("a network with token masks needs its token schedule (and one without, none); derive both "
                         "with derive_selection.")
    for i, (block, (keep_attn, keep_mlp)) in enumerate(zip(blocks, keep)):
        network.blocks[i] = slice_block(block, keep_attn, keep_mlp)
    if tokens is not None:
        network.token_gate = _schedule(network, tokens)
    return network


def _schedule(network: nn.Module, tokens: dict[str, Any]) -> TokenSchedule:
    if tokens["kind"] == "position" and network.prune_after:
        raise ValueError("a position token schedule needs a network without pruning stages; these plans or this "
                         f"network prune after blocks {network.prune_after}.")
    return TokenSchedule.from_record(tokens, network.token_grid).to(network.pos_embed.pos_embed.device)


def block_widths(network: nn.Module) -> list[dict[str, Any]]:
    """Per-block widths of a sliced network, as recorded in the plans."""
    return [b.widths for b in network.blocks]


def apply_widths(
    network: nn.Module, widths: Sequence[dict[str, Any]], tokens: dict[str, Any] | None = None
) -> nn.Module:
    """Replace the dense blocks of a freshly built SCDNet in place by sliced blocks of the recorded widths.

    ``tokens``: the recorded token schedule, if the search had token masks. The new blocks are freshly
    initialised; load the sliced weights afterwards (``load_sliced_state``).
    """
    blocks = network.blocks
    if len(widths) != len(blocks):
        raise ValueError(
            f"the plans record widths for {len(widths)} encoder blocks but the network has {len(blocks)}; the "
            "slim plans were derived for another model size. Use the slim trainer matching the search trainer."
        )
    scale = _dense_scale(blocks)
    for i, (block, width) in enumerate(zip(blocks, widths)):
        dim = block.norm1.normalized_shape[0]
        head_dims = [int(d) for d in width["head_dims"]]
        if sorted(head_dims, reverse=True) != head_dims:
            raise ValueError(f"block {i}: recorded head widths {head_dims} must be sorted in decreasing order.")
        qkv_bias = block.attn.qkv.bias is not None
        blocks[i] = SlimBlock(dim, head_dims, int(width["mlp_hidden"]), qkv_bias=qkv_bias,
                              drop_path=_drop_rate(block), scale=scale).to(block.norm1.weight.device)
    if tokens is not None:
        network.token_gate = _schedule(network, tokens)
    return network


def load_sliced_state(network: nn.Module, state: dict[str, torch.Tensor], source: str = "the sliced weights") -> None:
    """Load a sliced state dict, with a ValueError naming the first mismatch instead of a shape dump."""
    state = drop_headless_keys(network, state)
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items() if k in state and
             state[k].shape != v.shape]
    if missing or unexpected or wrong:
        detail = (f"first shape mismatch {wrong[0][0]}: {wrong[0][1]} in the file, {wrong[0][2]} in the network"
                  if wrong else f"missing keys {missing[:3]}, unexpected keys {unexpected[:3]}")
        raise ValueError(
            f"{source} do not match the network built from these plans ({detail}). The plans and the weights "
            "come from different `nnunet-scd slim` runs or trainers; rerun `nnunet-scd slim` and train with the "
            "slim trainer matching the search trainer."
        )
    network.load_state_dict(state)
