"""The training spec: what ``POST /jobs`` validates and the worker builds a run from.

It mirrors the Flair training tutorial; every field has the tutorial's default. Checks that need
only the spec itself live here (e.g. document embeddings for a tagger); checks that need the
corpora (label type present, document boundaries for ``use_context``) run in
``service.logic.jobs`` when the job is submitted, and the stored spec is fully resolved
(``name`` and ``label_type`` filled in). Imported by the worker: no FastAPI here.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from engine.readers.files import clean_label

Task = Literal["sequence_tagging", "text_classification"]


def _not_blank(value: str | None, info: ValidationInfo) -> str | None:
    """A name is shown in listings and used for files: surrounding spaces go, nothing but spaces is
    no name, and a control character (a NUL: PostgreSQL refuses it in text) has no place in one."""
    if value is None:
        return None
    value = clean_label(value)  # invisible characters around it too: "\u200b" looks like no name
    if not value:
        if info.context and info.context.get("stored"):
            return "job"  # a job submitted before invisible names were refused still runs
        raise ValueError("must not be blank")
    control = next((c for c in value if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        raise ValueError(f"must not contain control characters (found {control!r})")
    # A right-to-left override shows "model-\u202egnp.exe" as "model-exe.png" in a listing.
    override = next((c for c in value if c in _DIRECTION_CONTROLS), None)
    if override is not None:
        if info.context and info.context.get("stored"):
            # a job submitted before they were refused still runs, under its name without them
            return "".join(c for c in value if c not in _DIRECTION_CONTROLS) or "job"
        raise ValueError(f"must not contain direction controls (found U+{ord(override):04X})")
    return value


_DIRECTION_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


Name = Annotated[str | None, AfterValidator(_not_blank)]


def name_from_file(filename: str, fallback: str, suffixes: tuple[str, ...] = ()) -> str:
    """The default name an upload takes from its file's name: without its folders (a client may
    send a path) and the first of ``suffixes`` it ends with (else its last extension). The name is
    the client's, not checked as a typed ``name`` is, so the characters a name may not hold are
    left out (a control character, a NUL among them, which PostgreSQL refuses in text; a direction
    control), the rest trimmed as a name is, and ``fallback`` when nothing is left."""
    base = PurePosixPath(filename.replace("\\", "/")).name
    suffix = next((s for s in suffixes if base.endswith(s)), None)
    stem = base[: -len(suffix)] if suffix else base.rsplit(".", 1)[0]
    kept = "".join(c for c in stem if unicodedata.category(c) != "Cc" and c not in _DIRECTION_CONTROLS)
    return clean_label(kept)[:200] or fallback


class _Strict(BaseModel):
    # Python's JSON parser accepts NaN and Infinity: an infinite bound (min_learning_rate,
    # max_seconds) passed the range checks and reached the JSON column, which PostgreSQL refuses.
    # strict: JSON types are kept, so `"max_epochs": true` or `"seed": false` is an error, not
    # 1 or 0, and `"use_crf": 0` or `"shuffle": "yes"` no boolean (an integer still fits a float).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


# torch.manual_seed refuses seeds past 2**64 - 1 and the trainer seeds each epoch's shuffle with
# seed * 100_003 + epoch, so larger seeds made jobs that failed at their first epoch; 2**32 - 1
# is NumPy's bound and leaves that product room.
MAX_SEED = 2**32 - 1


# -- token embeddings ---------------------------------------------------------------------------
class WordEmbeddingSpec(_Strict):
    """Static word vectors (the tutorial's ``WordEmbeddings('glove')``)."""

    type: Literal["word"] = "word"
    name: Literal["glove"] = Field("glove", description="Pre-trained vectors: `glove` (GloVe 6B, 50d).")
    fine_tune: bool = Field(False, description="Update the vectors during training.")


class CharacterEmbeddingSpec(_Strict):
    """A character BiLSTM per word, trained with the model (``CharacterEmbeddings()``)."""

    type: Literal["character"] = "character"
    char_embedding_dim: int = Field(25, ge=1, le=1024)
    hidden_size_char: int = Field(25, ge=1, le=1024)
    # Specs stored before this option read as "corpus": a job not yet started gets the corpus's
    # dictionary; one that resumes keeps the dictionary its checkpoint holds (its weights fit it).
    characters: Literal["corpus", "default"] = Field(
        "corpus",
        description=(
            "The character dictionary: `corpus` (ASCII, Latin-1 and typographic punctuation plus every "
            "other character the training sentences hold at least twice, most frequent first, at most 20,000) "
            "or `default` "
            "(ASCII, Latin-1 and typographic punctuation only). Characters outside it share one unknown "
            "vector: with `default`, all Cyrillic, Greek, CJK or Arabic letters look alike."
        ),
    )


class FlairEmbeddingSpec(_Strict):
    """Contextual string embeddings from a character language model trained by a
    `language_model` job (``FlairEmbeddings``)."""

    type: Literal["flair"] = "flair"
    model: str = Field(
        min_length=1,
        validation_alias=AliasChoices("model", "model_id"),
        description="Id of a language model (a model whose task is `language_model`); `model_id` is accepted too.",
    )
    fine_tune: bool = False


# a folder name: no separators, and never "." or ".."
TRANSFORMER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
TRANSFORMER_MODEL_HELP = (
    "A transformer by name: `all-MiniLM-L6-v2` (installed with Tagsmith) or a Hugging Face model folder "
    "in the server's `TAGSMITH_TRANSFORMERS_DIR`. Never a path."
)


def _transformer_name(value: str) -> str:
    # A spec names a model and the server resolves it (service.transformer_models): a path would let any
    # user make a worker read any folder on its machine.
    if not TRANSFORMER_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a transformer name (letters, digits, '.', '_', '-'; no paths): install the "
            "model folder in the server's TAGSMITH_TRANSFORMERS_DIR and give its folder name"
        )
    return value


