"""Shared route declarations: the problem responses documented on every endpoint."""

from __future__ import annotations

from typing import Any

from service.problems import PROBLEM_MEDIA_TYPE, Problem


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    described = {
        401: "No or an unknown API key",
        403: "The key may not do this",
        404: "Not found (or owned by someone else)",
        409: "Conflicts with the resource's state",
        413: "Upload too large",
        422: "Invalid input; `errors` lists each bad field",
        503: "A dependency (queue, database) is unavailable",
    }
    return {
        s: {"model": Problem, "description": described.get(s, "Error"), "content": {PROBLEM_MEDIA_TYPE: {}}}
        for s in statuses
    }
