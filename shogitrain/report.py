"""Compare training runs: the 2021 note's four figures as PNG, a markdown report and summary.json.

``compare_runs(run_dirs, out_dir)`` reads each run directory's ``metrics.jsonl`` (structured rows,
see docs/internals.md) and ``run.json`` (provenance, wall-clock time) and writes into ``out_dir``:

- ``training_loss.png``    train ``loss`` vs step
- ``test_policy_loss.png`` test ``policy_loss`` vs step (``test_sample`` rows if the run has them, else ``test``)
- ``test_value_loss.png``  test ``result_loss`` (value vs game result, solid) and ``eval_loss`` (dashed)
- ``test_accuracy.png``    ``policy_accuracy`` (solid) and ``value_accuracy`` (dashed) vs step
- ``report.md``            the figures, a final-metrics table, wall-clock time per run (seconds and
                           percentage of the first run, the note's "NF = 90.2% of BN"), git commit, device
- ``summary.json``         the same numbers, and every plotted series as ``[step, value]`` points

matplotlib is an optional dependency (``shogitrain[plot]``); it is used through its object API
with the Agg canvas, so no global pyplot state or display is touched.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

METRICS_FILE = "metrics.jsonl"
RUN_FILE = "run.json"

# Columns of the final-metrics table, in order (metric names from docs/internals.md).
FINAL_METRICS = ("loss", "policy_loss", "result_loss", "eval_loss", "policy_accuracy", "value_accuracy",
                 "policy_entropy", "value_entropy")

INSTALL_HINT = "install it with: pip install 'shogitrain[plot]'  (or: pip install matplotlib)"


class ReportError(Exception):
    """A run directory that cannot be compared, or a missing optional dependency (one-line message)."""


@dataclass
class Run:
    """One run directory as the report sees it."""

    dir: Path
    name: str
    rows: list[dict]
    info: dict = field(default_factory=dict)  # run.json, {} when absent

    def rows_of(self, split: str) -> list[dict]:
        return [r for r in self.rows if r.get("split") == split]

    def test_curve_split(self) -> str | None:
        """The split whose rows make the test curves: the periodic test sample if logged, else full test passes."""
        for split in ("test_sample", "test"):
            if self.rows_of(split):
                return split
        return None

    def final_row(self) -> dict | None:
        """The last full test pass, else the last test-sample evaluation."""
        for split in ("test", "test_sample"):
            rows = self.rows_of(split)
            if rows:
                return rows[-1]
        return None


# ---------------------------------------------------------------------------------------------- reading


def _read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise ReportError(f"{run_dir}: no {METRICS_FILE} (not a shogitrain run directory, "
                          "or the run has not logged yet)")
    rows = []
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines) and not line.endswith("\n"):
                break  # the run is still writing (or was killed mid-write): skip its partial last row
            raise ReportError(f"{path}:{number}: not a JSON row ({e.msg})") from None
        if not isinstance(row, dict) or "step" not in row or "split" not in row:
            raise ReportError(f"{path}:{number}: a metrics row needs 'step' and 'split'")
        rows.append(row)
    if not rows:
        raise ReportError(f"{run_dir}: {METRICS_FILE} has no rows")
    return rows


def _read_info(run_dir: Path) -> dict:
    path = run_dir / RUN_FILE
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: not readable as JSON ({e})") from None
    return info if isinstance(info, dict) else {}


def load_runs(run_dirs, names=None) -> list[Run]:
    """Read the run directories; legend names from ``names``, else run.json ``name``, else the directory name."""
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise ReportError("no run directories given")
    if names is not None and len(names) != len(dirs):
        raise ReportError(f"{len(names)} names given for {len(dirs)} run directories")
    runs = []
    for i, d in enumerate(dirs):
        if not d.is_dir():
            raise ReportError(f"{d}: no such run directory")
        rows = _read_metrics(d)
        info = _read_info(d)
        name = names[i] if names is not None else (info.get("name") or d.resolve().name)
        runs.append(Run(dir=d, name=str(name), rows=rows, info=info))
    # Legends need distinct labels: suffix repeats with their position.
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.name] = seen.get(run.name, 0) + 1
        if seen[run.name] > 1:
            run.name = f"{run.name} ({seen[run.name]})"
    return runs


# ---------------------------------------------------------------------------------------------- numbers


def _number(value) -> float | None:
    """A finite float, or None for a missing / non-numeric / NaN / inf value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def series(rows: list[dict], metric: str) -> list[list]:
    """``[[step, value], ...]`` for the rows that logged ``metric`` (in logged order; NaN/inf kept as None)."""
    points = []
    for row in rows:
        if metric not in row or row[metric] is None:
            continue
        value = row[metric]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        points.append([row["step"], value if math.isfinite(value) else None])
    return points


