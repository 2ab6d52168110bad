"""Memory-mapped reading of a prepared dataset: manifest, per-game table, position rows.

Shards are opened with ``np.load(mmap_mode='r')``, so a dataset larger than RAM trains: only the
rows of the current batch are paged in. ``ShardDataset.batch_indices`` gives each epoch a seeded
permutation (``shards/order.py``: computed batch by batch, no memory per position) and, under DDP,
each rank a disjoint slice of it. ``ShardDataset.read`` adds the soft targets of a dataset that has
them (``shards/targets.py``). The per-game table and the source list are read as streams.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from shogitrain.shards.format import FORMAT_VERSION, POSITION_DTYPE, ROW_PROBLEMS, invalid_rows
from shogitrain.shards.order import EpochOrder
from shogitrain.shards.targets import ShardTargets, SoftRows, soft_rows


class DatasetError(ValueError):
    """A dataset directory that cannot be read (missing, wrong version, unknown split)."""


def load_manifest(root) -> dict:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise DatasetError(f"{root}: not a prepared dataset (no manifest.json; run `shogitrain prepare`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: unreadable ({getattr(e, 'msg', None) or e}); the dataset is damaged: "
                           "prepare it again") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("splits"), dict):
        raise DatasetError(f"{path}: not a shogitrain manifest (no splits)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{path}: format_version {manifest.get('format_version')} is not {FORMAT_VERSION}; prepare the data again"
        )
    return manifest


def manifest_hash(root) -> str:
    return hashlib.sha256((Path(root) / "manifest.json").read_bytes()).hexdigest()


def iter_games(root):
    """The games of games.jsonl, one dict at a time (the table may be far larger than memory)."""
    path = Path(root) / "games.jsonl"
    number = 0
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    yield json.loads(line)
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing; the dataset is incomplete: prepare it again") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: unreadable ({e})") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{number}: not a JSON line ({e.msg})") from None


def load_games(root) -> list[dict]:
    """All of games.jsonl as a list (small datasets and tests; large ones: :func:`iter_games`)."""
    return list(iter_games(root))


def source_count(manifest: dict) -> int:
    """The number of source files a dataset was prepared from."""
    if "source_files" in manifest:
        return int(manifest["source_files"])
    return len(manifest.get("sources", []))


def iter_sources(root, manifest: dict | None = None):
    """The dataset's sources ({path, sha256}), from sources.jsonl (datasets prepared before it
    existed list them in the manifest)."""
    manifest = load_manifest(root) if manifest is None else manifest
    if "source_files" not in manifest:
        yield from manifest.get("sources", [])
        return
    path = Path(root) / "sources.jsonl"
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing; the dataset is incomplete: prepare it again") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: unreadable ({getattr(e, 'msg', None) or e})") from None


def open_shard(path: Path, recorded: dict) -> np.ndarray:
    """Memory-map one shard, checked cheaply against the manifest: present, the recorded size,
    an .npy header of our row layout with the recorded number of rows."""
    try:
        size = path.stat().st_size
        if "bytes" in recorded and size != recorded["bytes"]:
            raise DatasetError(f"{path}: {size} bytes, the manifest recorded {recorded['bytes']} "
                               "(truncated or replaced); prepare the dataset again")
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing shard file; prepare the dataset again") from None
    except (OSError, ValueError, EOFError) as e:
        raise DatasetError(f"{path}: not a readable shard ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if array.dtype != POSITION_DTYPE or array.ndim != 1:
        raise DatasetError(f"{path}: unexpected row layout {array.dtype}")
    if len(array) != recorded.get("rows", len(array)):
        raise DatasetError(f"{path}: {len(array)} rows, the manifest recorded {recorded['rows']}")
    return array


ROW_BYTES = np.dtype(f"V{POSITION_DTYPE.itemsize}")  # a row as opaque bytes: far faster to gather than fields
# Below this many wanted rows per shard touched, rows are gathered one by one (a slice of the shard's
# bytes each, joined) rather than with one numpy call per shard: a random batch of a large dataset
# touches most of its shards (1,024 rows of 30M positions: ~400 of 458), and numpy's fixed cost per
# call then dominates (docs/benchmarks.md, "Scale").
ROWS_PER_SHARD_FOR_TAKE = 16


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
        self.files = [self.root / shard["file"] for shard in splits[split]["shards"]]
        self.shards = [open_shard(path, shard) for path, shard in zip(self.files, splits[split]["shards"])]
        lengths = np.array([len(s) for s in self.shards], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self._bytes = [shard.view(ROW_BYTES) for shard in self.shards]   # whole rows, copied as bytes
        self._flat = [memoryview(shard.view(np.uint8).reshape(-1)) for shard in self.shards]
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

    def rows(self, indices, check: bool = True) -> np.ndarray:
        """Rows at the given global indices (any order; ascending is fastest), gathered shard by shard
        and (``check``) checked by ``invalid_rows``: a bad row is a DatasetError naming its shard file
        and row."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty(len(indices), dtype=POSITION_DTYPE)
        ascending = bool((indices[1:] >= indices[:-1]).all())
        order = None if ascending else np.argsort(indices, kind="stable")
        wanted = indices if ascending else indices[order]
        if len(wanted) and (wanted[0] < 0 or wanted[-1] >= self.length):
            raise IndexError(f"row {wanted[0] if wanted[0] < 0 else wanted[-1]} is outside the {self.length} "
                             f"rows of {self.root} [{self.split}]")
        gathered = out.view(ROW_BYTES) if ascending else np.empty(len(wanted), ROW_BYTES)
        cuts = np.searchsorted(wanted, self.offsets)   # each shard's rows: wanted[cuts[s]:cuts[s+1]]
        if len(wanted) >= ROWS_PER_SHARD_FOR_TAKE * np.count_nonzero(np.diff(cuts)):
            cuts = cuts.tolist()
            for s, (a, b) in enumerate(zip(cuts, cuts[1:])):
                if a < b:
                    np.take(self._bytes[s], wanted[a:b] - self.offsets[s], out=gathered[a:b])
        elif len(wanted):
            shard_of = np.searchsorted(self.offsets, wanted, side="right") - 1
            start = (wanted - self.offsets[shard_of]) * ROW_BYTES.itemsize
            size, flat = ROW_BYTES.itemsize, self._flat
            joined = b"".join([flat[s][a:a + size] for s, a in zip(shard_of.tolist(), start.tolist())])
            gathered[:] = np.frombuffer(joined, ROW_BYTES)
        if not ascending:
            out.view(ROW_BYTES)[order] = gathered
        problems = invalid_rows(out) if check else None
        if check and problems.any():
            bad = int(np.flatnonzero(problems)[0])
            shard = int(np.searchsorted(self.offsets, indices[bad], side="right") - 1)
            raise DatasetError(f"{self.files[shard]}: row {int(indices[bad] - self.offsets[shard])}: "
                               f"{ROW_PROBLEMS[problems[bad]]} (check the dataset with `shogitrain verify "
                               f"{self.root}`)")
        return out

    def read(self, indices) -> np.ndarray | SoftRows:
        """``rows(indices)``, or with the soft targets of a dataset that has them a :class:`SoftRows`."""
        rows = self.rows(indices)
        if self.targets is None:
            return rows
        indices = np.asarray(indices, dtype=np.int64)
        shard_of = np.searchsorted(self.offsets, indices, side="right") - 1
        return soft_rows(rows, self.targets.gather(shard_of, indices - self.offsets[shard_of]))

    def slice(self, start: int, stop: int, check: bool = True) -> np.ndarray:
        return self.rows(np.arange(start, min(stop, self.length)), check)

    def batch_indices(self, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                      shuffle: bool = True, drop_last: bool = True, order: str = "keyed"):
        """Yield index arrays of ``batch_size // world_size`` rows for this rank, one per global batch.

        The permutation depends only on (seed, epoch), so every rank agrees and a resumed run sees
        the same order. Each global batch is split into disjoint per-rank parts. ``order``: 'keyed'
        (``EpochOrder``, computed batch by batch) or 'permutation' (numpy's, held whole).
        """
        if not shuffle:
            order = None
        elif order == "permutation":
            order = np.random.default_rng([seed, epoch]).permutation(self.length)
        else:
            order = EpochOrder(self.length, seed, epoch)
        per_rank = batch_size // world_size
        n_batches = self.length // batch_size if drop_last else -(-self.length // batch_size)
        for b in range(n_batches):
            positions = np.arange(b * batch_size, min((b + 1) * batch_size, self.length))
            batch = order[positions] if order is not None else positions
            yield np.sort(batch[rank * per_rank : (rank + 1) * per_rank])

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.length // batch_size
