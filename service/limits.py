"""Request body size limits, enforced while the body streams in (before any JSON or multipart
parsing), so an oversized body is refused with 413 without being buffered: the uploads have their
settings, every other body (a training spec, a key request) ``JSON_BODY_LIMIT_BYTES``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_BASE
from service.settings import Settings, get_settings


class _TooLarge(BaseException):
    # Not an Exception: FastAPI's form parsing turns any Exception raised while it reads the body
    # into a 400 "error parsing the body", and a chunked upload (no Content-Length) is only found
    # too large while it is read.
    pass


def _is_too_large(error: BaseException) -> bool:
    """``_TooLarge``, also as the only error of a task group's (a response that reads the body
    in a task of its own)."""
    if isinstance(error, BaseExceptionGroup):
        return error.split(_TooLarge)[1] is None
    return isinstance(error, _TooLarge)


@dataclass(frozen=True)
class UploadLimit:
    setting: str | None  # the environment variable, named in the 413
    bytes: Callable[[Settings], int]


# POST paths whose bodies are uploads, and their limits.
UPLOAD_LIMITS = {
    "/corpora": UploadLimit("TAGSMITH_MAX_UPLOAD_MB", lambda s: s.max_upload_bytes),
    "/models": UploadLimit("TAGSMITH_MAX_MODEL_UPLOAD_MB", lambda s: s.max_model_upload_bytes),
}
# Predict takes as many texts as TAGSMITH_PREDICT_MAX_BATCH allows; service.predict_fastpath
# serves it, with this limit, before this middleware. Here for the route behind it.
PREDICT_PATH = re.compile(r"^/models/[^/]+/predict/?$")
PREDICT_LIMIT = UploadLimit("TAGSMITH_MAX_UPLOAD_MB", lambda s: s.max_upload_bytes)
# Every other body: JSON of a few fields (the largest, a training spec, is a few kB).
JSON_BODY_LIMIT_BYTES = 1024 * 1024
JSON_BODY_LIMIT = UploadLimit(None, lambda s: JSON_BODY_LIMIT_BYTES)

# What one predict request may ask for once its texts are split and tokenized (checked before
# any inference: 422). TAGSMITH_PREDICT_MAX_BATCH and TAGSMITH_PREDICT_MAX_TEXT_CHARS count
# inputs and characters, but the work and the answer grow with sentences and tokens.
# Sentences after splitting: ordinary prose has 70-100 sentences in 10,000 characters, so this is
# about what 256 texts of that length make (a request at both default limits passes unchanged);
# text that splits into far shorter sentences is refused ("Go home. " x 1,110 in 256 texts made
# 284,160 sentences: a 192 MB answer, 32 s and 1.3 GB).
PREDICT_MAX_SENTENCES = 25_000
# Probabilities a return_probabilities_for_all_classes answer may hold: tokens x the model's
# classes (a span tagger's internal tags, as the answer lists them), or a classifier's sentences
# x classes. About 70 bytes of JSON and 500 bytes of the API's memory each: 2 million is a
# ~140 MB answer, enough for one 10,000-character text on a 1,000-label tagger; unbounded, 256
# such texts would have made a ~30 GB answer.
PREDICT_MAX_PROBABILITY_CELLS = 2_000_000


def body_limit(method: str, path: str) -> UploadLimit:
    if method == "POST":
        upload = UPLOAD_LIMITS.get(path.rstrip("/"))
        if upload is not None:
            return upload
        if PREDICT_PATH.match(path):
            return PREDICT_LIMIT
    return JSON_BODY_LIMIT


class UploadLimitMiddleware:
    """Every request's body limit (``body_limit``): 413 for a larger Content-Length, or once a
    body without one (chunked) has passed the limit."""

    def __init__(self, app: Any, limits: Callable[[str, str], UploadLimit] = body_limit) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = self.limits(scope["method"], scope["path"])
        limit = upload.bytes(get_settings())
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await self._reject(scope, send, limit, upload.setting)
                return
        seen = 0
        started = False

        async def counting_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BaseException as e:
            if not _is_too_large(e):
                raise
            # After the answer has started (a stream that listens for the client going away),
            # there is nothing left to refuse.
            if not started:
                await self._reject(scope, send, limit, upload.setting)

    @staticmethod
    async def _reject(scope: dict[str, Any], send: Any, limit: int, setting: str | None) -> None:
        if setting is None:
            detail = f"the request body exceeds the limit of {limit / 1024 / 1024:g} MB"
        else:
            detail = f"the upload exceeds the limit of {limit / 1024 / 1024:g} MB ({setting})"
        body = json.dumps(
            {
                "type": PROBLEM_TYPE_BASE + "payload-too-large",
                "title": "Payload too large",
                "status": 413,
                "detail": detail,
                "instance": scope["path"],
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


# Work a CRF tagger's decoding may do for one request: tokens x the CRF's tags squared (Viterbi,
# and the forward-backward of return_probabilities_for_all_classes, compare every tag with every
# tag at each token: 3-7 ns each on one core). 4 billion is about half a minute of one predict
# thread. It never binds an ordinary tagger (20 tags: 10 million tokens); a 512-tag CRF, the most
# a model may have, may decode about 15,000 tokens a request (unbounded, a request at the other
# limits took 489 s, holding a predict thread).
PREDICT_MAX_CRF_WORK = 4_000_000_000
