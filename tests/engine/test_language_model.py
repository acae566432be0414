"""Character language model: persistence, generation, corpus folders, training, exact resume."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from engine.data import Corpus, Sentence
from engine.language_model import (
    LanguageModel,
    LanguageModelCorpusError,
    LanguageModelError,
    LanguageModelTrainer,
    TextCorpus,
    corpus_texts,
    write_text_corpus,
)
from engine.language_model.trainer import batchify
from engine.training.callbacks import BatchEnded, EpochEnded, TrainerCallback, TrainingEnded, TrainingStarted

REPO_ROOT = Path(__file__).resolve().parents[2]
LINES = [
    f"the {animal} sat on the {thing} ."
    for animal in ("cat", "dog", "cow")
    for thing in ("mat", "hat", "log")
] * 12


def small_corpus(folder: Path) -> TextCorpus:
    return write_text_corpus(LINES, folder, train_chunk_chars=800, valid_fraction=0.05, test_fraction=0.05)


def small_lm(corpus: TextCorpus, is_forward: bool = True, seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    return LanguageModel(
        corpus.characters(), is_forward=is_forward, hidden_size=24, embedding_size=8, dropout=0.2
    )


class Recorder(TrainerCallback):
    def __init__(self, stop_before_epoch: int | None = None) -> None:
        self.events: list[object] = []
        self.checkpoints: list[int] = []
        self.stop_before_epoch = stop_before_epoch
        self.epochs_done = 0

    def on_train_start(self, info: TrainingStarted) -> None:
        self.events.append(info)

    def on_batch_end(self, info: BatchEnded) -> None:
        self.events.append(info)

    def on_epoch_end(self, info: EpochEnded) -> None:
        self.events.append(info)
        self.epochs_done = info.epoch

    def on_checkpoint(self, path: Path, epoch: int) -> None:
        self.checkpoints.append(epoch)

    def on_train_end(self, info: TrainingEnded) -> None:
        self.events.append(info)

    def should_stop(self) -> bool:
        return self.stop_before_epoch is not None and self.epochs_done + 1 >= self.stop_before_epoch


TRAIN_ARGS = {"sequence_length": 16, "mini_batch_size": 4, "learning_rate": 2.0, "patience": 0}


def test_save_load_round_trip(tmp_path: Path) -> None:
    lm = LanguageModel(list("abc"), is_forward=False, hidden_size=7, nlayers=2, embedding_size=3)
    lm.eval()
    folder = lm.save(tmp_path / "lm")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = LanguageModel.load(folder)
    assert loaded.to_config() == lm.to_config()
    assert loaded.dictionary.get_items() == ["<unk>", "a", "b", "c", "\n", " "]
    ids = loaded.encode_text("ab\nz")
    assert ids.tolist() == [0, 4, 2, 1]  # reversed reading order; 'z' is <unk>
    with torch.no_grad():
        assert torch.equal(loaded(ids.unsqueeze(1))[0], lm(ids.unsqueeze(1))[0])


def test_bad_folders_and_arguments_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(LanguageModelError, match="missing config.json"):
        LanguageModel.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"class": "SequenceTagger"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(LanguageModelError, match="SequenceTagger"):
        LanguageModel.load(tmp_path)
    with pytest.raises(LanguageModelError, match="single characters"):
        LanguageModel(["ab"])
    with pytest.raises(LanguageModelError, match="temperature"):
        LanguageModel(list("ab"), hidden_size=4).generate_text("a", 3, temperature=0)


def test_generate_text_direction_and_length() -> None:
    forward = LanguageModel(list("xyz"), hidden_size=4)
    text = forward.generate_text("xy", 10, seed=1)
    assert text.startswith("xy") and len(text) == 12
    assert text == forward.generate_text("xy", 10, seed=1)
    backward = LanguageModel(list("xyz"), is_forward=False, hidden_size=4)
    text = backward.generate_text("zz", 5, seed=1)
    assert text.endswith("zz") and len(text) == 7


def test_write_text_corpus_and_open_errors(tmp_path: Path) -> None:
    corpus = small_corpus(tmp_path / "c")
    assert len(corpus.train_files) >= 3 and corpus.test_file is not None
    train_lines = sum(len(corpus.read_train(i).splitlines()) for i in range(len(corpus.train_files)))
    held_out = len(corpus.read_valid().splitlines()) + len(corpus.read_test().splitlines())
    assert train_lines + held_out == len(LINES) and held_out >= 2
    assert corpus.characters()[0] == " "  # most frequent first
    (corpus.valid_file).unlink()
    with pytest.raises(LanguageModelCorpusError, match="valid.txt"):
        TextCorpus.open(tmp_path / "c")
    with pytest.raises(LanguageModelCorpusError, match="train/"):
        TextCorpus.open(tmp_path)


def test_corpus_texts_joins_tokens_or_keeps_original_text() -> None:
    tokens = Sentence(["EU", "rejects", "German", "call"])
    raw = Sentence(["Al", "-", "Zaman"])
    raw.text = "Al-Zaman"
    corpus = Corpus([tokens, raw], dev=[], test=[])
    assert list(corpus_texts(corpus)) == ["EU rejects German call", "Al-Zaman"]


def test_batchify_keeps_contiguous_streams() -> None:
    data = batchify(torch.arange(10), 3)
    assert data.shape == (3, 3)
    assert data[:, 1].tolist() == [3, 4, 5]


def test_training_lowers_perplexity_and_reports_through_callbacks(tmp_path: Path) -> None:
    corpus = small_corpus(tmp_path / "c")
    lm = small_lm(corpus)
    trainer = LanguageModelTrainer(lm, corpus)
    before = trainer.evaluate_text(corpus.read_valid(), streams=4, sequence_length=16)
    recorder = Recorder()
    result = trainer.train(tmp_path / "run", max_epochs=3, callbacks=[recorder], **TRAIN_ARGS)
    n_splits = len(corpus.train_files)
    assert result["status"] == "completed" and result["epochs_done"] == 3 * n_splits
    assert result["best_valid_perplexity"] < 0.5 * torch.tensor(before).exp().item()
    assert result["test_perplexity"] is not None

    start = recorder.events[0]
    assert isinstance(start, TrainingStarted) and start.max_epochs == 3 * n_splits and start.start_epoch == 1
    batches = [e for e in recorder.events if isinstance(e, BatchEnded)]
    assert batches and all(b.tokens_per_s > 0 and b.sentences_per_s >= 0 for b in batches)
    epochs = [e for e in recorder.events if isinstance(e, EpochEnded)]
    assert [e.epoch for e in epochs] == list(range(1, 3 * n_splits + 1))
    last_batches = [
        b
        for b, after in zip(batches, [*batches[1:], None], strict=True)
        if after is None or after.epoch != b.epoch
    ]
    assert [b.epoch_loss for b in last_batches] == pytest.approx([e.train_loss for e in epochs])
    assert all(
        e.dev_scores and abs(e.dev_scores["perplexity"] - torch.tensor(e.dev_loss).exp().item()) < 1e-4
        for e in epochs
    )
    assert recorder.checkpoints == list(range(1, 3 * n_splits + 1))
    end = recorder.events[-1]
    assert isinstance(end, TrainingEnded) and end.status == "completed"
    assert end.best_dev_score == pytest.approx(min(e.dev_scores["perplexity"] for e in epochs))

    best = LanguageModel.load(result["model_path"])
    assert best.generate_text("the cat sat", 8, temperature=0.05, seed=0) == "the cat sat on the "
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoint").iterdir()) == [
        "model",
        "rng.safetensors",
        "trainer_state.json",
    ]
    assert not any(p.name.endswith((".tmp", ".old")) for p in (tmp_path / "run").iterdir())
    # the files a person reads: one loss.tsv row and one log line per split, and how it ended
    rows = (tmp_path / "run" / "loss.tsv").read_text().splitlines()
    assert rows[0].split("\t") == [
        "EPOCH",
        "SPLIT",
        "LEARNING_RATE",
        "TRAIN_LOSS",
        "DEV_LOSS",
        "DEV_PERPLEXITY",
        "CHARS_PER_S",
        "SECONDS",
    ]
    assert [row.split("\t")[0] for row in rows[1:]] == [str(e.epoch) for e in epochs]
    assert [float(row.split("\t")[5]) for row in rows[1:]] == [
        pytest.approx(e.dev_scores["perplexity"], rel=1e-5) for e in epochs
    ]
    text = (tmp_path / "run" / "training.log").read_text()
    assert text.count(": train loss ") == 3 * n_splits
    # a line every tenth of a split, its last one with the split's train loss
    progress = re.findall(r"split (\d+) - batch (\d+)/(\d+) - loss ([\d.]+) - ", text)
    assert {int(s) for s, *_ in progress} == set(range(1, 3 * n_splits + 1))
    last = [
        p
        for p, after in zip(progress, [*progress[1:], None], strict=True)
        if after is None or after[0] != p[0]
    ]
    assert all(b == total for _, b, total, _ in last)
    assert [float(loss) for *_, loss in last] == pytest.approx([e.train_loss for e in epochs], abs=1e-4)
    assert f"training completed after {3 * n_splits} splits" in text


@pytest.mark.parametrize("is_forward", [True, False])
def test_resume_equals_uninterrupted(tmp_path: Path, is_forward: bool) -> None:
    corpus = small_corpus(tmp_path / "c")
    full = LanguageModelTrainer(small_lm(corpus, is_forward), corpus)
    reference = full.train(tmp_path / "full", max_epochs=2, **TRAIN_ARGS)

    stopper = Recorder(stop_before_epoch=len(corpus.train_files) + 2)  # cancel in the second pass
    first = LanguageModelTrainer(small_lm(corpus, is_forward), corpus)
    cancelled = first.train(tmp_path / "cut", max_epochs=2, callbacks=[stopper], **TRAIN_ARGS)
    assert cancelled["status"] == "cancelled"
    assert cancelled["epochs_done"] == len(corpus.train_files) + 1

    torch.manual_seed(1234)  # whatever happened to the RNG meanwhile must not matter
    resumed_trainer = LanguageModelTrainer.load_checkpoint(tmp_path / "cut" / "checkpoint", corpus)
    recorder = Recorder()
    resumed = resumed_trainer.train(tmp_path / "cut", max_epochs=2, callbacks=[recorder], **TRAIN_ARGS)
    assert recorder.events[0].start_epoch == len(corpus.train_files) + 2
    # loss.tsv is rewritten whole from the checkpoint's history; the log goes on
    cut_rows = (tmp_path / "cut" / "loss.tsv").read_text().splitlines()
    full_rows = (tmp_path / "full" / "loss.tsv").read_text().splitlines()
    assert [r.split("\t")[:6] for r in cut_rows] == [r.split("\t")[:6] for r in full_rows]
    text = (tmp_path / "cut" / "training.log").read_text()
    assert (
        text.index("cancelled in split")
        < text.index("resuming after split")
        < text.index("training completed")
    )
    assert resumed["history"] == [
        {
            **r,
            "chars_per_s": resumed["history"][i]["chars_per_s"],
            "seconds": resumed["history"][i]["seconds"],
        }
        for i, r in enumerate(reference["history"])
    ]
    for (name, a), (_, b) in zip(
        full.model.state_dict().items(), resumed_trainer.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="sequence_length"):
        LanguageModelTrainer.load_checkpoint(tmp_path / "cut" / "checkpoint", corpus).train(
            tmp_path / "cut", max_epochs=3, **{**TRAIN_ARGS, "sequence_length": 8}
        )


def test_a_resume_on_other_files_of_the_same_count_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the number of training files was compared: a corpus folder whose files were replaced
    # by as many others, or edited, resumed silently and trained on other text, so the resumed
    # run was no longer the uninterrupted one.
    corpus = small_corpus(tmp_path / "c")
    first = LanguageModelTrainer(small_lm(corpus), corpus)
    first.train(tmp_path / "run", max_epochs=1, callbacks=[Recorder(stop_before_epoch=2)], **TRAIN_ARGS)
    checkpoint = tmp_path / "run" / "checkpoint"

    def variant(name: str, change: Callable[[Path], object]) -> TextCorpus:
        # shutil.copy, not copy2: other modification times, as in a requeued job's copy
        folder = shutil.copytree(tmp_path / "c", tmp_path / name, copy_function=shutil.copy)
        change(folder)
        return TextCorpus.open(folder)

    def reverse(path: Path, start: int, end: int | None) -> None:  # the same size, other text
        data = path.read_bytes()
        path.write_bytes(data[:start] + data[start:end][::-1] + (data[end:] if end is not None else b""))

    copy = variant("copy", lambda folder: None)
    assert LanguageModelTrainer.load_checkpoint(checkpoint, copy).splits_done == 1

    other = variant(
        "other", lambda f: (f / "train" / "train_00001.txt").write_text("the owl sat on the mat .\n")
    )
    with pytest.raises(
        LanguageModelError, match=r"train/train_00001\.txt has 25 bytes, not \d+: resume with the same"
    ):
        LanguageModelTrainer.load_checkpoint(checkpoint, other)
    edited = variant("edited", lambda f: reverse(f / "train" / "train_00002.txt", 0, 20))
    with pytest.raises(
        LanguageModelError, match=r"train/train_00002\.txt has other content \(\d+ bytes as before\)"
    ):
        LanguageModelTrainer.load_checkpoint(checkpoint, edited)
    renamed = variant("renamed", lambda f: (f / "train" / "train_00000.txt").rename(f / "train" / "a.txt"))
    with pytest.raises(LanguageModelError, match=r"train/train_00000\.txt is missing; train/a\.txt is new"):
        LanguageModelTrainer.load_checkpoint(checkpoint, renamed)
    for name in ("valid.txt", "test.txt"):  # validation steers the schedule, test the result
        changed = variant(f"new-{name}", lambda f, name=name: reverse(f / name, 0, 20))
        with pytest.raises(LanguageModelError, match=rf"{name} has other content"):
            LanguageModelTrainer.load_checkpoint(checkpoint, changed)
    no_test = variant("no-test", lambda f: (f / "test.txt").unlink())
    with pytest.raises(LanguageModelError, match=r"test\.txt is missing"):
        LanguageModelTrainer.load_checkpoint(checkpoint, no_test)

    # a file larger than both samples: an edit in its last bytes is seen, one in its middle not
    monkeypatch.setattr("engine.language_model.corpus.FINGERPRINT_SAMPLE", 16)
    small = LanguageModelTrainer(small_lm(corpus), corpus)
    small.train(tmp_path / "small", max_epochs=1, callbacks=[Recorder(stop_before_epoch=2)], **TRAIN_ARGS)

    tail = variant("tail", lambda f: reverse(f / "valid.txt", -3, None))
    with pytest.raises(LanguageModelError, match=r"valid\.txt has other content"):
        LanguageModelTrainer.load_checkpoint(tmp_path / "small" / "checkpoint", tail)
    middle = variant("middle", lambda f: reverse(f / "valid.txt", 40, 80))
    assert LanguageModelTrainer.load_checkpoint(tmp_path / "small" / "checkpoint", middle).splits_done == 1

    # a checkpoint written before the fingerprint still resumes, on the count of training files
    state_path = checkpoint / "trainer_state.json"
    state = json.loads(state_path.read_text())
    del state["corpus"]
    state_path.write_text(json.dumps(state))
    assert LanguageModelTrainer.load_checkpoint(checkpoint, edited).splits_done == 1
    with pytest.raises(LanguageModelError, match="trained on 4 training files, the corpus has 3"):
        LanguageModelTrainer.load_checkpoint(
            checkpoint, variant("fewer", lambda f: (f / "train" / "train_00003.txt").unlink())
        )


def scripted_validation(
    monkeypatch: pytest.MonkeyPatch, trainer: LanguageModelTrainer, losses: list[float]
) -> None:
    """The trainer's validation losses, one per split, in this order."""
    remaining = iter(losses)
    monkeypatch.setattr(trainer, "evaluate_ids", lambda *args: next(remaining))


