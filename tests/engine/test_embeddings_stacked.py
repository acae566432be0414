"""StackedEmbeddings and the registry: concatenation, unique names, nested config round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.data import Sentence
from engine.embeddings import (
    EMBEDDING_TYPES,
    EmbeddingConfigError,
    TokenEmbeddings,
    embeddings_from_config,
    register_embedding,
)
from engine.embeddings.character import CharacterEmbeddings
from engine.embeddings.document import DocumentPoolEmbeddings
from engine.embeddings.stacked import StackedEmbeddings
from engine.embeddings.word import WordEmbeddings
from tests.engine.test_embeddings_word import write_glove_text


def test_concatenation_in_order(tmp_path: Path) -> None:
    word = WordEmbeddings(str(write_glove_text(tmp_path / "v.txt")))
    char = CharacterEmbeddings(hidden_size_char=3)
    stack = StackedEmbeddings([word, char])
    sentences = [Sentence(["the", "city"]), Sentence(["berlin"])]
    out = stack.embed(sentences)
    assert out.shape == (2, 2, 4 + 6) and stack.embedding_length == 10
    assert torch.equal(out[..., :4], word.embed(sentences))
    assert torch.equal(out[..., 4:], char.embed(sentences))


def test_names_must_be_unique_and_children_token_level(tmp_path: Path) -> None:
    path = str(write_glove_text(tmp_path / "v.txt"))
    with pytest.raises(EmbeddingConfigError, match="both named"):
        StackedEmbeddings([WordEmbeddings(path), WordEmbeddings(path)])
    StackedEmbeddings([WordEmbeddings(path), WordEmbeddings(path, name="word:second")])
    with pytest.raises(EmbeddingConfigError, match="at least one"):
        StackedEmbeddings([])


def test_names_of_one_resource_folder_are_refused(tmp_path: Path) -> None:
    # A model's resource folder is named after the embedding with the characters a folder name
    # cannot hold replaced by '_': 'word:a b' and 'word:a_b' (distinct names, accepted) saved
    # their vocabularies into one folder, the second overwrote the first, and the loaded model
    # looked up both with one vocabulary.
    path = str(write_glove_text(tmp_path / "v.txt"))
    first, second = WordEmbeddings(path, max_vocab=2, name="word:a b"), WordEmbeddings(path, name="word:a_b")
    shared = r"'word:a b' and 'word:a_b' would save their files into one folder \('word_a_b'\)"
    with pytest.raises(EmbeddingConfigError, match=shared):
        StackedEmbeddings([first, second])
    with pytest.raises(EmbeddingConfigError, match=shared):
        DocumentPoolEmbeddings([first, second])
    # a nested stack saves its embeddings into the folder its parent saves into
    with pytest.raises(EmbeddingConfigError, match="'word:a b' and 'word:a b' would save"):
        StackedEmbeddings([StackedEmbeddings([first], name="inner"), WordEmbeddings(path, name="word:a b")])
    with pytest.raises(EmbeddingConfigError, match=shared):
        StackedEmbeddings([StackedEmbeddings([first], name="inner"), second])
    # embeddings that save no files may share a folder name (models saved so still load)
    StackedEmbeddings([CharacterEmbeddings(name="char:a b"), CharacterEmbeddings(name="char:a_b"), second])

    stack = StackedEmbeddings([first, WordEmbeddings(path, name="word:a-b")])
    stack.save_resources(tmp_path / "model")
    rebuilt = embeddings_from_config(json.loads(json.dumps(stack.to_config())), tmp_path / "model")
    assert isinstance(rebuilt, StackedEmbeddings)
    assert [e.vocabulary for e in rebuilt.stack] == [first.vocabulary, second.vocabulary]  # type: ignore[attr-defined]
    assert len(first.vocabulary) < len(second.vocabulary)


def test_nested_config_round_trip(tmp_path: Path) -> None:
    source = write_glove_text(tmp_path / "v.txt")
    stack = StackedEmbeddings([WordEmbeddings(str(source)), CharacterEmbeddings(["a", "b", "t"])])
    config = json.loads(json.dumps(stack.to_config()))
    assert config["type"] == "stacked" and [c["type"] for c in config["embeddings"]] == ["word", "character"]
    stack.save_resources(tmp_path / "model")
    rebuilt = embeddings_from_config(config, tmp_path / "model")
    rebuilt.load_state_dict(stack.state_dict())
    sentences = [Sentence(["the", "bat", "xyz"])]
    assert torch.equal(rebuilt.embed(sentences), stack.embed(sentences))


def test_unknown_type_and_bad_configs() -> None:
    with pytest.raises(EmbeddingConfigError, match="unknown embedding type 'nope'"):
        embeddings_from_config({"type": "nope"}, None)
    with pytest.raises(EmbeddingConfigError, match="'type'"):
        embeddings_from_config({"name": "x"}, None)
    with pytest.raises(EmbeddingConfigError, match="non-empty"):
        embeddings_from_config({"type": "stacked", "embeddings": []}, None)


def test_registry_accepts_new_types() -> None:
    @register_embedding("test_constant")
    class Constant(TokenEmbeddings):
        def __init__(self, size: int) -> None:
            super().__init__()
            self.size = size

        @property
        def embedding_length(self) -> int:
            return self.size

        def _embed(self, sentences: list[Sentence]) -> list[torch.Tensor]:
            return [torch.ones(len(s), self.size) for s in sentences]

        def to_config(self) -> dict[str, Any]:
            return {"type": self.embedding_type, "size": self.size}

        @classmethod
        def from_config(cls, config: dict[str, Any], resource_dir: Path | None = None) -> Constant:
            return cls(config["size"])

    try:
        built = embeddings_from_config(
            {"type": "stacked", "embeddings": [{"type": "test_constant", "size": 3}]}
        )
        assert built.embed([Sentence(["a", "b"])]).shape == (1, 2, 3)
    finally:
        EMBEDDING_TYPES.pop("test_constant")


def test_training_spec_forms(tmp_path: Path) -> None:
    """The spec's forms: a list of configs, GloVe named by "name", type aliases."""
    built = embeddings_from_config([{"type": "word", "name": "glove"}, {"type": "char"}], None)
    assert isinstance(built, StackedEmbeddings)
    assert [type(c) for c in built.embeddings] == [WordEmbeddings, CharacterEmbeddings]
    assert built.embeddings[0].name == "word:glove" and built.embeddings[0].embedding_length == 50
    assert built.to_config()["embeddings"][1]["type"] == "character"
    single = embeddings_from_config(
        [{"type": "word", "embeddings": str(write_glove_text(tmp_path / "v.txt"))}]
    )
    assert isinstance(single, WordEmbeddings)


