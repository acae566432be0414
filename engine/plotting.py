"""PNG plots of a training run: the curves in loss.tsv and the weight traces in weights.txt.

``Plotter().plot_training_curves("base/loss.tsv")`` -> ``base/training.png``;
``Plotter().plot_weights("base/weights.txt")`` -> ``base/weights.png``. Rendered with
matplotlib's Agg backend (no display needed), titled, with labelled axes and legends.
"""

from __future__ import annotations

import csv
import math
import threading
from collections import defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

# pyplot keeps global state: one figure at a time per process (the service's curves share it).
PYPLOT_LOCK = threading.Lock()


class PlotInputError(ValueError):
    """A loss.tsv or weights.txt that cannot be plotted; the message names the file and why."""


def _float(text: str) -> float:
    try:
        return float(text) if text != "" else math.nan
    except ValueError:
        return math.nan


def read_loss_tsv(path: Path) -> dict[str, list[float]]:
    """Column name -> values (missing cells as NaN)."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    if not rows or "EPOCH" not in rows[0]:
        raise PlotInputError(f"{path}: not a loss.tsv (no header with EPOCH)")
    header = rows[0]
    columns: dict[str, list[float]] = {name: [] for name in header if name != "TIMESTAMP"}
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise PlotInputError(f"{path}, line {line_no}: {len(row)} cells, the header has {len(header)}")
        for name, cell in zip(header, row, strict=True):
            if name != "TIMESTAMP":
                columns[name].append(_float(cell))
    return columns


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend, imported when first drawn (it costs ~0.5 s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _has_data(values: list[float]) -> bool:
    return any(not math.isnan(v) for v in values)


def learning_rate_axis_from_zero(ax: Any, values: list[float]) -> None:
    """Matplotlib zooms in on a constant line, so a fixed rate of 0.1 looked like one that varied
    between 0.094 and 0.106; from 0 up, a constant rate is a flat line and annealing reads as such."""
    finite = [v for v in values if not math.isnan(v)]
    if finite and max(finite) > 0:
        ax.set_ylim(0, max(finite) * 1.15)


def spread(names: list[str], count: int) -> list[str]:
    """``count`` of ``names`` spread evenly, the first and the last included: the first twelve
    tensors of a tagger are all embeddings, and its LSTM, output layer and CRF never showed."""
    if len(names) <= count:
        return names
    if count <= 1:
        return names[:count]
    return [names[round(i * (len(names) - 1) / (count - 1))] for i in range(count)]


class Plotter:
    def plot_training_curves(self, loss_file: str | Path, output: str | Path | None = None) -> Path:
        """Loss (train/dev/test), scores (dev/test F1 and accuracy) and the learning rate per epoch."""
        path = Path(loss_file)
        data = read_loss_tsv(path)
        out = Path(output) if output is not None else path.with_name("training.png")
        epochs = data["EPOCH"]
        plt = pyplot()
        from matplotlib.ticker import MaxNLocator

        with PYPLOT_LOCK:
            fig, (ax_loss, ax_score, ax_lr) = plt.subplots(3, 1, figsize=(8, 10), dpi=100, sharex=True)
            try:
                for name, style in (("TRAIN_LOSS", "o-"), ("DEV_LOSS", "s-"), ("TEST_LOSS", "^-")):
                    if name in data and _has_data(data[name]):
                        ax_loss.plot(epochs, data[name], style, label=name.split("_")[0].lower() + " loss")
                ax_loss.set_ylabel("loss")
                ax_loss.set_title("loss per epoch")
                for name in ("DEV_F1", "DEV_ACCURACY", "TEST_F1", "TEST_ACCURACY"):
                    if name in data and _has_data(data[name]):
                        split, metric = name.lower().split("_")
                        ax_score.plot(epochs, data[name], "o-", label=f"{split} {metric}")
                ax_score.set_ylabel("score")
                ax_score.set_title("evaluation scores per epoch")
                ax_lr.plot(epochs, data["LEARNING_RATE"], "o-", color="tab:gray", label="learning rate")
                learning_rate_axis_from_zero(ax_lr, data["LEARNING_RATE"])
                ax_lr.set_ylabel("learning rate")
                ax_lr.set_xlabel("epoch")
                ax_lr.set_title("learning rate per epoch")
                for ax in (ax_loss, ax_score, ax_lr):
                    if ax.get_legend_handles_labels()[0]:
                        ax.legend(loc="best")
                    else:
                        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
                ax_lr.xaxis.set_major_locator(MaxNLocator(integer=True))
                fig.suptitle(f"training curves: {path.parent.name or path.name}")
                fig.tight_layout(rect=(0, 0, 1, 0.97))
                fig.savefig(out, format="png")
            finally:
                plt.close(fig)
        return out

    def plot_weights(
        self, weights_file: str | Path, output: str | Path | None = None, max_parameters: int = 12
    ) -> Path:
        """One panel per parameter tensor, at most ``max_parameters`` of them spread evenly over
        the model (first to last): the sampled entries' values over training iterations."""
        path = Path(weights_file)
        traces: dict[str, dict[int, tuple[list[float], list[float]]]] = defaultdict(dict)
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        if not lines or not lines[0].startswith("ITERATION"):
            raise PlotInputError(f"{path}: not a weights.txt (no ITERATION header)")
        for line_no, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            cells = line.split("\t")
            if len(cells) != 4:
                raise PlotInputError(
                    f"{path}, line {line_no}: expected 4 tab-separated cells, got {len(cells)}"
                )
            iteration, name, entry, value = cells
            xs, ys = traces[name].setdefault(int(entry), ([], []))
            xs.append(float(iteration))
            ys.append(_float(value))
        if not traces:
            raise PlotInputError(f"{path}: no weights recorded")
        names = spread(list(traces), max_parameters)
        out = Path(output) if output is not None else path.with_name("weights.png")
        cols = 2 if len(names) > 1 else 1
        rows = math.ceil(len(names) / cols)
        plt = pyplot()
        with PYPLOT_LOCK:
            fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3 * rows), dpi=100, squeeze=False)
            try:
                for ax, name in zip(axes.flat, names, strict=False):
                    for index, (xs, ys) in sorted(traces[name].items()):
                        ax.plot(xs, ys, linewidth=1, label=f"[{index}]")
                    ax.set_title(name, fontsize=9)
                    ax.set_xlabel("iteration (batch)")
                    ax.set_ylabel("value")
                    ax.legend(loc="best", fontsize=6, ncol=2, title="entry", title_fontsize=6)
                for ax in list(axes.flat)[len(names) :]:
                    ax.axis("off")
                fig.suptitle(f"sampled weights during training: {path.parent.name or path.name}")
                fig.tight_layout(rect=(0, 0, 1, 0.97))
                fig.savefig(out, format="png")
            finally:
                plt.close(fig)
        return out