def wall_clock(run: Run) -> tuple[float | None, str]:
    """Training wall-clock seconds and where the number came from."""
    seconds = _number(run.info.get("wall_clock_s"))
    if seconds is not None:
        return seconds, "run.json"
    times = [t for t in (_number(r.get("time_s")) for r in run.rows) if t is not None]
    if times:
        return max(times), "metrics.jsonl (last time_s; run.json has no wall_clock_s)"
    return None, "unknown"


def positions_per_s(run: Run) -> float | None:
    """Median training throughput over the train rows (robust to the slow first window), if logged."""
    values = [v for v in (_number(r.get("positions_per_s")) for r in run.rows_of("train")) if v is not None]
    return statistics.median(values) if values else None


def device_of(info: dict) -> str | None:
    if info.get("device"):
        return str(info["device"])
    env = info.get("environment") or {}
    if not isinstance(env, dict) or not env:
        return None
    if env.get("gpu"):
        return str(env["gpu"]) + (f" (CUDA {env['cuda']})" if env.get("cuda") else "")
    threads = env.get("cpu_threads")
    return "CPU" + (f", {threads} threads" if threads else "")


def git_of(info: dict) -> dict:
    git = info.get("git") or {}
    if not isinstance(git, dict):
        git = {"commit": str(git)}
    return {"commit": git.get("commit"), "dirty": git.get("dirty")}


def hms(seconds: float) -> str:
    """``1:16:34`` style, as the note writes training times."""
    total = int(round(seconds))
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


# ---------------------------------------------------------------------------------------------- figures

# Each figure: file stem, title, y label, and per run the (metric, split chooser, line style) lines.
_TEST = "test curve"  # placeholder split: the run's test_sample rows if it has any, else its test rows
FIGURES = {
    "training_loss": {
        "title": "Training loss",
        "ylabel": "loss (train, mean over the log interval)",
        "lines": [("loss", "train", "-")],
    },
    "test_policy_loss": {
        "title": "Test policy loss",
        "ylabel": "policy loss (plain cross-entropy, on {splits})",
        "lines": [("policy_loss", _TEST, "-")],
    },
    "test_value_loss": {
        "title": "Test value loss",
        "ylabel": "value loss on {splits}: result_loss (solid), eval_loss (dashed)",
        "lines": [("result_loss", _TEST, "-"), ("eval_loss", _TEST, "--")],
    },
    "test_accuracy": {
        "title": "Test accuracy",
        "ylabel": "accuracy on {splits}: policy (solid), value (dashed)",
        "lines": [("policy_accuracy", _TEST, "-"), ("value_accuracy", _TEST, "--")],
    },
}

SPLIT_DESCRIPTIONS = {
    "train": "train",
    "test_sample": "test_sample (random test batch every eval_interval steps)",
    "test": "test (full test pass each epoch)",
}


