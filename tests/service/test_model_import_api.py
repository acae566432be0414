"""POST /models: a model folder saved by the engine (or downloaded from a server) is served here."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from engine.data import Dictionary, Sentence
from engine.models import load_model
from service.db.models import Model
from service.db.session import session_scope
from tests.service.fixtures import ApiSession, Owner, stored_files

pytestmark = pytest.mark.postgres

TEXT = "George Washington went to Washington . He liked Berlin ."


def _save_tagger(folder: Path) -> Path:
    import torch

    from engine.embeddings.character import CharacterEmbeddings
    from engine.models.sequence_tagger import SequenceTagger

    torch.manual_seed(3)
    dictionary = Dictionary()
    for label in ("NOUN", "VERB", "PROPN", "PUNCT"):
        dictionary.add_item(label)
    tagger = SequenceTagger(
        CharacterEmbeddings(char_embedding_dim=4, hidden_size_char=4),
        dictionary,
        "upos",
        hidden_size=8,
        label_kind="token",
    )
    return tagger.save(folder)


def _save_classifier(folder: Path) -> Path:
    import torch

    from engine.embeddings.character import CharacterEmbeddings
    from engine.embeddings.document import DocumentPoolEmbeddings
    from engine.models.text_classifier import TextClassifier

    torch.manual_seed(4)
    dictionary = Dictionary()
    for label in ("question", "statement"):
        dictionary.add_item(label)
    model = TextClassifier(
        DocumentPoolEmbeddings(CharacterEmbeddings(char_embedding_dim=4, hidden_size_char=4)),
        dictionary,
        "kind",
    )
    return model.save(folder)


def _tar(folder: Path, arcname: str = "model") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return buffer.getvalue()


def _tar_with(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, content in members:
            info.size = len(content) if content is not None else 0
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return buffer.getvalue()


def _post(api: ApiSession, owner: Owner, archive: bytes, filename: str = "model.tar.gz", **form: str) -> Any:
    files = {"file": (filename, archive, "application/gzip")}
    return api.client.post("/models", files=files, data=form, headers=owner.headers)


def _model_rows() -> int:
    with session_scope() as session:
        return session.query(Model).count()


def _engine_tags(folder: Path) -> list[str]:
    sentence = Sentence(TEXT)
    load_model(folder).predict(sentence)
    return [token.get_label("upos").value for token in sentence.tokens]


def test_a_saved_tagger_is_imported_and_predicts_like_the_engine(api: ApiSession, tmp_path: Path) -> None:
    owner = api.new_owner()
    folder = _save_tagger(tmp_path / "best-model")
    r = _post(api, owner, _tar(folder), filename="my-tagger.tar.gz")
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"/models/{body['id']}"
    assert (body["name"], body["task"], body["label_type"]) == ("my-tagger", "sequence_tagging", "upos")
    assert body["labels"] == load_model(folder).label_names()
    assert body["job_id"] is None and body["spec"] is None and body["test_metrics"] is None
    assert body["size_bytes"] == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    predicted = api.client.post(
        f"/models/{body['id']}/predict", json={"sentences": [TEXT.split()]}, headers=owner.headers
    )
    assert predicted.status_code == 200, predicted.text
    assert [t["tag"] for t in predicted.json()["sentences"][0]["tokens"]] == _engine_tags(folder)


def test_a_name_taken_from_the_archive_name_leaves_control_characters_out(
    api: ApiSession, tmp_path: Path
) -> None:
    # Without a `name` the model is named after the archive, whose name the client sends as it
    # likes: a NUL in it answered 500 on PostgreSQL (text refuses it) and, on SQLite, a terminal
    # escape or a right-to-left override reached the listings the typed name is kept from.
    owner = api.new_owner()
    archive = _tar(_save_tagger(tmp_path / "best-model"))
    boundary = "tagsmith-test-boundary"
    headers = {**owner.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    for filename, name in [
        (b"ner\x00final.tar.gz", "nerfinal"),
        (b"\x1b[2Jner.tgz", "[2Jner"),
        ("ner-\u202ezg.rat.tar.gz".encode(), "ner-zg.rat"),
        (b"\x07.tar.gz", "model"),
    ]:
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="'.encode()
            + filename
            + b'"\r\nContent-Type: application/gzip\r\n\r\n'
            + archive
            + f"\r\n--{boundary}--\r\n".encode()
        )
        r = api.client.post("/models", content=body, headers=headers)
        assert r.status_code == 201, r.text
        assert r.json()["name"] == name
    names = [m["name"] for m in api.client.get("/models", headers=owner.headers).json()["items"]]
    assert sorted(names) == sorted(["nerfinal", "[2Jner", "ner-zg.rat", "model"])


def test_a_classifier_with_its_files_at_the_archive_top_and_a_given_name(
    api: ApiSession, tmp_path: Path
) -> None:
    owner = api.new_owner()
    folder = _save_classifier(tmp_path / "classifier")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=f"./{path.relative_to(folder).as_posix()}", recursive=False)
    r = _post(api, owner, buffer.getvalue(), name="questions")
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["name"], body["task"], body["label_type"]) == ("questions", "text_classification", "kind")
    assert sorted(body["labels"]) == ["question", "statement"]
    predicted = api.client.post(
        f"/models/{body['id']}/predict", json={"texts": ["Is it raining ?"]}, headers=owner.headers
    )
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["sentences"][0]["labels"][0]["value"] in ("question", "statement")


def test_an_archive_of_the_folder_contents_with_its_dot_entry_imports(
    api: ApiSession, tmp_path: Path
) -> None:
    # `tar czf flat.tar.gz -C mymodel .`: the first member is "./", the archive's root itself.
    folder = _save_tagger(tmp_path / "mymodel")
    archive = tmp_path / "flat.tar.gz"
    subprocess.run(["tar", "czf", str(archive), "-C", str(folder), "."], check=True)
    with tarfile.open(archive) as tar:
        assert tar.getnames()[0] == "."
    r = _post(api, api.new_owner(), archive.read_bytes(), filename="flat.tar.gz")
    assert r.status_code == 201, r.text
    assert (r.json()["name"], r.json()["label_type"]) == ("flat", "upos")


def test_a_macos_tar_with_attribute_companions_imports(api: ApiSession, tmp_path: Path) -> None:
    folder = _save_tagger(tmp_path / "best-model")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in ("._best-model", ".DS_Store"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"\0\0\0\0"))
        tar.add(folder, arcname="best-model")
    r = _post(api, api.new_owner(), buffer.getvalue(), filename="best-model.tar.gz")
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "best-model"


def test_a_download_imports_on_another_account_unchanged(api: ApiSession, tmp_path: Path) -> None:
    alice, bob = api.new_owner("alice"), api.new_owner("bob")
    first = _post(api, alice, _tar(_save_tagger(tmp_path / "m"))).json()
    download = api.client.get(f"/models/{first['id']}/download", headers=alice.headers)
    assert download.status_code == 200
    second = _post(api, bob, download.content, filename="copy.tar.gz")
    assert second.status_code == 201, second.text
    assert api.client.get(f"/models/{second.json()['id']}", headers=alice.headers).status_code == 404
    request = {"sentences": [TEXT.split()], "return_probabilities_for_all_classes": True}
    answers = [
        api.client.post(f"/models/{m['id']}/predict", json=request, headers=who.headers).json()["sentences"]
        for m, who in ((first, alice), (second.json(), bob))
    ]
    assert answers[0] == answers[1]


def test_a_language_model_is_imported_for_flair_embeddings(api: ApiSession, tmp_path: Path) -> None:
    import torch

    from engine.language_model import LanguageModel

    torch.manual_seed(0)
    folder = tmp_path / "lm"
    LanguageModel(list("abc d"), is_forward=False, hidden_size=8, embedding_size=4).save(folder)
    owner = api.new_owner()
    r = _post(api, owner, _tar(folder), filename="backward-lm.tgz")
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["name"], body["task"], body["label_type"], body["labels"]) == (
        "backward-lm",
        "language_model",
        "backward",
        [],
    )


def _file(name: str, content: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), content


def _folder(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info, None


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _edited(folder: Path, edit: str) -> bytes:
    if edit == "weights truncated":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-50])
    elif edit == "unknown class":
        config = json.loads((folder / "config.json").read_text())
        config["model_class"] = "os.system"
        (folder / "config.json").write_text(json.dumps(config))
    elif edit.startswith("hidden size "):
        # building the model the config describes would take the memory before any check
        config = json.loads((folder / "config.json").read_text())
        config["hyperparameters"]["hidden_size"] = int(edit.split()[-1])
        (folder / "config.json").write_text(json.dumps(config))
    elif edit == "transformer left out":
        config = json.loads((folder / "config.json").read_text())
        config["embeddings"] = {"type": "transformer_word", "name": "bert", "model": "minilm"}
        (folder / "config.json").write_text(json.dumps(config))
    elif edit == "config not json":
        (folder / "config.json").write_text("{not json")
    return _tar(folder)


@pytest.mark.parametrize(
    ("make", "field", "message"),
    [
        (lambda tmp: b"this is not an archive", None, "is not a tar archive"),
        (lambda tmp: _tar(_save_tagger(tmp / "m"))[:-200], None, "is truncated or corrupt"),
        (lambda tmp: _tar_with([_file("../evil.txt")]), "../evil.txt", "a path outside the archive"),
        (lambda tmp: _tar_with([_file("/tmp/evil.txt")]), "/tmp/evil.txt", "a path outside the archive"),
        # a folder entry for the archive's root is skipped, but not one above it
        (lambda tmp: _tar_with([_folder("./"), _folder("..")]), "..", "a path outside the archive"),
        (
            lambda tmp: _tar_with([_link("model/config.json", "/etc/passwd", tarfile.SYMTYPE)]),
            "model/config.json",
            "links",
        ),
        (lambda tmp: _tar_with([_file("a"), _link("b", "a", tarfile.LNKTYPE)]), "b", "links"),
        (lambda tmp: _tar_with([_file("model/readme.txt")]), None, "no config.json"),
        (lambda tmp: _tar_with([_file("a"), _file("a")]), "a", "appears twice"),
        # a file where an earlier file made a folder: was a 500 (IsADirectoryError)
        (lambda tmp: _tar_with([_file("a/b"), _file("a")]), "a", "appears twice or inside a file"),
        # names the file system refuses: were 500s (OSError)
        (lambda tmp: _tar_with([_file("x" * 300)]), "x" * 300, "cannot be unpacked (File name too long)"),
        (
            lambda tmp: _tar_with([_file("/".join(["d" * 200] * 25) + "/f")]),
            "/".join(["d" * 200] * 25) + "/f",
            "cannot be unpacked (File name too long)",
        ),
        (
            lambda tmp: _edited(_save_tagger(tmp / "m"), "weights truncated"),
            "model/model.safetensors",
            "model.safetensors",
        ),
        (
            lambda tmp: _edited(_save_tagger(tmp / "m"), "unknown class"),
            "model/config.json",
            "unknown model_class",
        ),
        (lambda tmp: _edited(_save_tagger(tmp / "m"), "config not json"), "model/config.json", "config.json"),
        (
            lambda tmp: _edited(_save_tagger(tmp / "m"), "transformer left out"),
            "model/config.json",
            "missing model/embeddings/",
        ),
        (
            lambda tmp: _edited(_save_tagger(tmp / "m"), "hidden size 8000"),
            "model/model.safetensors",
            "the model needs (32000,",
        ),
        (
            lambda tmp: _edited(_save_tagger(tmp / "m"), "hidden size 1000000000000"),
            "model/config.json",
            "describes a model that cannot be built",
        ),
    ],
    ids=[
        "not-tar",
        "truncated",
        "dot-dot",
        "absolute",
        "dot-dot-folder",
        "symlink",
        "hardlink",
        "no-config",
        "twice",
        "file-over-folder",
        "name-too-long",
        "path-too-long",
        "bad-weights",
        "unknown-class",
        "bad-config",
        "transformer-not-in-archive",
        "config-bigger-than-its-weights",
        "config-beyond-memory",
    ],
)
def test_a_bad_archive_is_422_naming_the_member_and_stores_nothing(
    api: ApiSession, tmp_path: Path, make: Any, field: str | None, message: str
) -> None:
    owner = api.new_owner()
    r = _post(api, owner, make(tmp_path))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    error = r.json()["errors"][0]
    assert error["field"] == "body.file" and message in error["message"], error
    if field is not None:
        assert error["member"] == field and field in r.json()["detail"]
    assert "tagsmith-import-" not in r.text  # the server's temporary paths stay private
    assert stored_files() == [] and _model_rows() == 0
    assert not (tmp_path.parent / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_size_limits_are_413_and_422(
    api: ApiSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.settings import reset_settings

    owner = api.new_owner()
    monkeypatch.setenv("TAGSMITH_MAX_MODEL_UPLOAD_MB", "0.05")
    reset_settings()
    r = _post(api, owner, b"\0" * 60_000)
    assert r.status_code == 413 and "TAGSMITH_MAX_MODEL_UPLOAD_MB" in r.json()["detail"]
    # 1 MB of zeros compresses to about 1 kB but unpacks past 4 x 0.05 MB.
    bomb = _tar_with([_file("model/config.json", b"{}"), _file("model/zeros", b"\0" * 1_000_000)])
    assert len(bomb) < 50_000
    r = _post(api, owner, bomb)
    assert r.status_code == 422 and "unpacks to more than" in r.json()["detail"]
    assert stored_files() == [] and _model_rows() == 0


def test_unknown_or_repeated_fields_are_422(api: ApiSession, tmp_path: Path) -> None:
    owner = api.new_owner()
    archive = _tar(_save_tagger(tmp_path / "m"))
    r = api.client.post(
        "/models", files={"file": ("m.tar.gz", archive)}, data={"title": "x"}, headers=owner.headers
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.title"
    r = api.client.post(
        "/models",
        files=[("file", ("a.tar.gz", archive)), ("file", ("b.tar.gz", archive))],
        headers=owner.headers,
    )
    assert r.status_code == 422 and "given 2 times" in r.json()["errors"][0]["message"]
    assert api.client.post("/models", files={"file": ("m.tar.gz", archive)}).status_code == 401
    assert _model_rows() == 0


def test_the_cli_imports_a_folder_or_an_archive(api: ApiSession, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from service.cli import app, client, commands

    owner = api.new_owner()
    folder = _save_tagger(tmp_path / "best-model")
    (tmp_path / "tagger.tar.gz").write_bytes(_tar(folder))
    runner = CliRunner()
    # the CLI's HTTP client, wired to this test's app instead of a server
    wired = client.Api("http://testserver", owner.key, transport=api.client._transport)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(commands, "_api", lambda ctx: wired)
        printed = [
            runner.invoke(app, ["import-model", *args])
            for args in ([str(folder)], [str(tmp_path / "tagger.tar.gz"), "--name", "pos"], [str(tmp_path)])
        ]
    assert printed[0].exit_code == 0, printed[0].output
    assert (
        printed[0].output.startswith("model ") and "best-model: sequence_tagging, upos [" in printed[0].output
    )
    assert printed[1].exit_code == 0 and "pos: sequence_tagging, upos" in printed[1].output
    assert "neither a model folder" in str(printed[2].exception)  # main() prints it, exit code 1
    names = sorted(m["name"] for m in api.client.get("/models", headers=owner.headers).json()["items"])
    assert names == ["best-model", "pos"]
