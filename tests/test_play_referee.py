"""The referee's rulings, game by game, with scripted engines in subprocesses and real engines.

Every game is also written as a CSA record and read back: legal when replayed by python-shogi, the
declared result consistent with the final position.
"""

from __future__ import annotations

import shlex

import pytest

pytest.importorskip("cshogi")

from play_helpers import FSF, GPSUSI, check_record, fake_engine, require_binary  # noqa: E402
from shogitrain.play.csa_writer import csa_text, summary_line, write_csa  # noqa: E402
from shogitrain.play.match import parse_opening  # noqa: E402
from shogitrain.play.referee import Limit, Player, Rules, play_game  # noqa: E402
from shogitrain.play.usi_client import UsiEngine  # noqa: E402

NODES = Limit(nodes=1)


def _player(spec: str, limit: Limit = NODES, tmp_path=None, name="p") -> Player:
    log = None if tmp_path is None else tmp_path / f"{name}.stderr"
    return Player(UsiEngine(shlex.split(spec[4:]), log_path=log), name, limit)


def _play(tmp_path, black: str, white: str, opening="startpos", rules=Rules(), limits=(NODES, NODES),
          evals=False):
    players = [_player(black, limits[0], tmp_path, "black"), _player(white, limits[1], tmp_path, "white")]
    try:
        game = play_game(players[0], players[1], parse_opening(opening, 1), rules)
    finally:
        for p in players:
            p.engine.close()
    record = tmp_path / "game.csa"
    write_csa(record, csa_text(game, "test", rules.max_moves))
    entry = {"plies": len(game.moves), "ending": game.ending.summary, "reason": game.ending.reason,
             "score_black": 0.5 if game.ending.winner is None else float(game.ending.winner == 0)}
    check_record(record, entry, rules.max_moves, evals=evals)
    return game, record.read_text()


def test_sennichite_is_a_draw(tmp_path):
    black = fake_engine(tmp_path, mode="script", script="5e5f,5f5e")
    white = fake_engine(tmp_path, mode="script", script="1a2a,2a1a")
    game, text = _play(tmp_path, black, white, "sfen 8k/9/9/9/4R4/9/9/9/K8 b - 1")
    assert len(game.moves) == 12 and game.ending.winner is None  # the start position for the 4th time
    assert "%SENNICHITE\n'summary:sennichite:black draw:white draw\n" in text


@pytest.mark.parametrize("opening,black_script,white_script,checker", [
    ("sfen 8k/6R2/9/9/9/9/9/9/K8 b - 1", "3b3a,3a3b", "1a1b,1b1a", 0),  # Black's rook checks on every move
    ("sfen 8k/9/9/9/9/9/9/6r2/8K w - 1", "1i1h,1h1i", "3h3i,3i3h", 1),  # White's rook does
])
def test_perpetual_check_loses_for_the_checking_side(tmp_path, opening, black_script, white_script, checker):
    game, text = _play(tmp_path, fake_engine(tmp_path, mode="script", script=black_script),
                       fake_engine(tmp_path, mode="script", script=white_script), opening)
    assert game.ending.summary == "oute_sennichite" and game.ending.winner == 1 - checker
    assert len(game.moves) == 12
    assert f"%{'+-'[checker]}ILLEGAL_ACTION\n" in text


def test_entering_king_declaration(tmp_path):
    # Black's king in the enemy camp with 10 pieces there and 28 points (2 pawns in hand): a valid declaration.
    opening = "sfen G1SGKGS1G/1RB3BR1/9/9/9/9/9/9/4k4 b 2P 1"
    game, text = _play(tmp_path, fake_engine(tmp_path, mode="win", at=1), fake_engine(tmp_path), opening)
    assert game.ending.summary == "kachi" and game.ending.winner == 0
    assert "%KACHI\n'summary:kachi:black win:white lose\n" in text
    # The same declaration from the initial position is false: it loses.
    game, text = _play(tmp_path, fake_engine(tmp_path, mode="win", at=1), fake_engine(tmp_path))
    assert game.ending.summary == "illegal move" and game.ending.winner == 1
    assert game.ending.reason == "false entering-king declaration" and "%+ILLEGAL_ACTION\n" in text


