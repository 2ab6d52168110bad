"""Throughput of `shogitrain prepare` against cshogi's C++ CSA parser, measured in the same run.

Reference: cshogi.CSA.Parser reads each file and the positions are written as hcpe (board.to_hcp
per move), single process — what dlshogi's csa_to_hcpe does. Ours: the full `prepare` (reading,
validation, filters off so both sides convert the same games, shards, manifest) with --workers N.

    python bench/prepare.py [--workers N] [--repeat 3] [--data DIR ...]

Default input: the bundled self-play and floodgate games (data/selfplay, data/floodgate); each
--data DIR (a folder of CSA files, searched recursively, or one file) replaces them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_INPUTS = [ROOT / "data" / "selfplay", ROOT / "data" / "floodgate"]


def cshogi_rate(files: list[Path]) -> tuple[int, float]:
    from cshogi import CSA, Board, HuffmanCodedPosAndEval

    start = time.perf_counter()
    board = Board()
    n = 0
    for f in files:
        for kif in CSA.Parser.parse_str(f.read_text(encoding="utf-8-sig")):
            hcpes = np.zeros(len(kif.moves), HuffmanCodedPosAndEval)
            board.set_sfen(kif.sfen)
            for i, (move, score) in enumerate(zip(kif.moves, kif.scores)):
                board.to_hcp(hcpes[i]["hcp"])
                hcpes[i]["eval"] = min(32767, max(-32767, score))
                hcpes[i]["bestMove16"] = move & 0xFFFF
                board.push(move)
                n += 1
    return n, time.perf_counter() - start


def ours_rate(inputs: list[Path], workers: int) -> tuple[int, float]:
    from shogitrain.prepare import prepare
    from shogitrain.records.filters import ALL_ENDINGS, GameFilter

    keep_all = GameFilter(endings=ALL_ENDINGS + (None,), min_moves=0, require_eval=False, mate_score=0)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        report = prepare(inputs, Path(tmp) / "out", workers=workers, game_filter=keep_all, progress=False)
        return report["positions"], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", dest="inputs", action="append", type=Path, metavar="DIR",
                        help="folder of CSA files or one file; repeatable (default: data/selfplay, data/floodgate)")
    parser.add_argument("--workers", type=int, default=0, help="prepare workers (default: all cores)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    args.inputs = args.inputs or DEFAULT_INPUTS
    import os

    workers = args.workers or os.cpu_count()
    files = [p for d in args.inputs for p in (sorted(d.rglob("*.csa")) if d.is_dir() else [d])]
    ref, ours = [], []
    for _ in range(args.repeat):  # interleaved, so both see the same machine load
        n_ref, t_ref = cshogi_rate(files)
        n_ours, t_ours = ours_rate(args.inputs, workers)
        ref.append(n_ref / t_ref)
        ours.append(n_ours / t_ours)
    r, o = statistics.median(ref), statistics.median(ours)
    print(f"files: {len(files)}; positions: cshogi {n_ref}, shogitrain {n_ours}")
    print(f"cshogi CSA parser + hcpe (1 process): {r:,.0f} positions/s")
    print(f"shogitrain prepare (--workers {workers}):     {o:,.0f} positions/s")
    print(f"ratio shogitrain / cshogi: {o / r:.2f}x  (median of {args.repeat})")


if __name__ == "__main__":
    main()
