"""From a stored job to engine objects: corpus, embeddings, model, trainer, device.

The mapping mirrors the tutorial: each spec section becomes the engine call a script would make
(``ColumnCorpus(...)`` -> ``corpus.downsample(0.1)`` -> ``make_label_dictionary`` ->
``StackedEmbeddings([...])`` -> ``SequenceTagger(...)`` -> ``ModelTrainer(...).train(...)``).
Corpus files and language models come from storage by the keys in their rows; nothing here
trusts a user-supplied path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from engine.data import Corpus, Dictionary, MultiCorpus, Sentence
from engine.embeddings import DocumentEmbeddings, TokenEmbeddings
from engine.embeddings.base import resource_folder_name
from engine.limits import label_count_error
from engine.models.base import Model
from engine.training.callbacks import TrainingEnded
from engine.training.trainer import ModelTrainer
from service.db.models import Corpus as CorpusRow
from service.db.models import Model as ModelRow
from service.db.session import session_scope
from service.schemas import spec as s
from service.storage import Storage, get_storage
from service.stored_corpora import read_stored_corpus
from service.transformer_models import transformer_folder
from worker.progress import JobProgress

log = logging.getLogger(__name__)


class BuildError(ValueError):
    """The stored spec cannot be built (a corpus or language model vanished, a wrong model kind)."""


# -- device -------------------------------------------------------------------------------------
# The worker's log and the job's training.log both say so (tasks._run writes the latter).
NO_CUDA = "the job asks for a GPU and this worker has no CUDA device: it trains on the CPU"


def choose_device(spec: s.TrainingSpec) -> str:
    """``cuda`` when the spec does not insist on the CPU and this machine has a GPU."""
    if spec.trainer.device != "cpu" and torch.cuda.is_available():
        return "cuda"
    return "cpu"


# -- corpus -------------------------------------------------------------------------------------
def load_corpus(spec: s.TrainingSpec, storage: Storage, folder: Path) -> Corpus:
    """Read every selected corpus from its stored files (several make a MultiCorpus), then downsample."""
    corpora: list[Corpus] = []
    for corpus_id in spec.corpus.ids:
        with session_scope() as session:
            row = session.get(CorpusRow, corpus_id)
            if row is None:
                raise BuildError(f"corpus {corpus_id} no longer exists")
            format, options, files, name = row.format, dict(row.options or {}), dict(row.files), row.name
        corpus = read_stored_corpus(storage, format, options, files, folder / corpus_id)
        corpus.name = name
        corpora.append(corpus)
    corpus = corpora[0] if len(corpora) == 1 else MultiCorpus(corpora, name="+".join(c.name for c in corpora))
    if spec.corpus.downsample is not None:
        corpus.downsample(spec.corpus.downsample)
    return corpus


# -- embeddings ---------------------------------------------------------------------------------
def _language_model_folder(model_id: str, folder: Path) -> Path:
    with session_scope() as session:
        row = session.get(ModelRow, model_id)
        if row is None:
            raise BuildError(f"language model {model_id} no longer exists")
        if row.task != "language_model":
            raise BuildError(f"model {model_id} is a {row.task} model, not a language model")
        key = row.storage_key
    target = folder / f"language-model-{model_id}"
    if not target.is_dir():
        get_storage().get_dir(key, target)
    return target


def training_sentences(spec: s.TrainingSpec, corpus: Corpus) -> list[Sentence]:
    """The sentences the model learns from: train, and dev too when the trainer trains on it."""
    return corpus.train + corpus.dev if spec.trainer.train_with_dev else corpus.train


def token_embedding(spec: Any, folder: Path, train: Sequence[Sentence]) -> TokenEmbeddings:
    """``train``: the training sentences (a character dictionary is made from them)."""
    if isinstance(spec, s.WordEmbeddingSpec):
        from engine.embeddings.word import WordEmbeddings

        return WordEmbeddings(spec.name, fine_tune=spec.fine_tune)
    if isinstance(spec, s.CharacterEmbeddingSpec):
        from engine.embeddings.character import CharacterEmbeddings

        dim, hidden = spec.char_embedding_dim, spec.hidden_size_char
        if spec.characters == "default":
            return CharacterEmbeddings(char_embedding_dim=dim, hidden_size_char=hidden)
        # min_count 2: a character the training data holds once (the ş of one name in an English
        # corpus) trains <unk>, the vector every character training never saw gets at predict
        # time; with a vector of its own for every character, <unk> would stay as initialised.
        # Built only for a new model: a resumed job loads its checkpoint, whose config holds the
        # dictionary its weights were trained with.
        return CharacterEmbeddings.from_sentences(
            train, min_count=2, char_embedding_dim=dim, hidden_size_char=hidden
        )
    if isinstance(spec, s.TransformerWordEmbeddingSpec):
        from engine.embeddings.transformer import TransformerWordEmbeddings

        return TransformerWordEmbeddings(
            model=spec.model,
            model_folder=transformer_folder(spec.model),
            layers=spec.layers,
            layer_mean=spec.layer_mean,
            subtoken_pooling=spec.subtoken_pooling,
            fine_tune=spec.fine_tune,
            use_context=spec.use_context,
        )
    if isinstance(spec, s.FlairEmbeddingSpec):
        from engine.embeddings.flair import FlairEmbeddings

        return FlairEmbeddings(_language_model_folder(spec.model, folder), fine_tune=spec.fine_tune)
    raise BuildError(f"{spec.type!r} is not a token embedding")


def token_embeddings(specs: list[Any], folder: Path, train: Sequence[Sentence]) -> list[TokenEmbeddings]:
    """The embeddings of one stack, each with a name of its own. An embedding's name says what it
    is (``flair:forward``, ``char``, ``transformer:<model>:<layers>:<pooling>``) and keys what it
    keeps on sentences and its files in a saved model, so the engine refuses a stack with two of
    one name and asks for a ``name=``, which a spec has no field for: two forward language models,
    or two character embeddings of different sizes, failed every such job in the worker. A later
    one of a taken name is called ``<name>:2``, ``<name>:3`` ...; the first keeps its name. Taken
    are the names' resource folders, which distinct names can share (``<name>:2`` and
    ``<name>_2``), and the engine refuses two embeddings whose files would share one."""
    built = [token_embedding(e, folder, train) for e in specs]
    taken: set[str] = set()
    for embedding in built:
        name, n = embedding.name, 1
        while resource_folder_name(name) in taken:
            n += 1
            name = f"{embedding.name}:{n}"
        embedding.name = name
        taken.add(resource_folder_name(name))
    return built


def stacked_token_embeddings(specs: list[Any], folder: Path, train: Sequence[Sentence]) -> TokenEmbeddings:
    from engine.embeddings.stacked import StackedEmbeddings

    built = token_embeddings(specs, folder, train)
    return built[0] if len(built) == 1 else StackedEmbeddings(built)


def document_embedding(spec: Any, folder: Path, train: Sequence[Sentence]) -> DocumentEmbeddings:
    if isinstance(spec, s.TransformerDocumentEmbeddingSpec):
        from engine.embeddings.transformer import TransformerDocumentEmbeddings

        return TransformerDocumentEmbeddings(
            model=spec.model,
            model_folder=transformer_folder(spec.model),
            layers=spec.layers,
            cls_pooling=spec.cls_pooling,
            fine_tune=spec.fine_tune,
        )
    if isinstance(spec, s.DocumentPoolEmbeddingSpec):
        from engine.embeddings.document import DocumentPoolEmbeddings

        return DocumentPoolEmbeddings(
            token_embeddings(spec.embeddings, folder, train),
            pooling=spec.pooling,
            fine_tune_mode=spec.fine_tune_mode,
        )
    if isinstance(spec, s.DocumentRNNEmbeddingSpec):
        from engine.embeddings.document import DocumentRNNEmbeddings

        return DocumentRNNEmbeddings(
            token_embeddings(spec.embeddings, folder, train),
            hidden_size=spec.hidden_size,
            rnn_layers=spec.rnn_layers,
            rnn_type=spec.rnn_type,
            bidirectional=spec.bidirectional,
            reproject_words=spec.reproject_words,
            dropout=spec.dropout,
            word_dropout=spec.word_dropout,
            locked_dropout=spec.locked_dropout,
        )
    raise BuildError(f"{spec.type!r} is not a document embedding")


# -- model and trainer --------------------------------------------------------------------------
def label_type(spec: s.TrainingSpec) -> str:
    if spec.label_type is None:
        raise BuildError("the stored spec has no label_type (the service resolves it on submit)")
    return spec.label_type


def label_dictionary(spec: s.TrainingSpec, corpus: Corpus) -> Dictionary:
    learned = label_type(spec)
    fraction = spec.corpus.downsample
    if fraction is None:
        return corpus.make_label_dictionary(learned)
    labels: Dictionary | None
    try:
        labels = corpus.make_label_dictionary(learned)
    except ValueError:  # not one sentence with the label type
        labels = None
    # POST /jobs checked the whole training split; a small downsample may keep only sentences
    # without the label type, or with one class of it: the job failed with "the tag dictionary
    # for 'ner' is empty" or the trainer's two-class error, neither naming the downsample.
    kept = f"corpus.downsample {fraction:g} keeps {len(corpus.train)} training sentence(s)"
    if labels is None or len(labels) == 0:
        raise BuildError(f"{kept}, and none has a {learned!r} label: use a larger corpus.downsample")
    multi_label = spec.model.multi_label if spec.model.multi_label is not None else labels.multi_label
    if spec.task == "text_classification" and len(labels) == 1 and not multi_label:
        raise BuildError(
            f"{kept}, whose {learned!r} labels are all {labels.get_items()[0]!r}: a classifier needs two "
            "classes; use a larger corpus.downsample"
        )
    return labels


def build_model(spec: s.TrainingSpec, corpus: Corpus, folder: Path) -> Model:
    labels = label_dictionary(spec, corpus)
    train = training_sentences(spec, corpus)
    learned = label_type(spec)
    options = spec.model
    _check_label_count(spec, corpus, labels)
    if spec.task == "sequence_tagging":
        from engine.models.sequence_tagger import SequenceTagger

        return SequenceTagger(
            embeddings=stacked_token_embeddings(list(spec.embeddings), folder, train),
            tag_dictionary=labels,
            tag_type=learned,
            hidden_size=options.hidden_size,
            use_crf=options.use_crf,
            use_rnn=options.use_rnn,
            rnn_layers=options.rnn_layers,
            reproject_embeddings=options.reproject_embeddings,
            dropout=options.dropout,
            word_dropout=options.word_dropout,
            locked_dropout=options.locked_dropout,
            tag_format=options.tag_format,
            label_kind=corpus.label_kinds().get(learned),
        )
    from engine.models.text_classifier import TextClassifier

    return TextClassifier(
        document_embeddings=document_embedding(spec.embeddings[0], folder, train),
        label_dictionary=labels,
        label_type=learned,
        multi_label=options.multi_label,
        multi_label_threshold=options.multi_label_threshold,
    )


def _check_label_count(spec: s.TrainingSpec, corpus: Corpus, labels: Dictionary) -> None:
    """POST /jobs checks the training split's statistics; the dictionary may hold more (labels
    of the dev split): no model is trained that its own server would refuse to import."""
    count = sum(1 for item in labels.get_items() if item not in (Dictionary.UNK, "O"))
    kind = corpus.label_kinds().get(spec.label_type or "")
    use_crf = spec.task == "sequence_tagging" and spec.model.use_crf
    problem = label_count_error(count, kind, spec.model.tag_format, use_crf)
    if problem is not None:
        raise BuildError(f"label type {spec.label_type!r} has {problem}")


def new_trainer(spec: s.TrainingSpec, corpus: Corpus, folder: Path) -> ModelTrainer:
    if spec.trainer.seed is not None:
        # The initial weights: the trainer seeds again when it starts, after the model is built,
        # so without this a job's weights depended on what the worker had run before it.
        torch.manual_seed(spec.trainer.seed)
    return ModelTrainer(build_model(spec, corpus, folder), corpus)


def resume_trainer(checkpoint_dir: Path, corpus: Corpus) -> ModelTrainer:
    return ModelTrainer.load_checkpoint(checkpoint_dir, corpus)


def trainer_arguments(spec: s.TrainingSpec) -> dict[str, Any]:
    """``ModelTrainer.train`` / ``fine_tune`` keyword arguments from the spec's trainer section."""
    t = spec.trainer
    arguments: dict[str, Any] = {
        "learning_rate": t.learning_rate,
        "mini_batch_size": t.mini_batch_size,
        "mini_batch_chunk_size": t.mini_batch_chunk_size,
        "max_epochs": t.max_epochs,
        "optimizer": t.optimizer,
        "scheduler": t.scheduler,
        "anneal_factor": t.anneal_factor,
        "patience": t.patience,
        "min_learning_rate": t.min_learning_rate,
        "anneal_with_restarts": t.anneal_with_restarts,
        "warmup_fraction": t.warmup_fraction,
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "eval_batch_size": t.eval_batch_size,
        "embeddings_storage_mode": t.embeddings_storage_mode,
        "train_with_dev": t.train_with_dev,
        "shuffle": t.shuffle,
        "checkpoint": t.checkpoint,
        "write_weights": t.write_weights,
        "seed": t.seed,
        "use_amp": t.use_amp,
        "decoder_learning_rate": t.decoder_learning_rate,
    }
    return arguments


