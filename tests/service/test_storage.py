"""The storage contract, for every backend: a local folder and a real S3-compatible server
(SeaweedFS). What the service and the workers rely on: atomic whole files, folder prefixes that
never match a longer name, replace-not-merge folders, and leftovers that can be found and removed."""

from __future__ import annotations

import errno
import io
import os
import socket
import time
from pathlib import Path

import pytest

from service.storage import (
    InvalidStorageKey,
    LocalStorage,
    S3Storage,
    Storage,
    StorageUnavailable,
    get_storage,
)
from service.storage.s3 import parse_s3_url
from tests.s3_server import client


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "root")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Storage(bucket, "deployment/a")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", "a//b", "a/./b", "a b", "a\\b", "ä"])
def test_keys_that_could_escape_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(InvalidStorageKey):
        storage.put(key, b"x")
    with pytest.raises(InvalidStorageKey):
        storage.get(key)


def test_files_round_trip_and_missing_ones_are_file_not_found(storage: Storage) -> None:
    storage.put("a/b/c.txt", b"hello")
    storage.put("a/b/stream.bin", io.BytesIO(b"streamed"))
    assert storage.get("a/b/c.txt") == b"hello"
    with storage.open("a/b/stream.bin") as f:
        assert f.read() == b"streamed"
    storage.put("a/b/c.txt", b"replaced")
    assert storage.get("a/b/c.txt") == b"replaced"
    assert storage.exists("a/b/c.txt") and storage.exists("a/b") and storage.exists("a")
    assert not storage.exists("a/b/d.txt") and not storage.exists("a/b/c")
    for read in (storage.get, storage.open):
        with pytest.raises(FileNotFoundError):
            read("a/b/missing.txt")


def test_a_large_streamed_file_arrives_whole(storage: Storage, tmp_path: Path) -> None:
    # Past S3Storage's multipart threshold (16 MB): uploaded in parts, one object at the end.
    data = os.urandom(20 * 1024 * 1024 + 17)
    storage.put("models/big/weights.safetensors", io.BytesIO(data))
    assert storage.size("models/big") == len(data)
    assert storage.get("models/big/weights.safetensors") == data
    copied = storage.get_dir("models/big", tmp_path / "copy")
    assert (copied / "weights.safetensors").read_bytes() == data


def test_a_prefix_means_a_folder_never_a_longer_name(storage: Storage) -> None:
    storage.put("models/a/config.json", b"{}")
    storage.put("models/ab/config.json", b"{}")
    storage.put("models/a.json", b"{}")
    assert storage.list("models/a") == ["models/a/config.json"]
    assert storage.list("models/a/") == ["models/a/config.json"]
    assert storage.list("models/a.json") == ["models/a.json"]
    assert storage.list() == ["models/a.json", "models/a/config.json", "models/ab/config.json"]
    assert storage.size("models/a") == 2
    storage.delete("models/a")
    assert storage.list() == ["models/a.json", "models/ab/config.json"]


def test_put_dir_replaces_the_folder_and_get_dir_copies_it(storage: Storage, tmp_path: Path) -> None:
    first = tmp_path / "first"
    (first / "sub").mkdir(parents=True)
    (first / "config.json").write_text("{}")
    (first / "sub" / "w.bin").write_bytes(b"12345")
    (first / "old.txt").write_text("gone after the replace")
    storage.put_dir("models/m1", first)
    second = tmp_path / "second"
    (second / "sub").mkdir(parents=True)
    (second / "config.json").write_text('{"v": 2}')
    (second / "sub" / "w.bin").write_bytes(b"67")
    storage.put_dir("models/m1", second)
    assert storage.list("models") == ["models/m1/config.json", "models/m1/sub/w.bin"]
    assert storage.size("models/m1") == len('{"v": 2}') + 2
    out = storage.get_dir("models/m1", tmp_path / "out")
    assert (out / "sub" / "w.bin").read_bytes() == b"67"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "config.json",
        "sub/w.bin",
    ]
    with pytest.raises(FileNotFoundError):
        storage.get_dir("models/none", tmp_path / "none")


def test_delete_takes_a_file_or_a_folder_and_ignores_what_is_missing(storage: Storage) -> None:
    for n in range(3):
        storage.put(f"jobs/j/checkpoints/c/{n}.bin", b"x")
    storage.put("jobs/j/files/f/loss.tsv", b"epoch\n")
    storage.delete("jobs/j/checkpoints/c")
    storage.delete("jobs/j/files/f/loss.tsv")
    storage.delete("never/was")
    assert storage.list() == []
    assert storage.size("jobs") == 0 and storage.last_changed("jobs") is None


