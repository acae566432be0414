"""CharacterEmbeddings: batched char BiLSTM, dictionaries, <unk> characters, config round trip."""

from __future__ import annotations

import torch

from engine.data import Sentence
from engine.embeddings import embeddings_from_config
from engine.embeddings.character import EDGE_CHARS, CharacterEmbeddings, default_characters


def test_shapes_padding_and_same_word_same_vector() -> None:
    torch.manual_seed(0)
    emb = CharacterEmbeddings(char_embedding_dim=8, hidden_size_char=5)
    out = emb.embed([Sentence(["Hello", "world", "Hello"]), Sentence(["x"])])
    assert out.shape == (2, 3, 10) and emb.embedding_length == 10
    assert torch.equal(out[0, 0], out[0, 2])
    assert not torch.equal(out[0, 0], out[0, 1])
    assert torch.equal(out[1, 1:], torch.zeros(2, 10))


def test_batched_equals_one_token_at_a_time() -> None:
    torch.manual_seed(0)
    emb = CharacterEmbeddings(char_embedding_dim=6, hidden_size_char=4)
    words = ["a", "longer", "tokens", "of-different", "lengths"]
    batched = emb.embed([Sentence(words)])[0]
    single = torch.stack([emb.embed([Sentence([w])])[0, 0] for w in words])
    assert torch.allclose(batched, single, atol=1e-6)


def test_dictionary_from_sentences_and_unknown_chars() -> None:
    emb = CharacterEmbeddings.from_sentences(
        [Sentence(["abc", "cab"])], with_defaults=False, hidden_size_char=3
    )
    assert emb.char_dictionary.get_items() == ["<unk>", "a", "b", "c"]
    out = emb.embed([Sentence(["xy", "zq"])])
    assert torch.allclose(out[0, 0], out[0, 1])  # both all-<unk>, same length
    assert not emb.is_static


def test_gradients_reach_the_character_lstm() -> None:
    emb = CharacterEmbeddings(hidden_size_char=3)
    emb.embed([Sentence(["gradient"])]).sum().backward()
    assert emb.char_rnn.weight_ih_l0.grad.abs().sum() > 0


def test_config_round_trip() -> None:
    emb = CharacterEmbeddings(["a", "b", "ü"], char_embedding_dim=4, hidden_size_char=3)
    rebuilt = embeddings_from_config(emb.to_config(), None)
    rebuilt.load_state_dict(emb.state_dict())
    sentences = [Sentence(["abü", "ba", "zz"])]
    assert torch.equal(rebuilt.embed(sentences), emb.embed(sentences))


def test_a_very_long_token_is_read_as_its_first_and_last_characters() -> None:
    torch.manual_seed(0)
    emb = CharacterEmbeddings(char_embedding_dim=4, hidden_size_char=3)
    edges = "a" * EDGE_CHARS + "z" * EDGE_CHARS
    blob = "a" * EDGE_CHARS + "x" * 1_000_000 + "z" * EDGE_CHARS  # a pasted blob as one token
    # the LSTM steps through 128 characters, not a million (minutes and gigabytes a batch)
    assert len(emb._char_ids(blob)) == 2 * EDGE_CHARS
    vectors = emb.embed([Sentence([blob, "Berlin"]), Sentence([edges])])
    assert torch.equal(vectors[0, 0], vectors[1, 0])
    # up to twice EDGE_CHARS every character counts
    whole = "a" * EDGE_CHARS + "x" + "z" * (EDGE_CHARS - 1)
    assert not torch.equal(emb.embed([Sentence([whole])])[0, 0], vectors[1, 0])


def test_cyrillic_words_differ_with_a_dictionary_from_the_sentences() -> None:
    # The default dictionary has no Cyrillic: both cities were the same row of <unk>s.
    torch.manual_seed(0)
    cities = Sentence(["Москва", "Лондон"])
    default = CharacterEmbeddings(char_embedding_dim=4, hidden_size_char=3)
    assert torch.equal(*default.embed([cities])[0])
    emb = CharacterEmbeddings.from_sentences([cities], char_embedding_dim=4, hidden_size_char=3)
    assert not torch.equal(*emb.embed([cities])[0])


def test_a_dictionary_from_sentences_keeps_the_defaults_then_ranks_the_rest() -> None:
    defaults = default_characters()
    sentences = [Sentence(["ябя", "a", "ωω", "şa"]), Sentence(["ббω"])]
    items = CharacterEmbeddings.from_sentences(sentences).char_dictionary.get_items()
    # by count (б 3, ω 3, я 2, ş 1), ties by code point; "a" is a default already
    assert items == ["<unk>", *defaults, "ω", "б", "я", "ş"]
    again = CharacterEmbeddings.from_sentences(list(reversed(sentences))).char_dictionary.get_items()
    assert again == items  # a rebuild from the same sentences is the same dictionary
    rare = CharacterEmbeddings.from_sentences(sentences, min_count=2).char_dictionary.get_items()
    assert rare == ["<unk>", *defaults, "ω", "б", "я"]
    capped = CharacterEmbeddings.from_sentences(sentences, max_characters=len(defaults) + 2)
    assert capped.char_dictionary.get_items() == ["<unk>", *defaults, "ω", "б"]
    assert len(capped.char_embedding.weight) == len(defaults) + 2 + 2  # + <unk> and padding
    assert capped._char_ids("ş") == [1]  # cut off: <unk>
