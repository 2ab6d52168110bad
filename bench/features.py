"""Benchmark: batched dlshogi feature encoder vs cshogi's per-position make_input_features.

    python bench/features.py --device cpu --batch 4096 --positions 65536 [--threads 1] [--repeats 5] [--data DIR]

Replays real games (the bundled data/: floodgate, selfplay; or --data DIR with any of wcsc28/,
floodgate/, pro/, selfplay/) to collect positions, then in the same run times
  * cshogi: ``make_input_features(board, f1[i], f2[i])`` per position into preallocated numpy
    arrays (the boards are prepared beforehand, so this is the feature call alone), and the
    dlshogi training-loop style ``set_hcp`` + ``make_input_features`` + ``make_move_label``;
  * ours: ``encode_rows`` (features + labels, from the compact rows) per batch, into preallocated
    outputs (``out=``, like cshogi's arrays) and into fresh tensors, for a few output dtypes.
Prints positions/s (wall clock, best of interleaved rounds) and positions per CPU-second, each
with its ratio to cshogi's feature call.

Like ``shogitrain train`` / ``eval`` on CPU, the run first calls
``shogitrain.device.retain_freed_memory`` (glibc keeps freed blocks for the next batch instead of
page-faulting fresh ones); ``--default-malloc`` leaves glibc's defaults, to see what that is worth.
The minor page faults per batch of our encoder are printed with the timings.
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shogitrain import features as F  # noqa: E402
from shogitrain.device import retain_freed_memory  # noqa: E402
from shogitrain.shards import format as fmt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"  # the bundled floodgate + self-play games


def collect(n_max: int, data: Path = DATA):
    import cshogi
    from cshogi import CSA

    files = []
    for d in ("wcsc28", "floodgate", "pro", "selfplay/fsf50", "selfplay"):
        files += sorted(glob.glob(str(data / d / "*.csa")))
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


def collect_rows(n_max: int, data: Path):
    """Rows only, read by shogitrain itself (``prepare`` into a temporary folder): no cshogi
    needed, for a GPU machine where only our side is timed."""
    import tempfile

    from shogitrain.prepare import prepare
    from shogitrain.records.filters import GameFilter
    from shogitrain.shards.reader import ShardDataset

    inputs = [p for p in (data / d for d in ("wcsc28", "floodgate", "pro", "selfplay")) if p.is_dir()]
    with tempfile.TemporaryDirectory() as tmp:
        keep_all = GameFilter(draws=True, min_moves=0, require_eval=False, mate_score=0)
        prepare(inputs, Path(tmp) / "ds", test_fraction=0.0, game_filter=keep_all, overwrite=True,
                progress=False)
        train = ShardDataset(Path(tmp) / "ds", "train")
        return train.rows(np.arange(min(n_max, len(train))))


def cshogi_pass(boards, batch):
    """One pass of cshogi's feature call over all positions, into preallocated arrays."""
    from cshogi import dlshogi

    f1 = np.zeros((batch, 62, 9, 9), np.float32)
    f2 = np.zeros((batch, 57, 9, 9), np.float32)
    mif = dlshogi.make_input_features

    def run():
        for s in range(0, len(boards), batch):
            for i, b in enumerate(boards[s:s + batch]):
                mif(b, f1[i], f2[i])
        return len(boards)
    return run


def cshogi_dlshogi_loop_pass(hcps, batch):
    """One pass of the dlshogi training-loop style: set_hcp + features + label per position."""
    import cshogi
    from cshogi import dlshogi

    f1 = np.zeros((batch, 62, 9, 9), np.float32)
    f2 = np.zeros((batch, 57, 9, 9), np.float32)
    labels = np.zeros(batch, np.int64)
    board = cshogi.Board()

    def run():
        for s in range(0, len(hcps), batch):
            for i, (h, move) in enumerate(hcps[s:s + batch]):
                board.set_hcp(h)
                dlshogi.make_input_features(board, f1[i], f2[i])
                labels[i] = dlshogi.make_move_label(move, board.turn)
        return len(hcps)
    return run


