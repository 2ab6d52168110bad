"""Record files inside archives, read member by member without extracting anything to disk.

``.zip`` and ``.tar`` allow random access: :func:`archive_members` lists their record members and
:func:`read_member` reads one (in a worker process, from an archive it keeps open). ``.tar.gz`` /
``.tgz``, ``.tar.xz`` / ``.txz``, ``.tar.bz2`` / ``.tbz2`` and ``.7z`` (py7zr, the optional extra
``shogitrain[archives]``) are compressed streams: :func:`archive_members` has a process of its own
decompress them once, in order, and hands on each record member with its bytes (the members held
at a time: those in the pipe from that process). A member is named ``ARCHIVE!MEMBER`` in reports.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from dataclasses import dataclass

from shogitrain.readahead import produced_in_process

__all__ = ["ARCHIVE_SUFFIXES", "ArchiveMember", "ArchiveError", "archive_kind", "archive_members", "read_member",
           "close_archives", "require_support"]

_KINDS = {".zip": "zip", ".tar": "tar", ".tar.gz": "stream", ".tgz": "stream", ".tar.xz": "stream",
          ".txz": "stream", ".tar.bz2": "stream", ".tbz2": "stream", ".7z": "7z"}
ARCHIVE_SUFFIXES = tuple(_KINDS)
INSTALL_7Z = 'reading .7z archives needs py7zr: pip install "shogitrain[archives]"'


class ArchiveError(Exception):
    """An archive that cannot be opened or read on (the message names it)."""


@dataclass(frozen=True)
class ArchiveMember:
    """One record file inside an archive; ``data`` is None where the worker reads it (zip, tar)."""

    archive: str
    name: str
    index: int            # among the archive's record members
    last: bool            # the archive's last record member
    size: int
    offset: int | None = None   # tar: where the member's bytes start
    data: bytes | None = None
    sha256: str = ""            # of the whole archive (set by whoever hashed it)

    @property
    def path(self) -> str:
        return f"{self.archive}!{self.name}"


def archive_kind(path) -> str | None:
    """'zip', 'tar', 'stream' (compressed tar), '7z', or None when ``path`` is not an archive by name."""
    name = str(path).lower()
    return next((kind for suffix, kind in _KINDS.items() if name.endswith(suffix)), None)


def require_support(path) -> None:
    """Raise ArchiveError naming the missing optional dependency when ``path`` cannot be read here."""
    if archive_kind(path) == "7z":
        try:
            import py7zr  # noqa: F401
        except ImportError:
            raise ArchiveError(f"{path}: {INSTALL_7Z}") from None


def _records(names_sizes, suffixes):
    return [(n, s, o) for n, s, o in names_sizes if "." + n.rsplit(".", 1)[-1].lower() in suffixes]


def _mark(path: str, members) -> list[ArchiveMember]:
    return [ArchiveMember(path, name, i, i == len(members) - 1, size, offset)
            for i, (name, size, offset) in enumerate(members)]


def archive_members(path, suffixes):
    """The record members (name ending in one of ``suffixes``) of the archive ``path``, in archive order.
    Raises ArchiveError — for a stream, possibly after the members before the damage."""
    path = str(path)
    kind = archive_kind(path)
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as z:
                found = [(i.filename, i.file_size, None) for i in z.infolist() if not i.is_dir()]
            yield from _mark(path, _records(found, suffixes))
        elif kind == "tar":
            with tarfile.open(path, "r:") as t:
                found = [(m.name, m.size, m.offset_data) for m in t if m.isfile()]
            yield from _mark(path, _records(found, suffixes))
        elif kind == "stream":
            yield from _with_last(path, produced_in_process(_tar_stream, path, suffixes))
        else:
            require_support(path)       # here, not in the reading process: one line naming the extra
            yield from _with_last(path, produced_in_process(_7z_stream, path, suffixes))
    except ArchiveError:
        raise
    except Exception as e:   # zip, tar, lzma, bz2, zlib, py7zr: each library its own errors
        raise ArchiveError(f"{path}: unreadable archive ({type(e).__name__}: {e})") from None


def _with_last(path: str, stream):
    """ArchiveMembers with bytes from ``(name, data)`` pairs, one looked ahead so the last is marked."""
    held = None
    for i, (name, data) in enumerate(stream):
        if held is not None:
            yield ArchiveMember(path, held[0], i - 1, False, len(held[1]), data=held[1])
        held = (name, data)
    if held is not None:
        yield ArchiveMember(path, held[0], i, True, len(held[1]), data=held[1])


def _tar_stream(put, path: str, suffixes) -> None:
    """``put((name, bytes))`` for each record member of a compressed tar, in order."""
    # Opened for random access ("r:*", over the decompressed stream; it only ever seeks forward
    # here): the stream mode ("r|*") re-slices its buffer on every read, 40 % slower on bz2.
    with tarfile.open(path, "r:*") as t:
        while (m := t.next()) is not None:
            t.members.clear()      # the TarInfos read so far, kept by tarfile: memory that grows
            if m.isfile() and _records([(m.name, m.size, None)], suffixes):
                put((m.name, t.extractfile(m).read()))


def _7z_stream(put, path: str, suffixes) -> None:
    """``put((name, bytes))`` for each record member of a .7z as py7zr decompresses it."""
    import py7zr
    from py7zr.io import Py7zIO, WriterFactory

    class Member(Py7zIO):
        def __init__(self, name: str):
            self.name, self.buffer = name, io.BytesIO()

        def write(self, s):
            return self.buffer.write(s)

        def read(self, size=None):
            return b""

        def seek(self, offset, whence=0):
            return self.buffer.tell()

        def flush(self):
            pass

        def size(self):
            return self.buffer.tell()

        def close(self):                   # py7zr calls it when the member is complete
            put((self.name, self.buffer.getvalue()))
            self.buffer = io.BytesIO()

    class Factory(WriterFactory):
        def create(self, filename: str) -> Py7zIO:
            return Member(filename)

    # from a file object, py7zr extracts in archive order, in one thread
    with open(path, "rb") as f, py7zr.SevenZipFile(f) as z:
        names = [n for n, _, _ in _records([(i.filename, 0, None) for i in z.list() if not i.is_directory],
                                           suffixes)]
        if names:
            z.extract(targets=names, factory=Factory())


_OPEN: dict = {}   # archives a process has open for read_member: path → ZipFile or file object


def read_member(member: ArchiveMember) -> bytes:
    """The bytes of a zip or tar member (a streamed member carries them already)."""
    if member.data is not None:
        return member.data
    handle = _OPEN.get(member.archive)
    if handle is None:
        if len(_OPEN) >= 4:
            close_archives()
        handle = _OPEN[member.archive] = (zipfile.ZipFile(member.archive) if member.offset is None
                                          else open(member.archive, "rb"))
    if member.offset is None:
        return handle.read(member.name)
    handle.seek(member.offset)
    return handle.read(member.size)


def close_archives() -> None:
    for handle in _OPEN.values():
        handle.close()
    _OPEN.clear()
