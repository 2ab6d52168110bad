"""Write a played game as a floodgate-style CSA record (what ``shogitrain prepare`` reads).

Layout, as floodgate writes it: ``V2``, ``N+``/``N-`` names, ``'Max_Moves:``, ``$EVENT:``,
``$START_TIME:``, the start position (``PI`` for the initial position), every move with a ``T``
line (whole seconds; 0 for the opening moves) and, when the mover reported a score, a
``'** <score> <pv>`` comment: Black's view, mate as ±100000, the pv after the move in CSA. Then the
``%`` ending, ``'summary:<kind>:<black> <win|lose|draw>:<white> <…>`` (Black first) and
``'$END_TIME:``; a last comment gives the referee's reason in words. The record is ASCII.
cshogi's CSA exporter writes no summary or eval lines, so the record is written here; the file
appears whole (temp + rename).
"""

from __future__ import annotations

import os
from pathlib import Path

from shogitrain.play.referee import BLACK, PlayedGame, require_cshogi

TIME_FORMAT = "%Y/%m/%d %H:%M:%S"


def summary_line(game: PlayedGame) -> str:
    ending = game.ending
    results = ("draw", "draw") if ending.winner is None else (
        ("win", "lose") if ending.winner == BLACK else ("lose", "win"))
    black, white = game.names
    return f"'summary:{ending.summary}:{black} {results[0]}:{white} {results[1]}"


def csa_text(game: PlayedGame, event: str, max_moves: int, increment_s: int | None = None) -> str:
    cshogi = require_cshogi()
    lines = ["V2", f"N+{game.names[0]}", f"N-{game.names[1]}", f"'Max_Moves:{max_moves}"]
    if increment_s is not None:
        lines.append(f"'Increment:{increment_s}")
    lines += [f"$EVENT:{event}", f"$START_TIME:{game.started.strftime(TIME_FORMAT)}"]
    if game.start_sfen == cshogi.STARTING_SFEN:
        lines += ["PI", "+"]
    else:
        lines.append(cshogi.Board(game.start_sfen).csa_pos().rstrip("\n"))
    for move in game.moves:
        lines += [move.csa, f"T{int(move.seconds or 0)}"]
        if move.score is not None:
            lines.append(" ".join(["'**", str(move.score), *move.pv_csa]))
    reason = " ".join(game.ending.reason.split()).encode("ascii", "replace").decode()  # one ASCII line
    lines += [game.ending.token, summary_line(game), f"'$END_TIME:{game.finished.strftime(TIME_FORMAT)}",
              f"'ending:{reason}"]
    return "\n".join(lines) + "\n"


def write_csa(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temp file in the same directory, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, path)
