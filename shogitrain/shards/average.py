"""``prepare --average-duplicates``: identical positions of a split merged into one row, as dlshogi's
``--use_average`` does — the policy target is the mean of the duplicates' distributions (a one-hot row
counts as its move with weight 1), the result the mean result, the value the mean value target
(``sigmoid(eval / EVAL_SCALE)``, or the result where a row has no eval), stored back as an eval in
centipawns. The row kept is the first occurrence (its game, ply and played move stay).

Memory stays bounded: the rows' indices go to hash partitions on disk (AVERAGE_ROWS rows at most in
one), duplicates are found per partition by comparing the 96 position bytes, the plan (which row stays
with which averaged targets) is kept in memory-mapped files, and a last pass rewrites the shards.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from shogitrain.names import EVAL_SCALE
from shogitrain.shards.format import EVAL_LIMIT, EVAL_MISSING, POSITION_DTYPE
from shogitrain.shards.reader import ShardDataset
from shogitrain.shards.rewrite import KeptRows, hash_partitions, pair_indices, position_hashes, rewrite_split, select
from shogitrain.shards.targets import PAIR_DTYPE, TARGET_DTYPE, SoftRows, plain_targets

AVERAGE_ROWS = 1 << 20      # rows of one hash partition (their rows and targets are held at once)
GROUP_DTYPE = np.dtype([("eval", "<i2"), ("result", "<f4"), ("start", "<u8"), ("count", "<u2")])
DROPPED, UNCHANGED = -2, -1


def _partitions(data: ShardDataset, parts: int, work: Path, chunk: int = 1 << 18):
    """Row indices (ascending) of each hash partition of the split, one partition at a time."""
    if parts == 1:
        return iter([np.arange(len(data))])

    def chunks():
        for start in range(0, len(data), chunk):
            rows = data.slice(start, start + chunk)
            yield position_hashes(rows), np.arange(start, start + len(rows), dtype=np.int64)
    return hash_partitions(chunks, parts, work, np.int64)


def _member_pairs(item, order: np.ndarray, rows: np.ndarray, group_of: np.ndarray):
    """(move16, weight, group) of every duplicate's policy target: its pairs, or its move with weight 1."""
    counts = item.counts[order] if isinstance(item, SoftRows) else np.zeros(len(order), np.int64)
    onehot = counts == 0
    move16 = [rows["move16"][order][onehot]]
    weight = [np.ones(int(onehot.sum()))]
    group = [group_of[onehot]]
    if isinstance(item, SoftRows) and counts.any():
        starts = np.cumsum(item.counts) - item.counts
        pairs = item.pairs[pair_indices(starts[order], counts)]
        move16.append(pairs["move16"])
        weight.append(pairs["weight"].astype(np.float64))
        group.append(np.repeat(group_of, counts))
    return np.concatenate(move16).astype(np.int64), np.concatenate(weight), np.concatenate(group)


