"""`shogitrain match` end to end: real engines, faulty fake engines, Ctrl-C, SPRT, records as training data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("cshogi")

from conftest import popen_interruptible  # noqa: E402
from play_helpers import FSF, GPSUSI, check_record, fake_engine, require_binary  # noqa: E402
from shogitrain.cli import main  # noqa: E402
from shogitrain.play.elo import pentanomial_elo, sprt_llr  # noqa: E402
from shogitrain.play.match import DEFAULT_OPENINGS  # noqa: E402
from shogitrain.play.results import pair_tally  # noqa: E402


def _match(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["match", *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def _check_all_records(out: Path, results: dict, max_moves: int = 320, evals: bool = True) -> None:
    names = {g["record"] for g in results["games"]}
    assert {f"games/{p.name}" for p in (out / "games").iterdir()} == names  # no partial or stray files
    for entry in results["games"]:
        check_record(out / entry["record"], entry, max_moves, evals=evals)


@pytest.fixture(scope="module")
def real_match(tmp_path_factory):
    """Fairy-Stockfish (500 nodes) against gpsusi (byoyomi 100 ms, depth 4), one game pair, both at once."""
    fsf, gps = require_binary(FSF, "fairy-stockfish"), require_binary(GPSUSI, "gpsshogi")
    out = tmp_path_factory.mktemp("match") / "fsf-gps"
    code, output = _match(f"usi:{fsf}", f"usi:{gps}", "--games", 2, "--nodes", 500, "--limit", "2:byoyomi=100",
                          "--option", "1:Threads=1", "--option", "2:LimitDepth=4", "--option", "2:Thread=1",
                          "--concurrency", 2, "--time-margin", 5000, "--seed", 3, "--out", out)
    assert code == 0, output
    return out, output


def test_real_engines_match(real_match):
    out, output = real_match
    results = _results(out)
    assert [e["name"] for e in results["engines"]] == ["Fairy-Stockfish_11.1", "gpsshogi_smp"]
    assert [e["limit"] for e in results["engines"]] == ["nodes=500", "byoyomi=100"]
    assert len(results["games"]) == 2 and results["stopped"] is None
    assert sorted(g["game"] for g in results["games"]) == [1, 2]
    # The opening twice, colours swapped, from the bundled floodgate file.
    by_pair = {}
    for g in results["games"]:
        by_pair.setdefault(g["pair"], []).append(g)
    assert all(len(v) == 2 and {v[0]["black"], v[1]["black"]} == {0, 1} for v in by_pair.values())
    assert all(len({g["opening_line"] for g in v}) == 1 for v in by_pair.values())
    assert results["openings"]["file"] == str(DEFAULT_OPENINGS) and results["openings"]["usable"] > 10000
    _check_all_records(out, results)
    pair = results["tally"]["pairs"][0]
    assert pair == {**pair_tally(results["games"], 0, 1), **pentanomial_elo(pair["pentanomial"])}
    assert sum(pair["pentanomial"]) == 1 and pair["wins"] + pair["draws"] + pair["losses"] == 2
    assert "Elo (A−B)" in output and "Fairy-Stockfish_11.1" in output
    text = next((out / "games").iterdir()).read_text()
    assert text.startswith("V2\nN+") and "\n$EVENT:shogitrain-match+" in text and "\n'** " in text


def test_match_records_are_training_data(real_match, tmp_path):
    """`prepare DIR/games` reads a match: every game kept (short games need --min-moves)."""
    from shogitrain.prepare import prepare
    from shogitrain.records.filters import ALL_ENDINGS, GameFilter

    out, _ = real_match
    report = prepare([out / "games"], tmp_path / "data", test_fraction=0.0, workers=1, progress=False,
                     game_filter=GameFilter(endings=ALL_ENDINGS, draws=True, min_moves=0))
    assert report["games_kept"] == 2 and report["positions"] > 0
    games = [json.loads(line) for line in (tmp_path / "data" / "games.jsonl").read_text().splitlines()]
    results = {g["record"].split("/")[-1]: g for g in _results(out)["games"]}
    for g in games:
        entry = results[Path(g["source"]).name]
        assert g["moves"] == entry["plies"]
        assert g["winner"] == (None if entry["score_black"] == 0.5 else int(entry["score_black"] == 0.0))


def test_faulty_engines_lose_are_restarted_and_the_match_goes_on(tmp_path):
    """Round robin of a crashing, a stalling and a garbage-sending engine with a sound one."""
    pids = {name: tmp_path / f"{name}.pids" for name in ("crasher", "staller")}
    engines = [fake_engine(tmp_path, mode="die", at=3, pidfile=pids["crasher"]),
               fake_engine(tmp_path, mode="stall", at=2, pidfile=pids["staller"]),
               fake_engine(tmp_path, mode="garbage", at=2), fake_engine(tmp_path, seed=9)]
    out = tmp_path / "m"
    code, output = _match(*engines, "--games", 2, "--nodes", 1, "--move-timeout", 1, "--max-moves", 40,
                          "--name", "1:crasher", "--name", "2:staller", "--name", "3:garbler", "--name", "4:sound",
                          "--out", out)
    assert code == 0, output
    results = _results(out)
    assert len(results["games"]) == 12  # 6 pairings × 2 games, all played
    reasons = {"crasher": "engine crashed (exit status 3): dying on purpose", "staller": "hung: no bestmove",
               "garbler": "illegal move '???'"}
    names = [e["name"] for e in results["engines"]]
    for g in results["games"]:
        faulty = [i for i in (g["black"], g["white"]) if names[i] in reasons]
        loser = g["black"] if g["score_black"] == 0.0 else g["white"]
        assert g["score_black"] != 0.5
        # the faulty engine that failed first loses, with its reason
        assert names[loser] in reasons and g["reason"].startswith(reasons[names[loser]]), g
        assert loser in faulty
    # A failed engine is started afresh for its next game: one process per failure here, since each
    # engine's last game is one it fails (the crasher crashes against the sound engine only).
    for name, reason in (("crasher", "engine crashed"), ("staller", "hung")):
        failures = sum(g["reason"].startswith(reason) for g in results["games"])
        assert len(set(pids[name].read_text().split())) == failures == {"crasher": 2, "staller": 5}[name]
    _check_all_records(out, results, max_moves=40, evals=False)
    ratings = {r["name"]: r["elo"] for r in results["tally"]["ratings"]["list"]}
    assert ratings["crasher"] == 0.0 and ratings["sound"] > 0.0  # the sound engine never loses
    assert "Bradley–Terry ratings" in output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_keeps_finished_games(tmp_path, signum):
    out = tmp_path / "m"
    pids = tmp_path / "pids"
    engines = [fake_engine(tmp_path, delay=0.01, pidfile=pids), fake_engine(tmp_path, delay=0.01, seed=4, pidfile=pids)]
    args = ["match", *engines, "--games", 400, "--nodes", 1, "--max-moves", 60, "--concurrency", 2, "--out", out]
    proc = popen_interruptible([sys.executable, "-m", "shogitrain", *map(str, args)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (out / "results.json").exists() and len(_results(out)["games"]) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)  # generous: a loaded machine stretches the wind-down
    assert proc.returncode == 130, (stderr, stdout[-3000:])
    assert "Traceback" not in stderr
    results = _results(out)
    assert results["stopped"] == "interrupted (Ctrl-C)" and 3 <= len(results["games"]) < 400
    _check_all_records(out, results, max_moves=60, evals=False)
    assert "Elo (A−B)" in stdout
    for pid in map(int, pids.read_text().split()):  # every engine process is gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_sprt_stops_the_match(tmp_path):
    """An engine that resigns every game against a sound one: H0 (Elo ≤ 0) is accepted early."""
    out = tmp_path / "m"
    code, output = _match(fake_engine(tmp_path, mode="resign"), fake_engine(tmp_path), "--games", 200,
                          "--nodes", 1, "--sprt", "0,100", "--out", out)
    assert code == 0, output
    results = _results(out)
    sprt = results["sprt"]
    assert sprt["decision"] == "H0" and results["stopped"] == "SPRT decided: H0"
    assert len(results["games"]) < 40
    penta = results["tally"]["pairs"][0]["pentanomial"]
    assert penta[1:] == [0, 0, 0, 0] and sprt["llr"] == pytest.approx(sprt_llr(penta, 0, 100))
    assert sprt["llr"] <= sprt["lower"] == pytest.approx(-2.944, abs=1e-3)
    assert "H0 accepted" in output


@pytest.mark.parametrize("args,message", [
    (["--games", 3, "--nodes", 1], "--games 3: give an even number"),
    (["--games", 2], "no search limit for engine 1, 2"),
    (["--games", 2, "--nodes", 1, "--byoyomi", 100], "give one of --nodes, --byoyomi, --time"),
    (["--games", 2, "--nodes", 1, "--option", "3:Noise=1"], "--option '3:Noise=1': expected ENGINE:NAME=VALUE"),
    (["--games", 2, "--nodes", 1, "--option", "1:Speed=1"], "did not start: no option 'Speed' (the engine declares: Noise)"),
    (["--games", 2, "--nodes", 1, "--limit", "2:depth=3"], "limit 'depth=3': expected nodes=N"),
    (["--games", 2, "--nodes", 1, "--sprt", "5,0"], "--sprt '5,0': expected ELO0,ELO1"),
])
def test_bad_options_are_one_line_errors(tmp_path, args, message):
    code, output = _match(fake_engine(tmp_path), fake_engine(tmp_path), *args, "--out", tmp_path / "m")
    assert code == 1 and message in output and "Traceback" not in output
    assert len(output.strip().splitlines()) == 1


def test_bad_engines_and_openings(tmp_path):
    code, output = _match(tmp_path / "missing.pt", fake_engine(tmp_path), "--games", 2, "--nodes", 1,
                          "--out", tmp_path / "m")
    assert code == 1 and "missing.pt: no such file" in output
    code, output = _match("usi:/nonexistent/engine", fake_engine(tmp_path), "--games", 2, "--nodes", 1,
                          "--out", tmp_path / "m")
    assert code == 1 and "engine 1 (usi:/nonexistent/engine) did not start: " in output and "cannot run" in output
    openings = tmp_path / "openings.sfen"
    openings.write_text("# two bad lines, one good\nstartpos moves 7g7e\nsfen nonsense\nstartpos moves 2g2f 8c8d\n")
    code, output = _match(fake_engine(tmp_path), fake_engine(tmp_path), "--games", 2, "--nodes", 1,
                          "--max-moves", 10, "--openings", openings, "--out", tmp_path / "m")
    assert code == 0, output
    results = _results(tmp_path / "m")
    assert results["openings"]["usable"] == 1 and results["openings"]["skipped_total"] == 2
    assert results["openings"]["skipped"][0] == f"{openings}:2: illegal move '7g7e'"
    assert all(g["opening_line"] == 4 for g in results["games"])
    code, output = _match(fake_engine(tmp_path), fake_engine(tmp_path), "--games", 2, "--nodes", 1,
                          "--out", tmp_path / "m")
    assert code == 1 and "already holds a match" in output
    openings.write_text("startpos moves 7g7e\n")
    code, output = _match(fake_engine(tmp_path), fake_engine(tmp_path), "--games", 2, "--nodes", 1,
                          "--openings", openings, "--out", tmp_path / "m2")
    assert code == 1 and "no usable opening line" in output


def test_compare_adds_the_elo_table(tmp_path):
    """`compare RUN… --match DIR` and a run's own match/ directory both add the Elo section."""
    import shutil

    from test_report import make_run

    out = tmp_path / "m"
    code, output = _match(fake_engine(tmp_path, seed=1), fake_engine(tmp_path, seed=2), fake_engine(tmp_path, seed=3),
                          "--games", 4, "--nodes", 1, "--max-moves", 24, "--name", "1:alpha", "--name", "2:beta",
                          "--name", "3:gamma", "--out", out)
    assert code == 0, output
    results = _results(out)
    make_run(tmp_path, "run-a", "a", 100.0, 1.0)
    make_run(tmp_path, "run-b", "b", 120.0, 1.1)
    shutil.copytree(out, tmp_path / "run-b" / "match")
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "run-a"), str(tmp_path / "run-b"),
                                       "--match", str(out), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "report" / "report.md").read_text()
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert report.count("\n## Elo\n") == 1 and report.count("| engine A | engine B |") == 2
    assert [e["dir"] for e in summary["elo"]] == [str(tmp_path / "run-b" / "match"), str(out)]
    pair = results["tally"]["pairs"][0]
    assert summary["elo"][1]["pairs"][0]["pentanomial"] == pair["pentanomial"]
    wdl = f"{pair['wins']}-{pair['draws']}-{pair['losses']}"
    assert f"| alpha | beta | 4 | {wdl} |" in report
    assert "Bradley–Terry ratings:" in report and "| 1 |" in report
    (out / "results.json").write_text("{")
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "run-a"), "--match", str(out),
                                       "--out", str(tmp_path / "report2")])
    assert result.exit_code == 1 and "results.json: not readable as JSON" in result.output


