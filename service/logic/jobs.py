"""Training jobs: submit (validate the spec against the corpora, store, enqueue), read,
cancel and resume. The worker does the training; this module only writes the states the API
owns (queued on submit/resume, cancelled for a job no worker holds, the cancel flag)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, or_, select, update

from service import queue as job_queue
from service.db.clock import db_now
from service.db.models import (
    FINISHED_STATUSES,
    JOB_STATUSES,
    Corpus,
    Job,
    JobBatchLoss,
    JobEpochMetric,
    Model,
    queued_again,
)
from service.db.session import rows_changed, session_scope
from service.errors import Conflict, FieldError, Invalid, NotFound, Unavailable
from service.logic.owned import owned, owned_or_404
from service.logic.pages import Listing, Page, fetch_page
from service.logic.text_corpora import TEXT_FORMAT
from service.loss_points import BatchLoss, bounded
from service.run_files import RUN_FILES
from service.schemas.spec import (
    FlairEmbeddingSpec,
    LanguageModelSpec,
    StoredSpecError,
    TrainingSpec,
    TransformerDocumentEmbeddingSpec,
    TransformerWordEmbeddingSpec,
    stored_spec,
)
from service.settings import get_settings
from service.storage import discard, get_storage

log = logging.getLogger(__name__)

TAGGER_KINDS = ("token", "span")


def _label_count_errors(spec: TrainingSpec, label_type: str, corpora: list[Corpus]) -> list[FieldError]:
    """A model needs labels to learn from, and a classifier two classes (the run would learn
    nothing, or fail at its start); and no more than a served model may have (``engine.limits``:
    a CRF over thousands of tags costs seconds and gigabytes a prediction): said at submission,
    not after a queue wait."""
    from engine.limits import label_count_error  # torch: not at the API's import

    counted = [c.statistics.get("train", {}).get("labels") for c in corpora]
    if any(labels is None for labels in counted):
        return []  # statistics without label counts: the run finds out
    classes = {name for labels in counted for name in labels.get(label_type, {})}
    # the stored values are the most common ones only (``corpora.trimmed_statistics``); each
    # corpus's own count of its values is exact
    stored = [c.statistics["train"].get("label_classes", {}).get(label_type, 0) for c in corpora]
    label_count = max(len(classes), *stored)
    if not classes:
        names = ", ".join(f"{c.id} ({c.name})" for c in corpora)
        return [
            FieldError(["body", "label_type"], f"the train split of {names} has no {label_type!r} labels")
        ]
    kind = corpora[0].label_types.get(label_type)
    use_crf = spec.task == "sequence_tagging" and spec.model.use_crf
    too_many = label_count_error(label_count, kind, spec.model.tag_format, use_crf)
    if too_many is not None:
        crf_only = use_crf and label_count_error(label_count, kind) is None
        hint = '; train without it: "model": {"use_crf": false}' if crf_only else ""
        return [FieldError(["body", "label_type"], f"{label_type!r} has {too_many}{hint}")]
    if spec.task == "text_classification" and len(classes) == 1 and spec.model.multi_label is not True:
        return [
            FieldError(
                ["body", "label_type"],
                f"{label_type!r} has one class only in the training data ({classes.pop()!r}): a classifier "
                'needs at least two, or "model": {"multi_label": true} to learn yes/no for that one',
            )
        ]
    return []


def _no_fitting_label_type(spec: TrainingSpec, corpora: list[Corpus], wanted: tuple[str, ...]) -> str:
    """Why no label type can be chosen: what the task needs and what each corpus has."""
    task = "a text classifier" if spec.task == "text_classification" else "a sequence tagger"
    has = []
    for corpus in corpora:
        if corpus.format == TEXT_FORMAT:
            has.append(f"corpus {corpus.id} ({corpus.name}) is a text corpus for language models: no labels")
        else:
            types = ", ".join(f"{n} ({k})" for n, k in sorted(corpus.label_types.items())) or "no labels"
            has.append(f"corpus {corpus.id} ({corpus.name}) has {types}")
    common = "in every corpus " if len(corpora) > 1 else ""
    return f"{task} needs {' or '.join(wanted)} labels {common}and none fits; " + "; ".join(has)


def _check_against_corpora(session: Any, owner_id: str, spec: TrainingSpec) -> TrainingSpec:
    """The checks that need the database; returns the spec with ``label_type`` and ``name`` resolved."""
    errors: list[FieldError] = []
    corpora: list[Corpus] = []
    for i, corpus_id in enumerate(spec.corpus.ids):
        row = owned(session, Corpus, corpus_id, owner_id)
        if row is None:
            errors.append(
                FieldError(["body", "corpus", "ids", i], f"corpus {corpus_id} not found", "not_found")
            )
        else:
            corpora.append(row)
    if errors:
        raise Invalid(errors[0].message, errors)

    wanted = ("sentence",) if spec.task == "text_classification" else TAGGER_KINDS
    label_type = spec.label_type
    if label_type is None:
        common = [
            name
            for name, kind in corpora[0].label_types.items()
            if kind in wanted and all(c.label_types.get(name) == kind for c in corpora[1:])
        ]
        if len(common) != 1:
            message = (
                f"choose the label type to learn: {', '.join(sorted(common))}"
                if common
                else _no_fitting_label_type(spec, corpora, wanted)
            )
            raise Invalid(
                "label_type is required here" if common else message,
                [FieldError(["body", "label_type"], message)],
            )
        label_type = common[0]
    for i, corpus in enumerate(corpora):
        kind = corpus.label_types.get(label_type)
        if kind is None:
            available = ", ".join(f"{n} ({k})" for n, k in sorted(corpus.label_types.items())) or "none"
            errors.append(
                FieldError(
                    ["body", "label_type"],
                    f"corpus {corpus.id} ({corpus.name}) has no label type {label_type!r}; it has: {available}",
                )
            )
        elif kind not in wanted:
            task = "a text classifier" if spec.task == "text_classification" else "a sequence tagger"
            errors.append(
                FieldError(
                    ["body", "label_type"],
                    f"{label_type!r} is a {kind} label in corpus {corpus.id}; {task} needs "
                    f"{' or '.join(wanted)} labels",
                )
            )
        if i and kind is not None and corpora[0].label_types.get(label_type) not in (None, kind):
            errors.append(
                FieldError(["body", "corpus", "ids", i], f"{label_type!r} has another kind in this corpus")
            )
    if not errors:
        errors += _label_count_errors(spec, label_type, corpora)

    # Token embeddings nested in a classifier's document embedding are checked like top-level ones.
    for loc, emb in spec.token_embeddings():
        if isinstance(emb, TransformerWordEmbeddingSpec) and emb.use_context:
            without = [c.id for c in corpora if not c.has_documents]
            if without:
                errors.append(
                    FieldError(
                        [*loc, "use_context"],
                        f"use_context needs document boundaries; corpus {', '.join(without)} has none "
                        "(column files: -DOCSTART- lines, or upload with the reader option "
                        '"whole_file_document": true; CoNLL-U: # newdoc comments)',
                    )
                )
        if isinstance(emb, FlairEmbeddingSpec):
            model = owned(session, Model, emb.model, owner_id)
            # Flair's own examples name hub models ("news-forward"), which this server does not have.
            if model is None:
                errors.append(
                    FieldError(
                        [*loc, "model"],
                        f"model {emb.model} not found: a flair embedding's model is the id of a language "
                        f"model of yours (not a Flair name such as 'news-forward'); {_TRAIN_ONE}",
                    )
                )
            elif model.task != "language_model":
                errors.append(
                    FieldError([*loc, "model"], f"model {emb.model} is not a language model; {_TRAIN_ONE}")
                )
    errors.extend(_check_transformers(spec))
    if errors:
        raise Invalid(errors[0].message, errors)
    name = spec.name or f"{spec.task}-{label_type}"
    return spec.model_copy(update={"label_type": label_type, "name": name})


_TRAIN_ONE = "train one with POST /jobs/language-model, then give its model_id (GET /models lists yours)"


def _check_transformers(spec: TrainingSpec) -> list[FieldError]:
    """Every transformer the spec names is on this server and has the layers asked for."""
    from engine.embeddings.base import EmbeddingConfigError
    from engine.embeddings.transformer import parse_layers
    from service.transformer_models import TransformerNotAvailable, transformer_folder, transformer_shape

    found: list[tuple[list[str | int], TransformerWordEmbeddingSpec | TransformerDocumentEmbeddingSpec]] = [
        (loc, e) for loc, e in spec.token_embeddings() if isinstance(e, TransformerWordEmbeddingSpec)
    ]
    found += [
        (["body", "embeddings", i], e)
        for i, e in enumerate(spec.embeddings)
        if isinstance(e, TransformerDocumentEmbeddingSpec)
    ]
    errors: list[FieldError] = []
    for loc, emb in found:
        try:
            states = transformer_shape(transformer_folder(emb.model), emb.model).hidden_states
        except (TransformerNotAvailable, EmbeddingConfigError) as error:
            errors.append(FieldError([*loc, "model"], str(error)))
            continue
        try:
            parse_layers(emb.layers, states)
        except EmbeddingConfigError as error:
            errors.append(FieldError([*loc, "layers"], f"{emb.model}: {error}"))
    return errors


def _send(job_id: str, queue: str) -> None:
    """Enqueue. When the broker is unreachable the job stays queued without a message: a worker's
    reaper sends it once the broker answers (``queued_lost_seconds`` later). Failing it instead
    made every retry of the client one more failed job, and a resumed job failed."""
    try:
        task_id = job_queue.enqueue_job(job_id, queue)
    except job_queue.NoBroker as e:
        log.warning("job %s stays queued: %s", job_id, e)
        return
    except Exception as e:
        log.warning("job %s stays queued: the job queue is unreachable: %s: %s", job_id, type(e).__name__, e)
        return
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(celery_task_id=task_id))


def submit_job(owner_id: str, spec: TrainingSpec) -> Job:
    with session_scope() as session:
        resolved = _check_against_corpora(session, owner_id, spec)
        job = Job(
            owner_id=owner_id,
            name=resolved.name or "job",
            kind="train",
            spec=resolved.model_dump(mode="json"),
            status="queued",
            queue=resolved.queue(get_settings().default_queue),
            max_epochs=resolved.trainer.max_epochs,
        )
        session.add(job)
    _send(job.id, job.queue)
    return get_job(owner_id, job.id)


def submit_language_model_job(owner_id: str, spec: LanguageModelSpec) -> Job:
    """A job of kind ``language_model``: checks the corpus is the owner's and of format ``text``."""
    with session_scope() as session:
        corpus = owned(session, Corpus, spec.corpus_id, owner_id)
        if corpus is None:
            raise Invalid(
                f"corpus {spec.corpus_id} not found",
                [FieldError(["body", "corpus_id"], f"corpus {spec.corpus_id} not found", "not_found")],
            )
        if corpus.format != TEXT_FORMAT:
            message = (
                f"corpus {spec.corpus_id} has format {corpus.format!r}; a language model trains on a "
                f"'text' corpus (upload one, or make one with POST /corpora/{spec.corpus_id}/text)"
            )
            raise Invalid(message, [FieldError(["body", "corpus_id"], message)])
        resolved = spec.model_copy(update={"name": spec.name or f"language-model-{spec.direction}"})
        job = Job(
            owner_id=owner_id,
            name=resolved.name or "language-model",
            kind="language_model",
            spec=resolved.model_dump(mode="json"),
            status="queued",
            queue=resolved.queue(get_settings().default_queue),
            # A job epoch is one training file; how many there are is known once the worker has
            # cut the text into files (it then sets max_epochs = files x passes).
            max_epochs=None,
        )
        session.add(job)
    _send(job.id, job.queue)
    return get_job(owner_id, job.id)


