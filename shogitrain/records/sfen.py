"""SFEN-line records: one game (or opening line) per line, USI ``position`` syntax.

Accepted per line (``#`` starts a comment, blank lines are ignored)::

    startpos [moves m1 m2 …]
    sfen <board> <b|w> <hand> [<ply>] [moves m1 m2 …]
    position startpos|sfen … [moves …]        (a leading ``position`` is dropped)

Each line gives one :class:`GameRecord` with ``winner`` and ``endgame`` None and ``scores`` all None.
Moves are replayed with the same exact legality check as the CSA reader: an illegal or unreadable move ends
that record there (kept up to the move before) with a ``(line, reason)`` problem. A line whose position
cannot be read is dropped (appended to ``skipped`` as a :class:`RecordError` when a list is given);
:class:`RecordError` is raised when the input has no usable line at all.
"""

from __future__ import annotations

from shogitrain.records.game import GameRecord, RecordError
from shogitrain.records.text import iter_lines, load_text
from shogitrain.shogi.position import Position
from shogitrain.names import DEFAULT_MAX_MOVES
from shogitrain.shogi.rules import replay_usi
from shogitrain.shogi.vocabulary import STARTPOS_SFEN

__all__ = ["read_sfen_lines", "parse_position_line"]

_START = Position.from_sfen(STARTPOS_SFEN)


def parse_position_line(line: str, lineno: int | None = None, source=None,
                        max_moves: int = DEFAULT_MAX_MOVES) -> GameRecord | None:
    """One SFEN line → GameRecord (None for blank/comment lines). Raises RecordError for a bad position."""
    k = line.find("#")
    if k >= 0:
        line = line[:k]
    tokens = line.split()
    if not tokens:
        return None
    if tokens[0] == "position":
        tokens = tokens[1:]
    if not tokens:
        raise RecordError(source, lineno, "'position' without a position")
    if tokens[0] == "startpos":
        pos = _START.copy()
        sfen = STARTPOS_SFEN
        rest = tokens[1:]
    elif tokens[0] == "sfen":
        if len(tokens) < 4:
            raise RecordError(source, lineno, "sfen needs board, side to move and hand")
        fields = tokens[1:4]
        rest = tokens[4:]
        if rest and rest[0].isdigit():
            fields.append(rest[0])
            rest = rest[1:]
        sfen = " ".join(fields)
        try:
            pos = Position.from_sfen(sfen)
            sfen = pos.sfen(int(fields[3]) if len(fields) > 3 else 1)
        except ValueError as e:
            raise RecordError(source, lineno, f"bad sfen: {e}") from None
    else:
        raise RecordError(source, lineno, f"expected 'startpos' or 'sfen', got {tokens[0][:20]!r}")
    if rest and rest[0] != "moves":
        raise RecordError(source, lineno, f"expected 'moves', got {rest[0][:20]!r}")
    rec = GameRecord(sfen=sfen, source=source, line=lineno)
    rec.moves, problem, end = replay_usi(pos, rest[1:], max_moves)
    if problem is not None:
        rec.problems.append((lineno, problem[1]))
    if end is not None:
        rec.endgame, rec.winner = end.endgame, end.winner
    rec.scores = [None] * len(rec.moves)
    return rec


def read_sfen_lines(path_or_text, *, skipped: list | None = None,
                    max_moves: int = DEFAULT_MAX_MOVES) -> list[GameRecord]:
    """Read SFEN/USI position lines (file path, Path, bytes or text) → one GameRecord per line."""
    text, source, file_problems = load_text(path_or_text)
    games: list[GameRecord] = []
    dropped: list[RecordError] = []
    for ln, line in iter_lines(text):
        try:
            rec = parse_position_line(line, ln, source, max_moves)
        except RecordError as e:
            dropped.append(e)
            continue
        if rec is not None:
            if file_problems:
                rec.problems[:0] = [(line, why) for line, why in file_problems if line in (None, ln)]
            games.append(rec)
    if not games:
        raise dropped[0] if dropped else RecordError(source, None, "no position line found")
    if skipped is not None:
        skipped.extend(dropped)
    return games