def ours_pass(rows, batch, device, dtype, prealloc, expand_x2=True):
    """One pass of encode_rows (features + labels) over all whole batches."""
    dev = torch.device(device)
    out = None
    if prealloc:
        out = (torch.empty(batch, 62, 9, 9, dtype=dtype, device=dev),
               torch.empty(batch, 57, 9, 9, dtype=dtype, device=dev) if expand_x2 else None)
    n = (len(rows) // batch) * batch

    def run():
        for s in range(0, n, batch):
            F.encode_rows(rows[s:s + batch], device=dev, dtype=dtype, out=out, expand_x2=expand_x2)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return n
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--positions", type=int, default=65536)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the best round counts")
    ap.add_argument("--dtypes", default="float32,bfloat16,uint8")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--no-cshogi", action="store_true",
                    help="skip the cshogi timings and read the positions with shogitrain itself "
                         "(a GPU box without cshogi)")
    ap.add_argument("--data", type=Path, default=DATA,
                    help="folder of game records (wcsc28/, floodgate/, pro/, selfplay/ CSA files; "
                         "default: the bundled data/)")
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc's malloc defaults (no retain_freed_memory)")
    args = ap.parse_args(argv)
    retained = False if args.default_malloc else retain_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)

    t = time.perf_counter()
    if args.no_cshogi:
        boards, hcps, rows = None, None, collect_rows(args.positions, args.data)
    else:
        boards, hcps, rows = collect(args.positions, args.data)
    print(f"collected {len(rows)} positions from {args.data} in {time.perf_counter() - t:.1f} s "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"freed memory retained: {'yes' if retained else 'no'})")
    print(f"batch {args.batch}, device {args.device}")
    runs = {}
    if not args.no_cshogi:
        runs["cshogi make_input_features (per position, preallocated numpy)"] = cshogi_pass(boards, args.batch)
        runs["cshogi set_hcp + make_input_features + make_move_label"] = cshogi_dlshogi_loop_pass(hcps, args.batch)
    for name in args.dtypes.split(","):
        dtype = getattr(torch, name)
        runs[f"ours encode_rows {name}, out= preallocated"] = ours_pass(rows, args.batch, args.device, dtype, True)
        runs[f"ours encode_rows {name}, fresh tensors"] = ours_pass(rows, args.batch, args.device, dtype, False)
        runs[f"ours encode_rows {name}, out= x1, x2 as a broadcast view"] = ours_pass(
            rows, args.batch, args.device, dtype, True, expand_x2=False)
    # rounds interleave the contenders, so a busy moment on a shared machine hits all of them;
    # each reports its best round
    # each also reports positions per CPU-second (process time, all threads): less sensitive to
    # other jobs on the machine than the wall clock
    # and the fewest minor page faults per batch of a round
    best = {name: 0.0 for name in runs}
    best_cpu = {name: 0.0 for name in runs}
    faults = {name: float("inf") for name in runs}
    for run in runs.values():
        run()  # warm-up
    for _ in range(args.repeats):
        for name, run in runs.items():
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t, c = time.perf_counter(), time.process_time()
            count = run()
            best[name] = max(best[name], count / (time.perf_counter() - t))
            best_cpu[name] = max(best_cpu[name], count / max(time.process_time() - c, 1e-9))
            f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
            faults[name] = min(faults[name], f * args.batch / count)
    key = "cshogi make_input_features (per position, preallocated numpy)"
    ref, ref_cpu = best.get(key), best_cpu.get(key)
    print(f"{'':66s} {'wall pos/s':>10s} {'ratio':>6s} {'pos/CPU-s':>10s} {'ratio':>6s} {'faults/batch':>12s}")
    for name in runs:
        ratio = f"{best[name] / ref:5.2f}x" if ref else ""
        ratio_cpu = f"{best_cpu[name] / ref_cpu:5.2f}x" if ref_cpu else ""
        print(f"{name:66s} {best[name]:10,.0f} {ratio:>6s} {best_cpu[name]:10,.0f} {ratio_cpu:>6s} "
              f"{faults[name]:12,.0f}")


if __name__ == "__main__":
    main()
