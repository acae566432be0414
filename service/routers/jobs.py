from __future__ import annotations

from typing import Annotated, Literal, NoReturn

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse

from service.db.models import Job
from service.deps import current_owner
from service.logic import jobs
from service.logic.curves import render_curves
from service.logic.job_events import job_event_stream
from service.queue_consumers import waiting_note
from service.routers.common import Cursor, Limit, Offset, TextJSONRoute, next_url, problems
from service.run_files import RUN_FILES
from service.schemas.api import (
    BatchLossOut,
    EpochMetricOut,
    JobFileList,
    JobFileOut,
    JobList,
    JobMetrics,
    JobOut,
)
from service.schemas.spec import LanguageModelSpec, TrainingSpec
from service.settings import get_settings

router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=TextJSONRoute)
Status = Literal["queued", "running", "completed", "failed", "cancelled"]


def job_out(request: Request, job: Job, with_note: bool = False) -> JobOut:
    out = JobOut.model_validate(job)
    out.url = str(request.url_for("get_job", job_id=job.id))
    if with_note and job.status == "queued" and job.retry_at is None:
        out.note = waiting_note(job.queue)
    return out


@router.post("", status_code=202, response_model=JobOut, responses=problems(401, 422, 503))
def submit_job(
    spec: TrainingSpec, request: Request, response: Response, owner_id: str = Depends(current_owner)
) -> JobOut:
    """Submit a training job. The spec is checked against the corpora (label type, document
    boundaries for `use_context`, ...); the answer is 202 with the job's URL in `Location`."""
    job = jobs.submit_job(owner_id, spec)
    out = job_out(request, job, with_note=True)
    response.headers["Location"] = out.url
    return out


@router.post("/language-model", status_code=202, response_model=JobOut, responses=problems(401, 422, 503))
def submit_language_model_job(
    spec: LanguageModelSpec, request: Request, response: Response, owner_id: str = Depends(current_owner)
) -> JobOut:
    """Train a character language model on a `text` corpus (job kind `language_model`). Progress,
    metrics, curves, cancel and resume work as for training jobs; one epoch row per training
    file (dev score: validation perplexity, lower is better). On success the model (task
    `language_model`) is what `flair` embeddings reference by `model`."""
    job = jobs.submit_language_model_job(owner_id, spec)
    out = job_out(request, job, with_note=True)
    response.headers["Location"] = out.url
    return out


@router.api_route("/language-model", methods=["GET", "DELETE"], include_in_schema=False, response_model=None)
def language_model_jobs_are_posted() -> NoReturn:
    """405 like any other wrong method on a path. Without this route `GET` and `DELETE
    /jobs/{job_id}` would take the path as the job "language-model" (404): the router prefers a
    route that matches path and method to one that matches the path alone, which is where a 405
    comes from."""
    raise HTTPException(405, headers={"Allow": "POST"})


