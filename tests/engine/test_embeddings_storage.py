"""Storage modes: static embeddings are computed once and kept (cpu), recomputed with none;
trainable embeddings are never kept; stacked children keep their own storage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.data import Sentence
from engine.embeddings import clear_stored_embeddings, set_storage_mode
from engine.embeddings.base import Embeddings
from engine.embeddings.character import CharacterEmbeddings
from engine.embeddings.stacked import StackedEmbeddings
from engine.embeddings.transformer import TransformerWordEmbeddings
from tests.engine.test_embeddings_transformer import build_tiny_bert


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert_storage"))


def count_computations(module: Embeddings, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = module._embed

    def counting(sentences: list[Sentence]) -> list[torch.Tensor] | torch.Tensor:
        calls.append(len(sentences))
        return original(sentences)

    monkeypatch.setattr(module, "_embed", counting)
    return calls


def run_epochs(
    module: Embeddings, sentences: list[Sentence], mode: str, epochs: int = 2
) -> list[torch.Tensor]:
    set_storage_mode(module, mode)  # type: ignore[arg-type]
    outputs = []
    for _ in range(epochs):
        for batch in (sentences[:2], sentences[2:]):
            outputs.append(module.embed(batch))
            clear_stored_embeddings(batch, mode)  # type: ignore[arg-type]
    return outputs


SENTENCES = ["the city is big", "paris", "in berlin a river", "the small city"]


def test_static_embedding_computed_once_with_cpu_and_every_epoch_with_none(
    tiny_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emb = TransformerWordEmbeddings(str(tiny_bert))
    calls = count_computations(emb, monkeypatch)
    sentences = [Sentence(t.split()) for t in SENTENCES]
    kept = run_epochs(emb, sentences, "cpu")
    assert sum(calls) == 4  # each sentence once, across two epochs
    assert all(
        emb.storage_key in s.embeddings and s.embeddings[emb.storage_key].device.type == "cpu"
        for s in sentences
    )
    assert torch.equal(kept[0], kept[2]) and torch.equal(kept[1], kept[3])

    calls.clear()
    fresh = [Sentence(t.split()) for t in SENTENCES]
    recomputed = run_epochs(emb, fresh, "none")
    assert sum(calls) == 8 and all(s.embeddings == {} for s in fresh)
    assert torch.allclose(recomputed[0], kept[0], atol=1e-6)


def test_trainable_embeddings_are_never_kept(tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for emb in (TransformerWordEmbeddings(str(tiny_bert), fine_tune=True), CharacterEmbeddings()):
        calls = count_computations(emb, monkeypatch)
        sentences = [Sentence(t.split()) for t in SENTENCES]
        run_epochs(emb, sentences, "cpu")
        assert sum(calls) == 8
        assert all(emb.name not in s.embeddings for s in sentences)


def test_stacked_children_keep_their_own_storage(tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    static = TransformerWordEmbeddings(str(tiny_bert))
    trainable = CharacterEmbeddings(hidden_size_char=4)
    stack = StackedEmbeddings([static, trainable])
    assert not stack.is_static and stack.embedding_length == 16 + 8
    static_calls = count_computations(static, monkeypatch)
    char_calls = count_computations(trainable, monkeypatch)
    sentences = [Sentence(t.split()) for t in SENTENCES]
    outputs = run_epochs(stack, sentences, "cpu")
    assert sum(static_calls) == 4 and sum(char_calls) == 8
    assert outputs[0].shape == (2, 4, 24)
    assert set(sentences[0].embeddings) == {static.storage_key}


def test_invalid_storage_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="storage mode"):
        set_storage_mode(CharacterEmbeddings(), "disk")  # type: ignore[arg-type]