TransformerName = Annotated[str, AfterValidator(_transformer_name)]

LAYERS_PATTERN = r"^(all|-?\d+(,-?\d+)*)$"


def _layers(value: object) -> object:
    # Before pydantic's own checks, whose words for a number ("Input should be a valid string") or
    # a space after a comma (the pattern itself, as a regular expression) do not say what to write.
    if isinstance(value, str) and re.fullmatch(LAYERS_PATTERN, value):
        return value
    raise ValueError(
        "must be a string: 'all', or layer indices joined by commas without spaces, such as '-1' or "
        f"'-1,-2,-3,-4'; got {repr(value)[:80]}"
    )


# The pattern stays in the schema (openapi/) for clients, as long as it comes before the validator.
Layers = Annotated[str, Field(pattern=LAYERS_PATTERN), BeforeValidator(_layers)]


# Context tokens a side: a transformer's window is 512 subtokens, and every token is at least one.
MAX_CONTEXT_TOKENS = 512


class TransformerWordEmbeddingSpec(_Strict):
    """Token embeddings from a Hugging Face transformer (``TransformerWordEmbeddings``)."""

    type: Literal["transformer"] = "transformer"
    model: TransformerName = Field("all-MiniLM-L6-v2", description=TRANSFORMER_MODEL_HELP)
    layers: Layers = Field("-1", description="`-1`, `-1,-2,-3,-4` or `all`.")
    subtoken_pooling: Literal["first", "last", "first_last", "mean"] = "first"
    layer_mean: bool = True
    fine_tune: bool = True
    use_context: bool | int = Field(
        False,
        description="Add neighbouring sentences of the same document as context (needs documents): "
        f"`true` (64 tokens a side) or a token count a side, at most {MAX_CONTEXT_TOKENS}.",
    )

    @field_validator("use_context")
    @classmethod
    def _context_in_range(cls, value: bool | int) -> bool | int:
        # The embedding refuses a negative count, so such a job failed in the worker at every run.
        # A count past the encoder's window adds nothing the window keeps, but every sentence
        # encoded its whole document again: use_context 10**9 made an epoch quadratic in it.
        if not isinstance(value, bool) and not 0 <= value <= MAX_CONTEXT_TOKENS:
            raise ValueError(
                f"must be true, false or a token count from 0 to {MAX_CONTEXT_TOKENS}, got {value}"
            )
        return value


