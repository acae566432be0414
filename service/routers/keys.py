from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Query, Request, Response

from service import auth
from service.db.session import session_scope
from service.deps import clear_auth_cache, require_admin
from service.errors import NotFound
from service.routers.common import Cursor, Limit, TextJSONRoute, next_url, problems
from service.schemas.api import KeyCreate, KeyCreated, KeyList, KeyOut

router = APIRouter(
    prefix="/keys", tags=["keys"], dependencies=[Depends(require_admin)], route_class=TextJSONRoute
)


@router.get("", response_model=KeyList, responses=problems(401, 403, 422))
def list_keys(
    request: Request,
    revoked: bool = Query(False, description="Include revoked keys."),
    limit: Limit = 100,
    cursor: Cursor = None,
) -> KeyList:
    """Every API key, oldest first, a page at a time (admin key only): id, owner and prefix, never
    the key itself. Follow `next` for the rest."""
    with session_scope() as session:
        page = auth.page_of_keys(session, limit, cursor, include_revoked=revoked)
    items = [KeyOut(**asdict(key)) for key in page.items]
    return KeyList(items=items, next=next_url(request, limit, page.cursor))


@router.post("", status_code=201, response_model=KeyCreated, responses=problems(401, 403, 404, 422))
def create_key(body: KeyCreate) -> KeyCreated:
    """Create an API key (admin key only): for a new owner named `name`, or for `owner_id`."""
    with session_scope() as session:
        try:
            created = auth.create_key(session, owner_name=body.name, owner_id=body.owner_id)
        except LookupError:
            raise NotFound(f"owner {body.owner_id} not found") from None
    return KeyCreated(
        id=created.id,
        owner_id=created.owner_id,
        owner_name=created.owner_name,
        key=created.key,
        prefix=created.prefix,
    )


@router.delete("/{key_id}", status_code=204, responses=problems(401, 403, 404))
def revoke_key(key_id: str) -> Response:
    """Revoke an API key (admin key only)."""
    with session_scope() as session:
        if not auth.revoke_key(session, key_id):
            raise NotFound(f"key {key_id} not found or already revoked")
    clear_auth_cache()
    return Response(status_code=204)
