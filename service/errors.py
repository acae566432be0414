"""Typed errors raised by the service's logic modules; ``service.problems`` renders each as an
RFC 9457 problem document. Plain exceptions, so logic stays independent of FastAPI."""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FieldError:
    """One problem with one input: ``loc`` is the path to it (``["body", "trainer", "max_epochs"]``
    or ``["files", "train"]``), ``message`` says what is wrong."""

    loc: list[str | int]
    message: str
    type: str = "invalid"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "loc": self.loc,
            "field": ".".join(str(p) for p in self.loc),
            "message": self.message,
            "type": self.type,
            **self.extra,
        }


class ServiceError(Exception):
    status: int = 400
    title: str = "Bad request"
    slug: str = "bad-request"

    def __init__(
        self, detail: str, errors: list[FieldError] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}


class NotFound(ServiceError):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(ServiceError):
    status, title, slug = 409, "Conflict", "conflict"


class Invalid(ServiceError):
    status, title, slug = 422, "Invalid input", "validation-error"


class PayloadTooLarge(ServiceError):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class Unauthorized(ServiceError):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceError):
    status, title, slug = 403, "Forbidden", "forbidden"


class ModelDamaged(ServiceError):
    """A stored model's files do not load: the server's data, so neither 4xx nor worth a retry."""

    status, title, slug = 500, "Model files damaged", "model-damaged"


class Unavailable(ServiceError):
    status, title, slug = 503, "Service unavailable", "unavailable"


# What an errno says this machine ran out of: never the request's fault (FastAPI answered a full
# temporary disk while reading an upload with 400 "There was an error parsing the body").
OUT_OF_MEMORY = "out of memory"
_EXHAUSTED = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota used up",
    errno.EMFILE: "too many open files in the process",
    errno.ENFILE: "too many open files in the system",
}


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what led to it: the ``raise ... from`` chain, the exception being handled when
    it was raised, and the last try of a library that retried (boto3's ``last_exception``)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__ or getattr(current, "last_exception", None)


def exhausted_resource(exc: BaseException) -> str | None:
    """What this machine ran out of (disk, memory, file descriptors), when ``exc`` or an error
    it came from says so; None for any other error."""
    for cause in causes(exc):
        if isinstance(cause, MemoryError):
            return OUT_OF_MEMORY
        if isinstance(cause, OSError) and cause.errno in _EXHAUSTED:
            return _EXHAUSTED[cause.errno]
    return None


class NotText(ValueError):
    """A JSON string that no database stores: a lone surrogate (``"\\ud800"`` decodes to one, and
    no UTF-8 encoder takes it) or a NUL (PostgreSQL refuses it in text and JSON)."""


def storable(text: str) -> bool:
    """Whether ``text`` can reach the database (see ``NotText``); a string that cannot names no row."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_json_text(value: Any) -> None:
    """Raise ``NotText`` for a JSON value holding a string (or key) that is not storable text."""
    if isinstance(value, str):
        if not storable(value):
            what = "a NUL character" if "\x00" in value else "a lone surrogate (half of a UTF-16 pair)"
            raise NotText(f"a string holds {what}, which is not text the service stores: {value[:40]!r}")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_json_text(key)
            check_json_text(item)
    elif isinstance(value, list):
        for item in value:
            check_json_text(item)


def json_refusal(error: ValueError | RecursionError) -> str:
    """Why Python's JSON parser refused a text, with the place where the parser gives one."""
    if isinstance(error, NotText):
        return str(error)
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at line {error.lineno}, column {error.colno}"
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 (byte {error.start})"
    if isinstance(error, RecursionError):
        return "nested too deeply"
    # The other ValueError json.loads raises: an integer of more digits than Python converts
    # (sys.get_int_max_str_digits()).
    return "a number has too many digits"


def invalid_json_body(reason: str) -> Invalid:
    """The 422 for a request body that is not JSON the service can read."""
    return Invalid(
        f"the body is not valid JSON: {reason}",
        [FieldError(["body"], f"not valid JSON: {reason}", "json_invalid")],
    )
