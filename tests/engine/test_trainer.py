"""ModelTrainer on a tiny real BiLSTM-CRF tagger: chunking, resume, cancel, annealing, files."""

from __future__ import annotations

import json
import math
import random
import re
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from engine.data import Corpus, Label, Sentence, Span
from engine.embeddings.character import CharacterEmbeddings
from engine.embeddings.stacked import StackedEmbeddings
from engine.embeddings.word import UNK_ROW, WordEmbeddings
from engine.models.base import load_model, register_model
from engine.models.sequence_tagger import SequenceTagger
from engine.plotting import Plotter
from engine.training import (
    BatchEnded,
    CheckpointError,
    ConsoleProgress,
    EpochEnded,
    ModelTrainer,
    TrainerCallback,
    TrainerConfigError,
    TrainingDiverged,
    TrainingEnded,
    TrainingStarted,
    loss_columns,
)
from engine.training.checkpoint import read_checkpoint

WORDS = ["George", "Washington", "went", "to", "Berlin", "Paris", "met", "Anna", "in", "the", "city", "."]
ENTITIES = {"George": "PER", "Washington": "PER", "Anna": "PER", "Berlin": "LOC", "Paris": "LOC"}


def make_sentences(count: int, seed: int) -> list[Sentence]:
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 8))]
        sentence = Sentence(words)
        for i, word in enumerate(words):
            if word in ENTITIES:
                sentence.add_span(i, i + 1, "ner", ENTITIES[word])
        sentences.append(sentence)
    return sentences


def make_corpus() -> Corpus:
    return Corpus(make_sentences(40, 1), make_sentences(12, 2), make_sentences(12, 3))


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two threads
    make every op wait for a descheduled one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vectors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GloVe-format text file for the test vocabulary."""
    path = tmp_path_factory.mktemp("vectors") / "tiny.txt"
    rng = random.Random(0)
    lines = [" ".join([w.lower()] + [f"{rng.uniform(-1, 1):.4f}" for _ in range(6)]) for w in WORDS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_tagger(corpus: Corpus, vectors: Path, dropout: bool = True, seed: int = 0) -> SequenceTagger:
    torch.manual_seed(seed)
    embeddings = StackedEmbeddings(
        [
            WordEmbeddings(str(vectors), dtype="float32"),
            CharacterEmbeddings(char_embedding_dim=4, hidden_size_char=4),
        ]
    )
    rate = 0.2 if dropout else 0.0
    return SequenceTagger(
        embeddings,
        corpus.make_label_dictionary("ner"),
        "ner",
        hidden_size=8,
        dropout=rate,
        word_dropout=rate,
        locked_dropout=rate,
    )


def loss_rows(path: Path) -> list[list[str]]:
    """loss.tsv without the TIMESTAMP column."""
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    drop = rows[0].index("TIMESTAMP")
    return [row[:drop] + row[drop + 1 :] for row in rows]


def same_weights(a: Path, b: Path) -> bool:
    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


class Recorder(TrainerCallback):
    def __init__(self, stop_at: tuple[int, int] | None = None) -> None:
        self.events: list[Any] = []
        self.stop_at = stop_at
        self.position = (1, 0)

    def on_train_start(self, info: TrainingStarted) -> None:
        self.events.append(info)

    def on_batch_end(self, info: BatchEnded) -> None:
        self.events.append(info)
        self.position = (info.epoch, info.batch)

    def on_epoch_end(self, info: EpochEnded) -> None:
        self.events.append(info)

    def on_checkpoint(self, path: Path, epoch: int) -> None:
        self.events.append(("checkpoint", path, epoch))

    def on_train_end(self, info: TrainingEnded) -> None:
        self.events.append(info)

    def should_stop(self) -> bool:
        return self.stop_at is not None and self.position == self.stop_at

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


FAST = {"mini_batch_size": 8, "learning_rate": 0.1, "seed": 7, "callbacks": []}


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_chunked_batches_give_the_unchunked_update(tmp_path: Path, vectors: Path, reduction: str) -> None:
    corpus = make_corpus()
    whole = make_tagger(corpus, vectors, dropout=False)
    chunked = make_tagger(corpus, vectors, dropout=False)
    assert all(torch.equal(a, b) for a, b in zip(whole.parameters(), chunked.parameters(), strict=True))
    args = {
        **FAST,
        "max_epochs": 2,
        "mini_batch_size": 16,
        "max_grad_norm": None,
        "loss_reduction": reduction,
    }
    args["learning_rate"] = 0.1 if reduction == "mean" else 0.005
    ModelTrainer(whole, corpus).train(tmp_path / "whole", **args)
    ModelTrainer(chunked, make_corpus()).train(tmp_path / "chunked", mini_batch_chunk_size=5, **args)
    moved = max(
        (a.detach().cpu() - b).abs().max().item()
        for a, b in zip(
            whole.parameters(), make_tagger(corpus, vectors, dropout=False).parameters(), strict=True
        )
    )
    assert moved > 1e-3  # training changed the weights, so the comparison below means something
    for (name, a), b in zip(whole.named_parameters(), chunked.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def straight_and_resumed(
    tmp_path: Path, vectors: Path, args: dict[str, Any], epochs: int, interrupt_after: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train ``epochs`` epochs in one go (``straight/``), and again stopped with a checkpoint
    after ``interrupt_after`` (``part1/``) and resumed to ``epochs`` (``part2/``)."""
    corpus = make_corpus()
    straight = ModelTrainer(make_tagger(corpus, vectors), corpus).train(
        tmp_path / "straight", max_epochs=epochs, **args
    )
    corpus = make_corpus()
    first = ModelTrainer(make_tagger(corpus, vectors), corpus).train(
        tmp_path / "part1", max_epochs=interrupt_after, checkpoint=True, **args
    )
    assert first["epochs_done"] == interrupt_after
    resumed = ModelTrainer.load_checkpoint(tmp_path / "part1" / "checkpoint", corpus)
    result = resumed.train(tmp_path / "part2", max_epochs=epochs, checkpoint=True, **args)
    assert result["epochs_done"] == epochs
    return straight, result


