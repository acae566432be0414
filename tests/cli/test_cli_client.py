"""The CLI's HTTP client and commands against a scripted API (httpx.MockTransport), and its
user-facing errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from service.cli import app, client, main
from service.cli.commands import SAMPLE_NER, demo_spec
from service.cli.errors import CliError
from service.schemas.spec import TrainingSpec


def _job(status: str, epoch: int, percent: float, **extra: Any) -> dict[str, Any]:
    return {
        "id": "j1",
        "status": status,
        "epoch": epoch,
        "max_epochs": 2,
        "percent": percent,
        "train_loss": 0.5,
        "learning_rate": 0.1,
        "model_id": None,
        "error": None,
        **extra,
    }


class ScriptedApi:
    """Answers GET /jobs/j1 from a list of job states, one per call, and records every request."""

    def __init__(self, states: list[dict[str, Any]]) -> None:
        self.states = states
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/jobs/j1":
            return httpx.Response(200, json=self.states.pop(0) if len(self.states) > 1 else self.states[0])
        if path == "/jobs/j1/metrics":
            rows = [
                {"epoch": 1, "train_loss": 0.9, "dev_loss": 0.8, "dev_main_score": 0.5, "is_best": True},
                {"epoch": 2, "train_loss": 0.4, "dev_loss": 0.3, "dev_main_score": 0.7, "is_best": True},
            ]
            return httpx.Response(200, json={"job_id": "j1", "epochs": rows, "batches": []})
        if path == "/models/m1/predict":
            return httpx.Response(200, json=_prediction())
        if path == "/models/m1/evaluate":
            return httpx.Response(200, json=_evaluation())
        if path == "/corpora":
            return httpx.Response(
                201, json={"id": "c1", "name": "x", "statistics": {"train": {"sentences": 3, "tokens": 9}}}
            )
        return httpx.Response(
            404,
            json={"type": "about:blank", "title": "Not found", "status": 404, "detail": f"{path} not found"},
            headers={"Content-Type": "application/problem+json"},
        )


def _prediction() -> dict[str, Any]:
    tokens = [
        {"text": "I", "start": 0, "end": 1, "tag": "O", "confidence": 0.99},
        {"text": "love", "start": 2, "end": 6, "tag": "O", "confidence": 0.98},
        {"text": "Berlin", "start": 7, "end": 13, "tag": "S-LOC", "confidence": 0.91},
    ]
    span = {
        "text": "Berlin",
        "start": 7,
        "end": 13,
        "start_token": 2,
        "end_token": 3,
        "label": "LOC",
        "confidence": 0.91,
    }
    return {
        "model_id": "m1",
        "task": "sequence_tagging",
        "label_type": "ner",
        "sentences": [
            {"index": 0, "text": "I love Berlin", "start": 0, "end": 13, "tokens": tokens, "spans": [span]}
        ],
    }


def _evaluation() -> dict[str, Any]:
    row = {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    return {
        "model_id": "m1",
        "corpus_id": "c1",
        "split": "dev",
        "label_type": "ner",
        "sentences": 3,
        "main_score_name": "micro_f1",
        "main_score": 0.75,
        "micro_precision": 1.0,
        "micro_recall": 0.6,
        "micro_f1": 0.75,
        "macro_f1": 0.8333,
        "accuracy": 0.6,
        "loss": 1.25,
        "per_class": {"LOC": {**row, "support": 1, "recall": 1.0, "f1": 1.0}, "PER": row},
        "seconds": 0.01,
    }


def test_evaluate_sends_the_split_and_prints_the_classes_most_frequent_first() -> None:
    scripted = ScriptedApi([_job("completed", 2, 100.0)])
    api = client.Api("http://api", transport=httpx.MockTransport(scripted))
    text = client.format_evaluation(client.evaluate(api, "m1", "c1", "dev", "ner"))
    assert json.loads(scripted.requests[-1].content) == {
        "corpus_id": "c1",
        "split": "dev",
        "label_type": "ner",
    }
    lines = text.splitlines()
    assert lines[0] == "dev of corpus c1 (3 sentences, 'ner' labels): micro_f1 0.7500"
    assert "macro F1 0.8333; accuracy 0.6000; loss 1.2500" in lines[1]
    assert lines[3].split() == ["PER", "1.0000", "0.5000", "0.6667", "2"]
    assert lines[4].split() == ["LOC", "1.0000", "1.0000", "1.0000", "1"]
    no_loss = client.format_evaluation({**client.evaluate(api, "m1", "c1", "dev", "ner"), "loss": None})
    assert "; loss -" in no_loss.splitlines()[1]


def test_evaluate_errors_name_the_command_line_options_not_body_fields() -> None:
    # The API's 'choose one with "split"' and "body.split" told a CLI user to write what no option is.
    message = 'corpus c1 has no test split; it has train (choose one with "split")'

    def refuse(request: httpx.Request) -> httpx.Response:
        error = {"loc": ["body", "split"], "field": "body.split", "message": message, "type": "invalid"}
        problem = {"title": "Invalid input", "status": 422, "detail": message, "errors": [error]}
        return httpx.Response(422, json=problem, headers={"Content-Type": "application/problem+json"})

    api = client.Api("http://api", transport=httpx.MockTransport(refuse))
    with pytest.raises(CliError) as error:
        client.evaluate(api, "m1", "c1")
    assert str(error.value).splitlines() == [
        "POST /models/m1/evaluate -> 422: Invalid input - "
        "corpus c1 has no test split; it has train (choose one with --split)",
        "  --split: corpus c1 has no test split; it has train (choose one with --split)",
    ]


def test_follow_job_reports_every_epoch_once_and_returns_the_final_job() -> None:
    scripted = ScriptedApi(
        [
            _job("queued", 0, 0.0),
            _job("running", 1, 50.0),
            _job("running", 1, 75.0),
            _job("completed", 2, 100.0, model_id="m1"),
        ]
    )
    api = client.Api("http://api", transport=httpx.MockTransport(scripted))
    printed: list[str] = []
    final = client.follow_job(api, "j1", poll_seconds=0.0, show=True, write=printed.append)
    assert final["status"] == "completed"
    assert printed == ["job j1 completed: model m1", "its training log, loss.tsv ...: tagsmith files j1"]
    assert sum(1 for r in scripted.requests if r.url.path == "/jobs/j1") == 4


def test_follow_job_epoch_lines(capsys: pytest.CaptureFixture[str]) -> None:
    scripted = ScriptedApi([_job("running", 2, 90.0), _job("failed", 2, 90.0, error="boom")])
    api = client.Api("http://api", transport=httpx.MockTransport(scripted))
    final = client.follow_job(api, "j1", poll_seconds=0.0, write=print)
    out = capsys.readouterr()
    assert final["status"] == "failed"
    text = out.out + out.err
    assert "epoch 1  train_loss 0.9  dev_loss 0.8  dev_main_score 0.5" in text
    assert text.count("epoch 2  train_loss 0.4") == 1
    assert "job j1 failed: boom" in text


def test_follow_job_asks_for_the_epoch_rows_only() -> None:
    # The batch losses are what grows with a run: fetching them at every epoch was quadratic.
    scripted = ScriptedApi([_job("running", 1, 50.0), _job("completed", 2, 100.0, model_id="m1")])
    api = client.Api("http://api", transport=httpx.MockTransport(scripted))
    client.follow_job(api, "j1", poll_seconds=0.0, write=lambda _line: None)
    asked = [r.url.params for r in scripted.requests if r.url.path == "/jobs/j1/metrics"]
    assert asked and all(params.get("batches") == "false" for params in asked)


def test_follow_job_says_once_what_the_run_trains_on(capsys: pytest.CaptureFixture[str]) -> None:
    sizes = {"train_sentences": 7, "dev_sentences": 1, "test_sentences": 0}
    scripted = ScriptedApi(
        [
            _job("queued", 0, 0.0),
            _job("running", 0, 10.0, **sizes),
            _job("running", 1, 50.0, **sizes),
            _job("completed", 2, 100.0, model_id="m1", **sizes),
        ]
    )
    api = client.Api("http://api", transport=httpx.MockTransport(scripted))
    client.follow_job(api, "j1", poll_seconds=0.0, write=print)
    out = capsys.readouterr()
    text = out.out + out.err
    assert text.count("training on 7 sentences; dev 1, test 0 (no test split: no test score)") == 1


def test_follow_job_says_once_per_outage_why_a_job_waits(capsys: pytest.CaptureFixture[str]) -> None:
    first = "storage unavailable; retry 1 of 10 at 2026-12-03 10:00:30 UTC: connection refused"
    second = "storage unavailable; retry 2 of 10 at 2026-12-03 10:01:30 UTC: connection refused"
    waiting = [
        _job("queued", 1, 50.0, error=e, retry_at="2026-12-03T10:00:30Z") for e in (first, first, second)
    ]
    scripted = ScriptedApi([*waiting, _job("running", 1, 60.0), _job("completed", 2, 100.0, model_id="m1")])
    api = client.Api("http://api", transport=httpx.MockTransport(scripted))
    final = client.follow_job(api, "j1", poll_seconds=0.0, write=print)
    out = capsys.readouterr()
    text = out.out + out.err
    assert final["status"] == "completed"
    assert text.count(f"job j1 waits: {first}") == 1 and text.count(f"job j1 waits: {second}") == 1


def test_predict_and_format_a_tagged_sentence() -> None:
    api = client.Api("http://api", api_key="tsk_x", transport=httpx.MockTransport(ScriptedApi([])))
    sentences = client.predict(api, "m1", ["I love Berlin"])
    assert client.format_sentence(sentences[0]).splitlines() == [
        "I love Berlin/S-LOC",
        "    LOC   'Berlin' (0.91)",
    ]


def test_format_a_classified_text() -> None:
    sentence = {"text": "Who wrote Hamlet ?", "tokens": [], "labels": [{"value": "HUM", "score": 0.875}]}
    assert client.format_sentence(sentence) == "Who wrote Hamlet ?\n    HUM (0.88)"
    # a score the model did not compute (NaN) is null in the answer: shown, not a TypeError
    sentence["labels"] = [{"value": "HUM", "score": None}]
    assert client.format_sentence(sentence) == "Who wrote Hamlet ?\n    HUM (-)"
    span = {"label": "LOC", "text": "Berlin", "confidence": None}
    assert client.format_sentence({"text": "Berlin", "tokens": [], "spans": [span]}).endswith("'Berlin' (-)")


def test_problem_details_become_one_readable_message() -> None:
    request = httpx.Request("POST", "http://api/jobs")
    response = httpx.Response(
        422,
        request=request,
        json={
            "title": "Invalid request",
            "detail": "spec is invalid",
            "errors": [{"loc": ["body", "trainer", "max_epochs"], "msg": "must be >= 1"}],
        },
    )
    message = client.problem_message(response)
    assert message.splitlines() == [
        "POST /jobs -> 422: Invalid request - spec is invalid",
        "  body.trainer.max_epochs: must be >= 1",
    ]


def test_unreachable_api_names_the_url_and_the_fix() -> None:
    with pytest.raises(CliError, match=r"cannot reach the API at http://127.0.0.1:9 .*scripts/run"):
        client.Api("http://127.0.0.1:9", timeout=2.0).call("GET", "/health")


def test_an_error_without_words_is_named_by_its_kind() -> None:
    # an exception is always true: "({exc or ...})" printed "()" for one without a message
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("")

    api = client.Api("http://api", transport=httpx.MockTransport(timeout))
    with pytest.raises(CliError, match=r"cannot reach the API at http://api \(ReadTimeout\)"):
        api.call("GET", "/health")


def test_the_default_url_follows_a_running_up_started_here_with_its_data_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `./scripts/run --data-dir /tmp/x --port 8081`, then `tagsmith upload` here went to :8000.
    from service.settings import reset_settings

    here, elsewhere = tmp_path / "repo", tmp_path / "x"
    (here / ".tagsmith").mkdir(parents=True)
    elsewhere.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.delenv("TAGSMITH_DATA_DIR", raising=False)
    reset_settings()
    try:
        assert client.discover_url() == client.DEFAULT_URL
        state = {"url": "http://127.0.0.1:8081", "pid": os.getpid()}
        (elsewhere / "up.json").write_text(json.dumps(state), encoding="utf-8")
        pointer = here / ".tagsmith" / "up-pointer.json"
        pointer.write_text(json.dumps({"data_dir": str(elsewhere), "pid": os.getpid()}), encoding="utf-8")
        assert client.discover_url() == "http://127.0.0.1:8081"
        # a stack on this folder's own data folder comes first
        (here / ".tagsmith" / "up.json").write_text(json.dumps({"url": "http://127.0.0.1:8000"}), "utf-8")
        assert client.discover_url() == "http://127.0.0.1:8000"
        (here / ".tagsmith" / "up.json").unlink()
        # a pointer left by a killed `up`, or to a folder another `up` has taken since, leads nowhere
        (elsewhere / "up.json").write_text(json.dumps({**state, "pid": 2**22 + 1}), encoding="utf-8")
        pointer.write_text(json.dumps({"data_dir": str(elsewhere), "pid": 2**22 + 1}), encoding="utf-8")
        assert client.discover_url() == client.DEFAULT_URL
        (elsewhere / "up.json").write_text(json.dumps(state), encoding="utf-8")
        assert client.discover_url() == client.DEFAULT_URL
        pointer.write_text("{not json", encoding="utf-8")
        assert client.discover_url() == client.DEFAULT_URL
    finally:
        reset_settings()


def test_predict_json_prints_the_whole_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    # --json printed only the sentences; the README promises the raw answer (model_id, task ...).
    api = client.Api("http://api", transport=httpx.MockTransport(ScriptedApi([])))
    monkeypatch.setattr("service.cli.commands._api", lambda ctx: api)
    result = CliRunner().invoke(app, ["predict", "m1", "I love Berlin", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == _prediction()
    result = CliRunner().invoke(app, ["predict", "m1", "I love Berlin"])
    assert result.output.splitlines() == ["I love Berlin/S-LOC", "    LOC   'Berlin' (0.91)"]


def test_predict_passes_the_tokenizer_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    scripted = ScriptedApi([])
    api = client.Api("http://api", transport=httpx.MockTransport(scripted))
    monkeypatch.setattr("service.cli.commands._api", lambda ctx: api)
    for args, body in (
        ([], {"texts": ["@anna in Berlin"]}),
        (["--tokenizer", "whitespace"], {"texts": ["@anna in Berlin"], "tokenizer": "whitespace"}),
    ):
        result = CliRunner().invoke(app, ["predict", "m1", "@anna in Berlin", *args])
        assert result.exit_code == 0, result.output
        assert json.loads(scripted.requests[-1].content) == body


def test_parse_columns() -> None:
    assert client.parse_columns("0:text, 1:pos,3:ner") == {"0": "text", "1": "pos", "3": "ner"}
    with pytest.raises(CliError, match="INDEX:NAME"):
        client.parse_columns("text,ner")


def test_load_spec_replaces_the_corpus_and_names_bad_json(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text('{"task": "sequence_tagging", "corpus": {"ids": ["old"]}}', encoding="utf-8")
    assert client.load_spec(spec_file, ["new"])["corpus"]["ids"] == ["new"]
    spec_file.write_text('{"task": \n nope}', encoding="utf-8")
    with pytest.raises(CliError, match=r"spec.json: line 2: not valid JSON"):
        client.load_spec(spec_file, [])
    with pytest.raises(CliError, match="spec file not found"):
        client.load_spec(tmp_path / "missing.json", [])


@pytest.mark.parametrize("spec", ['{"task": "sequence_tagging"}', '{"corpus": {"ids": []}}'])
def test_a_spec_without_a_corpus_asks_for_corpus_on_the_command_line(tmp_path: Path, spec: str) -> None:
    # The API's "body.corpus: Field required" said nothing of --corpus.
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec, encoding="utf-8")
    with pytest.raises(
        CliError, match=r"spec.json: the spec names no corpus to train on: give one with --corpus ID"
    ):
        client.load_spec(spec_file, [])
    assert client.load_spec(spec_file, ["c1"])["corpus"]["ids"] == ["c1"]


def test_demo_spec_is_a_valid_training_spec_and_the_sample_corpus_ships() -> None:
    TrainingSpec.model_validate(demo_spec("c1", 10))
    for split, path in SAMPLE_NER.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        sentences = sum(1 for line in lines if not line.strip()) + 1
        assert sentences >= 30, split
        assert all(len(line.split()) == 2 for line in lines if line.strip()), split
    train = SAMPLE_NER["train"].read_text(encoding="utf-8")
    assert {"B-PER", "B-LOC", "B-ORG", "B-MISC"} <= set(train.split())


def test_main_prints_a_user_error_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--url", "http://127.0.0.1:9", "predict", "m1", "I love Berlin"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the API") and "Traceback" not in err


def test_upload_sends_the_column_map_as_reader_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted = ScriptedApi([])
    original = client.Api.call

    def call(self: client.Api, method: str, path: str, **kwargs: Any) -> Any:
        self.transport = httpx.MockTransport(scripted)
        return original(self, method, path, **kwargs)

    monkeypatch.setattr(client.Api, "call", call)
    train = tmp_path / "train.txt"
    train.write_text("Berlin B-LOC\n", encoding="utf-8")
    result = CliRunner().invoke(
        app, ["--url", "http://api", "upload", str(train), "--columns", "0:text,1:ner"]
    )
    assert result.exit_code == 0, result.output
    assert "corpus c1" in result.output and "train  3 sentences, 9 tokens" in result.output
    body = scripted.requests[0].content.decode("utf-8")
    assert 'name="options"' in body and json.dumps({"column_map": {"0": "text", "1": "ner"}}) in body
    assert 'name="format"' in body and 'filename="train.txt"' in body


def test_follow_job_without_a_terminal_prints_a_line_per_state_and_epoch(
    capsys: pytest.CaptureFixture[str],
) -> None:
    scripted = ScriptedApi(
        [
            _job("queued", 0, 0.0),
            _job("running", 1, 10.0),
            _job("running", 1, 20.0),  # within PLAIN_PROGRESS_SECONDS of the line before
            _job("running", 2, 60.0),
            _job("completed", 2, 100.0, model_id="m1"),
        ]
    )
    api = client.Api("http://api", transport=httpx.MockTransport(scripted))
    client.follow_job(api, "j1", poll_seconds=0.0, write=print)
    err = capsys.readouterr().err  # not a terminal
    assert "\r" not in err
    assert err.splitlines() == [
        "queued, 0/2 epochs done  0%  loss 0.5  lr 0.1",
        "running epoch 2/2  10%  loss 0.5  lr 0.1",  # epoch 1 done: the second is in progress
        "running, 2/2 epochs done  60%  loss 0.5  lr 0.1",  # the final evaluation
        "completed, 2/2 epochs done  100%  loss 0.5  lr 0.1",
    ]


def test_list_items_follows_next_and_lists_each_item_once() -> None:
    stored = [{"id": f"j{n}", "name": f"job {n}"} for n in range(5, 0, -1)]  # newest first
    requests: list[dict[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        # a cursor names the last item of the page before (the server's is opaque)
        assert request.url.path == "/jobs"
        query = dict(request.url.params)
        requests.append(query)
        if len(requests) == 2 and stored[0]["id"] != "j6":  # a job created between the first two pages
            stored.insert(0, {"id": "j6", "name": "job 6"})
        ids = [item["id"] for item in stored]
        start = ids.index(query["cursor"]) + 1 if "cursor" in query else 0
        limit = int(query["limit"])
        page = stored[start : start + limit]
        more = start + limit < len(stored)
        status = f"status={query['status']}&" if "status" in query else ""
        link = f"/prefix/jobs?{status}limit={limit}&cursor={page[-1]['id']}" if more else None
        return httpx.Response(200, json={"items": page, "next": link})

    api = client.Api("http://api", transport=httpx.MockTransport(answer))
    items = client.list_items(api, "jobs", page_size=2, params={"status": "queued"})
    # by offset, j3 came a second time on the second page, pushed down by j6
    assert [item["id"] for item in items] == ["j5", "j4", "j3", "j2", "j1"]
    assert requests == [
        {"status": "queued", "limit": "2"},
        {"status": "queued", "limit": "2", "cursor": "j4"},
        {"status": "queued", "limit": "2", "cursor": "j2"},
    ]
    requests.clear()
    assert [item["id"] for item in client.list_items(api, "jobs", limit=3, page_size=2)] == ["j6", "j5", "j4"]
    assert requests == [{"limit": "2"}, {"limit": "1", "cursor": "j5"}]


def test_list_items_refuses_a_server_without_next_links() -> None:
    # Stopping at the first page would list its items as if they were all.
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"items": [{"id": "m2"}, {"id": "m1"}]})

    api = client.Api("http://api", transport=httpx.MockTransport(answer))
    with pytest.raises(CliError, match="answers no `next` page link"):
        client.list_items(api, "models", page_size=2)
    assert [item["id"] for item in client.list_items(api, "models", page_size=3)] == ["m2", "m1"]


class PipedLog:
    """stdout and stderr sent to one pipe: stdout reaches it only when flushed (block-buffered),
    stderr at once, as with ``tagsmith watch JOB 2>&1 | tee log``."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.pending: list[str] = []
        log = self

        class Out:
            def write(self, text: str) -> int:
                log.pending.append(text)
                return len(text)

            def flush(self) -> None:
                log.log.append("".join(log.pending))
                log.pending.clear()

            def isatty(self) -> bool:
                return False

        class Err(Out):
            def write(self, text: str) -> int:
                log.log.append(text)
                return len(text)

        self.out, self.err = Out(), Err()

    def text(self) -> str:
        return "".join(self.log) + "".join(self.pending)


def test_piped_watch_prints_an_epochs_line_before_the_next_epochs_progress(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A piped `tagsmith watch` showed "running epoch 2/2" before epoch 1's losses.
    scripted = ScriptedApi([_job("running", 0, 10.0), _job("running", 1, 50.0), _job("completed", 2, 100.0)])
    api = client.Api("http://api", transport=httpx.MockTransport(scripted))
    piped = PipedLog()
    monkeypatch.setattr("sys.stdout", piped.out)
    monkeypatch.setattr("sys.stderr", piped.err)
    client.follow_job(api, "j1", poll_seconds=0.0, write=print)
    text = piped.text()
    assert (
        text.index("running epoch 1/2")
        < text.index("epoch 1  train_loss 0.9")
        < text.index("running epoch 2/2")
    )
