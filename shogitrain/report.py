"""Compare training runs: figures, a markdown report and summary.json, with statistics over seeds.

``compare_runs(run_dirs, out_dir)`` reads each run directory's ``metrics.jsonl`` (structured rows,
see docs/internals.md), ``run.json`` (provenance, wall-clock time) and ``config.yaml``; a sweep
directory (with ``experiment.json``) stands for all its runs. Runs that differ only in seed form a
group (shogitrain/groups.py). It writes into ``out_dir`` the figures of shogitrain/report_figures.py
(each group's mean with a 95 % band), ``report.md`` and ``summary.json`` (every number of the report
and every plotted series).

The report is a list of sections rendered in order (:data:`SECTIONS`); a section is a function
``Comparison → list of markdown lines`` and may add its numbers to ``comparison.summary`` under its
own key (the Elo section of engine matches does). ``compare_runs(..., sections=SECTIONS + (more,))``
adds one. Statistics (t-intervals, the paired t-test over seeds) come from shogitrain/stats.py;
docs/experiments.md explains them.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from shogitrain.files import atomic_write, strict_json
from shogitrain.groups import differing_keys, identity, variant_keys
from shogitrain.report_figures import (BAND_DESCRIPTIONS, SPLIT_DESCRIPTIONS, FigureError, draw_figures,
                                       figure_data, import_matplotlib)
from shogitrain.stats import mean_interval, paired_difference
from shogitrain.train.runlog import MetricsError, read_rows

METRICS_FILE = "metrics.jsonl"
RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
EXPERIMENT_FILE = "experiment.json"  # written by `shogitrain sweep`: the runs of an experiment directory
SEED_DIR = re.compile(r"seed-\d+")  # a sweep's run directory, named after its seed: named after its variant

# Columns of the final-metrics table, in order (metric names from docs/internals.md).
FINAL_METRICS = ("loss", "policy_loss", "result_loss", "eval_loss", "policy_accuracy", "value_accuracy",
                 "policy_entropy", "value_entropy")


class ReportError(Exception):
    """A run directory that cannot be compared, or a missing optional dependency (one-line message)."""


@dataclass
class Run:
    """One run directory as the report sees it."""

    dir: Path
    name: str
    rows: list[dict]
    info: dict = field(default_factory=dict)  # run.json, {} when absent
    config: dict | None = None  # config.yaml, None when absent
    seed: int | None = None

    def rows_of(self, split: str) -> list[dict]:
        return [r for r in self.rows if r.get("split") == split]

    def final_row(self) -> dict | None:
        """The last full test pass, else the last test-sample evaluation."""
        for split in ("test", "test_sample"):
            rows = self.rows_of(split)
            if rows:
                return rows[-1]
        return None


@dataclass
class Group:
    """Runs of one variant, one per seed (sorted by seed); ``keys`` its variant keys (None: no config.yaml)."""

    name: str
    runs: list[Run]
    keys: dict | None = None

    @property
    def seeds(self) -> list:
        return [run.seed for run in self.runs]


# ---------------------------------------------------------------------------------------------- reading


def _read_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl's rows (train/runlog.read_rows: a torn last row, of a run still writing or killed
    mid-write, is skipped); each must name its split."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise ReportError(f"{run_dir}: no {METRICS_FILE} (not a shogitrain run directory, "
                          "or the run has not logged yet)")
    try:
        rows, _ = read_rows(path)
    except MetricsError as e:
        raise ReportError(str(e)) from None
    if not rows:
        raise ReportError(f"{run_dir}: {METRICS_FILE} has no rows")
    unnamed = next((i for i, row in enumerate(rows) if "split" not in row), None)
    if unnamed is not None:
        raise ReportError(f"{path}: row {unnamed + 1} has no 'split'")
    return rows


def _read_mapping(path: Path, loader) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = loader(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise ReportError(f"{path}: not readable ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return data if isinstance(data, dict) else None


def expand_run_dirs(dirs) -> list[Path]:
    """Run directories as given, with each sweep directory replaced by its runs (in the sweep's order)."""
    out = []
    for d in map(Path, dirs):
        listing = d / EXPERIMENT_FILE
        if not (d / METRICS_FILE).exists() and listing.is_file():
            experiment = _read_mapping(listing, json.loads) or {}
            found = [d / r["dir"] for r in experiment.get("runs", []) if (d / r["dir"] / METRICS_FILE).is_file()]
            if not found:
                raise ReportError(f"{d}: no run of this sweep has logged yet")
            out += found
        else:
            out.append(d)
    return out


def load_run(run_dir: Path) -> Run:
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run directory")
    rows = _read_metrics(run_dir)
    info = _read_mapping(run_dir / RUN_FILE, json.loads) or {}
    config = _read_mapping(run_dir / CONFIG_FILE, yaml.safe_load)
    seed = ((config or {}).get("train") or {}).get("seed", info.get("seed"))
    name = str(info.get("name") or run_dir.resolve().name)
    if SEED_DIR.fullmatch(name):
        name = run_dir.resolve().parent.name
    return Run(dir=run_dir, name=name, rows=rows, info=info, config=config,
               seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None)


def load_runs(run_dirs) -> list[Run]:
    """Read the run directories (a sweep directory stands for its runs)."""
    dirs = expand_run_dirs(run_dirs)
    if not dirs:
        raise ReportError("no run directories given")
    return [load_run(d) for d in dirs]


# ---------------------------------------------------------------------------------------------- groups


def _data_id(run: Run) -> str | None:
    return run.info.get("data_manifest_sha256") or ((run.config or {}).get("data") or {}).get("path")


def _common_name(names: list[str]) -> str:
    if len(set(names)) == 1:
        return names[0]
    prefix = os.path.commonprefix(names).rstrip(" -_./")
    return prefix or names[0]


def group_runs(runs: list[Run], names: list[str] | None = None) -> list[Group]:
    """Runs with the same variant keys form a group, one run per seed, in order of first appearance.

    A run without config.yaml is a group of its own, and so is a second run of a seed already in
    the group (a repeat is not an independent sample). ``names`` renames the groups, in order."""
    groups: list[Group] = []
    for run in runs:
        keys = None if run.config is None else variant_keys(run.config, _data_id(run))
        home = None
        if keys is not None:
            home = next((g for g in groups if g.keys is not None and identity(g.keys) == identity(keys)
                         and run.seed not in g.seeds), None)
        if home is None:
            groups.append(Group(name=run.name, runs=[run], keys=keys))
        else:
            home.runs.append(run)
    for group in groups:
        group.runs.sort(key=lambda r: (r.seed is None, r.seed or 0))
        group.name = _common_name([r.name for r in group.runs])
    if names is not None:
        if len(names) != len(groups):
            raise ReportError(f"{len(names)} names given for {len(groups)} groups "
                              "(runs that differ only in train.seed form one group)")
        for group, name in zip(groups, names):
            group.name = str(name)
            for run in group.runs:
                run.name = group.name
    seen: dict[str, int] = {}
    for group in groups:  # legends need distinct labels: suffix repeats with their position
        seen[group.name] = seen.get(group.name, 0) + 1
        if seen[group.name] > 1:
            group.name = f"{group.name} ({seen[group.name]})"
    return groups


# ---------------------------------------------------------------------------------------------- numbers


def _number(value) -> float | None:
    """A finite float, or None for a missing / non-numeric / NaN / inf value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


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


def run_summaries(groups: list[Group]) -> list[dict]:
    runs = [(group, run) for group in groups for run in group.runs]
    base, _ = wall_clock(runs[0][1])
    out = []
    for group, run in runs:
        seconds, source = wall_clock(run)
        final = run.final_row()
        out.append({
            "name": run.name, "group": group.name, "seed": run.seed, "dir": str(run.dir),
            "wall_clock_s": seconds, "wall_clock_source": source,
            "wall_clock_pct_of_first": (100.0 * seconds / base) if seconds is not None and base else None,
            "finished_step": run.info.get("finished_step"),
            "git": git_of(run.info), "device": device_of(run.info), "positions_per_s": positions_per_s(run),
            "final": None if final is None else {
                "split": final["split"], "step": final["step"], "epoch": final.get("epoch"),
                **{m: final.get(m) for m in FINAL_METRICS},
            },
        })
    return out


def _final_values(group: Group, metric: str) -> list[tuple]:
    """``[(seed, final value)]`` of the runs whose final row has a finite ``metric``."""
    values = []
    for run in group.runs:
        final = run.final_row()
        value = _number(final.get(metric)) if final else None
        if value is not None:
            values.append((run.seed, value))
    return values


def _interval(values) -> dict | None:
    values = list(values)
    return mean_interval(values).as_dict() | {"values": values} if values else None


def group_statistics(groups: list[Group]) -> list[dict]:
    """Per group: its runs and seeds, each final metric's mean and interval, wall clock and throughput."""
    out = []
    for group in groups:
        finals = [run.final_row() or {} for run in group.runs]
        out.append({
            "name": group.name, "dirs": [str(r.dir) for r in group.runs], "seeds": group.seeds,
            "splits": sorted({f.get("split") for f in finals if f}), "steps": sorted({f.get("step") for f in finals if f}),
            "final": {m: _interval(v for _, v in _final_values(group, m)) for m in FINAL_METRICS},
            "wall_clock_s": _interval(s for s in (wall_clock(r)[0] for r in group.runs) if s is not None),
            "positions_per_s": _interval(p for p in map(positions_per_s, group.runs) if p is not None),
        })
    return out


def _pairs(mine: list[tuple], theirs: list[tuple]) -> tuple[list, list, list]:
    """Values of the seeds both groups have; two single runs pair whatever their seeds."""
    theirs_by_seed = dict(theirs)
    seeds = [seed for seed, _ in mine if seed is not None and seed in theirs_by_seed]
    if not seeds and len(mine) == len(theirs) == 1:
        return [mine[0][0]], [mine[0][1]], [theirs[0][1]]
    mine_by_seed = dict(mine)
    return seeds, [mine_by_seed[s] for s in seeds], [theirs_by_seed[s] for s in seeds]


def baseline_differences(groups: list[Group], baseline: Group) -> list[dict]:
    """Every other group's final metrics minus the baseline's, paired by seed, with the paired t-test."""
    out = []
    for group in groups:
        if group is baseline:
            continue
        for metric in FINAL_METRICS:
            seeds, mine, theirs = _pairs(_final_values(group, metric), _final_values(baseline, metric))
            if not seeds:
                continue
            diff = paired_difference(mine, theirs)
            out.append({"group": group.name, "baseline": baseline.name, "metric": metric, "seeds": seeds,
                        "group_mean": statistics.fmean(mine), "baseline_mean": statistics.fmean(theirs),
                        **diff.as_dict()})
    return out


# ---------------------------------------------------------------------------------------------- report


@dataclass
class Comparison:
    """What the sections render: the groups, the baseline, the figures and the summary.json numbers."""

    runs: list[Run]
    groups: list[Group]
    baseline: Group
    figures: dict
    summary: dict
    elo: tuple[str, list] | None = None  # the match results' markdown and summary entries


def _cell(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return str(value)


def interval_cell(interval: dict | None, digits: int = 4) -> str:
    """``3.3564 ± 0.0123`` (t-interval), ``3.3564 [3.3500, 3.3600]`` (min–max) or ``3.3564`` (one seed)."""
    if interval is None:
        return "—"
    mean = _cell(interval["mean"], digits)
    if interval["kind"] == "t":
        return f"{mean} ± {_cell(interval['half_width'], digits)}"
    if interval["kind"] == "min-max":
        return f"{mean} [{_cell(interval['low'], digits)}, {_cell(interval['high'], digits)}]"
    return mean


def _commit(git: dict) -> str:
    if not git.get("commit"):
        return "—"
    return f"`{git['commit'][:12]}`" + ("-dirty" if git.get("dirty") else "")


def _table(header: list[str], rows: list[list[str]], align: str = "l") -> list[str]:
    """A markdown table; ``align`` has one letter per column (l/r), the last repeated for the rest."""
    align = align + align[-1] * (len(header) - len(align))
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def section_runs(c: Comparison) -> list[str]:
    lines = ["# Run comparison", "",
             "Runs: " + ", ".join(f"**{g.name}** (" + ", ".join(f"`{r.dir}`" for r in g.runs) + ")" for g in c.groups)
             + "."]
    if any(len(g.runs) > 1 for g in c.groups):
        lines += ["", "Runs whose resolved configs differ only in `train.seed` (and where they are written, "
                  "see docs/experiments.md) form one group; a group is drawn as its mean over seeds with a band "
                  "and tabulated as mean ± 95% interval.", ""]
        lines += _table(["group", "seeds", "runs"],
                        [[g.name, ", ".join(map(str, g.seeds)), str(len(g.runs))] for g in c.groups], "llr")
    keyed = [g.keys for g in c.groups if g.keys is not None]
    if len(keyed) > 1:
        keys = [k for k in differing_keys(keyed) if k != "data"] + (["data"] if "data" in differing_keys(keyed) else [])
        lines += ["", "Config keys that set the groups apart: " + (", ".join(f"`{k}`" for k in keys) or "none") + "."]
    return lines + [""]


FIGURE_NOTES = {
    "training_loss": "Training loss: the total loss (policy + value terms) averaged over each log interval.",
    "test_policy_loss": "Test policy loss: cross-entropy of the policy against the played move, weighted "
                        "by z, plus the entropy term.",
    "test_value_loss": "Test value loss: `result_loss` (left) is the binary cross-entropy of the value "
                       "against the game result, the value loss the 2021 note plots; `eval_loss` (right) "
                       "is the cross-entropy against the engine evaluation sigmoid(eval / 756.09).",
    "test_accuracy": "Test accuracy: policy top-1 accuracy (left) and value accuracy (right; value logit "
                     "≥ 0 agrees with result ≥ 0.5).",
    "skip_gains": "Largest (left) and mean (right) |skip_gain| over the residual blocks of the NF nets, "
                  "from the train rows: how far the blocks' residual branches are open.",
}


def section_figures(c: Comparison) -> list[str]:
    bands = {b["band"] for spec in c.figures.values() for b in spec["bands"] if b["n"] > 1}
    lines = ["## Figures", ""]
    if bands:
        lines += ["Each group is drawn as its mean over seeds at the steps all its seeds logged; the band is "
                  + " / ".join(BAND_DESCRIPTIONS[b] for b in sorted(bands)) + " (a t-interval needs 3 seeds).", ""]
    for key, spec in c.figures.items():
        splits = ", ".join(SPLIT_DESCRIPTIONS.get(s, s) for s in spec["splits"]) or "no rows"
        lines += [f"### {spec['title']}", "", f"![{spec['title']}]({spec['file']})", "",
                  f"{FIGURE_NOTES[key]} Rows: {splits}.", ""]
    return lines


def section_final_metrics(c: Comparison) -> list[str]:
    lines = ["## Final metrics", "",
             "Last full test pass (`test`) of each run, else its last `test_sample` evaluation; "
             "positions/s is the median training throughput over the train rows. With several seeds: "
             "mean ± half-width of the 95% t-interval (3 seeds or more), mean [min, max] (2 seeds).", ""]
    rows = []
    for g in c.summary["groups"]:
        rows.append([g["name"], "/".join(g["splits"]) or "—", "/".join(map(str, g["steps"])) or "—",
                     *(interval_cell(g["final"][m]) for m in FINAL_METRICS),
                     interval_cell(g["positions_per_s"], 1), str(len(g["dirs"]))])
    return lines + _table(["group", "split", "steps", *FINAL_METRICS, "positions/s", "seeds"], rows, "llr") + [""]


def _verdict(d: dict) -> str:
    if d["n"] < 2:
        return "not tested (one pair of runs; a test needs 2 seeds or more)"
    if not d["resolved"]:
        return "**not resolved**"
    return "resolved: " + ("higher" if d["mean"] > 0 else "lower")


def section_differences(c: Comparison) -> list[str]:
    differences = c.summary["differences"]
    if not differences:
        return []
    lines = ["## Differences against the baseline", "",
             f"Baseline: **{c.baseline.name}**. Each difference is group − baseline of the final metric, paired by "
             "seed (runs with the same seed saw the same data in the same order); its 95% t-interval and the "
             "two-sided paired t-test over the seeds both groups have. A difference is *resolved* when the "
             "interval excludes 0 (p < 0.05); otherwise these seeds cannot tell the two apart. The p-values are "
             "per comparison, not corrected for the number of metrics and groups.", ""]
    for group in c.groups:
        rows = [d for d in differences if d["group"] == group.name]
        if not rows:
            if group is not c.baseline:
                lines += [f"{group.name}: no seed in common with the baseline, so no paired difference.", ""]
            continue
        n = max(d["n"] for d in rows)
        resolved = sum(d["resolved"] for d in rows)
        summary_line = (f"{n} paired seeds; {resolved} of {len(rows)} differences resolved." if n > 1 else
                        "One pair of runs: each difference is a single measurement, with no interval or test.")
        lines += [f"### {group.name} − {c.baseline.name}", "", summary_line, ""]
        lines += _table(["metric", c.baseline.name, group.name, "difference", "95% CI", "t (df)", "p", "verdict"], [[
            d["metric"], _cell(d["baseline_mean"]), _cell(d["group_mean"]), f"{d['mean']:+.4f}",
            "—" if d["low"] is None else f"[{d['low']:+.4f}, {d['high']:+.4f}]",
            "—" if d["t"] is None else f"{d['t']:.2f} ({d['df']})",
            "—" if d["p"] is None else f"{d['p']:.3g}", _verdict(d)] for d in rows], "lrrrrrrl")
        lines.append("")
    return lines


def section_time(c: Comparison) -> list[str]:
    groups = c.summary["groups"]
    base = next(g for g in groups if g["name"] == c.baseline.name)["wall_clock_s"]
    lines = ["## Training time and provenance", "",
             f"Wall-clock training time (evaluations excluded), mean over seeds, and as a percentage of the "
             f"baseline's ({c.baseline.name}) mean.", ""]
    rows = []
    for g in groups:
        seconds = g["wall_clock_s"]
        pct = 100.0 * seconds["mean"] / base["mean"] if seconds and base and base["mean"] else None
        rows.append([g["name"], interval_cell(seconds, 1), hms(seconds["mean"]) if seconds else "—",
                     f"{pct:.1f}%" if pct is not None else "—"])
    lines += _table(["group", "wall clock (s)", "h:mm:ss", "% of baseline"], rows, "lr") + [""]
    runs = c.summary["runs"]
    lines += _table(["run", "seed", "wall clock (s)", "% of first", "finished step", "git commit", "device"], [[
        s["name"], _cell(s["seed"]), _cell(s["wall_clock_s"], 1),
        f"{s['wall_clock_pct_of_first']:.1f}%" if s["wall_clock_pct_of_first"] is not None else "—",
        _cell(s["finished_step"]), _commit(s["git"]), s["device"] or "—"] for s in runs], "lrrrrll")
    estimated = sorted({s["name"] for s in runs if s["wall_clock_s"] is not None and s["wall_clock_source"] != "run.json"})
    if estimated:
        lines += ["", "Wall clock taken from the last `time_s` in metrics.jsonl (run.json has no "
                  f"`wall_clock_s`) for: {', '.join(estimated)}."]
    return lines + [""]


def section_elo(c: Comparison) -> list[str]:
    """The engine matches' Elo tables (shogitrain.play.results), when there are match results."""
    if c.elo is None:
        return []
    c.summary["elo"] = c.elo[1]
    return c.elo[0].rstrip("\n").split("\n") + [""]


def _elo_of(run_dirs, match_dirs) -> tuple[str, list] | None:
    """``RUN_DIR/match`` of every run directory given (a sweep directory's too), then ``match_dirs``."""
    from shogitrain.play.results import ResultsError, match_dirs_of, markdown_section

    dirs = match_dirs_of(run_dirs, match_dirs)
    try:
        return markdown_section(dirs) if dirs else None
    except ResultsError as e:
        raise ReportError(str(e)) from None


SECTIONS = (section_runs, section_figures, section_final_metrics, section_differences, section_elo, section_time)


def compare_runs(run_dirs, out_dir: Path, names: list[str] | None = None, baseline: str | None = None,
                 match_dirs=(), sections=SECTIONS) -> Path:
    """Write the figures, ``report.md`` and ``summary.json`` for ``run_dirs`` into ``out_dir``.

    ``names`` renames the groups in order; ``baseline`` names the group the others are compared
    with (default: the first). Match results (``RUN_DIR/match/results.json`` and ``match_dirs``)
    add an "Elo" section. Returns the path of ``report.md``. Raises :class:`ReportError` for a
    directory without metrics.jsonl, an unreadable file, or when matplotlib is not installed.
    """
    runs = load_runs(run_dirs)
    elo = _elo_of(list(dict.fromkeys([*map(Path, run_dirs), *(r.dir for r in runs)])), match_dirs)
    groups = group_runs(runs, names)
    names_of = [g.name for g in groups]
    if baseline is not None and baseline not in names_of:
        raise ReportError(f"unknown baseline {baseline!r}; groups: {', '.join(names_of)}")
    base = groups[names_of.index(baseline)] if baseline is not None else groups[0]
    try:
        import_matplotlib()  # fail before writing anything
    except FigureError as e:
        raise ReportError(str(e)) from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    figures = figure_data(groups)
    draw_figures(figures, names_of, out_dir)
    summary = {"baseline": base.name, "groups": group_statistics(groups),
               "differences": baseline_differences(groups, base), "runs": run_summaries(groups),
               "figures": figures}
    comparison = Comparison(runs=runs, groups=groups, baseline=base, figures=figures, summary=summary, elo=elo)
    text = "\n".join(line for section in sections for line in section(comparison))
    report = out_dir / "report.md"
    for path, content in ((out_dir / "summary.json", json.dumps(strict_json(summary), indent=1) + "\n"),
                          (report, text)):
        with atomic_write(path) as f:
            f.write(content)
    return report
