"""``POST /models/{id}/predict`` served straight from ASGI, ahead of FastAPI's router.

Predict is the hot path: one short sentence per request is the common case, and the model call
for it costs well under a millisecond. FastAPI's per-request machinery (route matching over every
route, dependency solving, body reading and validation through its generic layers) cost more CPU
than the model on the 2-core reference machine, on the event loop that every request shares.
This middleware handles exactly that endpoint with the same pieces the FastAPI route uses - the
same auth dependency, the ``PredictRequest`` schema, ``logic.predict`` and the problem-details
renderer - so answers and errors are the same (a test compares the two).
The FastAPI route stays declared: it is what the OpenAPI document describes, and it serves the
request wherever this middleware is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from pydantic_core import from_json, to_json
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service import problems
from service.deps import current_owner
from service.errors import PayloadTooLarge, invalid_json_body
from service.logic import predict
from service.metrics import CLIENT_GONE
from service.schemas.api import PredictRequest
from service.settings import get_settings

PREDICT_PATH = re.compile(r"^/models/(?P<model_id>[^/]+)/predict/?$")
JSON_HEADERS = [(b"content-type", b"application/json")]
T = TypeVar("T")


class PredictFastPath:
    def __init__(self, app: ASGIApp, route: Any = None) -> None:
        self.app = app
        # The declared route: the metrics middleware labels requests by its path template.
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = PREDICT_PATH.match(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if self.route is not None:
            scope["route"] = self.route
        request = Request(scope, receive)
        try:
            owner_id = await current_owner(request)
            body = await _read_body(request, get_settings().max_upload_bytes)
            parsed = _parse(body)
            cache = scope["app"].state.model_cache
            # Watching for a disconnect costs two tasks a request (5-10% of the server's CPU for
            # one-sentence requests): only requests large enough to be worth dropping get it.
            large = predict.is_large(parsed)
            work = predict.predict(cache, owner_id, match["model_id"], parsed, get_settings(), large)
            result = await (_unless_gone(work, receive) if large else work)
        except ClientDisconnect:
            # Nobody to answer, and no server error: the client closed the connection.
            scope[CLIENT_GONE] = True
            return
        except Exception as e:  # every error becomes the same problem document the router gives
            response = await problems.render(request, e)
            await response(scope, receive, send)
            return
        payload = await json_in_parts(result) if large else answer_json(result)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*JSON_HEADERS, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def answer_json(value: Any) -> bytes:
    """A predict answer as JSON. pydantic-core writes a NaN as ``NaN``, which is no JSON (a
    browser's JSON.parse fails on the whole answer); a confidence that is not a number is null."""
    return to_json(value, inf_nan_mode="null")


# Tokens per part: the answer's size follows its tokens (a few milliseconds of to_json per part).
TOKENS_PER_PART = 2000


async def json_in_parts(result: dict[str, Any]) -> bytes:
    """``answer_json(result)``, its ``sentences`` serialised a part at a time with the event loop let
    go in between: in one call, a 110 MB answer held every other request for about a second
    (to_json holds the GIL throughout, so a thread would not help)."""
    head = answer_json({k: v for k, v in result.items() if k != "sentences"})
    out = [head[:-1], b"," if len(head) > 2 else b"", b'"sentences":[']
    part: list[Any] = []
    tokens = 0
    for sentence in result["sentences"]:
        part.append(sentence)
        tokens += len(sentence.get("tokens") or ()) + 1
        if tokens >= TOKENS_PER_PART:
            out += [answer_json(part)[1:-1], b","]
            part, tokens = [], 0
            await asyncio.sleep(0)
    if part:
        out.append(answer_json(part)[1:-1])
    elif out[-1] == b",":
        out.pop()
    out.append(b"]}")
    return b"".join(out)


async def _unless_gone(work: Coroutine[Any, Any, T], receive: Receive) -> T:
    """``work``'s result, or ClientDisconnect once the client has closed the connection: its
    sentences are then dropped from the batcher instead of computed for no one (abandoned
    requests held a later one for 14 s). With the body read, the server's next message is
    ``http.disconnect``, when the client goes or after the response."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise ClientDisconnect
    return task.result()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _parse(body: bytes) -> PredictRequest:
    """Validate as FastAPI does for a JSON body parameter: parse, then validate the Python
    value (so messages and locations match the documented route's)."""
    if not body:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required"}])
    try:
        data = from_json(body)
    except ValueError as e:
        # pydantic's message already says where ("... at line 1 column 9").
        raise invalid_json_body(str(e)) from None
    try:
        return PredictRequest.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in e.errors(include_url=False)]
        ) from None


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"the request body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