def get_job(owner_id: str, job_id: str) -> Job:
    with session_scope() as session:
        return owned_or_404(session, Job, job_id, owner_id, "job")


JOBS = Listing("jobs", Job.created_at, Job.id)


def list_jobs(
    owner_id: str, status: str | None = None, limit: int = 100, offset: int = 0, cursor: str | None = None
) -> Page[Job]:
    """Newest first, from ``cursor`` (a page's ``next``) or ``offset``."""
    if status is not None and status not in JOB_STATUSES:
        raise Invalid(
            f"unknown status {status!r}",
            [FieldError(["query", "status"], f"must be one of {', '.join(JOB_STATUSES)}")],
        )
    with session_scope() as session:
        query = select(Job).where(Job.owner_id == owner_id)
        if status is not None:
            query = query.where(Job.status == status)
        return fetch_page(session, query, JOBS, limit, offset, cursor)


def job_metrics(
    owner_id: str, job_id: str, *, batches: bool = True
) -> tuple[list[JobEpochMetric], list[BatchLoss]]:
    """The epoch rows and, with ``batches``, the batch-loss points (the caller renders them)."""
    get_job(owner_id, job_id)
    with session_scope() as session:
        epochs = session.scalars(
            select(JobEpochMetric).where(JobEpochMetric.job_id == job_id).order_by(JobEpochMetric.epoch)
        ).all()
        if not batches:
            return list(epochs), []
        # Plain columns, not ORM objects: up to 200 points an epoch, and a job that ran before the
        # points were bounded may have hundreds of thousands of rows, which are folded as read.
        losses = session.execute(
            select(JobBatchLoss.epoch, JobBatchLoss.batch, JobBatchLoss.loss, JobBatchLoss.learning_rate)
            .where(JobBatchLoss.job_id == job_id)
            .order_by(JobBatchLoss.epoch, JobBatchLoss.batch)
        )
        return list(epochs), list(bounded(BatchLoss(*row) for row in losses))


