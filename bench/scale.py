"""Cost against corpus size: `prepare`, the training loader, `train` and `eval` from 150k to 30M positions.

Each corpus is the bundled self-play games (data/selfplay) repeated under new names (hard links,
one folder of 1,140 per copy) in a temporary directory: a train part, and a --test-data part of
min(857k, size / 10) positions (the blog tested on 857k). Default filters. One size at a time: its
dataset is removed before the next is built. Per size, each command in a process of its own:

* `prepare` (default workers unless --workers): wall and CPU time, positions/s, peak memory, disk used;
  at the smallest size and at ``--dedupe-at`` also with --dedupe --dedupe-test (every copy after the
  first is a repeat, so that dataset is small; what is measured is the cost of finding them);
* the loader (this script as a child process): random batches from the memory-mapped train shards —
  gathered (``ShardDataset.rows``, with its row checks), + copied into a pinned buffer (on a machine
  without CUDA, a preallocated one: the same memcpy), + the CPU feature encoder (``make_batch``, one
  thread) — cold (the shards fsync'ed and dropped from the page cache with posix_fadvise(DONTNEED);
  ``fincore`` says how much stayed) and warm (every shard read once first), batch 4096 and 1024;
* `train` of a tiny net (40 steps of 1024, no test passes, dataset checksums verified first) and `eval`
  of one checkpoint on the test split, both with one torch thread (OMP_NUM_THREADS=1: on a shared
  2-core machine two threads made eval six times slower).

Memory: ``max RSS`` is the largest single process's peak: the highest VmHWM (the kernel's high-water
mark of a process's RSS) read from /proc every 0.1 s over the process tree (prepare's main process or
a worker). Not ``os.wait4``'s ru_maxrss: Linux carries a parent's high-water mark across fork and exec
into the child's, so it would report this script's own peak whenever that is the larger. ``tree
PSS`` / ``tree anon`` are the peaks of the sums over the tree of PSS (shared pages split between the
processes that map them) and of anonymous RSS (memory that is not page cache), sampled alike.

    python bench/scale.py [--sizes 150k,1M,10M,30M] [--dedupe-at 10M] [--workers N] [--tmp DIR] [--json FILE]

Prints a table and the ratios the issue asks for: prepare's peak against the smallest size's, its
positions per second (wall and CPU) against 1M's, the loader's positions/s against 1M/s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SELFPLAY = sorted((REPO / "data" / "selfplay").glob("*.csa"))
TEST_POSITIONS = 857_000          # the blog's test split
TINY_NET = ["--arch", "bn", "--set", "model.blocks=1", "--set", "model.channels=16", "--set", "model.fc_units=16",
            "--set", "train.batch_size=1024", "--set", "train.steps=40", "--set", "train.eval_interval=0",
            "--set", "train.eval_full_each_epoch=false", "--set", "train.log_interval=20", "--quiet"]


def parse_size(text: str) -> int:
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1].lower(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def build_corpus(dest: Path, files: int) -> None:
    """``files`` record files: the self-play games in order, again and again, one folder per copy (hard
    links: to prepare each is a file of its own, so train and --test-data copies do not overlap)."""
    for i in range(files):
        copy, source = divmod(i, len(SELFPLAY))
        folder = dest / f"copy-{copy:04d}"
        if source == 0:
            folder.mkdir(parents=True)
        os.link(SELFPLAY[source], folder / SELFPLAY[source].name)


class TreeSampler(threading.Thread):
    """Peaks of the summed PSS and anonymous RSS of a process and its descendants, from /proc."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_pss = self.peak_anon = self.peak_hwm = 0
        self.done = threading.Event()

    def tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry))
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += children.get(pid, [])
        return found

    @staticmethod
    def kib(path: str, key: str) -> int:
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def run(self) -> None:
        while not self.done.wait(self.interval):
            pids = self.tree()
            self.peak_pss = max(self.peak_pss, sum(self.kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids))
            self.peak_anon = max(self.peak_anon, sum(self.kib(f"/proc/{p}/status", "RssAnon:") for p in pids))
            self.peak_hwm = max([self.peak_hwm] + [self.kib(f"/proc/{p}/status", "VmHWM:") for p in pids])


def measure(command: list, **env) -> dict:
    """Run ``command``; its wall time, CPU time (its and its children's) and memory peaks (MB), and its output."""
    env = dict(os.environ, PYTHONPATH=str(REPO), **env)  # this tree's code, whatever is installed
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=err, text=True)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.done.set()
        sampler.join()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, command))} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "max_rss_mb": sampler.peak_hwm / 1024,
            "tree_pss_mb": sampler.peak_pss / 1024, "tree_anon_mb": sampler.peak_anon / 1024, "stdout": stdout}


def disk_mb(path: Path) -> float:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file()) / 1e6


def shogitrain(*args) -> list:
    return [sys.executable, "-m", "shogitrain", *map(str, args)]


