"""A match's numbers: tallies per engine pair and colour, pentanomial Elo, ratings; as text and markdown.

``tally(games, names)`` turns the list of finished games (``results.json``'s ``games``: who had
Black and White, the score for Black, the ending) into per-pair W/D/L (from the first engine's
side), the same split by colour, pentanomial counts over complete game pairs, Elo with its 95 %
interval, LOS, the draw ratio, and for three or more engines a Bradley–Terry rating list.
``format_table`` prints it; ``markdown_section`` is the "Elo" section ``shogitrain compare`` adds.
"""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations
from pathlib import Path

from shogitrain.play.elo import bradley_terry, pentanomial_elo

RESULTS_FILE = "results.json"


class ResultsError(Exception):
    """A match directory without readable results (one-line message)."""


def _wdl() -> dict:
    return {"wins": 0, "draws": 0, "losses": 0}


def _add(wdl: dict, score: float) -> None:
    wdl["wins" if score == 1.0 else "losses" if score == 0.0 else "draws"] += 1


def pair_tally(games: list[dict], a: int, b: int) -> dict:
    """Engine ``a`` against ``b`` (0-based indices), everything from ``a``'s side."""
    mine = [g for g in games if {g["black"], g["white"]} == {a, b}]
    total, colour = _wdl(), {"black": _wdl(), "white": _wdl()}
    by_pair: dict[int, list[float]] = {}
    for g in mine:
        score = g["score_black"] if g["black"] == a else 1.0 - g["score_black"]
        _add(total, score)
        _add(colour["black" if g["black"] == a else "white"], score)
        by_pair.setdefault(g["pair"], []).append(score)
    penta = [0] * 5
    for scores in by_pair.values():
        if len(scores) == 2:
            penta[int(round(2 * sum(scores)))] += 1
    n = len(mine)
    out = {"engines": [a, b], "games": n, **total, "as_black": colour["black"], "as_white": colour["white"],
           "pentanomial": penta, "unpaired_games": n - 2 * sum(penta),
           "draw_ratio": total["draws"] / n if n else None}
    out.update(pentanomial_elo(penta))
    return out


def tally(games: list[dict], names: list[str]) -> dict:
    pairs = [pair_tally(games, a, b) for a, b in combinations(range(len(names)), 2)]
    out = {"games": len(games), "pairs": pairs, "endings": dict(Counter(g["ending"] for g in games)),
           "ratings": None}
    played = [(p["engines"][0], p["engines"][1], p["wins"] + 0.5 * p["draws"], p["games"])
              for p in pairs if p["games"]]
    if len(names) >= 3 and _connected(len(names), played):
        bt = bradley_terry(len(names), played, anchor=0)
        out["ratings"] = {"anchor": 0, "prior": bt["prior"],
                          "list": [{"engine": k, "name": names[k], "elo": bt["ratings"][k], "low": bt["low"][k],
                                    "high": bt["high"][k]} for k in range(len(names))]}
    return out


def _connected(n: int, played: list[tuple]) -> bool:
    """Whether the games played so far link every engine to every other (else no common scale yet)."""
    reached, frontier = {0}, [0]
    while frontier:
        k = frontier.pop()
        for i, j, _, _ in played:
            for a, b in ((i, j), (j, i)):
                if a == k and b not in reached:
                    reached.add(b)
                    frontier.append(b)
    return len(reached) == n


# ---------------------------------------------------------------------------------------------- rendering


def _num(x, fmt: str = "{:+.1f}") -> str:
    return "—" if x is None else fmt.format(x + 0.0)  # + 0.0: no "-0.0"


def pair_rows(results: dict) -> list[list[str]]:
    """Header and one row per engine pair (shared by the printed table and the markdown)."""
    names = [e["name"] for e in results["engines"]]
    rows = [["engine A", "engine B", "games", "A: W-D-L", "A as black", "A as white", "pairs 0-¼-½-¾-1",
             "Elo (A−B)", "95% interval", "LOS", "draws"]]
    for p in results["tally"]["pairs"]:
        a, b = p["engines"]
        wdl = "{wins}-{draws}-{losses}"
        interval = "—"  # every pair scored the same: no spread, no interval
        if p["stderr"] is not None:  # an end beyond a score of 0 or 1 is an infinite Elo
            interval = f"[{_num(p['elo_low']) if p['elo_low'] is not None else '-∞'}, " \
                       f"{_num(p['elo_high']) if p['elo_high'] is not None else '+∞'}]"
        rows.append([names[a], names[b], str(p["games"]), wdl.format(**p), wdl.format(**p["as_black"]),
                     wdl.format(**p["as_white"]), "-".join(map(str, p["pentanomial"])), _num(p["elo"]),
                     interval, _num(p["los"], "{:.1%}"), _num(p["draw_ratio"], "{:.1%}")])
    return rows


