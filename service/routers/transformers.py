from __future__ import annotations

from fastapi import APIRouter, Depends

from service.deps import get_principal
from service.routers.common import TextJSONRoute, problems
from service.schemas.api import TransformerList, TransformerOut
from service.transformer_models import describe_transformers

router = APIRouter(
    prefix="/transformers",
    tags=["transformers"],
    dependencies=[Depends(get_principal)],
    route_class=TextJSONRoute,
)


@router.get("", response_model=TransformerList, responses=problems(401))
def list_transformers() -> TransformerList:
    """The transformers a training spec may name on this server (any key, the admin key included)."""
    return TransformerList(
        items=[
            TransformerOut(
                name=info.name,
                source=info.source,
                hidden_states=info.shape.hidden_states if info.shape else None,
                hidden_size=info.shape.hidden_size if info.shape else None,
                problem=info.problem,
            )
            for info in describe_transformers()
        ]
    )
