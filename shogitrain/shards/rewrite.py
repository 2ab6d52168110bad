"""Rewriting one split of a dataset while ``prepare`` builds it: rows dropped or changed a chunk of a
shard at a time, the shards (and soft targets) written anew beside the old ones and swapped in; memory
stays at a chunk. Also the hash partitions on disk that the duplicate searches read."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from shogitrain.shards.format import POSITION_DTYPE
from shogitrain.shards.targets import PAIR_DTYPE, TARGET_DTYPE, TargetWriter, attach_target_files
from shogitrain.shards.writer import ShardWriter


def position_hashes(rows: np.ndarray) -> np.ndarray:
    """64-bit hash of each row's position (board, hands, side to move), vectorised (FNV-1a over the
    96 bytes, one byte column at a time: 8 bytes a row of memory)."""
    raw = np.ascontiguousarray(rows).view(np.uint8).reshape(len(rows), POSITION_DTYPE.itemsize)
    h = np.full(len(rows), 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    for j in range(96):
        h ^= raw[:, j]
        h *= prime
    return h


# Hash partitions: at most this many partition files are written in one pass over the input.
OPEN_PARTITIONS = 256


def hash_partitions(chunks, parts: int, work: Path, dtype):
    """The records of ``chunks()`` — an iterable of (hashes, records of ``dtype``), made anew for each
    pass — in ``parts`` partitions by hash % parts: one partition at a time, its records in the order
    they came. Partitions go to files in ``work``, OPEN_PARTITIONS per pass over the input."""
    if parts == 1:
        yield np.concatenate([records for _, records in chunks()] or [np.zeros(0, dtype)])
        return
    work.mkdir(parents=True, exist_ok=True)
    for low in range(0, parts, OPEN_PARTITIONS):
        high = min(low + OPEN_PARTITIONS, parts)
        files = [open(work / f"part-{k}.bin", "wb") for k in range(low, high)]
        try:
            for hashes, records in chunks():
                part = hashes % np.uint64(parts)
                order = np.argsort(part, kind="stable")
                bounds = np.searchsorted(part[order], np.arange(low, high + 1))
                for k in range(high - low):
                    files[k].write(records[order[bounds[k]:bounds[k + 1]]].tobytes())
        finally:
            for f in files:
                f.close()
        for k in range(low, high):
            records = np.fromfile(work / f"part-{k}.bin", dtype)
            os.unlink(work / f"part-{k}.bin")
            yield records


class KeptRows:
    """The rows a rewrite kept per game id, in a file of (game, rows) pairs in ascending game order (a
    split's games lie in id order in its shards; a game cut by a shard boundary is listed twice). After
    :meth:`close`, :meth:`rows_of` answers for game ids asked in ascending order."""

    DTYPE = np.dtype([("game", "<i8"), ("rows", "<i8")])

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "wb")
        self.pairs = self.pending = None

    def add(self, games: np.ndarray) -> None:
        """The ``game`` column of rows kept, in order."""
        ids, counts = np.unique(games, return_counts=True)
        pairs = np.zeros(len(ids), self.DTYPE)
        pairs["game"], pairs["rows"] = ids, counts
        self.file.write(pairs.tobytes())

    def close(self) -> None:
        self.file.close()
        self.pairs = self._read()
        self.pending = next(self.pairs, None)

    def _read(self):
        with open(self.path, "rb") as f:
            while block := f.read(self.DTYPE.itemsize << 16):
                yield from np.frombuffer(block, self.DTYPE).tolist()

    def rows_of(self, game: int) -> int:
        total = 0
        while self.pending is not None and self.pending[0] <= game:
            if self.pending[0] == game:
                total += self.pending[1]
            self.pending = next(self.pairs, None)
        return total


def pair_indices(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Indices of the pairs of rows with these ``starts`` / ``counts``, row after row."""
    counts = np.asarray(counts, np.int64)
    offsets = np.cumsum(counts) - counts
    return np.repeat(np.asarray(starts, np.int64) - offsets, counts) + np.arange(int(counts.sum()))


def select(rows: np.ndarray, soft, keep: np.ndarray):
    """The rows where ``keep``, with their soft targets ``(targets, pairs)`` (or None) compacted to match."""
    rows = rows[keep]
    if soft is None:
        return rows, None
    targets, pairs = soft
    targets = targets[keep]
    pairs = pairs[pair_indices(targets["start"], targets["count"])]
    targets["start"] = np.cumsum(targets["count"], dtype=np.int64) - targets["count"]
    return rows, (targets, pairs)


# A rewrite reads this many rows of a shard at a time (memory stays at a chunk, not a shard).
REWRITE_ROWS = 1 << 13


def _read_npy(path: Path, dtype, start: int, stop: int) -> np.ndarray:
    """Entries ``start:stop`` of a 1-d .npy file, read from the file (no memory map: its pages would
    stay in this process's memory)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in header:
            raise ValueError(f"{path}: .npy format version {version}")
        header[version](f)
        f.seek(start * np.dtype(dtype).itemsize, os.SEEK_CUR)
        return np.fromfile(f, dtype, stop - start)


def _load(root: Path, shard: dict, start: int, stop: int):
    """Rows ``start:stop`` of a shard, with their soft targets and pairs (starts counted from the first
    pair read) or None."""
    rows = _read_npy(root / shard["file"], POSITION_DTYPE, start, stop)
    if "targets" not in shard:
        return rows, None
    targets = _read_npy(root / shard["targets"], TARGET_DTYPE, start, stop)
    first = int(targets["start"][0]) if len(targets) else 0
    last = int(targets["start"][-1]) + int(targets["count"][-1]) if len(targets) else 0
    targets["start"] -= first
    return rows, (targets, _read_npy(root / shard["pairs"], PAIR_DTYPE, first, last))


def rewrite_split(root: Path, splits: dict, split: str, shard_rows: int, edit, kept: KeptRows | None = None) -> None:
    """Pass every shard of ``split`` through ``edit(shard, first_row, rows, soft) -> (rows, soft)``
    (``soft``: ``(targets, pairs)`` or None; an edit may add targets) and write the result as the split;
    ``splits[split]`` is updated. ``kept``: where to list the rows kept per game id."""
    info = splits[split]
    staging = f"{split}.new"
    writer = ShardWriter(root, staging, shard_rows)
    targets: TargetWriter | None = None
    first = 0
    for shard in info["shards"]:
        for start in range(0, shard["rows"], REWRITE_ROWS):
            stop = min(start + REWRITE_ROWS, shard["rows"])
            rows, soft = edit(shard, first + start, *_load(root, shard, start, stop))
            if soft is not None and targets is None:
                targets = TargetWriter.following(writer)
            writer.add(rows)
            if targets is not None:
                targets.add(rows, *(soft if soft is not None else (None, None)))
            if kept is not None:
                kept.add(rows["game"])
        first += shard["rows"]
    shards = writer.close()
    target_files = targets.close() if targets is not None else None
    shutil.rmtree(root / split)
    if (root / staging).exists():
        (root / staging).rename(root / split)

    def moved(name: str) -> str:
        return name.replace(f"{staging}/", f"{split}/", 1)

    info["shards"] = [dict(s, file=moved(s["file"])) for s in shards]
    if target_files is not None:
        attach_target_files(info["shards"], [{k: moved(v) for k, v in t.items()} for t in target_files])
    info["positions"] = writer.positions