TokenEmbeddingSpec = Annotated[
    WordEmbeddingSpec | CharacterEmbeddingSpec | FlairEmbeddingSpec | TransformerWordEmbeddingSpec,
    Field(discriminator="type"),
]


def _glove_only() -> list[TokenEmbeddingSpec]:
    return [WordEmbeddingSpec()]


# -- document embeddings ------------------------------------------------------------------------
class TransformerDocumentEmbeddingSpec(_Strict):
    """A whole-text transformer embedding (``TransformerDocumentEmbeddings``)."""

    type: Literal["transformer_document"] = "transformer_document"
    model: TransformerName = Field("all-MiniLM-L6-v2", description=TRANSFORMER_MODEL_HELP)
    layers: Layers = "-1"
    cls_pooling: Literal["cls", "mean", "max"] = "cls"
    fine_tune: bool = True


class DocumentPoolEmbeddingSpec(_Strict):
    """Pooled token embeddings (``DocumentPoolEmbeddings``)."""

    type: Literal["document_pool"] = "document_pool"
    embeddings: list[TokenEmbeddingSpec] = Field(default_factory=_glove_only, min_length=1, max_length=8)
    pooling: Literal["mean", "min", "max"] = "mean"
    fine_tune_mode: Literal["none", "linear", "nonlinear"] = "none"


class DocumentRNNEmbeddingSpec(_Strict):
    """An RNN over token embeddings (``DocumentRNNEmbeddings``)."""

    type: Literal["document_rnn"] = "document_rnn"
    embeddings: list[TokenEmbeddingSpec] = Field(default_factory=_glove_only, min_length=1, max_length=8)
    hidden_size: int = Field(128, ge=1, le=8192)
    rnn_layers: int = Field(1, ge=1, le=8)
    rnn_type: Literal["GRU", "LSTM"] = "GRU"
    bidirectional: bool = False
    reproject_words: bool = True
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    word_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    locked_dropout: float = Field(0.0, ge=0.0, lt=1.0)


DocumentEmbeddingSpec = (
    TransformerDocumentEmbeddingSpec | DocumentPoolEmbeddingSpec | DocumentRNNEmbeddingSpec
)
EmbeddingSpec = Annotated[
    WordEmbeddingSpec
    | CharacterEmbeddingSpec
    | FlairEmbeddingSpec
    | TransformerWordEmbeddingSpec
    | TransformerDocumentEmbeddingSpec
    | DocumentPoolEmbeddingSpec
    | DocumentRNNEmbeddingSpec,
    Field(discriminator="type"),
]
TOKEN_EMBEDDING_TYPES = frozenset({"word", "character", "flair", "transformer"})
DOCUMENT_EMBEDDING_TYPES = frozenset({"transformer_document", "document_pool", "document_rnn"})


# -- the rest of the spec -----------------------------------------------------------------------
class CorpusSelection(_Strict):
    ids: list[str] = Field(
        min_length=1, max_length=32, description="Corpus ids; several make a multi-corpus."
    )
    downsample: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Keep this fraction of every split (seeded), like `corpus.downsample(0.1)`.",
    )

    @model_validator(mode="after")
    def _unique(self) -> CorpusSelection:
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("corpus ids must be distinct")
        return self


class ModelOptions(_Strict):
    """``SequenceTagger`` options (taggers) and ``TextClassifier`` options (classifiers)."""

    hidden_size: int = Field(256, ge=1, le=8192, description="Tagger: BiLSTM hidden size.")
    use_crf: bool = Field(True, description="Tagger: CRF output layer.")
    use_rnn: bool = Field(True, description="Tagger: BiLSTM over the embeddings.")
    rnn_layers: int = Field(1, ge=1, le=8, description="Tagger: BiLSTM layers.")
    reproject_embeddings: bool = Field(
        True, description="Tagger: a linear map over the stacked embeddings first."
    )
    tag_format: Literal["BIOES", "BIO"] = Field(
        "BIOES", description="Tagger, span labels: the tag scheme trained."
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Tagger: dropout.")
    word_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Tagger: word dropout.")
    locked_dropout: float = Field(0.5, ge=0.0, lt=1.0, description="Tagger: locked (variational) dropout.")
    multi_label: bool | None = Field(
        None, description="Classifier: several labels per text. Default: detected from the corpus."
    )
    multi_label_threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="Classifier, multi-label: decision threshold."
    )