def test_a_run_resumed_in_another_folder_keeps_an_early_best_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # best-lm/ lived only in the base_path, not in the checkpoint: a run resumed in a fresh folder
    # (a requeued job on another worker) that never beat the checkpoint's best validation loss
    # ended with no model and no test perplexity, where the uninterrupted run tested the best one.
    corpus = small_corpus(tmp_path / "c")
    splits = 2 * len(corpus.train_files)
    full = LanguageModelTrainer(small_lm(corpus), corpus)
    scripted_validation(monkeypatch, full, [1.0] + [2.0] * (splits - 1))  # the first split is best
    reference = full.train(tmp_path / "full", max_epochs=2, **TRAIN_ARGS)
    assert reference["model_path"] == tmp_path / "full" / "best-lm"

    first = LanguageModelTrainer(small_lm(corpus), corpus)
    scripted_validation(monkeypatch, first, [1.0] + [2.0] * (splits - 1))
    cut = first.train(tmp_path / "cut", max_epochs=2, callbacks=[Recorder(stop_before_epoch=4)], **TRAIN_ARGS)
    assert cut["epochs_done"] == 3
    resumed = LanguageModelTrainer.load_checkpoint(tmp_path / "cut" / "checkpoint", corpus)
    scripted_validation(monkeypatch, resumed, [2.0] * (splits - 3))
    result = resumed.train(tmp_path / "other", max_epochs=2, **TRAIN_ARGS)
    assert result["model_path"] == tmp_path / "other" / "best-lm"
    assert result["test_perplexity"] == reference["test_perplexity"] is not None
    best = LanguageModel.load(tmp_path / "other" / "best-lm").state_dict()
    for name, tensor in LanguageModel.load(tmp_path / "full" / "best-lm").state_dict().items():
        assert torch.equal(best[name], tensor), name


