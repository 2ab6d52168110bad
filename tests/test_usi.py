"""`shogitrain usi` as a GUI or match tool sees it: started by path (the wrapper script) and driven
by cshogi's own USI client, ``cshogi.usi.Engine``."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

cshogi = pytest.importorskip("cshogi")
from cshogi.usi import Engine, InfoListener  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from play_nets import save_tiny_checkpoint  # noqa: E402
from shogitrain.cli import main  # noqa: E402
from shogitrain.features import features_from_sfens, move_label  # noqa: E402
from shogitrain.play.usi import start_engine  # noqa: E402

OPENING = "7g7f 3c3d 2g2f 8c8d 2f2e 8d8e 6i7h 4a3b".split()
FAST = [("DNN_Batch_Size", "16"), ("PV_Interval", "0"), ("Byoyomi_Margin", "50"), ("Threads", "1"),
        ("C_init", "150")]


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """(checkpoint path, the model, ONNX path) of a tiny net."""
    from shogitrain.export import export_model

    d = tmp_path_factory.mktemp("nets")
    model = save_tiny_checkpoint(d / "tiny.pt")
    export_model(d / "tiny.pt", "onnx", d / "tiny.onnx")
    return d / "tiny.pt", model, d / "tiny.onnx"


def engine_script(tmp_path, model, *settings) -> str:
    return start_engine([("DNN_Model", str(model)), *FAST, *settings], wrapper=str(tmp_path / "engine.sh"))


@pytest.fixture(scope="module")
def shared_engine(nets, tmp_path_factory):
    """One engine process for most tests (starting one costs seconds)."""
    e = Engine(engine_script(tmp_path_factory.mktemp("engine"), nets[0]))
    messages = []
    e.isready(listener=messages.append)
    e.load_messages = messages
    yield e
    e.quit()


@pytest.fixture
def engine(shared_engine):
    shared_engine.usinewgame()
    return shared_engine


def send(e: Engine, line: str) -> None:
    e.proc.stdin.write(line.encode() + b"\n")
    e.proc.stdin.flush()


def read_until(e: Engine, prefix: str, timeout: float = 20.0) -> list[str]:
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = e.proc.stdout.readline().decode().strip()
        lines.append(line)
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"no {prefix!r} within {timeout} s: {lines[-5:]}")


def is_legal(sfen_moves: list[str], move: str) -> bool:
    board = cshogi.Board()
    for m in sfen_moves:
        board.push_usi(m)
    return board.move_from_usi(move) in board.legal_moves


def test_handshake_and_options(engine, nets):
    assert engine.name.startswith("shogitrain")
    lines = engine.usi()
    options = {line.split()[2]: line for line in lines if line.startswith("option name")}
    for name in ("DNN_Model", "Device", "DNN_Batch_Size", "Const_Playout", "C_init", "C_base", "Mode",
                 "Softmax_Temperature", "Policy_Temperature", "Resign_Threshold", "Byoyomi_Margin", "USI_Ponder"):
        assert name in options
    assert "type spin default 150 min 0 max 500" in options["C_init"]        # the command line's value
    assert str(nets[0]) in options["DNN_Model"]
    assert any("loaded checkpoint tiny.pt" in m for m in engine.load_messages)


def test_a_game_of_legal_moves_with_full_info_lines(engine):
    moves = []
    for ply in range(16):
        engine.position(moves)
        listener = InfoListener()
        best, ponder = engine.go(nodes=64, listener=listener.listen())
        assert is_legal(moves, best), (moves, best)
        info = listener.info
        assert info["pv"][0] == best
        assert {"depth", "seldepth", "nodes", "nps", "time", "score"} <= set(info)
        assert info["score"] == "cp" or info["score"] == "mate"
        assert 1 <= info["nodes"] <= 64
        assert info["depth"] == len(info["pv"])
        if ponder:
            assert info["pv"][1] == ponder and is_legal(moves + [best], ponder)
        moves.append(best)


def test_go_nodes_is_respected_and_the_tree_reused(engine):
    engine.position(OPENING)
    listener = InfoListener()
    engine.go(nodes=100, listener=listener.listen())
    assert listener.info["nodes"] == 100
    engine.go(nodes=37, listener=listener.listen())       # same position: the tree is kept
    assert listener.info["nodes"] == 37


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (Linux /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the net's process through /proc")
def test_a_net_process_plays_and_is_loaded_again_after_it_dies(nets, tmp_path):
    """Net_Process: the net scores one batch in its own process while the search selects the next;
    when that process dies the move is resigned with the reason, and isready loads the net again."""
    import os
    import signal

    e = Engine(engine_script(tmp_path, nets[0], ("Net_Process", "true")))
    try:
        loaded = []
        e.isready(listener=loaded.append)
        assert any("in its own process" in line for line in loaded), loaded
        moves = []
        for _ in range(4):
            e.position(moves)
            listener = InfoListener()
            best, _ = e.go(nodes=64, listener=listener.listen())
            assert is_legal(moves, best) and listener.info["nodes"] == 64, (moves, best, listener.info)
            moves.append(best)
        nets_processes = [p for p in descendants(e.proc.pid)
                          if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(nets_processes) == 1, nets_processes
        os.kill(nets_processes[0], signal.SIGKILL)
        said = []
        e.position(moves)
        assert e.go(nodes=64, listener=said.append)[0] == "resign"
        assert any("the net's process ended" in line for line in said), said
        loaded = []
        e.isready(listener=loaded.append)
        assert any("in its own process" in line for line in loaded), loaded
        e.position(OPENING)
        assert is_legal(OPENING, e.go(byoyomi=200)[0])
    finally:
        e.quit()


def test_byoyomi_and_sudden_death_answer_in_time(engine):
    engine.position(OPENING)
    start = time.monotonic()
    best, _ = engine.go(byoyomi=300)
    spent = time.monotonic() - start
    # it thinks (the byoyomi is used) and answers; the bound is a hang guard, loose for loaded machines
    assert is_legal(OPENING, best) and 0.1 < spent < 10.0
    start = time.monotonic()
    best, _ = engine.go(btime=2000, wtime=2000, binc=100, winc=100)
    assert is_legal(OPENING, best) and time.monotonic() - start < 10.0


def test_stop_ends_an_infinite_search(engine):
    engine.position(OPENING)
    send(engine, "go infinite")
    time.sleep(0.5)
    send(engine, "stop")
    lines = read_until(engine, "bestmove")
    assert is_legal(OPENING, lines[-1].split()[1])
    assert any(line.startswith("info") and " pv " in line for line in lines)


def test_ponder_then_ponderhit_and_ponder_then_stop(engine):
    engine.position(OPENING)
    result = {}
    thread = threading.Thread(target=lambda: result.update(move=engine.go(ponder=True, byoyomi=300)))
    thread.start()
    time.sleep(0.6)
    assert thread.is_alive(), "bestmove came before ponderhit"
    engine.ponderhit()
    thread.join(5.0)
    assert not thread.is_alive() and is_legal(OPENING, result["move"][0])
    send(engine, "go ponder byoyomi 300")
    time.sleep(0.3)
    send(engine, "stop")
    assert is_legal(OPENING, read_until(engine, "bestmove")[-1].split()[1])


def test_mate_in_one_at_the_root(engine):
    send(engine, "position sfen 4k4/9/4P4/9/9/9/9/9/4K4 b G 1")
    listener = InfoListener()
    best, _ = engine.go(byoyomi=1000, listener=listener.listen())
    assert best == "G*5b" and listener.info["score"] == "mate" and listener.info["mate"] == 1


def test_declaration_win_and_resignation(engine):
    send(engine, "position sfen 1+R+B+SG+SGG1/1PPPKPPP1/9/9/9/9/9/9/4k4 b RB3P 1")
    assert engine.go(nodes=10)[0] == "win"
    send(engine, "position sfen 4k4/9/9/9/9/9/4p4/4g4/4K4 b - 1")     # mated: no legal move
    assert engine.go(nodes=10)[0] == "resign"


def test_policy_mode_plays_the_independent_argmax(engine, nets):
    """The engine's policy move = the argmax over legal moves of the unfused model's logits at
    shogitrain's move labels (python-side features, no cshogi in the computation)."""
    model = nets[1]
    engine.setoption("Mode", "policy")
    try:
        board = cshogi.Board()
        for ply in range(len(OPENING) + 1):
            engine.position(OPENING[:ply])
            sfen = board.sfen()
            x1, x2 = features_from_sfens([sfen])
            with torch.no_grad():
                logits, _ = model(x1, x2)
            legal = [cshogi.move_to_usi(m) for m in board.legal_moves]
            expected = max(legal, key=lambda m: float(logits[0, move_label(sfen, m)]))
            assert engine.go(nodes=1)[0] == expected
            if ply < len(OPENING):
                board.push_usi(OPENING[ply])
    finally:
        engine.setoption("Mode", "mcts")


