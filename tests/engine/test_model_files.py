"""Model files: save/load round trips give identical predictions for every model type; tampered,
truncated or pickle-carrying files are rejected with ModelFileError without running anything."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch

from engine import SequenceTagger, TextClassifier, load_model
from engine.data import Corpus, Sentence
from engine.embeddings.character import CharacterEmbeddings, default_characters
from engine.embeddings.document import DocumentPoolEmbeddings
from engine.embeddings.stacked import StackedEmbeddings
from engine.embeddings.word import WordEmbeddings
from engine.models.base import Model
from engine.serialization import (
    FORMAT_VERSION,
    ModelFileError,
    check_safetensors_header,
    load_tensors,
    read_json,
    save_tensors,
    write_json,
)
from tests.engine.test_embeddings_transformer import build_tiny_bert
from tests.engine.test_sequence_tagger import (  # noqa: F401
    fit,
    make_tagger,
    ner_sentences,
    one_thread,
    pos_sentences,
    vocabulary,
    write_vectors,
)
from tests.engine.test_text_classifier import multi_sentences, single_sentences


def snapshot(model: Model, sentences: list[Sentence]) -> list[object]:
    """Everything predict writes (labels, scores, distributions) in comparable form."""
    fresh = [Sentence([t.text for t in s.tokens]) for s in sentences]
    model.predict(fresh, return_probabilities_for_all_classes=True, label_name="p")
    out: list[object] = []
    for s in fresh:
        out.append(
            (
                [(sp.start, sp.end, sp.value, sp.score) for sp in s.get_spans("p")],
                [(t.get_tag("p"), t.labels["p"].score if "p" in t.labels else None) for t in s.tokens],
                [(lb.value, lb.score) for lb in s.get_labels("p")],
                s.metadata.get("p_distribution"),
            )
        )
    return out


def round_trip(model: Model, sentences: list[Sentence], folder: Path) -> Model:
    before = snapshot(model, sentences)
    model.save(folder)
    loaded = load_model(folder)
    assert type(loaded) is type(model)
    assert snapshot(loaded, sentences) == before
    assert type(model).load(folder).label_type == model.label_type
    return loaded


def trained_tagger(**options: object) -> SequenceTagger:
    sentences = ner_sentences()
    tagger = make_tagger(sentences, "ner", **options)
    fit(tagger, sentences, steps=10)
    return tagger


# round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"use_crf": False, "tag_format": "BIO"},
        {"use_rnn": False, "reproject_embeddings": False},
        {"rnn_layers": 2, "dropout": 0.1},
    ],
)
def test_span_tagger_round_trip(options: dict[str, object], tmp_path: Path) -> None:
    loaded = round_trip(trained_tagger(**options), ner_sentences(), tmp_path / "tagger")
    assert isinstance(loaded, SequenceTagger)
    for key, value in options.items():
        assert loaded.hyperparameters()[key] == value


def test_a_model_of_format_version_1_still_loads(tmp_path: Path) -> None:
    # Version 2 added config keys a reader of 1 would ignore; models saved as 1 load as before.
    tagger = trained_tagger()
    tagger.save(tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    config = read_json(config_path)
    assert config["format_version"] == 2
    config["format_version"] = 1
    config_path.write_text(json.dumps(config))
    loaded = load_model(tmp_path / "m")
    sentences = ner_sentences()
    assert torch.equal(loaded.eval().forward_loss(sentences)[0], tagger.eval().forward_loss(sentences)[0])


def test_config_records_class_hyperparameters_dictionary_and_versions(tmp_path: Path) -> None:
    tagger = trained_tagger(tag_format="BIO")
    tagger.save(tmp_path / "m")
    config = read_json(tmp_path / "m" / "config.json")
    assert config["model_class"] == "SequenceTagger"
    assert config["format_version"] == FORMAT_VERSION
    assert config["label_type"] == "ner"
    assert config["label_dictionary"]["items"] == ["LOC", "PER"]
    assert config["hyperparameters"]["tag_format"] == "BIO"
    assert config["hyperparameters"]["label_kind"] == "span"
    assert config["embeddings"]["type"] == "test_lookup"
    assert {"torch", "safetensors", "python"} <= set(config["library_versions"])
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]


def test_token_tagger_with_word_and_character_stack_round_trip(tmp_path: Path) -> None:
    sentences = pos_sentences()
    vectors = write_vectors(tmp_path / "vectors.txt", vocabulary(sentences))
    torch.manual_seed(0)
    stack = StackedEmbeddings(
        [WordEmbeddings(str(vectors)), CharacterEmbeddings(char_embedding_dim=4, hidden_size_char=4)]
    )
    dictionary = Corpus(sentences, sentences, sentences).make_label_dictionary("upos")
    tagger = SequenceTagger(stack, dictionary, "upos", hidden_size=8)
    fit(tagger, sentences, steps=5)
    vectors.unlink()  # the model folder must not need the source vectors
    loaded = round_trip(tagger, sentences, tmp_path / "pos")
    assert loaded.label_kind == "token"


def _cyrillic_tagger(characters: CharacterEmbeddings) -> tuple[SequenceTagger, list[Sentence]]:
    sentences = []
    for text, tag in (("Москва большая", "PROPN"), ("Лондон далеко", "PROPN"), ("Αθήνα şehir", "PROPN")):
        sentence = Sentence(text.split())
        sentence[0].set_label("upos", tag)
        sentence[1].set_label("upos", "ADJ")
        sentences.append(sentence)
    dictionary = Corpus(sentences, sentences, sentences).make_label_dictionary("upos")
    tagger = SequenceTagger(characters, dictionary, "upos", hidden_size=8)
    fit(tagger, sentences, steps=5)
    return tagger, sentences


def test_a_character_dictionary_from_the_corpus_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    probe = [Sentence(["Москва", "Лондон"])]
    tagger, sentences = _cyrillic_tagger(
        CharacterEmbeddings.from_sentences(probe, char_embedding_dim=4, hidden_size_char=4)
    )
    loaded = round_trip(tagger, sentences, tmp_path / "m")
    chars = read_json(tmp_path / "m" / "config.json")["embeddings"]["chars"]
    assert {"М", "Л", "д"} <= set(chars) and "Α" not in chars
    assert isinstance(loaded.embeddings, CharacterEmbeddings)
    assert loaded.embeddings.char_dictionary == tagger.embeddings.char_dictionary


def test_a_character_model_with_the_default_dictionary_still_loads(tmp_path: Path) -> None:
    # Before the worker built dictionaries from the corpus, every character model listed the
    # default characters in its config; a config without "chars" also reads as the default.
    torch.manual_seed(0)
    tagger, sentences = _cyrillic_tagger(CharacterEmbeddings(char_embedding_dim=4, hidden_size_char=4))
    tagger.save(tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    config = read_json(config_path)
    assert config["embeddings"]["chars"] == default_characters()
    before = snapshot(tagger, sentences)
    assert snapshot(load_model(tmp_path / "m"), sentences) == before
    del config["embeddings"]["chars"]
    config_path.write_text(json.dumps(config))
    assert snapshot(load_model(tmp_path / "m", untrusted=True), sentences) == before


def test_classifier_round_trips_single_and_multi_label(tmp_path: Path) -> None:
    for name, sentences, label_type in (
        ("single", single_sentences(), "question"),
        ("multi", multi_sentences(), "aspect"),
    ):
        vectors = write_vectors(tmp_path / f"{name}.txt", vocabulary(sentences))
        torch.manual_seed(0)
        document = DocumentPoolEmbeddings(WordEmbeddings(str(vectors)), fine_tune_mode="linear")
        dictionary = Corpus(sentences, sentences, sentences).make_label_dictionary(label_type)
        classifier = TextClassifier(document, dictionary, label_type, multi_label_threshold=0.4)
        fit(classifier, sentences, steps=5)
        loaded = round_trip(classifier, sentences, tmp_path / name)
        assert isinstance(loaded, TextClassifier)
        assert loaded.multi_label == (name == "multi")
        assert loaded.multi_label_threshold == 0.4


def test_transformer_models_round_trip_without_the_source_folder(tmp_path: Path) -> None:
    from engine.embeddings.transformer import TransformerDocumentEmbeddings, TransformerWordEmbeddings

    bert = build_tiny_bert(tmp_path / "bert")
    sentences = ner_sentences()
    torch.manual_seed(0)
    flert = SequenceTagger(
        TransformerWordEmbeddings(str(bert), fine_tune=True, use_context=True),
        Corpus(sentences, sentences, sentences).make_label_dictionary("ner"),
        "ner",
        use_crf=False,
        use_rnn=False,
        reproject_embeddings=False,
    )
    questions = single_sentences()
    classifier = TextClassifier(
        TransformerDocumentEmbeddings(str(bert), cls_pooling="mean"),
        Corpus(questions, questions, questions).make_label_dictionary("question"),
        "question",
    )
    before_tagger = snapshot(flert, sentences)
    before_classifier = snapshot(classifier, questions)
    flert.save(tmp_path / "flert")
    classifier.save(tmp_path / "trec")
    shutil.rmtree(bert)
    assert snapshot(load_model(tmp_path / "flert"), sentences) == before_tagger
    assert snapshot(load_model(tmp_path / "trec"), questions) == before_classifier


def _linked(sentences: list[Sentence]) -> list[Sentence]:
    copies = [Sentence([t.text for t in s.tokens]) for s in sentences]
    for left, right in zip(copies, copies[1:], strict=False):
        left.next_sentence, right.previous_sentence = right, left
    return copies


def _distributions(model: Model, sentences: list[Sentence], mini_batch_size: int = 32) -> torch.Tensor:
    model.predict(sentences, mini_batch_size, return_probabilities_for_all_classes=True, label_name="p")
    return torch.tensor([v for s in sentences for row in s.metadata["p_distribution"] for v in row.values()])


def test_a_loaded_flert_tagger_reads_the_same_context_in_any_batching(tmp_path: Path) -> None:
    # The round trips above predict on unlinked copies: a loaded FLERT model must read the same
    # document context as before saving, whether its sentences are batched together or not.
    from engine.embeddings.transformer import TransformerWordEmbeddings

    bert = build_tiny_bert(tmp_path / "bert")
    sentences = ner_sentences()
    torch.manual_seed(0)
    flert = SequenceTagger(
        TransformerWordEmbeddings(str(bert), fine_tune=True, use_context=3, max_length=12, stride=4),
        Corpus(sentences, sentences, sentences).make_label_dictionary("ner"),
        "ner",
        use_rnn=False,
    )
    fit(flert, sentences, steps=3)
    before = _distributions(flert, _linked(sentences))
    unlinked = [Sentence([t.text for t in s.tokens]) for s in sentences]
    assert not torch.allclose(_distributions(flert, unlinked), before, atol=1e-3)  # the context counts
    flert.save(tmp_path / "flert")
    loaded = load_model(tmp_path / "flert")
    assert torch.allclose(_distributions(loaded, _linked(sentences)), before, atol=1e-6)
    assert torch.allclose(_distributions(loaded, _linked(sentences), mini_batch_size=1), before, atol=1e-6)


def test_save_replaces_an_existing_folder_atomically(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    first = trained_tagger()
    first.save(folder)
    second = trained_tagger(use_crf=False)
    second.save(folder)
    assert isinstance(load_model(folder), SequenceTagger)
    assert load_model(folder).crf is None  # type: ignore[attr-defined]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging leftovers


def test_loading_the_wrong_class_is_an_error(tmp_path: Path) -> None:
    trained_tagger().save(tmp_path / "tagger")
    with pytest.raises(ModelFileError, match="not a TextClassifier"):
        TextClassifier.load(tmp_path / "tagger")


# tampered and hostile files -------------------------------------------------------------------
@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    trained_tagger().save(folder)
    return folder


class _Payload:
    """Unpickling this would create ``marker`` (proof that code ran)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (os.makedirs, (str(self.marker),))


