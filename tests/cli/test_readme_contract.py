"""The README's curl examples and training specs match the committed OpenAPI document."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest

from service.schemas.spec import TrainingSpec
from tests.cli.readme import (
    REPO_ROOT,
    Curl,
    curl_commands,
    curl_session,
    heredocs,
    readme_text,
    spec_examples,
)

OPENAPI = REPO_ROOT / "openapi" / "openapi.json"


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return json.loads(OPENAPI.read_text(encoding="utf-8"))


def _template_regex(template: str) -> str:
    parts = re.split(r"\{[^/}]+\}", template)
    return "^" + "[^/]+".join(re.escape(part) for part in parts) + "$"


def _operation(openapi: dict[str, Any], curl: Curl) -> dict[str, Any]:
    for template, operations in openapi["paths"].items():
        if re.match(_template_regex(template), curl.path):
            if curl.method.lower() not in operations:
                raise AssertionError(
                    f"{curl.method} {curl.path}: the API has only {sorted(operations)} there"
                )
            return dict(operations[curl.method.lower()])
    raise AssertionError(f"{curl.method} {curl.path}: no such path in openapi.json ({curl.source})")


def _resolve(openapi: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = openapi["components"]["schemas"][name]
    return schema


def _validator(openapi: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({**schema, "components": openapi["components"]})


def _body_schema(operation: dict[str, Any], content_type: str) -> dict[str, Any]:
    content = operation.get("requestBody", {}).get("content", {})
    if content_type not in content:
        raise AssertionError(f"the operation takes no {content_type} body (it takes {sorted(content)})")
    return dict(content[content_type]["schema"])


def test_readme_has_curl_examples_for_the_whole_flow() -> None:
    paths = {(c.method, c.path) for c in curl_commands()}
    for needed in [
        ("POST", "/corpora"),
        ("POST", "/jobs"),
        ("GET", "/jobs/{job}/events"),
        ("POST", "/models/{model}/predict"),
    ]:
        assert needed in paths, f"the README shows no {needed[0]} {needed[1]}"


def test_every_curl_example_matches_a_path_and_method(openapi: dict[str, Any]) -> None:
    for curl in curl_commands():
        _operation(openapi, curl)


def test_multipart_examples_send_known_and_required_fields(openapi: dict[str, Any]) -> None:
    forms = [c for c in curl_commands() if c.form]
    assert forms, "the README shows no multipart upload"
    for curl in forms:
        schema = _resolve(openapi, _body_schema(_operation(openapi, curl), "multipart/form-data"))
        properties = set(schema.get("properties", {}))
        unknown = set(curl.form) - properties
        assert not unknown, f"{curl.path}: form fields {unknown} are not in the API ({sorted(properties)})"
        missing = set(schema.get("required", [])) - set(curl.form)
        assert not missing, f"{curl.path}: required form fields {missing} are missing in {curl.source!r}"
        if "options" in curl.form:
            assert isinstance(json.loads(curl.form["options"]), dict)


def test_json_bodies_validate_against_their_request_schema(openapi: dict[str, Any]) -> None:
    session_specs = heredocs(curl_session())
    checked = 0
    for curl in curl_commands():
        if curl.data is None or curl.data.startswith("@"):
            continue
        if re.fullmatch(r"\$\{?(\w+)\}?", curl.data):
            name = curl.data.strip("${}")
            assert name in session_specs, f"{curl.source}: ${name} is not defined in the curl session"
            body_text = re.sub(r"\$\{?\w+\}?", "00000000-0000-0000-0000-000000000001", session_specs[name])
        else:
            body_text = curl.data
        body = json.loads(body_text)
        schema = _body_schema(_operation(openapi, curl), "application/json")
        errors = [e.message for e in _validator(openapi, schema).iter_errors(body)]
        assert not errors, f"{curl.method} {curl.path}: {errors}"
        checked += 1
    assert checked >= 3


def test_spec_examples_validate_against_the_training_spec_schema(openapi: dict[str, Any]) -> None:
    jobs = _operation(openapi, Curl("", "POST", "/jobs"))
    validator = _validator(openapi, _body_schema(jobs, "application/json"))
    specs = spec_examples()
    # The tutorial's four scripts (POS, stacked NER and its Flair variant, FLERT, TREC) plus the session's.
    assert len(specs) >= 6
    tasks = {s.get("task") for s in specs}
    assert tasks == {"sequence_tagging", "text_classification"}
    for spec in specs:
        errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(spec)]
        assert not errors, f"{spec.get('name')}: {errors}"
        TrainingSpec.model_validate(spec)


def test_flert_example_is_flert() -> None:
    flert = next(s for s in spec_examples() if s.get("name") == "example-flert")
    assert flert["model"]["use_crf"] is False
    assert flert["model"]["use_rnn"] is False
    assert flert["model"]["reproject_embeddings"] is False
    assert flert["embeddings"][0]["type"] == "transformer"
    assert flert["embeddings"][0]["use_context"] is True


def test_api_table_lists_every_operation(openapi: dict[str, Any]) -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/[^`]*)` \|", readme, flags=re.M))
    for path, operations in openapi["paths"].items():
        for method in operations:
            if method.upper() in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
                assert (method.upper(), path) in documented, f"README API table lacks {method.upper()} {path}"


def test_every_link_inside_the_readme_has_its_heading() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    headings = re.findall(r"^#{1,6} (.+)$", readme, flags=re.M)
    # GitHub's anchors: lower case, punctuation dropped, spaces as dashes.
    anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
    links = set(re.findall(r"\]\(#([^)]+)\)", readme))
    assert links, "no internal links found"
    assert not links - anchors, f"links to no heading: {sorted(links - anchors)}"


def test_the_command_line_section_lists_every_command_and_the_global_options() -> None:
    from service.cli import app

    text = readme_text()
    section = text[text.index("## The command line") : text.index("## Corpora")]
    names = [
        (command.name or command.callback.__name__).replace("_", "-")
        for command in app.registered_commands
        if command.callback
    ]
    missing = [name for name in names if f"| `tagsmith {name}" not in section]
    assert not missing, f"commands missing from the README's table: {missing}"
    for option in ("`--url`", "`--api-key`", "`TAGSMITH_URL`", "`TAGSMITH_API_KEY`", "before the command"):
        assert option in section, option


def test_the_first_tagsmith_command_to_type_says_where_the_command_is() -> None:
    # `tagsmith watch` came up in the curl walkthrough, long before the section that says the
    # command is in .venv/bin: a new user's shell answered "command not found".
    text = readme_text()
    first = re.search(r"`tagsmith (?!up`)[a-z]", text)  # `tagsmith up` is what ./scripts/run runs
    assert first is not None
    paragraph = text[text.rfind("\n\n", 0, first.start()) : text.find("\n\n", first.start())]
    assert ".venv/bin" in paragraph, paragraph