# a worker replaces the snapshot every epoch: a reader that lost the race reads the row again
_SNAPSHOT_TRIES = 3


def job_files(owner_id: str, job_id: str) -> list[tuple[str, int]]:
    """(name, size in bytes) of each file in the job's newest run-file snapshot."""
    storage = get_storage()
    for _ in range(_SNAPSHOT_TRIES):
        key = get_job(owner_id, job_id).files_key
        if key is None:
            return []
        found = {k.rsplit("/", 1)[-1]: k for k in storage.list(key)}
        if found or key == get_job(owner_id, job_id).files_key:
            return [(name, storage.size(found[name])) for name in RUN_FILES if name in found]
    raise Unavailable(f"the files of job {job_id} kept changing while being read; try again")


def _missing_file_hint(name: str, status: str) -> str:
    """Why a finished job lacks one of its files (it never will have it)."""
    if name in ("weights.txt", "weights.png"):
        return ': its spec did not set "write_weights": true' + (
            ", or it had too few samples to draw" if name == "weights.png" else ""
        )
    if name == "test.tsv":
        return (
            ": its corpus has no test split"
            if status == "completed"
            else f": it ended {status} before testing"
        )
    return ""


def job_file(owner_id: str, job_id: str, name: str) -> tuple[bytes, str]:
    """One file of the job's newest run-file snapshot and its media type."""
    if name not in RUN_FILES:
        raise NotFound(f"job {job_id} has no file {name!r} (a job's files: {', '.join(RUN_FILES)})")
    storage = get_storage()
    for _ in range(_SNAPSHOT_TRIES):
        job = get_job(owner_id, job_id)
        key = job.files_key
        if key is None:
            if job.status in FINISHED_STATUSES and job.epoch > 0:
                # it trained: it ran before Tagsmith kept a job's files
                raise NotFound(f"job {job_id} has no files: it ran on a Tagsmith that did not keep them")
            if job.status in FINISHED_STATUSES:
                raise NotFound(f"job {job_id} wrote no files: it ended {job.status} before training began")
            raise NotFound(f"job {job_id} has written no files yet")
        try:
            return storage.get(f"{key}/{name}"), RUN_FILES[name]
        except FileNotFoundError:
            job = get_job(owner_id, job_id)
            if key == job.files_key:
                hint = _missing_file_hint(name, job.status) if job.status in FINISHED_STATUSES else " (yet)"
                raise NotFound(f"job {job_id} has no {name}{hint}") from None
    raise Unavailable(f"the files of job {job_id} kept changing while being read; try again")