def figure_series(runs: list[Run]) -> dict:
    """What each figure plots: ``{figure: {file, title, ylabel, series: [{run, metric, split, style, points}]}}``."""
    figures = {}
    for key, spec in FIGURES.items():
        lines = []
        for run in runs:
            for metric, split, style in spec["lines"]:
                split = run.test_curve_split() if split == _TEST else split
                if split is None:
                    continue
                points = series(run.rows_of(split), metric)
                if points:
                    lines.append({"run": run.name, "metric": metric, "split": split, "style": style,
                                  "points": points})
        splits = sorted({line["split"] for line in lines}, key=list(SPLIT_DESCRIPTIONS).index)
        figures[key] = {
            "file": f"{key}.png",
            "title": spec["title"],
            "ylabel": spec["ylabel"].format(splits=" / ".join(splits) or "test"),
            "splits": splits,
            "series": lines,
        }
    return figures


def _import_matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ReportError(f"compare needs matplotlib to draw figures ({e}); {INSTALL_HINT}") from None
    return Figure, FigureCanvasAgg


def draw_figures(figures: dict, run_names: list[str], out_dir: Path) -> None:
    """One PNG per figure; one colour per run, line style per metric, legend = run name."""
    Figure, FigureCanvasAgg = _import_matplotlib()
    colours = [f"C{i % 10}" for i in range(len(run_names))]
    colour_of = dict(zip(run_names, colours))
    for spec in figures.values():
        fig = Figure(figsize=(7.0, 4.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        several_metrics = len({line["metric"] for line in spec["series"]}) > 1
        mixed_splits = len(spec["splits"]) > 1
        for line in spec["series"]:
            steps = [p[0] for p in line["points"]]
            values = [math.nan if p[1] is None else p[1] for p in line["points"]]
            label = line["run"]
            if several_metrics:
                label += f" {line['metric']}"
            if mixed_splits:
                label += f" [{line['split']}]"
            ax.plot(steps, values, linestyle=line["style"], color=colour_of[line["run"]], label=label,
                    marker="o" if len(steps) == 1 else None)
        ax.set_title(spec["title"])
        ax.set_xlabel("step (iterations)")
        ax.set_ylabel(spec["ylabel"], fontsize=8)
        ax.grid(True, alpha=0.3)
        if spec["series"]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no rows logged for this figure", ha="center", va="center", transform=ax.transAxes)
        fig.tight_layout()
        fig.savefig(out_dir / spec["file"])


# ---------------------------------------------------------------------------------------------- report


def run_summaries(runs: list[Run]) -> list[dict]:
    base, _ = wall_clock(runs[0])
    out = []
    for run in runs:
        seconds, source = wall_clock(run)
        final = run.final_row()
        out.append({
            "name": run.name,
            "dir": str(run.dir),
            "wall_clock_s": seconds,
            "wall_clock_source": source,
            "wall_clock_pct_of_first": (100.0 * seconds / base) if seconds is not None and base else None,
            "finished_step": run.info.get("finished_step"),
            "git": git_of(run.info),
            "device": device_of(run.info),
            "positions_per_s": positions_per_s(run),
            "final": None if final is None else {
                "split": final["split"], "step": final["step"], "epoch": final.get("epoch"),
                **{m: final.get(m) for m in FINAL_METRICS},
            },
        })
    return out


def _cell(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return str(value)


def _commit(git: dict) -> str:
    if not git.get("commit"):
        return "—"
    return f"`{git['commit'][:12]}`" + ("-dirty" if git.get("dirty") else "")


def render_markdown(summaries: list[dict], figures: dict) -> str:
    lines = ["# Run comparison", ""]
    lines.append("Runs: " + ", ".join(f"**{s['name']}** (`{s['dir']}`)" for s in summaries) + ".")
    lines += ["", "## Figures", ""]
    notes = {
        "training_loss": "Training loss: the total loss (policy + value terms) averaged over each log interval.",
        "test_policy_loss": "Test policy loss: cross-entropy of the policy against the played move, weighted "
                            "by z, plus the entropy term.",
        "test_value_loss": "Test value loss: `result_loss` (solid) is the binary cross-entropy of the value "
                           "against the game result, the value loss the 2021 note plots; `eval_loss` (dashed) "
                           "is the cross-entropy against the engine evaluation sigmoid(eval / 756.09).",
        "test_accuracy": "Test accuracy: policy top-1 accuracy (solid) and value accuracy (dashed; value logit "
                         "≥ 0 agrees with result ≥ 0.5).",
    }
    for key, spec in figures.items():
        splits = ", ".join(SPLIT_DESCRIPTIONS.get(s, s) for s in spec["splits"]) or "no rows"
        lines += [f"### {spec['title']}", "", f"![{spec['title']}]({spec['file']})", "",
                  f"{notes[key]} Rows: {splits}.", ""]

    lines += ["## Final metrics", "",
              "Last full test pass (`test`) of each run, else its last `test_sample` evaluation; "
              "positions/s is the median training throughput over the train rows.", ""]
    header = ["run", "split", "steps", *FINAL_METRICS, "positions/s"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---", "---"] + ["---:"] * (len(header) - 2)) + "|")
    for s in summaries:
        final = s["final"] or {}
        cells = [s["name"], final.get("split", "—"), _cell(final.get("step")),
                 *(_cell(final.get(m)) for m in FINAL_METRICS),
                 _cell(s["positions_per_s"], 1)]
        lines.append("| " + " | ".join(cells) + " |")

    first = summaries[0]["name"]
    lines += ["", "## Training time and provenance", "",
              f"Wall-clock training time, as a percentage of the first run ({first}).", ""]
    lines.append("| run | wall clock (s) | h:mm:ss | % of first | finished step | git commit | device |")
    lines.append("|---|---:|---:|---:|---:|---|---|")
    for s in summaries:
        seconds = s["wall_clock_s"]
        pct = s["wall_clock_pct_of_first"]
        lines.append("| " + " | ".join([
            s["name"],
            _cell(seconds, 1),
            hms(seconds) if seconds is not None else "—",
            f"{pct:.1f}%" if pct is not None else "—",
            _cell(s["finished_step"]),
            _commit(s["git"]),
            s["device"] or "—",
        ]) + " |")
    estimated = [s["name"] for s in summaries if s["wall_clock_s"] is not None and s["wall_clock_source"] != "run.json"]
    if estimated:
        lines += ["", "Wall clock taken from the last `time_s` in metrics.jsonl (run.json has no "
                  f"`wall_clock_s`) for: {', '.join(estimated)}."]
    lines.append("")
    return "\n".join(lines)


def _json_safe(value):
    """NaN / inf → None, so summary.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def compare_runs(run_dirs: list[Path], out_dir: Path, names: list[str] | None = None, match_dirs=()) -> Path:
    """Write the four figures, ``report.md`` and ``summary.json`` for ``run_dirs`` into ``out_dir``.

    Match results (``RUN_DIR/match/results.json`` and ``match_dirs``) add an "Elo" section.
    Returns the path of ``report.md``. Raises :class:`ReportError` for a directory without
    metrics.jsonl, an unreadable file, or when matplotlib is not installed.
    """
    runs = load_runs(run_dirs, names)
    _import_matplotlib()  # fail before writing anything
    elo = _elo_section(run_dirs, match_dirs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    figures = figure_series(runs)
    draw_figures(figures, [r.name for r in runs], out_dir)
    summaries = run_summaries(runs)

    summary = {"runs": summaries, "figures": figures}
    markdown = render_markdown(summaries, figures)
    if elo is not None:
        markdown += "\n" + elo[0]
        summary["elo"] = elo[1]
    (out_dir / "summary.json").write_text(json.dumps(_json_safe(summary), indent=1) + "\n", encoding="utf-8")
    report = out_dir / "report.md"
    report.write_text(markdown, encoding="utf-8")
    return report


def _elo_section(run_dirs, match_dirs) -> tuple[str, list] | None:
    """The engine-match tables (shogitrain.play.results), or None when there are no match results."""
    from shogitrain.play.results import ResultsError, match_dirs_of, markdown_section

    dirs = match_dirs_of(run_dirs, match_dirs)
    try:
        return markdown_section(dirs) if dirs else None
    except ResultsError as e:
        raise ReportError(str(e)) from None