def test_resumed_run_equals_uninterrupted_run(tmp_path: Path, vectors: Path) -> None:
    args = {**FAST, "max_grad_norm": 5.0}
    straight, result = straight_and_resumed(tmp_path, vectors, args, epochs=3, interrupt_after=1)
    assert same_weights(tmp_path / "straight" / "final-model", tmp_path / "part2" / "final-model")
    assert same_weights(tmp_path / "straight" / "best-model", tmp_path / "part2" / "best-model")
    assert loss_rows(tmp_path / "straight" / "loss.tsv") == loss_rows(tmp_path / "part2" / "loss.tsv")
    assert len(loss_rows(tmp_path / "part2" / "loss.tsv")) == 4
    assert result["test_scores"] == straight["test_scores"]


def test_cancel_keeps_the_last_epoch_and_resume_reaches_max_epochs(tmp_path: Path, vectors: Path) -> None:
    corpus = make_corpus()
    recorder = Recorder(stop_at=(2, 2))  # stop before batch 3 of epoch 2
    trainer = ModelTrainer(make_tagger(corpus, vectors), corpus)
    result = trainer.train(
        tmp_path / "run",
        max_epochs=3,
        checkpoint=True,
        write_weights=True,
        **{**FAST, "callbacks": [recorder]},
    )

    assert result["status"] == "cancelled" and result["epochs_done"] == 1
    ended = recorder.of(TrainingEnded)[0]
    assert ended.status == "cancelled" and ended.epochs_done == 1 and ended.model_path is None
    assert [e.batch for e in recorder.of(BatchEnded) if e.epoch == 2] == [1, 2]
    assert [e for e in recorder.events if isinstance(e, tuple)] == [
        ("checkpoint", tmp_path / "run" / "checkpoint", 1)
    ]
    checkpoint = read_checkpoint(tmp_path / "run" / "checkpoint")
    assert checkpoint.state.epoch == 1
    assert isinstance(load_model(checkpoint.model_dir), SequenceTagger)

    resumed = ModelTrainer.load_checkpoint(tmp_path / "run" / "checkpoint", corpus)
    result = resumed.train(tmp_path / "run", max_epochs=3, checkpoint=True, write_weights=True, **FAST)
    assert result["status"] == "completed" and result["epochs_done"] == 3
    assert [int(r[0]) for r in loss_rows(tmp_path / "run" / "loss.tsv")[1:]] == [1, 2, 3]

    corpus = make_corpus()
    ModelTrainer(make_tagger(corpus, vectors), corpus).train(
        tmp_path / "straight", max_epochs=3, write_weights=True, **FAST
    )
    assert same_weights(tmp_path / "straight" / "final-model", tmp_path / "run" / "final-model")
    # the cancelled part of epoch 2 was sampled, then trained again: its samples are replaced
    assert (tmp_path / "run" / "weights.txt").read_text() == (
        tmp_path / "straight" / "weights.txt"
    ).read_text()


@register_model
class FlatScoreTagger(SequenceTagger):
    """The dev score never improves after the first epoch, so the annealing is predictable."""

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        result = super().evaluate(*args, **kwargs)
        result.main_score = 0.5
        return result


