"""Append-only writer of fixed-size shard files for one split."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from pathlib import Path

import numpy as np

from shogitrain.files import write_error
from shogitrain.shards.format import POSITION_DTYPE

SHARD_ROWS = 1 << 16  # 65,536 positions ≈ 7 MB per shard file


def _as_bytes(rows: np.ndarray) -> np.ndarray:
    rows = np.ascontiguousarray(rows, dtype=POSITION_DTYPE)
    return rows.view(np.uint8).reshape(len(rows), POSITION_DTYPE.itemsize)


def _header(rows: int) -> bytes:
    """The .npy header np.save writes for ``rows`` rows of POSITION_DTYPE."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(POSITION_DTYPE),
                                               "fortran_order": False, "shape": (rows,)})
    return out.getvalue()


class _HashingFile:
    """A binary file that also hashes and counts what is written to it."""

    def __init__(self, f):
        self.f, self.sha256, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(memoryview(data).cast("B"))
        return self.f.write(data)


class ShardWriter:
    """Writes ``DIR/<split>/shard-NNNNN.npy`` files of ``shard_rows`` rows each, the rows going to the
    open shard file as they come (no rows are held in memory, whatever the size of the input). A shard
    is written with the header of a full one; the last one, if shorter, gets its own header at close."""

    def __init__(self, root: Path, split: str, shard_rows: int = SHARD_ROWS):
        self.dir = Path(root) / split
        self.split = split
        self.shard_rows = shard_rows
        self.out: _HashingFile | None = None
        self.filled = 0
        self.shards: list[dict] = []
        self.positions = 0

    def _path(self) -> Path:
        return self.dir / f"shard-{len(self.shards):05d}.npy"

    def add(self, rows: np.ndarray) -> None:
        data = _as_bytes(rows)
        start = 0
        try:
            while start < len(data):
                if self.out is None:
                    self.dir.mkdir(parents=True, exist_ok=True)
                    self.out = _HashingFile(open(self._path(), "wb"))
                    self.out.write(_header(self.shard_rows))
                take = min(len(data) - start, self.shard_rows - self.filled)
                self.out.write(data[start : start + take])
                self.filled += take
                start += take
                if self.filled == self.shard_rows:
                    self._finish(self.out)
        except OSError as e:
            path = self._path()
            if self.out is not None:        # the dataset is abandoned: do not keep its file open
                with contextlib.suppress(OSError):
                    self.out.f.close()
                self.out = None
            raise write_error(e, path) from None
        self.positions += len(rows)

    def _finish(self, out: _HashingFile) -> None:
        out.f.close()
        self.shards.append({"file": f"{self.split}/{self._path().name}", "rows": int(self.filled), "bytes": out.size,
                            "sha256": out.sha256.hexdigest()})
        self.out, self.filled = None, 0

    def open_rows(self) -> np.ndarray:
        """The rows of the shard being written (read back from its file)."""
        if self.out is None:
            return np.zeros(0, POSITION_DTYPE)
        self.out.f.flush()
        return np.fromfile(self._path(), POSITION_DTYPE, self.filled, offset=len(_header(self.shard_rows)))

    def close(self) -> list[dict]:
        """Finish the last shard (with the header of its length) and list the shards."""
        if self.out is None:
            return self.shards
        path = self._path()
        try:
            self.out.f.close()
            if self.filled < self.shard_rows:
                staged = path.with_name(path.name + ".part")
                os.replace(path, staged)
                out = _HashingFile(open(path, "wb"))
                out.write(_header(self.filled))
                with open(staged, "rb") as f:
                    f.seek(len(_header(self.shard_rows)))
                    while block := f.read(1 << 22):
                        out.write(block)
                os.unlink(staged)
                self.out = out
            self._finish(self.out)
        except OSError as e:
            raise write_error(e, path) from None
        return self.shards