def test_unknown_config_keys_are_refused_at_any_depth(tmp_path: Path) -> None:
    # A misspelt option in a saved or hand-written config must not be ignored silently.
    source = str(write_glove_text(tmp_path / "v.txt"))
    with pytest.raises(
        EmbeddingConfigError, match=r"unknown 'character' embedding config keys \['hiden_size_char'\]"
    ):
        embeddings_from_config({"type": "character", "hiden_size_char": 50}, None)
    nested = {
        "type": "stacked",
        "embeddings": [{"type": "word", "embeddings": source}, {"type": "character", "size": 3}],
    }
    with pytest.raises(EmbeddingConfigError, match=r"\['size'\]"):
        embeddings_from_config(nested, None)
    nested["embeddings"][1].pop("size")
    assert isinstance(embeddings_from_config(nested, None), StackedEmbeddings)


def test_embed_takes_one_sentence_and_says_how_to_pass_text(tmp_path: Path) -> None:
    # The embeddings tutorial's `embedding.embed(sentence)` failed deep inside with "'Token' object
    # has no attribute 'tokens'"; text failed with "'str' object has no attribute 'tokens'".
    word = WordEmbeddings(str(write_glove_text(tmp_path / "g.txt")), dtype="float32")
    for embeddings in (
        word,
        StackedEmbeddings([word, CharacterEmbeddings()]),
        DocumentPoolEmbeddings([word]),
    ):
        sentence = Sentence(["the", "cat"])
        one = embeddings.embed(sentence)
        assert torch.equal(one, embeddings.embed([sentence]))
        with pytest.raises(TypeError, match=r"not text: embed\(Sentence\('the cat'\)\)"):
            embeddings.embed("the cat")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="item 0 is a list"):
            embeddings.embed([["the", "cat"]])  # type: ignore[list-item]
