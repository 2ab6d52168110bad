"""Files written whole or not at all, one writer per output, and the leftovers of writers that died.

* :func:`atomic_write` — write beside the target (``.NAME.tmp-PID``) and rename over it on success;
  on failure the temp file is removed and the target is untouched. An ``OSError`` becomes a
  :class:`WriteError` naming the file ("no space left on device writing …").
* :func:`exclusive_lock` — an advisory ``flock`` held for a whole run; a second process is refused
  at once with the holder's PID.
* :func:`remove_stale_temps` — temp outputs whose writer (the PID in their name) is gone.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import os
import re
import shutil
from pathlib import Path

__all__ = ["LockError", "WriteError", "atomic_write", "exclusive_lock", "file_sha256", "printable", "remove_stale_temps",
           "strict_json", "temp_name", "write_error"]


class WriteError(Exception):
    """An output that could not be written; the message names the file (one line)."""


class LockError(Exception):
    """An output another live process is writing."""


def printable(path) -> str:
    """A path as text that can be written anywhere: bytes that are not UTF-8 (a file name from
    another system's encoding) appear as ``\\xNN`` escapes instead of breaking the JSON writer."""
    return os.fsdecode(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def file_sha256(path) -> str:
    """The sha256 of a file's bytes, read in 4 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def strict_json(value):
    """``value`` with every NaN and infinity replaced by None (JSON's null), so that what is written
    is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_error(e: OSError, path) -> WriteError:
    if e.errno == errno.ENOSPC:
        return WriteError(f"no space left on device writing {path}")
    if e.errno == errno.EDQUOT:
        return WriteError(f"disk quota exceeded writing {path}")
    return WriteError(f"cannot write {path}: {e.strerror or e}")


def temp_name(path: Path, kind: str = "tmp") -> Path:
    """``DIR/.NAME.KIND-PID``: a temp sibling of ``path`` that names its writer."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}")


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", encoding: str | None = "utf-8", newline: str | None = None):
    """Open a temp file beside ``path`` for writing; it replaces ``path`` when the block completes."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        with open(tmp, mode, encoding=None if "b" in mode else encoding, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise write_error(e, path) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def exclusive_lock(lock_file, what: str):
    """Hold an exclusive advisory lock on ``lock_file`` for the block. Another process holding it
    makes this raise :class:`LockError` at once, naming its PID. The file is left in place
    (removing it would let a third process lock a new file while the second holds the old one)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): one writer is then the user's business
        yield
        return
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise LockError(f"{what} is being written by another shogitrain process (PID {holder}); "
                            f"wait for it or stop it (lock file {lock_file})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


_PID_SUFFIX = re.compile(r"-(\d+)$")


def remove_stale_temps(directory, pattern: str) -> list[Path]:
    """Remove the entries of ``directory`` matching ``pattern`` (a glob) whose name ends in ``-PID``
    of a process that no longer runs; returns what was removed."""
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for entry in directory.glob(pattern):
        match = _PID_SUFFIX.search(entry.name)
        if not match or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        removed.append(entry)
    return removed
