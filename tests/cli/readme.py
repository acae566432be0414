"""Reading the README's examples for the tests: code blocks, the marked curl session, every curl
command (method, path, form fields, JSON body) and the training-spec examples."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
SESSION_START = "<!-- curl-session:start -->"
SESSION_END = "<!-- curl-session:end -->"
README_URL = "http://127.0.0.1:8000"


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


def code_blocks(language: str, text: str | None = None) -> list[str]:
    text = readme_text() if text is None else text
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def curl_session() -> str:
    """The bash code of the marked quick-start session."""
    text = readme_text()
    start, end = text.index(SESSION_START), text.index(SESSION_END)
    blocks = code_blocks("bash", text[start:end])
    if len(blocks) != 1:
        raise AssertionError(f"expected one bash block in the curl session, found {len(blocks)}")
    return blocks[0]


def heredocs(script: str) -> dict[str, str]:
    """``NAME=$(cat <<EOF ... EOF`` bodies by variable name."""
    return dict(re.findall(r"^(\w+)=\$\(cat <<'?EOF'?\n(.*?)\nEOF$", script, flags=re.S | re.M))


@dataclass
class Curl:
    source: str
    method: str
    path: str  # with $VARS turned into {param}
    form: dict[str, str] = field(default_factory=dict)
    data: str | None = None


def _logical_lines(script: str) -> list[str]:
    lines = [line.strip() for line in script.replace("\\\n", " ").splitlines()]
    return [line for line in lines if not line.startswith("#")]


def _strip_command(fragment: str) -> str:
    """The curl command alone: up to an unquoted pipe or the ``)`` that closes ``$(``."""
    depth, quote, out = 0, "", []
    for ch in fragment:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                break
            depth -= 1
        elif ch == "|":
            break
        out.append(ch)
    return "".join(out).strip()


def _path_variables(block: str) -> dict[str, str]:
    """Shell variables set to an API path (``NEXT="/jobs?limit=100"``, a paging loop's first
    page): a curl of ``$API$NEXT`` asks that path."""
    return dict(re.findall(r"""^\s*(\w+)=["']?(/[^"'\s]*)["']?\s*$""", block, flags=re.M))


def parse_curl(command: str, variables: dict[str, str] | None = None) -> Curl:
    args = shlex.split(command, comments=True)
    assert args[0] == "curl", command
    method, url, form, data = None, None, {}, None
    i = 1
    while i < len(args):
        arg = args[i]
        if arg in ("-X", "--request"):
            method = args[i + 1]
            i += 1
        elif arg in ("-F", "--form"):
            name, _, value = args[i + 1].partition("=")
            form[name] = value
            i += 1
        elif arg in ("-d", "--data", "--data-raw", "--data-binary"):
            data = args[i + 1]
            i += 1
        elif arg in ("-H", "--header", "-o", "--output"):
            i += 1
        elif not arg.startswith("-"):
            url = arg
        i += 1
    if url is None:
        raise AssertionError(f"no URL in {command!r}")
    path = re.sub(r"^(\$API|\$\{API\}|https?://[^/]+)", "", url)
    for name, value in (variables or {}).items():
        path = re.sub(rf"^\$\{{?{name}\}}?(?!\w)", lambda _, value=value: value, path)
    path = re.sub(r"\$\{?(\w+)\}?", lambda m: "{" + m.group(1).lower() + "}", path).split("?")[0]
    if method is None:
        method = "POST" if form or data is not None else "GET"
    return Curl(command, method.upper(), path or "/", form, data)


def curl_commands() -> list[Curl]:
    commands = []
    for block in code_blocks("bash"):
        variables = _path_variables(block)
        for line in _logical_lines(block):
            for match in re.finditer(r"(?:^|[\s(])(curl\s.*)", line):
                commands.append(parse_curl(_strip_command(match.group(1)), variables))
                break
    return commands


def spec_examples() -> list[dict[str, Any]]:
    """Every training spec in the README: the ```json blocks with a ``corpus`` and the curl
    session's spec heredoc (its shell variables replaced by an id)."""
    specs = []
    for block in code_blocks("json"):
        value = json.loads(block)
        if isinstance(value, dict) and "corpus" in value:
            specs.append(value)
    for body in heredocs(curl_session()).values():
        specs.append(json.loads(re.sub(r"\$\{?\w+\}?", "00000000-0000-0000-0000-000000000001", body)))
    return specs
