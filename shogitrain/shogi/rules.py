"""The rules that end a game by themselves: the fourth repetition (sennichite, with the perpetual-check
exception) and a move limit. The record readers apply them while they replay, so that a record that
runs on past its end (or never ends) is cut where the game ended."""

from __future__ import annotations

from shogitrain.names import DEFAULT_MAX_MOVES
from shogitrain.shogi.position import IllegalMove, Position


class GameEnd:
    """Watches one game as it is replayed for the ends the rules impose.

    ``limit_reached(moves_played)`` before each move: the move limit. ``after_move(pos)`` after
    each move: True when the position just reached occurs for the fourth time, and then
    ``perpetual_checker`` is the side (0 black, 1 white) that gave check with every one of its
    moves since the repeated position first occurred (it loses), or None for a plain draw.
    ``outcome()``: (endgame token, winner, why) once one of them ended the game."""

    def __init__(self, pos: Position, max_moves: int = DEFAULT_MAX_MOVES):
        self.max_moves = max_moves
        self.ended: str | None = None  # 'max_moves' or 'sennichite'
        self._count = {bytes(pos.st): 1}
        self._first = {bytes(pos.st): 0}
        self._in_check = [pos.in_check]  # per ply: the side to move is in check
        self._turn = [pos.turn]
        self.perpetual_checker: int | None = None

    def limit_reached(self, moves_played: int) -> bool:
        if moves_played >= self.max_moves:
            self.ended = "max_moves"
        return self.ended == "max_moves"

    def after_move(self, pos: Position) -> bool:
        key = bytes(pos.st)
        ply = len(self._in_check)
        self._in_check.append(pos.in_check)
        self._turn.append(pos.turn)
        count = self._count.get(key, 0) + 1
        self._count[key] = count
        self._first.setdefault(key, ply)
        if count < 4:
            return False
        cycle = range(self._first[key] + 1, ply + 1)
        for checker in (0, 1):  # the checked side is the other one, to move in those positions
            checked = [self._in_check[k] for k in cycle if self._turn[k] != checker]
            if checked and all(checked):
                self.perpetual_checker = checker
        self.ended = "sennichite"
        return True

    def outcome(self) -> tuple[str, int | None, str]:
        """(endgame, winner, why) of the game the rules ended."""
        if self.ended == "max_moves":
            return "%MAX_MOVES", None, f"the move limit ({self.max_moves}) was reached"
        if self.perpetual_checker is not None:  # the checking side loses
            return "%ILLEGAL_MOVE", self.perpetual_checker ^ 1, "perpetual check (the checking side loses)"
        return "%SENNICHITE", None, "the same position occurred a fourth time (sennichite)"


def replay_usi(pos: Position, usi_moves, max_moves: int = DEFAULT_MAX_MOVES):
    """Play ``usi_moves`` on ``pos`` until the record ends, a move is illegal, or the rules end the game.

    Returns (moves played in USI, problem or None, GameEnd): the problem is ``(move number, text)``
    for an illegal move or for moves the record has after the rules ended the game."""
    game_end = GameEnd(pos, max_moves)
    played: list[str] = []
    for number, usi in enumerate(usi_moves, start=1):
        if game_end.ended or game_end.limit_reached(len(played)):
            _, _, why = game_end.outcome()
            rest = len(usi_moves) - number + 1
            return played, (number, f"{why} after move {len(played)}: the game ends there ({rest} more "
                                     "move(s) of the record ignored)"), game_end
        try:
            played.append(pos.push_usi(usi))
        except IllegalMove as e:
            return played, (number, f"move {number} {usi[:20]!r}: {e}; kept up to the move before"), game_end
        game_end.after_move(pos)
    return played, None, game_end
