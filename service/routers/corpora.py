from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile

from engine.readers.files import invalid_unicode
from service.deps import current_owner
from service.errors import FieldError, Invalid, json_refusal
from service.logic import corpora, text_corpora
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
from service.schemas.api import CorpusList, CorpusOut, TextCorpusCreate
from service.schemas.spec import Name, name_from_file

router = APIRouter(prefix="/corpora", tags=["corpora"], route_class=TextJSONRoute)


def corpus_out(row: Any) -> CorpusOut:
    return CorpusOut.model_validate(
        {
            "id": row.id,
            "name": row.name,
            "task": row.task,
            "format": row.format,
            "options": row.options,
            "label_types": row.label_types,
            "has_documents": row.has_documents,
            "statistics": corpora.trimmed_statistics(row.statistics, corpora.SHOWN_LABEL_VALUES),
            "splits": sorted(row.files, key=corpora.SPLITS.index),
            "created_at": row.created_at,
        }
    )


def _json_object(raw: str, field: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as e:
        reason = json_refusal(e)
        raise Invalid(
            f"{field} is not valid JSON: {reason}", [FieldError(["body", field], f"invalid JSON: {reason}")]
        ) from None
    if not isinstance(value, dict):
        raise Invalid(
            f"{field} must be a JSON object", [FieldError(["body", field], "must be a JSON object")]
        )
    problem = invalid_unicode(value)
    if problem is not None:
        raise Invalid(f"{field}: {problem}", [FieldError(["body", field], problem)])
    return value


def _options(raw: str | None) -> dict[str, Any]:
    return _json_object(raw, "options") if raw is not None and raw.strip() else {}


UPLOAD_PROBLEMS = {
    413: "Upload too large: more than `TAGSMITH_MAX_UPLOAD_MB`, or its files took longer to read than "
    "`TAGSMITH_CORPUS_READ_TIMEOUT_SECONDS` allows (nothing is stored)",
    503: "A dependency (queue, database, storage) is unavailable, or the process reading the files ended "
    "(most likely out of memory); try again later",
}


@router.post(
    "",
    status_code=201,
    response_model=CorpusOut,
    responses=problems(401, 413, 422, 503, notes=UPLOAD_PROBLEMS),
)
def create_corpus(
    request: Request,
    response: Response,
    format: Annotated[str, Form(description=f"One of: {', '.join(corpora.FORMATS)}.")],
    train: Annotated[UploadFile, File(description="Training split.")],
    dev: Annotated[UploadFile | None, File(description="Development split (default: 10% of train).")] = None,
    test: Annotated[UploadFile | None, File(description="Test split.")] = None,
    name: Annotated[Name, Form(max_length=200)] = None,
    options: Annotated[
        str | None,
        Form(
            description="Reader options as a JSON object (see each format's options), e.g. "
            '`{"column_map": {"0": "text", "3": "ner"}}`.'
        ),
    ] = None,
    column_map: Annotated[
        str | None,
        Form(description='Column format: column index -> name as JSON, e.g. `{"0": "text", "3": "ner"}`.'),
    ] = None,
    text_column: Annotated[
        str | None, Form(description="CSV/TSV/JSONL: the text's header name, JSON key or 0-based index.")
    ] = None,
    label_column: Annotated[
        str | None, Form(description="CSV/TSV/JSONL: the label's header name, JSON key or 0-based index.")
    ] = None,
    owner_id: str = Depends(current_owner),
    _fields: None = Depends(each_form_field_once),
) -> CorpusOut:
    """Upload a corpus: the files are validated with the engine's readers (422 names the file,
    line and reason) and stored only when every file reads. Format `text` is plain UTF-8 text
    for language models, one sentence or paragraph per line (no labels, no options). Reader options come from `options`;
    `column_map`, `text_column` and `label_column` are shortcuts for the common ones."""
    uploads = [
        corpora.Upload(split, f.filename or split, f.file)
        for split, f in (("train", train), ("dev", dev), ("test", test))
        if f is not None
    ]
    reader_options = _options(options)
    shortcuts: dict[str, str] = {}
    if column_map is not None:
        reader_options["column_map"] = _json_object(column_map, "column_map")
        shortcuts["column_map"] = "column_map"
    for key, value in (("text_column", text_column), ("label_column", label_column)):
        if value is not None:
            digits = value.strip()
            # isascii: str.isdigit also accepts digits (e.g. superscripts) that int() refuses.
            reader_options[key] = int(digits) if digits.isascii() and digits.isdigit() else value
            shortcuts[key] = key
    row = corpora.create_corpus(
        owner_id,
        name or name_from_file(train.filename or "", "corpus"),
        format,
        reader_options,
        uploads,
        option_fields=shortcuts,
    )
    response.headers["Location"] = str(request.url_for("get_corpus", corpus_id=row.id))
    return corpus_out(row)


@router.post(
    "/{corpus_id}/text",
    status_code=201,
    response_model=CorpusOut,
    responses=problems(401, 404, 409, 422, 503, notes=STORED_READ_PROBLEMS),
)
def create_text_corpus(
    corpus_id: str,
    request: Request,
    response: Response,
    body: TextCorpusCreate | None = None,
    owner_id: str = Depends(current_owner),
) -> CorpusOut:
    """Make a language-model corpus (format `text`) from the text of an uploaded corpus: one line
    per sentence, split by split, no labels. The source corpus is unchanged. Its files are read in a
    process of their own under `TAGSMITH_CORPUS_READ_TIMEOUT_SECONDS` (409 past it)."""
    row = text_corpora.text_corpus_from(owner_id, corpus_id, body.name if body else None)
    response.headers["Location"] = str(request.url_for("get_corpus", corpus_id=row.id))
    return corpus_out(row)


@router.get("", response_model=CorpusList, responses=problems(401, 422))
def list_corpora(
    request: Request,
    limit: Limit = 100,
    offset: Offset = 0,
    cursor: Cursor = None,
    owner_id: str = Depends(current_owner),
) -> CorpusList:
    """Your corpora, newest first, a page at a time: follow `next` for the rest."""
    page = corpora.list_corpora(owner_id, limit, offset, cursor)
    return CorpusList(items=[corpus_out(r) for r in page.items], next=next_url(request, limit, page.cursor))


@router.get("/{corpus_id}", response_model=CorpusOut, responses=problems(401, 404))
def get_corpus(corpus_id: str, owner_id: str = Depends(current_owner)) -> CorpusOut:
    return corpus_out(corpora.get_corpus(owner_id, corpus_id))


@router.delete("/{corpus_id}", status_code=204, responses=problems(401, 404, 409))
def delete_corpus(corpus_id: str, owner_id: str = Depends(current_owner)) -> Response:
    """Delete a corpus and its files (409 while a queued or running job uses it)."""
    corpora.delete_corpus(owner_id, corpus_id)
    return Response(status_code=204)
