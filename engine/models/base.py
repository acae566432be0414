"""The model contract shared by taggers and classifiers: loss, prediction, evaluation, files.

A subclass implements ``forward_loss`` (training) and ``_predict_batch`` (one mini-batch of
inference, optionally with its loss); this class does the rest the same way for every model:
sorting by length, mini-batching under ``torch.inference_mode``, embedding storage, evaluation
against gold labels, and model files.

Model files (a folder): ``config.json`` (format, format version, model class, label type and
dictionary, hyperparameters, embedding config, library versions), ``model.safetensors`` (every
tensor of the state dict) and ``embeddings/`` (what the embeddings' ``save_resources`` write).
Loading reads the config, rebuilds the model from it by class *name* (only registered model
classes; a config cannot name code to import), checks every tensor's name, shape and dtype and
loads them. Nothing is unpickled.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from engine.data import Dictionary, Sentence, sentence_list
from engine.embeddings.base import STORAGE_MODES, Embeddings, StorageMode, clear_stored_embeddings
from engine.evaluation import EvaluationResult, Item, compute_scores
from engine.limits import MAX_CRF_TAGS, MAX_LABELS, check_built_on_meta, max_crf_labels
from engine.models.crf import CRF
from engine.precision import inference_autocast
from engine.readers.files import gc_paused
from engine.serialization import (
    CONFIG_FILE,
    FORMAT_VERSION,
    MODEL_FILE_FORMAT,
    WEIGHTS_FILE,
    ModelFileError,
    atomic_directory,
    check_state_dict,
    library_versions,
    load_tensors,
    read_json,
    save_tensors,
    write_json,
)

RESOURCES_DIR = "embeddings"
MODEL_CLASSES: dict[str, type[Model]] = {}
# Modules that register the built-in model classes, imported on first load.
_BUILTIN_MODEL_MODULES = ("engine.models.sequence_tagger", "engine.models.text_classifier")

M = TypeVar("M", bound="type[Model]")


def register_model(cls: M) -> M:
    """Class decorator: ``load_model`` may rebuild this class from a config naming it."""
    MODEL_CLASSES[cls.__name__] = cls
    return cls


class Model(nn.Module, abc.ABC):
    label_type: str
    label_dictionary: Dictionary
    embeddings: Embeddings

    # what the model predicts: "span", "token" or "sentence" labels
    @property
    @abc.abstractmethod
    def label_kind(self) -> str: ...

    @property
    def multi_label(self) -> bool:
        return False

    @property
    def task(self) -> str:
        """``"text_classification"`` or ``"sequence_tagging"`` (the training spec's names)."""
        return "text_classification" if self.label_kind == "sentence" else "sequence_tagging"

    def label_names(self) -> list[str]:
        """The labels the model can predict (the dictionary without its unknown entry)."""
        return [item for item in self.label_dictionary.get_items() if item != Dictionary.UNK]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @abc.abstractmethod
    def forward_loss(self, sentences: list[Sentence]) -> tuple[torch.Tensor, int]:
        """The loss summed over the batch and the number of items it sums over."""

    @abc.abstractmethod
    def _predict_batch(
        self, sentences: list[Sentence], label_name: str, return_probabilities: bool, with_loss: bool
    ) -> tuple[float, int]:
        """Write predictions for one mini-batch (already under inference mode); with ``with_loss``
        also return the batch's summed loss against the gold ``label_type`` and its item count."""

    @abc.abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """JSON-able constructor arguments besides embeddings, label dictionary and label type."""

    @classmethod
    @abc.abstractmethod
    def from_parts(
        cls,
        embeddings: Embeddings,
        label_dictionary: Dictionary,
        label_type: str,
        hyperparameters: dict[str, Any],
    ) -> Model:
        """Build the model from a saved config's parts (weights are loaded afterwards)."""

    # prediction -------------------------------------------------------------------------------
    def predict(
        self,
        sentences: list[Sentence] | Sentence,
        mini_batch_size: int = 32,
        return_probabilities_for_all_classes: bool = False,
        label_name: str | None = None,
        embedding_storage_mode: StorageMode = "none",
        precision: str = "float32",
    ) -> None:
        """Write predicted labels with scores onto ``sentences`` under ``label_name`` (default: the
        model's ``label_type``), replacing earlier predictions of that name. ``precision``:
        ``float32``, ``bfloat16`` (autocast) or ``auto`` (see ``engine.precision``)."""
        sentences = sentence_list(sentences, "predict")
        with inference_autocast(precision, self.device):
            self._run(
                sentences,
                mini_batch_size,
                label_name or self.label_type,
                return_probabilities_for_all_classes,
                embedding_storage_mode,
                with_loss=False,
            )

    def _run(
        self,
        sentences: list[Sentence],
        mini_batch_size: int,
        label_name: str,
        return_probabilities: bool,
        storage_mode: StorageMode,
        with_loss: bool,
    ) -> tuple[float, int]:
        if mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be >= 1, got {mini_batch_size}")
        if storage_mode not in STORAGE_MODES:
            raise ValueError(f"embedding_storage_mode must be one of {STORAGE_MODES}, got {storage_mode!r}")
        # Longest first: batches of similar lengths waste little padding. Labels are written onto
        # the sentence objects, so the caller's list keeps its order.
        order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
        previous_modes = _swap_storage_modes(self.embeddings, storage_mode)
        # Switching modes walks every module: only when needed (predict on a served model is hot).
        was_training = self.training
        if was_training:
            self.eval()
        total_loss, total_count = 0.0, 0
        try:
            # Tensors made under inference mode can never take part in autograd later, so when
            # embeddings are kept on the sentences (which may be trained on afterwards) use no_grad.
            no_autograd = torch.inference_mode() if storage_mode == "none" else torch.no_grad()
            # The labels written are new tracked objects, none of them garbage; a running cyclic
            # collector would re-scan the whole corpus again and again (a third of predict's time).
            with no_autograd, gc_paused():
                for begin in range(0, len(order), mini_batch_size):
                    batch = [sentences[i] for i in order[begin : begin + mini_batch_size]]
                    loss, count = self._predict_batch(batch, label_name, return_probabilities, with_loss)
                    total_loss += loss
                    total_count += count
                    clear_stored_embeddings(batch, storage_mode)
        finally:
            if was_training:
                self.train()
            _restore_storage_modes(previous_modes)
        return total_loss, total_count

    # evaluation -------------------------------------------------------------------------------
    def evaluate(
        self,
        sentences: list[Sentence] | Sentence,
        gold_label_type: str | None = None,
        mini_batch_size: int = 64,
        out_path: str | Path | None = None,
        embedding_storage_mode: StorageMode = "none",
    ) -> EvaluationResult:
        """Predict under a separate label name (gold labels stay untouched), score against
        ``gold_label_type`` (default: the model's), optionally write ``out_path`` (test.tsv)."""
        gold_type = gold_label_type or self.label_type
        predicted_type = f"{gold_type}__predicted"
        sentences = sentence_list(sentences, "evaluate")
        if gold_type != self.label_type:
            # the loss is computed against self.label_type; score another type without it
            loss_sum, count = self._run(
                sentences, mini_batch_size, predicted_type, False, embedding_storage_mode, False
            )
        else:
            loss_sum, count = self._run(
                sentences, mini_batch_size, predicted_type, False, embedding_storage_mode, True
            )
        try:
            gold = [self._items(s, i, gold_type) for i, s in enumerate(sentences)]
            predicted = [self._items(s, i, predicted_type) for i, s in enumerate(sentences)]
            result = compute_scores(
                gold, predicted, self.label_kind, self.multi_label, loss=loss_sum / count if count else 0.0
            )
            if out_path is not None:
                self._write_predictions(Path(out_path), sentences, gold_type, predicted_type)
        finally:
            for sentence in sentences:
                sentence.remove_labels(predicted_type)
                sentence.metadata.pop(distribution_key(predicted_type), None)
        return result

    def _items(self, sentence: Sentence, index: int, label_type: str) -> list[Item]:
        kind = self.label_kind
        if kind == "span":
            return [((index, s.start, s.end), s.label.value) for s in sentence.get_spans(label_type)]
        if kind == "token":
            return [
                ((index, token.idx), token.labels[label_type].value)
                for token in sentence.tokens
                if label_type in token.labels
            ]
        if self.multi_label:
            return [((index, lb.value), lb.value) for lb in sentence.get_labels(label_type)]
        return [((index,), lb.value) for lb in sentence.get_labels(label_type)]

    @abc.abstractmethod
    def _write_predictions(
        self, path: Path, sentences: list[Sentence], gold_type: str, predicted_type: str
    ) -> None:
        """Write gold and predicted labels side by side (test.tsv)."""

    # files ------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "format": MODEL_FILE_FORMAT,
            "format_version": FORMAT_VERSION,
            "model_class": type(self).__name__,
            "label_type": self.label_type,
            "label_dictionary": self.label_dictionary.to_dict(),
            "hyperparameters": self.hyperparameters(),
            "embeddings": self.embeddings.to_config(),
            "library_versions": library_versions(),
        }

    def save(self, directory: str | Path) -> Path:
        """Write the model folder (atomically: a complete folder replaces any old one)."""
        directory = Path(directory)
        with atomic_directory(directory) as staging:
            self.embeddings.save_resources(staging / RESOURCES_DIR)
            save_tensors(staging / WEIGHTS_FILE, self.state_dict(), metadata={"format": MODEL_FILE_FORMAT})
            write_json(staging / CONFIG_FILE, self.config())
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Model:
        """Load a model folder; on a subclass, the folder must hold that class (or a subclass)."""
        model = load_model(directory)
        if not isinstance(model, cls):
            raise ModelFileError(
                Path(directory) / CONFIG_FILE, f"holds a {type(model).__name__}, not a {cls.__name__}"
            )
        return model


