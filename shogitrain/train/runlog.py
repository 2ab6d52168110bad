"""The run directory's records: run.json (provenance), metrics.jsonl / metrics.csv, TensorBoard events.

metrics.jsonl is strict JSON, one row a line (a non-finite value is written as null). A run killed
while appending a row leaves a torn last line: readers skip it, and a resumed run drops it (and
says so) before it logs on.
"""

from __future__ import annotations

import csv
import json
import platform
import subprocess
import sys
from pathlib import Path

from shogitrain import __version__
from shogitrain.files import atomic_write, strict_json, write_error


class MetricsError(ValueError):
    """A metrics.jsonl row that is not a JSON object (other than a torn last line); names file:line."""


def git_state(cwd=None) -> dict:
    """Commit and dirty flag of the source tree shogitrain runs from (None outside git)."""
    cwd = cwd or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty if commit else None}


def environment() -> dict:
    import torch  # here, so that reading metrics (compare) does not import torch

    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cpu_threads": torch.get_num_threads(),
        "shogitrain": __version__,
    }


def read_metrics(run_dir) -> list[dict]:
    """The rows of ``run_dir/metrics.jsonl`` ([] when there is none); a torn last line is skipped."""
    return read_rows(Path(run_dir) / "metrics.jsonl")[0]


def read_rows(path: Path) -> tuple[list[dict], bool]:
    """(rows, whether a torn last line was skipped) of a metrics file."""
    if not path.is_file():
        return [], False
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.readlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines) and not line.endswith("\n"):
                return rows, True  # written up to a crash
            raise MetricsError(f"{path}:{number}: not a JSON row ({e.msg})") from None
        if not isinstance(row, dict) or "step" not in row:
            raise MetricsError(f"{path}:{number}: a metrics row is an object with a 'step'")
        rows.append(row)
    return rows, False




class RunLog:
    """Structured metrics rows for one run; only the main rank writes."""

    def __init__(self, run_dir, enabled: bool = True, resume_step: int | None = None):
        self.dir = Path(run_dir)
        self.enabled = enabled
        self.path = self.dir / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            # Keep what was logged up to the checkpoint; later rows are produced again.
            rows, torn = read_rows(self.path)
            if torn:
                print(f"{self.path}: dropped a torn last line (the run stopped while writing it)", file=sys.stderr)
            self._rewrite([r for r in rows if r["step"] <= resume_step])
        elif self.path.exists():
            self.path.unlink()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.dir / "tensorboard"))
        except Exception:  # tensorboard is optional
            self.tb = None

    def _rewrite(self, rows: list[dict]) -> None:
        with atomic_write(self.path) as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        row = strict_json(row)
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, allow_nan=False) + "\n")
        except OSError as e:
            raise write_error(e, self.path) from None
        if self.tb is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.tb.add_scalar(f"{row['split']}/{key}", value, row["step"])

    def write_csv(self) -> None:
        if not self.enabled:
            return
        rows = read_metrics(self.dir)
        columns: list[str] = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        with atomic_write(self.dir / "metrics.csv", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    def close(self) -> None:
        self.write_csv()
        if self.tb is not None:
            self.tb.close()


def write_json(path, data: dict) -> None:
    """``data`` as indented JSON, written whole or not at all."""
    with atomic_write(path) as f:
        f.write(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
