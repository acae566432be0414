"""Untrusted model folders (uploads): whatever their config describes is checked on PyTorch's meta
device against the weights file before anything is built for real (language models, a tagger's
inline language model, transformer buffers the weights do not hold); label and CRF tag counts are
capped (``engine.limits``); a saved flair config never names a folder to load.

Memory is measured as the growth of the process's peak resident size (``VmHWM``, reset through
``/proc/self/clear_refs``): each hostile folder here would take 0.5-1 GB if it were built."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.data import Dictionary, Sentence
from engine.embeddings import EmbeddingConfigError, embeddings_from_config
from engine.embeddings.character import CharacterEmbeddings
from engine.embeddings.document import DocumentPoolEmbeddings
from engine.embeddings.flair import FlairEmbeddings
from engine.language_model import LanguageModel
from engine.limits import MAX_CRF_TAGS, MAX_LABELS, label_count_error, max_crf_labels, tagger_tags
from engine.models.base import load_model
from engine.models.sequence_tagger import SequenceTagger
from engine.models.text_classifier import TextClassifier
from engine.serialization import ModelFileError
from tests.engine.test_embeddings_transformer import build_tiny_bert

# Far below what building any hostile model here would take (0.5 GB and more), far above noise.
SMALL_MB = 150


def _status_mb(field: str) -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def peak_growth_mb(action: Callable[[], Any]) -> float:
    """How far the process's peak resident memory rises above its current size during ``action``
    (exceptions from ``action`` propagate after the measurement is taken... by the caller)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    except OSError:
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak resident size")
    base = _status_mb("VmRSS")
    try:
        action()
    finally:
        grown = _status_mb("VmHWM") - base
    return grown


def refused_within(action: Callable[[], Any], error: type[Exception], match: str) -> float:
    """``action`` raises ``error`` matching ``match``; returns the peak memory growth (MB)."""

    def run() -> None:
        with pytest.raises(error, match=match):
            action()

    return peak_growth_mb(run)


def edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def hostile_language_model(folder: Path, hidden_size: int = 8192) -> Path:
    """A tiny language model whose config claims ``hidden_size``: its LSTM would need
    4 x hidden x hidden floats (1 GB at 8192) before the weights could be compared."""
    LanguageModel(list("ab"), hidden_size=4, embedding_size=2).save(folder)
    edit_json(folder / "config.json", lambda c: c.update(hidden_size=hidden_size))
    return folder


def flair_tagger(folder: Path, lm_hidden: int = 4) -> Path:
    labels = Dictionary()
    labels.add_item("A")
    lm = LanguageModel(list("ab"), hidden_size=4, embedding_size=2)
    tagger = SequenceTagger(
        FlairEmbeddings(lm), labels, "upos", hidden_size=4, use_rnn=False, reproject_embeddings=False
    )
    tagger.save(folder)
    if lm_hidden != 4:
        edit_json(
            folder / "config.json", lambda c: c["embeddings"]["language_model"].update(hidden_size=lm_hidden)
        )
    return folder


def gpt2_tagger(folder: Path, work: Path, n_positions: int = 64) -> Path:
    """A tagger on a 2-layer GPT-2 (width 4; a tiny BERT's tokenizer). With ``n_positions`` its
    config and its position table (``wpe``, in the weights) are edited to that many positions:
    every layer then builds a positions x positions causal mask (a buffer the weights do not
    hold): 2 x 244 MB at 16,000."""
    from transformers import GPT2Config, GPT2Model

    from engine.embeddings.transformer import TransformerWordEmbeddings

    hf = build_tiny_bert(work / "gpt2")
    (hf / "model.safetensors").unlink()
    torch.manual_seed(0)
    GPT2Model(GPT2Config(vocab_size=200, n_positions=64, n_embd=4, n_layer=2, n_head=2)).save_pretrained(hf)
    labels = Dictionary()
    labels.add_item("A")
    embeddings = TransformerWordEmbeddings(str(hf), name="gpt")
    SequenceTagger(
        embeddings, labels, "upos", hidden_size=4, use_rnn=False, use_crf=False, label_kind="token"
    ).save(folder)
    if n_positions != 64:
        edit_json(folder / "embeddings" / "gpt" / "config.json", lambda c: c.update(n_positions=n_positions))
        weights = load_file(folder / "model.safetensors")
        weights["embeddings.encoder.model.wpe.weight"] = torch.zeros(n_positions, 4)
        save_file(weights, folder / "model.safetensors")
    return folder