def test_mate_and_move_limit(tmp_path):
    # G*1b mates (the pawn on 1c guards the gold): White has no legal move and loses.
    game, text = _play(tmp_path, fake_engine(tmp_path, mode="script", script="G*1b"), fake_engine(tmp_path),
                       "sfen 8k/9/8P/9/9/9/9/9/K8 b G 1")
    assert game.ending.reason.startswith("mated") and game.ending.winner == 0 and len(game.moves) == 1
    assert "%TORYO\n'summary:toryo:black win:white lose\n" in text
    game, text = _play(tmp_path, fake_engine(tmp_path, seed=1), fake_engine(tmp_path, seed=2),
                       "startpos moves 7g7f 3c3d", rules=Rules(max_moves=20))
    assert game.ending.summary == "max_moves" and len(game.moves) == 20 and game.ending.winner is None
    assert "%JISHOGI\n'summary:max_moves:black draw:white draw\n" in text
    assert text.count("\nT0\n") == 20  # opening moves included


def test_score_adjudication_and_eval_comments(tmp_path):
    black = fake_engine(tmp_path, score=-2000)  # Black's own view: lost
    white = fake_engine(tmp_path, score=300, seed=5)
    game, text = _play(tmp_path, black, white, rules=Rules(resign_cp=1000, resign_moves=3), evals=True)
    assert game.ending.summary == "toryo" and game.ending.winner == 1
    assert len(game.moves) == 6 and game.ending.reason.startswith("adjudicated")
    # Black's view in every '** comment: Black's −2000 as is, White's +300 negated.
    scores = [line.split()[1] for line in text.splitlines() if line.startswith("'** ")]
    assert scores == ["-2000", "-300"] * 3


def test_illegal_and_garbage_moves_lose(tmp_path):
    game, text = _play(tmp_path, fake_engine(tmp_path, mode="script", script="7g7e"), fake_engine(tmp_path))
    assert game.ending.summary == "illegal move" and game.ending.winner == 1 and not game.moves
    assert game.ending.reason == "illegal move '7g7e'" and "%ILLEGAL_MOVE\n" in text
    game, _ = _play(tmp_path, fake_engine(tmp_path), fake_engine(tmp_path, mode="garbage", at=2))
    assert game.ending.winner == 0 and game.ending.reason == "illegal move '???'" and len(game.moves) == 3


def test_crash_hang_and_time_loss(tmp_path):
    game, text = _play(tmp_path, fake_engine(tmp_path), fake_engine(tmp_path, mode="die", at=2))
    assert game.ending.summary == "abnormal" and game.ending.winner == 0 and game.ending.faulty == (1,)
    assert "exit status 3" in game.ending.reason and "dying on purpose" in game.ending.reason
    assert "%CHUDAN\n" in text and len(game.moves) == 3
    rules = Rules(move_timeout=1.0)
    game, _ = _play(tmp_path, fake_engine(tmp_path, mode="stall", at=2), fake_engine(tmp_path), rules=rules)
    assert game.ending.summary == "time up" and game.ending.winner == 1 and game.ending.faulty == (0,)
    assert game.ending.reason.startswith("hung: no bestmove within 1.0 s")
    # Over the byoyomi but answering after `stop`: a time loss, and the engine may play on.
    slow = Limit(byoyomi=100)
    game, _ = _play(tmp_path, fake_engine(tmp_path, delay=0.6), fake_engine(tmp_path), limits=(slow, slow),
                    rules=Rules(time_margin=0.2))
    assert game.ending.summary == "time up" and game.ending.winner == 1 and game.ending.faulty == ()
    assert game.ending.reason.startswith("lost on time")