def prepare(args, out: Path, workers: int, *flags) -> dict:
    result = measure(shogitrain("prepare", *args, "-o", out, "-q", *(["--workers", workers] if workers else []),
                                *flags))
    result.pop("stdout")
    report = json.loads((out / "report.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    result.update(positions=report["positions"], test_positions=manifest["splits"]["test"]["positions"],
                  disk_mb=disk_mb(out), positions_per_s=report["positions"] / result["wall_s"],
                  positions_per_cpu_s=report["positions"] / result["cpu_s"])
    return result


# ---- the loader, measured in a child process (python bench/scale.py --loader DIR) ----

def _drop_from_page_cache(files: list[Path]) -> None:
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _resident_fraction(files: list[Path]) -> float | None:
    """The fraction of the files' bytes in the page cache (util-linux fincore), or None without it."""
    if shutil.which("fincore") is None:
        return None
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES,SIZE", *map(str, files)],
                         capture_output=True, text=True, check=True).stdout
    resident = total = 0
    for line in out.split("\n"):
        if line.strip():
            res, size = map(int, line.split())
            resident, total = resident + res, total + size
    return resident / total if total else None


def _rate(work, batches) -> float:
    start = time.perf_counter()
    rows = sum(work(indices) for indices in batches)
    return rows / (time.perf_counter() - start)


def loader(root: Path, cold_batches: int = 10, warm_batches: int = 60) -> dict:
    import torch

    from shogitrain.device import retain_freed_memory
    from shogitrain.shards.reader import ShardDataset
    from shogitrain.train.data import game_min_ratings, make_batch

    retain_freed_memory()           # as train and eval do on CPU
    torch.set_num_threads(1)        # the prefetch thread's encoder on CPU
    data = ShardDataset(root, "train")
    cuda = torch.cuda.is_available()
    staging = torch.empty((4096, 107), dtype=torch.uint8, pin_memory=cuda)

    def batches(size: int, count: int) -> list:
        every = (i for epoch in itertools.count() for i in data.batch_indices(size, seed=size, epoch=epoch))
        return list(itertools.islice(every, count))

    def gather(indices) -> int:
        return len(data.rows(indices))

    def gather_copy(indices) -> int:
        rows = data.rows(indices)
        staging[: len(rows)].copy_(torch.from_numpy(rows.view("u1").reshape(len(rows), 107)))
        return len(rows)

    ratings = game_min_ratings(root)

    def gather_encode(indices) -> int:
        return len(make_batch(data.rows(indices), torch.device("cpu"), ratings))

    _drop_from_page_cache(data.files)
    resident = _resident_fraction(data.files)
    cold = _rate(gather, batches(4096, cold_batches))
    for path in data.files:                      # warm: every shard in the page cache
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    warm, warm_1024 = batches(4096, warm_batches), batches(1024, 4 * warm_batches)
    return {"resident_before_cold": resident, "cold": cold, "warm_gather": _rate(gather, warm),
            "warm_gather_copy": _rate(gather_copy, warm), "warm_gather_copy_1024": _rate(gather_copy, warm_1024),
            "warm_gather_encode": _rate(gather_encode, warm[:20]), "pinned": cuda, "train_positions": len(data)}


# ---- the whole table ----

def run_size(size: int, work: Path, args, per_file: float, checkpoint: Path | None) -> tuple[dict, Path | None]:
    corpus, out = work / f"corpus-{size}", work / f"data-{size}"
    test_files = max(1, round(min(TEST_POSITIONS, size / 10) / per_file))
    build_corpus(corpus / "train", max(1, round(size / per_file)) - test_files)
    build_corpus(corpus / "test", test_files)
    inputs = [corpus / "train", "--test-data", corpus / "test"]
    row: dict = {"size": size, "files": sum(1 for _ in corpus.rglob("*.csa"))}
    row["prepare"] = prepare(inputs, out, args.workers)
    if args.dedupe:
        deduped = work / f"dedupe-{size}"
        row["prepare_dedupe"] = prepare(inputs, deduped, args.workers, "--dedupe", "--dedupe-test")
        shutil.rmtree(deduped)
    loaded = measure([sys.executable, __file__, "--loader", out])
    row["loader"] = json.loads(loaded.pop("stdout"))
    row["loader"].update(loaded)
    run = work / f"run-{size}"
    row["train"] = measure(shogitrain("train", "--data", out, "--run-dir", run, *TINY_NET), OMP_NUM_THREADS="1")
    row["train"].pop("stdout")
    checkpoint = checkpoint or run / "checkpoint.pt"
    if checkpoint.parent != run:
        shutil.rmtree(run)
    result = work / "eval.json"
    row["eval"] = measure(shogitrain("eval", "--checkpoint", checkpoint, "--data", out, "-q", "--json", result),
                          OMP_NUM_THREADS="1")
    row["eval"].pop("stdout")
    row["eval"]["positions"] = json.loads(result.read_text())["positions"]
    shutil.rmtree(out)
    shutil.rmtree(corpus)
    return row, checkpoint


