"""The transformer models a training spec may name, and where they are.

A spec names a model, never a path: one installed with Tagsmith (``all-MiniLM-L6-v2``) or a
folder in ``TAGSMITH_TRANSFORMERS_DIR``. A path would let any API user make a worker read any
folder on its machine. The API checks names and layers when a job is submitted, so a mistake is
a 422 and not a job that fails later; the worker resolves the name again on its own machine.
Imported by the worker: no FastAPI here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine.embeddings.base import EmbeddingConfigError
from engine.embeddings.transformer import (
    MODEL_ALIASES,
    check_model_folder,
    resolve_model_path,
)
from service.schemas.spec import TRANSFORMER_NAME
from service.settings import get_settings


class TransformerNotAvailable(ValueError):
    """The name is neither installed nor a model folder in TAGSMITH_TRANSFORMERS_DIR."""


def available_transformers() -> list[str]:
    """The names a spec may use here: the installed aliases, then the model folders."""
    root = get_settings().transformers_root
    folders = (
        sorted(
            p.name
            for p in root.iterdir()
            if TRANSFORMER_NAME.fullmatch(p.name) and (p / "config.json").is_file()
        )
        if root.is_dir()
        else []
    )
    return [*MODEL_ALIASES, *folders]


def transformer_folder(name: str) -> str:
    """The model folder for a spec's transformer name on this machine."""
    if name.lower() in MODEL_ALIASES:
        return resolve_model_path(name)
    folder = get_settings().transformers_root / name
    if TRANSFORMER_NAME.fullmatch(name) and (folder / "config.json").is_file():
        return str(folder)
    raise TransformerNotAvailable(
        f"no transformer {name!r} on this server; available: {', '.join(available_transformers())} "
        f"(a model folder with config.json in TAGSMITH_TRANSFORMERS_DIR is available by its folder name)"
    )


@dataclass(frozen=True)
class TransformerShape:
    hidden_states: int  # the embedding layer and every transformer layer: what `layers` indexes
    hidden_size: int


def transformer_shape(folder: str, name: str) -> TransformerShape:
    """The shape of the model ``name`` in ``folder``. Raises EmbeddingConfigError unless the folder
    holds what a worker needs to load it (config, safetensors weights, tokenizer), so the mistake
    is found before a job is queued."""
    from transformers import AutoConfig

    from engine.embeddings.transformer import LOCAL_ONLY

    check_model_folder(folder, repr(name))  # not the server's path: the API shows this message
    try:
        config = AutoConfig.from_pretrained(folder, **LOCAL_ONLY)
        return TransformerShape(int(config.num_hidden_layers) + 1, int(config.hidden_size))
    except (OSError, ValueError, AttributeError, TypeError) as error:
        raise EmbeddingConfigError(f"cannot read the config.json of {name!r}: {error}") from error


@dataclass(frozen=True)
class TransformerInfo:
    name: str
    source: Literal["installed", "transformers_dir"]  # a Python package, or a folder there
    shape: TransformerShape | None
    problem: str | None  # why a spec naming it would be refused; None when it is usable


def describe_transformers() -> list[TransformerInfo]:
    """Every name ``available_transformers`` lists, with its shape or what is wrong with it."""
    infos = []
    for name in available_transformers():
        source: Literal["installed", "transformers_dir"] = (
            "installed" if name in MODEL_ALIASES else "transformers_dir"
        )
        try:
            shape = transformer_shape(transformer_folder(name), name)
        except (EmbeddingConfigError, TransformerNotAvailable) as error:
            infos.append(TransformerInfo(name, source, None, str(error)))
        else:
            infos.append(TransformerInfo(name, source, shape, None))
    return infos