# 1. language models -------------------------------------------------------------------------------
def test_an_untrusted_language_model_is_compared_with_its_weights_before_it_is_built(tmp_path: Path) -> None:
    folder = hostile_language_model(tmp_path / "lm")
    grown = refused_within(
        lambda: LanguageModel.load(folder, untrusted=True), ModelFileError, r"the model needs \(32768, 2\)"
    )
    assert grown < SMALL_MB, f"{grown:.0f} MB"


def test_an_untrusted_language_model_that_fits_its_weights_loads_as_before(tmp_path: Path) -> None:
    torch.manual_seed(1)
    LanguageModel(list("abc d"), is_forward=False, hidden_size=8, embedding_size=4).save(tmp_path / "lm")
    trusted, untrusted = (
        LanguageModel.load(tmp_path / "lm"),
        LanguageModel.load(tmp_path / "lm", untrusted=True),
    )
    assert not untrusted.is_forward and untrusted.decoder.weight.device.type == "cpu"
    assert all(
        torch.equal(a, b)
        for a, b in zip(trusted.state_dict().values(), untrusted.state_dict().values(), strict=True)
    )
    assert untrusted.generate_text("ab", length=5, seed=0) == trusted.generate_text("ab", length=5, seed=0)


def test_a_taggers_inline_language_model_is_compared_with_the_weights_before_it_is_built(
    tmp_path: Path,
) -> None:
    folder = flair_tagger(tmp_path / "tagger", lm_hidden=8192)
    grown = refused_within(
        lambda: load_model(folder, untrusted=True), ModelFileError, r"language_model\.rnn.*needs \(32768, 2\)"
    )
    assert grown < SMALL_MB, f"{grown:.0f} MB"
    assert load_model(flair_tagger(tmp_path / "fine"), untrusted=True).label_names() == ["A"]


# 2. tensors a config creates beyond the weights -----------------------------------------------------
def test_transformer_buffers_the_weights_do_not_hold_are_refused_before_building(tmp_path: Path) -> None:
    folder = gpt2_tagger(tmp_path / "tagger", tmp_path, n_positions=16_000)
    grown = refused_within(
        lambda: load_model(folder, untrusted=True),
        ModelFileError,
        r"489 MB of tensors.*'embeddings\.encoder\.model\.h\.0\.attn\.bias' \(1, 1, 16000, 16000\) 244 MB",
    )
    assert grown < SMALL_MB, f"{grown:.0f} MB"


def test_a_transformer_tagger_within_the_allowance_loads(tmp_path: Path) -> None:
    folder = gpt2_tagger(tmp_path / "tagger", tmp_path)
    sentences = [Sentence("the city is big"), Sentence("the city is big")]
    load_model(folder, untrusted=True).predict(sentences[0])
    load_model(folder).predict(sentences[1])
    tags = [[(t.get_label("upos").value, t.get_label("upos").score) for t in s.tokens] for s in sentences]
    assert tags[0] == tags[1] and len(tags[0]) == 4


# 5. labels and CRF tags ---------------------------------------------------------------------------
def _labels(count: int) -> Dictionary:
    dictionary = Dictionary()
    for i in range(count):
        dictionary.add_item(f"L{i}")
    return dictionary


