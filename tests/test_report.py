"""Tests for shogitrain.report: figures, report.md values and summary.json series from hand-written runs."""

from __future__ import annotations

import builtins
import json
import struct
from pathlib import Path

import pytest

from shogitrain.report import ReportError, compare_runs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = ("training_loss.png", "test_policy_loss.png", "test_value_loss.png", "test_accuracy.png")


def _test_row(step, split, k, scale):
    return {"step": step, "epoch": step // 200, "split": split, "time_s": step * 0.5,
            "loss": round(2.0 * scale - 0.1 * k, 6), "policy_loss": round(1.5 * scale - 0.07 * k, 6),
            "result_loss": round(0.6 * scale - 0.01 * k, 6), "eval_loss": round(0.55 * scale - 0.012 * k, 6),
            "policy_accuracy": round(0.2 + 0.03 * k / scale, 6), "value_accuracy": round(0.6 + 0.01 * k / scale, 6),
            "policy_entropy": round(3.0 - 0.1 * k, 6), "value_entropy": round(0.65 - 0.005 * k, 6)}


def make_run(root: Path, dirname: str, name: str | None, wall_clock: float, scale: float,
             test_sample: bool = True) -> list[dict]:
    """A run directory whose metrics are known: train rows every 100 steps, test_sample every 200, test at 400."""
    run = root / dirname
    run.mkdir()
    rows = []
    for k, step in enumerate(range(100, 401, 100)):
        rows.append({"step": step, "epoch": 0, "split": "train", "time_s": step * 0.25,
                     "loss": round(3.0 * scale - 0.2 * k, 6), "policy_loss": 2.0, "result_loss": 0.6,
                     "eval_loss": 0.6, "lr": 0.1, "positions_per_s": 1000.0 * (k + 1) / scale})
        if test_sample and step % 200 == 0:
            rows.append(_test_row(step, "test_sample", k, scale))
    rows.append(_test_row(400, "test", 5, scale))
    with open(run / "metrics.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    info = {"wall_clock_s": wall_clock, "finished_step": 400,
            "git": {"commit": "0123456789abcdef0123", "dirty": False},
            "environment": {"gpu": None, "cuda": None, "cpu_threads": 2}}
    if name is not None:
        info["name"] = name
    (run / "run.json").write_text(json.dumps(info))
    return rows


def check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100
    assert len(data) > 5000  # axes, lines and text, not an empty canvas


@pytest.fixture
def two_runs(tmp_path):
    bn = make_run(tmp_path, "run-a", "bn", 100.0, 1.0)
    nf = make_run(tmp_path, "run-b", None, 90.0, 1.1)  # no name in run.json: the directory name is used
    return tmp_path, bn, nf


def test_compare_writes_figures_report_and_summary(two_runs):
    root, bn_rows, nf_rows = two_runs
    out = root / "report"
    report = compare_runs([root / "run-a", root / "run-b"], out)
    assert report == out / "report.md"
    for name in FIGURES:
        check_png(out / name)

    text = report.read_text()
    for name in FIGURES:
        assert f"]({name})" in text
    assert "bn" in text and "run-b" in text
    # Final table: the last `test` row of each run, formatted to 4 decimals.
    for rows, name in ((bn_rows, "bn"), (nf_rows, "run-b")):
        final = [r for r in rows if r["split"] == "test"][-1]
        line = next(line for line in text.splitlines() if line.startswith(f"| {name} | test |"))
        for metric in ("loss", "policy_loss", "result_loss", "eval_loss", "policy_accuracy", "value_accuracy",
                       "policy_entropy", "value_entropy"):
            assert f"{final[metric]:.4f}" in line, metric
        assert "| 400 |" in line
    # Median positions/s of the train rows: 2500 for bn, 2500/1.1 for run-b.
    assert "2500.0" in text and f"{2500 / 1.1:.1f}" in text
    # Wall clock as seconds and as a percentage of the first run (the note's "NF = 90.2% of BN").
    assert "100.0%" in text and "90.0%" in text
    assert "0:01:30" in text and "`0123456789ab`" in text

    summary = json.loads((out / "summary.json").read_text())
    runs = summary["runs"]
    assert [r["name"] for r in runs] == ["bn", "run-b"]
    assert [r["wall_clock_s"] for r in runs] == [100.0, 90.0]
    assert runs[1]["wall_clock_pct_of_first"] == pytest.approx(90.0)
    assert runs[0]["final"]["policy_loss"] == [r for r in bn_rows if r["split"] == "test"][-1]["policy_loss"]
    assert runs[0]["device"] == "CPU, 2 threads"

    # Every plotted series equals the logged metrics exactly.
    expected = {
        ("training_loss", "loss", "train"),
        ("test_policy_loss", "policy_loss", "test_sample"),
        ("test_value_loss", "result_loss", "test_sample"),
        ("test_value_loss", "eval_loss", "test_sample"),
        ("test_accuracy", "policy_accuracy", "test_sample"),
        ("test_accuracy", "value_accuracy", "test_sample"),
    }
    for run_name, rows in (("bn", bn_rows), ("run-b", nf_rows)):
        got = {(fig, s["metric"], s["split"]): s["points"] for fig, spec in summary["figures"].items()
               for s in spec["series"] if s["run"] == run_name}
        assert set(got) == expected
        for (fig, metric, split), points in got.items():
            assert points == [[r["step"], r[metric]] for r in rows if r["split"] == split]
    assert "test_sample" in summary["figures"]["test_policy_loss"]["ylabel"]