def test_a_splits_learning_rate_is_the_rate_it_trained_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # loss.tsv, the log and on_epoch_end gave the rate after the split's annealing step: the split
    # that triggered it showed the lowered rate, which only the next split trained at, unlike the
    # sequence trainer's LEARNING_RATE (and Flair's language model log), the rate of the epoch.
    corpus = small_corpus(tmp_path / "c")
    trainer = LanguageModelTrainer(small_lm(corpus), corpus)
    scripted_validation(monkeypatch, trainer, [1.0, 2.0, 2.0, 2.0])  # split 1 is best: 2 and 3 anneal
    recorder = Recorder()
    args = {**TRAIN_ARGS, "anneal_factor": 0.5}
    trainer.train(tmp_path / "run", max_epochs=1, callbacks=[recorder], **args)
    trained_at = {e.epoch: e.learning_rate for e in recorder.events if isinstance(e, BatchEnded)}
    assert trained_at == {1: 2.0, 2: 2.0, 3: 1.0, 4: 0.5}
    epochs = [e for e in recorder.events if isinstance(e, EpochEnded)]
    assert [e.learning_rate for e in epochs] == [2.0, 2.0, 1.0, 0.5]
    rows = [row.split("\t") for row in (tmp_path / "run" / "loss.tsv").read_text().splitlines()]
    assert [float(row[rows[0].index("LEARNING_RATE")]) for row in rows[1:]] == [2.0, 2.0, 1.0, 0.5]