def delete_job(owner_id: str, job_id: str) -> None:
    """A finished job with its metrics, checkpoint and files; the model it trained stays."""
    with session_scope() as session:
        job = owned_or_404(session, Job, job_id, owner_id, "job")
        # Conditional, so a resume that queued the job meanwhile wins; the metric rows go with the
        # job (ON DELETE CASCADE).
        gone = rows_changed(session, delete(Job).where(Job.id == job_id, Job.status.in_(FINISHED_STATUSES)))
        if not gone:
            raise Conflict(f"job {job_id} is {job.status}: cancel it first, then delete it")
    discard(f"jobs/{job_id}")


def cancel_job(owner_id: str, job_id: str) -> Job:
    """A queued job no worker holds ends at once; a running one stops at its next batch boundary."""
    job = get_job(owner_id, job_id)
    if job.status in FINISHED_STATUSES:
        raise Conflict(f"job {job_id} is already {job.status}")
    now = db_now()
    with session_scope() as session:
        ended = rows_changed(
            session,
            update(Job)
            .where(
                Job.id == job_id,
                Job.status == "queued",
                or_(Job.lease_owner.is_(None), Job.lease_expires_at < now),
            )
            .values(
                status="cancelled", cancel_requested=True, finished_at=now, eta_seconds=None, retry_at=None
            )
            .execution_options(synchronize_session=False),
        )
        if not ended:
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status.in_(("queued", "running")))
                .values(cancel_requested=True)
                .execution_options(synchronize_session=False)
            )
    return get_job(owner_id, job_id)


