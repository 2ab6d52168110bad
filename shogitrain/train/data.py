"""From shard rows to a device batch: gather rows from the memmaps, copy the compact fields to the
device (pinned, non-blocking on CUDA), build the input planes there — all in a background thread
(:class:`RowPrefetcher` with ``transform=make_batch``), a few batches ahead of the training step.
Rows with soft targets (``SoftRows``) also get their dense policy target built on the device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shogitrain.readahead import read_ahead
from shogitrain.features import encode_rows, move_labels
from shogitrain.names import FEATURES2_PLANES, POLICY_SIZE
from shogitrain.shards.format import EVAL_MISSING
from shogitrain.shards.reader import ShardDataset, iter_games, load_manifest
from shogitrain.shards.targets import SoftRows


@dataclass
class Batch:
    x1: torch.Tensor  # [B,62,9,9]
    x2: torch.Tensor  # [B,57,9,9]
    labels: torch.Tensor  # [B] int64, dlshogi move label
    result: torch.Tensor  # [B] float, 1 / 0.5 / 0 from the side to move
    eval: torch.Tensor  # [B] float, centipawns from the side to move (0 where missing)
    has_eval: torch.Tensor  # [B] bool
    ply: torch.Tensor  # [B] int64
    min_rating: torch.Tensor  # [B] float, lower rating of the game's players (nan when unrated)
    policy: torch.Tensor | None = None  # [B, 2187] float: the soft policy target, when the data has one

    def __len__(self) -> int:
        return self.labels.shape[0]


def game_min_ratings(root) -> np.ndarray:
    """Per game id, the lower of the two ratings (nan when a player is unrated): 4 bytes a game, read
    from games.jsonl as a stream."""
    manifest = load_manifest(root)
    out = np.full(sum(int(s.get("games", 0)) for s in manifest["splits"].values()), np.nan, dtype=np.float32)
    for g in iter_games(root):
        if g.get("min_rating") is not None:
            if g["id"] >= len(out):  # a table longer than the manifest says (verify reports it)
                out = np.concatenate([out, np.full(g["id"] + 1 - len(out), np.nan, np.float32)])
            out[g["id"]] = g["min_rating"]
    return out


def _policy_target(soft: SoftRows, labels: torch.Tensor, to_device) -> torch.Tensor:
    """Dense [B, 2187] policy targets: each row's (move, weight) pairs, or 1 on its played move."""
    n = len(soft)
    target = torch.zeros(n, POLICY_SIZE, dtype=torch.float32, device=labels.device)
    owner = np.repeat(np.arange(n), soft.counts)
    if len(owner):
        pair_labels = move_labels(None, to_device(soft.pairs["move16"].astype(np.int32)),
                                  to_device(soft.rows["turn"][owner]))
        target.index_put_((to_device(owner), pair_labels), to_device(soft.pairs["weight"].astype(np.float32)),
                          accumulate=True)
    onehot = to_device(np.flatnonzero(soft.counts == 0))
    target[onehot, labels[onehot]] = 1.0
    return target


def make_batch(rows: np.ndarray | SoftRows, device: torch.device, min_ratings: np.ndarray | None = None,
               input2_planes: int = FEATURES2_PLANES) -> Batch:
    """A device batch of shard rows (or of :class:`SoftRows`: with their policy targets and float results)."""
    soft = rows if isinstance(rows, SoftRows) else None
    if soft is not None:
        rows = soft.rows
    non_blocking = device.type == "cuda"
    x1, x2, labels = encode_rows(rows, device=device, non_blocking=non_blocking, input2_planes=input2_planes)

    def to_device(array: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(array))
        if non_blocking:
            t = t.pin_memory()
        return t.to(device, non_blocking=non_blocking)

    evals = rows["eval"].astype(np.int32)
    has_eval = evals != EVAL_MISSING
    ratings = (min_ratings[rows["game"]] if min_ratings is not None
               else np.full(len(rows), np.nan, dtype=np.float32))
    return Batch(
        x1=x1, x2=x2, labels=labels,
        result=to_device(soft.result if soft is not None else rows["result"].astype(np.float32) / 2),
        eval=to_device(np.where(has_eval, evals, 0).astype(np.float32)),
        has_eval=to_device(has_eval),
        ply=to_device(rows["ply"].astype(np.int64)),
        min_rating=to_device(ratings.astype(np.float32)),
        policy=None if soft is None else _policy_target(soft, labels, to_device),
    )


class RowPrefetcher:
    """``dataset.read(indices)`` for each index array — or ``transform`` of it when a transform is
    given — produced ``depth`` items ahead in a daemon thread (:func:`~shogitrain.readahead.read_ahead`).

    numpy's fancy indexing on memmaps and torch's ops release the GIL, so with
    ``transform=lambda rows: make_batch(rows, device, ...)`` the gather, the pinned copy and the
    feature encoding of the next batches overlap the training step on the main thread. An error
    raised in the thread (by ``dataset.read`` or ``transform``) is raised at its place.

    ``intra_op_threads``: torch's intra-op thread count for ``transform`` in the worker (e.g. 1 on
    CPU, so that encoding does not run a second OpenMP team against the training step's on the
    same cores; the count is thread-local for a running thread, and is restored after each call).
    None leaves it alone. ``cuda_device``: the worker's current CUDA device. Call :meth:`close`
    (or use ``with``) when stopping before the end, so that the thread does not stay blocked.
    """

    def __init__(self, dataset: ShardDataset, index_batches, depth: int = 2, transform=None,
                 intra_op_threads: int | None = None, cuda_device: torch.device | None = None):
        self._items = read_ahead(_batches(dataset, index_batches, transform, intra_op_threads, cuda_device), depth)

    def __iter__(self):
        return self._items

    def close(self) -> None:
        self._items.close()

    def __enter__(self) -> "RowPrefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _batches(dataset, index_batches, transform, intra_op_threads, cuda_device):
    """What RowPrefetcher's thread produces, in that thread."""
    if cuda_device is not None:
        torch.cuda.set_device(cuda_device)  # the current device is per thread
    for indices in index_batches:
        item = dataset.read(indices)
        if transform is not None and intra_op_threads:
            previous = torch.get_num_threads()
            torch.set_num_threads(intra_op_threads)
            try:
                item = transform(item)
            finally:
                torch.set_num_threads(previous)
        elif transform is not None:
            item = transform(item)
        yield item