def test_last_changed_is_the_newest_write(storage: Storage) -> None:
    started = time.time()
    storage.put("corpora/c/train.txt", b"a")
    changed = storage.last_changed("corpora/c")
    assert changed is not None
    # Object stores keep whole seconds.
    assert started - 1.5 <= changed <= time.time() + 1.5
    assert storage.last_changed("corpora/other") is None


def test_check_passes_on_writable_storage(storage: Storage) -> None:
    storage.check()
    assert storage.list() == []  # the probe leaves nothing behind


def test_leftovers_of_interrupted_writes_are_found_and_removed(storage: Storage) -> None:
    name = _interrupted_write(storage)
    assert storage.stale_temporary(before=time.time() - 3600) == []  # recent: kept
    stale = storage.stale_temporary(before=time.time() + 5)
    assert [(t.name, t.bytes) for t in stale] == [(name, 5 * 1024 * 1024)]
    storage.remove_temporary(name)
    storage.remove_temporary(name)  # already gone: no error
    assert storage.stale_temporary(before=time.time() + 5) == []
    assert storage.list() == []


def _interrupted_write(storage: Storage) -> str:
    """What a write killed half-way leaves: a temporary file, or an unfinished multipart upload."""
    part = b"p" * (5 * 1024 * 1024)
    if isinstance(storage, LocalStorage):
        (storage.root / ".tmp" / "tmp-killed").write_bytes(part)
        return ".tmp/tmp-killed"
    assert isinstance(storage, S3Storage)
    key = storage.prefix + "models/m/weights.safetensors"
    upload = storage.client.create_multipart_upload(Bucket=storage.bucket, Key=key)
    storage.client.upload_part(
        Bucket=storage.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=part
    )
    return f"models/m/weights.safetensors?uploadId={upload['UploadId']}"


def test_deployments_sharing_a_bucket_see_only_their_prefix(s3_bucket: str) -> None:
    a, b = S3Storage(s3_bucket, "a"), S3Storage(s3_bucket, "b")
    a.put("models/m/config.json", b"{}")
    b.put("models/m/config.json", b"[]")
    assert a.list() == b.list() == ["models/m/config.json"]
    assert a.get("models/m/config.json") == b"{}"
    b.delete("models")
    assert a.list() == ["models/m/config.json"] and b.list() == []


