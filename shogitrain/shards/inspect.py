"""`shogitrain inspect DIR`: what a prepared dataset holds, read chunk by chunk from the memmaps."""

from __future__ import annotations

import bisect

import numpy as np

from shogitrain.shards.format import EVAL_MISSING
from shogitrain.shards.reader import ShardDataset, iter_games, load_manifest, source_count

PLY_EDGES = [1, 31, 61, 101, 201, 100000]
RATING_EDGES = [0, 2000, 2500, 3000, 3500, 4000, 100000]
CHUNK = 1 << 18


def labels_of(edges: list[int]) -> list[str]:
    return [f"{lo}–{hi - 1}" if hi < 100000 else f"{lo}+" for lo, hi in zip(edges[:-1], edges[1:])]


def _bin(value: float, edges: list[int]) -> int | None:
    """np.histogram's bin of ``value`` (the last bin closed on the right), None outside the edges."""
    if not edges[0] <= value <= edges[-1]:
        return None
    return min(bisect.bisect_right(edges, value) - 1, len(edges) - 2)


def _bar(n: int, total: int, width: int = 30) -> str:
    return "#" * (round(width * n / total) if total else 0)


def split_statistics(root, split: str) -> dict:
    data = ShardDataset(root, split)
    results = np.zeros(4, dtype=np.int64)  # loss, draw, win, and codes no writer produces
    plies = np.zeros(len(PLY_EDGES) - 1, dtype=np.int64)
    with_eval = 0
    for start in range(0, len(data), CHUNK):
        rows = data.slice(start, start + CHUNK, check=False)  # count what is there, bad rows too
        results += np.bincount(np.minimum(rows["result"], 3), minlength=4)
        plies += np.histogram(rows["ply"], bins=PLY_EDGES)[0]
        with_eval += int((rows["eval"] != EVAL_MISSING).sum())
    return {"positions": len(data), "results": results.tolist(), "plies": plies.tolist(), "with_eval": with_eval}


def _no_games() -> dict:
    return {"rated": 0, "ratings": [0] * (len(RATING_EDGES) - 1), "endings": {}}


def game_statistics(root) -> dict:
    """Per split: the lower ratings' histogram (games with both ratings) and the endings, from
    games.jsonl read as a stream."""
    stats: dict = {}
    for g in iter_games(root):
        split = stats.setdefault(g["split"], _no_games())
        if g.get("min_rating") is not None:
            split["rated"] += 1
            k = _bin(g["min_rating"], RATING_EDGES)
            if k is not None:
                split["ratings"][k] += 1
        split["endings"][g.get("endgame")] = split["endings"].get(g.get("endgame"), 0) + 1
    return stats


def describe(root) -> str:
    manifest = load_manifest(root)
    games = game_statistics(root)
    lines = [f"dataset {root}  (format {manifest['format_version']}, seed {manifest['seed']}, "
             f"{source_count(manifest)} source files)"]
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
        for label, count in zip(labels_of(PLY_EDGES), stats["plies"]):
            lines.append(f"    {label:>9}  {count:8d}  {_bar(count, n)}")
        split_games = games.get(split, _no_games())
        rated = split_games["rated"]
        lines.append(f"  games with both ratings: {rated} of {info['games']}")
        if rated:
            lines.append("  lower rating of the two players:")
            for label, count in zip(labels_of(RATING_EDGES), split_games["ratings"]):
                lines.append(f"    {label:>9}  {count:8d}  {_bar(count, rated)}")
        endings = split_games["endings"]
        lines.append("  endings: " + ", ".join(f"{k} {v}" for k, v in sorted(endings.items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)
