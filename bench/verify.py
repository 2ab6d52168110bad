"""What the fault checks cost a training run: dataset verification and the run-directory lock.

    python bench/verify.py [--blocks 10] [--channels 192] [--batch 1024] [--steps 2] [--data DIR]

Prepares the bundled sample (data/selfplay train, data/floodgate test) unless ``--data`` names a
prepared dataset, then measures in the same run:

* ``verify_dataset(rows=False)`` (manifest, games table, every shard's size, header and sha256) —
  what ``train`` does before it starts unless ``--no-verify`` — and with ``rows=True`` (every row
  checked too, piece totals included), what ``shogitrain verify`` does;
* one training step of the full-size net (``train_step`` on preloaded batches, median of
  ``--steps`` after one warm-up step), from which one epoch of the dataset is
  ``steps_per_epoch × step``;
* ``exclusive_lock`` taken and released (the run directory's lock), against the same step.

Prints verification ÷ epoch (goal < 2 %) and lock ÷ step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shogitrain.config import load_config  # noqa: E402
from shogitrain.device import retain_freed_memory  # noqa: E402
from shogitrain.files import exclusive_lock  # noqa: E402
from shogitrain.shards.reader import ShardDataset  # noqa: E402
from shogitrain.shards.verify import verify_dataset  # noqa: E402
from shogitrain.train.data import game_min_ratings, make_batch  # noqa: E402
from shogitrain.train.distributed import DistInfo  # noqa: E402
from shogitrain.train.step import build_run, build_run_model, train_step  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="a prepared dataset (default: the bundled sample, prepared here)")
    ap.add_argument("--blocks", type=int, default=10)
    ap.add_argument("--channels", type=int, default=192)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=2, help="timed training steps")
    args = ap.parse_args()
    retain_freed_memory()
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        data = args.data
        if data is None:
            from shogitrain.prepare import prepare

            data = Path(tmp) / "sample"
            prepare([REPO / "data" / "selfplay"], data, test_data=[REPO / "data" / "floodgate"], progress=False)
        t0 = time.perf_counter()
        problems, counts = verify_dataset(data, rows=False)
        verify_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        problems += verify_dataset(data)[0]
        full_s = time.perf_counter() - t0
        assert not problems, problems
        mb = sum(p.stat().st_size for p in Path(data).rglob("*.npy")) / 1e6

        cfg = load_config(None, [f"model.blocks={args.blocks}", f"model.channels={args.channels}", "amp=off",
                                 f"train.batch_size={args.batch}", "train.device=cpu", f"data.path={data}"])
        device = torch.device("cpu")
        train_data = ShardDataset(data, "train")
        indices = train_data.batch_indices(args.batch, seed=0, epoch=0)
        batches = [make_batch(train_data.rows(next(indices)), device, game_min_ratings(data)) for _ in range(2)]
        run = build_run(cfg, device, DistInfo(), build_run_model(cfg, device), total_steps=1 << 30, epochs=1)
        train_step(run, batches[0])  # warm-up
        steps = []
        for i in range(args.steps):
            t0 = time.perf_counter()
            train_step(run, batches[i % 2])
            steps.append(time.perf_counter() - t0)
        step_s = statistics.median(steps)
        epoch_s = step_s * train_data.steps_per_epoch(args.batch)

        t0 = time.perf_counter()
        for _ in range(1000):
            with exclusive_lock(Path(tmp) / ".lock", "bench"):
                pass
        lock_s = (time.perf_counter() - t0) / 1000

    print(f"dataset: {counts['positions']} positions in {counts['shards']} shards; "
          f"net {args.blocks}x{args.channels}, batch {args.batch}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"training-start verification {verify_s:.3f} s ({mb / verify_s:.0f} MB/s); with every row checked "
          f"(`shogitrain verify`) {full_s:.3f} s")
    print(f"step {step_s:.2f} s × {train_data.steps_per_epoch(args.batch)} steps = epoch {epoch_s:.0f} s; "
          f"verification / epoch = {100 * verify_s / epoch_s:.4f} % (goal < 2 %); at a GPU's 60,000 positions/s "
          f"the epoch would take {counts['positions'] / 60000:.1f} s and verification "
          f"{100 * verify_s / (counts['positions'] / 60000):.1f} % of it")
    print(f"lock taken and released: {1e6 * lock_s:.1f} µs = {100 * lock_s / step_s:.5f} % of one step "
          f"(taken once per run)")


if __name__ == "__main__":
    main()
