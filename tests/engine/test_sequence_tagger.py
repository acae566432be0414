"""SequenceTagger on tiny data: every option trains and fits, spans and token tags are predicted
with confidences, evaluation scores and writes test.tsv without touching gold labels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from engine import SequenceTagger
from engine.data import Corpus, Dictionary, Sentence
from engine.embeddings.base import TokenEmbeddings, register_embedding
from engine.models.base import distribution_key


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models: one intra-op thread avoids thread hand-offs on the shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@register_embedding("test_lookup")
class LookupEmbeddings(TokenEmbeddings):
    """A trainable word table over a fixed vocabulary (tests only)."""

    def __init__(self, words: list[str], dim: int = 8, name: str = "lookup") -> None:
        super().__init__()
        self.words = list(words)
        self.name = name
        self.index = {w: i + 1 for i, w in enumerate(self.words)}  # 0: unknown / padding
        self.table = nn.Embedding(len(self.words) + 1, dim)

    @property
    def embedding_length(self) -> int:
        return self.table.embedding_dim

    def _embed(self, sentences: list[Sentence]) -> list[torch.Tensor]:
        device = self.table.weight.device
        return [
            self.table(
                torch.tensor([self.index.get(t.text, 0) for t in s.tokens], dtype=torch.long, device=device)
            )
            for s in sentences
        ]

    def to_config(self) -> dict[str, Any]:
        return {"type": "test_lookup", "words": self.words, "dim": self.embedding_length, "name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any], resource_dir: Path | None = None) -> LookupEmbeddings:
        return cls(config["words"], config["dim"], config["name"])


NER_DATA = [
    ("George Washington went to Washington .", [(0, 2, "PER"), (4, 5, "LOC")]),
    ("Paris is in France", [(0, 1, "LOC"), (3, 4, "LOC")]),
    ("Angela Merkel met Barack Obama in Berlin", [(0, 2, "PER"), (3, 5, "PER"), (6, 7, "LOC")]),
    ("the weather is nice", []),
    ("Obama visited Paris", [(0, 1, "PER"), (2, 3, "LOC")]),
]
POS_DATA = [
    ("the dog runs", ["DET", "NOUN", "VERB"]),
    ("a cat sleeps", ["DET", "NOUN", "VERB"]),
    ("dogs run fast", ["NOUN", "VERB", "ADV"]),
    ("the big dog sleeps", ["DET", "ADJ", "NOUN", "VERB"]),
]


def ner_sentences() -> list[Sentence]:
    sentences = []
    for text, spans in NER_DATA:
        sentence = Sentence(text.split())
        for start, end, kind in spans:
            sentence.add_span(start, end, "ner", kind)
        sentences.append(sentence)
    return sentences


def pos_sentences() -> list[Sentence]:
    sentences = []
    for text, tags in POS_DATA:
        sentence = Sentence(text.split())
        for token, tag in zip(sentence.tokens, tags, strict=True):
            token.set_label("upos", tag)
        sentences.append(sentence)
    return sentences


def vocabulary(sentences: list[Sentence]) -> list[str]:
    return sorted({t.text for s in sentences for t in s.tokens})


def label_dictionary(sentences: list[Sentence], label_type: str) -> Dictionary:
    return Corpus(sentences, sentences, sentences).make_label_dictionary(label_type)


def make_tagger(sentences: list[Sentence], label_type: str, seed: int = 0, **options: Any) -> SequenceTagger:
    torch.manual_seed(seed)
    options = {"hidden_size": 16, "word_dropout": 0.0, "locked_dropout": 0.0, **options}
    return SequenceTagger(
        LookupEmbeddings(vocabulary(sentences)),
        label_dictionary(sentences, label_type),
        label_type,
        **options,
    )


def fit(model: nn.Module, sentences: list[Sentence], steps: int = 80, lr: float = 0.05) -> list[float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss, count = model.forward_loss(sentences)
        (loss / count).backward()
        optimizer.step()
        losses.append(float(loss.detach()) / count)
    return losses


def spans_of(sentence: Sentence, label_type: str) -> list[tuple[int, int, str]]:
    return sorted((s.start, s.end, s.value) for s in sentence.get_spans(label_type))


# internal tags ----------------------------------------------------------------------------------
def test_span_labels_get_bioes_or_bio_tags_and_token_labels_stay_plain() -> None:
    ner = ner_sentences()
    bioes = make_tagger(ner, "ner")
    assert bioes.label_kind == "span"
    assert bioes.tag_dictionary.get_items() == ["O"] + [f"{p}-{t}" for t in ("LOC", "PER") for p in "BIES"]
    bio = make_tagger(ner, "ner", tag_format="BIO")
    assert bio.tag_dictionary.get_items() == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    pos = make_tagger(pos_sentences(), "upos")
    assert pos.label_kind == "token"
    assert set(pos.tag_dictionary.get_items()) == {"O", "DET", "NOUN", "VERB", "ADJ", "ADV"}
    explicit = SequenceTagger(
        LookupEmbeddings(["x"]), label_dictionary(ner, "ner"), "entities_custom", label_kind="span"
    )
    assert explicit.label_kind == "span"
    with_unk = Corpus(ner, ner, ner).make_label_dictionary("ner", add_unk=True)
    assert SequenceTagger(LookupEmbeddings(["x"]), with_unk, "ner").tag_dictionary.get_items() == (
        bioes.tag_dictionary.get_items()
    )


def test_invalid_options_are_rejected() -> None:
    ner = ner_sentences()
    with pytest.raises(ValueError, match="tag_format"):
        make_tagger(ner, "ner", tag_format="IOB9")
    with pytest.raises(ValueError, match="label_kind"):
        make_tagger(ner, "ner", label_kind="document")
    with pytest.raises(ValueError, match="locked_dropout"):
        make_tagger(ner, "ner", locked_dropout=1.5)
    with pytest.raises(TypeError, match="token embeddings"):
        SequenceTagger(nn.Linear(2, 2), label_dictionary(ner, "ner"), "ner")  # type: ignore[arg-type]


def test_a_tagger_of_the_wrong_kind_says_so() -> None:
    ner = ner_sentences()
    tagger = make_tagger(ner, "ner", label_kind="token")
    with pytest.raises(ValueError, match="span labels"):
        tagger.forward_loss(ner)


# every option trains and fits -----------------------------------------------------------------
@pytest.mark.parametrize("use_crf", [True, False])
@pytest.mark.parametrize("use_rnn", [True, False])
@pytest.mark.parametrize("reproject", [True, False])
def test_every_architecture_fits_span_labels(use_crf: bool, use_rnn: bool, reproject: bool) -> None:
    sentences = ner_sentences()
    tagger = make_tagger(sentences, "ner", use_crf=use_crf, use_rnn=use_rnn, reproject_embeddings=reproject)
    assert (tagger.crf is not None) == use_crf
    assert (tagger.rnn is not None) == use_rnn
    assert (tagger.reprojection is not None) == reproject
    losses = fit(tagger, sentences, steps=120 if not use_rnn else 80)
    assert losses[-1] < losses[0] / 4
    result = tagger.evaluate(sentences, "ner")
    assert result.main_score_name == "micro_f1"
    # without an RNN a token sees no context: "Washington" is PER once and LOC once
    assert result.main_score == 1.0 if use_rnn else result.main_score > 0.8


@pytest.mark.parametrize("tag_format", ["BIO", "BIOES"])
def test_tag_formats_fit_and_decode_spans(tag_format: str) -> None:
    sentences = ner_sentences()
    tagger = make_tagger(sentences, "ner", tag_format=tag_format, dropout=0.1, word_dropout=0.05)
    fit(tagger, sentences, steps=100)
    tagger.predict(sentences, label_name="pred")
    for sentence in sentences:
        assert spans_of(sentence, "pred") == spans_of(sentence, "ner")


def test_token_labels_fit_with_and_without_crf() -> None:
    sentences = pos_sentences()
    for use_crf in (True, False):
        tagger = make_tagger(sentences, "upos", use_crf=use_crf)
        fit(tagger, sentences)
        result = tagger.evaluate(sentences, "upos")
        assert result.main_score_name == "accuracy"
        assert result.main_score == 1.0
        assert result.per_class["NOUN"].support == 4


def test_forward_loss_sums_over_tokens_and_skips_empty_sentences() -> None:
    sentences = ner_sentences()
    tagger = make_tagger(sentences, "ner", use_crf=False)
    tagger.eval()
    loss, count = tagger.forward_loss([*sentences, Sentence([])])
    assert count == sum(len(s) for s in sentences)
    parts = [tagger.forward_loss([s])[0] for s in sentences]
    assert torch.allclose(loss, torch.stack(parts).sum(), atol=1e-4)
    empty_loss, empty_count = tagger.forward_loss([Sentence([])])
    assert empty_count == 0 and float(empty_loss.detach()) == 0.0


# prediction -----------------------------------------------------------------------------------
def test_predict_writes_spans_with_confidences_in_caller_order() -> None:
    sentences = ner_sentences()
    tagger = make_tagger(sentences, "ner")
    fit(tagger, sentences)
    fresh = [Sentence(s.to_plain_string().split()) for s in sentences]
    tagger.predict(fresh, mini_batch_size=2)
    for gold, predicted in zip(sentences, fresh, strict=True):
        assert spans_of(predicted, "ner") == spans_of(gold, "ner")
        for span in predicted.get_spans("ner"):
            assert 0.5 < span.score <= 1.0
    # a single sentence, and an empty one
    one = Sentence(["Obama", "visited", "Paris"])
    tagger.predict(one)
    assert spans_of(one, "ner") == [(0, 1, "PER"), (2, 3, "LOC")]
    empty = Sentence([])
    tagger.predict([empty, one])
    assert empty.get_spans("ner") == []


def test_predict_and_evaluate_say_how_to_pass_text() -> None:
    # Text or a token list failed deep inside the embeddings ("'str' object has no attribute
    # 'tokens'"); a single Sentence made evaluate iterate over its tokens the same way.
    sentences = ner_sentences()
    tagger = make_tagger(sentences, "ner")
    with pytest.raises(TypeError, match=r"not text: predict\(Sentence\('Obama visited Paris'\)\)"):
        tagger.predict("Obama visited Paris")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"item 1 is a list: wrap it as Sentence\(\['Obama'"):
        tagger.predict([sentences[0], ["Obama", "visited"]])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"evaluate takes a Sentence .* item 0 is a str"):
        tagger.evaluate(["Obama visited Paris"])  # type: ignore[list-item]
    assert tagger.evaluate(sentences[0]).main_score == tagger.evaluate([sentences[0]]).main_score


def test_span_confidence_is_the_mean_of_token_marginals() -> None:
    sentences = ner_sentences()
    tagger = make_tagger(sentences, "ner")
    fit(tagger, sentences, steps=20)
    sentence = Sentence(["Angela", "Merkel", "met", "Barack", "Obama", "in", "Berlin"])
    tagger.predict(sentence, return_probabilities_for_all_classes=True)
    distribution = sentence.metadata[distribution_key("ner")]
    assert len(distribution) == len(sentence)
    for row in distribution:
        assert set(row) == set(tagger.tag_dictionary.get_items())
        assert abs(sum(row.values()) - 1.0) < 1e-4
    with torch.inference_mode():
        tagger.eval()
        features, mask = tagger._features([sentence])
        paths, _ = tagger.crf.viterbi_decode(features, mask)
    tags = [tagger.tag_dictionary.get_item_for_index(i) for i in paths[0].tolist()]
    for span in sentence.get_spans("ner"):
        expected = sum(distribution[i][tags[i]] for i in range(span.start, span.end)) / (
            span.end - span.start
        )
        assert abs(span.score - expected) < 1e-5


def test_token_predictions_carry_each_tokens_confidence() -> None:
    sentences = pos_sentences()
    tagger = make_tagger(sentences, "upos", use_crf=False)
    fit(tagger, sentences)
    sentence = Sentence(["the", "cat", "runs"])
    tagger.predict(sentence, label_name="guess", return_probabilities_for_all_classes=True)
    distribution = sentence.metadata["guess_distribution"]
    for token, row in zip(sentence.tokens, distribution, strict=True):
        label = token.get_label("guess")
        assert label is not None
        assert label.value == max(row, key=row.__getitem__)
        assert abs(label.score - row[label.value]) < 1e-6
    assert [t.get_tag("guess") for t in sentence.tokens] == ["DET", "NOUN", "VERB"]


def test_a_prediction_without_distributions_removes_an_earlier_one() -> None:
    # Predicting replaces earlier predictions of the name: the per-token distribution of an earlier
    # call (perhaps another model's) stayed beside the new tags as if it were theirs.
    sentences = ner_sentences()
    first, second = make_tagger(sentences, "ner", seed=1), make_tagger(sentences, "ner", seed=2)
    sentence = Sentence(["Obama", "visited", "Paris"])
    first.predict(sentence, return_probabilities_for_all_classes=True)
    assert distribution_key("ner") in sentence.metadata
    second.predict(sentence)
    assert distribution_key("ner") not in sentence.metadata


def test_batching_and_sorting_do_not_change_predictions() -> None:
    sentences = ner_sentences()
    tagger = make_tagger(sentences, "ner")
    fit(tagger, sentences, steps=10)  # half-trained: scores are not all near 1
    tagger.predict(sentences, mini_batch_size=1, label_name="one")
    tagger.predict(sentences, mini_batch_size=64, label_name="all")
    for sentence in sentences:
        one = [(s.start, s.end, s.value, round(s.score, 4)) for s in sentence.get_spans("one")]
        full = [(s.start, s.end, s.value, round(s.score, 4)) for s in sentence.get_spans("all")]
        assert one == full


def test_predict_keeps_no_embeddings_and_leaves_the_model_mode() -> None:
    sentences = ner_sentences()
    tagger = make_tagger(sentences, "ner")
    tagger.train()
    tagger.predict(sentences, embedding_storage_mode="none")
    assert tagger.training
    assert all(not s.embeddings for s in sentences)
    with pytest.raises(ValueError, match="storage_mode"):
        tagger.predict(sentences, embedding_storage_mode="disk")  # type: ignore[arg-type]


# evaluation -----------------------------------------------------------------------------------
def test_evaluate_keeps_gold_labels_and_writes_test_tsv(tmp_path: Path) -> None:
    sentences = ner_sentences()
    tagger = make_tagger(sentences, "ner")
    fit(tagger, sentences, steps=5)
    before = [spans_of(s, "ner") for s in sentences]
    out = tmp_path / "test.tsv"
    result = tagger.evaluate(sentences, "ner", out_path=out)
    assert [spans_of(s, "ner") for s in sentences] == before
    assert all(set(s.spans) <= {"ner"} and not s.metadata for s in sentences)
    assert result.loss > 0
    lines = out.read_text(encoding="utf-8").split("\n")
    assert lines[0].split(" ")[:2] == ["George", "B-PER"]
    assert lines[1].split(" ")[:2] == ["Washington", "E-PER"]
    assert len([line for line in lines if line]) == sum(len(s) for s in sentences)
    assert set(result.to_dict()) >= {"main_score", "micro_f1", "macro_f1", "accuracy", "loss"}


@pytest.mark.parametrize("use_crf", [True, False])
def test_an_entity_type_unseen_in_training_is_scored_as_outside(use_crf: bool) -> None:
    # A gold tag missing from the tag dictionary raised KeyError in evaluate's loss; the model
    # cannot predict it, so it counts as O there (and as a miss in the scores).
    tagger = make_tagger(ner_sentences(), "ner", use_crf=use_crf)
    sentence = Sentence(["George", "Washington", "went", "to", "Washington", "."])
    sentence.add_span(0, 2, "ner", "PER")
    sentence.add_span(4, 5, "ner", "MISC")
    assert "S-MISC" not in tagger.tag_dictionary.item2idx
    result = tagger.evaluate([sentence], "ner")
    assert result.loss > 0
    assert spans_of(sentence, "ner") == [(0, 2, "PER"), (4, 5, "MISC")]


def test_the_evaluation_loss_is_the_loss_per_token() -> None:
    # evaluate's loss must be forward_loss's summed loss over its token count (as the train loss
    # is), whatever the mini-batches, or dev and train losses are not comparable.
    sentences = ner_sentences()
    tagger = make_tagger(sentences, "ner")
    tagger.eval()
    with torch.no_grad():
        loss, count = tagger.forward_loss(sentences)
    result = tagger.evaluate(sentences, "ner", mini_batch_size=2)
    assert result.loss == pytest.approx(float(loss) / count, rel=1e-5)


def test_locked_dropout_drops_a_feature_for_the_whole_sentence_and_rescales() -> None:
    # One mask per sentence and feature, shared over time, scaled by 1 / (1 - p) to keep the mean.
    from engine.dropout import LockedDropout

    torch.manual_seed(0)
    dropout = LockedDropout(0.5).train()
    out = dropout(torch.ones(4, 7, 16))
    assert torch.equal(out, out[:, :1, :].expand_as(out))
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert torch.equal(dropout.eval()(torch.ones(2, 3, 4)), torch.ones(2, 3, 4))


# real embeddings ------------------------------------------------------------------------------
def write_vectors(path: Path, words: list[str], dim: int = 6) -> Path:
    generator = torch.Generator().manual_seed(1)
    lines = [
        f"{w} " + " ".join(f"{v:.4f}" for v in torch.randn(dim, generator=generator).tolist()) for w in words
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_word_and_character_stack_tagger_trains_and_predicts(tmp_path: Path) -> None:
    from engine.embeddings.character import CharacterEmbeddings
    from engine.embeddings.stacked import StackedEmbeddings
    from engine.embeddings.word import WordEmbeddings

    sentences = ner_sentences()
    vectors = write_vectors(tmp_path / "vectors.txt", [w.lower() for w in vocabulary(sentences)])
    torch.manual_seed(0)
    stack = StackedEmbeddings(
        [WordEmbeddings(str(vectors)), CharacterEmbeddings(char_embedding_dim=8, hidden_size_char=8)]
    )
    tagger = SequenceTagger(
        stack, label_dictionary(sentences, "ner"), "ner", hidden_size=16, locked_dropout=0.0
    )
    losses = fit(tagger, sentences, steps=60)
    assert losses[-1] < losses[0] / 3
    assert tagger.evaluate(sentences, "ner").main_score > 0.8


def test_bilstm_equals_a_packed_bidirectional_lstm() -> None:
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from engine.models.sequence_tagger import BiLSTM

    torch.manual_seed(0)
    ours = BiLSTM(5, 7, num_layers=2, dropout=0.5).eval()
    reference = nn.LSTM(5, 7, num_layers=2, batch_first=True, bidirectional=True).eval()
    with torch.no_grad():
        for layer in range(2):
            for direction, stack in (("", ours.forward_layers), ("_reverse", ours.backward_layers)):
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(reference, f"{kind}_l{layer}{direction}").copy_(
                        getattr(stack[layer], f"{kind}_l0")
                    )
    lengths = torch.tensor([6, 2, 4, 1])
    x = torch.randn(4, 6, 5) * (torch.arange(6)[None, :, None] < lengths[:, None, None])
    with torch.no_grad():
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        expected, _ = pad_packed_sequence(reference(packed)[0], batch_first=True, total_length=6)
        got = ours(x, lengths)
    mask = torch.arange(6)[None, :] < lengths[:, None]
    assert torch.allclose(got[mask], expected[mask], atol=1e-5)


def test_embeddings_kept_during_evaluation_can_be_trained_on_afterwards(tmp_path: Path) -> None:
    from engine.embeddings.base import set_storage_mode
    from engine.embeddings.word import WordEmbeddings

    sentences = ner_sentences()
    vectors = write_vectors(tmp_path / "vectors.txt", [w.lower() for w in vocabulary(sentences)])
    # a fine-tuned table: row indices kept during evaluation then feed a table that is trained
    words = WordEmbeddings(str(vectors), fine_tune=True)
    tagger = SequenceTagger(words, label_dictionary(sentences, "ner"), "ner", hidden_size=8)
    tagger.evaluate(sentences, "ner", embedding_storage_mode="cpu")
    assert all(s.embeddings for s in sentences)  # kept, as the "cpu" mode promises
    set_storage_mode(tagger, "cpu")
    tagger.train()
    loss, count = tagger.forward_loss(sentences)
    (loss / count).backward()
    assert words.vectors.grad is not None


def test_mixed_lengths_run_in_groups_with_the_same_results_and_gradients() -> None:
    from engine.models.sequence_tagger import BiLSTM, length_groups

    lengths = [60, 3, 2, 50, 1, 4, 5, 2, 58, 3]
    groups = length_groups(lengths)
    assert len(groups) > 1, "mixed lengths should not run padded to the longest"
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert length_groups([7, 7, 6, 7]) == [[0, 1, 3, 2]]  # similar lengths stay one call

    torch.manual_seed(0)
    model = BiLSTM(5, 7, num_layers=2, dropout=0.0)
    size = torch.tensor(lengths)
    mask = torch.arange(60)[None, :] < size[:, None]
    x = (torch.randn(len(lengths), 60, 5) * mask[..., None]).requires_grad_()
    grouped = model(x, size)
    (grad_grouped,) = torch.autograd.grad(grouped[mask].sum(), x)
    single = model._padded(x, size)
    (grad_single,) = torch.autograd.grad(single[mask].sum(), x)
    assert torch.allclose(grouped[mask], single[mask], atol=1e-5)
    assert torch.allclose(grad_grouped, grad_single, atol=1e-5)


def test_bfloat16_predict_tags_as_float32_does() -> None:
    sentences = ner_sentences()
    tagger = make_tagger(sentences, "ner")
    fit(tagger, sentences, steps=80)
    tagger.predict(sentences, label_name="fp32")
    tagger.predict(sentences, label_name="bf16", precision="bfloat16")
    for sentence in sentences:
        assert spans_of(sentence, "bf16") == spans_of(sentence, "fp32") == spans_of(sentence, "ner")
        for span in sentence.get_spans("bf16"):
            assert isinstance(span.label.score, float) and 0.0 < span.label.score <= 1.0
    with pytest.raises(ValueError, match="precision"):
        tagger.predict(sentences, precision="float16")


def test_test_tsv_writes_spaces_inside_a_token_as_no_break_spaces(tmp_path: Path) -> None:
    # A token with a space (a tab-separated file, a CoNLL-U form) would make four fields of three.
    sentence = Sentence(["New York", "is", "big"])
    sentence.add_span(0, 1, "ner", "LOC")
    tagger = make_tagger([sentence], "ner")
    out = tmp_path / "test.tsv"
    tagger.evaluate([sentence], "ner", out_path=out)
    lines = [line for line in out.read_text(encoding="utf-8").split("\n") if line]
    assert [len(line.split(" ")) for line in lines] == [3, 3, 3]
    assert lines[0].split(" ")[:2] == ["New\u00a0York", "S-LOC"]
    assert sentence[0].text == "New York"  # only the file spells it differently