def test_without_cshogi_a_one_line_error(tmp_path, monkeypatch):
    import shogitrain.play.referee as referee

    monkeypatch.setattr(referee, "cshogi", None)
    code, output = _match(fake_engine(tmp_path), fake_engine(tmp_path), "--games", 2, "--nodes", 1,
                          "--out", tmp_path / "m")
    assert code == 1 and output.strip() == 'Error: playing needs cshogi: pip install "shogitrain[play]"'
    assert not (tmp_path / "m").exists()


@pytest.fixture(scope="module")
def tiny_nets(tmp_path_factory):
    """Two tiny nets, one as a checkpoint and one exported to ONNX: both kinds of net engine."""
    from play_nets import save_tiny_checkpoint

    from shogitrain.export import export_model

    d = tmp_path_factory.mktemp("nets")
    save_tiny_checkpoint(d / "tiny-a.pt", seed=0)
    save_tiny_checkpoint(d / "tiny-b.pt", seed=1)
    export_model(d / "tiny-b.pt", "onnx", d / "tiny-b.onnx")
    return d / "tiny-a.pt", d / "tiny-b.onnx"


def test_tiny_nets_and_fairy_stockfish(tiny_nets, tmp_path):
    """A round robin of `shogitrain usi` subprocesses for a checkpoint and an ONNX file (16 nodes a move)
    and Fairy-Stockfish at one node."""
    fsf = require_binary(FSF, "fairy-stockfish")
    checkpoint, onnx = tiny_nets
    out = tmp_path / "m"
    code, output = _match(checkpoint, onnx, f"usi:{fsf}", "--games", 2, "--nodes", 16, "--limit", "3:nodes=1",
                          "--option", "3:Threads=1", "--max-moves", 100, "--seed", 5, "--out", out)
    assert code == 0, output
    results = _results(out)
    assert [e["name"] for e in results["engines"]] == ["tiny-a", "tiny-b", "Fairy-Stockfish_11.1"]
    assert [e["id_name"].split()[0] for e in results["engines"]] == ["shogitrain", "shogitrain", "Fairy-Stockfish"]
    assert [e["limit"] for e in results["engines"]] == ["nodes=16", "nodes=16", "nodes=1"]
    assert len(results["games"]) == 6 and results["stopped"] is None
    assert not any(g["ending"] in ("abnormal", "time up", "illegal move") for g in results["games"])
    _check_all_records(out, results, max_moves=100)  # every engine prints `info … score`: evals in each record
    assert [p["games"] for p in results["tally"]["pairs"]] == [2, 2, 2]
    assert len(results["tally"]["ratings"]["list"]) == 3
