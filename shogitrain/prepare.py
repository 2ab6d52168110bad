"""`shogitrain prepare`: game records → filtered, split, compact position shards.

Files are read and converted in worker processes (tasks of about 1 MB of files; a CSA file larger
than ``PIECE_BYTES`` is cut into pieces at its game separators, an hcpe / hcpe3 file larger than
``BINARY_PIECE_BYTES`` at game boundaries; archive members are work items of their own, read by the
worker from a zip or tar and handed over by the main process from a compressed stream); the main process assigns
game ids, deduplicates, writes shards as they fill and a per-game table, and streams, so peak memory
does not grow with the input. The split is decided per game from a seeded hash of the game itself,
so it is deterministic and independent of the order of processing. Everything is written into a
temporary directory that is renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import json
import os
import shutil
import struct
import sys
import tempfile
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from shogitrain import __version__
from shogitrain.records.archives import (
    ArchiveError, ArchiveMember, archive_kind, archive_members, close_archives, require_support,
)
from shogitrain.files import (WriteError, exclusive_lock, file_sha256, printable, remove_stale_temps, temp_name,
                              write_error)
from shogitrain.records.filters import GameFilter
from shogitrain.shards.convert import games_rows
from shogitrain.shards.format import FORMAT_VERSION, POSITION_DTYPE
from shogitrain.shards.targets import TargetWriter, attach_target_files
from shogitrain.shards.writer import SHARD_ROWS, ShardWriter

RECORD_SUFFIXES = {".csa", ".kif", ".kifu", ".sfen", ".usi", ".hcpe", ".hcpe3"}
BINARY_SUFFIXES = {".hcpe", ".hcpe3"}  # dlshogi's training files: positions, not text records
EVAL_FORMATS = {".csa"}  # formats that can carry engine evals (require_eval applies to them)


class PrepareError(Exception):
    """A user error: no inputs, unwritable output, nothing survived the filters."""


@dataclass
class GameResult:
    meta: dict
    rows: np.ndarray | None  # None only while in transit from a worker (see _process_task)
    key: bytes
    positions: int = 0
    meta_json: str | None = None  # json.dumps(meta) without its opening brace: ', "source": …}' ('}' if empty
    # The worker's array that ``rows`` is a view of, and where in it they start (set by _attach_rows
    # after the transfer; None for rows of their own): lets _RowSink write neighbours in one call.
    block: np.ndarray | None = field(default=None, repr=False)
    block_start: int = 0
    targets: np.ndarray | None = field(default=None, repr=False)   # soft targets (shards/targets.py), hcpe3
    pairs: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.rows is not None:
            self.positions = len(self.rows)
        if self.meta_json is None:
            self.meta_json = _json_tail(self.meta)


def _json_tail(meta: dict) -> str:
    """json.dumps(meta) minus its opening brace, ready to follow other keys (see _games_line)."""
    text = json.dumps(meta, ensure_ascii=False)
    return "}" if text == "{}" else ", " + text[1:]


def _games_line(game_id: int, split: str, row_start: int, g: GameResult) -> str:
    """The games.jsonl line of a game: json.dumps({"id", "split", "row_start", "positions"} | meta)."""
    return f'{{"id": {game_id}, "split": {json.dumps(split)}, "row_start": {row_start}, "positions": {g.positions}' \
        + g.meta_json + "\n"


@dataclass
class FileResult:
    path: str
    sha256: str
    piece: int = 0      # a large file is read in pieces (see _Piece), an archive member by member: this
    pieces: int = 1     # one's index, of ``pieces`` (0 while the count is not known: a streamed archive)
    source: str | None = None  # the file the manifest hashes, when not ``path`` (an archive)
    games_read: int = 0
    games: list[GameResult] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    flagged: list[dict] = field(default_factory=list)


def find_inputs(inputs):
    """Files and directories (searched recursively) → record files, one at a time: a directory's in
    sorted path order, one listing at a time (see _sorted_names), symbolic links to directories not
    followed. Entries that are not regular files (a FIFO, a device) are included: reading them reports them."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            yield from _walk(path)
        elif path.exists() or path.is_symlink():
            yield path
        else:
            raise PrepareError(f"{printable(item)}: no such file or directory")


def _walk(directory: Path):
    for name in _sorted_names(directory):
        path = directory / name
        if path.is_dir():
            if not path.is_symlink():
                yield from _walk(path)
        elif path.suffix.lower() in RECORD_SUFFIXES or archive_kind(path) is not None:
            yield path


# A directory listing longer than this is sorted in runs of this many names on disk, then merged.
NAMES_IN_MEMORY = 1 << 14


def _sorted_names(directory: Path):
    """The names in ``directory`` in sorted order (an unreadable directory has none, as for rglob)."""
    runs, names = [], []
    with contextlib.ExitStack() as stack:
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    names.append(entry.name)
                    if len(names) == NAMES_IN_MEMORY:
                        run = stack.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8"))
                        run.writelines(json.dumps(name) + "\n" for name in sorted(names))
                        run.seek(0)
                        runs.append(json.loads(line) for line in run)
                        names = []
        except PermissionError:
            pass
        names.sort()
        yield from heapq.merge(names, *runs) if runs else names


def _survey(inputs, test_data) -> tuple[int, int]:
    """(files, bytes) of the inputs and --test-data, read without holding their list; a missing input,
    an archive this installation cannot read or a file given both ways is a PrepareError."""
    files = size = 0
    for path in itertools.chain(find_inputs(inputs), find_inputs(test_data)):
        try:
            require_support(path)
        except ArchiveError as e:
            raise PrepareError(str(e)) from None
        files += 1
        size += _item_size(path)
    if test_data:
        _check_disjoint(inputs, test_data)
    return files, size


