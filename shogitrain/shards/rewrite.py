"""Rewriting one split of a dataset while ``prepare`` builds it: rows dropped or changed shard by shard,
the shards (and soft targets) written anew beside the old ones and swapped in; memory stays at one shard."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from shogitrain.shards.format import POSITION_DTYPE
from shogitrain.shards.targets import TargetWriter, attach_target_files
from shogitrain.shards.writer import ShardWriter


def position_hashes(rows: np.ndarray) -> np.ndarray:
    """64-bit hash of each row's position (board, hands, side to move), vectorised."""
    raw = rows.view(np.uint8).reshape(len(rows), POSITION_DTYPE.itemsize)[:, :96].astype(np.uint64)
    h = np.full(len(rows), 0xCBF29CE484222325, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(raw.shape[1]):
            h = (h ^ raw[:, j]) * np.uint64(0x100000001B3)
    return h


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


def _load(root: Path, shard: dict):
    rows = np.load(root / shard["file"])
    if "targets" not in shard:
        return rows, None
    return rows, (np.load(root / shard["targets"]), np.load(root / shard["pairs"]))


def rewrite_split(root: Path, splits: dict, split: str, shard_rows: int, edit) -> Counter:
    """Pass every shard of ``split`` through ``edit(shard, first_row, rows, soft) -> (rows, soft)``
    (``soft``: ``(targets, pairs)`` or None; an edit may add targets) and write the result as the split;
    ``splits[split]`` is updated. Returns the rows kept per game id."""
    info = splits[split]
    staging = f"{split}.new"
    writer = ShardWriter(root, staging, shard_rows)
    targets: TargetWriter | None = None
    kept: Counter = Counter()
    first = 0
    for shard in info["shards"]:
        rows, soft = edit(shard, first, *_load(root, shard))
        first += shard["rows"]
        if soft is not None and targets is None:
            targets = TargetWriter.following(writer)
        writer.add(rows)
        if targets is not None:
            targets.add(rows, *(soft if soft is not None else (None, None)))
        ids, counts = np.unique(rows["game"], return_counts=True)
        kept.update(dict(zip(ids.tolist(), counts.tolist())))
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
    return kept
