"""Helpers of the play tests: a scriptable fake USI engine, the real-engine guard, a record checker."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest
import shogi

FSF = "/usr/games/fairy-stockfish"
GPSUSI = "/usr/games/gpsusi"

# A USI engine in a few lines: plays a seeded random legal move (or a scripted one), and misbehaves on
# request at its n-th move of a game: dies, stalls (ignoring `stop`), sends garbage, declares a win;
# `golog=FILE` keeps the `go` commands it receives.
FAKE_ENGINE = r'''
import os, random, sys, time
import cshogi
args = dict(a.split("=", 1) for a in sys.argv[1:])
mode, at = args.get("mode", "random"), int(args.get("at", 0))
script = args["script"].split(",") if "script" in args else None
rng = random.Random(int(args.get("seed", 1)))
if "pidfile" in args:
    with open(args["pidfile"], "a") as f:
        f.write(f"{os.getpid()}\n")
board, own = cshogi.Board(), 0

def out(line):
    print(line, flush=True)

for line in sys.stdin:
    cmd = line.split()
    if not cmd:
        continue
    if cmd[0] == "usi":
        out(f"id name fake {mode}")
        out("option name Noise type spin default 0 min 0 max 10")
        out("usiok")
    elif cmd[0] == "isready":
        out("readyok")
    elif cmd[0] == "usinewgame":
        own = 0
    elif cmd[0] == "position":
        if cmd[1] == "startpos":
            board.reset()
            rest = cmd[2:]
        else:
            board.set_sfen(" ".join(cmd[2:6]))
            rest = cmd[6:]
        for m in rest[1:]:
            board.push_usi(m)
    elif cmd[0] == "go":
        own += 1
        if "golog" in args:
            with open(args["golog"], "a") as f:
                f.write(line)
        time.sleep(float(args.get("delay", 0)))
        if own == at and mode == "die":
            print("dying on purpose", file=sys.stderr, flush=True)
            sys.exit(3)
        if own == at and mode == "stall":
            continue
        if own == at and mode == "garbage":
            out("bestmove ???")
            continue
        if own == at and mode == "win":
            out("bestmove win")
            continue
        if mode == "resign":
            out("bestmove resign")
            continue
        if script:
            move = script[(own - 1) % len(script)]
        else:
            move = rng.choice(sorted(cshogi.move_to_usi(m) for m in board.legal_moves))
        if "score" in args:
            out(f"info depth 1 nodes 1 score cp {args['score']} pv {move}")
        out(f"bestmove {move}")
    elif cmd[0] == "quit":
        break
'''


def fake_engine(tmp_path: Path, **args) -> str:
    """A ``usi:`` engine spec running the fake engine with ``key=value`` arguments."""
    script = tmp_path / "fake_engine.py"
    if not script.exists():
        script.write_text(FAKE_ENGINE)
    words = [sys.executable, str(script)] + [f"{k}={v}" for k, v in args.items()]
    return "usi:" + " ".join(shlex.quote(w) for w in words)


def require_binary(path: str, package: str) -> str:
    """The engine's path; skipped outside CI when it is not installed, a failure in CI (env CI set)."""
    if os.path.exists(path):
        return path
    message = f"{path} is not installed (apt-get install {package}); the CI installs it"
    if os.environ.get("CI"):
        pytest.fail(message + " — but it is missing in CI")
    pytest.skip(message)


def replay(start_sfen: str, moves: list[str]) -> shogi.Board:
    """Replay USI moves with python-shogi, asserting every one is legal; the final board."""
    board = shogi.Board(start_sfen)
    for ply, usi in enumerate(moves, 1):
        move = shogi.Move.from_usi(usi)
        assert move in board.legal_moves, f"ply {ply}: {usi} is illegal in {board.sfen()}"
        board.push(move)
    return board


def check_record(record: Path, entry: dict, max_moves: int, evals: bool = True) -> None:
    """A match record: readable by shogitrain's CSA reader, legal, and its result fits the final position."""
    from shogitrain.records.csa import read_csa

    (game,) = read_csa(record)
    assert not game.problems, game.problems
    assert len(game.moves) == entry["plies"]
    board = replay(game.sfen, game.moves)
    winner = None if entry["score_black"] == 0.5 else (0 if entry["score_black"] == 1.0 else 1)
    assert game.winner == winner
    to_move = 0 if board.turn == shogi.BLACK else 1
    ending, reason = entry["ending"], entry["reason"]
    if ending == "toryo":
        assert winner == 1 - to_move  # the side to move resigned (or was mated)
        if reason.startswith("mated"):
            assert board.is_checkmate()
    elif ending == "kachi":
        import cshogi

        assert winner == to_move and cshogi.Board(board.sfen()).is_nyugyoku()
    elif ending == "max_moves":
        assert winner is None and len(game.moves) == max_moves
    elif ending == "sennichite":
        assert winner is None and board.is_fourfold_repetition()
    elif ending in ("time up", "abnormal", "illegal move"):
        assert winner == 1 - to_move  # the side to move failed
    else:
        assert ending == "oute_sennichite" and board.is_fourfold_repetition()
    if evals:
        assert any(s is not None for s in game.scores)
