"""Transformer embeddings on a tiny BERT built in the test: pooling, layers, windows for long
sentences, FLERT context, zero-subtoken tokens, fine-tuning, config round trip; MiniLM once."""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizerFast,
    RobertaConfig,
    RobertaModel,
    RobertaTokenizerFast,
)

from engine.data import Sentence
from engine.embeddings import EmbeddingConfigError, embeddings_from_config
from engine.embeddings.transformer import TransformerDocumentEmbeddings, TransformerWordEmbeddings
from tests.engine.round_trip import rebuilt

WHOLE_WORDS = ["the", "city", "berlin", "paris", "is", "big", "small", "in", "a", "river"]
HIDDEN = 16
# The size of every tiny model here: 2 layers of 16, 2 heads.
TINY = {"hidden_size": HIDDEN, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32}


def build_tiny_bert(folder: Path, max_positions: int = 128, seed: int = 0) -> Path:
    """A 2-layer BERT (hidden 16) with a WordPiece vocabulary of letters, digits and a few words."""
    folder.mkdir(parents=True, exist_ok=True)
    letters = list(string.ascii_lowercase + string.digits)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.punctuation, *letters]
    vocab += [f"##{c}" for c in letters] + WHOLE_WORDS
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        **TINY,
        max_position_embeddings=max_positions,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def reference_hidden(folder: Path, text_ids: list[int]) -> torch.Tensor:
    """Last layer of the plain HF model for [CLS] ids [SEP], text positions only."""
    model = BertModel.from_pretrained(folder).eval()
    ids = torch.tensor([[2, *text_ids, 3]])
    with torch.no_grad():
        return model(input_ids=ids).last_hidden_state[0, 1:-1]


