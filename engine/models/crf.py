"""A linear-chain conditional random field over per-token tag scores, batched on tensors.

Scores of a tag path ``y`` for emissions ``e`` (``[batch, time, tags]``):
``start[y_0] + sum_t e[t, y_t] + sum_t trans[y_{t-1}, y_t] + end[y_last]``.
Every method takes a boolean ``mask`` ``[batch, time]`` (True for real tokens, a prefix of each
row; every sentence has at least one token) and loops over time steps only: sentences and tags are
handled by tensor operations, so a batch of 64 sentences costs one step per token position.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

# Every factor of a scaled step (a normalised alpha, a move, an emission) is at least e^-spread of
# its scores, so while the spreads sum to under ~350 nats no product reaches float64's smallest
# normal number. Beyond that (hard constraints such as -10000 transitions) a move of the best path
# could round to 0: not a NaN, but confident marginals on a wrong path.
SCALED_SPREAD_LIMIT = 300.0


def _score_spread(e: np.ndarray, trans: np.ndarray, start: np.ndarray, end: np.ndarray) -> float:
    rows = float(np.ptp(e, axis=2).max()) if e.size else 0.0
    return float(np.ptp(trans) + np.ptp(start) + np.ptp(end)) + rows


class CRF(nn.Module):
    def __init__(self, num_tags: int) -> None:
        super().__init__()
        self.num_tags = num_tags
        # transitions[i, j]: score of moving from tag i to tag j
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))
        self.start_transitions = nn.Parameter(torch.zeros(num_tags))
        self.end_transitions = nn.Parameter(torch.zeros(num_tags))
        nn.init.uniform_(self.transitions, -0.1, 0.1)
        nn.init.uniform_(self.start_transitions, -0.1, 0.1)
        nn.init.uniform_(self.end_transitions, -0.1, 0.1)

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}"

    def path_score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Score of the given tag paths ``tags`` ``[B, T]`` -> ``[B]``."""
        maskf = mask.to(emissions.dtype)
        emitted = emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1)  # [B, T]
        score = self.start_transitions[tags[:, 0]] + (emitted * maskf).sum(dim=1)
        moves = self.transitions[tags[:, :-1], tags[:, 1:]]  # [B, T-1]
        score = score + (moves * maskf[:, 1:]).sum(dim=1)
        last = mask.sum(dim=1) - 1
        last_tags = tags.gather(1, last.unsqueeze(1)).squeeze(1)
        return score + self.end_transitions[last_tags]

    def _forward_alphas(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """alpha[t][b, j]: log-sum of all path prefixes ending in tag j at step t (frozen past
        the sentence's end)."""
        alpha = self.start_transitions + emissions[:, 0]
        alphas = [alpha]
        transitions = self.transitions.unsqueeze(0)
        for t in range(1, emissions.shape[1]):
            step = torch.logsumexp(alpha.unsqueeze(2) + transitions, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t : t + 1], step, alpha)
            alphas.append(alpha)
        return alphas

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log Z: log-sum-exp of the scores of all paths -> ``[B]``."""
        alpha = self._forward_alphas(emissions, mask)[-1]
        return torch.logsumexp(alpha + self.end_transitions, dim=1)

    def neg_log_likelihood(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """``log Z - score(gold)`` per sentence -> ``[B]``."""
        return self.log_partition(emissions, mask) - self.path_score(emissions, tags, mask)

    # Inference (marginals, Viterbi) runs on NumPy float64 arrays: each recursion step is a few
    # operations on [batch, tags, tags] arrays of a few hundred numbers, where a NumPy call costs
    # about a microsecond and a torch op's dispatch ten times that - these loops were a third of
    # predict's time for short sentences. float64 also keeps the scaled recursion clear of underflow.
    def _numpy(self, emissions: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, ...]:
        def array(t: torch.Tensor) -> np.ndarray:
            return t.detach().to("cpu", torch.float64).numpy()

        return (
            array(emissions),
            mask.detach().cpu().numpy().astype(bool),
            array(self.transitions),
            array(self.start_transitions),
            array(self.end_transitions),
        )

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """P(y_t = j | x) by forward-backward -> ``[B, T, K]`` (rows past a sentence's end are
        meaningless).

        Runs in probability space with per-step normalisation (Rabiner's scaling): each step is
        one small matrix product instead of a log-sum-exp over ``[B, K, K]``. Scores so extreme
        that a step could underflow take the log-space recursion instead."""
        e, m, trans, start, end = self._numpy(emissions, mask)
        batch, time, num_tags = e.shape
        if _score_spread(e, trans, start, end) > SCALED_SPREAD_LIMIT:
            return self._log_marginals(emissions, mask)
        active = m[:, :, None]
        moves = np.exp(trans - trans.max())
        emitted = np.exp(e - e.max(axis=2, keepdims=True))
        alphas = np.empty_like(e)
        betas = np.empty_like(e)
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha = np.exp(start - start.max()) * emitted[:, 0]
            alpha = alpha / alpha.sum(axis=1, keepdims=True)
            alphas[:, 0] = alpha
            for t in range(1, time):
                step = (alpha @ moves) * emitted[:, t]
                alpha = np.where(active[:, t], step / step.sum(axis=1, keepdims=True), alpha)
                alphas[:, t] = alpha
            end_p = np.exp(end - end.max())
            end_p = np.broadcast_to(end_p / end_p.sum(), (batch, num_tags))
            beta = end_p
            betas[:, time - 1] = beta
            for t in range(time - 2, -1, -1):
                step = (beta * emitted[:, t + 1]) @ moves.T
                # a position that is its sentence's last (next one masked) ends with end_transitions
                beta = np.where(active[:, t + 1], step / step.sum(axis=1, keepdims=True), end_p)
                betas[:, t] = beta
            joint = alphas * betas
            result = joint / joint.sum(axis=2, keepdims=True)
        if not np.isfinite(result).all():
            return self._log_marginals(emissions, mask)
        return torch.from_numpy(result.astype(np.float32)).to(emissions.device)

    def _log_marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``marginals`` by the log-space forward-backward recursion (never underflows)."""
        e, m, trans, start, end = self._numpy(emissions, mask)
        batch, time, num_tags = e.shape
        active = m[:, :, None]
        alphas = np.empty_like(e)
        betas = np.empty_like(e)
        alpha = start + e[:, 0]
        alphas[:, 0] = alpha
        for t in range(1, time):
            step = _logsumexp(alpha[:, :, None] + trans, axis=1) + e[:, t]
            alpha = np.where(active[:, t], step, alpha)
            alphas[:, t] = alpha
        end_b = np.broadcast_to(end, (batch, num_tags))
        beta = end_b
        betas[:, time - 1] = beta
        for t in range(time - 2, -1, -1):
            step = _logsumexp(trans + (e[:, t + 1] + beta)[:, None, :], axis=2)
            beta = np.where(active[:, t + 1], step, end_b)
            betas[:, t] = beta
        log_z = _logsumexp(alpha + end, axis=1)
        # rounding can push a certain tag a hair above 1
        result = np.minimum(np.exp(alphas + betas - log_z[:, None, None]), 1.0)
        return torch.from_numpy(result.astype(np.float32)).to(emissions.device)

    def viterbi_decode(
        self, emissions: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Best path per sentence -> (tags ``[B, T]`` (padding repeats the last tag), scores ``[B]``)."""
        e, m, trans, start, end = self._numpy(emissions, mask)
        batch, time, num_tags = e.shape
        rows = np.arange(batch)
        identity = np.arange(num_tags)
        # past the end a tag points to itself, so backtracking carries the last tag through
        back = np.empty((max(time - 1, 0), batch, num_tags), dtype=np.int64)
        score = start + e[:, 0]
        for t in range(1, time):
            candidates = score[:, :, None] + trans  # [B, from, to]
            previous = candidates.argmax(axis=1)
            best = candidates.max(axis=1)  # the same values as indexing with previous, cheaper
            score = np.where(m[:, t, None], best + e[:, t], score)
            back[t - 1] = np.where(m[:, t, None], previous, identity)
        score = score + end
        last = score.argmax(axis=1)
        best_score = score[rows, last]
        path = np.empty((batch, time), dtype=np.int64)
        path[:, -1] = last
        for t in range(time - 2, -1, -1):
            last = back[t, rows, last]
            path[:, t] = last
        return (
            torch.from_numpy(path).to(emissions.device),
            torch.from_numpy(best_score.astype(np.float32)).to(emissions.device),
        )


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = a.max(axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return (top + np.log(np.exp(a - top).sum(axis=axis, keepdims=True))).squeeze(axis)
