"""How many batch-loss points an epoch keeps: the worker writes at most that many rows an epoch
(``worker.progress.LossPoints``), and the API folds the rows of a job that ran before they were
bounded (one a batch) the same way when it reads them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import NamedTuple

# Enough for a curve as wide as a screen per epoch; a 150-epoch run stores at most 30,000 rows.
LOSS_POINTS_PER_EPOCH = 200


class BatchLoss(NamedTuple):
    """A stored batch-loss point: ``loss`` is the mean of the batches of ``epoch`` up to
    ``batch`` since the previous point; None when that was not a finite number (the run diverged)."""

    epoch: int
    batch: int
    loss: float | None
    learning_rate: float | None


def loss_stride(batches_per_epoch: int, points: int = LOSS_POINTS_PER_EPOCH) -> int:
    """Batches per stored loss point, so that an epoch has at most ``points`` of them."""
    return max(1, math.ceil(max(1, batches_per_epoch) / max(1, points)))


def bounded(points: Iterable[BatchLoss], per_epoch: int = LOSS_POINTS_PER_EPOCH) -> Iterator[BatchLoss]:
    """``points`` (ordered by epoch and batch) with an epoch of more than ``per_epoch`` of them
    folded as the worker folds batches: a point per ``loss_stride`` batches, their mean loss."""
    epoch: list[BatchLoss] = []
    for point in points:
        if epoch and point.epoch != epoch[0].epoch:
            yield from _fold(epoch, per_epoch)
            epoch = []
        epoch.append(point)
    yield from _fold(epoch, per_epoch)


def _fold(epoch: list[BatchLoss], per_epoch: int) -> Iterator[BatchLoss]:
    if len(epoch) <= per_epoch:
        yield from epoch
        return
    stride = loss_stride(epoch[-1].batch, per_epoch)
    group: list[BatchLoss] = []
    for point in epoch:
        group.append(point)
        if point.batch % stride == 0 or point is epoch[-1]:
            losses = [p.loss for p in group]
            mean = None if None in losses else sum(x for x in losses if x is not None) / len(losses)
            yield BatchLoss(point.epoch, point.batch, mean, point.learning_rate)
            group = []
