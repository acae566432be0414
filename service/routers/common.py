"""Shared route declarations: the problem responses documented on every endpoint, the check
that a form upload has each field once, and the route class that reads JSON bodies as text."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from typing import Annotated, Any, get_type_hints

from fastapi import Query, Request, Response, params
from fastapi.routing import APIRoute

from service.errors import FieldError, Invalid, check_json_text
from service.logic.pages import MAX_CURSOR_LENGTH
from service.problems import PROBLEM_MEDIA_TYPE, Problem

# Listings are newest first, a page at a time. The largest OFFSET SQLite and PostgreSQL take is a
# signed 64-bit integer; past it the database driver raised instead of answering an empty page.
MAX_OFFSET = 2**63 - 1
Limit = Annotated[int, Query(ge=1, le=1000, description="Most items in the answer.")]
Offset = Annotated[
    int,
    Query(
        ge=0,
        le=MAX_OFFSET,
        description="Items to skip, newest first. An item created meanwhile shifts the pages by one: "
        "to walk them all, follow `next` instead. Not with `cursor`.",
    ),
]
Cursor = Annotated[
    str | None,
    Query(
        max_length=MAX_CURSOR_LENGTH,
        description="Where the page starts: the `cursor` of the previous page's `next` (opaque; "
        "follow `next` as it is). Not with a non-zero `offset`.",
    ),
]


def next_url(request: Request, limit: int, cursor: str | None) -> str | None:
    """The relative URL of the page after this one (None: this is the last): this request's path
    and query, so its filters stay, with ``limit``, ``cursor`` and no ``offset``."""
    if cursor is None:
        return None
    url = request.url.remove_query_params("offset").include_query_params(limit=limit, cursor=cursor)
    return f"{url.path}?{url.query}"


# A route that reads a stored corpus (service.logic.stored_reads), in a reader process.
STORED_READ_PROBLEMS = {
    409: "The corpus's stored files do not read in this version, or reading them took longer than "
    "`TAGSMITH_CORPUS_READ_TIMEOUT_SECONDS` allows",
    503: "A dependency (queue, database, storage) is unavailable, or the process reading the corpus ended "
    "(most likely out of memory); try again later",
}


def problems(*statuses: int, notes: Mapping[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """The documented problem answers; ``notes`` replaces a status's general description where
    it means more on this route."""
    described = {
        401: "No or an unknown API key",
        403: "The key may not do this",
        404: "Not found (or owned by someone else)",
        409: "Conflicts with the resource's state",
        413: "Upload too large",
        422: "Invalid input; `errors` lists each bad field",
        503: "A dependency (queue, database, storage) is unavailable; try again later",
    }
    if 401 in statuses:
        # A keyed request reads its key from the database, so any of them may meet an outage.
        statuses = (*statuses, 503)
    return {
        s: {
            "model": Problem,
            "description": (notes or {}).get(s) or described.get(s, "Error"),
            "content": {PROBLEM_MEDIA_TYPE: {}},
        }
        for s in sorted(set(statuses))
    }


async def each_form_field_once(request: Request) -> None:
    """FastAPI keeps the last of repeated form fields and ignores unknown ones, so a second train
    file or a `validation` file would be dropped without a word; refuse both instead. The form
    is already parsed (and cached on the request) by the time dependencies run."""
    fields = form_fields(request.scope["endpoint"])
    form = await request.form()
    counts: dict[str, int] = {}
    for key, _ in form.multi_items():
        counts[key] = counts.get(key, 0) + 1
    errors = [
        FieldError(["body", key], f"unknown field; the fields are {', '.join(fields)}", "extra_forbidden")
        for key in counts
        if key not in fields
    ]
    errors += [
        FieldError(["body", key], f"given {n} times; give it once", "duplicate")
        for key, n in counts.items()
        if n > 1 and key in fields
    ]
    if errors:
        raise Invalid(f"{errors[0].loc[-1]}: {errors[0].message}", errors)


@cache
def form_fields(endpoint: Callable[..., Any]) -> tuple[str, ...]:
    """The form and file fields an endpoint declares, in order (File is a kind of Form)."""
    hints = get_type_hints(endpoint, include_extras=True)
    return tuple(
        name
        for name, hint in hints.items()
        if any(isinstance(m, params.Form) for m in getattr(hint, "__metadata__", ()))
    )


class _TextJSONRequest(Request):
    async def json(self) -> Any:
        value = await super().json()
        # json.loads takes "\\ud800" and "\\u0000", which then fail in the database driver (a
        # 500). NotText is a ValueError: FastAPI's "error parsing the body", which
        # service.problems answers as the 422 for JSON it cannot read.
        check_json_text(value)
        return value


class TextJSONRoute(APIRoute):
    """Every router's route class: a JSON body's strings are text the database can store."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def text_json_handler(request: Request) -> Response:
            return await handler(_TextJSONRequest(request.scope, request.receive))

        return text_json_handler
