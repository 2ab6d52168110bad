"""Memory-mapped reading of a prepared dataset: manifest, per-game table, position rows.

Shards are opened with ``np.load(mmap_mode='r')``, so a dataset larger than RAM trains: only the
rows of the current batch are paged in. ``ShardDataset.batch_indices`` gives each epoch a seeded
permutation and, under DDP, each rank a disjoint slice of it. ``ShardDataset.read`` adds the soft
targets of a dataset that has them (``shards/targets.py``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from shogitrain.shards.format import FORMAT_VERSION, POSITION_DTYPE
from shogitrain.shards.targets import ShardTargets, SoftRows, soft_rows


class DatasetError(ValueError):
    """A dataset directory that cannot be read (missing, wrong version, unknown split)."""


def load_manifest(root) -> dict:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise DatasetError(f"{root}: not a prepared dataset (no manifest.json; run `shogitrain prepare`)")
    manifest = json.loads(path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{path}: format_version {manifest.get('format_version')} is not {FORMAT_VERSION}; prepare the data again"
        )
    return manifest


def manifest_hash(root) -> str:
    return hashlib.sha256((Path(root) / "manifest.json").read_bytes()).hexdigest()


def load_games(root) -> list[dict]:
    path = Path(root) / "games.jsonl"
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class ShardDataset:
    """All rows of one split as one indexable sequence over memory-mapped shard files."""

    def __init__(self, root, split: str = "train", manifest: dict | None = None):
        """``manifest``: the one of a dataset still being written (default: read ROOT/manifest.json)."""
        self.root = Path(root)
        self.manifest = load_manifest(root) if manifest is None else manifest
        splits = self.manifest["splits"]
        if split not in splits:
            raise DatasetError(f"{root}: no split {split!r} (have: {', '.join(sorted(splits))})")
        self.split = split
        self.shards = []
        for shard in splits[split]["shards"]:
            array = np.load(self.root / shard["file"], mmap_mode="r", allow_pickle=False)
            if array.dtype != POSITION_DTYPE:
                raise DatasetError(f"{self.root / shard['file']}: unexpected row layout {array.dtype}")
            self.shards.append(array)
        lengths = np.array([len(s) for s in self.shards], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.length = int(self.offsets[-1])
        entries = splits[split]["shards"]
        self.targets = None
        if entries and all("targets" in s for s in entries):
            try:
                self.targets = ShardTargets(self.root, entries)
            except (OSError, ValueError) as e:
                raise DatasetError(f"{self.root}: unreadable soft targets ({e})") from None

    def __len__(self) -> int:
        return self.length

    def rows(self, indices) -> np.ndarray:
        """Rows at the given global indices (any order), gathered shard by shard."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(self.shards) == 1:
            return np.asarray(self.shards[0][indices])
        out = np.empty(len(indices), dtype=POSITION_DTYPE)
        shard_of = np.searchsorted(self.offsets, indices, side="right") - 1
        for s in np.unique(shard_of):
            mask = shard_of == s
            out[mask] = self.shards[s][indices[mask] - self.offsets[s]]
        return out

    def read(self, indices) -> np.ndarray | SoftRows:
        """``rows(indices)``, or with the soft targets of a dataset that has them a :class:`SoftRows`."""
        rows = self.rows(indices)
        if self.targets is None:
            return rows
        indices = np.asarray(indices, dtype=np.int64)
        shard_of = np.searchsorted(self.offsets, indices, side="right") - 1
        return soft_rows(rows, self.targets.gather(shard_of, indices - self.offsets[shard_of]))

    def slice(self, start: int, stop: int) -> np.ndarray:
        return self.rows(np.arange(start, min(stop, self.length)))

    def batch_indices(self, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                      shuffle: bool = True, drop_last: bool = True):
        """Yield index arrays of ``batch_size // world_size`` rows for this rank, one per global batch.

        The permutation depends only on (seed, epoch), so every rank agrees and a resumed run sees
        the same order. Each global batch is split into disjoint per-rank parts.
        """
        order = np.random.default_rng([seed, epoch]).permutation(self.length) if shuffle else np.arange(self.length)
        per_rank = batch_size // world_size
        n_batches = self.length // batch_size if drop_last else -(-self.length // batch_size)
        for b in range(n_batches):
            batch = order[b * batch_size : (b + 1) * batch_size]
            yield np.sort(batch[rank * per_rank : (rank + 1) * per_rank])

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.length // batch_size
