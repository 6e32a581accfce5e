"""Atomic output folders: built in a temporary sibling, moved into place only on success.

A failure, Ctrl-C or SIGTERM leaves no half-written output folder behind, and an
existing folder is replaced only with --force.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from hub.errors import InputError


def check_destination(out: Path, force: bool) -> None:
    """Fail before any work is spent if the destination cannot be used."""
    if out.exists() and not force:
        raise InputError("output folder exists; pass --force to replace it or --out to choose another", out)
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a folder", out)
    parent = _existing_ancestor(out)
    if not parent.is_dir():
        raise InputError("a parent of the output folder is not a folder", parent)
    if not os.access(parent, os.W_OK):
        raise InputError("the output folder's parent is not writable", parent)


def _existing_ancestor(out: Path) -> Path:
    """The nearest ancestor of `out` that exists: missing parents are created, as mkdir -p does."""
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


@contextmanager
def atomic_folder(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary folder; on clean exit it becomes `out`, otherwise it is deleted."""
    check_destination(out, force)
    created: list[Path] = []
    tmp: Path | None = None
    done = False
    try:
        _make_parents(out, created)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        with sigterm_as_interrupt():
            yield tmp
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700; the result is an ordinary folder
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
        done = True
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        for folder in [] if done else reversed(created):  # a failure leaves no folders of ours behind
            with contextlib.suppress(OSError):
                folder.rmdir()


def _make_parents(out: Path, created: list[Path]) -> None:
    """Create the missing parents of `out`, outermost first, recording each in `created` as it is made."""
    for folder in [p for p in reversed(out.absolute().parents) if not p.exists()]:
        folder.mkdir(mode=0o777)  # the umask applies, as for mkdir -p
        created.append(folder)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file whole or not at all (a report written with -o), with the user's umask."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError("the output file's folder does not exist", parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a report is an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def to_json(doc: Any) -> str:
    """One JSON document (numpy arrays and paths included), as --json and report.json hold them."""
    return json.dumps(_finite(doc), indent=2, default=_json_default, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    """NaN and infinity as null: JSON has no such numbers (a NaN output's error figures, say)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def current_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so cleanup runs as for Ctrl-C."""

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