def _average_partition(data: ShardDataset, indices: np.ndarray, plan, first_group: int, first_pair: int,
                       eval_scale: float):
    """Find the duplicates among rows ``indices``, mark them in ``plan`` and return their groups'
    averaged targets (GROUP_DTYPE) and policy pairs (PAIR_DTYPE)."""
    item = data.read(indices)
    rows = item.rows if isinstance(item, SoftRows) else item
    states = np.ascontiguousarray(rows.view(np.uint8).reshape(len(rows), POSITION_DTYPE.itemsize)[:, :96])
    _, inverse, counts = np.unique(states.view("V96").ravel(), return_inverse=True, return_counts=True)
    duplicated = np.nonzero(counts[inverse] > 1)[0]
    if len(duplicated) == 0:
        return np.zeros(0, GROUP_DTYPE), np.zeros(0, PAIR_DTYPE)
    order = duplicated[np.argsort(inverse[duplicated], kind="stable")]   # grouped, each group ascending
    starts = np.flatnonzero(np.r_[True, inverse[order][1:] != inverse[order][:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    group_of = np.repeat(np.arange(len(starts)), sizes)
    plan[indices[order]] = DROPPED
    plan[indices[order[starts]]] = first_group + np.arange(len(starts))

    result = (item.result[order] if isinstance(item, SoftRows) else rows["result"][order] / 2).astype(np.float64)
    evals = rows["eval"][order].astype(np.float64)
    has_eval = evals != EVAL_MISSING
    value = np.where(has_eval, 1.0 / (1.0 + np.exp(-evals / eval_scale)), result)
    mean_value = np.add.reduceat(value, starts) / sizes
    with np.errstate(divide="ignore"):
        cp = np.clip(np.round(eval_scale * np.log(mean_value / (1.0 - mean_value))), -EVAL_LIMIT, EVAL_LIMIT)
    groups = np.zeros(len(starts), GROUP_DTYPE)
    groups["eval"] = np.where(np.add.reduceat(has_eval.astype(np.int64), starts) > 0, cp, EVAL_MISSING)
    groups["result"] = np.add.reduceat(result, starts) / sizes

    move16, weight, group = _member_pairs(item, order, rows, group_of)
    keys, where = np.unique(group * 65536 + move16, return_inverse=True)
    pairs = np.zeros(len(keys), PAIR_DTYPE)
    pairs["move16"] = keys % 65536
    pairs["weight"] = np.bincount(where, weights=weight) / sizes[keys // 65536]
    per_group = np.bincount(keys // 65536, minlength=len(starts))
    groups["count"] = per_group
    groups["start"] = first_pair + np.cumsum(per_group) - per_group
    return groups, pairs


def _apply(plan, groups, group_pairs):
    """The shard edit of the rewrite: drop later duplicates, give the first occurrence the averages."""
    def edit(shard: dict, first: int, rows: np.ndarray, soft):
        mine = np.asarray(plan[first:first + len(rows)])
        merged = mine >= 0
        rows = rows.copy()
        targets, pairs = soft if soft is not None else (plain_targets(rows), np.zeros(0, PAIR_DTYPE))
        group = groups[mine[merged]]
        rows["eval"][merged] = group["eval"]
        counts = targets["count"].astype(np.int64)
        new = np.zeros(len(rows), TARGET_DTYPE)
        new["count"] = np.where(merged, 0, counts)
        new["count"][merged] = group["count"]
        new["start"] = np.cumsum(new["count"], dtype=np.int64) - new["count"]
        new["result"] = targets["result"]
        new["result"][merged] = group["result"]
        out = np.zeros(int(new["count"].sum()), PAIR_DTYPE)
        same = ~merged
        old_pairs = pairs[pair_indices(targets["start"][same], counts[same])]
        out[pair_indices(new["start"][same], new["count"][same])] = old_pairs
        averaged = group_pairs[pair_indices(group["start"], group["count"])]
        out[pair_indices(new["start"][merged], group["count"])] = averaged
        return select(rows, (new, out), mine != DROPPED)
    return edit


def average_duplicates(root: Path, splits: dict, split: str, shard_rows: int, work: Path,
                       eval_scale: float = EVAL_SCALE):
    """Merge the duplicated positions of ``split`` (see the module docstring), rewriting its shards with
    soft targets; ``work`` is a scratch directory. Returns (rows merged away, the rows kept per game id: a
    :class:`KeptRows` in ``work``), or
    (0, None) when no position repeats."""
    data = ShardDataset(root, split, manifest={"splits": splits})
    n = len(data)
    if n == 0:
        return 0, None
    work.mkdir(parents=True, exist_ok=True)
    plan = np.lib.format.open_memmap(work / "plan.npy", mode="w+", dtype=np.int64, shape=(n,))
    plan[:] = UNCHANGED
    n_groups = n_pairs = 0
    with open(work / "groups.bin", "wb") as group_file, open(work / "pairs.bin", "wb") as pair_file:
        for indices in _partitions(data, max(1, -(-n // AVERAGE_ROWS)), work):
            groups, pairs = _average_partition(data, indices, plan, n_groups, n_pairs, eval_scale)
            group_file.write(groups.tobytes())
            pair_file.write(pairs.tobytes())
            n_groups, n_pairs = n_groups + len(groups), n_pairs + len(pairs)
    merged = int(np.count_nonzero(plan == DROPPED))
    if n_groups == 0:
        return 0, None
    groups = np.memmap(work / "groups.bin", GROUP_DTYPE, mode="r")
    pairs = np.memmap(work / "pairs.bin", PAIR_DTYPE, mode="r") if n_pairs else np.zeros(0, PAIR_DTYPE)
    del data
    kept = KeptRows(work / "kept.bin")
    rewrite_split(root, splits, split, shard_rows, _apply(plan, groups, pairs), kept)
    kept.close()
    return merged, kept
