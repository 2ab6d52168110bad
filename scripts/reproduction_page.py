"""Write docs/reproduction.md from what `make reproduce` produced.

Every number on the page is read from the experiment's files — the dataset's manifest, the runs'
run.json and metrics.jsonl, `shogitrain compare`'s summary.json and the round robin's results.json
— and every conclusion is stated only as far as its interval supports it:

    python scripts/reproduction_page.py REPRO_DIR docs/reproduction.md
"""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from shogitrain.stats import mean_interval, paired_difference  # noqa: E402

VARIANTS = {
    "bn": "dlshogi's BN ResNet, global-norm clipping at 10 (configs/blog-bn.yaml)",
    "nf-blog": "the published 2021 NF code: its residual branch is the linear map conv2(x); AGC on stem and "
               "blocks (configs/blog-nf-faithful.yaml)",
    "nf": "a correct NF-ResNet; AGC without the heads' final layers (configs/blog-nf.yaml)",
    "nf-skip1": "`nf` with its skip gains starting at 1 instead of 0",
}
METRICS = ("loss", "policy_loss", "result_loss", "eval_loss", "policy_accuracy", "value_accuracy")
LOWER_IS_BETTER = {"loss", "policy_loss", "result_loss", "eval_loss"}


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def rows_of(run_dir: Path) -> list[dict]:
    rows = []
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a torn last line
    return rows


def interval_text(iv: dict | None, digits: int = 4) -> str:
    if iv is None:
        return "—"
    if iv["kind"] == "t":
        return f"{iv['mean']:.{digits}f} ± {iv['half_width']:.{digits}f}"
    if iv["kind"] == "min-max":
        return f"{iv['mean']:.{digits}f} [{iv['low']:.{digits}f}, {iv['high']:.{digits}f}]"
    return f"{iv['mean']:.{digits}f}"


def verdict(metric: str, d: dict) -> str:
    """What a paired difference supports, in words."""
    if not d["resolved"]:
        return f"not resolved ({d['mean']:+.4f}, 95% CI [{d['low']:+.4f}, {d['high']:+.4f}], p = {d['p']:.2g})"
    better = (d["mean"] < 0) == (metric in LOWER_IS_BETTER)
    return (f"{'better' if better else 'worse'} by {abs(d['mean']):.4f} (95% CI [{d['low']:+.4f}, "
            f"{d['high']:+.4f}], p = {d['p']:.2g})")


def setup_lines(repro: Path, summary: dict) -> list[str]:
    manifest = read_json(repro / "dataset" / "manifest.json")
    train, test = manifest["splits"]["train"], manifest["splits"]["test"]
    first = Path(summary["runs"][0]["dir"])
    info, steps = read_json(first / "run.json"), summary["runs"][0]["finished_step"]
    cfg = yaml.safe_load((first / "config.yaml").read_text(encoding="utf-8"))
    model, tr = cfg["model"], cfg["train"]
    env = info["environment"]
    match = read_json(repro / "match" / "results.json")
    params = {g["name"]: read_json(Path(g["dirs"][0]) / "run.json")["parameters"] for g in summary["groups"]}
    seeds = sorted({s for g in summary["groups"] for s in g["seeds"]})
    return [
        "## Setup", "",
        f"- Data: {train['positions']:,} training positions from {train['games']:,} games (the bundled "
        "Fairy-Stockfish self-play games, `data/selfplay`, minus a 5 % hold-out by game); test: "
        f"{test['positions']:,} positions from {test['games']} games (the bundled floodgate games whole, "
        "plus the hold-out).",
        "- Variants: " + "; ".join(f"**{name}** — {text}" for name, text in VARIANTS.items()) + ".",
        f"- Networks: {model['blocks']} residual blocks × {model['channels']} channels, value FC "
        f"{model['fc_units']}, {model['activation']} — the note's 10 × 192 nets scaled "
        "down so that the NF nets' zero-initialised skip gains have the steps to open; parameters: "
        + ", ".join(f"{name} {n:,}" for name, n in params.items()) + ".",
        f"- Training: the note's optimizer (Nesterov SGD, momentum 0.9, lr 0.1, weight decay 1e-4) at batch "
        f"{tr['batch_size']} for {steps:,} steps ({steps * tr['batch_size'] / train['positions']:.1f} epochs), "
        f"fp32 on CPU; seeds "
        f"{', '.join(map(str, seeds))} for every variant (a seed fixes the initialisation and the data order, "
        f"so runs with the same seed are paired). Test metrics every {tr['eval_interval']} steps on "
        f"{tr['eval_sample']} random test positions; a full test pass at each epoch end.",
        f"- Machine: {env['platform']}, torch {env['torch']}, one thread per run, two runs at a time on two "
        "shared cores; git "
        + (f"`{info['git']['commit'][:10]}`" if info["git"].get("commit") else "n/a") + ".",
        "", "```sh", "make reproduce      # what it runs:",
        "shogitrain prepare data/selfplay --test-data data/floodgate --test-fraction 0.05 --out reproduction/dataset",
        "shogitrain sweep configs/experiments/blog-2021-cpu.yaml --parallel 2          # resumable",
        f"shogitrain match reproduction/runs/*/seed-*/checkpoint.pt --games {match['games_planned'] // len(match['tally']['pairs'])} "
        f"--{match['engines'][0]['limit'].replace('=', ' ')} --concurrency 2 --out reproduction/match",
        "shogitrain compare reproduction/runs --baseline bn --match reproduction/match --out docs/reproduction",
        "```", "",
    ]


