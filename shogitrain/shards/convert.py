"""GameRecord → shard rows, one row per position before each move.

The compact board is updated incrementally from each (already validated) USI move: a few byte
assignments per move instead of reading 81 squares back from a python-shogi board.
"""

from __future__ import annotations

import numpy as np

from shogitrain.records.game import GameRecord
from shogitrain.shards.format import (
    EVAL_LIMIT,
    EVAL_MISSING,
    HAND_INDEX,
    OU,
    POSITION_DTYPE,
    PROMOTED_OFFSET,
    SFEN_LETTERS,
    WHITE_OFFSET,
    parse_sfen,
)

_SQUARE = {f"{f}{chr(96 + r)}": (f - 1) * 9 + (r - 1) for f in range(1, 10) for r in range(1, 10)}
_STATE = 81 + 14 + 1  # board, hands (black 7, white 7), turn
# hand slot of a captured piece code, from the capturer's point of view (demoted, color removed)
_HAND_SLOT_OF_CAPTURE = {}
for _code in range(1, 31):
    _pt = _code - WHITE_OFFSET if _code > WHITE_OFFSET else _code
    if 1 <= _pt <= 14 and _pt != OU:
        _base = _pt - PROMOTED_OFFSET if _pt > OU else _pt
        _HAND_SLOT_OF_CAPTURE[_code] = HAND_INDEX[_base]


def result_codes(winner: int | None, draw: bool) -> tuple[int, int]:
    """(result ×2 for black to move, for white to move)."""
    if draw or winner is None:
        return 1, 1
    return (2, 0) if winner == 0 else (0, 2)


def game_rows(game: GameRecord, n_positions: int, game_id: int = 0, draw: bool = False) -> np.ndarray:
    """Rows for the positions before the first ``n_positions`` moves of ``game``."""
    board, hand, turn, ply0 = parse_sfen(game.sfen)
    state = bytearray(board) + bytearray(hand[0]) + bytearray(hand[1]) + bytearray([turn])
    out = bytearray()
    move16s = []
    moves = game.moves[:n_positions]
    for usi in moves:
        out += state
        mover = state[95]
        if usi[1] == "*":
            pt = SFEN_LETTERS[usi[0]]
            to = _SQUARE[usi[2:4]]
            state[to] = pt + (WHITE_OFFSET if mover else 0)
            state[81 + 7 * mover + HAND_INDEX[pt]] -= 1
            move16s.append(to | ((81 + pt - 1) << 7))
        else:
            frm = _SQUARE[usi[0:2]]
            to = _SQUARE[usi[2:4]]
            captured = state[to]
            if captured:
                state[81 + 7 * mover + _HAND_SLOT_OF_CAPTURE[captured]] += 1
            piece = state[frm]
            state[frm] = 0
            if len(usi) == 5:  # "+": promote
                state[to] = piece + PROMOTED_OFFSET
                move16s.append(to | (frm << 7) | 0x4000)
            else:
                state[to] = piece
                move16s.append(to | (frm << 7))
        state[95] = mover ^ 1
    n = len(moves)
    rows = np.zeros(n, dtype=POSITION_DTYPE)
    if n == 0:
        return rows
    raw = np.frombuffer(bytes(out), dtype=np.uint8).reshape(n, _STATE)
    rows["board"] = raw[:, :81]
    rows["hand"] = raw[:, 81:95].reshape(n, 2, 7)
    turns = raw[:, 95]
    rows["turn"] = turns
    rows["ply"] = np.minimum(np.arange(ply0, ply0 + n), 0xFFFF)
    rows["move16"] = move16s
    black_result, white_result = result_codes(game.winner, draw)
    rows["result"] = np.where(turns == 0, black_result, white_result)
    scores = np.array(
        [EVAL_MISSING if s is None else s for s in game.scores[:n]] + [EVAL_MISSING] * (n - len(game.scores[:n])),
        dtype=np.int64,
    )
    missing = scores == EVAL_MISSING
    from_mover = np.clip(np.where(turns == 0, scores, -scores), -EVAL_LIMIT, EVAL_LIMIT)
    rows["eval"] = np.where(missing, EVAL_MISSING, from_mover)
    rows["game"] = game_id
    return rows
