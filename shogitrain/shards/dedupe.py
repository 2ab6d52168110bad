"""Duplicates found in bounded memory while ``prepare`` builds a dataset.

``--dedupe`` (repeated games): as prepare streams, each game's 16-byte key goes to a log on disk
(:class:`GameLog`) and its rows are written like any other's. Afterwards the log is read in hash
partitions (KEYS_IN_MEMORY keys at most at once) and each game whose key an earlier game had is
marked in a :class:`Bitmap` (one bit a game). Only if some game repeats are the shards rewritten
without those games and the other games' ids renumbered (:func:`drop_games`): the dataset that
skipping them as they came would have written.

``--dedupe-test`` (test positions that also occur in train): the position hashes of both splits go
to hash partitions on disk (HASHES_IN_MEMORY hashes at most in one); the test rows whose hash occurs
in train are marked in a bitmap and the test shards rewritten without them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shogitrain.shards.rewrite import KeptRows, hash_partitions, position_hashes, rewrite_split, select

KEYS_IN_MEMORY = 1 << 17       # --dedupe: game keys (24 bytes each with the game id) held at once
HASHES_IN_MEMORY = 1 << 18     # --dedupe-test: position hashes of one split held at once
CHUNK = 1 << 16                # log records read at a time

_LOGGED = np.dtype([("k0", "<u8"), ("k1", "<u8"), ("skipped_at", "<i8")])
_KEYED = np.dtype([("k0", "<u8"), ("k1", "<u8"), ("game", "<i8")])
_HASHED_ROW = np.dtype([("hash", "<u8"), ("row", "<i8")])


class Bitmap:
    """A set of integers in 0..n-1, one bit each."""

    def __init__(self, n: int):
        self.words = np.zeros(max(1, -(-n // 64)), np.uint64)
        self._before = None          # members in the words before each word (for rank), once asked

    def add(self, items) -> None:
        items = np.asarray(items, np.uint64)
        np.bitwise_or.at(self.words, items >> np.uint64(6), np.uint64(1) << (items & np.uint64(63)))
        self._before = None

    def has(self, items) -> np.ndarray:
        items = np.asarray(items, np.uint64)
        return ((self.words[items >> np.uint64(6)] >> (items & np.uint64(63))) & np.uint64(1)).astype(bool)

    def count(self) -> int:
        return int(np.bitwise_count(self.words).sum())

    def rank(self, items) -> np.ndarray:
        """Per item, the members smaller than it."""
        if self._before is None:
            counts = np.bitwise_count(self.words).astype(np.int64)
            self._before = np.cumsum(counts) - counts
        items = np.asarray(items, np.uint64)
        word = items >> np.uint64(6)
        below = self.words[word] & ((np.uint64(1) << (items & np.uint64(63))) - np.uint64(1))
        return self._before[word] + np.bitwise_count(below).astype(np.int64)


class GameLog:
    """``--dedupe``'s record of the games in the order prepare wrote them: each one's key, and the length
    the report's skipped list had when it came (where the entry of a repeat belongs)."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "wb")
        self.games = 0

    def add(self, key: bytes, skipped_at: int) -> None:
        self.file.write(key + skipped_at.to_bytes(8, "little", signed=True))
        self.games += 1

    def close(self) -> None:
        self.file.close()

    def _records(self):
        with open(self.path, "rb") as f:
            while block := f.read(_LOGGED.itemsize * CHUNK):
                yield np.frombuffer(block, _LOGGED)

    def skipped_at(self):
        """Each game's ``skipped_at``, in order."""
        for records in self._records():
            yield from records["skipped_at"].tolist()

    def repeats(self, work: Path) -> Bitmap:
        """The games whose key an earlier game has (the log closed first)."""
        self.close()
        work.mkdir(parents=True, exist_ok=True)
        repeated = Bitmap(self.games)

        def chunks():
            first = 0
            for records in self._records():
                keyed = np.zeros(len(records), _KEYED)
                keyed["k0"], keyed["k1"] = records["k0"], records["k1"]
                keyed["game"] = np.arange(first, first + len(records))
                first += len(records)
                yield records["k0"], keyed

        for part in hash_partitions(chunks, max(1, -(-self.games // KEYS_IN_MEMORY)), work, _KEYED):
            part = part[np.lexsort((part["game"], part["k1"], part["k0"]))]
            again = (part["k0"][1:] == part["k0"][:-1]) & (part["k1"][1:] == part["k1"][:-1])
            repeated.add(part["game"][1:][again])
        return repeated


def drop_games(root: Path, splits: dict, shard_rows: int, dropped: Bitmap) -> None:
    """Rewrite every split without the rows of the ``dropped`` game ids, the other games renumbered
    0, 1, … in their order (each id less the dropped ids below it)."""
    def edit(shard: dict, first: int, rows: np.ndarray, soft):
        games = rows["game"].astype(np.int64)
        keep = ~dropped.has(games)
        rows, soft = select(rows, soft, keep)
        rows["game"] = games[keep] - dropped.rank(games[keep])
        return rows, soft

    for split, info in splits.items():
        if info["positions"]:
            rewrite_split(root, splits, split, shard_rows, edit)


def _hashes(root: Path, shards: list[dict], with_rows: bool):
    """(hashes, records) of each shard's positions: the hashes, or with ``with_rows`` (hash, row) pairs.
    Each shard is read whole and let go (a memory map kept open would hold every page it read)."""
    first = 0
    for shard in shards:
        h = position_hashes(np.load(root / shard["file"]))
        if with_rows:
            records = np.zeros(len(h), _HASHED_ROW)
            records["hash"], records["row"] = h, np.arange(first, first + len(h))
            yield h, records
        else:
            yield h, h
        first += len(h)


def drop_test_positions_seen_in_train(root: Path, splits: dict, shard_rows: int, work: Path) -> tuple[int, KeptRows]:
    """Rewrite the test shards (and soft targets) without the positions that also occur in train;
    returns (rows dropped, the rows kept per test game: a :class:`KeptRows` in ``work``)."""
    work.mkdir(parents=True, exist_ok=True)
    train, test = splits["train"], splits["test"]
    parts = max(1, -(-max(train["positions"], test["positions"]) // HASHES_IN_MEMORY))
    seen = Bitmap(test["positions"])
    train_parts = hash_partitions(lambda: _hashes(root, train["shards"], False), parts, work / "train", np.uint64)
    test_parts = hash_partitions(lambda: _hashes(root, test["shards"], True), parts, work / "test", _HASHED_ROW)
    for train_hashes, test_rows in zip(train_parts, test_parts):
        seen.add(test_rows["row"][np.isin(test_rows["hash"], train_hashes)])
    kept = KeptRows(work / "kept.bin")
    rewrite_split(root, splits, "test", shard_rows,
                  lambda shard, first, rows, soft: select(rows, soft, ~seen.has(np.arange(first, first + len(rows)))),
                  kept)
    kept.close()
    return seen.count(), kept