def _check_disjoint(inputs, test_data) -> None:
    """No file may be both an input and --test-data (compared resolved: 8-byte hashes of the test
    files' paths are held, sorted; the inputs stream past them)."""
    def path_hash(path: Path) -> int:
        return int.from_bytes(hashlib.blake2b(os.fsencode(path.resolve()), digest_size=8).digest(), "little")

    held = np.sort(np.fromiter((path_hash(p) for p in find_inputs(test_data)), np.uint64))
    both = set()
    for path in find_inputs(inputs):
        h = np.uint64(path_hash(path))
        i = np.searchsorted(held, h)
        if i < len(held) and held[i] == h:
            both.add(path.resolve())
    if both:
        raise PrepareError(f"{printable(min(both))}: given both as an input and as --test-data "
                           f"({len(both)} such file(s)); a source is either trained on or held out")


def _game_key(sfen: str, moves: list[str]) -> bytes:
    return hashlib.blake2b((sfen + " " + " ".join(moves)).encode(), digest_size=16).digest()


def split_of(key: bytes, seed: int, test_fraction: float) -> str:
    """'test' for a seeded-hash fraction of games, else 'train'; depends only on the game and seed."""
    h = hashlib.blake2b(key, digest_size=8, key=struct.pack("<q", seed)).digest()
    u = int.from_bytes(h, "little") / 2**64
    return "test" if u < test_fraction else "train"


# A CSA file larger than this is read in pieces of about this size, cut after game separator lines
# ("/"), so that neither a worker nor the main process holds a whole multi-game archive.
PIECE_BYTES = 16 << 20


@dataclass(frozen=True)
class _Piece:
    """Bytes ``start:end`` of a large multi-game CSA file, whose first line is line ``first_line + 1``."""
    path: Path
    start: int
    end: int
    first_line: int
    index: int
    count: int
    sha256: str          # of the whole file
    utf8: bool           # the whole file is UTF-8 (else each piece's encoding is detected on its own)


def _csa_pieces(path: Path, piece_bytes: int) -> list[_Piece]:
    """Cut ``path`` after separator lines into pieces of at least ``piece_bytes`` (the last: the rest),
    reading it once, line by line."""
    import codecs

    digest = hashlib.sha256()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    is_utf8 = True
    cuts = [(0, 0)]                       # (byte offset, lines before it)
    offset = lines = 0
    with open(path, "rb") as f:
        for raw_line in f:
            digest.update(raw_line)
            if is_utf8:
                try:
                    utf8.decode(raw_line)
                except UnicodeDecodeError:
                    is_utf8 = False
            offset += len(raw_line)
            lines += 1
            if raw_line.startswith(b"/") and offset - cuts[-1][0] >= piece_bytes:
                cuts.append((offset, lines))
    if is_utf8:
        try:
            utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            is_utf8 = False
    if len(cuts) > 1 and cuts[-1][0] == offset:   # the file ends with a cut
        cuts.pop()
    ends = [start for start, _ in cuts[1:]] + [offset]
    return [_Piece(path, start, end, first, i, len(cuts), digest.hexdigest(), is_utf8)
            for i, ((start, first), end) in enumerate(zip(cuts, ends))]


def _read_piece(piece: _Piece, max_moves: int) -> tuple[list, list]:
    """(games, dropped RecordErrors) of one piece, with line numbers of the whole file."""
    from shogitrain.records import RecordError
    from shogitrain.records.csa import read_csa_text
    from shogitrain.records.text import decode_record_bytes

    p = os.fspath(piece.path)
    with open(piece.path, "rb") as f:
        f.seek(piece.start)
        raw = f.read(piece.end - piece.start)
    dropped: list = []
    if not raw.strip(b"/\r\n\t "):                # only separators: nothing to read
        return [], dropped
    try:
        if piece.utf8:
            text, problems = raw.decode("utf-8-sig" if piece.index == 0 else "utf-8"), []
        else:
            text, problems = decode_record_bytes(raw, p)
        games = read_csa_text(text, p, problems, skipped=dropped, positions=True, max_moves=max_moves)
    except RecordError as e:
        games, dropped = [], [e]
    shift = piece.first_line
    for g in games:
        g.line = None if g.line is None else g.line + shift
        g.problems = [(None if line is None else line + shift, why) for line, why in g.problems]
    return games, [RecordError(p, None if e.line is None else e.line + shift, e.reason) for e in dropped]


# An hcpe / hcpe3 file larger than this is read in pieces of about this size (its rows take up to
# ten times as much memory as its bytes).
BINARY_PIECE_BYTES = 4 << 20


@dataclass(frozen=True)
class _BinaryPiece:
    """Records ``start:stop`` of a large hcpe file, or bytes ``start:stop`` of a large hcpe3 file holding
    its games ``first``, … (cut at game boundaries)."""
    path: Path
    start: int
    stop: int
    first: int
    index: int
    count: int
    sha256: str
    size: int            # bytes


@dataclass(frozen=True)
class _Stream:
    """A compressed archive, expanded into its members (with their bytes) as the tasks are formed."""
    path: Path


@dataclass(frozen=True)
class _Problem:
    """An input that yields nothing but a report entry (an unreadable archive, one without records)."""
    path: str
    sha256: str
    reason: str
    piece: int = 0