def test_annealing_halves_after_patience_bad_epochs_and_stops_below_minimum(
    tmp_path: Path, vectors: Path
) -> None:
    corpus = make_corpus()
    model = flat_tagger(corpus, vectors)
    recorder = Recorder()
    anneal = {
        "max_epochs": 30,
        "patience": 1,
        "anneal_factor": 0.5,
        "min_learning_rate": 0.02,
        "checkpoint": True,
    }
    result = ModelTrainer(model, corpus).train(
        tmp_path / "anneal", **anneal, **{**FAST, "callbacks": [recorder]}
    )
    epochs = recorder.of(EpochEnded)
    # epoch 1 is the best; every second bad epoch (more than patience=1) halves the rate
    assert [e.learning_rate for e in epochs] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert [e.bad_epochs for e in epochs] == [0, 1, 0, 1, 0, 1, 0]
    assert [e.is_best for e in epochs] == [True] + [False] * 6
    assert result["epochs_done"] == 7 and result["status"] == "completed"
    rows = loss_rows(tmp_path / "anneal" / "loss.tsv")
    assert [float(r[rows[0].index("LEARNING_RATE")]) for r in rows[1:]] == pytest.approx(
        [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    )
    assert "below the minimum" in (tmp_path / "anneal" / "training.log").read_text()
    # the last checkpoint holds the exhausted rate: resuming from it trains no further epoch
    resumed = ModelTrainer.load_checkpoint(tmp_path / "anneal" / "checkpoint", corpus)
    assert resumed.train(tmp_path / "anneal", **anneal, **FAST)["epochs_done"] == 7
    assert len(loss_rows(tmp_path / "anneal" / "loss.tsv")) == 8


def flat_tagger(corpus: Corpus, vectors: Path) -> FlatScoreTagger:
    """A tagger whose best dev epoch is the first one (its score never improves after it)."""
    base = make_tagger(corpus, vectors)
    return FlatScoreTagger(
        base.embeddings,
        base.label_dictionary,
        "ner",
        hidden_size=8,
        dropout=0.0,
        word_dropout=0.0,
        locked_dropout=0.0,
    )


@pytest.mark.parametrize("interrupt_after", [1, 2])
def test_a_resumed_run_keeps_an_early_best_model(tmp_path: Path, vectors: Path, interrupt_after: int) -> None:
    # Resuming after the best epoch lost the best model (not in the checkpoint, or not saved again
    # on resume from the best epoch itself), or the annealing's count of bad epochs: the resumed
    # run then tested another model or annealed later than the uninterrupted one.
    args = {**FAST, "patience": 2, "anneal_factor": 0.5}
    corpus = make_corpus()
    straight = ModelTrainer(flat_tagger(corpus, vectors), corpus).train(
        tmp_path / "straight", max_epochs=5, **args
    )
    assert straight["best_epoch"] == 1
    corpus = make_corpus()
    ModelTrainer(flat_tagger(corpus, vectors), corpus).train(
        tmp_path / "part1", max_epochs=interrupt_after, checkpoint=True, **args
    )
    resumed = ModelTrainer.load_checkpoint(tmp_path / "part1" / "checkpoint", corpus)
    result = resumed.train(tmp_path / "part2", max_epochs=5, checkpoint=True, **args)
    assert (result["epochs_done"], result["best_epoch"]) == (5, 1)
    assert result["model_path"] == tmp_path / "part2" / "best-model"
    assert same_weights(tmp_path / "straight" / "best-model", tmp_path / "part2" / "best-model")
    straight_rows = loss_rows(tmp_path / "straight" / "loss.tsv")
    assert loss_rows(tmp_path / "part2" / "loss.tsv")[-1] == straight_rows[-1]
    assert result["test_scores"] == straight["test_scores"]


def test_the_final_test_uses_the_best_models_weights(tmp_path: Path, vectors: Path) -> None:
    # The final test evaluated the last epoch's weights while reporting the best model's path.
    corpus = make_corpus()
    model = flat_tagger(corpus, vectors)
    result = ModelTrainer(model, corpus).train(tmp_path, max_epochs=3, device="cpu", **FAST)
    assert (result["best_epoch"], result["model_path"]) == (1, tmp_path / "best-model")
    best = load_file(tmp_path / "best-model" / "model.safetensors")
    final = load_file(tmp_path / "final-model" / "model.safetensors")
    assert any(not torch.equal(best[k], final[k]) for k in best)  # epochs 2 and 3 changed them
    state = model.state_dict()
    assert all(torch.equal(state[k], best[k]) for k in best)


def test_console_progress_prints_epochs_and_the_end(tmp_path: Path, vectors: Path) -> None:
    import io

    stream = io.StringIO()
    corpus = make_corpus()
    ModelTrainer(make_tagger(corpus, vectors), corpus).train(
        tmp_path, max_epochs=2, device="cpu", **{**FAST, "callbacks": [ConsoleProgress(stream=stream)]}
    )
    text = stream.getvalue()
    assert "training on cpu: 40 train / 12 dev sentences, 5 batches per epoch" in text
    assert "epoch 1: train loss" in text and "epoch 2: train loss" in text
    assert "training completed after 2 epochs" in text


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_files_callbacks_and_plots(tmp_path: Path, vectors: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import precision

    monkeypatch.setattr(precision, "_native_bfloat16_cpu", lambda: False)
    corpus = make_corpus()
    recorder = Recorder()
    base = tmp_path / "files"
    result = ModelTrainer(make_tagger(corpus, vectors), corpus).train(
        base,
        max_epochs=2,
        write_weights=True,
        monitor_test=True,
        checkpoint=True,
        embeddings_storage_mode="gpu",  # no GPU here: behaves like "cpu"
        use_amp=True,  # ignored on a CPU without native bfloat16
        device="cpu",  # what this test describes, also on a machine with a GPU
        **{**FAST, "callbacks": [recorder]},
    )
    for name in (
        "training.log",
        "loss.tsv",
        "weights.txt",
        "test.tsv",
        "best-model",
        "final-model",
        "checkpoint",
    ):
        assert (base / name).exists(), name
    header = (base / "loss.tsv").read_text().splitlines()[0].split("\t")
    assert header == loss_columns(with_dev=True, with_test=True)
    assert header[:10] == [
        "EPOCH", "TIMESTAMP", "BAD_EPOCHS", "LEARNING_RATE", "TRAIN_LOSS",
        "DEV_LOSS", "DEV_PRECISION", "DEV_RECALL", "DEV_F1", "DEV_ACCURACY",
    ]  # fmt: skip
    assert header[10:] == ["TEST_LOSS", "TEST_PRECISION", "TEST_RECALL", "TEST_F1", "TEST_ACCURACY"]
    rows = (base / "loss.tsv").read_text().splitlines()[1:]
    assert len(rows) == 2 and all(len(r.split("\t")) == len(header) and "" not in r.split("\t") for r in rows)
    assert "use_amp ignored" in (base / "training.log").read_text()

    started = recorder.of(TrainingStarted)[0]
    assert (started.max_epochs, started.start_epoch, started.batches_per_epoch) == (2, 1, 5)
    assert (started.train_sentences, started.dev_sentences, started.device) == (40, 12, "cpu")
    batches = recorder.of(BatchEnded)
    assert len(batches) == 10 and all(b.loss > 0 and b.tokens_per_s > 0 for b in batches)
    epochs = recorder.of(EpochEnded)
    assert [e.epoch for e in epochs] == [1, 2] and epochs[0].is_best
    # the running loss an epoch's batches report ends where the epoch's train loss is
    assert [batches[4].epoch_loss, batches[9].epoch_loss] == pytest.approx([e.train_loss for e in epochs])
    # and training.log has it every tenth of an epoch (of 5 batches: each), as the tutorial's log
    progress = re.findall(
        r"epoch (\d) - batch (\d)/5 - loss ([\d.]+) - lr ", (base / "training.log").read_text()
    )
    assert [(int(e), int(b)) for e, b, _ in progress] == [(e, b) for e in (1, 2) for b in range(1, 6)]
    assert [float(progress[4][2]), float(progress[9][2])] == pytest.approx(
        [e.train_loss for e in epochs], abs=1e-5
    )
    assert epochs[0].dev_scores is not None and {"main_score", "micro_f1", "accuracy"} <= set(
        epochs[0].dev_scores
    )
    assert epochs[0].test_scores is not None
    ended = recorder.of(TrainingEnded)[0]
    assert ended.status == "completed" and ended.model_path == base / "best-model"
    assert ended.test_scores == result["test_scores"] and ended.best_dev_score == result["best_dev_score"]
    # The final test evaluation in full, per class, like the tutorial's log shows it.
    details = result["test_details"]
    assert details == ended.test_details and details["main_score_name"] == "micro_f1"
    assert {k: details[k] for k in result["test_scores"]} == result["test_scores"]
    gold_support = Counter(span.label.value for sentence in corpus.test for span in sentence.get_spans("ner"))
    assert {
        name: row["support"] for name, row in details["per_class"].items() if row["support"]
    } == gold_support
    assert all(0.0 <= row["f1"] <= 1.0 for row in details["per_class"].values())
    log = (base / "training.log").read_text()
    report = log[log.index("class  precision") :]
    assert all(name in report for name in gold_support), report
    assert isinstance(recorder.events[0], TrainingStarted) and isinstance(recorder.events[-1], TrainingEnded)

    curves = Plotter().plot_training_curves(base / "loss.tsv")
    weights = Plotter().plot_weights(base / "weights.txt")
    assert curves == base / "training.png" and weights == base / "weights.png"
    assert png_size(curves) == (800, 1000)
    width, height = png_size(weights)
    assert width == 1200 and height >= 300
    assert curves.stat().st_size > 20_000 and weights.stat().st_size > 20_000


def test_fine_tune_uses_adamw_with_linear_warmup_and_keeps_the_final_model(
    tmp_path: Path, vectors: Path
) -> None:
    corpus = make_corpus()
    recorder = Recorder()
    trainer = ModelTrainer(make_tagger(corpus, vectors), corpus)
    result = trainer.fine_tune(tmp_path / "ft", max_epochs=2, mini_batch_size=8, seed=1, callbacks=[recorder])
    rates = [b.learning_rate for b in recorder.of(BatchEnded)]
    assert max(rates) == pytest.approx(5e-5, rel=0.01)
    assert rates[0] < rates[1] and rates[-1] < rates[len(rates) // 2]  # warm-up, then decay
    assert result["model_path"] == tmp_path / "ft" / "final-model"
    assert not (tmp_path / "ft" / "best-model").exists()
    assert trainer.model.embeddings.embeddings[0].storage_mode == "none"


def test_one_cycle_and_constant_schedules_run(tmp_path: Path, vectors: Path) -> None:
    corpus = make_corpus()
    recorder = Recorder()
    ModelTrainer(make_tagger(corpus, vectors), corpus).train(
        tmp_path / "oc",
        max_epochs=2,
        scheduler=torch.optim.lr_scheduler.OneCycleLR,
        **{**FAST, "callbacks": [recorder]},
    )
    rates = [b.learning_rate for b in recorder.of(BatchEnded)]
    assert max(rates) == pytest.approx(0.1, rel=0.05) and rates[0] < 0.01 and rates[-1] < 0.01
    result = ModelTrainer(make_tagger(corpus, vectors), corpus).train(
        tmp_path / "const",
        max_epochs=1,
        scheduler="none",
        optimizer="adam",
        **{**FAST, "learning_rate": 0.01},
    )
    assert result["status"] == "completed"


def test_train_with_dev_selects_on_train_loss(tmp_path: Path, vectors: Path) -> None:
    corpus = make_corpus()
    recorder = Recorder()
    ModelTrainer(make_tagger(corpus, vectors), corpus).train(
        tmp_path / "twd", max_epochs=1, train_with_dev=True, **{**FAST, "callbacks": [recorder]}
    )
    assert recorder.of(TrainingStarted)[0].train_sentences == 52
    assert recorder.of(EpochEnded)[0].dev_scores is None
    assert "DEV_LOSS" not in (tmp_path / "twd" / "loss.tsv").read_text()


def test_without_dev_the_lowest_train_loss_is_best_and_a_falling_loss_is_no_plateau(
    tmp_path: Path, vectors: Path
) -> None:
    # Without a dev split the train loss is monitored: lower is better. Selecting the highest loss,
    # or annealing as if a higher value were better, halved the rate while the loss fell.
    corpus = make_corpus()
    recorder = Recorder()
    result = ModelTrainer(make_tagger(corpus, vectors, dropout=False), corpus).train(
        tmp_path,
        max_epochs=3,
        train_with_dev=True,
        patience=0,
        **{**FAST, "callbacks": [recorder]},
    )
    losses = result["train_loss_history"]
    assert losses[0] > losses[1] > losses[2]
    assert result["best_epoch"] == 3
    assert [e.is_best for e in recorder.of(EpochEnded)] == [True, True, True]
    assert [e.learning_rate for e in recorder.of(EpochEnded)] == [0.1, 0.1, 0.1]


def test_the_epoch_train_loss_is_the_mean_of_its_batches_losses(tmp_path: Path, vectors: Path) -> None:
    # Batches reported their summed loss, or the epoch divided its summed loss by the number of
    # batches instead of the number of tokens: the epoch loss fell outside its batches' range.
    corpus = make_corpus()
    recorder = Recorder()
    result = ModelTrainer(make_tagger(corpus, vectors), corpus).train(
        tmp_path, max_epochs=1, **{**FAST, "callbacks": [recorder]}
    )
    batch_losses = [b.loss for b in recorder.of(BatchEnded)]
    assert len(batch_losses) == 5
    (epoch_loss,) = result["train_loss_history"]
    assert min(batch_losses) <= epoch_loss <= max(batch_losses)
    assert recorder.of(EpochEnded)[0].train_loss == epoch_loss


def test_checkpoint_write_is_atomic(tmp_path: Path, vectors: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = make_corpus()
    model = make_tagger(corpus, vectors)
    ModelTrainer(model, corpus).train(tmp_path / "run", max_epochs=1, checkpoint=True, **FAST)
    before = read_checkpoint(tmp_path / "run" / "checkpoint").state
    from engine.training import checkpoint as module

    def crash(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(module, "capture_rng", crash)
    with pytest.raises(OSError, match="disk full"):
        ModelTrainer.load_checkpoint(tmp_path / "run" / "checkpoint", corpus).train(
            tmp_path / "run", max_epochs=2, checkpoint=True, **FAST
        )
    after = read_checkpoint(tmp_path / "run" / "checkpoint").state
    assert after.epoch == before.epoch == 1 and after.history == before.history
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("mini_batch_size", 0, "mini_batch_size"),
        ("mini_batch_chunk_size", -1, "mini_batch_chunk_size"),
        ("optimizer", "lbfgs-ish", "unknown optimizer"),
        ("scheduler", "cosine-ish", "unknown scheduler"),
        ("embeddings_storage_mode", "disk", "embeddings_storage_mode"),
        ("learning_rate", 0.0, "learning_rate"),
        ("learning_rate", float("inf"), "learning_rate must be a finite number"),
        ("weight_decay", float("nan"), "weight_decay must be a finite number"),
        # annealing would stop before the first epoch: a run that trains nothing
        ("min_learning_rate", 1.0, "below min_learning_rate 1"),
    ],
)
def test_bad_arguments_are_named(
    tmp_path: Path, vectors: Path, argument: str, value: Any, message: str
) -> None:
    corpus = make_corpus()
    with pytest.raises(ValueError, match=message):
        ModelTrainer(make_tagger(corpus, vectors), corpus).train(tmp_path, **{**FAST, argument: value})


def test_cuda_device_without_cuda_is_a_clear_error(tmp_path: Path, vectors: Path) -> None:
    if torch.cuda.is_available():
        corpus = make_corpus()
        result = ModelTrainer(make_tagger(corpus, vectors), corpus).train(
            tmp_path, max_epochs=1, device="cuda", use_amp=True, **FAST
        )
        assert result["status"] == "completed"
        return
    corpus = make_corpus()
    with pytest.raises(TrainerConfigError, match="no CUDA"):
        ModelTrainer(make_tagger(corpus, vectors), corpus).train(tmp_path, device="cuda", **FAST)


@pytest.mark.parametrize("bucketing", [True, False])
def test_epoch_batches_cover_the_data_once_and_depend_only_on_seed_and_epoch(
    tmp_path: Path, vectors: Path, bucketing: bool
) -> None:
    from engine.training.trainer import _Run

    corpus = Corpus(make_sentences(1000, 5), make_sentences(5, 6), sample_missing_splits=False)
    trainer = ModelTrainer(make_tagger(corpus, vectors), corpus)
    args = {"self": trainer, "base_path": tmp_path, **_train_defaults(), "length_bucketing": bucketing}
    run = _Run(trainer, {**args, "mini_batch_size": 7})
    first = run._epoch_batches(1, seed=3)
    assert len(first) == run.batches_per_epoch == 143
    assert sorted(i for batch in first for i in batch) == list(range(1000))
    assert first == run._epoch_batches(1, seed=3)
    assert first != run._epoch_batches(2, seed=3)
    spread = sum(max(len(corpus.train[i]) for i in b) - min(len(corpus.train[i]) for i in b) for b in first)
    assert (spread < 143) == bucketing  # bucketed batches hold sentences of (nearly) one length


def _train_defaults() -> dict[str, Any]:
    import inspect

    signature = inspect.signature(ModelTrainer.train)
    return {
        name: p.default
        for name, p in signature.parameters.items()
        if p.default is not inspect.Parameter.empty
    }


@pytest.mark.parametrize(
    ("optimizer", "scheduler", "mode"),
    [
        ("sgd", "anneal_on_plateau", "train"),
        ("adamw", "linear_warmup", "fine_tune"),
        ("adam", "none", "train"),
        ("adamw", "one_cycle", "train"),
    ],
)
def test_the_worker_spec_arguments_are_accepted(
    tmp_path: Path, vectors: Path, optimizer: str, scheduler: str, mode: str
) -> None:
    """worker/build.py passes the spec's trainer section by name, as strings."""
    corpus = make_corpus()
    trainer = ModelTrainer(make_tagger(corpus, vectors), corpus)
    arguments = {
        "learning_rate": 0.01,
        "mini_batch_size": 16,
        "mini_batch_chunk_size": 8,
        "max_epochs": 1,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "anneal_factor": 0.5,
        "patience": 3,
        "min_learning_rate": 0.0001,
        "anneal_with_restarts": scheduler == "anneal_on_plateau",
        "warmup_fraction": 0.1,
        "weight_decay": 0.01,
        "max_grad_norm": None if optimizer == "adam" else 5.0,
        "eval_batch_size": 8,
        "embeddings_storage_mode": "cpu",
        "train_with_dev": False,
        "shuffle": True,
        "checkpoint": True,
        "write_weights": False,
        "seed": 42,
    }
    run = trainer.fine_tune if mode == "fine_tune" else trainer.train
    result = run(tmp_path, callbacks=[], device="cpu", **arguments)
    assert result["status"] == "completed" and result["epochs_done"] == 1
    assert read_checkpoint(tmp_path / "checkpoint").state.train_args["optimizer"] == optimizer


def one_batch_corpus() -> Corpus:
    return Corpus(make_sentences(8, 1), make_sentences(4, 2))


def weight_deltas(model: SequenceTagger, start: SequenceTagger) -> dict[str, torch.Tensor]:
    before = dict(start.named_parameters())
    return {name: (p.detach() - before[name].detach()) for name, p in model.named_parameters()}


def test_the_decoder_learning_rate_updates_the_layers_above_the_embeddings_at_their_own_rate(
    tmp_path: Path, vectors: Path
) -> None:
    """One plain SGD step (one batch, no clipping, no schedule): every parameter moves by rate x
    gradient, so with a decoder rate 3x the base rate the layers above the embeddings move exactly
    3x as far as in the run without it, and the embeddings move the same."""
    args = {
        **FAST,
        "max_epochs": 1,
        "scheduler": "none",
        "max_grad_norm": None,
        "shuffle": False,
        "device": "cpu",
    }
    models = {}
    for name, decoder_rate in (("same", None), ("decoder", 0.3)):
        corpus = one_batch_corpus()
        models[name] = make_tagger(corpus, vectors, dropout=False)
        ModelTrainer(models[name], corpus).train(tmp_path / name, decoder_learning_rate=decoder_rate, **args)
    start = make_tagger(one_batch_corpus(), vectors, dropout=False)
    same, decoder = weight_deltas(models["same"], start), weight_deltas(models["decoder"], start)
    above = [name for name in same if not name.startswith("embeddings.")]
    inside = [name for name in same if name.startswith("embeddings.") and same[name].abs().max() > 0]
    assert above and inside  # the character embeddings train too, so both groups are compared
    for name in above:
        torch.testing.assert_close(decoder[name], 3 * same[name], rtol=1e-4, atol=1e-7, msg=name)
    for name in inside:
        torch.testing.assert_close(decoder[name], same[name], rtol=1e-4, atol=1e-7, msg=name)


def test_schedules_keep_the_ratio_of_the_decoder_rate(tmp_path: Path, vectors: Path) -> None:
    from engine.training.schedulers import AnnealOnPlateau, ConstantRate, LinearWarmupDecay, OneCycle

    def optimizer() -> torch.optim.Optimizer:
        groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in (0.1, 1.0)]
        return torch.optim.SGD(groups, lr=0.1)

    anneal = AnnealOnPlateau(optimizer(), factor=0.5, patience=0)
    anneal.step_epoch(1.0)
    assert anneal.step_epoch(0.5)
    assert anneal.learning_rates == pytest.approx([0.05, 0.5]) and anneal.learning_rate == 0.05
    restored = AnnealOnPlateau(optimizer(), factor=0.5, patience=0)
    restored.load_state_dict(anneal.state_dict())
    assert restored.learning_rates == pytest.approx([0.05, 0.5])
    # a checkpoint from before per-group rates holds a single "lr"
    old = ConstantRate(optimizer())
    old.load_state_dict({"lr": 0.01})
    assert old.learning_rates == [0.01, 0.01]

    linear = LinearWarmupDecay(optimizer(), total_steps=10, warmup_fraction=0.0)
    for _ in range(5):
        linear.step_batch()
    assert linear.learning_rates == pytest.approx([0.05, 0.5])
    cycle = OneCycle(optimizer(), total_steps=10)
    peaks = [0.0, 0.0]
    for _ in range(10):
        cycle.optimizer.step()
        cycle.step_batch()
        peaks = [max(p, lr) for p, lr in zip(peaks, cycle.learning_rates, strict=True)]
    assert peaks == pytest.approx([0.1, 1.0], rel=0.05)


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_one_cycle_changes_the_rate_and_keeps_the_optimizers_momentum(kind: str) -> None:
    # PyTorch's default cycled momentum too: SGD built without momentum trained with 0.85-0.95.
    from engine.training.schedulers import OneCycle

    weight = torch.nn.Parameter(torch.zeros(1))
    if kind == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD([weight], lr=0.1)
    else:
        optimizer = torch.optim.AdamW([weight], lr=0.1, betas=(0.9, 0.999))
    cycle = OneCycle(optimizer, total_steps=6)
    rates, moved = [], []
    for _ in range(6):
        before = weight.item()
        weight.grad = torch.ones(1)
        optimizer.step()
        moved.append(before - weight.item())
        rates.append(optimizer.param_groups[0]["lr"])
        cycle.step_batch()
    assert len(set(rates)) > 3 and max(rates) == pytest.approx(0.1, rel=0.05)
    group = optimizer.param_groups[0]
    if kind == "sgd":
        assert group["momentum"] == 0
        assert moved == pytest.approx(rates)  # each step moves by its own rate: no momentum
    else:
        assert group["betas"] == (0.9, 0.999)


def test_resuming_with_another_decoder_rate_setting_is_a_clear_error(tmp_path: Path, vectors: Path) -> None:
    corpus = make_corpus()
    ModelTrainer(make_tagger(corpus, vectors), corpus).train(
        tmp_path, max_epochs=1, checkpoint=True, decoder_learning_rate=0.5, **FAST
    )
    resumed = ModelTrainer.load_checkpoint(tmp_path / "checkpoint", corpus)
    with pytest.raises(CheckpointError, match="decoder_learning_rate"):
        resumed.train(tmp_path, max_epochs=2, **FAST)


@pytest.mark.parametrize("native", [True, False])
def test_use_amp_on_a_cpu_trains_under_bfloat16_only_where_it_is_native(
    tmp_path: Path, vectors: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    from engine import precision

    monkeypatch.setattr(precision, "_native_bfloat16_cpu", lambda: native)
    corpus = make_corpus()
    model = make_tagger(corpus, vectors)
    seen: list[tuple[bool, torch.dtype]] = []
    forward_loss = model.forward_loss

    def recording_forward_loss(sentences: list[Sentence]) -> Any:
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return forward_loss(sentences)

    monkeypatch.setattr(model, "forward_loss", recording_forward_loss)
    recorder = Recorder()
    result = ModelTrainer(model, corpus).train(
        tmp_path, max_epochs=3, use_amp=True, device="cpu", **{**FAST, "callbacks": [recorder]}
    )
    assert result["status"] == "completed" and seen
    assert all(enabled == native for enabled, _ in seen)
    if native:
        assert all(dtype == torch.bfloat16 for _, dtype in seen)
    losses = [e.train_loss for e in recorder.of(EpochEnded)]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert ("use_amp ignored" in (tmp_path / "training.log").read_text()) == (not native)


def test_the_optimizer_is_fused_where_torch_has_a_fused_kernel(tmp_path: Path, vectors: Path) -> None:
    from engine.training.trainer import _fused

    corpus = make_corpus()
    params = list(make_tagger(corpus, vectors).parameters())
    for p in params:
        p.grad = torch.ones_like(p)
    for cls in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW):
        assert _fused(cls, params) == {"fused": True}
        cls(params, lr=0.1, **_fused(cls, params)).step()  # accepted on this device
    assert _fused(torch.optim.Adagrad, params) == {}  # its fused kernel is CPU-only


@pytest.mark.parametrize(
    ("first", "then", "message"),
    [
        ({"scheduler": "anneal"}, {"scheduler": "linear"}, "trained with scheduler anneal, not linear"),
        ({"scheduler": "linear"}, {"scheduler": "one_cycle"}, "trained with scheduler linear, not one_cycle"),
        # a per-batch schedule planned for 2 epochs would train the third at rate 0 (or crash)
        (
            {"scheduler": "linear", "max_epochs": 2},
            {"scheduler": "linear"},
            "planned for max_epochs=2, not 3",
        ),
        ({"scheduler": "one_cycle", "max_epochs": 2}, {"scheduler": "one_cycle"}, "planned for max_epochs=2"),
    ],
)
def test_resuming_with_another_schedule_is_a_clear_error(
    tmp_path: Path, vectors: Path, first: dict[str, Any], then: dict[str, Any], message: str
) -> None:
    corpus = make_corpus()
    ModelTrainer(make_tagger(corpus, vectors), corpus).train(
        tmp_path, checkpoint=True, **{"max_epochs": 1, **FAST, **first}
    )
    resumed = ModelTrainer.load_checkpoint(tmp_path / "checkpoint", corpus)
    with pytest.raises(CheckpointError, match=message):
        resumed.train(tmp_path, max_epochs=3, **{**FAST, **then})


def test_resuming_on_another_corpus_of_the_same_size_is_a_clear_error(tmp_path: Path, vectors: Path) -> None:
    corpus = make_corpus()
    ModelTrainer(make_tagger(corpus, vectors), corpus).train(tmp_path, max_epochs=1, checkpoint=True, **FAST)
    relabelled = make_corpus()  # the same sentences, one entity relabelled
    sentence = next(s for s in relabelled.train if s.spans.get("ner"))
    first = sentence.spans["ner"][0]
    sentence.spans["ner"][0] = Span(sentence, first.start, first.end, Label("ORG"))
    resumed = ModelTrainer.load_checkpoint(tmp_path / "checkpoint", relabelled)
    with pytest.raises(CheckpointError, match="other sentences or labels"):
        resumed.train(tmp_path, max_epochs=2, **FAST)
    # the same corpus read again resumes
    again = ModelTrainer.load_checkpoint(tmp_path / "checkpoint", make_corpus())
    assert again.train(tmp_path, max_epochs=2, **FAST)["epochs_done"] == 2


@pytest.mark.parametrize("split", ["dev", "test"])
def test_resuming_with_another_dev_or_test_split_is_a_clear_error(
    tmp_path: Path, vectors: Path, split: str
) -> None:
    # Dev chooses the best model and the annealing, test the final scores: a resume scored on
    # another split went on silently, and its loss.tsv mixed two dev sets.
    corpus = make_corpus()
    ModelTrainer(make_tagger(corpus, vectors), corpus).train(tmp_path, max_epochs=1, checkpoint=True, **FAST)
    relabelled = make_corpus()
    sentence = next(s for s in getattr(relabelled, split) if s.spans.get("ner"))
    first = sentence.spans["ner"][0]
    sentence.spans["ner"][0] = Span(
        sentence, first.start, first.end, Label("ORG" if first.label.value != "ORG" else "PER")
    )
    resumed = ModelTrainer.load_checkpoint(tmp_path / "checkpoint", relabelled)
    with pytest.raises(CheckpointError, match="other dev or test sentences or labels"):
        resumed.train(tmp_path, max_epochs=2, **FAST)
    # a checkpoint written before dev and test were fingerprinted resumes as it did
    state_file = tmp_path / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    state.pop("eval_fingerprint")
    state_file.write_text(json.dumps(state))
    older = ModelTrainer.load_checkpoint(tmp_path / "checkpoint", relabelled)
    assert older.train(tmp_path, max_epochs=2, **FAST)["epochs_done"] == 2


def test_a_dev_split_without_gold_labels_does_not_select_or_anneal(tmp_path: Path, vectors: Path) -> None:
    corpus = make_corpus()
    for sentence in corpus.dev:
        sentence.spans.pop("ner", None)  # F1 would be 0 whatever the model predicts
    result = ModelTrainer(make_tagger(corpus, vectors), corpus).train(
        tmp_path, max_epochs=4, patience=0, **FAST
    )
    assert "the dev split has no gold ner labels" in (tmp_path / "training.log").read_text()
    header = loss_rows(tmp_path / "loss.tsv")[0]
    assert not [column for column in header if column.startswith("DEV_")], header
    # selected on the falling training loss, not stuck at epoch 1 by a constant dev score of 0
    assert result["epochs_done"] == 4
    assert result["train_loss_history"][-1] < result["train_loss_history"][0]


def test_a_diverging_run_stops_with_a_clear_error(tmp_path: Path, vectors: Path) -> None:
    corpus = make_corpus()
    with pytest.raises(
        TrainingDiverged, match=r"training diverged in epoch 1: .* lower learning_rate than 1e\+30"
    ):
        ModelTrainer(make_tagger(corpus, vectors), corpus).train(
            tmp_path, max_epochs=3, **{**FAST, "learning_rate": 1e300, "max_grad_norm": None}
        )
    assert "training diverged in epoch 1" in (tmp_path / "training.log").read_text()


def test_gpu_storage_mode_without_cuda_says_it_keeps_embeddings_on_the_cpu(
    tmp_path: Path, vectors: Path
) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device takes the gpu storage mode as asked")
    corpus = make_corpus()
    ModelTrainer(make_tagger(corpus, vectors), corpus).train(
        tmp_path, max_epochs=1, embeddings_storage_mode="gpu", **FAST
    )
    log = (tmp_path / "training.log").read_text()
    assert "embeddings_storage_mode gpu needs a CUDA device; this run on cpu keeps them on the cpu" in log
    assert "storage mode cpu" in log


class _Interrupt(TrainerCallback):
    def on_batch_end(self, info: BatchEnded) -> None:
        if info.epoch == 2:
            raise KeyboardInterrupt  # Ctrl-C in a notebook


def test_an_interrupted_run_leaves_no_stored_embeddings_behind(tmp_path: Path, vectors: Path) -> None:
    # They stayed on the sentences, and the next model on the same corpus whose embedding had the
    # same name read the first one's vectors.
    corpus = make_corpus()
    tagger = make_tagger(corpus, vectors)
    trainer = ModelTrainer(tagger, corpus)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(
            tmp_path / "a",
            max_epochs=3,
            embeddings_storage_mode="cpu",
            **{**FAST, "callbacks": [_Interrupt()]},
        )
    everything = corpus.train + corpus.dev + corpus.test
    assert [s for s in everything if s.embeddings] == []
    assert {e.storage_mode for e in tagger.modules() if hasattr(e, "storage_mode")} == {"none"}
    # and a run that starts on sentences holding vectors under its own key does not use them
    second = make_tagger(corpus, vectors)
    key = second.embeddings.embeddings[0].storage_key
    for sentence in everything:  # every word <unk>
        sentence.embeddings[f"{key}:idx"] = torch.full((len(sentence),), UNK_ROW)
    ModelTrainer(second, corpus).train(tmp_path / "b", max_epochs=1, embeddings_storage_mode="cpu", **FAST)
    fresh = make_tagger(corpus, vectors)
    ModelTrainer(fresh, corpus).train(tmp_path / "c", max_epochs=1, embeddings_storage_mode="cpu", **FAST)
    assert same_weights(tmp_path / "b" / "final-model", tmp_path / "c" / "final-model")


def test_max_grad_norm_clips_the_update(tmp_path: Path, vectors: Path) -> None:
    # Without clipping, one plain SGD step at rate 1 moves the weights by the whole gradient.
    corpus = one_batch_corpus()
    model = make_tagger(corpus, vectors, dropout=False)
    args = {**FAST, "learning_rate": 1.0, "scheduler": "none", "shuffle": False, "device": "cpu"}
    ModelTrainer(model, corpus).train(tmp_path, max_epochs=1, max_grad_norm=1e-3, **args)
    deltas = weight_deltas(model, make_tagger(one_batch_corpus(), vectors, dropout=False))
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(d) for d in deltas.values()]))
    assert 0 < norm.item() <= 1e-3 * (1 + 1e-4)


