"""The rules that end a game by themselves: the fourth repetition (sennichite, with the perpetual-check
exception) and a move limit. The record readers apply them to what they replayed, so that a record
that runs on past its end (or never ends) is cut where the game ended."""

from __future__ import annotations

from dataclasses import dataclass

from shogitrain.names import DEFAULT_MAX_MOVES
from shogitrain.shogi.position import STATE_SIZE, IllegalMove, Position


@dataclass(frozen=True)
class RuleEnd:
    """A game the rules ended after ``moves`` moves."""

    moves: int
    endgame: str
    winner: int | None
    why: str


def move_limit_end(limit: int) -> RuleEnd:
    return RuleEnd(limit, "%MAX_MOVES", None, f"the move limit ({limit}) was reached")


def repetition_end(states: bytes) -> RuleEnd | None:
    """Where a position occurs for the fourth time, if it does.

    ``states``: the positions of the game in order, STATE_SIZE bytes each (the start, then after each
    move). A side that gave check with every one of its moves since the repeated position first
    occurred loses (perpetual check); otherwise it is a draw. Readers call it on every game, so the
    common case (no position three times repeated) is one set of the states."""
    n = len(states) // STATE_SIZE
    if len({states[i:i + STATE_SIZE] for i in range(0, len(states), STATE_SIZE)}) > n - 3:
        return None  # fewer than three repeats: no fourth occurrence (the common, fast path)
    keys = [states[i:i + STATE_SIZE] for i in range(0, len(states), STATE_SIZE)]
    count: dict[bytes, int] = {}
    for ply, key in enumerate(keys):
        count[key] = count.get(key, 0) + 1
        if count[key] == 4:
            break
    else:
        return None
    cycle = [Position.from_state(keys[k]) for k in range(keys.index(key) + 1, ply + 1)]
    for checker in (0, 1):  # the checked side is the other one, to move in those positions
        checked = [p.in_check for p in cycle if p.turn != checker]
        if checked and all(checked):
            return RuleEnd(ply, "%ILLEGAL_MOVE", checker ^ 1, "perpetual check (the checking side loses)")
    return RuleEnd(ply, "%SENNICHITE", None, "the same position occurred a fourth time (sennichite)")


def replay_usi(pos: Position, usi_moves, max_moves: int = DEFAULT_MAX_MOVES):
    """Play ``usi_moves`` on ``pos`` until the record ends, a move is illegal, or the rules end the game.

    Returns (moves played in USI, problem or None, RuleEnd or None): the problem is ``(move number,
    text)`` for an illegal move or for moves the record has after the rules ended the game."""
    states = bytearray(pos.st)
    played: list[str] = []
    problem = None
    for number, usi in enumerate(usi_moves, start=1):
        if len(played) >= max_moves:
            break
        try:
            played.append(pos.push_usi(usi))
        except IllegalMove as e:
            problem = (number, f"move {number} {usi[:20]!r}: {e}; kept up to the move before")
            break
        states += pos.st
    end = repetition_end(bytes(states))
    if end is None and problem is None and len(played) < len(usi_moves):
        end = move_limit_end(max_moves)
    if end is not None and end.moves < len(usi_moves):
        ignored = len(usi_moves) - end.moves
        del played[end.moves:]
        return played, (end.moves + 1, f"{end.why} after move {end.moves}: the game ends there ({ignored} more "
                                         "move(s) of the record ignored)"), end
    return played, problem, None