def test_sudden_death_clock(tmp_path):
    """`--time 1000 --inc 200`: each side's clock in btime/wtime, spent by its moves, grown by the increment;
    Black thinking 0.5 s a move runs out of time, White (instant) does not."""
    golog = tmp_path / "go.log"
    clock = Limit(time=1000, inc=200)
    game, text = _play(tmp_path, fake_engine(tmp_path, delay=0.5), fake_engine(tmp_path, golog=golog),
                       limits=(clock, clock), rules=Rules(time_margin=0.3))
    assert game.ending.summary == "time up" and game.ending.winner == 1 and "%TIME_UP\n" in text
    gos = [line.split() for line in golog.read_text().splitlines()]
    assert all(g[0] == "go" and g[1::2] == ["btime", "wtime", "binc", "winc"] and g[6] == g[8] == "200" for g in gos)
    btimes, wtimes = [int(g[2]) for g in gos], [int(g[4]) for g in gos]
    # Black's 0.5 s a move outweighs the increment; an overdrawn clock (within the margin) shows 0.
    assert btimes[0] < 1000 and all(a > b or a == b == 0 for a, b in zip(btimes, btimes[1:]))
    assert wtimes[0] == 1000 and wtimes[-1] > 1000  # White gains about its increment each move
    assert 2 <= len(game.moves) // 2 <= 6  # 1000 ms, −300 ms a move, then the 0.3 s margin


def test_summary_line_is_floodgates():
    class Game:
        names = ("alice", "bob")

        class ending:
            summary, winner = "toryo", 1

    assert summary_line(Game) == "'summary:toryo:alice lose:bob win"


@pytest.mark.slow
def test_fairy_stockfish_against_gpsusi(tmp_path):
    """Two real engines, one game from a real floodgate opening: legal, evals in Black's view, a result."""
    fsf, gps = require_binary(FSF, "fairy-stockfish"), require_binary(GPSUSI, "gpsshogi")
    black = Player(UsiEngine([fsf], {"Threads": "1", "USI_Hash": "16"}), "fsf", Limit(nodes=500))
    white = Player(UsiEngine([gps], {"LimitDepth": "4", "Thread": "1"}), "gps", Limit(byoyomi=100))
    opening = parse_opening("startpos moves 7g7f 3c3d 2g2f 4c4d 2f2e 2b3c 3i4h 3a2b", 1)
    try:
        game = play_game(black, white, opening, Rules(time_margin=5.0))
    finally:
        black.engine.close()
        white.engine.close()
    record = tmp_path / "real.csa"
    write_csa(record, csa_text(game, "real", 320))
    entry = {"plies": len(game.moves), "ending": game.ending.summary, "reason": game.ending.reason,
             "score_black": 0.5 if game.ending.winner is None else float(game.ending.winner == 0)}
    check_record(record, entry, 320, evals=True)
    assert game.ending.summary in ("toryo", "sennichite", "max_moves", "kachi"), game.ending.reason
    assert black.engine.id_name.startswith("Fairy-Stockfish") and white.engine.id_name.startswith("gpsshogi")


@pytest.mark.parametrize("line,score,pv", [
    ("info depth 7 seldepth 6 multipv 1 score cp -150 nodes 2002 nps 333666 time 6 pv 5a4b 4g4f 4b3b",
     -150, ["5a4b", "4g4f", "4b3b"]),
    ("info depth 4 seldepth 6 time 67 score cp -11 nodes 5438 nps 80392 pv 3c3d 2g2f", -11, ["3c3d", "2g2f"]),
    ("info score cp 35 lowerbound nodes 10 pv 7g7f", 35, ["7g7f"]),
    ("info depth 9 score mate 5 pv G*1b", 100000, ["G*1b"]),
    ("info depth 9 score mate -4 pv 1a1b", -100000, ["1a1b"]),
    ("info score mate + pv 2b3a", 100000, ["2b3a"]),
    ("info score mate -0", -100000, []),
    ("info multipv 2 score cp 999 pv 1g1f", None, []),  # not the principal line
    ("info string score cp 500 pv 7g7f", None, []),  # free text
    ("info depth 3 nodes 100", None, []),
])
def test_info_lines(line, score, pv):
    from shogitrain.play.usi_client import SearchResult, parse_info

    result = SearchResult(bestmove="")
    parse_info(line, result)
    assert result.score == score and result.pv == pv
