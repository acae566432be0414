"""Training curves as a PNG, rendered from the stored per-epoch metrics and batch-loss points."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from engine.plotting import PYPLOT_LOCK, learning_rate_axis_from_zero, pyplot
from service.db.models import JobEpochMetric
from service.loss_points import BatchLoss


def render_curves(title: str, epochs: Sequence[JobEpochMetric], batches: Sequence[BatchLoss]) -> bytes:
    plt = pyplot()
    with PYPLOT_LOCK:
        fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(11, 4), dpi=90)
        try:
            if batches:
                # An epoch's last point is at its last batch (the worker closes a point there).
                per_epoch = max((b.batch for b in batches), default=1) or 1
                xs = [b.epoch - 1 + b.batch / per_epoch for b in batches]
                # NaN, not None: a diverged point leaves a gap in the line
                losses = [math.nan if b.loss is None else b.loss for b in batches]
                ax_loss.plot(xs, losses, color="0.75", linewidth=0.8, label="batch loss")
            done = [e for e in epochs if e.train_loss is not None]
            if done:
                ax_loss.plot([e.epoch for e in done], [e.train_loss for e in done], "o-", label="train loss")
            dev = [e for e in epochs if e.dev_loss is not None]
            if dev:
                ax_loss.plot([e.epoch for e in dev], [e.dev_loss for e in dev], "s-", label="dev loss")
            ax_loss.set_xlabel("epoch")
            ax_loss.set_ylabel("loss")
            ax_loss.set_title("loss")
            scored = [e for e in epochs if e.dev_main_score is not None]
            if scored:
                ax_score.plot(
                    [e.epoch for e in scored], [e.dev_main_score for e in scored], "o-", label="dev score"
                )
                best = [e for e in scored if e.is_best]
                if best:
                    ax_score.plot(
                        [e.epoch for e in best],
                        [e.dev_main_score for e in best],
                        "*",
                        markersize=12,
                        label="best",
                    )
            handles, labels = ax_score.get_legend_handles_labels()
            lrs = [e for e in epochs if e.learning_rate is not None]
            if lrs:
                ax_lr = ax_score.twinx()
                rates = [e.learning_rate for e in epochs if e.learning_rate is not None]
                (line,) = ax_lr.plot([e.epoch for e in lrs], rates, ":", color="tab:gray")
                learning_rate_axis_from_zero(ax_lr, rates)
                ax_lr.set_ylabel("learning rate")
                # the twin axis's line would have no legend entry of its own
                handles, labels = [*handles, line], [*labels, "learning rate (right axis)"]
            ax_score.set_xlabel("epoch")
            ax_score.set_ylabel("dev main score")
            ax_score.set_title("dev score")
            legends = ((ax_loss, *ax_loss.get_legend_handles_labels()), (ax_score, handles, labels))
            for ax, entries, names in legends:
                if entries:
                    ax.legend(entries, names, loc="best", fontsize=8)
                else:
                    ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
            fig.suptitle(title)
            fig.tight_layout()
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png")
            return buffer.getvalue()
        finally:
            plt.close(fig)
