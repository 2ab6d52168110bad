"""The figures of `compare`: what each plots (per run and per group of seeds) and how it is drawn.

Each group (runs that differ only in seed, see shogitrain/groups.py) is one line: the mean over its
seeds at the steps every seed logged, with a band — the 95 % t-interval from 3 seeds on, the
min–max range for 2 seeds, none for 1. A group keeps one colour (Okabe–Ito, safe for colour-blind
readers), one line style and one marker in every figure, so the lines stay apart in greyscale
print; figures with two metrics draw them in two panels rather than by line style.

matplotlib is an optional dependency (``shogitrain[plot]``); it is used through its object API
with the Agg canvas, so no global pyplot state or display is touched.
"""

from __future__ import annotations

import math
from pathlib import Path

from shogitrain.stats import mean_interval

INSTALL_HINT = "install it with: pip install 'shogitrain[plot]'  (or: pip install matplotlib)"

# Okabe & Ito's colour-blind-safe palette, yellow last (weak on white).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
MARKERS_PER_LINE = 8

_TEST = "test curve"  # placeholder split: the test_sample rows if every run has them, else the test rows
FIGURES = {
    "training_loss": {"title": "Training loss", "ylabel": "loss (train, mean over the log interval)",
                      "panels": [("loss", "train")]},
    "test_policy_loss": {"title": "Test policy loss", "ylabel": "policy loss (plain cross-entropy, on {splits})",
                         "panels": [("policy_loss", _TEST)]},
    "test_value_loss": {"title": "Test value loss", "ylabel": "value loss on {splits}",
                        "panels": [("result_loss", _TEST), ("eval_loss", _TEST)]},
    "test_accuracy": {"title": "Test accuracy", "ylabel": "accuracy on {splits}",
                      "panels": [("policy_accuracy", _TEST), ("value_accuracy", _TEST)]},
    # Drawn only when some run logged it (NF nets with scalar skip gains).
    "skip_gains": {"title": "|skip_gain| of the residual blocks", "ylabel": "|skip_gain| (train rows, log scale)",
                   "panels": [("skip_gain_abs_max", "train"), ("skip_gain_abs_mean", "train")],
                   "log_scale": True, "optional": True},
}

SPLIT_DESCRIPTIONS = {
    "train": "train",
    "test_sample": "test_sample (random test batch every eval_interval steps)",
    "test": "test (full test pass each epoch)",
}
BAND_DESCRIPTIONS = {"t": "95% t-interval over seeds", "min-max": "min–max over seeds", "single": "one seed"}


class FigureError(Exception):
    """matplotlib is missing (one-line message with the install hint)."""


def series(rows: list[dict], metric: str) -> list[list]:
    """``[[step, value], ...]`` for the rows that logged ``metric`` (in logged order; NaN/inf kept as None)."""
    points = []
    for row in rows:
        value = row.get(metric)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        points.append([row["step"], value if math.isfinite(value) else None])
    return points


def _split_of(runs, split: str) -> str | None:
    """The split a group of runs is drawn from: ``split`` itself, or for the test curve the
    ``test_sample`` rows if every run has them, else the full ``test`` passes."""
    if split != _TEST:
        return split
    for candidate in ("test_sample", "test"):
        if all(run.rows_of(candidate) for run in runs):
            return candidate
    return None


def group_band(runs, metric: str, split: str) -> dict | None:
    """Mean and band of ``metric`` over the runs (seeds) at every step all of them logged a finite value."""
    per_run = [{step: value for step, value in series(run.rows_of(split), metric) if value is not None}
               for run in runs]
    steps = sorted(set.intersection(*(set(points) for points in per_run)))
    if not steps:
        return None
    points, kind = [], None
    for step in steps:
        interval = mean_interval([points_of_run[step] for points_of_run in per_run])
        kind = interval.kind
        points.append([step, interval.mean, interval.low, interval.high])
    return {"metric": metric, "split": split, "n": len(runs), "band": kind, "points": points}


def figure_data(groups) -> dict:
    """Per figure: every run's logged series (``series``) and every group's mean and band (``bands``)."""
    figures = {}
    for key, spec in FIGURES.items():
        lines, bands = [], []
        for group in groups:
            for metric, wanted in spec["panels"]:
                split = _split_of(group.runs, wanted)
                if split is None:
                    continue
                for run in group.runs:
                    points = series(run.rows_of(split), metric)
                    if points:
                        lines.append({"run": run.name, "seed": run.seed, "group": group.name, "metric": metric,
                                      "split": split, "points": points})
                band = group_band(group.runs, metric, split)
                if band is not None:
                    bands.append({"group": group.name, **band})
        if spec.get("optional") and not bands:
            continue
        splits = sorted({band["split"] for band in bands}, key=list(SPLIT_DESCRIPTIONS).index)
        figures[key] = {
            "file": f"{key}.png", "title": spec["title"],
            "ylabel": spec["ylabel"].format(splits=" / ".join(splits) or "test"),
            "panels": [metric for metric, _ in spec["panels"]], "splits": splits,
            "series": lines, "bands": bands,
        }
    return figures


def import_matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise FigureError(f"compare needs matplotlib to draw figures ({e}); {INSTALL_HINT}") from None
    return Figure, FigureCanvasAgg


def group_label(name: str, n: int, band: str | None) -> str:
    if n == 1:
        return name
    return f"{name} (mean of {n} seeds, band: {BAND_DESCRIPTIONS[band]})"


def _draw_band(ax, index: int, band: dict, label: str) -> None:
    steps = [p[0] for p in band["points"]]
    colour = PALETTE[index % len(PALETTE)]
    every = max(1, len(steps) // MARKERS_PER_LINE)
    ax.plot(steps, [p[1] for p in band["points"]], color=colour, linestyle=LINE_STYLES[index % len(LINE_STYLES)],
            marker=MARKERS[index % len(MARKERS)], markevery=(index % every, every), markersize=5,
            linewidth=1.4, label=label)
    if band["band"] != "single":
        ax.fill_between(steps, [p[2] for p in band["points"]], [p[3] for p in band["points"]],
                        color=colour, alpha=0.18, linewidth=0)


def draw_figures(figures: dict, group_names: list[str], out_dir: Path) -> None:
    """One PNG per figure, one panel per metric; a group keeps its colour, line style and marker throughout."""
    Figure, FigureCanvasAgg = import_matplotlib()
    index_of = {name: i for i, name in enumerate(group_names)}
    for key, spec in figures.items():
        panels = spec["panels"]
        fig = Figure(figsize=(7.0 if len(panels) == 1 else 11.0, 4.8), dpi=100)
        FigureCanvasAgg(fig)
        mixed_splits = len(spec["splits"]) > 1
        for p, metric in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), p + 1)
            bands = [b for b in spec["bands"] if b["metric"] == metric]
            for band in bands:
                label = group_label(band["group"], band["n"], band["band"])
                _draw_band(ax, index_of[band["group"]], band, label + (f" [{band['split']}]" if mixed_splits else ""))
            ax.set_title(metric if len(panels) > 1 else spec["title"], fontsize=10)
            ax.set_xlabel("step (iterations)")
            ax.grid(True, alpha=0.3)
            if FIGURES[key].get("log_scale") and bands:
                ax.set_yscale("log")
            if p == 0:
                ax.set_ylabel(spec["ylabel"], fontsize=8)
            if bands:
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, "no rows logged for this figure", ha="center", va="center", transform=ax.transAxes)
        if len(panels) > 1:
            fig.suptitle(spec["title"])
        fig.tight_layout()
        fig.savefig(out_dir / spec["file"])
