from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from service.db.models import Corpus
from service.db.session import session_scope
from tests.service.fixtures import (
    ADMIN_KEY,
    CONLL_OPTIONS,
    CONLL_TRAIN,
    FASTTEXT_TRAIN,
    ApiSession,
    follow_pages,
    stored_files,
)

pytestmark = pytest.mark.postgres


def _corpus_rows() -> int:
    with session_scope() as session:
        return session.query(Corpus).count()


def test_upload_answers_201_with_statistics_and_stores_files(api: ApiSession) -> None:
    owner = api.new_owner()
    r = api.upload(owner, test=CONLL_TRAIN)
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"].endswith(f"/corpora/{body['id']}")
    assert body["task"] == "sequence_tagging"
    assert body["label_types"] == {"pos": "token", "ner": "span"}
    assert body["has_documents"] is True
    assert body["splits"] == ["train", "test"]
    stats = body["statistics"]
    assert stats["test"]["sentences"] == 4
    assert stats["train"]["sentences"] + stats["dev"]["sentences"] == 4
    assert stats["test"]["tokens"] == 18
    assert stats["test"]["labels"]["ner"] == {"ORG": 2, "LOC": 2, "MISC": 1, "PER": 1}
    assert stored_files() == [f"corpora/{body['id']}/test.txt", f"corpora/{body['id']}/train.txt"]

    listed = api.client.get("/corpora", headers=owner.headers).json()["items"]
    assert [c["id"] for c in listed] == [body["id"]]
    assert api.client.get(f"/corpora/{body['id']}", headers=owner.headers).json()["statistics"] == stats


def test_statistics_list_the_most_common_label_values_and_count_them_all(api: ApiSession) -> None:
    # EWT's 14,194 lemmas made its upload answer 245 kB and GET /corpora 323 kB for five corpora.
    owner = api.new_owner()
    train = "".join(f"w{i} L{i}\n" + "x common\n" * (i % 3 == 0) + "\n" for i in range(150))
    r = api.upload(owner, train=train, dev="w0 L0\n\n", options={"column_map": {"0": "text", "1": "lemma"}})
    assert r.status_code == 201, r.text
    stats = r.json()["statistics"]
    assert stats["train"]["label_classes"] == {"lemma": 151}
    shown = stats["train"]["labels"]["lemma"]
    assert len(shown) == 100 and list(shown)[0] == "common" and shown["common"] == 50
    assert stats["dev"]["labels"] == {"lemma": {"L0": 1}} and stats["dev"]["label_classes"] == {"lemma": 1}
    listed = api.client.get("/corpora", headers=owner.headers).json()["items"]
    assert listed[0]["statistics"] == stats


def test_classification_upload(api: ApiSession) -> None:
    owner = api.new_owner()
    r = api.upload(owner, train=FASTTEXT_TRAIN, format="fasttext")
    assert r.status_code == 201, r.text
    assert r.json()["task"] == "text_classification"
    assert r.json()["label_types"] == {"class": "sentence"}


def test_malformed_file_names_file_line_and_reason_and_stores_nothing(api: ApiSession) -> None:
    owner = api.new_owner()
    bad_dev = "EU NNP B-NP B-ORG\nrejects VBZ\n"
    r = api.upload(owner, dev=bad_dev)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["status"] == 422
    error = problem["errors"][0]
    assert error["file"] == "dev.txt"
    assert error["split"] == "dev"
    assert error["line"] == 2
    assert error["reason"]
    assert "dev.txt" in problem["detail"] and "line 2" in problem["detail"]
    assert stored_files() == []
    assert _corpus_rows() == 0


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"format": "nope"}, "format"),
        ({"format": "column", "options": "{not json"}, "options"),
        ({"format": "column", "options": '{"unknown_option": 1}'}, "options"),
    ],
)
def test_bad_format_and_options_are_422(api: ApiSession, data: dict[str, str], field: str) -> None:
    owner = api.new_owner()
    r = api.client.post(
        "/corpora", data=data, files={"train": ("t.txt", CONLL_TRAIN.encode())}, headers=owner.headers
    )
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == f"body.{field}"
    assert stored_files() == []


CONLLU_ROW = "\t".join(["{}", "w", "w", "X", "_", "_", "0", "root", "_", "_"]) + "\n"


