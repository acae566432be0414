"""Scoring a served model on a split of an uploaded corpus: the tutorial's
``model.evaluate(corpus.test)`` over HTTP. The model comes from the predict cache (loaded once);
the scoring runs off the event loop, side by side with predict batches (both only read the
weights), in float32 whatever the predict precision, so scores match the trainer's. The split is
read in a reader process (``service.corpus_reading``), under its time limit: the API holds that
split's sentences only, never the whole corpus."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from engine.data import Sentence
from service.corpus_reading import read_split
from service.db.models import Corpus
from service.db.session import session_scope
from service.errors import FieldError, Invalid
from service.logic.owned import owned_or_404
from service.logic.predict import TASK_NOUNS, ModelCache, ModelInfo, model_info
from service.logic.stored_reads import read_stored
from service.schemas.api import EvaluateRequest

# A corpus's task in words, as TASK_NOUNS says a model's
CORPUS_NOUNS = {
    "sequence_tagging": "a sequence tagging corpus",
    "text_classification": "a text classification corpus",
    "language_model": "a text corpus for language models",
}


def _refuse(field: str, message: str) -> Invalid:
    return Invalid(message, [FieldError(["body", field], message)])


@dataclass(frozen=True)
class GoldSplit:
    """Where the gold sentences are: a stored corpus's files, format and options, the split,
    and the gold label type with its kind; ``label_kinds``, every type's kind, tells which of a
    column corpus's columns are spans, so that a stored dev or test file is read without train's."""

    corpus_id: str
    format: str
    options: dict[str, Any]
    files: dict[str, str]
    split: str
    label_type: str
    label_kind: str
    label_kinds: dict[str, str]


def gold_split(owner_id: str, info: ModelInfo, request: EvaluateRequest) -> GoldSplit:
    """The split to score on, checked against the corpus's row (no file is read)."""
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
            f"corpus {request.corpus_id} is {CORPUS_NOUNS.get(task, task)}; model {info.id} is a "
            f"{TASK_NOUNS.get(info.task, info.task)}: score it on {CORPUS_NOUNS.get(info.task, info.task)}",
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
    return GoldSplit(
        request.corpus_id,
        format,
        options,
        files,
        request.split,
        gold_type,
        label_types[gold_type],
        label_types,
    )


def gold_sentences(gold: GoldSplit, context_tokens: int = 0) -> list[Sentence]:
    """The split's sentences with their gold labels, read in a reader process (see
    ``corpus_reading.read_split`` for ``context_tokens``)."""
    return read_stored(
        gold.corpus_id,
        gold.files,
        f"for the {gold.split} split",
        lambda paths: read_split(
            gold.format, gold.options, paths, gold.split, context_tokens, gold.label_type, gold.label_kinds
        ),
    )


def _context_tokens(model: Any) -> int:
    """How many tokens of neighbouring sentences the model reads (``use_context`` of transformer
    embeddings; 0 without): the neighbours the split's sentences keep."""
    return max((int(getattr(module, "context_length", 0) or 0) for module in model.modules()), default=0)


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
    gold = await loop.run_in_executor(None, gold_split, owner_id, info, request)
    gold_type, gold_kind = gold.label_type, gold.label_kind
    # The model before the sentences: its context length says which neighbours they keep.
    model = (await cache.get(info)).model
    if gold_kind != model.label_kind:
        raise _refuse(
            "label_type",
            f"the corpus's '{gold_type}' labels are {gold_kind} labels; model {info.id} predicts {model.label_kind} labels",
        )
    sentences = await loop.run_in_executor(None, gold_sentences, gold, _context_tokens(model))
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