TAGGER_OPTIONS = frozenset(
    {
        "hidden_size",
        "use_crf",
        "use_rnn",
        "rnn_layers",
        "reproject_embeddings",
        "tag_format",
        "dropout",
        "word_dropout",
        "locked_dropout",
    }
)
CLASSIFIER_OPTIONS = frozenset({"multi_label", "multi_label_threshold"})

FINE_TUNE_DEFAULTS: dict[str, Any] = {
    "optimizer": "adamw",
    "learning_rate": 5e-5,
    "scheduler": "linear_warmup",
    "warmup_fraction": 0.1,
    "embeddings_storage_mode": "none",
}


class TrainerOptions(_Strict):
    """``ModelTrainer.train`` / ``fine_tune`` options."""

    mode: Literal["train", "fine_tune"] = Field(
        "train",
        description="`train` (SGD + annealing, the tutorial's default) or `fine_tune`, whose defaults are "
        "AdamW, learning rate 5e-5, linear warm-up over 10% and embeddings storage `none` "
        "(values set explicitly are kept).",
    )
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    learning_rate: float = Field(0.1, gt=0.0, le=10.0)
    mini_batch_size: int = Field(32, ge=1, le=4096)
    mini_batch_chunk_size: int | None = Field(None, ge=1, le=4096)
    max_epochs: int = Field(10, ge=1, le=1000)
    scheduler: Literal["anneal_on_plateau", "linear_warmup", "one_cycle", "none"] = Field(
        "anneal_on_plateau",
        description="`anneal_on_plateau`: multiply the rate by `anneal_factor` after `patience` epochs "
        "without a better dev score, and stop when it falls below `min_learning_rate`. "
        "`linear_warmup`: rise over `warmup_fraction` of the batches, then decay linearly to 0. "
        "`one_cycle`: PyTorch's one-cycle policy for the rate, peaking at `learning_rate` (momentum is not "
        "cycled). `none`: a constant rate.",
    )
    anneal_factor: float = Field(0.5, gt=0.0, lt=1.0)
    patience: int = Field(3, ge=0, le=100)
    min_learning_rate: float = Field(0.0001, ge=0.0)
    anneal_with_restarts: bool = Field(
        False,
        description="`anneal_on_plateau` only: each time the rate is lowered, training continues from "
        "the best model so far rather than the current one.",
    )
    warmup_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="The optimizer's weight decay.")
    max_grad_norm: float | None = Field(
        5.0, gt=0.0, le=1e6, description="Gradients are clipped to this norm; `null` turns clipping off."
    )
    eval_batch_size: int = Field(64, ge=1, le=4096, description="Sentences per batch when evaluating.")
    embeddings_storage_mode: Literal["none", "cpu", "gpu"] = "cpu"
    train_with_dev: bool = False
    shuffle: bool = True
    checkpoint: bool = Field(
        True,
        description="Store a checkpoint after every epoch: what `resume`, a job whose worker died and a worker "
        "shutdown continue from. `false` saves storing a large model every epoch; such a job starts over "
        "from its first epoch instead.",
    )
    write_weights: bool = False
    seed: int = Field(42, ge=0, le=MAX_SEED)
    decoder_learning_rate: float | None = Field(
        None,
        gt=0.0,
        le=10.0,
        description="A learning rate of its own for the layers above the embeddings (the classifier's "
        "linear layer, the tagger's LSTM and CRF), scaled by the same schedule as `learning_rate`. "
        "Useful when fine-tuning a transformer, whose fresh output layer learns slowly at the "
        "transformer's rate. Default: `learning_rate` for every parameter.",
    )
    use_amp: bool = Field(
        False,
        description="Mixed precision: float16 autocast with loss scaling on a CUDA device, bfloat16 "
        "autocast on a CPU that computes bfloat16 natively (AVX512-BF16 or AMX); ignored on other CPUs.",
    )
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="`gpu` sends the job to the GPU queue; `auto` uses the server's default queue."
    )

    @model_validator(mode="after")
    def _fine_tune_defaults(self) -> TrainerOptions:
        # Fine-tuning has its own defaults (the tutorial's ``trainer.fine_tune``); only values the
        # user left out take them, so an explicit choice always wins.
        if self.mode == "fine_tune":
            for field, value in FINE_TUNE_DEFAULTS.items():
                if field not in self.model_fields_set:
                    object.__setattr__(self, field, value)
        if self.anneal_with_restarts and self.scheduler != "anneal_on_plateau":
            # restarts happen when the rate is annealed: with any other schedule it would do nothing
            raise ValueError(
                f"anneal_with_restarts needs scheduler 'anneal_on_plateau', not {self.scheduler!r}"
            )
        if self.scheduler == "anneal_on_plateau" and self.learning_rate < self.min_learning_rate:
            # the trainer would stop before the first epoch: a job that trains nothing
            raise ValueError(
                f"learning_rate {self.learning_rate:g} is below min_learning_rate {self.min_learning_rate:g}: "
                "anneal_on_plateau stops as soon as the rate is below the minimum"
            )
        return self

    @field_validator("mini_batch_chunk_size")
    @classmethod
    def _chunk_fits(cls, value: int | None, info: ValidationInfo) -> int | None:
        size = info.data.get("mini_batch_size")
        if value is not None and size is not None and value > size:
            raise ValueError(f"must not exceed mini_batch_size ({size})")
        return value

    @field_validator("device")
    @classmethod
    def _device_fits_storage(cls, value: str, info: ValidationInfo) -> str:
        if value == "cpu" and info.data.get("embeddings_storage_mode") == "gpu":
            raise ValueError("embeddings_storage_mode 'gpu' needs device 'gpu' or 'auto'")
        return value