@pytest.mark.parametrize(
    ("format", "train", "line", "reason"),
    [
        ("jsonl", '{"text": "a", "label": {"x": 1}}\n', 1, "is not a string, number or boolean"),
        ("jsonl", '{"text": "a", "label": ' + "[" * 100_000 + "]" * 100_000 + "}\n", 1, "nested too deeply"),
        ("conllu", CONLLU_ROW.format(1) + CONLLU_ROW.format("\u00b2"), 2, "invalid word id"),
        ("conllu", CONLLU_ROW.format("1-\u00b2") + CONLLU_ROW.format(1), 1, "multi-word token range"),
        # a column file sent as trec made every first word a class
        ("trec", "EU B-ORG\nrejects O\n", 1, "label 'EU' has no ':'"),
    ],
)
def test_files_the_parser_refuses_are_422_with_the_line(
    api: ApiSession, format: str, train: str, line: int, reason: str
) -> None:
    owner = api.new_owner()
    r = api.upload(owner, train=train, format=format)
    assert r.status_code == 422, r.text
    error = r.json()["errors"][0]
    assert (error["field"], error["file"], error["line"]) == ("body.train", "train.txt", line)
    assert reason in error["reason"]
    assert stored_files() == []
    assert _corpus_rows() == 0


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (
            {"format": "column", "options": '{"column_map": {"0": "text", "1": "ner"}, "span_columns": [5]}'},
            "options",
            "span column names must be strings",
        ),
        (
            {"format": "column", "options": '{"span_columns": {"ner": "NOPE"}}'},
            "options",
            "unknown tag scheme 'NOPE'",
        ),
        ({"format": "conllu", "options": '{"fields": [["upos"]]}'}, "options", "unknown CoNLL-U field"),
        ({"format": "column", "options": '{"x": ' + "9" * 5000 + "}"}, "options", "too many digits"),
        ({"format": "column", "options": "[" * 100_000 + "]" * 100_000}, "options", "nested too deeply"),
        (
            {"format": "column", "column_map": "[" * 100_000 + "]" * 100_000},
            "column_map",
            "nested too deeply",
        ),
        ({"format": "csv", "text_column": "\u00b2"}, "train", "no text column '\u00b2'"),
    ],
)
def test_ill_typed_options_are_422(api: ApiSession, data: dict[str, str], field: str, message: str) -> None:
    owner = api.new_owner()
    r = api.client.post(
        "/corpora", data=data, files={"train": ("t.txt", b"text,label\nhi,pos\n")}, headers=owner.headers
    )
    assert r.status_code == 422, r.text
    error = r.json()["errors"][0]
    assert error["field"] == f"body.{field}"
    assert message in error["message"]
    assert stored_files() == []
    assert _corpus_rows() == 0


@pytest.mark.parametrize(
    ("files", "data", "field", "message"),
    [
        (
            [("train", ("a.txt", FASTTEXT_TRAIN.encode())), ("train", ("b.txt", FASTTEXT_TRAIN.encode()))],
            {"format": "fasttext"},
            "body.train",
            "given 2 times",
        ),
        (
            [
                ("train", ("a.txt", FASTTEXT_TRAIN.encode())),
                ("validation", ("v.txt", FASTTEXT_TRAIN.encode())),
            ],
            {"format": "fasttext"},
            "body.validation",
            "unknown field",
        ),
        (
            [("train", ("a.txt", FASTTEXT_TRAIN.encode()))],
            {"format": ["column", "fasttext"]},
            "body.format",
            "given 2 times",
        ),
    ],
)
def test_repeated_or_unknown_form_fields_are_422(
    api: ApiSession,
    files: list[tuple[str, tuple[str, bytes]]],
    data: dict[str, Any],
    field: str,
    message: str,
) -> None:
    # FastAPI kept the last of repeated fields and ignored unknown ones: a second train file or a
    # "validation" split vanished and the upload still answered 201.
    owner = api.new_owner()
    r = api.client.post("/corpora", data=data, files=files, headers=owner.headers)
    assert r.status_code == 422, r.text
    error = r.json()["errors"][0]
    assert error["field"] == field and message in error["message"]
    assert stored_files() == []
    assert _corpus_rows() == 0


