"""`shogitrain inspect DIR`: what a prepared dataset holds, read chunk by chunk from the memmaps."""

from __future__ import annotations

import numpy as np

from shogitrain.shards.format import EVAL_MISSING
from shogitrain.shards.reader import ShardDataset, load_games, load_manifest

PLY_EDGES = [1, 31, 61, 101, 201, 100000]
RATING_EDGES = [0, 2000, 2500, 3000, 3500, 4000, 100000]
CHUNK = 1 << 18


def _histogram(values: np.ndarray, edges: list[int]) -> list[tuple[str, int]]:
    counts, _ = np.histogram(values, bins=edges)
    labels = [f"{lo}–{hi - 1}" if hi < 100000 else f"{lo}+" for lo, hi in zip(edges[:-1], edges[1:])]
    return list(zip(labels, counts.tolist()))


def _bar(n: int, total: int, width: int = 30) -> str:
    return "#" * (round(width * n / total) if total else 0)


def split_statistics(root, split: str) -> dict:
    data = ShardDataset(root, split)
    results = np.zeros(4, dtype=np.int64)  # loss, draw, win, and codes no writer produces
    plies = np.zeros(len(PLY_EDGES) - 1, dtype=np.int64)
    with_eval = 0
    for start in range(0, len(data), CHUNK):
        rows = data.slice(start, start + CHUNK)
        results += np.bincount(np.minimum(rows["result"], 3), minlength=4)
        plies += np.histogram(rows["ply"], bins=PLY_EDGES)[0]
        with_eval += int((rows["eval"] != EVAL_MISSING).sum())
    return {"positions": len(data), "results": results.tolist(), "plies": plies.tolist(), "with_eval": with_eval}


def describe(root) -> str:
    manifest = load_manifest(root)
    games = load_games(root)
    lines = [f"dataset {root}  (format {manifest['format_version']}, seed {manifest['seed']}, "
             f"{len(manifest['sources'])} source files)"]
    for split, info in manifest["splits"].items():
        stats = split_statistics(root, split)
        n = stats["positions"]
        loss, draw, win, invalid = stats["results"]
        lines.append(f"\n[{split}] {info['games']} games, {n} positions in {len(info['shards'])} shards")
        if n == 0:
            continue
        lines.append(f"  result (side to move): win {win / n:.1%}  draw {draw / n:.1%}  loss {loss / n:.1%}"
                     + (f"  INVALID {invalid} rows (`shogitrain verify {root}`)" if invalid else ""))
        lines.append(f"  positions with an engine eval: {stats['with_eval'] / n:.1%}")
        lines.append("  ply:")
        labels = [lab for lab, _ in _histogram(np.zeros(0), PLY_EDGES)]
        for label, count in zip(labels, stats["plies"]):
            lines.append(f"    {label:>9}  {count:8d}  {_bar(count, n)}")
        ratings = np.array([g["min_rating"] for g in games if g["split"] == split and g.get("min_rating") is not None])
        lines.append(f"  games with both ratings: {len(ratings)} of {info['games']}")
        if len(ratings):
            lines.append("  lower rating of the two players:")
            for label, count in _histogram(ratings, RATING_EDGES):
                lines.append(f"    {label:>9}  {count:8d}  {_bar(count, len(ratings))}")
        endings = {}
        for g in games:
            if g["split"] == split:
                endings[g.get("endgame")] = endings.get(g.get("endgame"), 0) + 1
        lines.append("  endings: " + ", ".join(f"{k} {v}" for k, v in sorted(endings.items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)