def test_storage_url_chooses_the_backend(
    s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.settings import reset_settings

    monkeypatch.setenv("TAGSMITH_STORAGE_URL", f"s3://{s3_bucket}/tagsmith/prod")
    reset_settings()
    try:
        storage = get_storage()
        assert isinstance(storage, S3Storage)
        assert storage.describe() == f"s3://{s3_bucket}/tagsmith/prod/"
        storage.put("corpora/c/train.txt", b"x")
        names = [o["Key"] for o in client(dict(os.environ)).list_objects_v2(Bucket=s3_bucket)["Contents"]]
        assert names == ["tagsmith/prod/corpora/c/train.txt"]
        monkeypatch.setenv("TAGSMITH_STORAGE_URL", str(tmp_path / "folder"))
        reset_settings()
        assert get_storage().describe() == str(tmp_path / "folder")
    finally:
        reset_settings()


def test_a_missing_bucket_fails_the_check(s3_bucket: str) -> None:
    with pytest.raises(Exception, match="NoSuchBucket|Not Found|404"):
        S3Storage(f"{s3_bucket}-missing").check()


@pytest.mark.parametrize(
    ("url", "error"),
    [("s3://", "no bucket"), ("s3:///prefix", "no bucket"), ("s3://b/../up", "letters, digits")],
)
def test_a_wrong_s3_url_is_named(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_s3_url(url)


def test_a_forked_process_gets_storage_of_its_own(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Celery forks training processes: sharing the parent's S3 connection pool would interleave
    # two processes' requests on one socket.
    from service.settings import reset_settings

    monkeypatch.setenv("TAGSMITH_STORAGE_URL", f"s3://{s3_bucket}")
    reset_settings()
    try:
        parent = get_storage()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report whether it got a new instance, and that it works
            child = get_storage()
            child.put("corpora/c/from-child.txt", b"child")
            os.write(write, b"new" if child is not parent else b"same")
            os._exit(0)
        os.close(write)
        answer = os.read(read, 16)
        os.waitpid(pid, 0)
        assert answer == b"new"
        assert parent.get("corpora/c/from-child.txt") == b"child"
        assert get_storage() is parent
    finally:
        reset_settings()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_s3_is_an_outage_in_every_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # What the API turns into 503 and a worker into a later retry, instead of a failure.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # one try per request keeps this quick
    for name, value in {
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    storage = S3Storage("tagsmith", "a")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "f.txt").write_text("x")
    calls = {
        "put": lambda: storage.put("k", b"x"),
        "put stream": lambda: storage.put("k", io.BytesIO(b"x")),
        "get": lambda: storage.get("k"),
        "open": lambda: storage.open("k"),
        "list": lambda: storage.list("models"),
        "exists": lambda: storage.exists("k"),
        "put_dir": lambda: storage.put_dir("models/m", tmp_path / "folder"),
        "get_dir": lambda: storage.get_dir("models/m", tmp_path / "copy"),
        "delete": lambda: storage.delete("models/m"),
        "size": lambda: storage.size("models/m"),
        "check": storage.check,
        "stale_temporary": lambda: storage.stale_temporary(time.time()),
    }
    for name, call in calls.items():
        with pytest.raises(
            StorageUnavailable, match=r"^storage s3://tagsmith/a/ is unavailable: Could not connect"
        ):
            call()
            pytest.fail(f"{name} did not fail")


def test_a_refusal_is_not_an_outage(s3_bucket: str, s3_env: dict[str, str]) -> None:
    # Wrong credentials would fail again on every retry: they stay an error, not a wait.
    from botocore.exceptions import ClientError

    stranger = client({**s3_env, "AWS_ACCESS_KEY_ID": "nobody"})
    with pytest.raises(ClientError) as raised:
        S3Storage(s3_bucket, client=stranger).put("k", b"x")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_which_errors_are_outages(tmp_path: Path) -> None:
    from botocore.exceptions import ClientError

    s3 = S3Storage("b", client=object())

    def answer(status: int, code: str) -> ClientError:
        return ClientError(
            {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
        )

    assert s3.unreachable(answer(503, "SlowDown")) and s3.unreachable(answer(500, "InternalError"))
    assert s3.unreachable(answer(403, "AccessDenied")) is None
    assert s3.unreachable(answer(404, "NoSuchBucket")) is None
    # boto3's transfer manager raises its own error from the client's
    try:
        try:
            raise answer(503, "SlowDown")
        except ClientError as inner:
            raise RuntimeError("upload failed") from inner
    except RuntimeError as wrapped:
        assert s3.unreachable(wrapped)

    local = LocalStorage(tmp_path)
    # a network filesystem whose server went away
    assert local.unreachable(OSError(errno.ESTALE, "Stale file handle"))
    assert local.unreachable(OSError(errno.EIO, "Input/output error"))
    assert local.unreachable(PermissionError(errno.EACCES, "Permission denied")) is None
    assert local.unreachable(FileNotFoundError(errno.ENOENT, "No such file")) is None
    # a full disk, or one remounted read-only, can be put right while the service runs
    assert local.unreachable(OSError(errno.ENOSPC, "No space left on device"))
    assert local.unreachable(OSError(errno.EROFS, "Read-only file system"))


def _model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    (folder / "config.json").write_text("{}", encoding="utf-8")
    return folder


def _disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file copy fails as on a full disk."""
    import shutil

    def full(source: str, target: str) -> str:
        raise OSError(errno.ENOSPC, "No space left on device", target)

    monkeypatch.setattr(shutil, "copy2", full)


def test_a_full_disk_while_storing_a_folder_is_an_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # copytree gathered the copy's OSError into a shutil.Error of strings: a checkpoint on a full
    # disk failed its job at once with a 3,000-character list instead of training on.
    from service.storage import StorageUnavailable

    storage = LocalStorage(tmp_path / "storage")
    folder = _model_folder(tmp_path)
    _disk_full(monkeypatch)
    with pytest.raises(StorageUnavailable, match=r"is unavailable: \[Errno 28\] No space left on device"):
        storage.put_dir("models/m", folder)
    assert not storage.exists("models/m/config.json")
    assert list((tmp_path / "storage" / ".tmp").iterdir()) == []  # nothing half-written


def test_stored_files_are_readable_by_other_users_as_folders_are(tmp_path: Path) -> None:
    # A corpus (put) was 0600 and a model (put_dir) 0644: a worker running as another user, next to
    # the container's, could read the models and not the corpora.
    import stat

    storage = LocalStorage(tmp_path / "storage")
    storage.put("corpora/c/train.txt", b"x")
    storage.put_dir("models/m", _model_folder(tmp_path))
    modes = {
        stat.S_IMODE((tmp_path / "storage" / key).stat().st_mode)
        for key in ("corpora/c/train.txt", "models/m/config.json")
    }
    assert modes == {0o644}


def test_a_full_local_disk_while_copying_out_of_storage_is_not_an_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker's full scratch disk was reported as "storage ... is unavailable" and waited out.
    from service.storage import StorageUnavailable

    storage = LocalStorage(tmp_path / "storage")
    storage.put_dir("models/m", _model_folder(tmp_path))
    _disk_full(monkeypatch)
    with pytest.raises(OSError, match=r"copy: No space left on device") as raised:
        storage.get_dir("models/m", tmp_path / "copy")
    assert not isinstance(raised.value, StorageUnavailable)