def test_pickle_renamed_to_safetensors_is_rejected_without_running(saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (saved / "model.safetensors").write_bytes(pickle.dumps({"weights": _Payload(marker)}))
    with pytest.raises(ModelFileError, match="not a safetensors file"):
        load_model(saved)
    assert not marker.exists()


def test_torch_save_zip_renamed_to_safetensors_is_rejected_without_running(
    saved: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned_zip"
    torch.save({"weights": _Payload(marker)}, saved / "model.safetensors")
    with pytest.raises(ModelFileError, match="model.safetensors"):
        load_model(saved)
    assert not marker.exists()


def test_safetensors_header_smuggling_a_pickle_is_rejected(saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned_header"
    payload = pickle.dumps(_Payload(marker))
    header = json.dumps(
        {"x": {"dtype": "PICKLE", "shape": [len(payload)], "data_offsets": [0, len(payload)]}}
    )
    data = struct.pack("<Q", len(header)) + header.encode() + payload
    (saved / "model.safetensors").write_bytes(data)
    with pytest.raises(ModelFileError, match="unsupported dtype"):
        load_model(saved)
    assert not marker.exists()


def test_truncated_weights_are_rejected(saved: Path) -> None:
    path = saved / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(saved)
    path.write_bytes(data[:5])
    with pytest.raises(ModelFileError, match="too short"):
        load_model(saved)


def test_edited_header_shapes_and_offsets_are_rejected(saved: Path) -> None:
    path = saved / "model.safetensors"
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    name = next(k for k in header if k != "__metadata__" and len(header[k]["shape"]) == 2)
    header[name]["shape"] = [header[name]["shape"][1], header[name]["shape"][0] + 1]
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length :])
    with pytest.raises(ModelFileError, match=name.replace(".", r"\.")):
        load_model(saved)


def test_weights_that_do_not_fit_the_config_are_rejected(saved: Path, tmp_path: Path) -> None:
    tensors = load_tensors(saved / "model.safetensors")
    extra = dict(tensors, **{"evil.weight": torch.zeros(2)})
    save_tensors(saved / "model.safetensors", extra)
    with pytest.raises(ModelFileError, match="unexpected tensors"):
        load_model(saved)
    missing = {k: v for k, v in tensors.items() if k != "linear.bias"}
    save_tensors(saved / "model.safetensors", missing)
    with pytest.raises(ModelFileError, match="missing tensors"):
        load_model(saved)
    wrong_dtype = dict(tensors, **{"linear.bias": tensors["linear.bias"].double()})
    save_tensors(saved / "model.safetensors", wrong_dtype)
    with pytest.raises(ModelFileError, match="dtype"):
        load_model(saved)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"model_class": "os.system"}, "unknown model_class"),
        ({"model_class": "builtins:eval"}, "unknown model_class"),
        ({"embeddings": {"type": "engine.evil:run"}}, "unknown embedding type"),
        ({"format_version": 99}, "format_version"),
        ({"format": "pickle"}, "not a model config"),
        ({"hyperparameters": {"hidden_size": "many"}}, "hidden_size"),
        ({"hyperparameters": {"__class__": "x"}}, "unknown SequenceTagger hyperparameter"),
        ({"label_dictionary": {"items": "PER"}}, "config"),
        ({"label_type": None}, "label_type"),
    ],
)
def test_tampered_configs_are_rejected(saved: Path, edit: dict[str, object], message: str) -> None:
    config = read_json(saved / "config.json")
    if "hyperparameters" in edit:
        config["hyperparameters"].update(edit["hyperparameters"])  # type: ignore[arg-type]
    else:
        config.update(edit)
    write_json(saved / "config.json", config)
    with pytest.raises(ModelFileError, match=message):
        load_model(saved)


