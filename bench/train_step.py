"""Training-step throughput: the real loop against a bare step, AGC's share, NF / BN step cost.

    python bench/train_step.py [--device cpu|cuda] [--arch bn] [--blocks 5] [--channels 64]
                               [--batch 256] [--steps 20] [--warmup 5] [--repeats 3]
                               [--amp off|bf16|fp16] [--compile] [--channels-last] [--full]
                               [--threads N] [--only abc] [--json FILE]

Data: ``data/selfplay`` (train) and ``data/floodgate`` (test) prepared once with
``shogitrain.prepare.prepare`` into ``--data-cache`` (reused when it exists).

(a) **loop ÷ bare.** *Loop*: ``shogitrain.train.loop.train`` itself (memmap rows, prefetch thread,
features encoded on the device, loss, clipping, non-finite check, scheduler, loss sums, logging;
eval and checkpoints off, no progress bar) for ``warmup + steps`` steps with
``train.log_interval = warmup``. Its rate is taken from ``metrics.jsonl``: ``steps`` divided by
the difference of the ``time_s`` fields of the rows at step ``warmup`` and at the last step, so
start-up (model build, first batches, git/run.json) and the final checkpoint are outside the
window. *Bare*: the training step itself (``shogitrain.train.step.train_step`` on the run state of
``build_run``) on 8 batches encoded once and kept on the device, nothing else; ``warmup`` untimed
steps, then ``steps`` timed ones. Loop and bare runs alternate, ``--repeats`` times; the ratio
printed is the median of the per-pair ratios.

(b) **AGC share.** The bare step with ``clip.mode=agc`` (arch ``nf``, or ``--agc-arch``), its
``agc()`` call timed with ``perf_counter`` (CUDA: synchronised before and after it) against the
whole step; the share is Σ agc ÷ Σ step over the timed steps (median over repeats).

(c) **NF ÷ BN, nf-blog ÷ BN.** Bare-loop step times of the three archs at the same size, run in
rotation, ``--repeats`` times; ratios of the medians.

Timings on a shared CPU are noisy: medians, spreads and best-of-repeats are printed; when other
jobs burst on the cores, best-of is the figure least disturbed by them.
"""

from __future__ import annotations

import argparse
import json
import os
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
from shogitrain.shards.reader import ShardDataset  # noqa: E402
from shogitrain.train.data import game_min_ratings, make_batch  # noqa: E402
from shogitrain.train.distributed import DistInfo  # noqa: E402
from shogitrain.train.loop import train  # noqa: E402
from shogitrain.train.runlog import read_metrics  # noqa: E402
from shogitrain.train.step import build_run, build_run_model, train_step  # noqa: E402

ARCHS = ("bn", "nf", "nf-blog")


def dataset(cache: Path, rebuild: bool) -> Path:
    from shogitrain.prepare import prepare

    if (cache / "manifest.json").is_file() and not rebuild:
        return cache
    prepare([REPO / "data" / "selfplay"], cache, test_data=[REPO / "data" / "floodgate"], workers=2,
            overwrite=True, progress=False)
    return cache


def config(args, data: Path, run_root: Path, name: str, *, arch: str, steps: int, clip: str = "none"):
    return load_config(None, [
        f"model.arch={arch}", f"model.blocks={args.blocks}", f"model.channels={args.channels}",
        "model.fc_units=256", f"optim.lr={args.lr}", f"clip.mode={clip}", f"amp={args.amp}",
        f"train.batch_size={args.batch}", f"train.steps={steps}", f"train.log_interval={args.warmup}",
        "train.eval_interval=0", "train.eval_full_each_epoch=false", "train.checkpoint_interval=0",
        f"train.device={args.device}", f"train.compile={str(args.compile).lower()}",
        f"train.channels_last={str(args.channels_last).lower()}", f"data.path={data}",
        f"run.dir={run_root}", f"run.name={name}",
    ])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loop_rate(cfg, warmup: int, steps: int) -> tuple[float, int]:
    """(steps/s, non-finite steps) of train() between the log rows at step ``warmup`` and ``warmup + steps``."""
    run_dir = train(cfg, progress=False)
    rows = {r["step"]: r for r in read_metrics(run_dir) if r["split"] == "train"}
    first, last = rows[warmup], rows[warmup + steps]
    return steps / (last["time_s"] - first["time_s"]), last["nonfinite_steps"]