@pytest.mark.parametrize(
    ("format", "options", "form", "message", "fields"),
    [
        ("fasttext", {"label_type": ""}, {}, "label_type must be a name", ["options"]),
        ("fasttext", {"label_prefix": ""}, {}, "null means the first field is the label", ["options"]),
        ("column", {"document_separator": ""}, {}, "document_separator must not be empty", ["options"]),
        (
            "csv",
            None,
            {"text_column": "label", "label_column": "label"},
            "are both 'label'",
            ["text_column", "label_column"],
        ),
        (
            "csv",
            {"label_column": "label"},
            {"text_column": "1"},
            "are both column 1",
            ["text_column", "options"],
        ),
    ],
)
def test_empty_reader_names_and_text_as_its_own_label_are_422(
    api: ApiSession,
    format: str,
    options: dict[str, Any] | None,
    form: dict[str, str],
    message: str,
    fields: list[str],
) -> None:
    # Each was stored: a label type named "", documents started by any indented line, a csv
    # whose text was also its label.
    owner = api.new_owner()
    train = {"csv": "text,label\nI love it,pos\n", "column": CONLL_TRAIN}.get(format, FASTTEXT_TRAIN)
    data = {"format": format, **form}
    if options is not None:
        data["options"] = json.dumps(options)
    r = api.client.post(
        "/corpora", data=data, files={"train": ("t.txt", train.encode())}, headers=owner.headers
    )
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    # Each error names the request field the option came from: the shortcut field or the JSON.
    assert [e["field"] for e in errors] == [f"body.{f}" for f in fields]
    assert all(message in e["message"] for e in errors)
    assert stored_files() == []
    assert _corpus_rows() == 0


@pytest.mark.parametrize(
    ("format", "data", "fields"),
    [
        ("column", {"column_map": '{"a": "text"}'}, ["column_map"]),
        ("column", {"column_map": '{"0": "tag"}'}, ["column_map"]),
        ("column", {"text_column": "0"}, ["text_column"]),
        ("column", {"text_column": "0", "options": '{"bogus": 1}'}, ["text_column", "options"]),
        ("column", {"options": '{"column_map": {"a": "text"}}'}, ["options"]),
        ("text", {"column_map": '{"0": "text"}'}, ["column_map"]),
    ],
)
def test_an_option_error_names_the_form_field_it_came_from(
    api: ApiSession, format: str, data: dict[str, str], fields: list[str]
) -> None:
    owner = api.new_owner()
    r = api.client.post(
        "/corpora",
        data={"format": format, **data},
        files={"train": ("t.txt", CONLL_TRAIN.encode())},
        headers=owner.headers,
    )
    assert r.status_code == 422, r.text
    assert sorted(e["field"] for e in r.json()["errors"]) == sorted(f"body.{f}" for f in fields)
    assert stored_files() == []


def test_a_null_label_prefix_keeps_its_documented_meaning(api: ApiSession) -> None:
    owner = api.new_owner()
    r = api.upload(
        owner,
        train="DESC:manner How ?\nNUM:date When ?\n",
        format="fasttext",
        options={"label_prefix": None, "label_separator": ":"},
    )
    assert r.status_code == 201, r.text
    assert set(r.json()["statistics"]["train"]["labels"]["class"]) <= {"DESC", "NUM"}


def test_missing_train_file_is_422(api: ApiSession) -> None:
    owner = api.new_owner()
    r = api.client.post("/corpora", data={"format": "column"}, headers=owner.headers)
    assert r.status_code == 422
    assert any(e["field"] == "body.train" for e in r.json()["errors"])


@pytest.mark.parametrize("split", ["train", "dev"])
def test_a_file_sent_as_a_text_field_is_422_saying_so(api: ApiSession, split: str) -> None:
    # curl -F train=path/to/file (no @) sends the path as text: the answer was FastAPI's
    # "Expected UploadFile, received: <class 'str'>".
    owner = api.new_owner()
    data = {"format": "column", "options": json.dumps(CONLL_OPTIONS), split: "samples/ner-dev.conll"}
    files = {} if split == "train" else {"train": ("train.conll", CONLL_TRAIN.encode())}
    r = api.client.post("/corpora", data=data, files=files, headers=owner.headers)
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [
        {
            "loc": ["body", split],
            "field": f"body.{split}",
            "message": f"must be a file, not text (curl: -F {split}=@PATH, with the @)",
            "type": "value_error",
        }
    ]
    assert _corpus_rows() == 0


