"""Every setting the code reads is documented in the README and passed through by docker-compose."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic_settings import BaseSettings

from service.settings import Settings
from tests.cli.readme import REPO_ROOT, readme_text
from worker.settings import WorkerSettings

SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (Settings, WorkerSettings)
SCANNED = ("engine", "service", "worker", "bench", "scripts", "tests", ".ci", "Dockerfile")
ENV_NAME = re.compile(r"\bTAGSMITH_[A-Z][A-Z0-9_]*[A-Z0-9]\b")


def _settings_env_names() -> dict[str, str]:
    """Environment variable -> field description, for every pydantic-settings field."""
    names: dict[str, str] = {}
    for cls in SETTINGS_CLASSES:
        prefix = str(cls.model_config.get("env_prefix", ""))
        assert prefix == "TAGSMITH_", f"{cls.__name__} reads variables without the TAGSMITH_ prefix"
        for name, info in cls.model_fields.items():
            names[f"{prefix}{name}".upper()] = info.description or ""
    return names


def _env_names_in_code() -> set[str]:
    found: set[str] = set()
    for entry in SCANNED:
        root = REPO_ROOT / entry
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in files:
            if path.suffix in {".pyc", ".png", ".safetensors"} or "__pycache__" in path.parts:
                continue
            try:
                found.update(ENV_NAME.findall(path.read_text(encoding="utf-8")))
            except UnicodeDecodeError:
                continue
    return found


def _compose_env(service: str) -> dict[str, str]:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return {str(k): str(v) for k, v in (compose["services"][service].get("environment") or {}).items()}


def test_settings_classes_define_the_fixed_names() -> None:
    names = _settings_env_names()
    for fixed in (
        "TAGSMITH_DATABASE_URL",
        "TAGSMITH_BROKER_URL",
        "TAGSMITH_STORAGE_URL",
        "TAGSMITH_DATA_DIR",
        "TAGSMITH_ADMIN_KEY",
    ):
        assert fixed in names


def test_every_setting_and_env_var_is_in_the_readme_settings_tables() -> None:
    documented = set(re.findall(r"^\| `(TAGSMITH_[A-Z0-9_]+)` \|", readme_text(), flags=re.M))
    wanted = set(_settings_env_names()) | _env_names_in_code()
    missing = sorted(wanted - documented)
    assert not missing, f"README lacks a settings-table row for {missing}"
    stale = sorted(documented - wanted)
    assert not stale, f"README documents variables no code reads: {stale}"


def test_compose_passes_every_service_setting_to_api_and_worker() -> None:
    settings = _settings_env_names()
    # Test-only knobs stay out of a deployment.
    deployable = {name for name, description in settings.items() if not description.startswith("TEST ONLY")}
    for service in ("api", "worker", "worker-gpu", "migrate"):
        env = _compose_env(service)
        missing = sorted(deployable - set(env))
        assert not missing, f"docker-compose service {service} does not set {missing}"
        unknown = sorted(name for name in env if name.startswith("TAGSMITH_") and name not in settings)
        assert not unknown, f"docker-compose service {service} sets {unknown}, which no setting reads"


def test_compose_variables_are_documented() -> None:
    text = (REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    variables = set(re.findall(r"\$\{(\w+)", text))
    documented = set(re.findall(r"^\| `(\w+)` \|", readme_text(), flags=re.M))
    missing = sorted(variables - documented)
    assert not missing, f"README does not document the compose variables {missing}"


def test_scanned_folders_exist() -> None:
    # A renamed folder would silently shrink the scan above.
    for entry in ("engine", "service", "worker", "tests", "scripts"):
        assert Path(REPO_ROOT / entry).exists(), entry


def _same_default(shown: str, default: object) -> bool:
    """Whether a default as the README or docker-compose writes it is the code's ``default``."""
    if isinstance(default, bool):
        return shown.lower() == str(default).lower()
    if isinstance(default, int | float):
        try:
            return float(shown) == float(default)
        except ValueError:
            return False
    return shown == str(default)


def _defaults() -> dict[str, object]:
    defaults: dict[str, object] = {}
    for cls in SETTINGS_CLASSES:
        for name, info in cls.model_fields.items():
            if isinstance(info.default, bool | int | float | str | Path):
                defaults[f"TAGSMITH_{name}".upper()] = info.default
    return defaults


def test_readme_and_compose_defaults_are_the_code_defaults() -> None:
    # The README and docker-compose said TAGSMITH_PREDICT_THREADS defaults to 2; the code's is 1.
    defaults = _defaults()
    readme_rows = re.findall(r"^\| `(TAGSMITH_[A-Z0-9_]+)` \| `([^`]*)`", readme_text(), flags=re.M)
    assert len(readme_rows) > 20, "the settings table's format changed: update this test"
    wrong = [
        f"{name}: README `{shown}`, code {defaults[name]!r}"
        for name, shown in readme_rows
        # an empty default means something else in each setting, which the README says
        if name in defaults and defaults[name] != "" and not _same_default(shown, defaults[name])
    ]
    assert not wrong, wrong
    compose = (REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    compose_rows = re.findall(r"^\s+(TAGSMITH_\w+): \$\{\1:-([^}]*)\}", compose, flags=re.M)
    assert len(compose_rows) > 20, "docker-compose.yml's format changed: update this test"
    wrong = [
        f"{name}: docker-compose {shown!r}, code {defaults[name]!r}"
        for name, shown in compose_rows
        # where the code's default is empty (a path in the data folder ...), compose names the container's
        if name in defaults and defaults[name] != "" and not _same_default(shown, defaults[name])
    ]
    assert not wrong, wrong
