"""Language-model jobs: from a stored ``LanguageModelSpec`` to a trained ``LanguageModel``.

The stored ``text`` corpus becomes the engine's corpus folder (``train/`` files of about
``train_chunk_chars`` characters, ``valid.txt``, ``test.txt``): the uploaded dev split is the
validation text, or, without one, a seeded 1% of the training lines. The folder is the same on
every run of the job, which a resume from a checkpoint needs.

Progress goes through the job's ``JobProgress`` with the validation perplexity as the dev
``main_score`` (lower is better), so the epoch rows, ``best_dev_score`` and the stored model's
``dev_metrics`` read like a tagger's.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from engine.language_model import LanguageModel, LanguageModelTrainer, TextCorpus, write_text_corpus
from engine.language_model.corpus import TEST_FILE, TRAIN_FOLDER, VALID_FILE
from engine.readers.files import read_text
from engine.training.callbacks import (
    BatchEnded,
    EpochEnded,
    TrainerCallback,
    TrainingEnded,
    TrainingStarted,
)
from service.db.models import Corpus as CorpusRow
from service.db.session import session_scope
from service.schemas.spec import LanguageModelSpec
from service.storage import Storage
from worker.build import BuildError
from worker.progress import JobProgress


def choose_device(spec: LanguageModelSpec) -> str:
    if spec.device != "cpu" and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def _chunks(lines: list[str], size: int) -> list[list[str]]:
    chunks: list[list[str]] = [[]]
    chars = 0
    for line in lines:
        chunks[-1].append(line)
        chars += len(line) + 1
        if chars >= size:
            chunks.append([])
            chars = 0
    return [c for c in chunks if c]


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def load_text_corpus(spec: LanguageModelSpec, storage: Storage, folder: Path) -> TextCorpus:
    with session_scope() as session:
        row = session.get(CorpusRow, spec.corpus_id)
        if row is None:
            raise BuildError(f"corpus {spec.corpus_id} no longer exists")
        if row.format != "text":
            raise BuildError(f"corpus {spec.corpus_id} has format {row.format!r}, not 'text'")
        files = dict(row.files)
    texts: dict[str, list[str]] = {}
    for split, key in files.items():
        path = folder / "download" / f"{split}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with storage.open(key) as source:
            path.write_bytes(source.read())
        texts[split] = [line for line in read_text(path).split("\n") if line.strip()]
    corpus_dir = folder / "lm-corpus"
    if "dev" not in texts:
        write_text_corpus(
            texts["train"],
            corpus_dir,
            train_chunk_chars=spec.train_chunk_chars,
            test_fraction=0.0,
            seed=spec.seed,
        )
    else:
        train_dir = corpus_dir / TRAIN_FOLDER
        train_dir.mkdir(parents=True, exist_ok=True)
        for i, chunk in enumerate(_chunks(texts["train"], spec.train_chunk_chars)):
            _write_lines(train_dir / f"train_{i:05d}.txt", chunk)
        _write_lines(corpus_dir / VALID_FILE, texts["dev"])
    if "test" in texts:
        _write_lines(corpus_dir / TEST_FILE, texts["test"])
    return TextCorpus.open(corpus_dir)


def new_trainer(spec: LanguageModelSpec, corpus: TextCorpus) -> LanguageModelTrainer:
    torch.manual_seed(spec.seed)  # the initial weights
    model = LanguageModel(
        corpus.characters(),
        is_forward=spec.direction == "forward",
        hidden_size=spec.hidden_size,
        nlayers=spec.nlayers,
        embedding_size=spec.embedding_size,
        dropout=spec.dropout,
    )
    return LanguageModelTrainer(model, corpus)


def resume_trainer(checkpoint_dir: Path, corpus: TextCorpus) -> LanguageModelTrainer:
    return LanguageModelTrainer.load_checkpoint(checkpoint_dir, corpus)


def _with_main_score(scores: dict[str, float] | None) -> dict[str, float] | None:
    if scores is None or "perplexity" not in scores:
        return scores
    return {**scores, "main_score": scores["perplexity"]}


class PerplexityProgress(TrainerCallback):
    """Passes the trainer's reports to the job's progress, the perplexity as the main score."""

    def __init__(self, progress: JobProgress) -> None:
        self.progress = progress

    def on_train_start(self, info: TrainingStarted) -> None:
        self.progress.on_train_start(info)

    def on_batch_end(self, info: BatchEnded) -> None:
        self.progress.on_batch_end(info)

    def on_epoch_end(self, info: EpochEnded) -> None:
        self.progress.on_epoch_end(
            replace(
                info,
                dev_scores=_with_main_score(info.dev_scores),
                test_scores=_with_main_score(info.test_scores),
            )
        )

    def on_checkpoint(self, path: Path, epoch: int) -> None:
        self.progress.on_checkpoint(path, epoch)

    def on_train_end(self, info: TrainingEnded) -> None:
        self.progress.on_train_end(replace(info, test_scores=_with_main_score(info.test_scores)))

    def should_stop(self) -> bool:
        return self.progress.should_stop()


def train(
    trainer: LanguageModelTrainer,
    spec: LanguageModelSpec,
    base_path: Path,
    device: str,
    progress: JobProgress,
) -> TrainingEnded:
    trainer.train(
        base_path,
        sequence_length=spec.sequence_length,
        mini_batch_size=spec.mini_batch_size,
        learning_rate=spec.learning_rate,
        anneal_factor=spec.anneal_factor,
        patience=spec.patience,
        clip=spec.clip,
        max_epochs=spec.max_epochs,
        max_seconds=spec.max_seconds,
        checkpoint=True,
        callbacks=[PerplexityProgress(progress)],
        device=device,
        seed=spec.seed,
    )
    if progress.ended is None:
        raise RuntimeError("the trainer returned without reporting the end of training")
    return progress.ended
