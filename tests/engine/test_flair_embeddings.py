"""FlairEmbeddings: word states at the right positions, chunking, freezing, persistence, nesting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.data import Sentence
from engine.embeddings import EmbeddingConfigError, embedding_class, embeddings_from_config
from engine.embeddings.base import set_storage_mode
from engine.embeddings.document import DocumentPoolEmbeddings, DocumentRNNEmbeddings
from engine.embeddings.flair import FlairEmbeddings, sentence_layout
from engine.embeddings.stacked import StackedEmbeddings
from engine.language_model import LanguageModel

CHARS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,!?'")


def tiny_lm(is_forward: bool, seed: int = 0, dropout: float = 0.0, hidden: int = 6) -> LanguageModel:
    torch.manual_seed(seed)
    return LanguageModel(CHARS, is_forward=is_forward, hidden_size=hidden, embedding_size=5, dropout=dropout)


def state_after(lm: LanguageModel, text: str) -> torch.Tensor:
    """Run the LSTM by hand over exactly ``text`` (reading order) and return the last state."""
    with torch.no_grad():
        ids = lm.char_ids(text).unsqueeze(1)
        output, _ = lm.rnn(lm.encoder(ids))
    return output[-1, 0]


def sentences() -> list[Sentence]:
    long_words = [f"w{'x' * (i % 7)}{i}" for i in range(120)]
    no_space = Sentence(["Hello", ",", "world", "!"])
    no_space.tokens[0].whitespace_after = False
    no_space.tokens[2].whitespace_after = False
    return [Sentence("The cat sat ."), no_space, Sentence(long_words), Sentence(["a"])]


def test_layout_uses_the_model_boundaries_and_single_spaces() -> None:
    text, spans = sentence_layout(sentences()[1])
    assert text == "\nHello , world ! "
    assert [text[s:e] for s, e in spans] == ["Hello", ",", "world", "!"]
    # models saved before "tokenized" read their tokens' own whitespace
    text, spans = sentence_layout(sentences()[1], tokenized=False)
    assert text == "\nHello, world! "
    assert [text[s:e] for s, e in spans] == ["Hello", ",", "world", "!"]


def test_a_column_file_sentence_and_the_same_raw_text_embed_alike() -> None:
    # A column file knows no spacing (every token has whitespace after); raw text at predict time
    # does. Joined by their own whitespace, "Berlin" and "," were read in different strings.
    from_column = Sentence(["Berlin", ",", "Germany", "."])
    from_text = Sentence("Berlin, Germany.")
    assert [t.text for t in from_text] == ["Berlin", ",", "Germany", "."]
    for is_forward in (True, False):
        emb = FlairEmbeddings(tiny_lm(is_forward, seed=3))
        assert torch.equal(emb.embed([from_column]), emb.embed([from_text]))
        old = FlairEmbeddings(emb.language_model, tokenized=False)
        assert not torch.equal(old.embed([from_column]), old.embed([from_text]))


def test_forward_state_is_taken_after_the_last_character_of_the_word() -> None:
    lm = tiny_lm(is_forward=True)
    emb = FlairEmbeddings(lm)
    sentence = Sentence(["ab", "cd", "e"])
    out = emb.embed([sentence])[0]
    full = "\nab cd e "
    for i, prefix in enumerate(["\nab", "\nab cd", "\nab cd e"]):
        assert torch.allclose(out[i], state_after(lm, prefix), atol=1e-6)
        # one character later (the space) is a different state: the position is exact
        assert not torch.allclose(out[i], state_after(lm, full[: len(prefix) + 1]), atol=1e-4)
    assert not torch.allclose(out[0], state_after(lm, "\na"), atol=1e-4)


def test_backward_state_is_taken_after_reading_the_first_character_right_to_left() -> None:
    lm = tiny_lm(is_forward=False)
    emb = FlairEmbeddings(lm)
    sentence = Sentence(["ab", "cd", "e"])
    out = emb.embed([sentence])[0]
    full = "\nab cd e "
    for i, start in enumerate([1, 4, 7]):
        suffix = full[start:]  # the word and everything to its right
        assert torch.allclose(out[i], state_after(lm, suffix[::-1]), atol=1e-6)
        assert not torch.allclose(out[i], state_after(lm, full[start + 1 :][::-1]), atol=1e-4)
        assert not torch.allclose(out[i], state_after(lm, full[start - 1 :][::-1]), atol=1e-4)


@pytest.mark.parametrize("is_forward", [True, False])
def test_chunked_equals_unchunked(is_forward: bool) -> None:
    lm = tiny_lm(is_forward, seed=3, hidden=8)
    batch = sentences()
    whole = FlairEmbeddings(lm, chars_per_chunk=100_000).embed(batch)
    for chunk in (1, 7, 64):
        chunked = FlairEmbeddings(lm, chars_per_chunk=chunk).embed(batch)
        assert chunked.shape == whole.shape == (4, 120, 8)
        assert torch.allclose(chunked, whole, atol=1e-6)
    # padding positions stay zero
    assert torch.count_nonzero(whole[3, 1:]) == 0


def test_frozen_embeddings_are_static_deterministic_and_kept_by_storage() -> None:
    lm = tiny_lm(True, dropout=0.5)
    emb = FlairEmbeddings(lm)
    assert emb.is_static and emb.embedding_length == 6
    emb.train()
    assert not emb.language_model.training
    batch = sentences()[:2]
    first = emb.embed(batch)
    assert torch.equal(first, emb.embed(batch))
    assert not first.requires_grad
    assert all(not p.requires_grad for p in emb.parameters())
    set_storage_mode(emb, "cpu")
    emb.embed(batch)
    assert emb.storage_key in batch[0].embeddings and batch[0].embeddings[emb.storage_key].shape == (4, 6)


def test_fine_tuned_embeddings_pass_gradients_to_the_language_model() -> None:
    emb = FlairEmbeddings(tiny_lm(False, dropout=0.1), fine_tune=True, chars_per_chunk=5)
    assert not emb.is_static
    emb.train()
    emb.embed(sentences()[:2]).sum().backward()
    grad = emb.language_model.rnn.weight_hh_l0.grad
    assert grad is not None and grad.abs().sum() > 0


def test_loaded_from_a_folder_and_rebuilt_self_contained(tmp_path: Path) -> None:
    lm_folder = tiny_lm(True, seed=5).save(tmp_path / "lm")
    stacked = StackedEmbeddings([FlairEmbeddings(lm_folder), FlairEmbeddings(tiny_lm(False, seed=6))])
    assert embedding_class("flair") is FlairEmbeddings
    batch = sentences()
    expected = stacked.embed(batch)

    # what a model folder holds: the config (JSON) and the weights (safetensors)
    model_dir = tmp_path / "tagger"
    model_dir.mkdir()
    config = json.loads(json.dumps(stacked.to_config()))
    (model_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
    stacked.save_resources(model_dir)
    save_file(
        {k: v.contiguous() for k, v in stacked.state_dict().items()}, str(model_dir / "model.safetensors")
    )
    for file in (tmp_path / "lm").iterdir():
        file.unlink()  # the loaded model must not need the language model's own folder

    rebuilt = embeddings_from_config(config, model_dir)
    rebuilt.load_state_dict(load_file(str(model_dir / "model.safetensors")))
    rebuilt.eval()
    assert [child.name for child in rebuilt.embeddings] == ["flair:forward", "flair:backward"]
    assert torch.equal(rebuilt.embed(batch), expected)
    # a model saved before "tokenized" keeps the layout it was trained with
    for part in config["embeddings"]:
        assert part.pop("tokenized") is True
    old = embeddings_from_config(config, model_dir)
    assert [child.tokenized for child in old.embeddings] == [False, False]


def test_spec_style_config_loads_the_language_model_folder(tmp_path: Path) -> None:
    lm = tiny_lm(False, seed=2)
    folder = lm.save(tmp_path / "backward")
    emb = embeddings_from_config({"type": "flair", "model": str(folder), "chars_per_chunk": 9})
    assert isinstance(emb, FlairEmbeddings)
    assert emb.chars_per_chunk == 9 and not emb.language_model.is_forward
    assert torch.equal(emb.embed(sentences()[:1]), FlairEmbeddings(lm).embed(sentences()[:1]))


def test_bad_arguments_raise_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingConfigError, match="missing config.json"):
        FlairEmbeddings(tmp_path)
    with pytest.raises(EmbeddingConfigError, match="chars_per_chunk"):
        FlairEmbeddings(tiny_lm(True), chars_per_chunk=0)
    with pytest.raises(EmbeddingConfigError, match="'model'"):
        embeddings_from_config({"type": "flair"})


def test_inside_stacked_and_document_embeddings() -> None:
    forward, backward = FlairEmbeddings(tiny_lm(True, seed=1)), FlairEmbeddings(tiny_lm(False, seed=2))
    batch = sentences()
    stacked = StackedEmbeddings([forward, backward])
    out = stacked.embed(batch)
    assert out.shape == (4, 120, 12)
    assert torch.allclose(out[..., :6], forward.embed(batch), atol=1e-6)
    assert torch.allclose(out[..., 6:], backward.embed(batch), atol=1e-6)

    pooled = DocumentPoolEmbeddings([forward, backward], pooling="mean").embed(batch)
    assert pooled.shape == (4, 12)
    assert torch.allclose(pooled[1], out[1, :4].mean(dim=0), atol=1e-6)

    rnn = DocumentRNNEmbeddings([forward, backward], hidden_size=4)
    assert rnn.embed(batch).shape == (4, rnn.embedding_length)


def test_a_saved_tagger_with_flair_embeddings_is_self_contained(tmp_path: Path) -> None:
    from engine.data import Dictionary
    from engine.models.base import load_model
    from engine.models.sequence_tagger import SequenceTagger

    forward_folder = tiny_lm(True, seed=7).save(tmp_path / "forward")
    backward_folder = tiny_lm(False, seed=8).save(tmp_path / "backward")
    stacked = StackedEmbeddings([FlairEmbeddings(forward_folder), FlairEmbeddings(backward_folder)])
    tags = Dictionary()
    for tag in ("DET", "NOUN", "VERB", "PUNCT"):
        tags.add_item(tag)
    torch.manual_seed(0)
    tagger = SequenceTagger(stacked, tags, "upos", hidden_size=4, use_crf=False)
    tagger.save(tmp_path / "tagger")
    for folder in (forward_folder, backward_folder):
        for file in folder.iterdir():
            file.unlink()

    loaded = load_model(tmp_path / "tagger")
    batch, again = sentences()[:2], sentences()[:2]
    tagger.eval()
    tagger.predict(batch)
    loaded.predict(again)
    assert [[t.get_tag("upos") for t in s] for s in batch] == [[t.get_tag("upos") for t in s] for s in again]
    assert [t.labels["upos"].score for t in batch[0]] == [t.labels["upos"].score for t in again[0]]
    assert torch.equal(loaded.embeddings.embed(batch), stacked.embed(batch))
