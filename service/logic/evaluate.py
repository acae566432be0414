"""Scoring a served model on a split of an uploaded corpus: the tutorial's
``model.evaluate(corpus.test)`` over HTTP. The model comes from the predict cache (loaded once);
the scoring runs off the event loop, side by side with predict batches (both only read the
weights), in float32 whatever the predict precision, so scores match the trainer's."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.data import Sentence
from service.db.models import Corpus
from service.db.session import session_scope
from service.errors import Conflict, FieldError, Invalid
from service.logic.owned import owned_or_404
from service.logic.predict import ModelCache, ModelInfo, model_info
from service.process_folders import REQUESTS_KIND, own_folder
from service.schemas.api import EvaluateRequest
from service.storage import get_storage
from service.stored_corpora import StoredCorpusUnreadable, read_stored_corpus


def _refuse(field: str, message: str) -> Invalid:
    return Invalid(message, [FieldError(["body", field], message)])


def gold_sentences(
    owner_id: str, info: ModelInfo, request: EvaluateRequest
) -> tuple[list[Sentence], str, str]:
    """The split's sentences with their gold labels, the gold label type and its kind."""
    if info.task == "language_model":
        raise Invalid(
            f"model {info.id} is a language model: it has no labels to score",
            [FieldError(["path", "model_id"], "a language model has no labels to score")],
        )
    with session_scope() as session:
        row = owned_or_404(session, Corpus, request.corpus_id, owner_id, "corpus")
        task, format, options, files = row.task, row.format, dict(row.options or {}), dict(row.files)
        label_types = dict(row.label_types or {})
        statistics = dict(row.statistics or {})
        # the statistics name every split; one that was neither uploaded nor sampled has no sentences
        splits = sorted(s for s in ("train", "dev", "test") if (statistics.get(s) or {}).get("sentences"))
    if task != info.task:
        raise _refuse(
            "corpus_id",
            f"corpus {request.corpus_id} is a {task} corpus; model {info.id} is a {info.task} model",
        )
    gold_type = request.label_type or info.label_type
    if gold_type not in label_types:
        raise _refuse(
            "label_type",
            f"corpus {request.corpus_id} has no '{gold_type}' labels; it has {', '.join(sorted(label_types)) or 'none'}",
        )
    if request.split not in splits:
        raise _refuse(
            "split",
            f"corpus {request.corpus_id} has no {request.split} split; it has {', '.join(splits)} "
            '(choose one with "split")',
        )
    with tempfile.TemporaryDirectory(prefix="evaluate-", dir=own_folder(REQUESTS_KIND)) as folder:
        try:
            corpus = read_stored_corpus(get_storage(), format, options, files, Path(folder))
        except StoredCorpusUnreadable as e:
            raise Conflict(f"corpus {request.corpus_id}: {e}") from None
    return list(getattr(corpus, request.split)), gold_type, label_types[gold_type]


def _gold_values(sentences: list[Sentence], label_type: str) -> set[str]:
    values: set[str] = set()
    for sentence in sentences:
        values.update(label.value for label in sentence.get_labels(label_type))
    return values


def _check_labels_overlap(
    info: ModelInfo, request: EvaluateRequest, gold_type: str, gold: set[str], predicted: list[str]
) -> None:
    """Gold labels the model cannot predict score 0 whatever it does (a CoNLL-03 tagger on
    WNUT-17's types answered F1 0.0 everywhere as a 200): refused when no gold label is one."""
    if gold and not gold & set(predicted):

        def some(values: list[str]) -> str:
            return ", ".join(values[:8]) + (" ..." if len(values) > 8 else "")

        raise _refuse(
            "corpus_id",
            f"none of the '{gold_type}' labels of corpus {request.corpus_id} ({request.split}: "
            f"{some(sorted(gold))}) is a label of model {info.id} ({some(sorted(predicted))}): "
            "every score would be 0",
        )


async def evaluate(
    cache: ModelCache, owner_id: str, model_id: str, request: EvaluateRequest
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    info = await loop.run_in_executor(None, model_info, owner_id, model_id)
    sentences, gold_type, gold_kind = await loop.run_in_executor(
        None, gold_sentences, owner_id, info, request
    )
    model = (await cache.get(info)).model
    if gold_kind != model.label_kind:
        raise _refuse(
            "label_type",
            f"the corpus's '{gold_type}' labels are {gold_kind} labels; model {info.id} predicts {model.label_kind} labels",
        )
    _check_labels_overlap(info, request, gold_type, _gold_values(sentences, gold_type), model.label_names())
    started = time.perf_counter()
    result = await loop.run_in_executor(
        None,
        lambda: model.evaluate(sentences, gold_label_type=gold_type, mini_batch_size=request.mini_batch_size),
    )
    return {
        "model_id": info.id,
        "corpus_id": request.corpus_id,
        "split": request.split,
        "label_type": gold_type,
        "sentences": len(sentences),
        **result.to_full_dict(),
        "seconds": round(time.perf_counter() - started, 3),
    }