class TimedAGC:
    """Stands in for a run's AGC and adds the time of each call (device-synchronised) to ``seconds``."""

    def __init__(self, agc, device: torch.device):
        self.agc, self.device, self.seconds = agc, device, 0.0

    def __call__(self) -> None:
        sync(self.device)
        t0 = time.perf_counter()
        self.agc()
        sync(self.device)
        self.seconds += time.perf_counter() - t0


class Bare:
    """The real training step (``train_step``) of ``cfg`` on preloaded device batches, nothing else."""

    def __init__(self, cfg, batches, device: torch.device):
        torch.manual_seed(cfg.train.seed)
        self.batches, self.device = batches, device
        self.run = build_run(cfg, device, DistInfo(), build_run_model(cfg, device), total_steps=1 << 30, epochs=1)

    def timed(self, warmup: int, steps: int, time_agc: bool = False) -> tuple[float, float]:
        """(seconds per step, seconds of agc() per step) over ``steps`` timed steps."""
        for i in range(warmup):
            train_step(self.run, self.batches[i % len(self.batches)])
        timer = None
        if time_agc and self.run.agc is not None:
            timer = self.run.agc = TimedAGC(self.run.agc, self.device)
        sync(self.device)
        t0 = time.perf_counter()
        for i in range(steps):
            train_step(self.run, self.batches[(warmup + i) % len(self.batches)])
        sync(self.device)
        return (time.perf_counter() - t0) / steps, (timer.seconds / steps if timer else 0.0)