def skip_gain_lines(summary: dict) -> list[str]:
    lines = ["## Did the NF skip gains open?", "",
             "The NF nets' blocks start as the identity (skip gains at 0) and AGC lets a gain grow by at most "
             "about 1 % a step; the earlier 500-step runs ended with every |skip_gain| below 6.5e-4, so their "
             "residual branches had barely started to contribute. Largest and mean |skip_gain| over the "
             "blocks at the end of each run:", "", "| run | largest | mean |", "|---|---:|---:|"]
    for g in summary["groups"]:
        for d in g["dirs"]:
            last = [r for r in rows_of(Path(d)) if r.get("split") == "train" and "skip_gain_abs_max" in r]
            if last:
                r = last[-1]
                lines.append(f"| {g['name']} {Path(d).name} | {r['skip_gain_abs_max']:.3f} | "
                             f"{r['skip_gain_abs_mean']:.3f} |")
    return lines + ["", "![skip gains](reproduction/skip_gains.png)", ""]


def elo_by_variant(repro: Path, groups: list[str]) -> tuple[dict, list[str]]:
    """Per variant, the Bradley–Terry ratings of its nets by seed, from the round robin."""
    results = read_json(repro / "match" / "results.json")
    ratings = {r["name"]: r for r in results["tally"]["ratings"]["list"]}
    by_variant = {g: {int(name.rsplit("-", 1)[1]): r["elo"] for name, r in ratings.items()
                      if name.rsplit("-seed-", 1)[0] == g} for g in groups}
    anchor = results["engines"][results["tally"]["ratings"]["anchor"]]["name"]
    lines = [f"Round robin of the {len(ratings)} final nets: {results['tally']['games']} games "
             f"({results['games_planned'] // max(len(results['tally']['pairs']), 1)} a pair, colour-swapped, from the "
             f"bundled floodgate openings), {results['engines'][0]['limit']} a move; Bradley–Terry ratings with "
             f"{anchor} at 0 (results.json has every game, and the records are in reproduction/match/games).", ""]
    return by_variant, lines


def strength_lines(repro: Path, summary: dict) -> list[str]:
    groups = [g["name"] for g in summary["groups"]]
    by_variant, lines = elo_by_variant(repro, groups)
    lines = ["## Playing strength", ""] + lines
    lines += ["| variant | Elo by seed | mean over seeds (95% interval) |", "|---|---|---|"]
    for g in groups:
        seeds = by_variant[g]
        iv = mean_interval(list(seeds.values())).as_dict() if seeds else None
        lines.append(f"| {g} | " + ", ".join(f"{s}: {e:+.0f}" for s, e in sorted(seeds.items())) + " | "
                     + interval_text(iv, 0) + " |")
    lines += ["", "Paired by seed against bn (each seed's rating minus bn's with the same seed; t-test over the "
              "seeds):", ""]
    base = by_variant.get("bn", {})
    for g in groups:
        if g == "bn":
            continue
        common = sorted(set(base) & set(by_variant[g]))
        if len(common) < 2:
            continue
        d = paired_difference([by_variant[g][s] for s in common], [base[s] for s in common]).as_dict()
        word = (f"{'stronger' if d['mean'] > 0 else 'weaker'} by {abs(d['mean']):.0f} Elo" if d["resolved"]
                else "not resolved")
        lines.append(f"- {g} − bn: {d['mean']:+.0f} Elo, 95% CI [{d['low']:+.0f}, {d['high']:+.0f}], "
                     f"p = {d['p']:.2g}: **{word}**.")
    return lines + [""]