def _binary_pieces(path: Path, piece_bytes: int) -> list[_BinaryPiece]:
    """Cut a large hcpe file into record ranges, a large hcpe3 file at the game boundaries found by
    reading its counts (the rest after a framing problem stays in the last piece)."""
    import mmap

    from shogitrain.records.hcpe3 import game_ends

    size = path.stat().st_size
    digest = file_sha256(path)
    if path.suffix.lower() == ".hcpe":
        n, step = size // 38, max(piece_bytes // 38, 1)
        cuts = [(a, min(a + step, n), a, 38 * min(step, n - a)) for a in range(0, n, step)]
    else:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
            cuts, start, first = [], 0, 0
            for k, end in enumerate(game_ends(view, size)):
                if end - start >= piece_bytes:
                    cuts.append((start, end, first, end - start))
                    start, first = end, k + 1
                    # the pages read stay in the page cache, not in this process (its peak memory)
                    view.madvise(mmap.MADV_DONTNEED, 0, start - start % mmap.PAGESIZE)
            if start < size:
                cuts.append((start, size, first, size - start))
    return [_BinaryPiece(path, a, b, first, i, len(cuts), digest, nbytes)
            for i, (a, b, first, nbytes) in enumerate(cuts)]


def _listed_members(path: Path) -> list:
    """The record members of a zip or tar (read later by the workers), or the problem."""
    digest = file_sha256(path)
    try:
        members = list(archive_members(path, RECORD_SUFFIXES))
    except ArchiveError as e:
        return [_Problem(str(path), digest, str(e).removeprefix(f"{path}: "))]
    if not members:
        return [_Problem(str(path), digest, "no record files in the archive")]
    return [replace(m, sha256=digest) for m in members]


def _expand(item):
    """The work items an item stands for: a compressed archive's members, read here one by one."""
    if not isinstance(item, _Stream):
        yield item
        return
    digest = file_sha256(item.path)
    count = 0
    try:
        for member in archive_members(item.path, RECORD_SUFFIXES):
            count += 1
            yield replace(member, sha256=digest)
    except ArchiveError as e:
        yield _Problem(str(item.path), digest, str(e).removeprefix(f"{item.path}: "), count)
        return
    if count == 0:
        yield _Problem(str(item.path), digest, "no record files in the archive")


def _items(files, piece_bytes: int | None = None):
    """The work items, one at a time: a path per file, the pieces of a CSA file larger than
    ``piece_bytes`` or of an hcpe / hcpe3 file larger than BINARY_PIECE_BYTES, the members of an archive."""
    piece_bytes = piece_bytes or PIECE_BYTES
    for path in files:
        suffix, kind = path.suffix.lower(), archive_kind(path)
        size = path.stat().st_size if path.is_file() else 0
        if kind in ("zip", "tar"):
            yield from _listed_members(path)
        elif kind is not None:
            yield _Stream(path)
        elif suffix == ".csa" and size > piece_bytes:
            yield from _csa_pieces(path, piece_bytes)
        elif suffix in BINARY_SUFFIXES and size > BINARY_PIECE_BYTES:
            yield from _binary_pieces(path, BINARY_PIECE_BYTES)
        else:
            yield path


def _item_size(item) -> int:
    if isinstance(item, _Piece):
        return item.end - item.start
    if isinstance(item, (_BinaryPiece, ArchiveMember)):
        return item.size
    if isinstance(item, _Problem):
        return 1
    try:
        return (item.path if isinstance(item, _Stream) else item).stat().st_size
    except OSError:  # a broken link: reading it reports it
        return 0


def _binary_piece_bytes(piece: _BinaryPiece) -> bytes:
    """The bytes a worker reads for a piece: an hcpe piece with the record before it and up to
    HCPE_OVERRUN after it (the games that start in the piece, whole), an hcpe3 piece as it is."""
    from shogitrain.shards.dlshogi import HCPE_OVERRUN

    size = piece.path.stat().st_size
    start, stop = piece.start, piece.stop
    if piece.path.suffix.lower() == ".hcpe":
        n = size // 38
        start, stop = 38 * max(start - 1, 0), (size if stop + HCPE_OVERRUN >= n else 38 * (stop + HCPE_OVERRUN))
    with open(piece.path, "rb") as f:
        f.seek(start)
        return f.read(stop - start)


def _read_games(path, raw: bytes | None, max_moves: int) -> tuple[list, list]:
    """(games, RecordErrors of the games dropped from a multi-game file) of ``path``. A CSA file is
    read from ``raw`` (its bytes, already read for the checksum) and keeps the replayed positions,
    so that its rows need no second replay; an archive member (``raw`` given) of any format is read
    from its bytes."""
    from shogitrain.records import RecordError, read_kif, read_records
    from shogitrain.records.csa import read_csa_text
    from shogitrain.records.sfen import read_sfen_lines
    from shogitrain.records.text import decode_record_bytes

    dropped: list = []
    p = os.fspath(path)
    suffix = os.path.splitext(p)[1].lower()
    if raw is not None and suffix == ".csa":  # what read_records → read_csa would do, without reading the file again
        text, problems = decode_record_bytes(raw, p)
        return read_csa_text(text, p, problems, skipped=dropped, positions=True, max_moves=max_moves), dropped
    if raw is not None:  # a KIF or SFEN archive member: the readers name no file for bytes
        try:
            games = (read_kif(raw, max_moves=max_moves) if suffix in (".kif", ".kifu")
                     else read_sfen_lines(raw, skipped=dropped, max_moves=max_moves))
        except RecordError as e:
            raise RecordError(p, e.line, e.reason) from None
        return games, [RecordError(p, e.line, e.reason) for e in dropped]
    if suffix in (".sfen", ".usi"):
        return read_sfen_lines(path, skipped=dropped, max_moves=max_moves), dropped
    return read_records(path, max_moves=max_moves), dropped