def print_table(rows: list[dict]) -> None:
    head = ("positions (test)", "files", "prep s", "prep pos/s", "pos/CPU-s", "max RSS MB", "tree PSS MB", "disk MB",
            "cold pos/s", "gather", "+copy", "+copy @1024", "+encode", "train RSS/anon MB", "train s",
            "eval RSS/anon MB", "eval s")
    print("| " + " | ".join(head) + " |")
    print("|" + "---:|" * len(head))
    for r in rows:
        p, ld, t, e = r["prepare"], r["loader"], r["train"], r["eval"]
        print(f"| {p['positions']:,} ({p['test_positions']:,}) | {r['files']:,} | {p['wall_s']:.1f} "
              f"| {p['positions_per_s']:,.0f} | {p['positions_per_cpu_s']:,.0f} | {p['max_rss_mb']:.0f} "
              f"| {p['tree_pss_mb']:.0f} | {p['disk_mb']:,.0f} | {ld['cold']:,.0f} | {ld['warm_gather']:,.0f} "
              f"| {ld['warm_gather_copy']:,.0f} | {ld['warm_gather_copy_1024']:,.0f} | {ld['warm_gather_encode']:,.0f} "
              f"| {t['max_rss_mb']:.0f}/{t['tree_anon_mb']:.0f} | {t['wall_s']:.1f} "
              f"| {e['max_rss_mb']:.0f}/{e['tree_anon_mb']:.0f} | {e['wall_s']:.1f} |")
    for r in rows:
        if "prepare_dedupe" in r:
            d = r["prepare_dedupe"]
            print(f"--dedupe --dedupe-test, {r['prepare']['positions']:,} positions read: {d['wall_s']:.1f} s, "
                  f"max RSS {d['max_rss_mb']:.0f} MB, tree PSS {d['tree_pss_mb']:.0f} MB, {d['positions']:,} kept")
        ld = r["loader"]
        if ld["resident_before_cold"] is not None:
            print(f"{r['prepare']['positions']:,}: {ld['resident_before_cold']:.1%} of the train shards were in "
                  "the page cache before the cold pass")


def print_ratios(rows: list[dict]) -> None:
    first = rows[0]
    ref = next((r["prepare"] for r in rows if 900_000 <= r["size"] <= 1_100_000), None)
    for r in rows[1:]:
        p = r["prepare"]
        line = f"{p['positions']:,}: prepare max RSS ÷ {first['prepare']['positions']:,}'s: " \
               f"{p['max_rss_mb'] / first['prepare']['max_rss_mb']:.2f} (goal ≤ 1.2)"
        if "prepare_dedupe" in r and "prepare_dedupe" in first:
            line += f"; with --dedupe --dedupe-test {r['prepare_dedupe']['max_rss_mb'] / first['prepare_dedupe']['max_rss_mb']:.2f}"
        if ref:
            line += f"; positions/s ÷ 1M's: {p['positions_per_s'] / ref['positions_per_s']:.2f}, per CPU-second " \
                    f"{p['positions_per_cpu_s'] / ref['positions_per_cpu_s']:.2f} (goal ≥ 0.85)"
        print(line)
    for r in rows:
        ld = r["loader"]
        print(f"{r['prepare']['positions']:,}: loader gather + {'pin' if ld['pinned'] else 'copy'} ÷ 1M pos/s: "
              f"{ld['warm_gather_copy'] / 1e6:.2f} at batch 4096, {ld['warm_gather_copy_1024'] / 1e6:.2f} at 1024 (goal ≥ 1)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="150k,1M,10M,30M", help="comma-separated positions (k, M suffixes)")
    ap.add_argument("--dedupe-at", default="10M", help="the size also prepared with --dedupe --dedupe-test "
                    "(the smallest is too, as the reference; 0: none)")
    ap.add_argument("--workers", type=int, default=0, help="prepare workers (default: prepare's, all cores)")
    ap.add_argument("--tmp", type=Path, help="where to build the corpora and datasets (default: the system's)")
    ap.add_argument("--json", type=Path, help="also write every figure here")
    ap.add_argument("--loader", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.loader:
        sys.path.insert(0, str(REPO))
        print(json.dumps(loader(args.loader)))
        return
    sizes = sorted(parse_size(s) for s in args.sizes.split(","))
    dedupe_at = parse_size(args.dedupe_at)
    rows, checkpoint = [], None
    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=args.tmp) as tmp:
        work = Path(tmp)
        calibration = prepare([REPO / "data" / "selfplay"], work / "calibration", args.workers)
        per_file = calibration["positions"] / len(SELFPLAY)
        for size in sizes:
            options = argparse.Namespace(workers=args.workers, dedupe=dedupe_at > 0 and size in (sizes[0], dedupe_at))
            row, checkpoint = run_size(size, work, options, per_file, checkpoint)
            rows.append(row)
            print(f"done {size:,}: {json.dumps(row)}", file=sys.stderr, flush=True)
    print_table(rows)
    print_ratios(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
