"""Append-only writer of fixed-size shard files for one split."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from shogitrain.files import write_error
from shogitrain.shards.format import POSITION_DTYPE

SHARD_ROWS = 1 << 16  # 65,536 positions ≈ 7 MB per shard file


def _as_bytes(rows: np.ndarray) -> np.ndarray:
    rows = np.ascontiguousarray(rows, dtype=POSITION_DTYPE)
    return rows.view(np.uint8).reshape(len(rows), POSITION_DTYPE.itemsize)


class _HashingFile:
    """A binary file that also hashes and counts what is written to it."""

    def __init__(self, f):
        self.f, self.sha256, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(memoryview(data).cast("B"))
        return self.f.write(data)


class ShardWriter:
    """Buffers rows and writes ``DIR/<split>/shard-NNNNN.npy`` files of ``shard_rows`` rows each.

    Memory stays at one shard's worth of rows whatever the size of the input.
    """

    def __init__(self, root: Path, split: str, shard_rows: int = SHARD_ROWS):
        self.dir = Path(root) / split
        self.split = split
        self.shard_rows = shard_rows
        self.buffer = np.zeros(shard_rows, dtype=POSITION_DTYPE)
        self._bytes = self.buffer.view(np.uint8).reshape(shard_rows, POSITION_DTYPE.itemsize)
        self.filled = 0
        self.shards: list[dict] = []
        self.positions = 0

    def add(self, rows: np.ndarray) -> None:
        start = 0
        while start < len(rows):
            take = min(len(rows) - start, self.shard_rows - self.filled)
            # one byte copy instead of numpy's field-by-field structured assignment
            self._bytes[self.filled : self.filled + take] = _as_bytes(rows[start : start + take])
            self.filled += take
            start += take
            if self.filled == self.shard_rows:
                self._flush()
        self.positions += len(rows)

    def _flush(self) -> None:
        if self.filled == 0:
            return
        name = f"shard-{len(self.shards):05d}.npy"
        path = self.dir / name
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                out = _HashingFile(f)
                np.save(out, self.buffer[: self.filled], allow_pickle=False)
        except OSError as e:
            raise write_error(e, path) from None
        self.shards.append({"file": f"{self.split}/{name}", "rows": int(self.filled), "bytes": out.size,
                            "sha256": out.sha256.hexdigest()})
        self.filled = 0

    def close(self) -> list[dict]:
        self._flush()
        return self.shards
