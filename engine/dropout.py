"""Dropout over sequences of token vectors ``[batch, tokens, features]``, as Flair uses them.

``WordDropout`` drops whole tokens and does not rescale (as in Flair: a dropped word is a missing
word, not a louder neighbour). ``LockedDropout`` (variational dropout) drops the same features at
every token of a sentence, so a recurrent layer sees one consistent mask per sentence.
"""

from __future__ import annotations

import torch
from torch import nn


class WordDropout(nn.Module):
    """Zero whole token vectors with probability ``p`` (training only)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty(x.shape[0], x.shape[1], 1, device=x.device).bernoulli_(1 - self.p)
        return x * keep


class LockedDropout(nn.Module):
    """Dropout with one mask per sentence shared by all its tokens (variational dropout)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty(x.shape[0], 1, x.shape[2], device=x.device).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)