def _default_embeddings(task: object) -> list[dict[str, Any]]:
    if task == "text_classification":
        # A GRU over GloVe (Flair's DocumentRNNEmbeddings defaults): mean-pooled GloVe learned
        # little (TREC-6 held out, 10 epochs: 0.558 accuracy, against 0.754 for the GRU).
        return [{"type": "document_rnn", "embeddings": [{"type": "word", "name": "glove"}]}]
    return [{"type": "word", "name": "glove"}, {"type": "character"}]


class TrainingSpec(_Strict):
    name: Name = Field(
        None, min_length=1, max_length=200, description="Job and model name. Default: `<task>-<label_type>`."
    )
    task: Task = "sequence_tagging"
    corpus: CorpusSelection
    label_type: str | None = Field(
        None,
        max_length=100,
        description="Label type to learn (e.g. `ner`, `upos`, `class`). Default: the corpus's only fitting type.",
    )
    embeddings: list[EmbeddingSpec] = Field(
        min_length=1,
        max_length=8,
        description="Stacked embeddings. Default: GloVe + characters (tagger), a GRU over GloVe (classifier: `document_rnn`).",
    )
    model: ModelOptions = Field(default_factory=ModelOptions)
    trainer: TrainerOptions = Field(default_factory=TrainerOptions)

    @field_validator("task", mode="before")
    @classmethod
    def _not_a_language_model(cls, value: Any) -> Any:
        if value == "language_model":
            raise ValueError(
                "language models are trained with POST /jobs/language-model (a LanguageModelSpec)"
            )
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _language_model_spec_goes_elsewhere(
        cls, data: Any, handler: ModelWrapValidatorHandler[TrainingSpec]
    ) -> TrainingSpec:
        # The README's language-model body posted here read "corpus: Field required" and
        # "corpus_id: Extra inputs are not permitted": nothing said where such a spec goes.
        try:
            return handler(data)
        except ValidationError as error:
            if not _looks_like_a_language_model_spec(data):
                raise
            raise ValidationError.from_exception_data(
                error.title, [_pointed_to_language_model_jobs(e) for e in error.errors()]
            ) from None

    @field_validator("model")
    @classmethod
    def _options_fit_task(cls, value: ModelOptions, info: ValidationInfo) -> ModelOptions:
        # An option of the other kind of model would be silently ignored. A stored spec names every
        # option with its default: only other values count.
        tagging = info.data.get("task", "sequence_tagging") == "sequence_tagging"
        other = CLASSIFIER_OPTIONS if tagging else TAGGER_OPTIONS
        wrong = sorted(n for n in other if getattr(value, n) != ModelOptions.model_fields[n].default)
        if wrong and info.context and info.context.get("stored"):
            # Older versions stored such options and trained without them: the job still runs.
            return value.model_copy(update={n: ModelOptions.model_fields[n].default for n in wrong})
        if wrong:
            kind, model = ("classifier", "a sequence tagger") if tagging else ("tagger", "a text classifier")
            raise ValueError(f"{', '.join(wrong)}: {kind} option(s), which {model} does not have")
        return value

    @model_serializer(mode="wrap")
    def _without_the_other_models_options(self, handler: SerializerFunctionWrapHandler) -> Any:
        # A stored classifier spec said "use_crf": true: options the task's model does not have are
        # left out, and validating the stored spec fills their defaults back in.
        data = handler(self)
        if isinstance(data, dict) and isinstance(data.get("model"), dict):
            other = CLASSIFIER_OPTIONS if self.task == "sequence_tagging" else TAGGER_OPTIONS
            data["model"] = {k: v for k, v in data["model"].items() if k not in other}
        return data

    @model_validator(mode="before")
    @classmethod
    def _fill_default_embeddings(cls, data: Any) -> Any:
        # The default depends on the task, so it is filled in before field validation.
        if isinstance(data, dict) and data.get("embeddings") is None:
            data = {**data, "embeddings": _default_embeddings(data.get("task", "sequence_tagging"))}
        return data

    @field_validator("embeddings")
    @classmethod
    def _embeddings_fit_task(cls, value: list[Any], info: ValidationInfo) -> list[Any]:
        types = [e.type for e in value]
        if info.data.get("task", "sequence_tagging") == "sequence_tagging":
            wrong = [t for t in types if t in DOCUMENT_EMBEDDING_TYPES]
            if wrong:
                raise ValueError(
                    f"a sequence tagger needs token embeddings; {', '.join(wrong)} are document embeddings"
                )
        else:
            documents = [t for t in types if t in DOCUMENT_EMBEDDING_TYPES]
            if len(documents) != 1 or len(types) != 1:
                raise ValueError(
                    "a text classifier needs exactly one document embedding "
                    "(transformer_document, document_pool or document_rnn); token embeddings go inside it"
                )
        return value

    def token_embeddings(self) -> list[tuple[list[str | int], Any]]:
        """Every token embedding, including those nested in document embeddings, with its
        path in the request body (for error locations)."""
        found: list[tuple[list[str | int], Any]] = []
        for i, emb in enumerate(self.embeddings):
            if isinstance(emb, DocumentPoolEmbeddingSpec | DocumentRNNEmbeddingSpec):
                found.extend(
                    (["body", "embeddings", i, "embeddings", j], e) for j, e in enumerate(emb.embeddings)
                )
            elif emb.type in TOKEN_EMBEDDING_TYPES:
                found.append((["body", "embeddings", i], emb))
        return found

    def queue(self, default_queue: str) -> str:
        return "gpu" if self.trainer.device == "gpu" else default_queue