def test_a_checkpoint_left_aside_between_the_two_renames_still_resumes(tmp_path: Path, vectors: Path) -> None:
    # A crash between moving the old checkpoint aside and moving the new one in leaves only
    # `.checkpoint.old`: resuming must find it there rather than start over or fail.
    corpus = make_corpus()
    ModelTrainer(make_tagger(corpus, vectors), corpus).train(
        tmp_path / "run", max_epochs=1, checkpoint=True, **FAST
    )
    (tmp_path / "run" / "checkpoint").rename(tmp_path / "run" / ".checkpoint.old")
    resumed = ModelTrainer.load_checkpoint(tmp_path / "run" / "checkpoint", corpus)
    result = resumed.train(tmp_path / "run", max_epochs=2, checkpoint=True, **FAST)
    assert (result["status"], result["epochs_done"]) == ("completed", 2)
    assert [int(r[0]) for r in loss_rows(tmp_path / "run" / "loss.tsv")[1:]] == [1, 2]
    assert read_checkpoint(tmp_path / "run" / "checkpoint").state.epoch == 2


def test_a_damaged_checkpoint_file_is_named(tmp_path: Path, vectors: Path) -> None:
    # PyTorch's message for a truncated file names no file ("failed finding central directory").
    from engine.training.checkpoint import CheckpointError

    corpus = make_corpus()
    ModelTrainer(make_tagger(corpus, vectors), corpus).train(
        tmp_path / "run", max_epochs=1, checkpoint=True, **FAST
    )
    optimizer = tmp_path / "run" / "checkpoint" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"^checkpoint file optimizer\.pt is damaged: "):
        read_checkpoint(tmp_path / "run" / "checkpoint")


