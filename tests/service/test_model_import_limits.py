"""POST /models with hostile archives (from a security audit): each is refused with a 422 that
says what is wrong and where, stores nothing, names no server path, and costs the API little
memory (the archives here would take 0.5-1 GB if they were unpacked or built):

- a language model whose config asks for a hidden size its weights do not have;
- a transformer whose config makes buffers the weights do not hold (GPT-2's causal mask);
- a flair embedding naming a folder on the server (another owner's language model) to load;
- a small archive that unpacks to much more (a gzip of zeros), a word list past its size limit;
- more labels, or CRF tags, than ``engine.limits`` allows."""

from __future__ import annotations

import io
import json
import struct
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.data import Dictionary
from engine.limits import MAX_LABELS, MAX_RESOURCE_FILE_BYTES
from engine.serialization import MODEL_FILE_FORMAT
from tests.engine.test_untrusted_models import (
    SMALL_MB,
    edit_json,
    flair_tagger,
    gpt2_tagger,
    hostile_language_model,
    peak_growth_mb,
)
from tests.service.fixtures import ApiSession, Owner, stored_files
from tests.service.test_model_import_api import _model_rows, _post, _tar

pytestmark = pytest.mark.postgres


class _Stream(io.RawIOBase):
    """``head`` then ``size - len(head)`` bytes of ``filler`` (repeated), never all in memory."""

    def __init__(self, head: bytes, size: int, filler: bytes = b"\0") -> None:
        self.head, self.size, self.filler, self.position = head, size, filler, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.position if n < 0 else min(n, self.size - self.position)
        head = self.head[self.position : self.position + n]
        rest = n - len(head)
        start = max(self.position - len(self.head), 0) % len(self.filler)
        filler = (self.filler * (rest // len(self.filler) + 2))[start : start + rest]
        self.position += n
        return head + filler


def _archive(members: dict[str, bytes | _Stream]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(f"model/{name}")
            if isinstance(content, _Stream):
                info.size = content.size
                tar.addfile(info, content)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _zero_weights(state_dict: dict[str, torch.Tensor]) -> _Stream:
    """A valid safetensors file of zeros for the shapes and dtypes of a (meta) state dict."""
    names = {torch.float16: "F16", torch.float32: "F32"}
    header: dict[str, Any] = {"__metadata__": {"format": MODEL_FILE_FORMAT}}
    offset = 0
    for name, tensor in state_dict.items():
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": names[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    head = struct.pack("<Q", len(raw)) + raw
    return _Stream(head, len(head) + offset)


def _refusal(r: Any, member: str | None, *parts: str) -> str:
    assert r.status_code == 422, r.text
    error = r.json()["errors"][0]
    assert error["field"] == "body.file", error
    for part in parts:
        assert part in error["message"], error["message"]
    if member is not None:
        assert error["member"] == member, error
    assert "tagsmith-import-" not in r.text and "/tmp/" not in r.text, r.text  # no server path
    assert stored_files() == [] and _model_rows() == 0
    return str(error["message"])


def _post_measured(api: ApiSession, owner: Owner, archive: bytes) -> tuple[Any, float]:
    answer: list[Any] = []
    grown = peak_growth_mb(lambda: answer.append(_post(api, owner, archive)))
    return answer[0], grown


# 1. language models -------------------------------------------------------------------------------
def test_a_language_model_bigger_than_its_weights_is_refused_before_it_is_built(
    api: ApiSession, tmp_path: Path
) -> None:
    archive = _tar(hostile_language_model(tmp_path / "lm", hidden_size=8192))
    assert len(archive) < 2000  # the audit's: 270 bytes made the API take 1 GB
    r, grown = _post_measured(api, api.new_owner(), archive)
    _refusal(r, "model/model.safetensors", "the model needs (32768, 2)")
    assert grown < SMALL_MB, f"{grown:.0f} MB"


def test_a_taggers_inline_language_model_bigger_than_its_weights_is_refused(
    api: ApiSession, tmp_path: Path
) -> None:
    r, grown = _post_measured(api, api.new_owner(), _tar(flair_tagger(tmp_path / "t", lm_hidden=8192)))
    _refusal(r, "model/model.safetensors", "language_model.rnn.weight_ih_l0", "(32768, 2)")
    assert grown < SMALL_MB, f"{grown:.0f} MB"


# 2. transformer buffers ---------------------------------------------------------------------------
def test_transformer_buffers_the_weights_do_not_hold_are_refused(api: ApiSession, tmp_path: Path) -> None:
    archive = _tar(gpt2_tagger(tmp_path / "t", tmp_path, n_positions=16_000))
    r, grown = _post_measured(api, api.new_owner(), archive)
    _refusal(
        r, "model/config.json", "489 MB of tensors", "attn.bias' (1, 1, 16000, 16000) 244 MB", "n_positions"
    )
    assert grown < SMALL_MB, f"{grown:.0f} MB"
    r = _post(api, api.new_owner(), _tar(gpt2_tagger(tmp_path / "fine", tmp_path / "w")))
    assert r.status_code == 201, r.text


# 3. flair embeddings never name a folder -----------------------------------------------------------
def test_a_flair_embedding_naming_a_stored_language_model_folder_is_refused(
    api: ApiSession, tmp_path: Path
) -> None:
    from engine.language_model import LanguageModel
    from service.settings import get_settings

    alice, mallory = api.new_owner("alice"), api.new_owner("mallory")
    LanguageModel(list("ab"), hidden_size=24, embedding_size=2).save(tmp_path / "alices-lm")
    assert _post(api, alice, _tar(tmp_path / "alices-lm")).status_code == 201
    stored = [p.parent for p in get_settings().storage_root.rglob("config.json")]
    assert len(stored) == 1  # alice's language model, in the server's storage

    answers = []
    for target in (stored[0], tmp_path / "no-such-model"):
        folder = flair_tagger(tmp_path / f"t-{target.name}")

        def point_at(config: dict[str, Any], target: Path = target) -> None:
            config["embeddings"]["model"] = str(target)
            del config["embeddings"]["language_model"]

        edit_json(folder / "config.json", point_at)
        r = _post(api, mallory, _tar(folder))
        assert r.status_code == 422, r.text
        message = r.json()["errors"][0]["message"]
        assert "must hold the 'language_model'" in message and "never loaded as a folder" in message, message
        assert "24" not in message and str(target) not in r.text  # nothing about alice's model
        answers.append(message)
    assert answers[0] == answers[1]  # an existing folder and a missing one look the same
    assert len(stored_files()) == 2  # alice's model only


# 4. archives that unpack to much more than was sent -------------------------------------------------
def test_a_small_archive_unpacking_to_a_large_model_is_refused_while_unpacking(
    api: ApiSession, tmp_path: Path
) -> None:
    from engine.embeddings.word import WordEmbeddings
    from engine.models.sequence_tagger import SequenceTagger

    # The audit's: 977 kB of gzip, a word-embedding model of 500,000 x 1,000 zeros (1 GB). Here
    # 48 MB of zeros in 50 kB; a legitimate model's float weights compress about 1.1 times.
    labels = Dictionary()
    labels.add_item("A")
    words = [f"w{i}" for i in range(1000)]
    with torch.device("meta"):
        embeddings = WordEmbeddings(vocabulary=words, dim=24_000, name="words")
        tagger = SequenceTagger(
            embeddings,
            labels,
            "upos",
            hidden_size=2,
            use_rnn=False,
            use_crf=False,
            reproject_embeddings=False,
        )
        weights = _zero_weights(tagger.state_dict())
    assert weights.size > 48_000_000
    archive = _archive(
        {
            "config.json": json.dumps(tagger.config()).encode(),
            "embeddings/words/vocab.json": json.dumps(words).encode(),
            "model.safetensors": weights,
        }
    )
    assert len(archive) < 100_000
    r, grown = _post_measured(api, api.new_owner(), archive)
    message = _refusal(r, None, "unpacks to more than", f"32 x the archive's {len(archive)} bytes + 16 MB")
    assert "model.safetensors" not in message
    assert grown < SMALL_MB, f"{grown:.0f} MB"


def test_a_model_of_real_weights_larger_than_the_allowance_imports(api: ApiSession, tmp_path: Path) -> None:
    from engine.embeddings.word import WordEmbeddings
    from engine.models.sequence_tagger import SequenceTagger

    labels = Dictionary()
    labels.add_item("A")
    torch.manual_seed(0)
    embeddings = WordEmbeddings(vocabulary=[f"w{i}" for i in range(50_000)], dim=200, name="words")
    embeddings.vectors.normal_()
    tagger = SequenceTagger(
        embeddings, labels, "upos", hidden_size=2, use_rnn=False, reproject_embeddings=False
    )
    folder = tagger.save(tmp_path / "m")
    assert (folder / "model.safetensors").stat().st_size > 18 * 1024 * 1024  # past the 16 MB allowance
    r = _post(api, api.new_owner(), _tar(folder))
    assert r.status_code == 201, r.text


def test_a_word_list_past_the_resource_limit_is_refused_naming_it(api: ApiSession) -> None:
    vocab = _Stream(b'["a"', MAX_RESOURCE_FILE_BYTES + 1, b',"a"')
    archive = _archive({"config.json": b"{}", "embeddings/words/vocab.json": vocab})
    r, grown = _post_measured(api, api.new_owner(), archive)
    _refusal(r, "model/embeddings/words/vocab.json", "model/embeddings/words/vocab.json: more than 32 MB")
    assert grown < SMALL_MB, f"{grown:.0f} MB"


# 5. labels and CRF tags ---------------------------------------------------------------------------
def _labels(count: int) -> Dictionary:
    dictionary = Dictionary()
    for i in range(count):
        dictionary.add_item(f"L{i}")
    return dictionary


def test_more_labels_or_crf_tags_than_the_limits_are_refused(api: ApiSession, tmp_path: Path) -> None:
    from engine.embeddings.character import CharacterEmbeddings
    from engine.embeddings.document import DocumentPoolEmbeddings
    from engine.models.sequence_tagger import SequenceTagger
    from engine.models.text_classifier import TextClassifier

    owner = api.new_owner()
    characters = CharacterEmbeddings(char_embedding_dim=2, hidden_size_char=2)
    # the audit's: 300 span types, a CRF of 1,201 tags: 28 s and 1.5 GB to predict 64 sentences
    SequenceTagger(characters, _labels(300), "ner", hidden_size=2, use_rnn=False).save(tmp_path / "crf")
    r = _post(api, owner, _tar(tmp_path / "crf"))
    _refusal(
        r, "model/config.json", "label_dictionary: 300 span labels make a CRF of 1201 tags", "at most 512"
    )

    classifier = TextClassifier(DocumentPoolEmbeddings(characters), _labels(MAX_LABELS + 1), "kind")
    r = _post(api, owner, _tar(classifier.save(tmp_path / "classifier")))
    _refusal(
        r, "model/config.json", "label_dictionary has 1001 labels; an imported model may have at most 1000"
    )

    SequenceTagger(characters, _labels(127), "ner", hidden_size=2, use_rnn=False).save(tmp_path / "fits")
    r = _post(api, owner, _tar(tmp_path / "fits"))
    assert r.status_code == 201 and len(r.json()["labels"]) == 127, r.text