def rating_rows(results: dict) -> list[list[str]]:
    ratings = results["tally"].get("ratings")
    if not ratings:
        return []
    rows = [["rank", "engine", "Elo", "95% interval"]]
    ordered = sorted(ratings["list"], key=lambda r: -r["elo"])
    for rank, r in enumerate(ordered, 1):
        rows.append([str(rank), r["name"], _num(r["elo"]), f"[{_num(r['low'])}, {_num(r['high'])}]"])
    return rows


def _sprt_line(results: dict) -> str | None:
    s = results.get("sprt")
    if not s:
        return None
    decision = {"H1": f"H1 accepted (Elo ≥ {s['elo1']:g})", "H0": f"H0 accepted (Elo ≤ {s['elo0']:g})",
                None: "no decision yet"}[s["decision"]]
    return (f"SPRT [{s['elo0']:g}, {s['elo1']:g}] α={s['alpha']:g} β={s['beta']:g}: LLR {s['llr']:.2f} "
            f"(bounds {s['lower']:.2f}, {s['upper']:.2f}): {decision}")


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def format_table(results: dict) -> str:
    t = results["tally"]
    lines = [f"{t['games']} games; endings: " + (", ".join(f"{k} {v}" for k, v in sorted(t["endings"].items()))
                                                 or "none")]
    lines += _aligned(pair_rows(results))
    if rating_rows(results):
        anchor = results["engines"][t["ratings"]["anchor"]]["name"]
        lines += ["", f"Bradley–Terry ratings ({anchor} = 0" + (", with one virtual draw per pairing)"
                                                                  if t["ratings"]["prior"] else ")")]
        lines += _aligned(rating_rows(results))
    for extra in (_sprt_line(results), results.get("stopped") and f"stopped: {results['stopped']}"):
        if extra:
            lines.append(extra)
    return "\n".join(lines)


def _markdown(rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join(["---"] * len(rows[0])) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows[1:]]


def load_results(match_dir: Path) -> dict:
    path = Path(match_dir) / RESULTS_FILE
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(f"{match_dir}: no {RESULTS_FILE} (not a match directory)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ResultsError(f"{path}: not readable as JSON ({e})") from None
    if not isinstance(results, dict) or "tally" not in results or "engines" not in results:
        raise ResultsError(f"{path}: not a shogitrain match result (no 'tally' / 'engines')")
    return results


def match_dirs_of(run_dirs, match_dirs=()) -> list[Path]:
    """``RUN_DIR/match`` for the runs that hold match results, then the explicit match directories."""
    found = [Path(d) / "match" for d in run_dirs if (Path(d) / "match" / RESULTS_FILE).is_file()]
    return found + [Path(d) for d in match_dirs]


def markdown_section(match_dirs: list[Path]) -> tuple[str, list[dict]]:
    """The "Elo" section of compare's report.md and the summary.json entries, one per match directory."""
    lines = ["## Elo", "", "Engine matches (`shogitrain match`): Elo difference of engine A over B from "
             "colour-swapped game pairs (pentanomial model), 95 % interval, likelihood of superiority.", ""]
    entries = []
    for d in match_dirs:
        results = load_results(d)
        lines += [f"### {d}", "", f"{results['tally']['games']} games, limits: "
                  + ", ".join(f"{e['name']} {e['limit']}" for e in results["engines"]) + ".", ""]
        lines += _markdown(pair_rows(results))
        if rating_rows(results):
            lines += ["", "Bradley–Terry ratings:", ""] + _markdown(rating_rows(results))
        if _sprt_line(results):
            lines += ["", _sprt_line(results)]
        lines.append("")
        entries.append({"dir": str(d), "engines": results["engines"], "pairs": results["tally"]["pairs"],
                        "ratings": results["tally"]["ratings"], "sprt": results.get("sprt")})
    return "\n".join(lines), entries