def test_a_checkpoint_carries_the_cuda_generators_to_the_resumed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the CPU generator went into the checkpoint: on a GPU, where dropout draws from the
    # CUDA generators, a resumed run drew other masks than the uninterrupted one (whatever the
    # worker process had left in them), so its model and losses differed. The CUDA functions are
    # stand-ins here, so that this runs without a GPU.
    corpus = small_corpus(tmp_path / "c")
    generators = [torch.tensor([1, 2, 3], dtype=torch.uint8), torch.tensor([4, 5, 6], dtype=torch.uint8)]
    restored: list[list[list[int]]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [g.clone() for g in generators])
    monkeypatch.setattr(
        torch.cuda, "set_rng_state_all", lambda states: restored.append([s.tolist() for s in states])
    )
    first = LanguageModelTrainer(small_lm(corpus), corpus)
    first.train(tmp_path / "run", max_epochs=1, callbacks=[Recorder(stop_before_epoch=2)], **TRAIN_ARGS)
    generators[:] = [torch.zeros(3, dtype=torch.uint8)] * 2  # the process drew from them since
    resumed = LanguageModelTrainer.load_checkpoint(tmp_path / "run" / "checkpoint", corpus)
    resumed.train(tmp_path / "run", max_epochs=1, **TRAIN_ARGS)
    assert restored[:1] == [[[1, 2, 3], [4, 5, 6]]]