def _deleted_inputs(session: Any, owner_id: str, job: Job) -> list[str]:
    """The corpora and language models a job was built from that are gone (a finished job no longer
    holds its corpus: it may be deleted), so a resume is refused here, not failed by a worker; and
    a stored spec this version cannot run is a 409 naming its field."""
    try:
        if job.kind == "language_model":
            corpora, models = [stored_spec(LanguageModelSpec, job.spec).corpus_id], []
        else:
            spec = stored_spec(TrainingSpec, job.spec)
            corpora = spec.corpus.ids
            models = [e.model for _, e in spec.token_embeddings() if isinstance(e, FlairEmbeddingSpec)]
    except StoredSpecError as e:
        raise Conflict(f"job {job.id} cannot be resumed: {e}") from None
    gone = [
        f"corpus {cid}" for cid in dict.fromkeys(corpora) if owned(session, Corpus, cid, owner_id) is None
    ]
    gone += [
        f"language model {mid}"
        for mid in dict.fromkeys(models)
        if owned(session, Model, mid, owner_id) is None
    ]
    return gone


def resume_job(owner_id: str, job_id: str) -> Job:
    """Queue a cancelled or failed job again; the worker continues from its last checkpoint."""
    job = get_job(owner_id, job_id)
    if job.status not in ("cancelled", "failed"):
        raise Conflict(f"only cancelled or failed jobs can be resumed; job {job_id} is {job.status}")
    with session_scope() as session:
        gone = _deleted_inputs(session, owner_id, job)
        if gone:
            raise Conflict(
                f"job {job_id} cannot be resumed: {', '.join(gone)} deleted since it was submitted"
            )
        changed = rows_changed(
            session,
            update(Job)
            .where(Job.id == job_id, Job.status.in_(("cancelled", "failed")))
            .values(
                **queued_again(),
                cancel_requested=False,
                error=None,
                retry_at=None,
                storage_retries=0,
                finished_at=None,
                lease_owner=None,
                lease_expires_at=None,
            )
            .execution_options(synchronize_session=False),
        )
    if not changed:
        raise Conflict(f"job {job_id} changed state meanwhile; try again")
    _send(job_id, job.queue)
    return get_job(owner_id, job_id)


def epoch_metrics(job_id: str) -> list[JobEpochMetric]:
    """The job's per-epoch rows (the caller has checked the owner)."""
    with session_scope() as session:
        return list(
            session.scalars(
                select(JobEpochMetric).where(JobEpochMetric.job_id == job_id).order_by(JobEpochMetric.epoch)
            ).all()
        )