def train(
    trainer: ModelTrainer, spec: s.TrainingSpec, base_path: Path, device: str, progress: JobProgress
) -> TrainingEnded:
    """Run (or continue) training; returns how it ended, as the callback saw it."""
    arguments = trainer_arguments(spec)
    if device == "cpu" and arguments["embeddings_storage_mode"] == "gpu":
        # The spec may ask for GPU storage for a GPU run; this run has no GPU. (use_amp stays:
        # the trainer takes bfloat16 on a CPU that computes it natively, and ignores it elsewhere.)
        arguments["embeddings_storage_mode"] = "cpu"
    run = trainer.fine_tune if spec.trainer.mode == "fine_tune" else trainer.train
    run(base_path, callbacks=[progress], device=device, **arguments)
    if progress.ended is None:
        raise RuntimeError("the trainer returned without reporting the end of training")
    return progress.ended


def save_final_model(trainer: ModelTrainer, folder: Path) -> Path:
    trainer.model.save(folder)
    return folder


def warm_up() -> None:
    """Pay the one-time cost of a training process (building the first optimizer imports a large
    part of torch, ~2 s) in the worker's main process, so every forked training process starts
    warm. Nothing is computed: tensor operations would start torch's thread pools, which do not
    survive a fork (the child hangs), and a CUDA context must not exist before the fork either."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    for optimizer_class in (torch.optim.SGD, torch.optim.AdamW):
        optimizer_class([parameter], lr=0.1)