def test_test_rows_used_when_no_test_sample(tmp_path):
    rows = make_run(tmp_path, "only-test", "bn", 50.0, 1.0, test_sample=False)
    out = tmp_path / "out"
    compare_runs([tmp_path / "only-test"], out, names=["baseline"])
    summary = json.loads((out / "summary.json").read_text())
    series = summary["figures"]["test_policy_loss"]["series"]
    assert [(s["run"], s["split"]) for s in series] == [("baseline", "test")]
    assert series[0]["points"] == [[400, rows[-1]["policy_loss"]]]
    assert summary["runs"][0]["final"]["split"] == "test"
    assert "(full test pass each epoch)" in (out / "report.md").read_text()


def test_missing_wall_clock_falls_back_to_time_s(tmp_path):
    make_run(tmp_path, "a", "a", 100.0, 1.0)
    make_run(tmp_path, "b", "b", 0.0, 1.0)
    (tmp_path / "b" / "run.json").unlink()  # run.json is optional
    out = tmp_path / "out"
    compare_runs([tmp_path / "a", tmp_path / "b"], out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"][1]["wall_clock_s"] == 200.0  # last time_s (test row at step 400)
    assert summary["runs"][1]["git"] == {"commit": None, "dirty": None}
    assert "200.0%" in (out / "report.md").read_text()


def test_missing_matplotlib_gives_install_hint(two_runs, monkeypatch):
    root, _, _ = two_runs
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ReportError) as info:
        compare_runs([root / "run-a", root / "run-b"], root / "out")
    message = str(info.value)
    assert "pip install 'shogitrain[plot]'" in message and "pip install matplotlib" in message
    assert "\n" not in message
    assert not (root / "out").exists()


def test_missing_metrics_names_the_directory(two_runs):
    root, _, _ = two_runs
    empty = root / "not-a-run"
    empty.mkdir()
    with pytest.raises(ReportError, match="not-a-run.*metrics.jsonl"):
        compare_runs([root / "run-a", empty], root / "out")
    with pytest.raises(ReportError, match="no-such-dir"):
        compare_runs([root / "no-such-dir"], root / "out")


def test_bad_row_names_file_and_line(two_runs):
    root, _, _ = two_runs
    with open(root / "run-a" / "metrics.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(ReportError, match=r"metrics\.jsonl:8"):
        compare_runs([root / "run-a"], root / "out")


def test_partial_last_line_is_skipped(two_runs):
    """A run killed mid-write leaves a last line without its newline; the rows before it still compare."""
    root, rows, _ = two_runs
    with open(root / "run-a" / "metrics.jsonl", "a") as f:
        f.write('{"step": 500, "split": "tra')
    compare_runs([root / "run-a"], root / "out")
    summary = json.loads((root / "out" / "summary.json").read_text())
    assert summary["figures"]["training_loss"]["series"][0]["points"][-1] == [400, rows[-3]["loss"]]