# -- language-model jobs ------------------------------------------------------------------------
class LanguageModelSpec(_Strict):
    """A character language model (``LanguageModelTrainer``) trained on a `text` corpus; the
    result is a model with task `language_model`, used by `flair` embeddings."""

    name: Name = Field(
        None,
        min_length=1,
        max_length=200,
        description="Job and model name. Default: `language-model-<direction>`.",
    )
    task: Literal["language_model"] = "language_model"
    corpus_id: str = Field(min_length=1, description="A corpus of format `text`.")
    direction: Literal["forward", "backward"] = "forward"
    hidden_size: int = Field(1024, ge=1, le=8192, description="LSTM hidden size (Flair: 1024 or 2048).")
    nlayers: int = Field(1, ge=1, le=8)
    embedding_size: int = Field(100, ge=1, le=4096, description="Character embedding size.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    sequence_length: int = Field(250, ge=2, le=10_000, description="Characters per truncated BPTT window.")
    mini_batch_size: int = Field(100, ge=1, le=4096, description="Parallel character streams.")
    learning_rate: float = Field(20.0, gt=0.0, le=1000.0, description="SGD learning rate.")
    anneal_factor: float = Field(0.25, gt=0.0, lt=1.0)
    patience: int = Field(10, ge=0, le=1000)
    clip: float = Field(0.25, gt=0.0, le=100.0, description="Gradient-norm clipping.")
    max_epochs: int = Field(1, ge=1, le=1000, description="Passes over the training text.")
    max_seconds: float | None = Field(
        None, gt=0.0, description="Time budget: no new training file is started after it."
    )
    train_chunk_chars: int = Field(
        1_000_000, ge=1000, le=100_000_000, description="Training text is cut into files of this size."
    )
    seed: int = Field(42, ge=0, le=MAX_SEED)
    device: Literal["auto", "cpu", "gpu"] = "auto"

    def queue(self, default_queue: str) -> str:
        return "gpu" if self.device == "gpu" else default_queue


# Fields only a language-model spec has, not even nested in a training spec's model or trainer
# options: a body with one of them is a language-model spec, whatever else it holds.
_LANGUAGE_MODEL_ONLY = frozenset(LanguageModelSpec.model_fields) - (
    frozenset(TrainingSpec.model_fields)
    | frozenset(ModelOptions.model_fields)
    | frozenset(TrainerOptions.model_fields)
)
_TO_LANGUAGE_MODEL_JOBS = "language models are trained with POST /jobs/language-model, not POST /jobs"


def _looks_like_a_language_model_spec(data: Any) -> bool:
    return isinstance(data, dict) and (
        data.get("task") == "language_model" or not _LANGUAGE_MODEL_ONLY.isdisjoint(data)
    )


def _pointed_to_language_model_jobs(error: Any) -> InitErrorDetails:
    """A training spec's error for a language-model spec's body, reworded to say where that body
    goes; its location and type stay (clients may read them)."""
    loc, kind = tuple(error["loc"]), str(error["type"])
    if kind == "extra_forbidden" and len(loc) == 1 and loc[0] in LanguageModelSpec.model_fields:
        message = f"a language-model spec field; {_TO_LANGUAGE_MODEL_JOBS}"
    elif kind == "missing" and loc == ("corpus",):
        message = f"Field required; this body is a language-model spec: {_TO_LANGUAGE_MODEL_JOBS}"
    else:
        return {"type": PydanticCustomError(kind, str(error["msg"])), "loc": loc, "input": error["input"]}
    return {"type": PydanticCustomError(kind, message), "loc": loc, "input": error.get("input")}


# -- specs stored with jobs ---------------------------------------------------------------------
class StoredSpecError(ValueError):
    """A job's stored spec that this version cannot run (stored by an older Tagsmith, which
    accepted what is refused now)."""


_Spec = TypeVar("_Spec", TrainingSpec, LanguageModelSpec)


def stored_spec(model: type[_Spec], data: Any) -> _Spec:
    """A job's spec read back from its row: what older versions stored and ignored (the other
    task's model options) is dropped; what cannot run here is a one-line StoredSpecError naming
    the field, not pydantic's report."""
    try:
        return model.model_validate(data, context={"stored": True})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the spec"
        raise StoredSpecError(
            f"the job's spec, stored by an older Tagsmith, is not valid in this one: {where}: "
            f"{first['msg']}; submit the job again with that corrected"
        ) from None
