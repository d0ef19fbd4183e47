"""Class-balanced quotas: a share of each STP stage's budget for every class the scorer predicts present.

Ranking by one "holds foreground" score fills the budget with the tokens the scorer is surest of, the
interiors of large organs; a small organ's few tokens may not make the cut. With quotas the scorer
also predicts, per class, whether a token holds that class (trained like foreground guidance, one
target per class). Every class it predicts present in the image then keeps its own most probable
tokens before the usual score ranks the rest. Only the scorer's predictions choose: no label is read.
"""

from __future__ import annotations

import torch

__all__ = ["quota_tokens"]


def _ranks(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Position of every entry in its descending order along ``dim`` (0: the largest); stable on ties."""
    return torch.sort(values, dim=dim, descending=True, stable=True).indices.argsort(dim=dim)


def quota_tokens(class_logits: torch.Tensor, quota: int) -> torch.Tensor:
    """The tokens that the class quotas keep: (B, N, C) presence log-odds -> (B, N) bool.

    A class is predicted present in an image when any of its tokens has a probability above 0.5. The
    ``quota`` places are shared among the present classes as evenly as whole tokens allow; the places
    left over go to the classes predicted smallest (fewest expected tokens), which the quotas exist for.
    Each present class takes its share of its most probable tokens. A token in the share of two classes
    counts for both, so at most ``quota`` tokens are chosen.
    """
    present = class_logits.amax(dim=1) > 0  # (B, C)
    classes = present.sum(dim=1, keepdim=True).clamp_min(1)  # (B, 1)
    expected_tokens = torch.sigmoid(class_logits).sum(dim=1)  # (B, C)
    smallest_first = _ranks(torch.where(present, -expected_tokens, -torch.inf), dim=1)
    share = torch.where(present, quota // classes + (smallest_first < quota % classes).long(), 0)
    return (_ranks(class_logits, dim=1) < share.unsqueeze(1)).any(dim=-1)
