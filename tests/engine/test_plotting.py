"""Plotter: PNGs from a hand-written loss.tsv / weights.txt, and clear errors for bad files."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from engine.plotting import (
    PlotInputError,
    Plotter,
    learning_rate_axis_from_zero,
    pyplot,
    read_loss_tsv,
    spread,
)

HEADER = "EPOCH\tTIMESTAMP\tBAD_EPOCHS\tLEARNING_RATE\tTRAIN_LOSS\tDEV_LOSS\tDEV_PRECISION\tDEV_RECALL\tDEV_F1\tDEV_ACCURACY"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def write_loss(path: Path, epochs: int = 4) -> Path:
    rows = [HEADER]
    for e in range(1, epochs + 1):
        rows.append(f"{e}\t10:00:0{e}\t0\t{0.1 / e}\t{1 / e}\t{1.2 / e}\t0.{e}\t0.{e}\t0.{e}\t0.{e}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_training_curves_png(tmp_path: Path) -> None:
    loss = write_loss(tmp_path / "loss.tsv")
    columns = read_loss_tsv(loss)
    assert columns["EPOCH"] == [1, 2, 3, 4] and "TIMESTAMP" not in columns
    out = Plotter().plot_training_curves(loss)
    assert out == tmp_path / "training.png"
    assert png_size(out) == (800, 1000) and out.stat().st_size > 20_000
    custom = Plotter().plot_training_curves(loss, tmp_path / "curves.png")
    assert custom.is_file()


def test_training_curves_without_dev_columns(tmp_path: Path) -> None:
    path = tmp_path / "loss.tsv"
    path.write_text(
        "EPOCH\tTIMESTAMP\tBAD_EPOCHS\tLEARNING_RATE\tTRAIN_LOSS\n1\tx\t0\t0.1\t2.0\n", encoding="utf-8"
    )
    assert png_size(Plotter().plot_training_curves(path)) == (800, 1000)


@pytest.mark.parametrize("rate", [0.1, 5e-5])
def test_a_constant_learning_rate_is_drawn_flat_from_zero(rate: float) -> None:
    # Matplotlib alone zoomed in on it: ticks 0.094 ... 0.106, or 4.7 ... 5.3 times 1e-5.
    plt = pyplot()
    fig, ax = plt.subplots()
    try:
        ax.plot([1, 2, 3], [rate] * 3)
        learning_rate_axis_from_zero(ax, [rate] * 3)
        fig.canvas.draw()
        low, high = ax.get_ylim()
        assert low == 0 and rate < high < 1.2 * rate
    finally:
        plt.close(fig)


def test_weights_png(tmp_path: Path) -> None:
    lines = ["ITERATION\tPARAMETER\tINDEX\tVALUE"]
    for it in range(1, 6):
        for name in ("linear.weight", "linear.bias", "rnn.weight_ih_l0"):
            lines.extend(f"{it}\t{name}\t{i}\t{0.01 * it * i}" for i in range(3))
    path = tmp_path / "weights.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = Plotter().plot_weights(path)
    assert out == tmp_path / "weights.png"
    assert png_size(out) == (1200, 600)  # 3 parameters: 2 columns x 2 rows of 6x3 inches at 100 dpi


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("loss.tsv", "", "no header with EPOCH"),
        ("loss.tsv", f"{HEADER}\n1\t2\n", "line 2: 2 cells"),
        ("weights.txt", "not a header\n", "no ITERATION header"),
        ("weights.txt", "ITERATION\tPARAMETER\tINDEX\tVALUE\n1\tw\t0\n", "line 2: expected 4"),
        ("weights.txt", "ITERATION\tPARAMETER\tINDEX\tVALUE\n", "no weights recorded"),
    ],
)
def test_bad_input_files_are_named(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    plot = Plotter().plot_training_curves if name == "loss.tsv" else Plotter().plot_weights
    with pytest.raises(PlotInputError, match=message) as error:
        plot(path)
    assert str(path) in str(error.value)


def test_weight_panels_spread_over_the_whole_model() -> None:
    # The first 12 tensors of a GloVe + character BiLSTM-CRF are all embeddings.
    names = [f"p{i}" for i in range(20)]
    chosen = spread(names, 12)
    assert len(chosen) == 12 == len(set(chosen)) and chosen[0] == "p0" and chosen[-1] == "p19"
    assert spread(names[:5], 12) == names[:5]