def distribution_key(label_name: str) -> str:
    """``Sentence.metadata`` key of the per-class probabilities written by
    ``predict(..., return_probabilities_for_all_classes=True)``."""
    return f"{label_name}_distribution"


def _require(config: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    value = config.get(key)
    if not isinstance(value, kind):
        raise ModelFileError(
            path, f"config field {key!r} is missing or not a {getattr(kind, '__name__', kind)}"
        )
    return value


def load_model(directory: str | Path, untrusted: bool = False) -> Model:
    """Rebuild the model saved in ``directory`` (dispatching on the config's ``model_class``).

    ``untrusted`` (an uploaded folder): first build it on PyTorch's meta device, which allocates
    nothing, and check it against the weights file's header. Its config could otherwise ask for
    any size (a hidden size of 10**12), and building that model would take the memory first.
    The checks (``engine.limits``): the same tensors as the weights file, no more tensor memory
    than the file provides plus a small allowance (buffers the file does not hold, such as a
    transformer's causal mask), at most ``MAX_LABELS`` labels (checked before building) and at
    most ``MAX_CRF_TAGS`` CRF tags."""
    import importlib

    from engine.embeddings import embeddings_from_config
    from engine.embeddings.base import EmbeddingConfigError

    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not directory.is_dir():
        # Flair's files are final-model.pt / best-model.pt; here they are folders
        folder = directory.with_suffix("") if directory.suffix == ".pt" else None
        hint = (
            f" (models are folders: did you mean {folder}?)" if folder is not None and folder.is_dir() else ""
        )
        raise ModelFileError(directory, f"model folder not found{hint}")
    config = read_json(config_path)
    if config.get("format") != MODEL_FILE_FORMAT:
        raise ModelFileError(
            config_path,
            f"not a model config (format {config.get('format')!r}, expected {MODEL_FILE_FORMAT!r})",
        )
    version = config.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ModelFileError(
            config_path, f"unsupported format_version {version!r} (this version reads 1 to {FORMAT_VERSION})"
        )
    for module in _BUILTIN_MODEL_MODULES:
        importlib.import_module(module)
    class_name = _require(config, "model_class", str, config_path)
    model_class = MODEL_CLASSES.get(class_name)
    if model_class is None:
        raise ModelFileError(
            config_path, f"unknown model_class {class_name!r} (known: {', '.join(sorted(MODEL_CLASSES))})"
        )
    label_type = _require(config, "label_type", str, config_path)
    hyperparameters = _require(config, "hyperparameters", dict, config_path)
    embedding_config = _require(config, "embeddings", dict, config_path)
    weights_path = directory / WEIGHTS_FILE

    def build() -> Model:
        try:
            label_dictionary = Dictionary.from_dict(_require(config, "label_dictionary", dict, config_path))
            embeddings = embeddings_from_config(embedding_config, directory / RESOURCES_DIR)
            return model_class.from_parts(embeddings, label_dictionary, label_type, hyperparameters)
        except ModelFileError:
            raise
        except (EmbeddingConfigError, ValueError, TypeError, KeyError, OSError) as error:
            raise ModelFileError(config_path, f"cannot rebuild the model from its config: {error}") from error

    if untrusted:
        _check_label_count(config, config_path)
        _check_crf_tags(check_built_on_meta(build, config_path, weights_path), config_path)
    model = build()
    tensors = load_tensors(weights_path, require_finite=untrusted)
    expected = model.state_dict()
    check_state_dict(weights_path, expected, tensors)
    model.load_state_dict(tensors, strict=True)
    model.eval()
    return model


def _check_label_count(config: dict[str, Any], config_path: Path) -> None:
    """Before anything is built: an untrusted config's label dictionary within ``MAX_LABELS``."""
    dictionary = config.get("label_dictionary")
    items = dictionary.get("items") if isinstance(dictionary, dict) else None
    if isinstance(items, list):
        labels = sum(1 for item in items if item not in (Dictionary.UNK, "O"))
        if labels > MAX_LABELS:
            raise ModelFileError(
                config_path,
                f"label_dictionary has {labels} labels; an imported model may have at most {MAX_LABELS}",
            )


def _check_crf_tags(model: nn.Module, config_path: Path) -> None:
    """A CRF's prediction cost grows with the square of its tags: at most ``MAX_CRF_TAGS``."""
    for module in model.modules():
        if isinstance(module, CRF) and module.num_tags > MAX_CRF_TAGS:
            labels = len(model.label_names()) if isinstance(model, Model) else 0
            kind = getattr(model, "label_kind", "")
            raise ModelFileError(
                config_path,
                f"label_dictionary: {labels} {kind} labels make a CRF of {module.num_tags} tags; an imported "
                f"model's CRF may have at most {MAX_CRF_TAGS} (its prediction cost grows with the square of "
                f"its tags): at most {max_crf_labels('span', 'BIOES')} span labels with BIOES tags, "
                f"{max_crf_labels('span', 'BIO')} with BIO, {max_crf_labels('token')} token labels",
            )


def _swap_storage_modes(module: nn.Module, mode: StorageMode) -> list[tuple[Embeddings, StorageMode]]:
    previous = []
    for sub in module.modules():
        if isinstance(sub, Embeddings):
            previous.append((sub, sub.storage_mode))
            sub.storage_mode = mode
    return previous


def _restore_storage_modes(previous: list[tuple[Embeddings, StorageMode]]) -> None:
    for sub, mode in previous:
        sub.storage_mode = mode
