"""`shogitrain prepare`: game records → filtered, split, compact position shards.

Files are read and converted in worker processes (one task per file); the main process assigns
game ids, deduplicates, writes shards as they fill and a per-game table, and streams, so peak memory
does not grow with the input. The split is decided per game from a seeded hash of the game itself,
so it is deterministic and independent of the order of processing. Everything is written into a
temporary directory that is renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import sys
from collections import Counter, deque
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from shogitrain import __version__
from shogitrain.records.filters import GameFilter
from shogitrain.shards.convert import game_rows
from shogitrain.shards.format import FORMAT_VERSION, POSITION_DTYPE
from shogitrain.shards.writer import SHARD_ROWS, ShardWriter

RECORD_SUFFIXES = {".csa", ".kif", ".kifu", ".sfen", ".usi", ".hcpe"}
EVAL_FORMATS = {".csa"}  # formats that can carry engine evals (require_eval applies to them)


class PrepareError(Exception):
    """A user error: no inputs, unwritable output, nothing survived the filters."""


@dataclass
class GameResult:
    meta: dict
    rows: np.ndarray
    key: bytes


@dataclass
class FileResult:
    path: str
    sha256: str
    games_read: int = 0
    games: list[GameResult] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    flagged: list[dict] = field(default_factory=list)


def find_inputs(inputs) -> list[Path]:
    """Expand files and directories (recursively) into a sorted list of record files."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in RECORD_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise PrepareError(f"{item}: no such file or directory")
    return files


def _game_key(sfen: str, moves: list[str]) -> bytes:
    return hashlib.blake2b((sfen + " " + " ".join(moves)).encode(), digest_size=16).digest()