def test_subtoken_pooling_variants_match_the_model(tiny_bert: Path) -> None:
    sentence = Sentence(["the", "Berlinxy", "a"])  # berlin ##x ##y: one token, 3 subtokens
    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    ids = tokenizer(["the", "Berlinxy", "a"], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    assert len(ids) == 5
    ref = reference_hidden(tiny_bert, ids)
    expected = {
        "first": torch.stack([ref[0], ref[1], ref[4]]),
        "last": torch.stack([ref[0], ref[3], ref[4]]),
        "mean": torch.stack([ref[0], ref[1:4].mean(0), ref[4]]),
        "first_last": torch.stack(
            [torch.cat([ref[0], ref[0]]), torch.cat([ref[1], ref[3]]), torch.cat([ref[4], ref[4]])]
        ),
    }
    for pooling, want in expected.items():
        emb = TransformerWordEmbeddings(str(tiny_bert), subtoken_pooling=pooling)
        out = emb.embed([sentence])
        assert out.shape == (1, 3, emb.embedding_length)
        assert emb.embedding_length == HIDDEN * (2 if pooling == "first_last" else 1)
        assert torch.allclose(out[0], want, atol=1e-5), pooling


def test_layer_selection_mean_concat_all_and_scalar_mix(tiny_bert: Path) -> None:
    sentences = [Sentence(["the", "city"]), Sentence(["paris"])]
    assert (
        TransformerWordEmbeddings(str(tiny_bert), layers="-1,-2", layer_mean=False).embedding_length
        == 2 * HIDDEN
    )
    mean = TransformerWordEmbeddings(str(tiny_bert), layers="-1,-2")
    concat = TransformerWordEmbeddings(str(tiny_bert), layers="-1,-2", layer_mean=False)
    out_mean, out_cat = mean.embed(sentences), concat.embed(sentences)
    assert torch.allclose(out_mean, (out_cat[..., :HIDDEN] + out_cat[..., HIDDEN:]) / 2, atol=1e-6)
    assert len(TransformerWordEmbeddings(str(tiny_bert), layers="all").encoder.layer_indices) == 3
    mix = TransformerWordEmbeddings(str(tiny_bert), layers="all", scalar_mix=True)
    assert not mix.is_static and mix.embedding_length == HIDDEN
    mix.embed(sentences).sum().backward()
    assert mix.encoder.scalar_mix.weights.grad is not None
    assert all(p.grad is None for p in mix.encoder.model.parameters())
    via_alias = embeddings_from_config({"type": "transformer", "model": str(tiny_bert), "layers": "-1,-2"})
    assert torch.allclose(via_alias.embed(sentences), out_mean, atol=1e-6)
    with pytest.raises(EmbeddingConfigError, match="out of range"):
        TransformerWordEmbeddings(str(tiny_bert), layers="-4")
    with pytest.raises(EmbeddingConfigError, match="subtoken_pooling"):
        TransformerWordEmbeddings(str(tiny_bert), subtoken_pooling="max")


def test_thousand_tokens_through_128_positions_are_stitched_from_windows(tiny_bert: Path) -> None:
    words = [WHOLE_WORDS[i % len(WHOLE_WORDS)] for i in range(1000)]  # one subtoken each
    emb = TransformerWordEmbeddings(str(tiny_bert))
    assert emb.encoder.window == 126 and emb.encoder.stride == 63
    out = emb.embed([Sentence(words), Sentence(["a", "city"])])
    assert out.shape == (2, 1000, HIDDEN) and torch.isfinite(out).all()
    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    ids = tokenizer(words, is_split_into_words=True, add_special_tokens=False)["input_ids"]
    # the first window owns the positions before its centre, the last window those after its own
    assert torch.allclose(out[0, :60], reference_hidden(tiny_bert, ids[:126])[:60], atol=1e-5)
    assert torch.allclose(out[0, -60:], reference_hidden(tiny_bert, ids[-126:])[-60:], atol=1e-5)
    # an inner position comes from the window where it is most central: window start 126 (3rd)
    assert torch.allclose(out[0, 189], reference_hidden(tiny_bert, ids[126:252])[63], atol=1e-5)


def test_tokens_without_subtokens_still_get_a_vector(tiny_bert: Path) -> None:
    emb = TransformerWordEmbeddings(str(tiny_bert), subtoken_pooling="mean")
    sentence = Sentence(["the", "\u200b", "city", "\x07"])
    assert (
        emb.encoder.tokenizer(["\u200b"], is_split_into_words=True, add_special_tokens=False)["input_ids"]
        == []
    )
    out = emb.embed([sentence])
    assert out.shape == (1, 4, HIDDEN)
    # they are encoded as the unknown token, in place
    assert torch.allclose(out, emb.embed([Sentence(["the", "[UNK]", "city", "[UNK]"])]), atol=1e-6)


def test_empty_sentences_in_a_batch(tiny_bert: Path) -> None:
    emb = TransformerWordEmbeddings(str(tiny_bert))
    out = emb.embed([Sentence([]), Sentence(["the", "city"])])
    assert out.shape == (2, 2, HIDDEN) and torch.equal(out[0], torch.zeros(2, HIDDEN))
    assert emb.embed([Sentence([])]).shape == (1, 0, HIDDEN)
    assert TransformerDocumentEmbeddings(str(tiny_bert)).embed([Sentence([]), Sentence("a")]).shape == (
        2,
        HIDDEN,
    )


def linked(*texts: str) -> list[Sentence]:
    sentences = [Sentence(t.split()) for t in texts]
    for left, right in zip(sentences, sentences[1:], strict=False):
        left.next_sentence, right.previous_sentence = right, left
    for s in sentences:
        s.document_id = "doc"
    return sentences


def test_use_context_adds_neighbours_and_keeps_own_tokens(tiny_bert: Path) -> None:
    plain = TransformerWordEmbeddings(str(tiny_bert))
    flert = TransformerWordEmbeddings(str(tiny_bert), use_context=True)
    doc_a = linked("the river", "paris is big", "a city")
    doc_b = linked("the city", "paris is big", "in berlin")
    without = plain.embed([doc_a[1]])
    with_a, with_b = flert.embed([doc_a[1]]), flert.embed([doc_b[1]])
    assert with_a.shape == without.shape == (1, 3, HIDDEN)
    assert not torch.allclose(with_a, without, atol=1e-4)
    assert not torch.allclose(with_a, with_b, atol=1e-4)  # depends on the neighbours
    # a sentence without neighbours is unchanged by use_context
    alone = Sentence(["paris", "is", "big"])
    assert torch.allclose(flert.embed([alone]), without, atol=1e-6)
    # context limited to N tokens: 1 token each side equals embedding "river paris is big a"
    one = TransformerWordEmbeddings(str(tiny_bert), use_context=1)
    expected = plain.embed([Sentence(["river", "paris", "is", "big", "a"])])[0, 1:4]
    assert torch.allclose(one.embed([doc_a[1]])[0], expected, atol=1e-5)


def test_frozen_vs_fine_tuned(tiny_bert: Path) -> None:
    frozen = TransformerWordEmbeddings(str(tiny_bert))
    frozen.train()
    assert frozen.is_static and not frozen.encoder.model.training
    out = frozen.embed([Sentence(["the", "city"])])
    assert not out.requires_grad
    tuned = TransformerWordEmbeddings(str(tiny_bert), fine_tune=True)
    assert not tuned.is_static
    tuned.embed([Sentence(["the", "city"])]).sum().backward()
    assert tuned.encoder.model.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_config_round_trip_runs_without_the_original_folder(tmp_path: Path) -> None:
    original = build_tiny_bert(tmp_path / "bert", seed=1)
    emb = TransformerWordEmbeddings(str(original), layers="-1,-2", subtoken_pooling="mean", use_context=4)
    emb.save_resources(tmp_path / "saved")
    state = emb.state_dict()
    sentences = linked("the city", "paris is bigxy", "in berlin")
    before = emb.embed(sentences)
    shutil.rmtree(original)
    saved = list((tmp_path / "saved").rglob("*"))
    assert not any(p.suffix in (".safetensors", ".bin", ".pt") for p in saved)  # weights live in the model
    config = json.loads(json.dumps(emb.to_config()))
    assert config["type"] == "transformer_word"
    rebuilt = embeddings_from_config(config, tmp_path / "saved")
    rebuilt.load_state_dict(state)
    assert torch.allclose(rebuilt.embed(sentences), before, atol=1e-6)
    assert rebuilt.to_config() == emb.to_config()


def test_layers_given_as_numbers_round_trip(tiny_bert: Path, tmp_path: Path) -> None:
    # parse_layers takes a list or a number; the config kept a list as a JSON list, which was read
    # back as the text "[-1, -2]": the model saved, and loading it failed.
    sentences = [Sentence(["the", "city"]), Sentence(["paris"])]
    for emb in (
        TransformerWordEmbeddings(str(tiny_bert), layers=[-1, -2], layer_mean=False),
        TransformerDocumentEmbeddings(str(tiny_bert), layers=-2, fine_tune=False),
    ):
        emb.eval()
        again = rebuilt(emb, tmp_path / emb.embedding_type)
        assert again.to_config() == emb.to_config()
        assert torch.allclose(again.embed(sentences), emb.embed(sentences), atol=1e-6)
    assert TransformerWordEmbeddings(str(tiny_bert), layers=[-1, -2]).to_config()["layers"] == "-1,-2"


def test_document_embeddings_cls_mean_windows_and_round_trip(tiny_bert: Path, tmp_path: Path) -> None:
    sentences = [Sentence("the city is big"), Sentence("paris")]
    cls_emb = TransformerDocumentEmbeddings(str(tiny_bert))
    assert cls_emb.fine_tune and not cls_emb.is_static
    out = cls_emb.embed(sentences)
    assert out.shape == (2, HIDDEN)
    out.sum().backward()
    assert cls_emb.encoder.model.embeddings.word_embeddings.weight.grad is not None
    mean_emb = TransformerDocumentEmbeddings(str(tiny_bert), cls_pooling="mean", fine_tune=False)
    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    ids = tokenizer("the city is big", add_special_tokens=False)["input_ids"]
    assert torch.allclose(
        mean_emb.embed(sentences[:1])[0], reference_hidden(tiny_bert, ids).mean(0), atol=1e-5
    )
    max_emb = TransformerDocumentEmbeddings(str(tiny_bert), cls_pooling="max", fine_tune=False)
    assert torch.allclose(
        max_emb.embed(sentences[:1])[0], reference_hidden(tiny_bert, ids).max(0).values, atol=1e-5
    )
    long_text = Sentence(" ".join(WHOLE_WORDS[i % 10] for i in range(700)))
    assert mean_emb.embed([long_text]).shape == (1, HIDDEN)

    cls_emb.eval()
    cls_emb.save_resources(tmp_path)
    rebuilt = embeddings_from_config(cls_emb.to_config(), tmp_path)
    rebuilt.load_state_dict(cls_emb.state_dict())
    rebuilt.eval()
    assert torch.allclose(rebuilt.embed(sentences), cls_emb.embed(sentences), atol=1e-6)


def test_document_config_saved_before_cls_pooling_keeps_its_pooling(tiny_bert: Path, tmp_path: Path) -> None:
    mean_emb = TransformerDocumentEmbeddings(str(tiny_bert), cls_pooling="mean", fine_tune=False)
    mean_emb.save_resources(tmp_path)
    old_config = mean_emb.to_config()
    old_config["pooling"] = old_config.pop("cls_pooling")
    rebuilt = embeddings_from_config(old_config, tmp_path)
    assert rebuilt.cls_pooling == "mean"
    rebuilt.load_state_dict(mean_emb.state_dict())
    mean_emb.eval()
    rebuilt.eval()
    sentences = [Sentence("the city is big")]
    assert torch.allclose(rebuilt.embed(sentences), mean_emb.embed(sentences), atol=1e-6)


def test_minilm_alias_loads_the_installed_model() -> None:
    emb = TransformerWordEmbeddings("minilm")
    out = emb.embed([Sentence("George Washington went to Washington .")])
    assert out.shape == (1, 6, 384) and emb.encoder.max_length == 512
    with pytest.raises(EmbeddingConfigError, match="not a known alias"):
        TransformerWordEmbeddings("/nonexistent/model")


def test_a_model_folder_with_pickled_weights_is_refused_without_running_them(
    tiny_bert: Path, tmp_path: Path
) -> None:
    from tests.engine.test_model_files import _Payload

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_bert, folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({"weights": _Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(EmbeddingConfigError, match="has no model.safetensors"):
        TransformerDocumentEmbeddings(str(folder))
    assert not marker.exists()


def test_a_truncated_model_folder_is_a_clear_error(tiny_bert: Path, tmp_path: Path) -> None:
    folder = tmp_path / "truncated"
    shutil.copytree(tiny_bert, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(EmbeddingConfigError, match="truncated: cannot load the model"):
        TransformerWordEmbeddings(str(folder))
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.txt").unlink()
    with pytest.raises(EmbeddingConfigError, match="has no tokenizer.json"):
        TransformerWordEmbeddings(str(folder))


def build_tiny_roberta(folder: Path) -> Path:
    """A 2-layer RoBERTa with a byte-level BPE vocabulary learnt from a few sentences."""
    from tokenizers import ByteLevelBPETokenizer

    folder.mkdir(parents=True, exist_ok=True)
    text = [
        "Peter Blackburn reported from Brussels on Monday .",
        "The city of Berlin is big , Paris too .",
    ] * 20
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(text, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    tokenizer = RobertaTokenizerFast(
        vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"), model_max_length=512
    )
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        **TINY,
        max_position_embeddings=34,  # 32 positions after the padding index
        pad_token_id=1,
    )
    RobertaModel(config).save_pretrained(folder)
    return folder


def test_byte_level_bpe_models_embed_pre_split_words_as_in_pretraining(tmp_path: Path) -> None:
    # RoBERTa's fast tokenizer refused pre-split words ("instantiate ... with add_prefix_space=True").
    folder = build_tiny_roberta(tmp_path / "roberta")
    words = ["Peter", "Blackburn", "reported", "from", "Brussels"]
    embeddings = TransformerWordEmbeddings(str(folder), layers="-1", subtoken_pooling="first")
    embeddings.eval()
    with torch.no_grad():
        got = embeddings.embed([Sentence(words)])[0]
    reference = RobertaTokenizerFast.from_pretrained(folder, add_prefix_space=True)
    encoded = reference(words, is_split_into_words=True, return_tensors="pt")
    assert reference.convert_ids_to_tokens(encoded["input_ids"][0])[1].startswith("Ġ")  # a word start
    with torch.no_grad():
        hidden = RobertaModel.from_pretrained(folder).eval()(**encoded).last_hidden_state[0]
    word_ids = encoded.word_ids()
    first = [word_ids.index(i) for i in range(len(words))]
    torch.testing.assert_close(got, hidden[first], atol=1e-5, rtol=1e-4)
    # windows past the 32 positions, and the saved configuration, work the same way
    with torch.no_grad():
        assert embeddings.embed([Sentence(words * 12)])[0].shape == (60, HIDDEN)
    embeddings.save_resources(tmp_path / "saved")
    shutil.rmtree(folder)
    config = json.loads(json.dumps(embeddings.to_config()))
    rebuilt = embeddings_from_config(config, tmp_path / "saved")
    rebuilt.load_state_dict(embeddings.state_dict())
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.embed([Sentence(words)])[0], got)