def _open_item(item) -> tuple[FileResult, bytes | None]:
    """The work item's FileResult (name, checksum, piece) and its bytes where they are read here
    (CSA, hcpe, hcpe3 files and pieces, archive members); a FileResult with a skipped entry when
    there is nothing to read."""
    if isinstance(item, _Problem):
        result = FileResult(item.path, item.sha256, item.piece, item.piece + 1)
        result.skipped.append({"file": item.path, "line": None, "reason": item.reason})
        return result, None
    if isinstance(item, _Piece):
        return FileResult(printable(item.path), item.sha256, item.index, item.count), None
    if isinstance(item, ArchiveMember):
        from shogitrain.records.archives import read_member

        result = FileResult(printable(item.path), item.sha256, item.index, item.index + 1 if item.last else 0,
                            source=printable(item.archive))
        try:
            return result, read_member(item)
        except Exception as e:  # a damaged member: report it, keep the others
            why = f"unreadable member: {type(e).__name__}: {e}"
            result.skipped.append({"file": result.path, "line": None, "reason": why})
            return result, None
    path = item.path if isinstance(item, _BinaryPiece) else item
    name = printable(path)
    try:
        if isinstance(item, _BinaryPiece):
            return FileResult(name, item.sha256, item.index, item.count), _binary_piece_bytes(item)
        if not path.is_file():
            raise OSError("not a regular file (a FIFO, device or broken link)")
        if path.suffix.lower() in {".csa"} | BINARY_SUFFIXES:
            raw = path.read_bytes()
            return FileResult(name, hashlib.sha256(raw).hexdigest()), raw
        return FileResult(name, file_sha256(path)), None
    except OSError as e:
        result = FileResult(name, "")
        reason = f"cannot read: {e.strerror}" if e.strerror else str(e)
        result.skipped.append({"file": name, "line": None, "reason": reason})
        return result, None


def _read_binary(item, result: FileResult, raw: bytes, items: list, temperature: float) -> FileResult:
    """An hcpe / hcpe3 file, piece or member: its games (rows appended to ``items``) and bad records."""
    from shogitrain.shards.dlshogi import hcpe3_file_games, hcpe_file_games

    name = result.path
    piece = item if isinstance(item, _BinaryPiece) else None
    if not raw:
        result.skipped.append({"file": name, "line": None, "reason": "empty file"})
        return result
    if name.lower().endswith(".hcpe3"):
        games, skipped, read = hcpe3_file_games(raw, name, temperature, *((piece.first, piece.start) if piece else ()))
    else:
        own = (piece.start, piece.stop) if piece else None
        games, skipped = hcpe_file_games(raw, name, max(piece.start - 1, 0) if piece else 0, own)
        read = len(games)
    result.games_read += read
    result.skipped += skipped
    for g in games:
        items.append(g.rows)
        result.games.append(GameResult(g.meta, None, g.key, positions=len(g.rows), targets=g.targets, pairs=g.pairs))
    return result


def _read_file(item, game_filter: GameFilter, items: list) -> FileResult:
    """Read one work item: a record file, a piece of a large file, an archive member (see _items). The
    kept games' GameResults have rows=None; their rows come from ``items``, in the same order: a
    (game, positions, id, draw) tuple for games_rows, or the rows of an hcpe / hcpe3 item."""
    from shogitrain.records import RecordError

    result, raw = _open_item(item)
    if result.skipped:
        return result
    name = result.path
    suffix = os.path.splitext(name)[1].lower()
    try:
        if isinstance(item, _Piece):
            games, dropped = _read_piece(item, game_filter.max_moves)
        elif suffix in BINARY_SUFFIXES:
            return _read_binary(item, result, raw, items, game_filter.temperature)
        else:
            games, dropped = _read_games(item if raw is None else name, raw, game_filter.max_moves)
    except RecordError as e:
        result.skipped.append({"file": name, "line": e.line, "reason": e.reason})
        return result
    except Exception as e:  # a reader bug must not stop the run: report it like bad input
        result.skipped.append({"file": name, "line": None, "reason": f"unreadable: {type(e).__name__}: {e}"})
        return result
    for e in dropped:
        result.games_read += 1
        result.skipped.append({"file": name, "line": e.line, "reason": e.reason})
    has_evals = suffix in EVAL_FORMATS
    for game in games:
        result.games_read += 1
        for line, reason in game.problems:
            result.flagged.append({"file": name, "line": line, "reason": reason})
        why = game_filter.rejection(game, has_evals)
        if why is not None:
            result.skipped.append({"file": name, "line": game.line, "reason": why})
            continue
        n = game_filter.positions_kept(game)
        if n == 0:
            result.skipped.append({"file": name, "line": game.line, "reason": "no positions before the mate/eval cut"})
            continue
        items.append((game, n, 0, game.winner is None))  # draws and undecided endings score 0.5
        ratings = [r for r in game.ratings if r is not None]
        meta = {
            "source": name,
            "line": game.line,
            "event": game.event,
            "date": game.start_time,
            "names": list(game.names),
            "ratings": list(game.ratings),
            "min_rating": min(ratings) if len(ratings) == 2 else None,
            "endgame": game.endgame,
            "winner": game.winner,
            "moves": len(game.moves),
        }
        result.games.append(GameResult(meta, None, _game_key(game.sfen, game.moves), positions=n))
    return result


