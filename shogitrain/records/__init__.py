"""Game-record readers: every format becomes a list of :class:`GameRecord`.

``read_records(path)`` dispatches on the file extension (``.csa``; ``.kif``/``.kifu``; ``.sfen``/``.usi``/
``.txt``), sniffing the content when the extension is missing or unknown-but-textual; hcpe files
(``.hcpe``, binary positions rather than games) are read with ``read_hcpe`` and decoded with ``decode_hcp``.
"""

from __future__ import annotations

import os

from shogitrain.records.csa import read_csa
from shogitrain.records.game import GameRecord, RecordError
from shogitrain.records.hcpe import HCPE_DTYPE, decode_hcp, read_hcpe
from shogitrain.records.kif import read_kif
from shogitrain.records.sfen import read_sfen_lines
from shogitrain.names import DEFAULT_MAX_MOVES

__all__ = [
    "GameRecord", "RecordError", "read_csa", "read_kif", "read_sfen_lines", "read_hcpe",
    "decode_hcp", "HCPE_DTYPE", "read_records",
]

_BY_EXT = {
    ".csa": read_csa, ".kif": read_kif, ".kifu": read_kif, ".sfen": read_sfen_lines, ".usi": read_sfen_lines,
    ".txt": read_sfen_lines,
}


def _sniff(path: str):
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as e:
        raise RecordError(path, None, f"cannot read: {e.strerror or e}") from None
    if not head.strip():
        raise RecordError(path, None, "empty file")
    if b"\x00" in head:
        raise RecordError(path, None, "binary data: unknown record type (use read_hcpe for .hcpe)")
    text = head.lstrip(b"\xef\xbb\xbf")
    first = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith((b"#", b"'"))]
    if first and (first[0].startswith((b"startpos", b"sfen ", b"position "))):
        return read_sfen_lines
    for ln in first[:40]:
        if ln.startswith((b"V2", b"PI", b"P1", b"N+", b"N-", b"$")) or (ln[:1] in b"+-" and len(ln) >= 7):
            return read_csa
    try:
        s = head.decode("cp932", errors="ignore")
    except Exception:
        s = ""
    if "手合割" in s or "先手：" in s or "手数----" in s:
        return read_kif
    return None


def read_records(path, *, max_moves: int = DEFAULT_MAX_MOVES) -> list[GameRecord]:
    """Read a game-record file of any supported text format. Raises RecordError for unknown types."""
    import pathlib

    p = os.fspath(path)
    if os.path.isdir(p):
        raise RecordError(p, None, "is a directory")
    ext = os.path.splitext(p)[1].lower()
    if ext == ".hcpe":
        raise RecordError(p, None, "hcpe holds positions, not games: use read_hcpe")
    if not os.path.exists(p):
        raise RecordError(p, None, "no such file")
    reader = _BY_EXT.get(ext)
    if reader is None or ext == ".txt":  # unknown or ambiguous extension: look at the content
        sniffed = _sniff(p)
        if sniffed is None and reader is None:
            raise RecordError(p, None, f"unknown record type {ext or '(no extension)'!r}")
        reader = sniffed or reader
    return reader(pathlib.Path(p), max_moves=max_moves)