def test_broken_or_missing_config_is_rejected(saved: Path, tmp_path: Path) -> None:
    (saved / "config.json").write_bytes(b"\x80\x04not json")
    with pytest.raises(ModelFileError, match="JSON"):
        load_model(saved)
    (saved / "config.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ModelFileError, match="JSON object"):
        load_model(saved)
    (saved / "config.json").unlink()
    with pytest.raises(ModelFileError, match="not found"):
        load_model(saved)
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "nowhere")


def test_tensor_files_round_trip_and_tied_tensors_are_split(tmp_path: Path) -> None:
    shared = torch.arange(6, dtype=torch.float32)
    tensors = {"a": shared, "b": shared, "c": torch.tensor([True, False]), "empty": torch.zeros(0, 3)}
    save_tensors(tmp_path / "t.safetensors", tensors)
    header = check_safetensors_header(tmp_path / "t.safetensors")
    assert header["a"]["shape"] == [6]
    loaded = load_tensors(tmp_path / "t.safetensors")
    assert set(loaded) == set(tensors)
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())


def test_a_flair_style_pt_path_points_to_the_folder(tmp_path: Path) -> None:
    # SequenceTagger.load("resources/taggers/ner/final-model.pt") is how Flair's tutorial loads.
    (tmp_path / "final-model").mkdir()
    with pytest.raises(ModelFileError, match=r"models are folders: did you mean .*final-model\?"):
        load_model(tmp_path / "final-model.pt")
    with pytest.raises(ModelFileError, match=r"model folder not found$"):
        load_model(tmp_path / "nothing.pt")