def play_six_and_policy(e: Engine) -> tuple[list[str], str]:
    e.usinewgame()
    moves = []
    for _ in range(6):
        e.position(moves)
        moves.append(e.go(nodes=200)[0])
    e.setoption("Mode", "policy")
    e.position(OPENING)
    answer = (moves, e.go(nodes=1)[0])
    e.setoption("Mode", "mcts")
    return answer


def test_onnx_and_checkpoint_engines_agree(engine, nets, tmp_path):
    e = Engine(engine_script(tmp_path, nets[2]))
    messages = []
    e.isready(listener=messages.append)
    assert any("loaded ONNX tiny.onnx" in m for m in messages)
    try:
        assert play_six_and_policy(e) == play_six_and_policy(engine)
    finally:
        e.quit()


def test_bad_model_is_reported_and_the_engine_keeps_answering(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    missing = tmp_path / "missing.pt"
    e = Engine(engine_script(tmp_path, missing))
    out = []
    for model in (missing, bad):
        e.setoption("DNN_Model", str(model))
        e.isready(listener=out.append)
        e.position([])
        assert e.go(nodes=10, listener=out.append)[0] == "resign"
    e.quit()
    errors = [line for line in out if line.startswith("info string error")]
    assert len(errors) == 4, out
    assert str(missing) in errors[0] and "no such model file" in errors[0]
    assert str(bad) in errors[2] and "not a loadable checkpoint" in errors[2]
    assert "no model loaded" in errors[1] and "no model loaded" in errors[3]
    assert out.index(errors[0]) < out.index("readyok")
    stderr = e_stderr(bad, tmp_path)
    assert "not a loadable checkpoint" in stderr


def e_stderr(model, tmp_path) -> str:
    proc = subprocess.run([engine_script(tmp_path, model)], input="usi\nisready\nquit\n", capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    return proc.stderr


def test_bad_commands_get_one_line_errors(nets, tmp_path):
    proc = subprocess.run([engine_script(tmp_path, nets[0])], capture_output=True, text=True, timeout=60, input=(
        "isready\nsetoption name C_init value lots\nsetoption name Nope value 1\nposition startpos moves 7g7f 7g7f\n"
        "position sfen garbage b - 1\ngo nodes x\nfrobnicate\ngo mate 1000\ngo nodes 5\nquit\n"))
    out = proc.stdout.splitlines()
    errors = [line for line in out if line.startswith("info string error")]
    assert len(errors) == 5, out
    assert "C_init: 'lots' is not an integer" in errors[0] and "unknown option 'Nope'" in errors[1]
    assert "illegal move '7g7f' after 7g7f" in errors[2] and "bad SFEN" in errors[3] and "go nodes" in errors[4]
    assert "info string unknown command frobnicate" in out and "checkmate notimplemented" in out
    assert out[-1].startswith("bestmove") and is_legal([], out[-1].split()[1])
    assert proc.returncode == 0 and "Traceback" not in proc.stderr


def test_cli_usi_command(nets, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["usi", "--checkpoint", str(nets[0]), "--batch-size", "8",
                                  "--write-wrapper", str(tmp_path / "w.sh")])
    assert result.exit_code == 0, result.output
    script = (tmp_path / "w.sh").read_text()
    assert "DNN_Batch_Size=8" in script and str(nets[0]) in script and script.startswith("#!/bin/sh")
    assert runner.invoke(main, ["usi", "--checkpoint", "a", "--onnx", "b"]).exit_code == 2
    bad = runner.invoke(main, ["usi", "--option", "C_init=900", "--write-wrapper", str(tmp_path / "x.sh")])
    assert bad.exit_code == 1 and "C_init: 900 is outside 0…500" in bad.output
    proc = subprocess.run([sys.executable, "-m", "shogitrain", "usi", "--checkpoint", str(nets[0])],
                          input="usi\nisready\nposition startpos\ngo nodes 20\nquit\n", capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "readyok" in proc.stdout and "\nbestmove " in proc.stdout
    console_script = Path(sys.executable).with_name("shogitrain-usi")
    if not console_script.exists():
        pytest.skip("the shogitrain-usi console script is not installed (pip install -e .)")
    bare = subprocess.run([str(console_script)], input="usi\nquit\n", capture_output=True, text=True, timeout=60)
    assert "option name DNN_Model type string default <empty>" in bare.stdout and "usiok" in bare.stdout


def test_missing_cshogi_names_the_extra(monkeypatch):
    from shogitrain.play import PlayError

    monkeypatch.setitem(sys.modules, "cshogi", None)
    with pytest.raises(PlayError, match=r'pip install "shogitrain\[play\]"'):
        start_engine([])
    result = CliRunner().invoke(main, ["usi"])
    assert result.exit_code == 1 and 'pip install "shogitrain[play]"' in result.output
    assert np is not None