@router.get("", response_model=JobList, responses=problems(401, 422))
def list_jobs(
    request: Request,
    status: Annotated[Status | None, Query(description="Only jobs in this state.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    cursor: Cursor = None,
    owner_id: str = Depends(current_owner),
) -> JobList:
    """Your jobs, newest first, a page at a time: follow `next` for the rest."""
    page = jobs.list_jobs(owner_id, status, limit, offset, cursor)
    return JobList(
        items=[job_out(request, j) for j in page.items], next=next_url(request, limit, page.cursor)
    )


@router.get("/{job_id}", response_model=JobOut, responses=problems(401, 404))
def get_job(job_id: str, request: Request, owner_id: str = Depends(current_owner)) -> JobOut:
    """Status and progress: epoch, batch, percent, ETA, learning rate, best dev score, error."""
    return job_out(request, jobs.get_job(owner_id, job_id), with_note=True)


@router.get("/{job_id}/metrics", response_model=JobMetrics, responses=problems(401, 404))
def job_metrics(
    job_id: str,
    batches: Annotated[
        bool,
        Query(
            description="With `false`, the epoch rows only (`batches` is empty): what a client that "
            "follows a run needs, at the cost of one row per epoch."
        ),
    ] = True,
    owner_id: str = Depends(current_owner),
) -> JobMetrics:
    """Per-epoch rows (losses, dev/test scores, learning rate) and batch-loss points: at most 200
    per epoch, each the mean loss of the batches since the epoch's previous point, `batch` being
    the last of them and `learning_rate` the rate at that batch (an epoch of up to 200 batches
    has a point per batch)."""
    epochs, losses = jobs.job_metrics(owner_id, job_id, batches=batches)
    return JobMetrics(
        job_id=job_id,
        epochs=[EpochMetricOut.model_validate(e) for e in epochs],
        batches=[
            BatchLossOut(epoch=b.epoch, batch=b.batch, loss=b.loss, learning_rate=b.learning_rate)
            for b in losses
        ],
    )


@router.get(
    "/{job_id}/curves.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "Training curves"}, **problems(401, 404)},
)
def job_curves(job_id: str, owner_id: str = Depends(current_owner)) -> Response:
    """Training curves (batch-loss points and loss per epoch, dev score, learning rate) as a PNG."""
    job = jobs.get_job(owner_id, job_id)
    epochs, batches = jobs.job_metrics(owner_id, job_id)
    png = render_curves(f"{job.name} ({job.status})", epochs, batches)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/{job_id}/files", response_model=JobFileList, responses=problems(401, 404, 503))
def list_job_files(job_id: str, request: Request, owner_id: str = Depends(current_owner)) -> JobFileList:
    """The files the trainer wrote (`training.log`, `loss.tsv`, `weights.txt` and `weights.png`
    with `write_weights`, `test.tsv` with the test predictions), as of the last checkpoint or the
    end of the job; empty until the first epoch ends."""
    return JobFileList(
        items=[
            JobFileOut(
                name=name,
                size_bytes=size,
                url=str(request.url_for("get_job_file", job_id=job_id, name=name)),
            )
            for name, size in jobs.job_files(owner_id, job_id)
        ]
    )


@router.get(
    "/{job_id}/files/{name}",
    response_class=Response,
    responses={
        200: {
            "content": {media: {} for media in dict.fromkeys(RUN_FILES.values())},
            "description": "The file",
        },
        **problems(401, 404, 503),
    },
)
def get_job_file(job_id: str, name: str, owner_id: str = Depends(current_owner)) -> Response:
    """One of the job's files (see `GET /jobs/{job_id}/files`)."""
    data, media_type = jobs.job_file(owner_id, job_id, name)
    return Response(data, media_type=media_type, headers={"Cache-Control": "no-store"})


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"},
        **problems(401, 404),
    },
)
def job_events(job_id: str, request: Request, owner_id: str = Depends(current_owner)) -> StreamingResponse:
    """Server-sent events until the job ends: `progress` (the job, whenever it changes),
    `epoch` (each new per-epoch row) and a final `end` (the job in its final state). While the
    database is unavailable the stream sends `: database unavailable, retrying` comments and goes
    on once it is back; after 5 minutes without it, a final `error` event
    (`{"error": "database-unavailable", "detail": ...}`) ends it."""
    jobs.get_job(owner_id, job_id)
    stream = job_event_stream(
        owner_id,
        job_id,
        render=lambda job: job_out(request, job).model_dump(mode="json"),
        disconnected=request.is_disconnected,
        poll=get_settings().events_poll_seconds,
    )
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.delete("/{job_id}", status_code=204, responses=problems(401, 404, 409))
def delete_job(job_id: str, owner_id: str = Depends(current_owner)) -> Response:
    """Delete a finished job (completed, failed or cancelled) with its metrics, checkpoint and
    files; 409 while it is queued or running. The model it trained stays."""
    jobs.delete_job(owner_id, job_id)
    return Response(status_code=204)


@router.post("/{job_id}/cancel", response_model=JobOut, responses=problems(401, 404, 409))
def cancel_job(job_id: str, request: Request, owner_id: str = Depends(current_owner)) -> JobOut:
    """Cancel: a queued job ends at once; a running one stops at its next batch boundary."""
    return job_out(request, jobs.cancel_job(owner_id, job_id))


@router.post(
    "/{job_id}/resume", status_code=202, response_model=JobOut, responses=problems(401, 404, 409, 503)
)
def resume_job(job_id: str, request: Request, owner_id: str = Depends(current_owner)) -> JobOut:
    """Queue a cancelled or failed job again; it continues from its last checkpoint."""
    return job_out(request, jobs.resume_job(owner_id, job_id))
