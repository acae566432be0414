"""Request and response bodies of the REST API (the spec itself is in ``spec.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.limits import PREDICT_MAX_CRF_WORK, PREDICT_MAX_PROBABILITY_CELLS, PREDICT_MAX_SENTENCES
from service.schemas.spec import Name, TrainingSpec


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


NEXT_PAGE = (
    "The relative URL of the next page: this request's filters and `limit`, with `cursor`; null on "
    "the last page. Following it lists no item twice and skips none, even when items are created or "
    "deleted between the fetches (an `offset` walk would)."
)


# -- keys ---------------------------------------------------------------------------------------
class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Name = Field(None, min_length=1, max_length=200, description="Name of a new owner.")
    owner_id: str | None = Field(None, description="Add a key to this existing owner instead.")

    @model_validator(mode="after")
    def _one_owner(self) -> KeyCreate:
        # With both, the key went to owner_id and the name was dropped without a word; with
        # neither, a new owner was made and named "owner", which the API never documented.
        if self.name is not None and self.owner_id is not None:
            raise ValueError("give 'name' (a new owner) or 'owner_id' (an existing one), not both")
        if self.name is None and self.owner_id is None:
            raise ValueError("'name' (a new owner) or 'owner_id' (an existing one) is required")
        return self


class KeyCreated(BaseModel):
    id: str
    owner_id: str
    owner_name: str
    key: str = Field(description="The bearer token. Shown once; only its hash is stored.")
    prefix: str


class KeyOut(BaseModel):
    id: str
    owner_id: str
    owner_name: str
    prefix: str = Field(
        description="The key's first characters, to recognise it (the key itself is not stored)."
    )
    created_at: datetime
    revoked_at: datetime | None


class KeyList(BaseModel):
    items: list[KeyOut]
    next: str | None = Field(description=NEXT_PAGE)


# -- corpora ------------------------------------------------------------------------------------


class CorpusOut(_Out):
    id: str
    name: str
    task: str
    format: str
    options: dict[str, Any]
    label_types: dict[str, str] = Field(description="label type -> kind (`token`, `span` or `sentence`)")
    has_documents: bool
    statistics: dict[str, Any] = Field(
        description="`label_types`, `documents`, `skipped_sentences`, and per split (`train`, `dev`, `test`): "
        "`sentences`, `tokens`, `labels` (label type -> its 100 most common values -> count) and "
        "`label_classes` (label type -> how many values it has). A text corpus: `lines` and "
        "`characters` per split."
    )
    splits: list[str]
    created_at: datetime


class TextCorpusCreate(BaseModel):
    # Like every other request body: a misspelt field (`nmae`) is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Name = Field(None, min_length=1, max_length=200, description="Default: `<source name>-text`.")


class CorpusList(BaseModel):
    items: list[CorpusOut]
    next: str | None = Field(description=NEXT_PAGE)


# -- jobs ---------------------------------------------------------------------------------------
class JobOut(_Out):
    id: str
    name: str
    kind: str
    status: Literal["queued", "running", "completed", "failed", "cancelled"]
    queue: str
    spec: dict[str, Any]
    attempts: int
    cancel_requested: bool
    epoch: int = Field(description="Epochs completed.")
    max_epochs: int | None
    batch: int = Field(description="Batches done in the running epoch.")
    batches_per_epoch: int | None
    train_sentences: int | None = Field(
        default=None,
        description="Sentences the run trains on, once it has started: after the dev split sampled from "
        "train, `downsample` and merging several corpora (with `train_with_dev`, train and dev together). "
        "Language models: lines of text.",
    )
    dev_sentences: int | None = Field(
        default=None, description="Sentences of the dev split the run scores each epoch on (0: none)."
    )
    test_sentences: int | None = Field(
        default=None, description="Sentences of the test split scored at the end (0: none, no test score)."
    )
    percent: float = Field(description="0-100 over the whole run.")
    eta_seconds: float | None
    learning_rate: float | None
    train_loss: float | None = Field(
        description="The training loss: during an epoch its mean over the batches done so far, between "
        "epochs the last epoch's; null before the first batch, or when it is not a finite number (the "
        "run diverged). A job cancelled, handed back or requeued inside an epoch drops that epoch: it "
        "shows the last completed epoch's loss, learning rate and percent, and `batch` 0."
    )
    best_dev_score: float | None
    error: str | None = Field(
        description="Why the job failed; on a `queued` job waiting for `retry_at`, why its last run stopped."
    )
    retry_at: datetime | None = Field(
        default=None,
        description="When a job whose run could not reach storage is tried again (it is `queued` until then).",
    )
    note: str | None = Field(
        default=None,
        description="Why a `queued` job is not taken, when the service can tell: no worker takes its queue "
        "(e.g. a `gpu` job where no GPU worker runs), or the API has no broker URL to send it with.",
    )
    device: str | None
    worker_host: str | None
    model_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    url: str = ""


class JobList(BaseModel):
    items: list[JobOut]
    next: str | None = Field(description=NEXT_PAGE)


class EpochMetricOut(_Out):
    epoch: int
    learning_rate: float | None
    train_loss: float | None
    dev_loss: float | None
    dev_main_score: float | None
    dev_precision: float | None
    dev_recall: float | None
    dev_f1: float | None
    dev_accuracy: float | None
    test_main_score: float | None
    test_f1: float | None
    test_accuracy: float | None
    bad_epochs: int | None
    is_best: bool
    seconds: float | None
    created_at: datetime


class BatchLossOut(_Out):
    """A batch-loss point: the batches of `epoch` after the previous point, up to `batch`."""

    epoch: int
    batch: int = Field(description="The last batch (1-based, within the epoch) this point stands for.")
    loss: float | None = Field(
        description="The mean loss of the batches since the epoch's previous point (an epoch of up to "
        "200 batches has a point per batch, a longer one 200 at most); null when it was not a finite "
        "number (the run diverged)."
    )
    learning_rate: float | None = Field(description="The learning rate at `batch`.")


class JobMetrics(BaseModel):
    job_id: str
    epochs: list[EpochMetricOut]
    batches: list[BatchLossOut] = Field(
        description="Batch-loss points by epoch and batch, at most 200 per epoch; empty with `?batches=false`."
    )


class JobFileOut(BaseModel):
    name: str = Field(description="`training.log`, `loss.tsv`, `weights.txt`, `weights.png` or `test.tsv`.")
    size_bytes: int
    url: str


class JobFileList(BaseModel):
    items: list[JobFileOut]


# -- models -------------------------------------------------------------------------------------
class ModelOut(_Out):
    id: str
    name: str
    task: str
    label_type: str
    labels: list[str]
    job_id: str | None
    spec: dict[str, Any] | None
    dev_metrics: dict[str, Any] | None = Field(
        description="The best epoch's dev scores: `main_score` and `main_score_name` (as in `test_metrics`; "
        "`perplexity` for a language model), micro precision/recall/F1, `accuracy`, `loss` (a model trained "
        "by an older Tagsmith has no `main_score_name` here)."
    )
    test_metrics: dict[str, Any] | None = Field(
        description="The final test evaluation: `main_score`, `main_score_name`, micro precision/recall/F1, "
        "`macro_f1`, `accuracy`, `loss`, and `per_class` ({label: {precision, recall, f1, support}}); "
        "null without a test split."
    )
    size_bytes: int
    created_at: datetime


class ModelList(BaseModel):
    items: list[ModelOut]
    next: str | None = Field(description=NEXT_PAGE)


# -- predict ------------------------------------------------------------------------------------
class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    texts: list[str] | None = Field(
        None,
        description="Raw texts: split into sentences (taggers) and tokenized; offsets count Unicode code points "
        "(Python string indices, not UTF-16 units). At most "
        f"{PREDICT_MAX_SENTENCES:,} sentences per request after splitting: more is refused with 422. A "
        f"tagger with a CRF decodes at most {PREDICT_MAX_CRF_WORK:,} / tags² tokens per request (texts "
        "or sentences): about 15,000 for the largest CRF, 512 tags.",
    )
    sentences: list[list[str]] | None = Field(
        None, description="Pre-tokenized sentences (one list of tokens each)."
    )
    split_sentences: bool | None = Field(
        None, description="Split raw texts into sentences. Default: yes for taggers, no for classifiers."
    )
    tokenizer: Literal["segtok", "whitespace"] | None = Field(
        None,
        description="How raw texts are tokenized: `segtok` (the default, Flair's; in Chinese and Japanese each "
        "CJK ideograph and punctuation mark is a token of its own and a run of kana one token) or `whitespace` (at "
        "whitespace only, as pre-tokenized corpora often are: `@user`, URLs and `&amp;` stay whole). Only with "
        "`texts`.",
    )
    return_probabilities_for_all_classes: bool = Field(
        False,
        description="Also return every class's score (a tagger: every tag's, for every token). The answer may "
        f"hold at most {PREDICT_MAX_PROBABILITY_CELLS:,} such scores (tokens x tags, or sentences x classes): "
        "more is refused with 422.",
    )
    task: Literal["sequence_tagging", "text_classification"] | None = Field(
        None, description="Optional guard: fail with 422 when the model has another task."
    )

    @model_validator(mode="after")
    def _one_input(self) -> PredictRequest:
        if (self.texts is None) == (self.sentences is None):
            raise ValueError("give exactly one of 'texts' (raw) or 'sentences' (pre-tokenized)")
        if self.tokenizer is not None and self.texts is None:
            raise ValueError("'tokenizer' applies to raw 'texts'; 'sentences' are tokenized already")
        return self


NOT_A_NUMBER = "; null when the model computed no number (NaN: weights or a float16 overflow gone wrong)"


class ScoreOut(BaseModel):
    value: str
    score: float | None = Field(description="The probability" + NOT_A_NUMBER)


class TokenOut(BaseModel):
    text: str
    start: int | None = Field(description="Character offset in the input text (raw input only).")
    end: int | None
    tag: str | None = Field(
        None, description="Taggers: the token's tag; for span labels the BIOES tag derived from the spans."
    )
    confidence: float | None = Field(
        None,
        description="The tag's probability; for span labels the span's confidence, and outside spans (`O`) "
        "only with `return_probabilities_for_all_classes`.",
    )
    all_tags: list[ScoreOut] | None = Field(
        None, description="With `return_probabilities_for_all_classes`: every tag's probability."
    )


class SpanOut(BaseModel):
    text: str = Field(
        description="The span as written: the input text from `start` to `end` (raw input); pre-tokenized "
        "input: its tokens joined by single spaces."
    )
    start: int | None = Field(description="Character offset in the input text (raw input only).")
    end: int | None
    start_token: int
    end_token: int
    label: str
    confidence: float | None = Field(description="The span's probability" + NOT_A_NUMBER)


class SentenceOut(BaseModel):
    index: int = Field(description="Which input text/sentence this sentence came from.")
    text: str
    start: int | None = Field(description="Character offset of the sentence in its input text.")
    end: int | None
    tokens: list[TokenOut]
    spans: list[SpanOut] | None = None
    labels: list[ScoreOut] | None = None
    all_labels: list[ScoreOut] | None = None


class PredictResponse(BaseModel):
    model_id: str
    task: str
    label_type: str
    sentences: list[SentenceOut]


# -- evaluate -----------------------------------------------------------------------------------
class EvaluateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    corpus_id: str = Field(description="An uploaded corpus with gold labels of the model's kind.")
    split: Literal["train", "dev", "test"] = Field(
        default="test",
        description="Which split to score; one that was not uploaded is the part of train sampled for it "
        "at upload (the one a training job on this corpus used).",
    )
    label_type: str | None = Field(
        default=None, description="The corpus's gold label type to score against (default: the model's)."
    )
    mini_batch_size: int = Field(default=32, ge=1, le=1024)


class ClassScoresOut(BaseModel):
    precision: float
    recall: float
    f1: float
    support: int = Field(description="Gold items of this label.")


class EvaluationOut(BaseModel):
    model_id: str
    corpus_id: str
    split: str
    label_type: str = Field(description="The gold label type scored.")
    sentences: int
    main_score_name: str = Field(description="`micro_f1` for spans and multi-label classes, else `accuracy`.")
    main_score: float
    micro_precision: float
    micro_recall: float
    micro_f1: float
    macro_f1: float
    accuracy: float
    loss: float | None = Field(description="The mean loss; null when the model computed no number (NaN).")
    per_class: dict[str, ClassScoresOut]
    seconds: float = Field(description="Time the scoring took, model loading excluded.")


# -- jobs submit --------------------------------------------------------------------------------
JobSubmit = TrainingSpec


# -- transformers -------------------------------------------------------------------------------
class TransformerOut(BaseModel):
    name: str = Field(description="What a spec's `model` may say.")
    source: Literal["installed", "transformers_dir"] = Field(
        description="`installed` with Tagsmith, or a model folder in `TAGSMITH_TRANSFORMERS_DIR`."
    )
    hidden_states: int | None = Field(
        None, description="The embedding layer and every transformer layer: `layers` counts in these."
    )
    hidden_size: int | None = Field(None, description="Width of each hidden state.")
    problem: str | None = Field(
        None, description="Why a spec naming this model would be refused; `null` when it is usable."
    )


class TransformerList(BaseModel):
    items: list[TransformerOut]


class Health(BaseModel):
    status: str


class Index(BaseModel):
    """What ``GET /`` answers: where to go next (the URL ``tagsmith up`` prints)."""

    service: str
    version: str
    docs: str
    openapi: str
    health: str
    ready: str


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, str]
