"""KIF records (Japanese notation) through python-shogi's ``shogi.KIF.Parser``.

The file is decoded like a CSA file (UTF-8, else Shift_JIS / EUC-JP detected), parsed with
``shogi.KIF.Parser.parse_str``, and its moves are replayed with the CSA reader's exact legality check (an
illegal move ends the game there with a problem entry). ``winner`` comes from python-shogi's result
(``b``/``w``/``-``); ``endgame`` from the terminal word of the move list, mapped to CSA tokens:
投了 %TORYO, 詰み %TSUMI, 切れ負け %TIME_UP, 反則負け %ILLEGAL_MOVE, 反則勝ち %±ILLEGAL_ACTION (the side
not to move committed the foul), 入玉勝ち %KACHI, 持将棋 %JISHOGI, 千日手 %SENNICHITE, 中断 %CHUDAN.
KIF has no engine scores: ``scores`` are all None. Raises RecordError when the text does not parse.
"""

from __future__ import annotations

import re

import shogi
import shogi.KIF

from shogitrain.records.game import GameRecord, RecordError
from shogitrain.records.text import load_text
from shogitrain.shogi.position import Position
from shogitrain.names import DEFAULT_MAX_MOVES
from shogitrain.shogi.rules import replay_usi

__all__ = ["read_kif"]

_TERMINAL = {
    "投了": "%TORYO", "詰み": "%TSUMI", "切れ負け": "%TIME_UP", "反則負け": "%ILLEGAL_MOVE", "入玉勝ち": "%KACHI",
    "持将棋": "%JISHOGI", "千日手": "%SENNICHITE", "中断": "%CHUDAN", "反則勝ち": "ILLEGAL_ACTION",
}
_TERMINAL_RE = re.compile(r"^\s*(\d+)\s+(" + "|".join(_TERMINAL) + r")", re.M)
_MOVE_NO_RE = re.compile(r"^\s*(\d+)\s", re.M)


def read_kif(path_or_text, *, max_moves: int = DEFAULT_MAX_MOVES) -> list[GameRecord]:
    text, source, file_problems = load_text(path_or_text)
    try:
        parsed = shogi.KIF.Parser.parse_str(text)
    except Exception as e:  # python-shogi raises assorted errors on malformed input
        raise RecordError(source, None, f"KIF parse error: {type(e).__name__}: {e}") from None
    if not parsed:
        raise RecordError(source, None, "no KIF game found")
    games = []
    for summary in parsed:
        try:
            pos = Position.from_sfen(summary["sfen"])
        except ValueError as e:
            raise RecordError(source, None, f"bad start position: {e}") from None
        rec = GameRecord(sfen=pos.sfen(), source=source, line=1)
        rec.problems.extend(file_problems)
        rec.moves, problem, end = replay_usi(pos, summary["moves"], max_moves)
        if problem is not None:
            number, why = problem
            m = next((m for m in _MOVE_NO_RE.finditer(text) if int(m.group(1)) == number), None)
            rec.problems.append((text.count("\n", 0, m.start(1)) + 1 if m else None, why))
        rec.scores = [None] * len(rec.moves)
        names = summary.get("names") or [None, None]
        rec.names = (names[0], names[1])
        win = summary.get("win")
        rec.winner = {"b": 0, "w": 1}.get(win)
        m = _TERMINAL_RE.search(text)
        if m:
            token = _TERMINAL[m.group(2)]
            if token == "ILLEGAL_ACTION":  # the side to move wins: the other side committed the foul
                loser = 1 - (rec.winner if rec.winner is not None else 0)
                token = "%+ILLEGAL_ACTION" if loser == 0 else "%-ILLEGAL_ACTION"
            rec.endgame = token
        if end is not None:  # the record runs on past the end of the game
            rec.endgame, rec.winner = end.endgame, end.winner
        games.append(rec)
    return games
