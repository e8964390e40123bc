"""Writing files so that a reader never sees a half-written one: temp file or folder beside the target, then rename."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import TopformerDeployError


def make_readable(path: str | os.PathLike) -> None:
    """Give a temp file (created 0600) the permissions a normal new file gets under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically, creating parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        make_readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_writable(path: str | os.PathLike, what: str, directory: bool = False) -> Path:
    """``path`` if a file (``directory``: a folder) can be made there, else a TopformerDeployError naming ``what``
    (an option such as ``--json``). Checked for real, before the work whose output it is: a file is created and
    removed at once in its folder, or in the nearest existing folder above it (:func:`write_atomic` makes the
    missing ones); nothing is left behind."""
    path = Path(path)

    def refuse(reason: str):
        return TopformerDeployError(f"cannot write {what} {path}: {reason}")

    try:
        if path.exists() and path.is_dir() != directory:
            raise refuse("it is a directory" if path.is_dir() else "it is a file, not a directory")
        folder = path if directory else path.parent
        while not folder.exists():
            folder = folder.parent
        if not folder.is_dir():
            raise refuse(f"{folder.name or folder} is a file, not a directory")
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise refuse(exc.strerror or str(exc)) from None
    return path


def output_failure(what: str, path: str | os.PathLike, exc: BaseException) -> str:
    """The line a user reads when ``what`` (an option such as ``--json``) could not be written at ``path``: the
    system's reason, or the tool's own refusal as it is."""
    if isinstance(exc, TopformerDeployError):
        return f"{what} {path}: {exc}"
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())
    return f"cannot write {what} {path}: {reason or type(exc).__name__}"


def write_json(path: str | os.PathLike, doc, indent: int = 2) -> Path:
    """One JSON document, atomically, with a trailing newline."""
    return write_atomic(path, json.dumps(doc, indent=indent, default=str) + "\n")


@contextlib.contextmanager
def staging_dir(parent: str | os.PathLike, name: str = "staging") -> Iterator[Path]:
    """A hidden scratch folder inside ``parent`` (same file system: its files can be renamed into place),
    removed with whatever is left in it on exit, on error and on Ctrl-C."""
    path = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def cache_root() -> Path:
    """Where the tool keeps what it can rebuild: ``$XDG_CACHE_HOME/topformer-deploy`` (default ``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "topformer-deploy"
