"""Upload size limits, enforced while the body streams in (before any multipart parsing), so an
oversized upload is refused with 413 without being buffered."""

from __future__ import annotations

import json
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


@dataclass(frozen=True)
class UploadLimit:
    setting: str  # the environment variable, named in the 413
    bytes: Callable[[Settings], int]


# POST paths whose bodies are uploads, and their limits.
UPLOAD_LIMITS = {
    "/corpora": UploadLimit("TAGSMITH_MAX_UPLOAD_MB", lambda s: s.max_upload_bytes),
    "/models": UploadLimit("TAGSMITH_MAX_MODEL_UPLOAD_MB", lambda s: s.max_model_upload_bytes),
}


class UploadLimitMiddleware:
    def __init__(self, app: Any, limits: dict[str, UploadLimit] = UPLOAD_LIMITS) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        upload = self.limits.get(scope["path"].rstrip("/")) if scope["type"] == "http" else None
        if upload is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
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
        except _TooLarge:
            if not started:
                await self._reject(scope, send, limit, upload.setting)

    @staticmethod
    async def _reject(scope: dict[str, Any], send: Any, limit: int, setting: str) -> None:
        body = json.dumps(
            {
                "type": PROBLEM_TYPE_BASE + "payload-too-large",
                "title": "Payload too large",
                "status": 413,
                "detail": f"the upload exceeds the limit of {limit / 1024 / 1024:g} MB ({setting})",
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