def spread(values) -> str:
    return f"[{min(values):.3g} … {max(values):.3g}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--arch", choices=ARCHS, default="bn", help="arch of (a)")
    ap.add_argument("--agc-arch", choices=ARCHS, default="nf", help="arch of (b)")
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps before each measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off")
    ap.add_argument("--compile", action="store_true", help="train.compile (torch.compile)")
    ap.add_argument("--channels-last", action="store_true", help="train.channels_last")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave the default)")
    ap.add_argument("--full", action="store_true",
                    help="the full-size net: 10 blocks × 192 channels, batch 1024 (steps 8, warmup 2, repeats 2 "
                         "unless given)")
    ap.add_argument("--only", default="abc", help="which of the measurements a, b, c to run")
    ap.add_argument("--data-cache", type=Path,
                    default=Path(tempfile.gettempdir()) / "shogitrain-bench" / "selfplay-floodgate")
    ap.add_argument("--rebuild-data", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.full:
        given = set(sys.argv[1:])
        args.blocks, args.channels, args.batch = 10, 192, 1024
        if "--steps" not in given:
            args.steps = 8
        if "--warmup" not in given:
            args.warmup = 2
        if "--repeats" not in given:
            args.repeats = 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device")
    if device.type == "cpu":
        retain_freed_memory()   # as train() does: the loop and the bare step alike

    data = dataset(args.data_cache, args.rebuild_data)
    train_data = ShardDataset(data, "train")
    min_ratings = game_min_ratings(data)
    indices = train_data.batch_indices(args.batch, seed=1, epoch=0)
    batches = [make_batch(train_data.rows(next(indices)), device, min_ratings) for _ in range(8)]

    load = os.getloadavg()
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"net={args.blocks}x{args.channels} batch={args.batch} amp={args.amp} compile={args.compile} "
          f"channels_last={args.channels_last} steps={args.steps} warmup={args.warmup} repeats={args.repeats} "
          f"train_positions={len(train_data)} load={load[0]:.2f},{load[1]:.2f},{load[2]:.2f}", flush=True)
    out: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "loadavg_start": load}

    with tempfile.TemporaryDirectory(prefix="train-step-") as tmp:
        runs = Path(tmp)
        n = 0

        def run_cfg(arch, steps, clip="none"):
            nonlocal n
            n += 1
            return config(args, data, runs, f"r{n}", arch=arch, steps=steps, clip=clip)

        if "a" in args.only:
            loop_sps, bare_sps, ratios = [], [], []
            for _ in range(args.repeats):
                sps, nonfinite = loop_rate(run_cfg(args.arch, args.warmup + args.steps), args.warmup, args.steps)
                s, _ = Bare(run_cfg(args.arch, 0), batches, device).timed(args.warmup, args.steps)
                loop_sps.append(sps)
                bare_sps.append(1 / s)
                ratios.append(sps * s)
                print(f"  (a) loop {sps:7.3f} steps/s  bare {1 / s:7.3f} steps/s  ratio {sps * s:.3f}"
                      + (f"  ({nonfinite} non-finite steps)" if nonfinite else ""), flush=True)
            out["a"] = {"loop_steps_per_s": loop_sps, "bare_steps_per_s": bare_sps, "ratios": ratios,
                        "ratio_median": statistics.median(ratios)}
            print(f"(a) {args.arch}: loop {statistics.median(loop_sps):.3f} steps/s, bare "
                  f"{statistics.median(bare_sps):.3f} steps/s; loop/bare = {statistics.median(ratios):.3f} "
                  f"(median of {len(ratios)} pairs {spread(ratios)}; goal >= 0.95 on CPU); best of each: "
                  f"{max(loop_sps) / max(bare_sps):.3f}", flush=True)
            out["a"]["best_ratio"] = max(loop_sps) / max(bare_sps)

        if "b" in args.only:
            shares, step_ms, agc_ms = [], [], []
            for _ in range(args.repeats):
                s, a = Bare(run_cfg(args.agc_arch, 0, clip="agc"), batches, device).timed(
                    args.warmup, args.steps, time_agc=True)
                shares.append(100 * a / s)
                step_ms.append(1e3 * s)
                agc_ms.append(1e3 * a)
                print(f"  (b) step {1e3 * s:8.2f} ms  agc {1e3 * a:7.3f} ms  share {100 * a / s:.2f} %", flush=True)
            out["b"] = {"arch": args.agc_arch, "step_ms": step_ms, "agc_ms": agc_ms, "share_pct": shares,
                        "share_pct_median": statistics.median(shares)}
            print(f"(b) AGC ({args.agc_arch}): {statistics.median(agc_ms):.3f} ms of a "
                  f"{statistics.median(step_ms):.1f} ms step = {statistics.median(shares):.2f} % "
                  f"(median {spread(shares)} %; goal < 3 %); in the fastest repeat "
                  f"{shares[step_ms.index(min(step_ms))]:.2f} %", flush=True)
            out["b"]["share_pct_fastest_repeat"] = shares[step_ms.index(min(step_ms))]

        if "c" in args.only:
            times: dict[str, list[float]] = {a: [] for a in ARCHS}
            for _ in range(args.repeats):
                for arch in ARCHS:
                    s, _ = Bare(run_cfg(arch, 0), batches, device).timed(args.warmup, args.steps)
                    times[arch].append(1e3 * s)
                print("  (c) " + "  ".join(f"{a} {times[a][-1]:8.2f} ms" for a in ARCHS), flush=True)
            med = {a: statistics.median(v) for a, v in times.items()}
            out["c"] = {"step_ms": times, "step_ms_median": med, "nf_over_bn": med["nf"] / med["bn"],
                        "nf_blog_over_bn": med["nf-blog"] / med["bn"]}
            print("(c) bare step ms (median): " + ", ".join(f"{a} {med[a]:.1f}" for a in ARCHS)
                  + f"; nf/bn = {med['nf'] / med['bn']:.3f}, nf-blog/bn = {med['nf-blog'] / med['bn']:.3f}; "
                  f"best of each: nf/bn = {min(times['nf']) / min(times['bn']):.3f}, "
                  f"nf-blog/bn = {min(times['nf-blog']) / min(times['bn']):.3f}", flush=True)
            out["c"]["best_nf_over_bn"] = min(times["nf"]) / min(times["bn"])
            out["c"]["best_nf_blog_over_bn"] = min(times["nf-blog"]) / min(times["bn"])

    out["loadavg_end"] = os.getloadavg()
    print(f"load average at the end: {out['loadavg_end'][0]:.2f}, {out['loadavg_end'][1]:.2f}, "
          f"{out['loadavg_end'][2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
