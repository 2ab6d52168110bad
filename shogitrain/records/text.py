"""Record files as text: the encoding guessed from the bytes, and the text cut into lines or games.

Files are decoded without user help: UTF-8 (with or without BOM) first; otherwise Shift_JIS (cp932)
or EUC-JP, chosen by an ``'encoding=`` comment when present, else by which decodes cleanly (when
both do, the one producing fewer half-width katakana — the signature of EUC-JP read as Shift_JIS).
Bytes that decode under no candidate are replaced and noted as a problem. ``\\r\\n`` and ``\\r``
line ends are accepted.
"""

from __future__ import annotations

import os
import pathlib
from typing import Iterable

from shogitrain.records.game import RecordError

__all__ = ["decode_record_bytes", "load_text", "iter_chunks", "iter_lines"]

_ENCODING_NAMES = {
    "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "cp932": "cp932", "windows-31j": "cp932",
    "ms932": "cp932", "euc-jp": "euc_jp", "euc_jp": "euc_jp", "eucjp": "euc_jp", "utf-8": "utf-8-sig",
    "utf8": "utf-8-sig",
}


def _halfwidth_kana(text: str) -> int:
    return sum(1 for ch in text if "\uff61" <= ch <= "\uff9f")


def decode_record_bytes(raw: bytes, source=None) -> tuple[str, list]:
    """Decode a record file's bytes → (text, problems). Raises RecordError for empty or binary input.

    A few stray NUL bytes in a text file (more than one in a thousand bytes means binary) become
    U+FFFD, noted with the line of the first: the line they are on is then unreadable, not the file."""
    if not raw.strip():
        raise RecordError(source, None, "empty file")
    nul = raw.count(b"\x00")
    if nul > max(8, len(raw) // 1000):
        raise RecordError(source, None, f"binary data ({nul} NUL bytes), not a text record")
    text, problems = _decode(raw, source)
    if nul:
        line = text.count("\n", 0, text.index("\x00")) + 1
        text = text.replace("\x00", "\ufffd")
        problems.append((line, f"{nul} NUL byte(s) in the file, replaced (the first on this line)"))
    return text, problems


def _decode(raw: bytes, source) -> tuple[str, list]:
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        pass
    declared = None
    k = raw.find(b"'encoding=", 0, 4096)
    if k >= 0:
        name = raw[k + 10:k + 40].split(b"\n")[0].strip().decode("ascii", "replace").lower()
        declared = _ENCODING_NAMES.get(name)
    candidates = {}
    for enc in ([declared] if declared else []) + ["cp932", "euc_jp"]:
        if enc in candidates:
            continue
        try:
            candidates[enc] = raw.decode(enc)
        except (UnicodeDecodeError, LookupError):
            continue
        if enc == declared:
            return candidates[enc], []
    if len(candidates) == 1:
        return next(iter(candidates.values())), []
    if candidates:
        sj, eu = candidates["cp932"], candidates["euc_jp"]
        return (eu if _halfwidth_kana(eu) < _halfwidth_kana(sj) else sj), []
    return raw.decode(declared or "cp932", errors="replace"), [
        (None, "undecodable bytes replaced (encoding guessed as Shift_JIS)")
    ]


def load_text(path_or_text, decode=decode_record_bytes) -> tuple[str, str | None, list]:
    """(text, source, problems) for a Path, a str path, bytes, or a str of record text."""
    if isinstance(path_or_text, os.PathLike):
        path = os.fspath(path_or_text)
        if os.path.isdir(path):
            raise RecordError(path, None, "is a directory")
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as e:
            raise RecordError(path, None, f"cannot read: {e.strerror or e}") from None
        text, probs = decode(raw, path)
        return text, path, probs
    if isinstance(path_or_text, (bytes, bytearray, memoryview)):
        text, probs = decode(bytes(path_or_text), None)
        return text, None, probs
    if isinstance(path_or_text, str):
        s = path_or_text
        if "\n" not in s and len(s) < 4096 and s.strip() and "\x00" not in s:
            try:
                is_file = os.path.isfile(s)
            except (OSError, ValueError):
                is_file = False
            if is_file:
                return load_text(pathlib.Path(s), decode)
        if s.startswith("\ufeff"):
            s = s[1:]
        return s, None, []
    raise TypeError(f"expected a path, bytes or text, not {type(path_or_text).__name__}")


def iter_chunks(text: str, sep: str = "/") -> Iterable[tuple[int, list[str]]]:
    """Yield (line number of the first line, lines) per game; games are separated by lines starting with
    ``sep``. Only one game's lines exist at a time."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    n = len(text)
    pos = 0
    lineno = 1
    marker = "\n" + sep
    if text.startswith(sep):  # separator on the very first line
        nl = text.find("\n")
        pos = n if nl < 0 else nl + 1
        lineno = 2
    while pos < n:
        j = text.find(marker, pos)
        end = n if j < 0 else j
        lines = text[pos:end].split("\n")
        yield lineno, lines
        lineno += len(lines)  # the separator line
        if j < 0:
            break
        nl = text.find("\n", j + 1)
        pos = n if nl < 0 else nl + 1
        lineno += 1


def iter_lines(text: str):
    """(line number, line) of ``text``, without materialising the list of all lines."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    pos, n, ln = 0, len(text), 1
    while pos < n:
        j = text.find("\n", pos)
        if j < 0:
            j = n
        yield ln, text[pos:j]
        pos = j + 1
        ln += 1
