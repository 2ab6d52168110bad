"""Optional soft targets beside the shard rows: a policy distribution and a float result per row.

Datasets prepared from hcpe3 (visit counts) or with ``--average-duplicates`` carry, next to each
``<split>/shard-NNNNN.npy``, two memory-mappable files:

* ``shard-NNNNN.targets.npy`` — one ``TARGET_DTYPE`` entry per row: ``start`` / ``count`` of its
  (move, weight) pairs in the pairs file, and ``result`` (float, side to move: 1 win, 0 loss; averaged
  over duplicates). ``count`` 0 = the one-hot target of the row's ``move16``.
* ``shard-NNNNN.pairs.npy`` — ``PAIR_DTYPE`` (move16, weight) pairs, row after row.

The rows stay the 107-byte ``POSITION_DTYPE``; a dataset without these files (format 1 as before)
trains on the one-hot target. The manifest's shard entries name the files (``targets``, ``pairs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shogitrain.shards.format import POSITION_DTYPE

TARGET_DTYPE = np.dtype([("start", "<u4"), ("count", "<u2"), ("result", "<f4")])
PAIR_DTYPE = np.dtype([("move16", "<u2"), ("weight", "<f4")])


def plain_targets(rows: np.ndarray) -> np.ndarray:
    """Targets of rows without a distribution: count 0 (one-hot on move16), result from the row."""
    targets = np.zeros(len(rows), TARGET_DTYPE)
    targets["result"] = rows["result"] / np.float32(2)
    return targets


@dataclass
class SoftRows:
    """A batch of rows with their soft targets: ``pairs`` holds ``counts[i]`` pairs for row i, in order."""

    rows: np.ndarray       # POSITION_DTYPE [B]
    counts: np.ndarray     # int64 [B]
    pairs: np.ndarray      # PAIR_DTYPE [Σ counts]
    result: np.ndarray     # float32 [B]

    def __len__(self) -> int:
        return len(self.rows)


class TargetWriter:
    """Writes the targets and pairs files of one split, shard by shard, beside a ShardWriter that gets
    the same rows in the same order (so the shard boundaries agree)."""

    def __init__(self, root: Path, split: str, shard_rows: int):
        self.dir = Path(root) / split
        self.split = split
        self.shard_rows = shard_rows
        self.targets: list[np.ndarray] = []
        self.pairs: list[np.ndarray] = []
        self.filled = self.pair_count = 0
        self.shards: list[dict] = []

    @classmethod
    def following(cls, writer) -> "TargetWriter":
        """A TargetWriter for a ShardWriter that already holds rows: those get plain targets."""
        self = cls(writer.dir.parent, writer.split, writer.shard_rows)
        for shard in writer.shards:
            rows = np.load(writer.dir.parent / shard["file"], mmap_mode="r")
            self.add(rows)
        self.add(writer.open_rows())
        return self

    def add(self, rows: np.ndarray, targets: np.ndarray | None = None, pairs: np.ndarray | None = None) -> None:
        """Targets of ``rows`` (their ``start`` relative to ``pairs``); None: plain targets."""
        if targets is None:
            targets, pairs = plain_targets(rows), np.zeros(0, PAIR_DTYPE)
        done = 0
        while done < len(targets):
            take = min(len(targets) - done, self.shard_rows - self.filled)
            part = targets[done:done + take].copy()
            first = int(part["start"][0])
            last = int(part["start"][-1]) + int(part["count"][-1])
            part["start"] = part["start"] - first + self.pair_count
            self.targets.append(part)
            self.pairs.append(pairs[first:last])
            self.pair_count += last - first
            self.filled += take
            done += take
            if self.filled == self.shard_rows:
                self._flush()

    def _flush(self) -> None:
        if self.filled == 0:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        stem = f"shard-{len(self.shards):05d}"
        np.save(self.dir / f"{stem}.targets.npy", np.concatenate(self.targets), allow_pickle=False)
        np.save(self.dir / f"{stem}.pairs.npy", np.concatenate(self.pairs) if self.pairs else
                np.zeros(0, PAIR_DTYPE), allow_pickle=False)
        self.shards.append({"targets": f"{self.split}/{stem}.targets.npy", "pairs": f"{self.split}/{stem}.pairs.npy"})
        self.targets, self.pairs = [], []
        self.filled = self.pair_count = 0

    def close(self) -> list[dict]:
        self._flush()
        return self.shards


def attach_target_files(shards: list[dict], target_files: list[dict]) -> None:
    """Name each shard's targets and pairs files in its manifest entry."""
    if len(shards) != len(target_files):
        raise AssertionError(f"{len(shards)} shards but {len(target_files)} target files")
    for shard, files in zip(shards, target_files):
        shard.update(files)


class ShardTargets:
    """The memory-mapped targets of one split's shards (see ShardDataset)."""

    def __init__(self, root: Path, shards: list[dict]):
        self.targets = [np.load(root / s["targets"], mmap_mode="r") for s in shards]
        self.pairs = [np.load(root / s["pairs"], mmap_mode="r") for s in shards]
        for s, t, p in zip(shards, self.targets, self.pairs):
            if t.dtype != TARGET_DTYPE or p.dtype != PAIR_DTYPE or len(t) != s["rows"]:
                raise ValueError(f"{root / s['targets']}: targets do not match the shard's {s['rows']} rows")

    def gather(self, shard_of: np.ndarray, local: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(counts, pairs, result) of rows ``local[i]`` of shards ``shard_of[i]``, pairs in row order."""
        n = len(local)
        counts = np.zeros(n, np.int64)
        result = np.zeros(n, np.float32)
        starts = np.zeros(n, np.int64)
        for s, a, b in _runs(shard_of):
            t = self.targets[s][local[a:b]]
            counts[a:b], result[a:b], starts[a:b] = t["count"], t["result"], t["start"]
        offsets = np.cumsum(counts) - counts
        flat = np.repeat(starts - offsets, counts) + np.arange(int(counts.sum()))
        pairs = np.empty(len(flat), PAIR_DTYPE)
        for s, a, b in _runs(np.repeat(shard_of, counts)):
            pairs[a:b] = self.pairs[s][flat[a:b]]
        return counts, pairs, result


def _runs(values: np.ndarray):
    """(value, start, stop) of each run of equal neighbours (a batch's shard numbers, ascending: one run a shard)."""
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]]) if len(values) else np.zeros(0, np.int64)
    stops = np.r_[starts[1:], len(values)]
    return zip(values[starts].tolist(), starts.tolist(), stops.tolist())


def soft_rows(rows: np.ndarray, gathered) -> SoftRows:
    counts, pairs, result = gathered
    return SoftRows(np.asarray(rows, POSITION_DTYPE), counts, pairs, result)
