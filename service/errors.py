"""Typed errors raised by the service's logic modules; ``service.problems`` renders each as an
RFC 9457 problem document. Plain exceptions, so logic stays independent of FastAPI."""

from __future__ import annotations

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


class Unavailable(ServiceError):
    status, title, slug = 503, "Service unavailable", "unavailable"
