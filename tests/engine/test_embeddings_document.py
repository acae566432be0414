"""DocumentPoolEmbeddings and DocumentRNNEmbeddings over small word vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.data import Sentence
from engine.embeddings import EmbeddingConfigError, embeddings_from_config, set_storage_mode
from engine.embeddings.character import CharacterEmbeddings
from engine.embeddings.document import DocumentPoolEmbeddings, DocumentRNNEmbeddings
from engine.embeddings.word import WordEmbeddings
from tests.engine.round_trip import rebuilt
from tests.engine.test_embeddings_word import VECTORS, write_glove_text


@pytest.fixture
def words(tmp_path: Path) -> WordEmbeddings:
    return WordEmbeddings(str(write_glove_text(tmp_path / "v.txt")), dtype="float32", train_unk=False)


SENTENCES = [["the", "city"], ["berlin"], []]


def test_pool_mean_max_min_ignore_padding(words: WordEmbeddings) -> None:
    sentences = [Sentence(s) for s in SENTENCES]
    the_city = torch.from_numpy(VECTORS[[0, 5]])
    for pooling, expected in (
        ("mean", the_city.mean(0)),
        ("max", the_city.amax(0)),
        ("min", the_city.amin(0)),
    ):
        out = DocumentPoolEmbeddings(words, pooling=pooling).embed(sentences)
        assert out.shape == (3, 4)
        assert torch.allclose(out[0], expected), pooling
        assert torch.allclose(out[1], torch.from_numpy(VECTORS[1]))
        assert torch.equal(out[2], torch.zeros(4))  # empty sentence
        # predict batches the empty texts together, last: a batch of nothing but them
        only_empty = DocumentPoolEmbeddings(words, pooling=pooling).embed([Sentence([]), Sentence([])])
        assert torch.equal(only_empty, torch.zeros(2, 4)), pooling


def test_pool_fine_tune_modes(words: WordEmbeddings) -> None:
    sentences = [Sentence(s) for s in SENTENCES[:2]]
    plain = DocumentPoolEmbeddings(words)
    assert plain.is_static
    linear = DocumentPoolEmbeddings(words, fine_tune_mode="linear")
    assert not linear.is_static
    assert torch.allclose(linear.embed(sentences), plain.embed(sentences), atol=1e-6)  # identity start
    nonlinear = DocumentPoolEmbeddings(words, fine_tune_mode="nonlinear")
    nonlinear.embed(sentences).sum().backward()
    assert nonlinear.reprojection[2].weight.grad is not None
    with pytest.raises(EmbeddingConfigError, match="fine_tune_mode"):
        DocumentPoolEmbeddings(words, fine_tune_mode="deep")
    with pytest.raises(EmbeddingConfigError, match="pooling"):
        DocumentPoolEmbeddings(words, pooling="sum")


def test_static_pool_is_kept_with_storage_mode_cpu(words: WordEmbeddings) -> None:
    pool = DocumentPoolEmbeddings(words)
    set_storage_mode(pool, "cpu")
    sentence = Sentence(["the", "city"])
    first = pool.embed([sentence])
    assert pool.storage_key in sentence.embeddings
    sentence.embeddings[pool.storage_key] = torch.full((4,), 7.0)
    assert torch.equal(pool.embed([sentence])[0], torch.full((4,), 7.0))
    assert first.shape == (1, 4)


@pytest.mark.parametrize("rnn_type", ["GRU", "LSTM"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_shapes_gradients_and_padding_invariance(
    words: WordEmbeddings, rnn_type: str, bidirectional: bool
) -> None:
    torch.manual_seed(0)
    rnn = DocumentRNNEmbeddings(
        words, hidden_size=5, rnn_type=rnn_type, bidirectional=bidirectional, dropout=0.0
    )
    rnn.eval()
    assert rnn.embedding_length == (10 if bidirectional else 5) and not rnn.is_static
    batch = rnn.embed([Sentence(s) for s in SENTENCES])
    assert batch.shape == (3, rnn.embedding_length)
    alone = rnn.embed([Sentence(["berlin"])])
    assert torch.allclose(batch[1], alone[0], atol=1e-6)  # padding does not leak into the final state
    rnn.train()
    rnn.embed([Sentence(s) for s in SENTENCES[:2]]).sum().backward()
    assert rnn.rnn.weight_ih_l0.grad.abs().sum() > 0


def test_rnn_an_empty_sentence_embeds_alike_alone_and_in_a_batch(words: WordEmbeddings) -> None:
    # An empty text is one zero token vector either way; alone it skipped the reprojection (its
    # bias), so a classifier gave an empty text other scores alone than next to another text.
    torch.manual_seed(0)
    rnn = DocumentRNNEmbeddings(words, hidden_size=5, dropout=0.0).eval()
    with torch.no_grad():
        rnn.reprojection.bias.fill_(0.5)
    alone = rnn.embed([Sentence([])])
    together = rnn.embed([Sentence(["the", "city"]), Sentence([])])
    assert torch.allclose(alone[0], together[1], atol=1e-6)


def test_rnn_without_reprojection_and_stacked_inputs(words: WordEmbeddings) -> None:
    rnn = DocumentRNNEmbeddings(
        [words, CharacterEmbeddings(hidden_size_char=2)], hidden_size=3, reproject_words=False
    )
    assert rnn.reprojection is None and rnn.rnn.input_size == 4 + 4
    assert rnn.embed([Sentence(["the"])]).shape == (1, 3)
    with pytest.raises(EmbeddingConfigError, match="rnn_type"):
        DocumentRNNEmbeddings(words, rnn_type="RNN")


def test_config_round_trips(words: WordEmbeddings, tmp_path: Path) -> None:
    sentences = [Sentence(s) for s in SENTENCES]
    for emb in (
        DocumentPoolEmbeddings(words, pooling="max", fine_tune_mode="nonlinear"),
        DocumentRNNEmbeddings(
            [words, CharacterEmbeddings(hidden_size_char=2)], hidden_size=4, bidirectional=True
        ),
    ):
        emb.eval()
        again = rebuilt(emb, tmp_path / emb.embedding_type)
        assert torch.allclose(again.embed(sentences), emb.embed(sentences), atol=1e-6)


def test_rnn_word_and_locked_dropout_train_only_and_saved(words: WordEmbeddings, tmp_path: Path) -> None:
    # Flair's DocumentRNNEmbeddings options: word dropout zeroes whole tokens before the RNN, locked
    # dropout one feature mask per sentence; both act in training only and are kept in the config.
    torch.manual_seed(0)
    rnn = DocumentRNNEmbeddings(words, hidden_size=6, dropout=0.0, word_dropout=0.999, locked_dropout=0.0)
    sentences = [Sentence(s) for s in SENTENCES]
    rnn.eval()
    clean = rnn.embed(sentences)
    rnn.train()
    every_word_dropped = rnn.embed(sentences)
    # every token zeroed: each sentence's vector is the RNN's over as many zero vectors
    blank = torch.cat(
        [rnn.rnn(rnn.reprojection(torch.zeros(1, max(1, len(s)), 4)))[1][-1] for s in SENTENCES]
    )
    assert not torch.allclose(every_word_dropped, clean)
    assert torch.allclose(every_word_dropped, blank, atol=1e-6)
    locked = DocumentRNNEmbeddings(words, hidden_size=6, dropout=0.0, locked_dropout=0.5).train()
    out = locked.embed(sentences)
    assert (out == 0).any() and not torch.equal(out, locked.embed(sentences))  # features dropped at random
    locked.eval()
    assert not (locked.embed(sentences) == 0).any()
    assert torch.equal(locked.embed(sentences), locked.embed(sentences))
    config = json.loads(json.dumps(rnn.to_config()))
    assert (config["word_dropout"], config["locked_dropout"]) == (0.999, 0.0)
    rnn.save_resources(tmp_path / "rnn")
    rebuilt = embeddings_from_config(config, tmp_path / "rnn")
    assert isinstance(rebuilt, DocumentRNNEmbeddings) and rebuilt.word_dropout.p == 0.999
    with pytest.raises(EmbeddingConfigError, match="locked_dropout must be in"):
        DocumentRNNEmbeddings(words, locked_dropout=1.0)