def test_the_first_warm_up_step_trains_at_a_rate_above_zero() -> None:
    # A warm-up starting at rate 0 wasted its first batch: the step changed no weight.
    from engine.training.schedulers import LinearWarmupDecay

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = LinearWarmupDecay(optimizer, total_steps=10, warmup_fraction=0.4)
    rates = []
    for _ in range(10):
        rates.append(scheduler.learning_rate)
        scheduler.step_batch()
    assert rates[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert all(rate > 0 for rate in rates)


def reporting_nan_loss(model: SequenceTagger, batches: int) -> SequenceTagger:
    """``model`` whose first ``batches`` batches report a NaN loss with a finite gradient, as a
    float16 batch whose loss overflowed while the loss scaler kept the weights finite."""
    forward_loss = model.forward_loss
    calls = 0

    def overflowing(sentences: list[Sentence]) -> tuple[torch.Tensor, int]:
        nonlocal calls
        calls += 1
        loss, count = forward_loss(sentences)
        return (loss + torch.tensor(float("nan")) if calls <= batches else loss), count

    model.forward_loss = overflowing  # type: ignore[method-assign]
    return model


def test_an_epoch_with_a_nan_loss_is_never_the_best_model(tmp_path: Path, vectors: Path) -> None:
    # Every comparison with NaN is False: a first epoch whose train loss was NaN stayed the best
    # model for the rest of the run, and the final test used its weights.
    corpus = make_corpus()
    model = reporting_nan_loss(make_tagger(corpus, vectors, dropout=False), batches=1)
    args = {**FAST, "learning_rate": 0.01, "train_with_dev": True}
    result = ModelTrainer(model, corpus).train(tmp_path, max_epochs=3, **args)
    losses = result["train_loss_history"]
    assert math.isnan(losses[0]) and losses[1] > losses[2]
    assert result["best_epoch"] == 3 and result["model_path"] == tmp_path / "best-model"
    # a run with no finite epoch has no best model: it tests its final model, not the
    # best-model/ the run before it left in the folder
    model = reporting_nan_loss(make_tagger(corpus, vectors, dropout=False), batches=1000)
    result = ModelTrainer(model, corpus).train(tmp_path, max_epochs=2, **args)
    assert result["best_epoch"] is None and result["model_path"] == tmp_path / "final-model"


def test_training_data_without_labels_of_the_model_type_is_refused(tmp_path: Path, vectors: Path) -> None:
    # A tagger built with tag_type "NER" over a dictionary made from "ner" saw only "O" and the
    # run "completed" with a model that never predicts an entity.
    corpus = make_corpus()
    embeddings = WordEmbeddings(str(vectors), dtype="float32")
    tagger = SequenceTagger(embeddings, corpus.make_label_dictionary("ner"), "NER", hidden_size=8)
    with pytest.raises(TrainerConfigError, match=r"no training sentence has a 'NER' label, .*types: ner\)"):
        ModelTrainer(tagger, corpus).train(tmp_path, max_epochs=1, **FAST)
    assert not (tmp_path / "final-model").exists()
