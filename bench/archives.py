"""Throughput of `shogitrain prepare` on an archive of records against the same records as plain files,
measured in the same run (interleaved rounds, median).

The records: the bundled data/ (selfplay + floodgate CSA), packed once per kind into a temporary
directory. Filters off, so both sides convert every game.

    python bench/archives.py [--workers N] [--repeat 5] [--kinds zip,tar.gz,...] [DIR ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
KINDS = ("zip", "tar", "tar.gz", "tar.xz", "tar.bz2", "7z")


def main() -> None:
    from prepare import ours_rate as run          # bench/prepare.py: `prepare` with the filters off
    from test_archives import make_archive

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", type=Path, default=[ROOT / "data"])
    parser.add_argument("--workers", type=int, default=0, help="prepare workers (default: all cores)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args()
    workers = args.workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "records"
        tree.mkdir()
        for d in args.inputs:      # the archives hold the record files only, as the plain run reads them
            for f in sorted(d.rglob("*.csa")):
                (tree / f.relative_to(d)).parent.mkdir(parents=True, exist_ok=True)
                os.link(f, tree / f.relative_to(d))
        archives = {k: make_archive(Path(tmp) / f"records.{k}", tree) for k in args.kinds.split(",")}
        times: dict[str, list[float]] = {"plain": []} | {k: [] for k in archives}
        counts = {}
        for _ in range(args.repeat):               # interleaved, so all see the same machine load
            counts["plain"], t = run([tree], workers)
            times["plain"].append(t)
            for kind, path in archives.items():
                counts[kind], t = run([path], workers)
                times[kind].append(t)
        plain = statistics.median(times["plain"])
        size = sum(f.stat().st_size for f in tree.rglob("*") if f.is_file())
        print(f"records: {size / 1e6:.1f} MB, {counts['plain']} positions; workers {workers}; "
              f"median of {args.repeat}")
        print(f"{'plain files':>12}: {counts['plain'] / plain:10,.0f} positions/s")
        for kind, path in archives.items():
            t = statistics.median(times[kind])
            assert counts[kind] == counts["plain"], (kind, counts[kind], counts["plain"])
            print(f"{kind:>12}: {counts[kind] / t:10,.0f} positions/s  ({path.stat().st_size / 1e6:.1f} MB)  "
                  f"ratio {plain / t:.2f}x")


if __name__ == "__main__":
    main()
