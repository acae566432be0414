"""Models trained elsewhere (``model.save(folder)`` in Python, or another Tagsmith's download):
a tar archive of the model folder is unpacked with every member checked, loaded by the engine
(which reads JSON and safetensors only, so nothing in the archive can run), and stored like a
model a job trained.

An upload is untrusted: unpacking counts the bytes it writes against the archive's size (a gzip
of zeros cannot become a large model) and caps every file but the weights at
``engine.limits.MAX_RESOURCE_FILE_BYTES``; the engine then builds the model on PyTorch's meta
device and checks it against the weights file, its tensor memory and its label and CRF tag
counts (``engine.limits``) before building it for real. Every refusal is a 422 naming the
archive member at fault, never a server path."""

from __future__ import annotations

import logging
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from engine.language_model.model import LanguageModel, LanguageModelError, is_language_model_folder
from engine.limits import MAX_RESOURCE_FILE_BYTES
from engine.models import load_model
from engine.serialization import CONFIG_FILE, WEIGHTS_FILE, ModelFileError
from service.db.models import Model
from service.errors import FieldError, Invalid, exhausted_resource
from service.logic.models import register_model
from service.process_folders import REQUESTS_KIND, own_folder
from service.schemas.spec import name_from_file
from service.settings import get_settings

log = logging.getLogger(__name__)

FIELD = "file"
MAX_MEMBERS = 10_000
# Weights barely compress (float weights about 1.1x), word lists and tokenizers do (about 3x); a
# legitimate model unpacks to well under both limits. The absolute one scales with the upload
# limit; the ratio one with the bytes actually received, so that a small archive of zeros (a
# 1 MB gzip of a 1 GB weights file) cannot become a large model, with a small allowance so that
# tiny models (a few kB of JSON) always fit.
UNPACKED_FACTOR = 4
UNPACKED_RATIO = 32
UNPACKED_ALLOWANCE = 16 * 1024 * 1024
_MB = 1024 * 1024


def _refuse(message: str, member: str | None = None) -> Invalid:
    extra = {"member": member} if member is not None else {}
    return Invalid(message, [FieldError(["body", FIELD], message, "model_archive", extra)])


def import_model(owner_id: str, name: str | None, filename: str, stream: BinaryIO) -> Model:
    """Unpack, load and store one model archive; on any refusal nothing is stored. ``stream``
    must be seekable (the upload's spooled file is read in place, not copied)."""
    with tempfile.TemporaryDirectory(prefix="import-", dir=own_folder(REQUESTS_KIND)) as tmp:
        root = Path(tmp)
        _unpack(stream, root, filename)
        folder = _model_folder(root)
        task, label_type, labels = _describe(folder, root)
        return register_model(
            owner_id,
            folder,
            name=name or name_from_file(filename, "model", (".tar.gz", ".tgz", ".tar")),
            task=task,
            label_type=label_type,
            labels=labels,
        )


def _unpack(archive: BinaryIO, root: Path, filename: str) -> None:
    """Regular files and folders only, every path inside ``root``, within the size limits
    (counted on the bytes written, not on what the members' headers declare)."""
    budget, limit = _unpack_budget(archive)
    total = count = 0
    files: set[PurePosixPath] = set()
    folders: set[PurePosixPath] = set()
    parents: set[PurePosixPath] = set()  # folders that files are in, named or not

    def too_large() -> Invalid:
        return _refuse(f"{filename}: unpacks to more than {budget / _MB:.1f} MB ({limit})")

    try:
        with _open(archive, filename) as tar:
            for member in tar:
                count += 1
                if count > MAX_MEMBERS:
                    raise _refuse(f"{filename}: more than {MAX_MEMBERS} entries; a model folder has a few")
                path = _member_path(member)
                if member.isdir():
                    if path in files:
                        raise _refuse(f"{member.name}: both a file and a folder", member.name)
                    folders.add(path)
                    continue
                if not member.isfile():
                    raise _refuse(
                        f"{member.name}: links and special files are not allowed, only files and folders",
                        member.name,
                    )
                if (
                    path in files
                    or path in folders
                    or path in parents
                    or any(p in files for p in path.parents)
                ):
                    raise _refuse(f"{member.name}: appears twice or inside a file", member.name)
                # a parsed file (anything but the weights) may be at most MAX_RESOURCE_FILE_BYTES
                file_limit = None if path.name == WEIGHTS_FILE else MAX_RESOURCE_FILE_BYTES
                if file_limit is not None and member.size > file_limit:
                    raise _resource_too_large(member.name)
                if total + member.size > budget:
                    raise too_large()
                files.add(path)
                parents.update(path.parents)
                target = root.joinpath(*path.parts)
                source = tar.extractfile(member)
                assert source is not None  # a regular file always has content
                written = 0
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    out = target.open("wb")
                except OSError as error:  # a name too long for the file system, say
                    if exhausted_resource(error) is not None:
                        raise  # this server's disk, not the archive
                    reason = error.strerror or type(error).__name__  # str(error) holds our path
                    raise _refuse(f"{member.name}: cannot be unpacked ({reason})", member.name) from None
                with source, out:
                    while chunk := source.read(_MB):
                        written += len(chunk)
                        total += len(chunk)
                        if file_limit is not None and written > file_limit:
                            raise _resource_too_large(member.name)
                        if total > budget:
                            raise too_large()
                        out.write(chunk)
    except (tarfile.TarError, EOFError, zlib.error) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise _refuse(f"{filename} is truncated or corrupt ({reason})") from None
    if not files:
        raise _refuse(f"{filename}: the archive holds no files")