def test_bench_quick_mode(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "bench/train_charlm.py", "--quick", "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    checkpoints = [r for r in rows if "checkpoint" in r]
    assert {r["direction"] for r in checkpoints} == {"forward", "backward"}
    for row in checkpoints:
        assert row["chars_per_s"] > 0 and row["valid_perplexity"] > 1
    for direction in ("forward", "backward"):
        model = LanguageModel.load(tmp_path / "out" / direction / "best-lm")
        assert model.is_forward == (direction == "forward")


def test_time_budget_is_checked_before_each_split(tmp_path: Path) -> None:
    corpus = small_corpus(tmp_path / "c")
    result = LanguageModelTrainer(small_lm(corpus), corpus).train(
        tmp_path / "run", max_epochs=5, max_seconds=0.0, **TRAIN_ARGS
    )
    assert result["status"] == "completed" and result["time_budget_reached"]
    assert result["epochs_done"] == 0 and result["model_path"] is None


def test_flairs_text_corpus_arguments_are_a_clear_error(tmp_path: Path) -> None:
    # Flair: TextCorpus(path, dictionary, is_forward_lm, character_level=True). With four arguments
    # one was built, holding a Dictionary as its training files, and training failed deep inside.
    from engine.data import Dictionary
    from engine.language_model.corpus import TextCorpus

    for arguments in ((tmp_path, Dictionary(), True), (tmp_path, Dictionary(), True, True)):
        with pytest.raises(TypeError, match=r"TextCorpus.open\(folder\)"):
            TextCorpus(*arguments)
