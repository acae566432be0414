"""RFC 9457 problem details (``application/problem+json``) for every error the API answers.

A problem has ``type``, ``title``, ``status``, ``detail``, ``instance`` and, for input errors,
``errors``: one entry per bad field with its path (``loc`` and dotted ``field``) and a message.
Corpus format errors also name ``file``, ``line`` and ``reason``. A storage outage answers 503 with
``Retry-After``, as do a database outage and a server out of disk, memory or file descriptors;
unexpected exceptions answer 500. None shows internals (all are logged).
"""

from __future__ import annotations

import json
import logging
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request, params
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.db.session import DatabaseUnavailable
from service.errors import FieldError, ServiceError, exhausted_resource, invalid_json_body, json_refusal
from service.storage import StorageUnavailable

log = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "https://tagsmith.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemError(BaseModel):
    """One bad input: its path, what is wrong; corpus errors add `file`, `split`, `line`, `reason`."""

    model_config = ConfigDict(extra="allow")
    loc: list[str | int]
    field: str
    message: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[ProblemError] = []


def problem_response(
    request: Request,
    status: int,
    title: str,
    detail: str,
    slug: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + slug if slug else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _input_path(loc: list[str | int], body: Any) -> list[str | int]:
    """``loc`` as a path into the request: without the member names pydantic inserts for a tagged
    union (``body.embeddings.0.word.name`` is ``body.embeddings.0.name`` of ``{"type": "word"}``),
    so that every check names a field the same way."""
    path: list[str | int] = []
    node = body
    for i, part in enumerate(loc):
        if i == 0 and part == "body":
            path.append(part)
            continue
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue
        path.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return path


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [p for p in err.get("loc", ()) if isinstance(p, str | int)]
        if loc[:1] == ["body"]:
            loc = _input_path(loc, getattr(exc, "body", None))
        message = str(err.get("msg", "invalid value"))
        message = message.removeprefix("Value error, ")
        if message.startswith("Expected UploadFile") and loc:
            # FastAPI's words ("received: <class 'str'>") for a text form field where a file
            # belongs: what curl sends for -F train=PATH, the @ forgotten.
            message = f"must be a file, not text (curl: -F {loc[-1]}=@PATH, with the @)"
        out.append(FieldError(loc=loc, message=message, type=str(err.get("type", "invalid"))).to_dict())
    return out


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return problem_response(
        request,
        exc.status,
        exc.title,
        exc.detail,
        slug=exc.slug,
        errors=[e.to_dict() for e in exc.errors],
        headers=exc.headers,
    )


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if isinstance(exc.__cause__, json.JSONDecodeError):
        # FastAPI's own error puts the character offset where a field name goes ("body.12").
        return await _service_error(request, invalid_json_body(json_refusal(exc.__cause__)))
    errors = _validation_errors(exc)
    form_fields = _form_fields(request)
    if form_fields and not _is_form(request):
        # A form endpoint read a JSON body (curl -d, or --json) as no fields at all: "format:
        # Field required" and "train: Field required" hide that the fields were sent another way.
        sent = request.headers.get("content-type", "").split(";", 1)[0].strip() or "no Content-Type"
        errors.insert(
            0,
            FieldError(
                loc=["body"],
                message=f"send the fields as a multipart form (curl {form_fields}), not as {sent}",
                type="multipart_expected",
            ).to_dict(),
        )
    elif not _is_json(request):
        # FastAPI reads a body of another media type as no JSON at all: "Input should be a valid
        # dictionary" hides that the body was fine and its Content-Type was not (curl -d sends a form).
        sent = request.headers.get("content-type", "").split(";", 1)[0].strip()
        for error in errors:
            if error["field"] == "body":
                error["message"] = (
                    f"send the body as JSON with Content-Type: application/json (this one is {sent})"
                )
    first = errors[0] if errors else None
    detail = f"{len(errors)} invalid field(s)"
    if first is not None:
        detail += f"; first: {first['field'] or 'body'}: {first['message']}"
    return problem_response(request, 422, "Invalid input", detail, slug="validation-error", errors=errors)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and (exhausted := exhausted_resource(exc)) is not None:
        # FastAPI's 400 for a body it could not read: spooling the upload ran out of disk
        return _exhausted(request, exc, exhausted)
    if (
        exc.status_code == 400
        and _is_json(request)
        and isinstance(exc.__cause__, ValueError | RecursionError)
    ):
        # FastAPI answers "There was an error parsing the body" for JSON that json.loads refuses
        # past its syntax (too many digits, too deep, not UTF-8); say which, as for bad syntax.
        return await _service_error(request, invalid_json_body(json_refusal(exc.__cause__)))
    try:
        title = HTTPStatus(exc.status_code).phrase
    except ValueError:
        title = "Error"
    detail = exc.detail if isinstance(exc.detail, str) else title
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        detail = f"{request.method} is not allowed on {request.url.path}; allowed: {', '.join(allowed)}"
        headers = {**(headers or {}), "Allow": ", ".join(allowed)}
    return problem_response(request, exc.status_code, title, detail, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """The documented methods of this path. Starlette's own ``Allow`` names only the first route
    that matches the path, and GET and POST of one path are separate routes here. A literal path
    hides the templates it also matches (/jobs/language-model is not a job id)."""
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    path = request.url.path
    if path in paths:
        templates = [path]
    else:
        templates = [
            template
            for template in paths
            if re.fullmatch("[^/]+".join(map(re.escape, re.split(r"\{[^/}]+\}", template))), path)
        ]
    return sorted({method.upper() for template in templates for method in paths[template]})


def _form_fields(request: Request) -> str:
    """The required form fields of the matched route as curl writes them (``-F format=... -F
    train=@PATH``); empty for a route whose body is not a form."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    fields = [
        f"-F {param.alias}=@PATH" if isinstance(param.field_info, params.File) else f"-F {param.alias}=..."
        for param in (dependant.body_params if dependant is not None else [])
        if isinstance(param.field_info, params.Form) and param.field_info.is_required()
    ]
    return " ".join(fields)


def _is_form(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media_type in ("multipart/form-data", "application/x-www-form-urlencoded")


def _is_json(request: Request) -> bool:
    """Whether FastAPI reads this request's body as JSON: no content type, or a JSON one."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media_type in ("", "application/json") or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def _corpus_format_error(request: Request, exc: Exception) -> JSONResponse:
    # the base name: the full path is a folder of this server's (a fallback: the service's own
    # callers turn the errors of files they know into messages naming the user's file)
    file = str(getattr(exc, "filename", "") or "")
    line = getattr(exc, "line", None)
    reason = str(getattr(exc, "reason", exc))
    where = f"{file}, line {line}" if line is not None else file
    error = FieldError(
        loc=["files", file] if file else ["files"],
        message=reason,
        type="corpus_format",
        extra={"file": file, "line": line, "reason": reason},
    )
    return problem_response(
        request,
        422,
        "Invalid corpus file",
        f"{where}: {reason}",
        slug="corpus-format",
        errors=[error.to_dict()],
    )


# Seconds a client is asked to wait after an outage answer, per dependency.
STORAGE_RETRY_AFTER = 30
DATABASE_RETRY_AFTER = 5
EXHAUSTED_RETRY_AFTER = 30


def _outage(request: Request, what: str, retry_after: int) -> JSONResponse:
    """A dependency is away: nothing the client did, and trying again later may work. The
    reason (an endpoint, a mount, a host) is the operator's, so it is logged, not answered."""
    return problem_response(
        request,
        503,
        "Service unavailable",
        f"the {what} is unavailable; try again later",
        slug=f"{what}-unavailable",
        headers={"Retry-After": str(retry_after)},
    )


async def _storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return _outage(request, "storage", STORAGE_RETRY_AFTER)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # OperationalError: the connection was refused, dropped or timed out, or the database refused
    # to work (SQLite "database is locked", "disk I/O error", an unmigrated schema). One line per
    # request: three chained tracebacks (~140 lines) each flooded the log during an outage.
    reason = _first_line(getattr(exc, "orig", None) or exc)
    log.error("%s %s: database unavailable: %s", request.method, request.url.path, reason)
    return _outage(request, "database", DATABASE_RETRY_AFTER)


def _exhausted(request: Request, exc: BaseException, what: str) -> JSONResponse:
    """The server ran out of disk, memory or file descriptors: an operator's problem (logged in
    full), and the client may try again later (memory: perhaps with a smaller request)."""
    log.error("%s %s: out of resources (%s): %s", request.method, request.url.path, what, _first_line(exc))
    return problem_response(
        request,
        503,
        "Service unavailable",
        f"the server is out of resources ({what}); try again later",
        slug="server-exhausted",
        headers={"Retry-After": str(EXHAUSTED_RETRY_AFTER)},
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _internal_error(request: Request) -> JSONResponse:
    return problem_response(
        request, 500, "Internal server error", "an unexpected error occurred; it was logged"
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if (exhausted := exhausted_resource(exc)) is not None:
        return _exhausted(request, exc, exhausted)
    # Starlette raises the error on to the server after this answer, and the server logs its
    # traceback: a line here names the request, and the traceback is not logged twice.
    log.error(
        "unhandled error on %s %s: %s: %s",
        request.method,
        request.url.path,
        type(exc).__name__,
        _first_line(exc),
    )
    return _internal_error(request)


async def render(request: Request, exc: Exception) -> JSONResponse:
    """The problem response the installed handlers give for ``exc`` (for code that answers
    outside FastAPI's exception handling, such as the predict fast path)."""
    from engine.readers.errors import CorpusFormatError

    if isinstance(exc, ServiceError):
        return await _service_error(request, exc)
    if isinstance(exc, RequestValidationError):
        return await _request_validation(request, exc)
    if isinstance(exc, StarletteHTTPException):
        return await _http_exception(request, exc)
    if isinstance(exc, CorpusFormatError):
        return await _corpus_format_error(request, exc)
    if isinstance(exc, StorageUnavailable):
        return await _storage_unavailable(request, exc)
    if isinstance(exc, DatabaseUnavailable):
        return await _database_unavailable(request, exc)
    if (exhausted := exhausted_resource(exc)) is not None:
        return _exhausted(request, exc, exhausted)
    # answered here, not raised on: no server logs it, so the traceback goes to the log here
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _internal_error(request)


def install(app: FastAPI) -> None:
    from engine.readers.errors import CorpusFormatError

    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(CorpusFormatError, _corpus_format_error)
    app.add_exception_handler(StorageUnavailable, _storage_unavailable)
    for error in DatabaseUnavailable:
        app.add_exception_handler(error, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)
