"""Benchmark: batched dlshogi feature encoder vs cshogi's per-position make_input_features.

    python bench/features.py --device cpu --batch 4096 --positions 65536

Replays real games (wcsc28, floodgate, selfplay) to collect positions, then in the same run times
  * cshogi: ``make_input_features(board, f1[i], f2[i])`` per position into preallocated numpy
    arrays (the boards are prepared beforehand, so this is the feature call alone), and the
    dlshogi training-loop style ``set_hcp`` + ``make_input_features`` + ``make_move_label``;
  * ours: ``encode_rows`` (features + labels, from the compact rows) per batch, into preallocated
    outputs (``out=``, like cshogi's arrays) and into fresh tensors, for a few output dtypes.
Prints positions/s and the ratio to cshogi's feature call.
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shogitrain import features as F  # noqa: E402
from shogitrain.shards import format as fmt  # noqa: E402

DATA = Path("/work/shared/data")


def collect(n_max: int):
    import cshogi
    from cshogi import CSA

    files = []
    for d in ("wcsc28", "floodgate", "pro", "selfplay/fsf50"):
        files += sorted(glob.glob(str(DATA / d / "*.csa")))
    boards, rows_b, rows_h, rows_t, rows_m, hcps = [], [], [], [], [], []
    for path in files:
        raw = Path(path).read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("cp932", "replace")
        if any(line[:2] in ("P+", "P-") and len(line.strip()) > 2 for line in text.splitlines()):
            continue
        for game in CSA.Parser.parse_str(text):
            board = cshogi.Board(game.sfen)
            for move in game.moves:
                if not board.is_legal(move):
                    break
                boards.append(board.copy())
                rows_b.append(np.asarray(board.pieces, np.uint8))
                rows_h.append(np.asarray(board.pieces_in_hand, np.uint8))
                rows_t.append(board.turn)
                rows_m.append(cshogi.move16(move))
                h = np.empty(1, cshogi.HuffmanCodedPos)
                board.to_hcp(h)
                hcps.append((h, move))
                board.push(move)
                if len(boards) >= n_max:
                    break
            if len(boards) >= n_max:
                break
        if len(boards) >= n_max:
            break
    rows = np.zeros(len(boards), fmt.POSITION_DTYPE)
    rows["board"] = np.stack(rows_b)
    rows["hand"] = np.stack(rows_h)
    rows["turn"] = rows_t
    rows["move16"] = rows_m
    return boards, hcps, rows


def time_cshogi(boards, batch, repeats):
    from cshogi import dlshogi

    f1 = np.zeros((batch, 62, 9, 9), np.float32)
    f2 = np.zeros((batch, 57, 9, 9), np.float32)
    mif = dlshogi.make_input_features
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for s in range(0, len(boards), batch):
            for i, b in enumerate(boards[s:s + batch]):
                mif(b, f1[i], f2[i])
        best = min(best, time.perf_counter() - t)
    return len(boards) / best


def time_cshogi_dlshogi_loop(hcps, batch, repeats):
    import cshogi
    from cshogi import dlshogi

    f1 = np.zeros((batch, 62, 9, 9), np.float32)
    f2 = np.zeros((batch, 57, 9, 9), np.float32)
    labels = np.zeros(batch, np.int64)
    board = cshogi.Board()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for s in range(0, len(hcps), batch):
            for i, (h, move) in enumerate(hcps[s:s + batch]):
                board.set_hcp(h)
                dlshogi.make_input_features(board, f1[i], f2[i])
                labels[i] = dlshogi.make_move_label(move, board.turn)
        best = min(best, time.perf_counter() - t)
    return len(hcps) / best


def time_ours(rows, batch, device, dtype, prealloc, repeats):
    dev = torch.device(device)
    out = None
    if prealloc:
        out = (torch.empty(batch, 62, 9, 9, dtype=dtype, device=dev),
               torch.empty(batch, 57, 9, 9, dtype=dtype, device=dev))
    n = (len(rows) // batch) * batch

    def run():
        for s in range(0, n, batch):
            x1, x2, lab = F.encode_rows(rows[s:s + batch], device=dev, dtype=dtype, out=out)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    run()  # warm-up (constant tables, allocator)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return n / best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--positions", type=int, default=65536)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtypes", default="float32,bfloat16,uint8")
    ap.add_argument("--no-cshogi", action="store_true", help="skip the cshogi timings (e.g. on a GPU box)")
    args = ap.parse_args(argv)

    t = time.perf_counter()
    boards, hcps, rows = collect(args.positions)
    print(f"collected {len(rows)} positions in {time.perf_counter() - t:.1f} s "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"batch {args.batch}, device {args.device}")
    ref = None
    if not args.no_cshogi:
        ref = time_cshogi(boards, args.batch, args.repeats)
        print(f"cshogi make_input_features (per position, preallocated numpy): {ref:12,.0f} pos/s")
        loop = time_cshogi_dlshogi_loop(hcps, args.batch, args.repeats)
        print(f"cshogi set_hcp + make_input_features + make_move_label:        {loop:12,.0f} pos/s")
    for name in args.dtypes.split(","):
        dtype = getattr(torch, name)
        for prealloc in (True, False):
            rate = time_ours(rows, args.batch, args.device, dtype, prealloc, args.repeats)
            ratio = f"  ({rate / ref:.2f}x cshogi)" if ref else ""
            kind = "out= preallocated" if prealloc else "fresh tensors    "
            print(f"ours encode_rows {name:9s} {kind}:  {rate:12,.0f} pos/s{ratio}")


if __name__ == "__main__":
    main()
