"""The run directory's records: run.json (provenance), metrics.jsonl / metrics.csv, TensorBoard events."""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from shogitrain import __version__


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
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


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
            rows = [r for r in read_metrics(self.dir) if r["step"] <= resume_step]
            self._rewrite(rows)
        elif self.path.exists():
            self.path.unlink()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.dir / "tensorboard"))
        except Exception:  # tensorboard is optional
            self.tb = None

    def _rewrite(self, rows: list[dict]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        os.replace(tmp, self.path)

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
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
        tmp = self.dir / ".metrics.csv.tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.dir / "metrics.csv")

    def close(self) -> None:
        self.write_csv()
        if self.tb is not None:
            self.tb.close()


def write_json(path, data: dict) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
