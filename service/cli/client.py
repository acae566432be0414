"""The HTTP client behind the CLI's client commands: calls, problem messages, job following and
the text rendering of predictions. It speaks only the public REST API (openapi/openapi.json)."""

from __future__ import annotations

import json
import re
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from service.cli.errors import CliError
from service.cli.supervisor import running_url

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = frozenset({"completed", "failed", "cancelled"})
# Without a terminal on stderr (a log file, CI) progress is a plain line per epoch or state,
# plus one at most this often within a long epoch.
PLAIN_PROGRESS_SECONDS = 10.0


def discover_url() -> str:
    """The URL of the running ``tagsmith up`` of this folder: the one on its data folder
    (.tagsmith/ or TAGSMITH_DATA_DIR), or one started here with a --data-dir elsewhere; else the
    default address."""
    from service.settings import get_settings

    return running_url(get_settings().resolved_data_dir) or DEFAULT_URL


def path(*segments: str) -> str:
    """An API path from ids and names that may hold any character: each is one path segment,
    so ``../../corpora`` as a file name cannot climb to another endpoint."""
    quoted = [quote(str(segment), safe="") for segment in segments]
    # "." and ".." are not escaped by quote(), and URL normalization would resolve them.
    return "/" + "/".join(q.replace(".", "%2E") if q in (".", "..") else q for q in quoted)