def process_files(paths: list[Path], game_filter: GameFilter) -> list[FileResult]:
    """Read record files and convert their kept games to rows; the games' rows are views of one array."""
    results, rows = _process_task(paths, game_filter)
    return _attach_rows(results, rows)


def _process_task(paths: list[Path], game_filter: GameFilter, spool: str | None = None):
    """A worker's task: the FileResults with rows=None for the games read from records, and those games'
    rows in one array (see _attach_rows). With ``spool`` (a directory), the rows are written to a file
    there and its name is returned instead: much cheaper for the main process than unpickling them
    from the result pipe."""
    items: list = []
    results = [_read_file(p, game_filter, items) for p in paths]
    rows = _task_rows(items)
    if spool is not None and len(rows):
        name = None
        try:
            fd, name = tempfile.mkstemp(suffix=".rows", dir=spool)
            with os.fdopen(fd, "wb") as f:
                f.write(rows.data)
            return results, name
        except OSError:  # spool full or gone: send the rows through the pipe
            if name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(name)
    return results, rows


def _task_rows(items: list) -> np.ndarray:
    """The rows of a task's games in order: runs of (game, …) tuples through games_rows, hcpe / hcpe3
    rows as they are."""
    parts, run = [], []
    for item in items:
        if isinstance(item, np.ndarray):
            if run:
                parts.append(games_rows(run))
                run = []
            parts.append(item)
        else:
            run.append(item)
    if run or not parts:
        parts.append(games_rows(run))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _attach_rows(results: list[FileResult], rows) -> list[FileResult]:
    """Give the games their rows: views of the task's array (or of the spool file it was written to)."""
    if isinstance(rows, str):
        name = rows
        try:
            rows = np.fromfile(name, dtype=POSITION_DTYPE)
        finally:
            os.unlink(name)
    start = 0
    for fr in results:
        for g in fr.games:
            if g.rows is None:
                g.rows = rows[start : start + g.positions]
                g.block, g.block_start = rows, start
                start += g.positions
    assert start == len(rows), (start, len(rows))
    return results


class _RowSink:
    """Hands the games' rows to the split writers, setting their game ids. Consecutive games that lie
    next to each other in one worker array (see _attach_rows) and go to the same split are written
    with one ShardWriter.add: the same rows in the same order as one add per game, far fewer calls."""

    def __init__(self, writers: dict):
        self.writers = writers
        self.targets: dict | None = None   # split → TargetWriter, once a game with soft targets came
        self.split = None
        self.base = None
        self.start = self.stop = 0
        self.ids: list[int] = []
        self.counts: list[int] = []

    def add(self, split: str, game_id: int, g: GameResult) -> int:
        """Queue game ``g`` (id ``game_id``) for ``split``; returns its first row's index in the split."""
        if g.targets is not None and self.targets is None:
            self.flush()
            self.targets = {name: TargetWriter.following(w) for name, w in self.writers.items()}
        if self.targets is not None:   # the same games in the same order as the rows
            self.targets[split].add(g.rows, g.targets, g.pairs)
        base = g.block
        if base is None or base is not self.base or split != self.split or g.block_start != self.stop:
            self.flush()
            if base is None:  # rows of their own, not a view of a worker's array
                writer = self.writers[split]
                row_start = writer.positions
                g.rows["game"] = game_id
                writer.add(g.rows)
                return row_start
            self.split, self.base, self.start, self.stop = split, base, g.block_start, g.block_start
        row_start = self.writers[split].positions + (self.stop - self.start)
        self.ids.append(game_id)
        self.counts.append(g.positions)
        self.stop += g.positions
        return row_start

    def flush(self) -> None:
        if self.base is not None and self.stop > self.start:
            rows = self.base[self.start : self.stop]
            rows["game"] = np.repeat(np.array(self.ids, dtype=np.int64), self.counts)
            self.writers[self.split].add(rows)
        self.split = self.base = None
        self.start = self.stop = 0
        self.ids, self.counts = [], []


def _chunks(items, target_bytes: int = 1 << 20):
    """Consecutive work items (paths, pieces) grouped into tasks of about ``target_bytes`` of input
    (amortises IPC)."""
    chunk, size = [], 0
    for item in items:
        for part in _expand(item):
            chunk.append(part)
            size += _item_size(part)
            if size >= target_bytes:
                yield chunk
                chunk, size = [], 0
    if chunk:
        yield chunk


# Work goes out in tasks of about TASK_BYTES of input, fewer for a small input (at least ~8 tasks a
# worker, so that the workers finish together); with a bounded number of tasks in flight, memory is bounded.
TASK_BYTES = 1 << 19


@dataclass
class _Pool:
    """The N - 1 pool processes of N workers and the directory their rows come back through."""
    processes: object
    spool: str
    workers: int


