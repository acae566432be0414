"""The spec's trainer section reaches ``ModelTrainer.train`` whole: an option added to the spec
but not passed on would be accepted by the API and silently ignored."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from engine.data import Corpus, Sentence
from engine.training import ModelTrainer
from service.schemas import spec as s
from worker.build import BuildError, build_model, trainer_arguments

# fields that choose how the job runs rather than how the trainer trains
ROUTING_FIELDS = {"mode", "device"}


def test_every_trainer_option_of_the_spec_is_passed_to_the_trainer() -> None:
    spec = s.TrainingSpec.model_validate(
        {"corpus": {"ids": ["c"]}, "trainer": {"decoder_learning_rate": 0.001, "use_amp": True}}
    )
    arguments = trainer_arguments(spec)
    assert set(arguments) == set(s.TrainerOptions.model_fields) - ROUTING_FIELDS
    assert set(arguments) <= set(inspect.signature(ModelTrainer.train).parameters)
    assert arguments["decoder_learning_rate"] == 0.001 and arguments["use_amp"] is True


def _ner_corpus(sentences: int, types: int) -> Corpus:
    """One-entity sentences ``w<i> x`` with ``types`` span types in turn."""
    train = []
    for i in range(sentences):
        sentence = Sentence([f"w{i}", "x"])
        sentence.add_span(0, 1, "ner", f"T{i % types}")
        train.append(sentence)
    return Corpus(train, train[:2], sample_missing_splits=False)


def _tiny_tagger_spec() -> s.TrainingSpec:
    return s.TrainingSpec.model_validate(
        {
            "corpus": {"ids": ["c"]},
            "label_type": "ner",
            "embeddings": [{"type": "character", "char_embedding_dim": 4, "hidden_size_char": 4}],
            "model": {"hidden_size": 4},
        }
    )


def test_a_model_with_more_labels_than_a_server_may_serve_is_not_built(tmp_path: Path) -> None:
    # POST /jobs counts them in the corpus's statistics; a corpus stored without label counts
    # (an older one) is caught here, before training.
    corpus = _ner_corpus(130, 130)  # 130 span labels: 521 CRF tags with BIOES
    spec = _tiny_tagger_spec()
    with pytest.raises(BuildError, match="'ner' has 130 span labels make 521 CRF tags"):
        build_model(spec, corpus, tmp_path)
    without_crf = spec.model_copy(update={"model": spec.model.model_copy(update={"use_crf": False})})
    assert len(build_model(without_crf, corpus, tmp_path).label_names()) >= 130


def test_the_same_spec_builds_the_same_initial_weights_whatever_ran_before(tmp_path: Path) -> None:
    # Two runs of one spec (seed 42) reached dev F1 0.227 and 0.173 after an epoch: the model was
    # built before the trainer seeded, from whatever state the worker's last job left.
    import torch

    from worker.build import new_trainer

    corpus, spec = _ner_corpus(6, 2), _tiny_tagger_spec()
    first = new_trainer(spec, corpus, tmp_path).model.state_dict()
    torch.rand(1000)  # another job's training moved the generator on
    second = new_trainer(spec, corpus, tmp_path).model.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)


@pytest.mark.parametrize(
    "embedding",
    [
        {"type": "character", "char_embedding_dim": 7, "hidden_size_char": 9},
        {
            "type": "transformer",
            "layers": "-1,-2",
            "subtoken_pooling": "mean",
            "layer_mean": False,
            "fine_tune": False,
            "use_context": 5,
        },
        {"type": "transformer_document", "layers": "-2", "cls_pooling": "max", "fine_tune": False},
        {
            "type": "document_rnn",
            "embeddings": [{"type": "character", "hidden_size_char": 3}],
            "hidden_size": 5,
            "rnn_layers": 2,
            "rnn_type": "LSTM",
            "bidirectional": True,
            "reproject_words": False,
            "dropout": 0.25,
            "word_dropout": 0.125,
            "locked_dropout": 0.375,
        },
        {
            "type": "document_pool",
            "embeddings": [{"type": "character", "hidden_size_char": 3}],
            "pooling": "max",
            "fine_tune_mode": "nonlinear",
        },
    ],
)
def test_every_option_of_an_embedding_spec_reaches_the_embedding(embedding: dict, tmp_path: Path) -> None:
    # document_rnn's word_dropout and locked_dropout were accepted by the API and then failed
    # every such job in the worker; an option the build drops would be ignored silently.
    from worker.build import document_embedding, token_embedding

    token_level = embedding["type"] in s.TOKEN_EMBEDDING_TYPES
    task = "sequence_tagging" if token_level else "text_classification"
    given = {"task": task, "corpus": {"ids": ["c"]}, "embeddings": [embedding]}
    spec = s.TrainingSpec.model_validate(given).embeddings[0]
    build = token_embedding if token_level else document_embedding
    config = build(spec, tmp_path, []).to_config()
    # characters chooses where the dictionary comes from (the next test): config holds the dictionary
    for key, value in spec.model_dump(exclude={"type", "embeddings", "characters"}).items():
        assert config[key] == value, key


def _cyrillic_corpus() -> Corpus:
    train = []
    rows = [("Москва и Лондон", "B-LOC O B-LOC"), ("Ωμέγα ş x", "B-ORG O O")] * 2 + [("Жук", "O")]
    for text, tags in rows:
        sentence = Sentence(text.split())
        for i, tag in enumerate(tags.split()):
            if tag != "O":
                sentence.add_span(i, i + 1, "ner", tag[2:])
        train.append(sentence)
    dev = [Sentence(["Київ"]), Sentence(["Київ"])]
    for sentence in dev:
        sentence.add_span(0, 1, "ner", "LOC")
    return Corpus(train, dev, sample_missing_splits=False)


def _characters(model: object) -> set[str]:
    from engine.embeddings.character import CharacterEmbeddings

    found = [m for m in model.modules() if isinstance(m, CharacterEmbeddings)]  # type: ignore[attr-defined]
    assert len(found) == 1
    return set(found[0].char_dictionary.get_items())


def test_character_embeddings_get_the_characters_of_the_training_sentences(tmp_path: Path) -> None:
    # The default dictionary is ASCII and Latin-1: every Cyrillic or Greek letter was one <unk>.
    from engine.embeddings.character import default_characters

    corpus = _cyrillic_corpus()
    spec = _tiny_tagger_spec()
    chars = _characters(build_model(spec, corpus, tmp_path))
    assert set("МоскваЛондонΩμέγαş") | set(default_characters()) <= chars
    assert "Ж" not in chars  # seen once: it trains <unk>, which unseen characters get
    assert "К" not in chars  # dev is not trained on ...
    with_dev = spec.model_copy(update={"trainer": spec.trainer.model_copy(update={"train_with_dev": True})})
    assert "К" in _characters(build_model(with_dev, corpus, tmp_path))  # ... unless train_with_dev

    default = s.TrainingSpec.model_validate(
        {**spec.model_dump(), "embeddings": [{"type": "character", "characters": "default"}]}
    )
    assert _characters(build_model(default, corpus, tmp_path)) == {"<unk>", *default_characters()}

    # a classifier's character embeddings sit inside document embeddings
    classifier = s.TrainingSpec.model_validate(
        {
            "task": "text_classification",
            "corpus": {"ids": ["c"]},
            "label_type": "topic",
            "embeddings": [
                {"type": "document_pool", "embeddings": [{"type": "character", "hidden_size_char": 2}]}
            ],
        }
    )
    for sentence in corpus.train + corpus.dev:
        sentence.add_label("topic", "cities")
    assert "М" in _characters(build_model(classifier, corpus, tmp_path))


def test_a_spec_stored_before_the_characters_option_reads_as_corpus() -> None:
    stored = _tiny_tagger_spec().model_dump()
    del stored["embeddings"][0]["characters"]
    spec = s.stored_spec(s.TrainingSpec, stored)
    assert spec.embeddings[0].characters == "corpus"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("task", "embeddings"),
    [
        (
            "sequence_tagging",
            [
                {"type": "character", "char_embedding_dim": 4, "hidden_size_char": 4},
                {"type": "character", "char_embedding_dim": 6, "hidden_size_char": 2},
                {
                    "type": "character",
                    "char_embedding_dim": 4,
                    "hidden_size_char": 4,
                    "characters": "default",
                },
            ],
        ),
        (
            "text_classification",
            [
                {
                    "type": "document_pool",
                    "embeddings": [
                        {"type": "character", "char_embedding_dim": 4, "hidden_size_char": 4},
                        {"type": "character", "char_embedding_dim": 6, "hidden_size_char": 2},
                    ],
                }
            ],
        ),
    ],
)
def test_a_stack_of_two_embeddings_of_one_name_builds_saves_and_loads(
    task: str, embeddings: list[dict], tmp_path: Path
) -> None:
    # Two character embeddings (or two forward language models, or one transformer twice with
    # other options) are both named alike by the engine, which refused the stack with "pass a
    # distinct name= to one": the API accepted the spec, and every such job failed in the worker.
    import torch

    from engine.models.base import load_model

    corpus = _ner_corpus(6, 2)
    for sentence in corpus.train + corpus.dev:
        sentence.add_label("topic", "a" if len(sentence.tokens[0].text) % 2 else "b")
    spec = s.TrainingSpec.model_validate(
        {
            "task": task,
            "corpus": {"ids": ["c"]},
            "label_type": "ner" if task == "sequence_tagging" else "topic",
            "embeddings": embeddings,
            "model": {"hidden_size": 4} if task == "sequence_tagging" else {},
        }
    )
    model = build_model(spec, corpus, tmp_path / "resources")
    from engine.embeddings.character import CharacterEmbeddings

    names = [m.name for m in model.modules() if isinstance(m, CharacterEmbeddings)]
    assert names == ["char", "char:2", "char:3"][: len(names)] and len(names) >= 2
    model.eval()
    with torch.no_grad():
        before, _ = model.forward_loss(corpus.train)
    loaded = load_model(model.save(tmp_path / "model"))
    loaded.eval()
    with torch.no_grad():
        after, _ = loaded.forward_loss(corpus.train)
    assert [m.name for m in loaded.modules() if isinstance(m, CharacterEmbeddings)] == names
    assert torch.allclose(before, after)


def test_a_downsample_that_keeps_no_label_or_one_class_fails_naming_the_downsample(tmp_path: Path) -> None:
    # POST /jobs checks the whole training split; corpus.downsample 0.01 kept one sentence, and
    # the job failed with "ValueError: the tag dictionary for 'ner' is empty" (or the trainer's
    # two-class error for a classifier), neither saying that the downsample was the cause.
    unlabeled = [Sentence(["a", "b"]) for _ in range(30)]
    tagged = Sentence(["Anna", "sings"])
    tagged.add_span(0, 1, "ner", "PER")
    corpus = Corpus([*unlabeled, tagged], [tagged], sample_missing_splits=False).downsample(0.01)
    assert len(corpus.train) == 1 and tagged not in corpus.train
    spec = s.TrainingSpec.model_validate(
        {**_tiny_tagger_spec().model_dump(), "corpus": {"ids": ["c"], "downsample": 0.01}}
    )
    message = "corpus.downsample 0.01 keeps 1 training sentence(s), and none has a 'ner' label"
    with pytest.raises(BuildError, match=re.escape(message)):
        build_model(spec, corpus, tmp_path)

    texts = []
    for i in range(8):
        text = Sentence(["w", str(i)])
        text.add_label("class", "POSITIVE" if i % 2 else "NEGATIVE")
        texts.append(text)
    corpus = Corpus(texts, texts[:2], sample_missing_splits=False).downsample(0.1)
    classifier = {
        "task": "text_classification",
        "corpus": {"ids": ["c"], "downsample": 0.1},
        "label_type": "class",
        "embeddings": [
            {"type": "document_pool", "embeddings": [{"type": "character", "hidden_size_char": 2}]}
        ],
    }
    spec = s.TrainingSpec.model_validate(classifier)
    with pytest.raises(BuildError, match=r"keeps 1 training sentence\(s\), whose 'class' labels are all '"):
        build_model(spec, corpus, tmp_path)
    # a yes/no classifier learns from one class; and without a downsample nothing changes
    yes_no = s.TrainingSpec.model_validate({**classifier, "model": {"multi_label": True}})
    assert build_model(yes_no, corpus, tmp_path).label_names() == [corpus.train[0].labels["class"][0].value]
    whole = Corpus(texts, texts[:2], sample_missing_splits=False)
    spec = s.TrainingSpec.model_validate({**classifier, "corpus": {"ids": ["c"]}})
    assert sorted(build_model(spec, whole, tmp_path).label_names()) == ["NEGATIVE", "POSITIVE"]


def test_a_renamed_embedding_avoids_the_resource_folder_of_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A later embedding of a taken name became <name>:2, whose resource folder (<name>_2: ':' is
    # no folder character) an earlier embedding's name could hold, and distinct names can share a
    # folder from the start (transformer folders 'm' with layers '-1,-2' and 'm_-1' with layers
    # '-2': both 'transformer_m_-1_-2_first'). The engine refuses such a stack, so the job failed;
    # taken folders are now avoided too. Word embeddings of distinct vocabularies stand in for
    # transformers (a spec's word embedding is always GloVe).
    from engine.embeddings import embeddings_from_config
    from engine.embeddings.stacked import StackedEmbeddings
    from engine.embeddings.word import WordEmbeddings
    from tests.engine.test_embeddings_word import write_glove_text
    from worker import build

    vectors = str(write_glove_text(tmp_path / "v.txt"))
    made = iter([("word:a_2", 1), ("word:a", 2), ("word:a", 3)])

    def token_embedding(spec: object, folder: Path, train: object) -> WordEmbeddings:
        name, size = next(made)
        return WordEmbeddings(vectors, max_vocab=size, name=name)

    monkeypatch.setattr(build, "token_embedding", token_embedding)
    stack = build.stacked_token_embeddings([None, None, None], tmp_path, [])
    assert isinstance(stack, StackedEmbeddings)
    assert [e.name for e in stack.stack] == ["word:a_2", "word:a", "word:a:3"]
    stack.save_resources(tmp_path / "model")
    rebuilt = embeddings_from_config(stack.to_config(), tmp_path / "model")
    assert isinstance(rebuilt, StackedEmbeddings)
    vocabularies = [e.vocabulary for e in stack.stack]  # type: ignore[attr-defined]
    assert [e.vocabulary for e in rebuilt.stack] == vocabularies  # type: ignore[attr-defined]
    assert len({len(v) for v in vocabularies}) == 3