@dataclass
class Api:
    url: str
    api_key: str | None = None
    timeout: float = 120.0
    transport: httpx.BaseTransport | None = None  # tests plug in an httpx.MockTransport

    def call(self, method: str, path: str, *, options: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
        """The JSON answer (None when empty); raises CliError with the problem's message, in
        which ``options`` name request fields as the command line does (see ``problem_message``)."""
        response = self.request(method, path, options=options, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            # e.g. a proxy's or another server's HTML page at that address
            raise CliError(
                f"{method} {response.request.url} answered {response.status_code} but not JSON; "
                "is TAGSMITH_URL the Tagsmith API?"
            ) from None

    def request(
        self, method: str, path: str, *, options: Mapping[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        self._check_url()
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            with httpx.Client(
                base_url=self.url.rstrip("/"), headers=headers, timeout=self.timeout, transport=self.transport
            ) as client:
                response = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(
                f"cannot reach the API at {self.url} ({str(exc) or type(exc).__name__}); "
                "start it with ./scripts/run, or point --url / TAGSMITH_URL at it"
            ) from exc
        if response.status_code >= 400:
            raise CliError(problem_message(response, options))
        return response

    def _check_url(self) -> None:
        # httpx would call "localhost:8000" an unsupported protocol 'localhost://'
        try:
            scheme = httpx.URL(self.url).scheme
        except httpx.InvalidURL:
            scheme = ""
        if scheme not in ("http", "https"):
            raise CliError(
                f"--url / TAGSMITH_URL {self.url!r} is not an API URL: it needs http:// or https://, "
                "e.g. http://127.0.0.1:8000"
            )


def problem_message(response: httpx.Response, options: Mapping[str, str] | None = None) -> str:
    """One readable message from an ``application/problem+json`` answer (or any error body).

    ``options`` maps a body field the command filled from its command line to what the user
    typed for it (``{"split": "--split"}``): the API's words name its fields (``body.split``,
    ``choose one with "split"``), which a CLI user does not write. Fields of a spec file keep
    their names."""
    if options:
        return _named_as_options(problem_message(response), options)
    head = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    try:
        problem = response.json()
    except ValueError:
        return f"{head}: {response.text[:500]}"
    if not isinstance(problem, dict):
        return f"{head}: {problem}"
    fields = []
    for error in problem.get("errors") or []:
        if not isinstance(error, dict):
            fields.append((str(error), ""))
            continue
        where = error.get("loc") or error.get("field") or error.get("pointer") or ""
        if isinstance(where, list):
            where = ".".join(str(part) for part in where)
        fields.append((str(where), str(error.get("msg") or error.get("message") or error)))
    detail = str(problem.get("detail") or "")
    if fields:
        # A 422's detail ends with "; first: <field>: <message>", which the field list repeats.
        counted, sep, first = detail.partition("; first: ")
        if sep and first.endswith(fields[0][1]):
            detail = counted
    summary = " - ".join(str(part) for part in (problem.get("title"), detail) if part)
    lines = [f"{head}: {summary}"]
    lines += [f"  {where}: {message}" if message else f"  {where}" for where, message in fields]
    return "\n".join(lines)


def _named_as_options(message: str, options: Mapping[str, str]) -> str:
    for name, option in options.items():
        # the location of a field error ("  body.split: ...") and a field the text quotes ("split")
        message = re.sub(rf"(?m)^  body\.{re.escape(name)}(?=[.:]|$)", f"  {option}", message)
        message = message.replace(f'"{name}"', option)
    return message


def parse_columns(columns: str) -> dict[str, str]:
    """``0:text,1:ner`` -> ``{"0": "text", "1": "ner"}`` (the column map of column files)."""
    mapping: dict[str, str] = {}
    for part in columns.split(","):
        index, sep, name = part.partition(":")
        if not sep or not index.strip().isdigit() or not name.strip():
            raise CliError(f"--columns: expected INDEX:NAME pairs such as 0:text,1:ner, got {part!r}")
        mapping[index.strip()] = name.strip()
    return mapping


def upload_corpus(
    api: Api, files: dict[str, Path | None], name: str, fmt: str, fields: dict[str, str]
) -> dict[str, Any]:
    """POST /corpora with the split files (train, dev, test) and the form fields."""
    parts: list[tuple[str, tuple[str, bytes]]] = []
    for split, path in files.items():
        if path is None:
            continue
        if path.is_dir():
            raise CliError(f"{split} file {path} is a directory; give the corpus file itself")
        if not path.is_file():
            raise CliError(f"{split} file not found: {path}")
        parts.append((split, (path.name, path.read_bytes())))
    return dict(api.call("POST", "/corpora", data={"name": name, "format": fmt, **fields}, files=parts))


def import_model(api: Api, path: Path, name: str | None) -> dict[str, Any]:
    """POST /models with a model folder (archived here first) or an archive of one."""
    data = {"name": name} if name else {}
    if not path.exists():
        raise CliError(f"{path} does not exist")
    if path.is_file():
        with path.open("rb") as archive:
            return dict(api.call("POST", "/models", data=data, files={"file": (path.name, archive)}))
    if not (path / "config.json").is_file():
        raise CliError(f"{path} is neither a model folder (with config.json) nor an archive of one")
    with tempfile.TemporaryFile(suffix=".tar.gz") as archive:
        # Weights barely compress: the fastest level loses almost nothing.
        with tarfile.open(fileobj=archive, mode="w:gz", compresslevel=1) as tar:
            tar.add(path, arcname="model")
        archive.seek(0)
        return dict(
            api.call(
                "POST", "/models", data={"name": path.name, **data}, files={"file": ("model.tar.gz", archive)}
            )
        )


def model_summary(model: dict[str, Any]) -> str:
    labels = model.get("labels") or []
    shown = ", ".join(labels[:8]) + (f", ... ({len(labels)} in all)" if len(labels) > 8 else "")
    return f"model {model['id']}  {model['name']}: {model['task']}, {model['label_type']}" + (
        f" [{shown}]" if labels else ""
    )


def corpus_summary(corpus: dict[str, Any]) -> str:
    lines = [f"corpus {corpus['id']}  {corpus.get('name', '')}"]
    statistics = corpus.get("statistics")
    if isinstance(statistics, dict):
        for split, values in statistics.items():
            if isinstance(values, dict) and "sentences" in values:
                lines.append(f"  {split:<6} {values['sentences']} sentences, {values.get('tokens')} tokens")
    if corpus.get("label_types"):
        lines.append(f"  label types: {json.dumps(corpus['label_types'], ensure_ascii=False)}")
    return "\n".join(lines)


# The most items GET /jobs, /models and /corpora answer at once (their `limit`).
PAGE_SIZE = 1000


def list_items(
    api: Api,
    resource: str,
    limit: int | None = None,
    page_size: int | None = None,
    params: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """GET /{resource} newest first, page after page (each answer's ``next``) until the last page
    or ``limit`` items (None: all). ``next`` names the last item seen, not a count, so an item
    created or deleted meanwhile neither repeats nor hides another."""
    page_size = page_size or PAGE_SIZE
    items: list[dict[str, Any]] = []
    query = dict(params or {})
    while limit is None or len(items) < limit:
        query["limit"] = str(page_size if limit is None else min(page_size, limit - len(items)))
        answer = api.call("GET", path(resource), params=query) or {}
        page = list(answer.get("items") or [])
        items.extend(page)
        if "next" not in answer and len(page) == int(query["limit"]):
            # stopping here would list the first page as if it were all
            raise CliError(f"GET /{resource} at {api.url} answers no `next` page link: update the server")
        if not answer.get("next"):
            break
        # Its query only (cursor, limit, filters), on our path: a proxy that strips a path prefix
        # the API does not know about would make its relative `next` miss that prefix.
        query = dict(httpx.URL(str(answer["next"])).params)
    return items if limit is None else items[:limit]


def table(header: Sequence[str], rows: Sequence[Sequence[str]], numbers: Sequence[int] = ()) -> str:
    """Columns two spaces apart under a header line, the ``numbers`` columns right-aligned."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = []
    for row in (header, *rows):
        cells = [
            cell.rjust(width) if i in numbers else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_time(value: Any) -> str:
    """An API timestamp (ISO 8601) as ``YYYY-MM-DD HH:MM:SS`` in UTC; anything else as it is."""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value or "-")
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def jobs_table(jobs: Sequence[dict[str, Any]]) -> str:
    rows = []
    for job in jobs:
        progress = f"{job.get('epoch') or 0}/{job.get('max_epochs') or '?'}"
        score = job.get("best_dev_score")
        rows.append(
            [
                str(job["id"]),
                str(job.get("name", "")),
                str(job.get("status", "")),
                f"{progress} {float(job.get('percent') or 0.0):>3.0f}%",
                f"{score:.4f}" if isinstance(score, int | float) else "-",
                format_time(job.get("created_at")),
            ]
        )
    return table(["ID", "NAME", "STATUS", "PROGRESS", "BEST DEV", "CREATED (UTC)"], rows, numbers=[4])


def models_table(models: Sequence[dict[str, Any]]) -> str:
    rows = [
        [
            str(model["id"]),
            str(model.get("name", "")),
            str(model.get("task", "")),
            str(model.get("label_type", "")),
            format_time(model.get("created_at")),
        ]
        for model in models
    ]
    return table(["ID", "NAME", "TASK", "LABEL TYPE", "CREATED (UTC)"], rows)


def corpora_table(corpora: Sequence[dict[str, Any]]) -> str:
    """A corpus a line, with the sentences of each split (- where the statistics have none)."""
    rows = []
    for corpus in corpora:
        given = corpus.get("statistics")
        statistics: dict[str, Any] = given if isinstance(given, dict) else {}
        counts = []
        for split in ("train", "dev", "test"):
            values = statistics.get(split)
            counts.append(
                str(values["sentences"]) if isinstance(values, dict) and "sentences" in values else "-"
            )
        rows.append(
            [
                str(corpus["id"]),
                str(corpus.get("name", "")),
                str(corpus.get("format", "")),
                *counts,
                format_time(corpus.get("created_at")),
            ]
        )
    return table(["ID", "NAME", "FORMAT", "TRAIN", "DEV", "TEST", "CREATED (UTC)"], rows, numbers=[3, 4, 5])


def load_spec(path: Path, corpus_ids: Sequence[str]) -> dict[str, Any]:
    """Read a spec file; ``corpus_ids`` (when given) replace its ``corpus.ids``."""
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CliError(f"spec file not found: {path}") from exc
    except OSError as exc:
        raise CliError(f"cannot read spec file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise CliError(f"{path}: not UTF-8 text (byte {exc.start}); a spec is a UTF-8 JSON file") from exc
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(spec, dict):
        raise CliError(f"{path}: a spec is a JSON object")
    if corpus_ids:
        corpus = spec.setdefault("corpus", {})
        if not isinstance(corpus, dict):
            raise CliError(f"{path}: 'corpus' must be an object")
        corpus["ids"] = list(corpus_ids)
    elif spec.get("corpus") is None or (isinstance(spec["corpus"], dict) and not spec["corpus"].get("ids")):
        # The API's "body.corpus: Field required" names no --corpus, the usual way to give one.
        raise CliError(
            f"{path}: the spec names no corpus to train on: give one with --corpus ID "
            "(tagsmith corpora lists yours), or set corpus.ids in the spec"
        )
    return spec


def epoch_line(row: dict[str, Any]) -> str:
    parts = [f"epoch {row.get('epoch')}"]
    for key in ("train_loss", "dev_loss", "dev_main_score", "learning_rate"):
        value = row.get(key)
        if isinstance(value, int | float):
            parts.append(f"{key} {value:.4g}")
    if row.get("is_best"):
        parts.append("(best)")
    return "  ".join(parts)


def progress_text(job: dict[str, Any]) -> str:
    """``running epoch 3/10`` (the epoch in progress), else ``queued, 2/10 epochs done``: a job's
    ``epoch`` counts the epochs completed, and "epoch 0/3" read as no epoch running."""
    status, done, total = job.get("status"), int(job.get("epoch") or 0), job.get("max_epochs")
    if status == "running" and (not isinstance(total, int) or done < total):
        return f"running epoch {done + 1}/{total or '?'}"
    return f"{status}, {done}/{total or '?'} epochs done"


def split_sizes_line(job: dict[str, Any]) -> str:
    """What the run trains and scores on, said once: a downsample or a missing test split shows."""
    unit = "lines" if job.get("kind") == "language_model" else "sentences"
    line = (
        f"training on {job['train_sentences']} {unit}; dev {job.get('dev_sentences') or 0}, "
        f"test {job.get('test_sentences') or 0}"
    )
    if not job.get("test_sentences"):
        line += " (no test split: no test score)"
    return line


def follow_job(
    api: Api, job_id: str, poll_seconds: float = 0.5, show: bool = True, write: Any = print
) -> dict[str, Any]:
    """Poll GET /jobs/{id} with a progress bar (plain lines when stderr is not a terminal), print
    each finished epoch's losses and scores, and return the job once it has ended."""
    from tqdm import tqdm

    # A bar redraws its line with \r: in a log file that is one line growing without end.
    live = show and sys.stderr.isatty()
    plain = PlainProgress() if show and not live else None
    printed: set[int] = set()
    bar = tqdm(
        total=100.0,
        bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]",
        disable=not live,
        dynamic_ncols=True,
    )
    job: dict[str, Any] = {}
    waited_for: str | None = None
    sizes_shown = False
    try:
        while True:
            job = dict(api.call("GET", path("jobs", job_id)))
            status = job.get("status")
            bar.set_description(progress_text(job))
            if show and not sizes_shown and job.get("train_sentences") is not None:
                sizes_shown = True
                bar.write(split_sizes_line(job))
            reason = job.get("error") if job.get("retry_at") else job.get("note")
            if reason and reason != waited_for:
                # put back after a storage outage, or on a queue no worker takes: say why it
                # waits, once per reason
                waited_for = reason
                bar.write(f"job {job_id} waits: {waited_for}")
            postfix = {}
            for key, label in (("train_loss", "loss"), ("learning_rate", "lr")):
                if isinstance(job.get(key), int | float):
                    postfix[label] = f"{job[key]:.4g}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(max(0.0, min(100.0, float(job.get("percent") or 0.0))) - bar.n)
            if show and int(job.get("epoch") or 0) > len(printed):
                # The epoch rows only: the batch losses are what grows with the run.
                metrics = api.call("GET", path("jobs", job_id, "metrics"), params={"batches": "false"}) or {}
                for row in metrics.get("epochs") or []:
                    if row.get("epoch") not in printed:
                        printed.add(row.get("epoch"))
                        bar.write(epoch_line(row))
            # Lines above go to stdout, a plain progress line to stderr: in one piped log the
            # finished epoch's line must come before "running epoch N+1".
            sys.stdout.flush()
            if plain is not None:
                plain.show(job)
            if status in TERMINAL:
                break
            time.sleep(poll_seconds)
    finally:
        bar.close()
    if show:
        if job.get("status") == "completed":
            write(f"job {job_id} completed: model {job.get('model_id')}")
        elif job.get("status") == "failed":
            write(f"job {job_id} failed: {job.get('error')}")
        else:
            write(f"job {job_id} {job.get('status')}")
        write(f"its training log, loss.tsv ...: tagsmith files {job_id}")
    return job


def cancel_job(api: Api, job_id: str) -> dict[str, Any]:
    """POST /jobs/{id}/cancel; a finished job is a 409 (a CliError)."""
    return dict(api.call("POST", path("jobs", job_id, "cancel")))


def cancel_summary(job: dict[str, Any]) -> str:
    status = job.get("status")
    if status == "cancelled":
        return f"job {job['id']} cancelled"
    # a worker holds it: the flag is set and the worker stops it
    return f"job {job['id']} {status}, cancel requested: it stops at its next batch boundary"


class PlainProgress:
    """Progress as whole lines on stderr: one when the state or epoch changes, and within an
    epoch one at most every PLAIN_PROGRESS_SECONDS, only when something moved."""

    def __init__(self) -> None:
        self.stage: tuple[Any, Any] | None = None
        self.line = ""
        self.at = 0.0

    def show(self, job: dict[str, Any]) -> None:
        line = f"{progress_text(job)}  {float(job.get('percent') or 0.0):.0f}%"
        for key, label in (("train_loss", "loss"), ("learning_rate", "lr")):
            if isinstance(job.get(key), int | float):
                line += f"  {label} {job[key]:.4g}"
        stage = (job.get("status"), job.get("epoch"))
        now = time.monotonic()
        if stage != self.stage or (line != self.line and now - self.at >= PLAIN_PROGRESS_SECONDS):
            print(line, file=sys.stderr, flush=True)
            self.stage, self.line, self.at = stage, line, now


def predict_answer(
    api: Api, model_id: str, texts: Sequence[str], tokenizer: str | None = None
) -> dict[str, Any]:
    """POST /models/{id}/predict with raw texts; returns the whole answer (model, task, sentences)."""
    body: dict[str, Any] = {"texts": list(texts), **({"tokenizer": tokenizer} if tokenizer else {})}
    return dict(api.call("POST", path("models", model_id, "predict"), json=body) or {})


def predict(api: Api, model_id: str, texts: Sequence[str]) -> list[dict[str, Any]]:
    """POST /models/{id}/predict with raw texts; returns the predicted sentences."""
    return list(predict_answer(api, model_id, texts).get("sentences") or [])


def evaluate(
    api: Api, model_id: str, corpus_id: str, split: str = "test", label_type: str | None = None
) -> dict[str, Any]:
    """POST /models/{id}/evaluate: the model's scores on a split of an uploaded corpus."""
    body: dict[str, Any] = {"corpus_id": corpus_id, "split": split}
    if label_type:
        body["label_type"] = label_type
    return dict(api.call("POST", path("models", model_id, "evaluate"), options=EVALUATE_OPTIONS, json=body))


# tagsmith evaluate's command line for each field of its request body
EVALUATE_OPTIONS = {"corpus_id": "CORPUS_ID", "split": "--split", "label_type": "--label-type"}


def _number(value: Any, spec: str) -> str:
    """``value`` formatted, or "-" for null: a number the model did not compute (NaN)."""
    return "-" if value is None else format(float(value), spec)


def format_evaluation(result: dict[str, Any]) -> str:
    """The scores in one line, then a precision/recall/F1/support line per class, most frequent first."""
    lines = [
        f"{result['split']} of corpus {result['corpus_id']} ({result['sentences']} sentences, "
        f"'{result['label_type']}' labels): {result['main_score_name']} {result['main_score']:.4f}",
        f"micro P {result['micro_precision']:.4f} R {result['micro_recall']:.4f} F1 {result['micro_f1']:.4f}; "
        f"macro F1 {result['macro_f1']:.4f}; accuracy {result['accuracy']:.4f}; loss {_number(result['loss'], '.4f')}",
        f"{'class':>20} {'precision':>10} {'recall':>10} {'f1':>10} {'support':>8}",
    ]
    rows = sorted((result.get("per_class") or {}).items(), key=lambda kv: (-kv[1]["support"], kv[0]))
    for name, row in rows:
        lines.append(
            f"{name:>20} {row['precision']:>10.4f} {row['recall']:>10.4f} {row['f1']:>10.4f} {row['support']:>8}"
        )
    return "\n".join(lines)


def format_sentence(sentence: dict[str, Any]) -> str:
    """A tagged sentence as ``token/TAG`` text, then its spans or its class labels with scores."""
    words = []
    for token in sentence.get("tokens") or []:
        tag = token.get("tag")
        words.append(f"{token['text']}/{tag}" if tag and tag != "O" else str(token["text"]))
    lines = [" ".join(words) if words else str(sentence.get("text", ""))]
    for span in sentence.get("spans") or []:
        lines.append(f"    {span['label']:<5} {span['text']!r} ({_number(span['confidence'], '.2f')})")
    for label in sentence.get("labels") or []:
        lines.append(f"    {label['value']} ({_number(label['score'], '.2f')})")
    return "\n".join(lines)