def test_the_label_and_crf_limits_are_one_definition() -> None:
    assert (MAX_LABELS, MAX_CRF_TAGS) == (1000, 512)
    assert tagger_tags(300, "span") == 1201 and tagger_tags(300, "span", "BIO") == 601
    assert tagger_tags(300, "token") == 301
    assert (max_crf_labels("span"), max_crf_labels("span", "BIO"), max_crf_labels("token")) == (127, 255, 511)
    assert label_count_error(1000) is None and label_count_error(127, "span", use_crf=True) is None
    assert "at most 1000" in (label_count_error(1001) or "")
    assert "1201 CRF tags" in (label_count_error(300, "span", use_crf=True) or "")
    assert label_count_error(300, "span", use_crf=False) is None


def test_a_classifier_with_more_labels_than_the_limit_is_refused_before_it_is_built(tmp_path: Path) -> None:
    embeddings = DocumentPoolEmbeddings(CharacterEmbeddings(char_embedding_dim=2, hidden_size_char=2))
    TextClassifier(embeddings, _labels(MAX_LABELS + 1), "kind").save(tmp_path / "many")
    with pytest.raises(
        ModelFileError, match="label_dictionary has 1001 labels; an imported model may have at most 1000"
    ):
        load_model(tmp_path / "many", untrusted=True)
    load_model(tmp_path / "many")  # a trusted (stored) model is not refused
    TextClassifier(embeddings, _labels(MAX_LABELS), "kind").save(tmp_path / "limit")
    assert len(load_model(tmp_path / "limit", untrusted=True).label_names()) == MAX_LABELS


def test_an_untrusted_model_with_nan_or_infinite_weights_is_refused_naming_the_tensor(tmp_path: Path) -> None:
    # It was served: every confidence NaN, which the predict answer wrote as JSON's missing NaN.
    embeddings = DocumentPoolEmbeddings(CharacterEmbeddings(char_embedding_dim=2, hidden_size_char=2))
    TextClassifier(embeddings, _labels(3), "kind").save(tmp_path / "model")
    weights_path = tmp_path / "model" / "model.safetensors"
    weights = load_file(str(weights_path))
    name = next(k for k, t in weights.items() if t.is_floating_point() and k.startswith("decoder"))
    for bad in (float("nan"), float("inf")):
        broken = weights[name].clone()
        broken.view(-1)[0] = bad
        save_file({**weights, name: broken}, str(weights_path))
        with pytest.raises(ModelFileError, match=rf"tensor '{re.escape(name)}' holds NaN or infinite values"):
            load_model(tmp_path / "model", untrusted=True)
    load_model(tmp_path / "model")  # a stored model is what this service trained: not checked again
    torch.manual_seed(1)
    LanguageModel(list("abc d"), is_forward=True, hidden_size=8, embedding_size=4).save(tmp_path / "lm")
    lm_weights = load_file(str(tmp_path / "lm" / "model.safetensors"))
    first = next(iter(lm_weights))
    lm_weights[first].view(-1)[0] = float("nan")
    save_file(lm_weights, str(tmp_path / "lm" / "model.safetensors"))
    with pytest.raises(ModelFileError, match="holds NaN or infinite values"):
        LanguageModel.load(tmp_path / "lm", untrusted=True)


def test_a_crf_tagger_with_more_tags_than_the_limit_is_refused(tmp_path: Path) -> None:
    embeddings = CharacterEmbeddings(char_embedding_dim=2, hidden_size_char=2)

    def tagger(labels: int, use_crf: bool = True) -> SequenceTagger:
        return SequenceTagger(
            embeddings, _labels(labels), "ner", hidden_size=2, use_rnn=False, use_crf=use_crf
        )

    tagger(300).save(tmp_path / "bomb")  # the audit's 1,201-tag CRF: 28 s to predict 64 sentences
    with pytest.raises(ModelFileError, match="300 span labels make a CRF of 1201 tags.*at most 512"):
        load_model(tmp_path / "bomb", untrusted=True)
    tagger(127).save(tmp_path / "limit")
    assert load_model(tmp_path / "limit", untrusted=True).crf.num_tags == 509  # type: ignore[union-attr]
    tagger(300, use_crf=False).save(tmp_path / "no-crf")  # cost linear in the tags
    assert len(load_model(tmp_path / "no-crf", untrusted=True).label_names()) == 300