@contextlib.contextmanager
def _worker_pool(workers: int):
    """A _Pool for ``workers`` > 1 (else None), forked before the main process holds any data."""
    if workers <= 1:
        yield None
        return
    shm = "/dev/shm"  # tmpfs: the rows never touch a disk (a few MB in flight at a time)
    where = shm if os.access(shm, os.W_OK) else tempfile.gettempdir()
    for stale in remove_stale_temps(where, "shogitrain-prepare-*"):
        print(f"removed {stale}, left by a prepare that no longer runs", file=sys.stderr)
    spool = tempfile.mkdtemp(prefix="shogitrain-prepare-", suffix=f"-{os.getpid()}", dir=where)
    try:
        with get_context("spawn" if sys.platform == "darwin" else "fork").Pool(workers - 1) as processes:
            yield _Pool(processes, spool, workers)
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def _results(items, game_filter: GameFilter, pool: _Pool | None, total_bytes: int):
    """FileResults in input order, with a bounded number of tasks in flight (bounded memory).

    With N workers, N - 1 are pool processes and the main process is the N-th: whenever the next
    result in order is not ready yet, it converts the next task itself instead of waiting. It also
    writes the shards, so it takes on fewer tasks; no process sits idle, and on a machine shared with
    other jobs there are fewer processes to compete and less data to pass between them.
    """
    try:
        if pool is None:
            for chunk in _chunks(items, TASK_BYTES):
                yield from process_files(chunk, game_filter)
            return
        workers, helpers = pool.workers, pool.workers - 1
        tasks = _chunks(items, max(1 << 16, min(TASK_BYTES, total_bytes // (8 * workers))))
        pending: deque = deque()  # tasks in input order: AsyncResult (pool) or list (done here)
        in_pool = 0
        while True:
            while in_pool < 2 * helpers:  # keep the pool busy
                chunk = next(tasks, None)
                if chunk is None:
                    break
                pending.append(pool.processes.apply_async(_process_task, (chunk, game_filter, pool.spool)))
                in_pool += 1
            if not pending:
                break
            head = pending[0]
            if isinstance(head, list):
                pending.popleft()
                yield from head
                continue
            if not head.ready() and len(pending) < 4 * workers:
                chunk = next(tasks, None)
                if chunk is not None:  # work here instead of waiting
                    pending.append(process_files(chunk, game_filter))
                    continue
            pending.popleft()
            in_pool -= 1
            yield from _attach_rows(*head.get())
    finally:
        close_archives()


def _drop_test_positions_seen_in_train(tmp: Path, splits: dict, shard_rows: int) -> int:
    """--dedupe-test (shards/dedupe.py), and the test games' ``row_start`` / ``positions`` in games.jsonl
    to match; returns the count dropped."""
    from shogitrain.shards.dedupe import drop_test_positions_seen_in_train

    dropped, kept = drop_test_positions_seen_in_train(tmp, splits, shard_rows, tmp / ".dedupe-test")
    _renumber_games(tmp / "games.jsonl", kept, "test")
    shutil.rmtree(tmp / ".dedupe-test")
    return dropped


def _renumber_games(path: Path, kept, split: str) -> None:
    """games.jsonl with each ``split`` game's ``positions`` = its rows left (``kept``: a KeptRows) and
    ``row_start`` following."""
    start = 0
    tmp = path.with_name(path.name + ".tmp")
    with open(path, encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as out:
        for line in src:
            game = json.loads(line)
            if game["split"] == split:
                game["row_start"], game["positions"] = start, kept.rows_of(game["id"])
                start += game["positions"]
                line = json.dumps(game, ensure_ascii=False) + "\n"
            out.write(line)
    os.replace(tmp, path)


def _average_train_duplicates(tmp: Path, splits: dict, shard_rows: int) -> int:
    """--average-duplicates on the train split (games.jsonl renumbered to match); the rows merged away."""
    from shogitrain.shards.average import average_duplicates

    merged, kept = average_duplicates(tmp, splits, "train", shard_rows, tmp / ".average")
    if kept is not None:
        _renumber_games(tmp / "games.jsonl", kept, "train")
    shutil.rmtree(tmp / ".average", ignore_errors=True)
    return merged


class _Spool:
    """A list of JSON-able items kept in a file, not in memory (counts and reason kinds are kept):
    ``prepare``'s memory must not grow with the number of skipped games. Items found later can be
    inserted at earlier places (:meth:`insert`, kept in a second file)."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "w", encoding="utf-8")
        self.inserts = None
        self.count = 0
        self.reasons: Counter = Counter()

    def add(self, item: dict) -> None:
        self.file.write(json.dumps(item, ensure_ascii=False) + "\n")
        self._counted(item)

    def insert(self, position: int, item: dict) -> None:
        """Put ``item`` before the ``position``-th added item (after it those inserted there before)."""
        if self.inserts is None:
            self.inserts = open(self.path.with_name(self.path.name + ".inserts"), "w+", encoding="utf-8")
        self.inserts.write(json.dumps([position, item], ensure_ascii=False) + "\n")
        self._counted(item)

    def _counted(self, item: dict) -> None:
        self.count += 1
        if "reason" in item:
            self.reasons[_reason_kind(item["reason"])] += 1

    def _items(self):
        """The items' JSON texts in order, the inserted ones merged in."""
        self.file.flush()
        inserted = iter(())
        if self.inserts is not None:
            self.inserts.flush()
            self.inserts.seek(0)
            inserted = (json.loads(line) for line in self.inserts)
        pending = next(inserted, None)
        with open(self.path, encoding="utf-8") as items:
            for i, line in enumerate(itertools.chain(items, [None])):
                while pending is not None and (line is None or pending[0] <= i):
                    yield json.dumps(pending[1], ensure_ascii=False)
                    pending = next(inserted, None)
                if line is not None:
                    yield line.rstrip("\n")

    def write_json_list(self, out) -> None:
        """Write the items as the elements of a JSON list (``indent=1`` style, one level deep)."""
        out.write("[")
        for i, text in enumerate(self._items()):
            out.write(("," if i else "") + "\n  " + text)
        out.write("\n ]" if self.count else "]")

    def close(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)
        if self.inserts is not None:
            self.inserts.close()
            os.unlink(self.inserts.name)

    def __enter__(self) -> "_Spool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _write_report(path: Path, report: dict, lists: dict[str, _Spool]) -> None:
    """report.json: ``report``'s keys, then each spooled list under its key, streamed."""
    with open(path, "w", encoding="utf-8") as f:
        head = json.dumps(report, indent=1, ensure_ascii=False)
        f.write(head[:-2] if report else "{")      # drop the closing "\n}"
        for i, (key, spool) in enumerate(lists.items()):
            f.write(("," if report or i else "") + f"\n {json.dumps(key)}: ")
            spool.write_json_list(f)
        f.write("\n}\n")


def _replaceable(out: Path) -> bool:
    """--overwrite replaces a dataset (a directory with a manifest.json) or an empty directory only."""
    return out.is_dir() and ((out / "manifest.json").is_file() or not any(out.iterdir()))


@contextlib.contextmanager
def _output_directory(out: Path, overwrite: bool):
    """A fresh temporary directory beside ``out``: when the block completes it replaces ``out`` by a
    rename, when the block fails it is removed — ``out`` is never half-written. One prepare at a
    time writes ``out`` (a lock beside it); temp directories of dead earlier runs are removed."""
    if out.exists() and not overwrite:
        raise PrepareError(f"{out}: already exists (use --overwrite to replace it)")
    if out.exists() and not _replaceable(out):
        raise PrepareError(f"{out}: --overwrite replaces a dataset directory (one with a manifest.json) or an "
                           "empty directory, and this is neither")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PrepareError(f"{out}: cannot write output ({e.strerror})") from None
    with exclusive_lock(parent / f".{out.name}.lock", f"dataset {out}"):
        for stale in remove_stale_temps(parent, f".{out.name}.tmp-*") + remove_stale_temps(parent, f".{out.name}.old-*"):
            print(f"removed {stale}, left by a prepare that no longer runs", file=sys.stderr)
        tmp = temp_name(out)
        try:
            tmp.mkdir()
            yield tmp
            if out.exists():
                old = temp_name(out, "old")
                out.rename(old)
                tmp.rename(out)
                shutil.rmtree(old)
            else:
                tmp.rename(out)
        except OSError as e:
            raise write_error(e, out) from None
        except WriteError as e:  # name the output, not the temp directory that is about to go
            raise WriteError(str(e).replace(str(tmp), str(out))) from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _stream_games(tmp: Path, inputs, test_data, game_filter: GameFilter, workers: int, *, seed: int,
                  test_fraction: float, dedupe: bool, shard_rows: int, progress: bool, skipped: "_Spool",
                  flagged: "_Spool") -> tuple[dict, int, int, int]:
    """Read every input once, in order (then the --test-data sources, whole into test), and write its
    kept games' rows to the split shards, its games to games.jsonl and its sources to sources.jsonl as
    they come; returns (splits, sources, games read, games recovered from hcpe)."""
    from tqdm import tqdm

    from shogitrain.shards.dedupe import GameLog

    files, total_bytes = _survey(inputs, test_data)
    writers = {name: ShardWriter(tmp, name, shard_rows) for name in ("train", "test")}
    split_games: Counter = Counter()
    log = GameLog(tmp / ".games.log") if dedupe else None
    games_read = recovered = n_sources = 0
    sink = _RowSink(writers)
    n_games = 0
    with _worker_pool(workers) as pool, open(tmp / "games.jsonl", "w", encoding="utf-8") as games_out, \
            open(tmp / "sources.jsonl", "w", encoding="utf-8") as sources_out, \
            tqdm(total=files, unit="file", disable=not progress, desc="prepare", dynamic_ncols=True) as bar:
        for forced, paths in ((None, inputs), ("test", test_data)):
            for fr in _results(_items(find_inputs(paths)), game_filter, pool, total_bytes):
                if fr.piece == fr.pieces - 1:
                    bar.update(1)
                if fr.piece == 0:
                    sources_out.write(json.dumps({"path": fr.source or fr.path, "sha256": fr.sha256},
                                                 ensure_ascii=False) + "\n")
                    n_sources += 1
                games_read += fr.games_read
                recovered += sum(g.meta.get("format") == "hcpe" for g in fr.games)
                for item in fr.skipped:
                    skipped.add(item)
                for item in fr.flagged:
                    flagged.add(item)
                for g in fr.games:
                    if log is not None:  # repeats are found and taken out once all is written
                        log.add(g.key, skipped.count)
                    split = forced or split_of(g.key, seed, test_fraction)
                    games_out.write(_games_line(n_games, split, sink.add(split, n_games, g), g))
                    n_games += 1
                    split_games[split] += 1
                if progress and bar.n % 64 == 0:  # (a disabled bar never counts: n stays 0)
                    sink.flush()
                    bar.set_postfix(games=sum(split_games.values()),
                                    positions=sum(w.positions for w in writers.values()), refresh=False)
        sink.flush()
    splits = {name: {"games": split_games[name], "positions": writer.positions, "shards": writer.close()}
              for name, writer in writers.items()}
    for name, targets in (sink.targets or {}).items():
        attach_target_files(splits[name]["shards"], targets.close())
    if log is not None:
        _drop_repeated_games(tmp, splits, log, skipped, shard_rows)
    return splits, n_sources, games_read, recovered


def _drop_repeated_games(tmp: Path, splits: dict, log, skipped: "_Spool", shard_rows: int) -> None:
    """--dedupe: take the games whose key an earlier game has out of the shards and games.jsonl, with
    a skipped entry each where it would have come had they been skipped as they were read."""
    from shogitrain.shards.dedupe import drop_games

    repeated = log.repeats(tmp / ".dedupe")
    if repeated.count():
        drop_games(tmp, splits, shard_rows, repeated)
        path, new = tmp / "games.jsonl", tmp / "games.jsonl.tmp"
        row_start: Counter = Counter()
        kept = 0
        with open(path, encoding="utf-8") as src, open(new, "w", encoding="utf-8") as out:
            for game_id, (line, skipped_at) in enumerate(zip(src, log.skipped_at())):
                game = json.loads(line)
                split = game["split"]
                if repeated.has(game_id):
                    skipped.insert(skipped_at, {"file": game["source"], "line": game["line"], "reason": "duplicate game"})
                    splits[split]["games"] -= 1
                    continue
                game["id"], game["row_start"] = kept, row_start[split]
                out.write(json.dumps(game, ensure_ascii=False) + "\n")
                row_start[split] += game["positions"]
                kept += 1
        os.replace(new, path)
    os.unlink(log.path)
    shutil.rmtree(tmp / ".dedupe", ignore_errors=True)


def prepare(inputs, out, *, test_fraction: float | None = None, seed: int = 0, workers: int | None = None,
            test_data=(), game_filter: GameFilter = GameFilter(), dedupe: bool = False,
            dedupe_test: bool = False, average_duplicates: bool = False, shard_rows: int = SHARD_ROWS,
            overwrite: bool = False, progress: bool = True) -> dict:
    """Run the whole conversion; returns the report (OUT/report.json), except its lists of skipped
    and flagged games, which can be long: ``skipped_total`` / ``flagged_total`` count them.
    ``average_duplicates``: merge the train split's identical positions, averaging their targets."""
    if not inputs and not test_data:
        raise PrepareError("no inputs given")
    if test_fraction is None:  # a random hold-out unless whole sources are held out
        test_fraction = 0.0 if test_data else 0.1
    if next(itertools.chain(find_inputs(inputs), find_inputs(test_data)), None) is None:
        raise PrepareError(f"no record files ({', '.join(sorted(RECORD_SUFFIXES))}) found in the inputs")
    # Test split = the --test-data sources whole, plus a seeded-hash test_fraction of the inputs' games.
    with _output_directory(Path(out), overwrite) as tmp, _Spool(tmp / ".skipped.jsonl") as skipped, \
            _Spool(tmp / ".flagged.jsonl") as flagged:
        splits, sources, games_read, recovered = _stream_games(
            tmp, inputs, test_data, game_filter, workers or os.cpu_count() or 1, seed=seed,
            test_fraction=test_fraction, dedupe=dedupe, shard_rows=shard_rows, progress=progress,
            skipped=skipped, flagged=flagged)
        total_positions = sum(s["positions"] for s in splits.values())
        if total_positions == 0:
            reasons = ", ".join(f"{n} {why}" for why, n in skipped.reasons.most_common(3))
            raise PrepareError(
                f"nothing survived the filters ({games_read} games read, {skipped.count} skipped: {reasons}; "
                "relax --min-moves / --min-rating / --endings / --no-require-eval)"
            )
        dropped_test = 0
        if dedupe_test and splits["test"]["positions"] and splits["train"]["positions"]:
            dropped_test = _drop_test_positions_seen_in_train(tmp, splits, shard_rows)
        merged = _average_train_duplicates(tmp, splits, shard_rows) if average_duplicates else 0
        manifest = {
            "format_version": FORMAT_VERSION,
            "row_dtype": [[name, str(POSITION_DTYPE.fields[name][0])] for name in POSITION_DTYPE.names],
            "shard_rows": shard_rows,
            "splits": splits,
            "filters": game_filter.as_dict() | {"dedupe": dedupe, "dedupe_test": dedupe_test,
                                                "average_duplicates": average_duplicates},
            "test_fraction": test_fraction,
            "test_data": [printable(p) for p in test_data],   # as given: their files are in sources.jsonl
            "seed": seed,
            "source_files": sources,
            "sources_sha256": file_sha256(tmp / "sources.jsonl"),
            "games_sha256": file_sha256(tmp / "games.jsonl"),
            "shogitrain_version": __version__,
        }
        report = {
            "games_read": games_read,
            "games_kept": sum(s["games"] for s in splits.values()),
            "positions": total_positions - dropped_test - merged,
            "test_positions_dropped_as_seen_in_train": dropped_test,
            "train_positions_merged_as_duplicates": merged,
            "hcpe_games_recovered": recovered,
            "skipped_by_reason": dict(sorted(skipped.reasons.items())),
            "skipped_total": skipped.count,
            "flagged_total": flagged.count,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
        _write_report(tmp / "report.json", report, {"skipped": skipped, "flagged": flagged})
    return report


def _reason_kind(reason: str) -> str:
    """Group free-text reasons for the summary ('fewer than 50 moves', 'ending %SENNICHITE not allowed')."""
    return reason.split(":")[0][:60]


def summarize(report: dict, out) -> str:
    lines = [
        f"{out}: {report['games_kept']} of {report['games_read']} games kept, {report['positions']} positions",
    ]
    if report.get("hcpe_games_recovered"):
        lines.append(f"  {report['hcpe_games_recovered']} games recovered from hcpe records")
    if report.get("train_positions_merged_as_duplicates"):
        lines.append(f"  {report['train_positions_merged_as_duplicates']} train positions merged into their duplicates")
    for reason, n in report["skipped_by_reason"].items():
        lines.append(f"  skipped {n:6d}  {reason}")
    if report["flagged_total"]:
        lines.append(f"  {report['flagged_total']} games flagged (kept up to the problem; see report.json)")
    return "\n".join(lines)
