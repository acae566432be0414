"""Training checkpoints: everything needed to continue a run exactly where it stopped.

Layout of ``checkpoint/`` (state after the last completed epoch):

- ``model/``: the model (``Model.save``: config.json + safetensors + embedding resources);
- ``best-model/``: the best model so far, only when it is not the current one;
- ``optimizer.pt``, ``scheduler.pt``: ``torch.save`` of the state dicts (tensors and plain values);
- ``rng.pt``: torch CPU/CUDA generator states as uint8 tensors;
- ``scaler.pt``: the mixed-precision gradient scaler's state (loss scale, growth tracker), only
  for runs with ``use_amp`` on CUDA;
- ``state.json``: epoch, best score, bad epochs, learning rate, the rows of loss.tsv, the train
  arguments, the Python and NumPy generator states.

Every ``.pt`` file is read with ``torch.load(weights_only=True)``; nothing is unpickled. A
checkpoint is written into a fresh sibling folder and renamed into place, so ``checkpoint/`` is
always either the previous complete checkpoint or the new complete one.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "state.json"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete or from an incompatible run."""


@dataclass
class TrainerState:
    epoch: int
    best_score: float | None
    best_epoch: int | None
    bad_epochs: int
    learning_rate: float
    shuffle_seed: int
    history: list[dict[str, Any]] = field(default_factory=list)
    train_args: dict[str, Any] = field(default_factory=dict)
    train_sentences: int = 0
    train_fingerprint: str = ""  # of the training sentences and labels ("" in older checkpoints)
    eval_fingerprint: str = ""  # of the dev and test sentences and labels ("" in older checkpoints)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "epoch": self.epoch,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "learning_rate": self.learning_rate,
            "shuffle_seed": self.shuffle_seed,
            "history": self.history,
            "train_args": self.train_args,
            "train_sentences": self.train_sentences,
            "train_fingerprint": self.train_fingerprint,
            "eval_fingerprint": self.eval_fingerprint,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainerState:
        return cls(
            epoch=int(data["epoch"]),
            best_score=None if data.get("best_score") is None else float(data["best_score"]),
            best_epoch=None if data.get("best_epoch") is None else int(data["best_epoch"]),
            bad_epochs=int(data["bad_epochs"]),
            learning_rate=float(data["learning_rate"]),
            shuffle_seed=int(data["shuffle_seed"]),
            history=list(data.get("history", [])),
            train_args=dict(data.get("train_args", {})),
            train_sentences=int(data.get("train_sentences", 0)),
            train_fingerprint=str(data.get("train_fingerprint", "")),
            eval_fingerprint=str(data.get("eval_fingerprint", "")),
        )


# -- random number generators ----------------------------------------------------------------------
def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors for rng.pt, JSON for state.json)."""
    tensors: dict[str, torch.Tensor] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda:{i}"] = state
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    assert not isinstance(keys, str)  # the legacy state is a tuple, its keys an array
    return tensors, {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


def _device_number(key: str) -> int:
    return int(key.split(":", 1)[1])


def restore_rng(tensors: dict[str, torch.Tensor], states: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        # by device number: as text, "cuda:10" sorts before "cuda:2"
        cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda:")), key=_device_number)]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = states["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))


# -- writing ---------------------------------------------------------------------------------------
def write_checkpoint(
    target: Path,
    model: Any,
    optimizer_state: dict[str, Any],
    scheduler_state: dict[str, Any],
    state: TrainerState,
    best_model_dir: Path | None,
    scaler_state: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint to ``target`` atomically; ``best_model_dir`` (a saved model
    folder) is copied in when the best model is not the current one."""
    target = Path(target)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        model.save(tmp / "model")
        if best_model_dir is not None:
            shutil.copytree(best_model_dir, tmp / "best-model")
        torch.save(optimizer_state, tmp / "optimizer.pt")
        torch.save(scheduler_state, tmp / "scheduler.pt")
        if scaler_state:
            torch.save(scaler_state, tmp / "scaler.pt")
        rng_tensors, rng_json = capture_rng()
        torch.save(rng_tensors, tmp / "rng.pt")
        payload = state.to_json()
        payload["rng"] = rng_json
        (tmp / STATE_FILE).write_text(json.dumps(payload), encoding="utf-8")
        _fsync_tree(tmp)
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _swap_into_place(tmp: Path, target: Path) -> None:
    """rename(2) cannot replace a non-empty folder, so the old one is first moved aside; between
    the two renames a reader finds the previous checkpoint under ``.<name>.old`` (see
    ``resolve_checkpoint``)."""
    old = target.parent / f".{target.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(path: Path) -> Path:
    """The complete checkpoint at ``path`` (or the previous one a crash between the two renames
    left aside)."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    aside = path.parent / f".{path.name}.old"
    if (aside / STATE_FILE).is_file():
        return aside
    raise CheckpointError(f"{path} is not a checkpoint folder (no {STATE_FILE})")


# -- reading ---------------------------------------------------------------------------------------
@dataclass
class LoadedCheckpoint:
    path: Path
    state: TrainerState
    optimizer_state: dict[str, Any]
    scheduler_state: dict[str, Any]
    rng_tensors: dict[str, torch.Tensor]
    rng_json: dict[str, Any]
    scaler_state: dict[str, Any] | None = None

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def best_model_dir(self) -> Path | None:
        folder = self.path / "best-model"
        return folder if folder.is_dir() else None


def read_checkpoint(path: Path) -> LoadedCheckpoint:
    folder = resolve_checkpoint(path)
    try:
        payload = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{folder / STATE_FILE}: not valid JSON ({error})") from error
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{folder / STATE_FILE}: format_version {payload.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    for name in ("optimizer.pt", "scheduler.pt", "rng.pt"):
        if not (folder / name).is_file():
            raise CheckpointError(f"checkpoint {folder} is missing {name}")
    if not (folder / "model").is_dir():
        raise CheckpointError(f"checkpoint {folder} is missing the model folder")
    return LoadedCheckpoint(
        path=folder,
        state=TrainerState.from_json(payload),
        optimizer_state=_load_tensors(folder / "optimizer.pt"),
        scheduler_state=_load_tensors(folder / "scheduler.pt"),
        rng_tensors=_load_tensors(folder / "rng.pt"),
        rng_json=payload["rng"],
        scaler_state=_load_tensors(folder / "scaler.pt") if (folder / "scaler.pt").is_file() else None,
    )


def _load_tensors(path: Path) -> Any:
    """A checkpoint's ``.pt`` file, tensors and plain containers only (``weights_only``); a damaged
    one names itself (PyTorch says only "failed finding central directory")."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"checkpoint file {path.name} is damaged: {reason}") from error
