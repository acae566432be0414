"""Upload size limit, enforced while the body streams in (before any multipart parsing), so an
oversized upload is refused with 413 without being buffered."""

from __future__ import annotations

import json
from typing import Any

from service.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_BASE
from service.settings import get_settings


class _TooLarge(Exception):
    pass


class UploadLimitMiddleware:
    def __init__(self, app: Any, paths: tuple[str, ...] = ("/corpora",)) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"].rstrip("/") not in self.paths
        ):
            await self.app(scope, receive, send)
            return
        limit = get_settings().max_upload_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await self._reject(scope, send, limit)
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
                await self._reject(scope, send, limit)

    @staticmethod
    async def _reject(scope: dict[str, Any], send: Any, limit: int) -> None:
        body = json.dumps(
            {
                "type": PROBLEM_TYPE_BASE + "payload-too-large",
                "title": "Payload too large",
                "status": 413,
                "detail": f"the upload exceeds the limit of {limit / 1024 / 1024:g} MB (TAGSMITH_MAX_UPLOAD_MB)",
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