def write_page(repro: Path, out: Path) -> None:
    docs = out.parent / "reproduction"
    summary = read_json(docs / "summary.json")
    differences = summary["differences"]
    lines = ["# Reproducing the 2021 BN-vs-NF comparison", "",
             "Generated by `make reproduce` (this page by `scripts/reproduction_page.py`; every number is read "
             "from the experiment's files). The 2021 note ([experiment-2021.md](experiment-2021.md)) found that "
             "the BN net trained faster and reached a lower test loss, that NF took 90.2 % of BN's time, and "
             "concluded that NFNets brought no benefit for shogi — from one run of each, whose NF code had "
             "linear residual branches. Here every variant is trained with three seeds, the published code "
             "(`nf-blog`) is set beside a correct NF-ResNet, and the nets also play each other.", ""]
    lines += setup_lines(repro, summary)
    lines += ["## Figures", "",
              "Means over the three seeds with 95 % t-interval bands ([the compare report](reproduction/report.md) "
              "has the per-figure notes).", "",
              "![training loss](reproduction/training_loss.png)",
              "![test policy loss](reproduction/test_policy_loss.png)",
              "![test value loss](reproduction/test_value_loss.png)",
              "![test accuracy](reproduction/test_accuracy.png)", ""]
    lines += ["## Final test metrics", "",
              "The last full test pass of each run; mean ± 95 % t-interval half-width over the three seeds.", "",
              "| variant | " + " | ".join(METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
    for g in summary["groups"]:
        lines.append(f"| {g['name']} | " + " | ".join(interval_text(g["final"][m]) for m in METRICS) + " |")
    lines += ["", "Against bn, paired by seed (group − bn; the t-test over the seeds):", ""]
    for g in summary["groups"]:
        if g["name"] == summary["baseline"]:
            continue
        rows = {d["metric"]: d for d in differences if d["group"] == g["name"]}
        lines.append(f"- **{g['name']}**: " + "; ".join(f"{m} {verdict(m, rows[m])}" for m in METRICS if m in rows)
                     + ".")
    lines += [""] + skip_gain_lines(summary) + strength_lines(repro, summary)
    lines += time_lines(repro, summary)
    lines += ["## What this supports", ""] + conclusions(summary) + [""]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


def time_lines(repro: Path, summary: dict) -> list[str]:
    base = next(g for g in summary["groups"] if g["name"] == summary["baseline"])["wall_clock_s"]["mean"]
    training = sum(sum(g["wall_clock_s"]["values"]) for g in summary["groups"])
    lines = ["## Training time", "",
             "Wall-clock training time per run (evaluations excluded), mean over seeds, as a share of bn's. Two "
             "runs shared two busy cores, so these times carry the machine's load; docs/benchmarks.md has "
             "step times measured side by side.", "", "| variant | mean | % of bn |", "|---|---:|---:|"]
    for g in summary["groups"]:
        mean = g["wall_clock_s"]["mean"]
        lines.append(f"| {g['name']} | {mean / 60:.1f} min | {100 * mean / base:.1f} % |")
    lines += ["", f"In all, {training / 3600:.2f} h of training, about {training / 7200:.2f} h with two runs at a "
                  "time (the sweep ran in parts, so its elapsed time is not one figure)."]
    match = read_json(repro / "match" / "results.json")
    if match and match.get("started") and match.get("written"):
        took = datetime.fromisoformat(match["written"]) - datetime.fromisoformat(match["started"])
        lines[-1] += f" The round robin took {took.total_seconds() / 60:.0f} min."
    return lines + [""]


def conclusions(summary: dict) -> list[str]:
    """One sentence per variant from the paired test-loss difference: only what its interval supports."""
    out = []
    by_group = {}
    for d in summary["differences"]:
        by_group.setdefault(d["group"], {})[d["metric"]] = d
    for group, rows in by_group.items():
        d = rows.get("loss")
        if d is None or d["p"] is None or math.isnan(d["p"]):
            continue
        if d["resolved"]:
            side = "lower" if d["mean"] < 0 else "higher"
            out.append(f"- {group}'s final test loss is {side} than bn's by {abs(d['mean']):.4f} (95 % CI "
                       f"[{d['low']:+.4f}, {d['high']:+.4f}] over paired seeds).")
        else:
            out.append(f"- {group} and bn cannot be told apart by final test loss with three seeds "
                       f"(difference {d['mean']:+.4f}, 95 % CI [{d['low']:+.4f}, {d['high']:+.4f}]).")
    out.append("- These are small nets trained on a CPU on the bundled 129k-position sample (the setup above), not "
               "the note's 10 × 192 nets on 31.6M positions: the page answers the question at this scale only. "
               "The GPU version of the experiment is configs/experiments/blog-2021-gpu.yaml.")
    return out


if __name__ == "__main__":
    write_page(Path(sys.argv[1]), Path(sys.argv[2]))