# 3. a saved flair config names no folder ------------------------------------------------------------
def test_a_saved_flair_config_without_its_language_model_never_loads_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm_folder = LanguageModel(list("ab"), hidden_size=4, embedding_size=2).save(tmp_path / "someone-elses-lm")
    folder = flair_tagger(tmp_path / "tagger")

    def point_at_the_folder(config: dict[str, Any]) -> None:
        config["embeddings"]["model"] = str(lm_folder)
        del config["embeddings"]["language_model"]

    edit_json(folder / "config.json", point_at_the_folder)

    def no_folder(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a folder was loaded: {args}")

    monkeypatch.setattr(LanguageModel, "load", no_folder)
    for untrusted in (True, False):
        with pytest.raises(ModelFileError, match="must hold the 'language_model'.*never loaded as a folder"):
            load_model(folder, untrusted=untrusted)
    config = {"type": "flair", "model": str(lm_folder)}
    with pytest.raises(EmbeddingConfigError, match="must hold the 'language_model'"):
        embeddings_from_config(config, tmp_path)


def test_a_saved_flair_config_records_no_folder_and_older_ones_still_load(tmp_path: Path) -> None:
    lm_folder = LanguageModel(list("ab"), hidden_size=4, embedding_size=2).save(tmp_path / "worker-tmp-lm")
    embeddings = FlairEmbeddings(lm_folder)  # how a worker builds it: from its own copy
    assert embeddings.to_config()["model"] is None
    labels = Dictionary()
    labels.add_item("A")
    tagger = SequenceTagger(embeddings, labels, "upos", hidden_size=4, use_rnn=False).save(
        tmp_path / "tagger"
    )
    assert "worker-tmp-lm" not in (tmp_path / "tagger" / "config.json").read_text()
    expected = Sentence("ab ba")
    load_model(tagger).predict(expected)

    # a model saved before: "model" held the worker's folder, long gone; the inline model loads
    edit_json(
        tmp_path / "tagger" / "config.json",
        lambda c: c["embeddings"].update(model="/tmp/tagsmith-job-x/language-model-1"),
    )
    for untrusted in (False, True):
        loaded = load_model(tmp_path / "tagger", untrusted=untrusted)
        assert loaded.embeddings.to_config()["model"] is None
        sentence = Sentence("ab ba")
        loaded.predict(sentence)
        assert [t.get_label("upos").value for t in sentence.tokens] == [
            t.get_label("upos").value for t in expected.tokens
        ]


# 4. word lists ------------------------------------------------------------------------------------
def test_a_word_list_above_the_resource_limit_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.embeddings import word
    from engine.embeddings.word import WordEmbeddings

    labels = Dictionary()
    labels.add_item("A")
    embeddings = WordEmbeddings(vocabulary=["berlin", "paris"], dim=2, name="words")
    SequenceTagger(embeddings, labels, "upos", hidden_size=2, use_rnn=False).save(tmp_path / "m")
    vocab = tmp_path / "m" / "embeddings" / "words" / "vocab.json"
    monkeypatch.setattr(word, "MAX_RESOURCE_FILE_BYTES", vocab.stat().st_size - 1)
    with pytest.raises(
        ModelFileError, match=r"embeddings/words/vocab\.json: .* more than a word list may have"
    ):
        load_model(tmp_path / "m", untrusted=True)
    monkeypatch.undo()
    vocab.write_text('{"not": "a list"}')
    with pytest.raises(ModelFileError, match="expected a JSON list of words"):
        load_model(tmp_path / "m", untrusted=True)