def split_of(key: bytes, seed: int, test_fraction: float) -> str:
    """'test' for a seeded-hash fraction of games, else 'train'; depends only on the game and seed."""
    h = hashlib.blake2b(key, digest_size=8, key=struct.pack("<q", seed)).digest()
    u = int.from_bytes(h, "little") / 2**64
    return "test" if u < test_fraction else "train"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def process_file(path: Path, game_filter: GameFilter) -> FileResult:
    """Read one record file and convert its kept games to rows (runs in a worker)."""
    from shogitrain.records import RecordError, read_hcpe, read_records, rows_from_hcpe

    result = FileResult(path=str(path), sha256=_sha256(path))
    try:
        if path.suffix.lower() == ".hcpe":
            rows = rows_from_hcpe(read_hcpe(path))
            result.games_read = 1
            meta = {"source": str(path), "line": None, "format": "hcpe", "endgame": None, "winner": None}
            result.games.append(GameResult(meta, rows, hashlib.blake2b(path.read_bytes(), digest_size=16).digest()))
            return result
        games = read_records(path)
    except RecordError as e:
        result.skipped.append({"file": str(path), "line": e.line, "reason": e.reason})
        return result
    except Exception as e:  # a reader bug must not stop the run: report it like bad input
        result.skipped.append({"file": str(path), "line": None, "reason": f"unreadable: {type(e).__name__}: {e}"})
        return result
    has_evals = path.suffix.lower() in EVAL_FORMATS
    for game in games:
        result.games_read += 1
        for line, reason in game.problems:
            result.flagged.append({"file": str(path), "line": line, "reason": reason})
        why = game_filter.rejection(game, has_evals)
        if why is not None:
            result.skipped.append({"file": str(path), "line": game.line, "reason": why})
            continue
        n = game_filter.positions_kept(game)
        if n == 0:
            result.skipped.append({"file": str(path), "line": game.line, "reason": "no positions before the mate/eval cut"})
            continue
        rows = game_rows(game, n, draw=game.winner is None)  # draws and undecided endings score 0.5
        ratings = [r for r in game.ratings if r is not None]
        meta = {
            "source": str(path),
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
        result.games.append(GameResult(meta, rows, _game_key(game.sfen, game.moves)))
    return result


def process_files(paths: list[Path], game_filter: GameFilter) -> list[FileResult]:
    return [process_file(p, game_filter) for p in paths]


def _chunks(files: list[Path], target_bytes: int = 1 << 20):
    """Consecutive files grouped into tasks of about ``target_bytes`` of input (amortises IPC)."""
    chunk, size = [], 0
    for path in files:
        chunk.append(path)
        size += path.stat().st_size
        if size >= target_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _results(files: list[Path], game_filter: GameFilter, workers: int):
    """FileResults in input order, with a bounded number of tasks in flight (bounded memory)."""
    if workers <= 1:
        for path in files:
            yield process_file(path, game_filter)
        return
    with get_context("spawn" if sys.platform == "darwin" else "fork").Pool(workers) as pool:
        pending: deque = deque()
        tasks = _chunks(files)
        for chunk in tasks:
            pending.append(pool.apply_async(process_files, (chunk, game_filter)))
            if len(pending) >= 2 * workers:
                break
        while pending:
            yield from pending.popleft().get()
            chunk = next(tasks, None)
            if chunk is not None:
                pending.append(pool.apply_async(process_files, (chunk, game_filter)))


def _position_hashes(rows: np.ndarray) -> np.ndarray:
    """64-bit hash of each row's position (board, hands, side to move), vectorised."""
    raw = rows.view(np.uint8).reshape(len(rows), POSITION_DTYPE.itemsize)[:, :96].astype(np.uint64)
    h = np.full(len(rows), 0xCBF29CE484222325, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(raw.shape[1]):
            h = (h ^ raw[:, j]) * np.uint64(0x100000001B3)
    return h


def _drop_test_positions_seen_in_train(tmp: Path, splits: dict, shard_rows: int) -> int:
    """Rewrite the test shards without positions that also occur in train; returns the count dropped."""
    train_hashes = np.unique(np.concatenate(
        [_position_hashes(np.load(tmp / s["file"], mmap_mode="r")) for s in splits["train"]["shards"]]
        or [np.zeros(0, np.uint64)]
    ))
    old = splits["test"]["shards"]
    writer = ShardWriter(tmp, "test.dedup", shard_rows)
    dropped = 0
    for s in old:
        rows = np.load(tmp / s["file"])
        keep = ~np.isin(_position_hashes(rows), train_hashes)
        dropped += int((~keep).sum())
        writer.add(rows[keep])
    new = writer.close()
    shutil.rmtree(tmp / "test")
    if (tmp / "test.dedup").exists():
        (tmp / "test.dedup").rename(tmp / "test")
    splits["test"]["shards"] = [{"file": s["file"].replace("test.dedup/", "test/"), "rows": s["rows"]} for s in new]
    splits["test"]["positions"] -= dropped
    return dropped


def prepare(inputs, out, *, test_fraction: float = 0.1, seed: int = 0, workers: int | None = None,
            test_data=(), game_filter: GameFilter = GameFilter(), dedupe: bool = False,
            dedupe_test: bool = False, shard_rows: int = SHARD_ROWS, overwrite: bool = False,
            progress: bool = True) -> dict:
    """Run the whole conversion; returns the report dict (also written to OUT/report.json)."""
    from tqdm import tqdm

    if not inputs and not test_data:
        raise PrepareError("no inputs given")
    train_files = find_inputs(inputs)
    test_files = find_inputs(test_data)
    # With --test-data the inputs are all train and the test sources all test; otherwise each
    # game's split comes from split_of().
    train_split = "train" if test_files else None
    all_files = [(p, train_split) for p in train_files] + [(p, "test") for p in test_files]
    if not all_files:
        raise PrepareError(f"no record files ({', '.join(sorted(RECORD_SUFFIXES))}) found in the inputs")
    out = Path(out)
    if out.exists() and not overwrite:
        raise PrepareError(f"{out}: already exists (use --overwrite to replace it)")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = parent / f".{out.name}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as e:
        raise PrepareError(f"{out}: cannot write output ({e.strerror})") from None

    workers = workers or os.cpu_count() or 1
    try:
        writers = {name: ShardWriter(tmp, name, shard_rows) for name in ("train", "test")}
        split_games = Counter()
        seen: set[bytes] = set()
        skipped, flagged, sources = [], [], []
        games_read = 0
        forced_split = {str(p): s for p, s in all_files}
        with open(tmp / "games.jsonl", "w", encoding="utf-8") as games_out, tqdm(
            total=len(all_files), unit="file", disable=not progress, desc="prepare", dynamic_ncols=True
        ) as bar:
            for fr in _results([p for p, _ in all_files], game_filter, workers):
                bar.update(1)
                sources.append({"path": fr.path, "sha256": fr.sha256})
                games_read += fr.games_read
                skipped.extend(fr.skipped)
                flagged.extend(fr.flagged)
                for g in fr.games:
                    if dedupe:
                        if g.key in seen:
                            skipped.append({"file": fr.path, "line": g.meta["line"], "reason": "duplicate game"})
                            continue
                        seen.add(g.key)
                    split = forced_split[fr.path] or split_of(g.key, seed, test_fraction)
                    game_id = sum(split_games.values())
                    g.rows["game"] = game_id
                    writer = writers[split]
                    meta = {"id": game_id, "split": split, "row_start": writer.positions, "positions": len(g.rows)}
                    meta.update(g.meta)
                    writer.add(g.rows)
                    split_games[split] += 1
                    games_out.write(json.dumps(meta, ensure_ascii=False) + "\n")
                if bar.n % 64 == 0:
                    bar.set_postfix(games=sum(split_games.values()),
                                    positions=sum(w.positions for w in writers.values()), refresh=False)
        splits = {}
        for name, writer in writers.items():
            splits[name] = {"games": split_games[name], "positions": writer.positions, "shards": writer.close()}
        total_positions = sum(s["positions"] for s in splits.values())
        if total_positions == 0:
            raise PrepareError(
                f"nothing survived the filters ({games_read} games read, {len(skipped)} skipped; "
                "see the reasons with --report or relax --min-moves / --min-rating / --no-require-eval)"
            )
        dropped_test = 0
        if dedupe_test and splits["test"]["positions"] and splits["train"]["positions"]:
            dropped_test = _drop_test_positions_seen_in_train(tmp, splits, shard_rows)
        manifest = {
            "format_version": FORMAT_VERSION,
            "row_dtype": [[name, str(POSITION_DTYPE.fields[name][0])] for name in POSITION_DTYPE.names],
            "shard_rows": shard_rows,
            "splits": splits,
            "filters": game_filter.as_dict() | {"dedupe": dedupe, "dedupe_test": dedupe_test},
            "test_fraction": test_fraction if not test_files else None,
            "test_data": [str(p) for p in test_files],
            "seed": seed,
            "sources": sources,
            "shogitrain_version": __version__,
        }
        reasons = Counter(_reason_kind(s["reason"]) for s in skipped)
        report = {
            "games_read": games_read,
            "games_kept": sum(split_games.values()),
            "positions": total_positions - dropped_test,
            "test_positions_dropped_as_seen_in_train": dropped_test,
            "skipped_by_reason": dict(sorted(reasons.items())),
            "skipped": skipped,
            "flagged": flagged,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
        (tmp / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
        if out.exists():
            old = parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return report


def _reason_kind(reason: str) -> str:
    """Group free-text reasons for the summary ('fewer than 50 moves', 'ending %SENNICHITE not allowed')."""
    return reason.split(":")[0][:60]


def summarize(report: dict, out) -> str:
    lines = [
        f"{out}: {report['games_kept']} of {report['games_read']} games kept, {report['positions']} positions",
    ]
    for reason, n in report["skipped_by_reason"].items():
        lines.append(f"  skipped {n:6d}  {reason}")
    if report["flagged"]:
        lines.append(f"  {len(report['flagged'])} games flagged (kept up to the problem; see report.json)")
    return "\n".join(lines)