def test_not_utf8_and_empty_files(api: ApiSession) -> None:
    owner = api.new_owner()
    r = api.client.post(
        "/corpora",
        data={"format": "fasttext"},
        files={"train": ("x.txt", b"__label__a ok\n__label__b \xff\xfe bad\n")},
        headers=owner.headers,
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["line"] == 2
    r = api.upload(owner, train="   \n")
    assert r.status_code == 422
    assert stored_files() == []


def test_compressed_and_utf16_files_are_named_for_what_they_are(api: ApiSession) -> None:
    import gzip

    owner = api.new_owner()
    text = "__label__a ok\n__label__b fine\n"
    for data, words in (
        (gzip.compress(text.encode()), "a gzip file: upload the uncompressed text"),
        (text.encode("utf-16-le"), "text in UTF-16 or another encoding with NUL bytes"),
        (text.encode("utf-16"), "text in UTF-16 (it starts with a UTF-16 byte-order mark)"),
    ):
        r = api.client.post(
            "/corpora", data={"format": "fasttext"}, files={"train": ("x.txt", data)}, headers=owner.headers
        )
        assert r.status_code == 422 and words in r.json()["detail"], r.text
    assert stored_files() == [] and _corpus_rows() == 0


def test_a_lone_surrogate_escape_is_422_and_leaves_the_owners_corpora_readable(api: ApiSession) -> None:
    # JSON lets \ud800 through: the corpus was stored, its 201 failed with a 500, and from then on
    # every GET /corpora of its owner answered 500
    owner = api.new_owner()
    jsonl = '{"text": "good one", "label": "a"}\n{"text": "bad x", "label": "a\\ud800"}\n'
    r = api.upload(owner, train=jsonl, format="jsonl")
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["line"] == 2 and "lone surrogate" in r.json()["detail"]
    r = api.upload(owner, train=FASTTEXT_TRAIN, format="fasttext", options={"label_type": "x\ud800"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.options", r.text
    assert stored_files() == [] and _corpus_rows() == 0
    assert api.client.get("/corpora", headers=owner.headers).status_code == 200


def test_names_with_control_characters_are_422(api: ApiSession) -> None:
    # PostgreSQL refuses a NUL in text: the upload answered 500
    owner = api.new_owner()
    r = api.upload(owner, name="bad\x00name")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.name", r.text
    assert "control characters" in r.json()["detail"]
    r = api.client.post("/keys", json={"name": "a\x07b"}, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.name", r.text
    assert stored_files() == [] and _corpus_rows() == 0


def test_a_name_taken_from_the_file_name_leaves_control_characters_out(api: ApiSession) -> None:
    # Without a `name` a corpus is named after its train file, whose name the client sends as it
    # likes: a NUL in it answered 500 on PostgreSQL (text refuses it) and, on SQLite, a terminal
    # escape or a right-to-left override reached the listings the typed name is kept from.
    owner = api.new_owner()
    boundary = "tagsmith-test-boundary"

    def upload(filename: bytes) -> Any:
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="format"\r\n\r\ncolumn\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="options"\r\n\r\n'
            f"{json.dumps(CONLL_OPTIONS)}\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="train"; filename="'
        ).encode()
        body += filename + b'"\r\n\r\n' + CONLL_TRAIN.encode() + f"\r\n--{boundary}--\r\n".encode()
        headers = {**owner.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
        return api.client.post("/corpora", content=body, headers=headers)

    for filename, name in [
        (b"news\x00wire.txt", "newswire"),
        (b"\x1b[31mred.conll", "[31mred"),
        ("train-\u202eslmx.txt".encode(), "train-slmx"),
        (b"\x07.txt", "corpus"),
        (b"C:\\data\\wnut/../train.v2.conll", "train.v2"),  # its folders left out, as a model's
    ]:
        r = upload(filename)
        assert r.status_code == 201, r.text
        assert r.json()["name"] == name
    names = [c["name"] for c in api.client.get("/corpora", headers=owner.headers).json()["items"]]
    assert sorted(names) == sorted(["newswire", "[31mred", "train-slmx", "corpus", "train.v2"])


def test_oversized_upload_is_413(api: ApiSession, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.settings import reset_settings

    owner = api.new_owner()
    monkeypatch.setenv("TAGSMITH_MAX_UPLOAD_MB", "0.01")
    reset_settings()
    r = api.upload(owner, train=CONLL_TRAIN * 100)
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "MB" in r.json()["detail"]
    assert stored_files() == []
    assert _corpus_rows() == 0

    # Without a Content-Length (curl -H "Transfer-Encoding: chunked") the count while it streams
    # decides: the same 413, not the multipart parser's 400 "error parsing the body".
    boundary = "tagsmith-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="format"\r\n\r\ncolumn\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="train"; filename="train.txt"\r\n\r\n'
    ).encode()

    def chunks() -> Iterator[bytes]:
        yield head
        for _ in range(100):
            yield CONLL_TRAIN.encode()
        yield f"\r\n--{boundary}--\r\n".encode()

    r = api.client.post(
        "/corpora",
        content=chunks(),
        headers={**owner.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 413, r.text
    assert "TAGSMITH_MAX_UPLOAD_MB" in r.json()["detail"]
    assert stored_files() == []
    assert _corpus_rows() == 0


def test_delete_corpus_and_conflict_while_a_job_uses_it(api: ApiSession) -> None:
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    job = api.client.post(
        "/jobs", json={"corpus": {"ids": [corpus_id]}, "label_type": "ner"}, headers=owner.headers
    )
    assert job.status_code == 202, job.text
    r = api.client.delete(f"/corpora/{corpus_id}", headers=owner.headers)
    assert r.status_code == 409
    assert job.json()["id"] in r.json()["detail"]
    assert api.client.post(f"/jobs/{job.json()['id']}/cancel", headers=owner.headers).status_code == 200
    assert api.client.delete(f"/corpora/{corpus_id}", headers=owner.headers).status_code == 204
    assert api.client.get(f"/corpora/{corpus_id}", headers=owner.headers).status_code == 404
    assert stored_files() == []


def test_following_next_lists_each_corpus_once_while_corpora_come_and_go(api: ApiSession) -> None:
    owner = api.new_owner()
    ids = [api.corpus(owner, name=f"c{i}") for i in range(5)]

    def meanwhile(page: int) -> None:
        api.corpus(owner, name=f"new{page}")
        if page == 1:  # one already listed goes: by offset, the page after would skip one
            assert api.client.delete(f"/corpora/{ids[-1]}", headers=owner.headers).status_code == 204

    walked = follow_pages(api.client, "/corpora?limit=2", owner.headers, between=meanwhile)
    assert [item["id"] for item in walked] == ids[::-1]
    first = api.client.get("/corpora?limit=2", headers=owner.headers).json()
    assert first["next"].startswith("/corpora?limit=2&cursor=")


def test_unknown_corpus_is_404_problem(api: ApiSession) -> None:
    owner = api.new_owner()
    r = api.client.get("/corpora/does-not-exist", headers=owner.headers)
    assert r.status_code == 404
    assert r.json()["title"] == "Not found"
    assert api.client.delete("/corpora/does-not-exist", headers=owner.headers).status_code == 404


def test_column_shortcut_fields(api: ApiSession) -> None:
    owner = api.new_owner()
    r = api.client.post(
        "/corpora",
        data={"format": "column", "column_map": '{"0": "text", "3": "ner"}'},
        files={"train": ("t.txt", CONLL_TRAIN.encode())},
        headers=owner.headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["label_types"] == {"ner": "span"}
    assert r.json()["options"] == {"column_map": {"0": "text", "3": "ner"}}
    csv = "label,text\npos,I love it\nneg,awful\npos,great\n"
    r = api.client.post(
        "/corpora",
        data={"format": "csv", "text_column": "1", "label_column": "label"},
        files={"train": ("t.csv", csv.encode())},
        headers=owner.headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["statistics"]["train"]["labels"]["class"]["pos"] >= 1
    r = api.client.post(
        "/corpora",
        data={"format": "column", "column_map": "[1, 2]"},
        files={"train": ("t.txt", CONLL_TRAIN.encode())},
        headers=owner.headers,
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.column_map"


@pytest.mark.parametrize("path", ["/corpora", "/models"])
@pytest.mark.parametrize("content_type", ["application/json", None])
def test_json_sent_to_a_form_endpoint_is_422_saying_to_send_a_form(
    api: ApiSession, path: str, content_type: str | None
) -> None:
    # curl --json '{"format": "conll", ...}' answered only "body.format: Field required" and
    # "body.train: Field required", as if the fields had not been sent at all.
    owner = api.new_owner()
    headers = {**owner.headers, **({"Content-Type": content_type} if content_type else {})}
    r = api.client.post(path, content=json.dumps({"format": "column", "name": "x"}), headers=headers)
    assert r.status_code == 422, r.text
    first = r.json()["errors"][0]
    expected = "-F format=... -F train=@PATH" if path == "/corpora" else "-F file=@PATH"
    sent = content_type or "no Content-Type"
    assert first["field"] == "body" and first["type"] == "multipart_expected"
    assert first["message"] == f"send the fields as a multipart form (curl {expected}), not as {sent}"
    assert "; first: body: send the fields as a multipart form" in r.json()["detail"]
    assert _corpus_rows() == 0
