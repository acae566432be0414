"""Storage in an S3-compatible object store (AWS S3, MinIO, SeaweedFS, Ceph RGW, ...).

``TAGSMITH_STORAGE_URL=s3://bucket/optional/prefix``; the endpoint, credentials and region come
from boto3's usual configuration (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, or a profile), so every S3 tool's setup applies.

An object appears whole or not at all, also for multipart uploads, which is the atomic write
the interface promises. Folders have no atomic replace in S3; callers write fresh prefixes and
commit the row that points to them (see ``base``), so none is ever read while written.
An upload cut short leaves an unfinished multipart upload, which the store keeps (and bills)
until it is aborted: those are this backend's temporaries.
"""

from __future__ import annotations

import builtins
import tempfile
import uuid
from pathlib import Path
from typing import Any, BinaryIO

from service.errors import causes
from service.storage.base import Storage, Temporary, check_key, check_prefix

# Files below this go in one PUT; larger ones in parts of this size (boto3's transfer manager).
_MULTIPART_BYTES = 16 * 1024 * 1024
# What S3 accepts per DeleteObjects call.
_DELETE_BATCH = 1000
# Answers that mean the server, not the request, is in trouble (S3's InternalError, SlowDown...).
_SERVER_TROUBLE = frozenset({500, 502, 503, 504})
# ``open`` hands out a seekable local copy; this much stays in memory.
_SPOOL_BYTES = 8 * 1024 * 1024


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ("bucket", "a/b"). ValueError names what is wrong."""
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"TAGSMITH_STORAGE_URL {url!r}: no bucket (use s3://bucket or s3://bucket/prefix)")
    prefix = prefix.strip("/")
    if prefix:
        try:
            check_key(prefix)
        except ValueError:
            raise ValueError(
                f"TAGSMITH_STORAGE_URL {url!r}: the prefix may hold letters, digits, '._-' and '/' only"
            ) from None
    return bucket, prefix


class S3Storage(Storage):
    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.client: Any = client or boto3.client(
            "s3",
            # The number of tries is boto3's (3, or AWS_MAX_ATTEMPTS): past them the caller sees
            # StorageUnavailable, and a training job is retried later as a whole. The read timeout
            # is the longest silence within one response, not a transfer's length: an S3 that
            # answers nothing for 20 s is frozen, and boto3's 60 s held an API request for 3 min.
            config=Config(retries={"mode": "standard"}, connect_timeout=5, read_timeout=20),
        )
        self._transfer = TransferConfig(
            multipart_threshold=_MULTIPART_BYTES, multipart_chunksize=_MULTIPART_BYTES
        )

    # Keys <-> object names.
    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _key(self, name: str) -> str:
        return name[len(self.prefix) :]

    def _objects(self, prefix: str) -> list[dict[str, Any]]:
        """The objects at ``prefix`` (a file) or under ``prefix/`` (a folder); everything for ''."""
        prefix = check_prefix(prefix)
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix
        )
        objects = [o for page in pages for o in page.get("Contents", [])]
        if not prefix:
            return objects
        exact = self.prefix + prefix
        # A listing by prefix also finds "models/ab" for "models/a": keep only the file itself
        # and what lies under the folder.
        return [o for o in objects if o["Key"] == exact or o["Key"].startswith(exact + "/")]

    def put(self, key: str, data: bytes | BinaryIO) -> None:
        name = self._name(key)
        if isinstance(data, bytes | bytearray | memoryview):
            self.client.put_object(Bucket=self.bucket, Key=name, Body=bytes(data))
        else:
            self.client.upload_fileobj(data, self.bucket, name, Config=self._transfer)

    def get(self, key: str) -> bytes:
        # One request and no temporary copy: the callers read small files (run files).
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._name(key))
        except Exception as error:
            if _missing(error):
                raise FileNotFoundError(key) from None
            raise
        return bytes(answer["Body"].read())

    def open(self, key: str) -> BinaryIO:
        # A local copy, not the HTTP stream: readers may take their time or seek, and a stream
        # held open for minutes would be cut by the server.
        copy = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 (returned)
        try:
            self.client.download_fileobj(self.bucket, self._name(key), copy, Config=self._transfer)
        except Exception as error:
            copy.close()
            if _missing(error):
                raise FileNotFoundError(key) from None
            raise
        copy.seek(0)
        return copy  # type: ignore[return-value]

    def delete(self, key: str) -> None:
        self._delete_names([o["Key"] for o in self._objects(key)])

    def _delete_names(self, names: list[str]) -> None:
        for start in range(0, len(names), _DELETE_BATCH):
            batch = names[start : start + _DELETE_BATCH]
            answer = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": n} for n in batch], "Quiet": True}
            )
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise OSError(f"S3 refused to delete {first.get('Key')}: {first.get('Message')}")

    def list(self, prefix: str = "") -> list[str]:
        return sorted(self._key(o["Key"]) for o in self._objects(prefix))

    def exists(self, key: str) -> bool:
        return bool(self._objects(key))

    def put_dir(self, prefix: str, local_dir: Path) -> None:
        prefix = check_prefix(prefix)
        local_dir = Path(local_dir)
        written = set()
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(local_dir).as_posix()}"
            with path.open("rb") as source:
                self.put(key, source)
            written.add(key)
        self._delete_names([self._name(key) for key in self.list(prefix) if key not in written])

    def get_dir(self, prefix: str, local_dir: Path) -> Path:
        prefix = check_prefix(prefix)
        keys = [key for key in self.list(prefix) if key != prefix]
        if not keys:
            raise FileNotFoundError(prefix)
        local_dir = Path(local_dir)
        for key in keys:
            target = local_dir / key[len(prefix) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            self.client.download_file(self.bucket, self._name(key), str(target), Config=self._transfer)
        return local_dir

    def size(self, prefix: str) -> int:
        return sum(int(o["Size"]) for o in self._objects(prefix))

    def check(self) -> None:
        probe = f".probe/{uuid.uuid4().hex}"
        self.put(probe, b"ok")
        self.delete(probe)

    def last_changed(self, prefix: str) -> float | None:
        objects = self._objects(prefix)
        return max(o["LastModified"].timestamp() for o in objects) if objects else None

    def stale_temporary(self, before: float) -> builtins.list[Temporary]:
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        stale = []
        for page in pages:
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() >= before:
                    continue
                parts = self.client.list_parts(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                ).get("Parts", [])
                name = f"{self._key(upload['Key'])}?uploadId={upload['UploadId']}"
                size = sum(int(p["Size"]) for p in parts)
                stale.append(Temporary(name, size, "unfinished multipart upload"))
        return stale

    def remove_temporary(self, name: str) -> None:
        key, _, upload_id = name.partition("?uploadId=")
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._name(key), UploadId=upload_id)
        except Exception as error:
            if not _missing(error):
                raise

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def unreachable(self, error: BaseException) -> str | None:
        from botocore.exceptions import ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as EndpointUnreachable

        for cause in causes(error):
            # refused, reset or timed out connections; a server that answers "busy" or fails
            if isinstance(cause, EndpointUnreachable | HTTPClientError):
                return str(cause)
            if isinstance(cause, ClientError):
                status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status in _SERVER_TROUBLE:
                    return str(cause)
        return None


def _missing(error: Exception) -> bool:
    """Whether boto3 says the object (or upload) is not there."""
    response = getattr(error, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NoSuchUpload", "NotFound"}
