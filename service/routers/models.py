from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from service.deps import current_owner
from service.logic import evaluate, model_import, models, predict
from service.predict_fastpath import answer_json
from service.routers.common import (
    STORED_READ_PROBLEMS,
    Cursor,
    Limit,
    Offset,
    TextJSONRoute,
    each_form_field_once,
    next_url,
    problems,
)
from service.schemas.api import (
    EvaluateRequest,
    EvaluationOut,
    ModelList,
    ModelOut,
    PredictRequest,
    PredictResponse,
)
from service.schemas.spec import Name
from service.settings import get_settings

router = APIRouter(prefix="/models", tags=["models"], route_class=TextJSONRoute)


@router.get("", response_model=ModelList, responses=problems(401, 422))
def list_models(
    request: Request,
    limit: Limit = 100,
    offset: Offset = 0,
    cursor: Cursor = None,
    owner_id: str = Depends(current_owner),
) -> ModelList:
    """Your models, newest first, a page at a time: follow `next` for the rest."""
    page = models.list_models(owner_id, limit, offset, cursor)
    items = [ModelOut.model_validate(m) for m in page.items]
    return ModelList(items=items, next=next_url(request, limit, page.cursor))


@router.post("", status_code=201, response_model=ModelOut, responses=problems(401, 413, 422, 503))
def import_model(
    response: Response,
    file: Annotated[
        UploadFile,
        File(description="A tar archive (.tar.gz) of a model folder, as `GET /models/{id}/download` gives."),
    ],
    name: Annotated[Name, Form(max_length=200, description="Default: the archive's name.")] = None,
    owner_id: str = Depends(current_owner),
    _fields: None = Depends(each_form_field_once),
) -> ModelOut:
    """Add a model trained elsewhere (`model.save(folder)` from Python, or another server's
    download) to serve it. The archive may hold only files and folders; the model must load
    (its config, weights and resources are checked; nothing in it is code). 422 names the archive
    member that is wrong. Imported models have no job, spec or metrics."""
    row = model_import.import_model(owner_id, name, file.filename or "model.tar.gz", file.file)
    response.headers["Location"] = f"/models/{row.id}"
    return ModelOut.model_validate(row)


@router.get("/{model_id}", response_model=ModelOut, responses=problems(401, 404))
def get_model(model_id: str, owner_id: str = Depends(current_owner)) -> ModelOut:
    """Task, label type, labels, dev and test metrics, the spec and job it came from, size."""
    return ModelOut.model_validate(models.get_model(owner_id, model_id))


@router.get(
    "/{model_id}/download",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/gzip": {}}, "description": "The model folder"},
        **problems(401, 404, 503),
    },
)
def download_model(model_id: str, owner_id: str = Depends(current_owner)) -> FileResponse:
    """The model folder (`config.json` + safetensors + resources) as a tar.gz."""
    row = models.get_model(owner_id, model_id)
    archive = models.build_archive(row)
    return FileResponse(
        archive,
        media_type="application/gzip",
        filename=models.archive_name(row),
        background=BackgroundTask(Path(archive).unlink, missing_ok=True),
    )


@router.delete("/{model_id}", status_code=204, responses=problems(401, 404))
def delete_model(model_id: str, request: Request, owner_id: str = Depends(current_owner)) -> Response:
    models.delete_model(owner_id, model_id)
    predict.forget_model(model_id)
    cache: predict.ModelCache | None = getattr(request.app.state, "model_cache", None)
    if cache is not None:
        # The cache belongs to the event loop; schedule the eviction there.
        request.app.state.loop.call_soon_threadsafe(cache.evict, model_id)
    return Response(status_code=204)


@router.post("/{model_id}/predict", response_model=PredictResponse, responses=problems(401, 404, 422, 503))
async def predict_route(
    model_id: str, body: PredictRequest, request: Request, owner_id: str = Depends(current_owner)
) -> Response:
    """Tag or classify raw texts (split into sentences and tokenized, character offsets returned)
    or pre-tokenized sentences. Concurrent requests for one model are batched together."""
    # In the app, service.predict_fastpath answers this request before routing (the same logic,
    # less per-request overhead); this declaration documents it and serves it without that layer.
    result = await predict.predict(request.app.state.model_cache, owner_id, model_id, body, get_settings())
    # pydantic-core's serialiser is ~4x faster than json.dumps (JSONResponse), and the result
    # already has the declared response_model's shape (PredictResponse, in the docs).
    return Response(answer_json(result), media_type="application/json")


@router.post(
    "/{model_id}/evaluate",
    response_model=EvaluationOut,
    responses=problems(401, 404, 409, 422, 503, notes=STORED_READ_PROBLEMS),
)
async def evaluate_route(
    model_id: str, body: EvaluateRequest, request: Request, owner_id: str = Depends(current_owner)
) -> EvaluationOut:
    """Score the model on a split of an uploaded corpus with gold labels: main score, micro and
    macro scores, accuracy, loss and a per-class table (the trainer's test evaluation, on any
    corpus). Takes as long as predicting the whole split, plus reading the corpus, which is done in
    a process of its own under `TAGSMITH_CORPUS_READ_TIMEOUT_SECONDS` (409 past it)."""
    result = await evaluate.evaluate(request.app.state.model_cache, owner_id, model_id, body)
    return EvaluationOut.model_validate(result)