def _unpack_budget(archive: BinaryIO) -> tuple[int, str]:
    """The most bytes the archive may unpack to, and which limit that is (in words)."""
    upload_limit = get_settings().max_model_upload_bytes
    start = archive.tell()
    archive.seek(0, 2)
    received = archive.tell() - start
    archive.seek(start)
    by_size = UNPACKED_FACTOR * upload_limit
    by_ratio = UNPACKED_RATIO * received + UNPACKED_ALLOWANCE
    if by_ratio < by_size:
        return by_ratio, (
            f"{UNPACKED_RATIO} x the archive's {received} bytes + {UNPACKED_ALLOWANCE // _MB} MB: model "
            "weights barely compress, so an archive that expands more is not a model folder"
        )
    return by_size, f"{UNPACKED_FACTOR} x TAGSMITH_MAX_MODEL_UPLOAD_MB"


def _resource_too_large(member: str) -> Invalid:
    return _refuse(
        f"{member}: more than {MAX_RESOURCE_FILE_BYTES // _MB} MB; a model folder's files other than "
        f"{WEIGHTS_FILE} (configs, word lists such as vocab.json, tokenizer files) may be at most "
        f"{MAX_RESOURCE_FILE_BYTES // _MB} MB each",
        member,
    )


def _open(archive: BinaryIO, filename: str) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=archive, mode="r:*")
    except (tarfile.TarError, EOFError, zlib.error):
        raise _refuse(
            f"{filename} is not a tar archive (plain, gzip, bzip2 or xz); send a .tar.gz of the model "
            "folder, as GET /models/{id}/download gives"
        ) from None


def _member_path(member: tarfile.TarInfo) -> PurePosixPath:
    path = PurePosixPath(member.name)
    parts = [p for p in path.parts if p not in (".", "")]
    if not parts and member.isdir() and not path.is_absolute():
        # `tar czf m.tar.gz -C folder .` starts with the folder itself as "./": the archive's
        # root, which unpacking already has; the caller files it as a folder and moves on.
        return PurePosixPath()
    if path.is_absolute() or ".." in parts or not parts:
        raise _refuse(f"{member.name}: a path outside the archive's folder", member.name)
    return PurePosixPath(*parts)


def _model_folder(root: Path) -> Path:
    """``config.json`` at the top, or in the archive's one top-level folder (the download's
    layout: ``model/config.json``)."""
    if (root / CONFIG_FILE).is_file():
        return root
    # macOS tar adds "._name" companions (extended attributes) and Finder ".DS_Store" files.
    entries = [e for e in root.iterdir() if not e.name.startswith("._") and e.name != ".DS_Store"]
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / CONFIG_FILE).is_file():
        return entries[0]
    raise _refuse(
        f"no {CONFIG_FILE} at the archive's top or in its one top-level folder: "
        "archive the folder that model.save() wrote"
    )


def _describe(folder: Path, root: Path) -> tuple[str, str, list[str]]:
    """Task, label type and labels, read off the loaded model (loading is the validation)."""
    try:
        if is_language_model_folder(folder):
            language_model = LanguageModel.load(folder, untrusted=True)
            return "language_model", language_model.direction, []
        model = load_model(folder, untrusted=True)
    except ModelFileError as error:
        where = _inside(error.path, root)
        # a reason may name another file of the archive: by its member name, not the server's path
        raise _refuse(f"{where}: {error.reason.replace(f'{root}/', '')}", where) from None
    except LanguageModelError as error:
        raise _refuse(str(error).replace(f"{root}/", "")) from None
    except Exception as error:  # an upload is untrusted input: whatever breaks loading is its fault
        log.warning("model import: loading failed", exc_info=True)
        message = str(error).replace(f"{root}/", "")
        raise _refuse(f"the model does not load: {type(error).__name__}: {message}") from None
    return model.task, model.label_type, model.label_names()


def _inside(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name
