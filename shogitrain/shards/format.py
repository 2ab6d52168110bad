"""The compact position row stored in shards: 107 bytes, numpy structured dtype ``POSITION_DTYPE``.

``board`` u1[81] (piece codes, Black's view), ``hand`` u1[2,7] (black, white × FU KY KE GI KI KA
HI), ``turn`` u1 (0 black to move), ``ply`` <u2 (1 = the record's start position), ``move16``
<u2 (the move played, cshogi's encoding), ``result`` u1 (from the side to move ×2: 0 loss, 1 draw,
2 win), ``eval`` <i2 (centipawns from the side to move, clipped to ±32767; EVAL_MISSING = −32768
when the record has none), ``game`` <u4 (index into games.jsonl). Codes, squares and move16 are
shogitrain.shogi.vocabulary's; the feature encoder rotates the board. :func:`invalid_rows` checks
rows against what every writer produces. docs/internals.md, "Shard rows", has the table.
"""

from __future__ import annotations

import numpy as np

from shogitrain.shogi.vocabulary import HAND_INDEX, OU, PROMOTED_OFFSET, move16_from_usi, parse_sfen

FORMAT_VERSION = 1

POSITION_DTYPE = np.dtype(
    [
        ("board", "u1", (81,)),
        ("hand", "u1", (2, 7)),
        ("turn", "u1"),
        ("ply", "<u2"),
        ("move16", "<u2"),
        ("result", "u1"),
        ("eval", "<i2"),
        ("game", "<u4"),
    ]
)

EVAL_MISSING = -32768
EVAL_LIMIT = 32767


def rows_from_sfens(sfens, moves=None) -> np.ndarray:
    """Build shard rows from SFEN strings (tests, ``features_from_sfens``). result/eval/game are blank."""
    sfens = list(sfens)
    rows = np.zeros(len(sfens), dtype=POSITION_DTYPE)
    rows["eval"] = EVAL_MISSING
    for i, sfen in enumerate(sfens):
        board, hand, turn, ply = parse_sfen(sfen)
        rows[i]["board"] = board
        rows[i]["hand"] = hand
        rows[i]["turn"] = turn
        rows[i]["ply"] = min(ply, 0xFFFF)
        if moves is not None:
            rows[i]["move16"] = move16_from_usi(moves[i])
    return rows


# Row checks (invalid_rows): what a row that any reader or writer of ours produces always satisfies.
ROW_PROBLEMS = (
    "",
    "a square holds an unknown piece code",
    "not exactly one king of each side",
    "side to move is not 0 or 1",
    "result code is not 0, 1 or 2",
    "more pieces in hand than the set holds",
    "move16 is not a board move or a drop",
    "more pieces of a kind than the set holds",
)
_VALID_CODE = np.zeros(256, bool)
_VALID_CODE[[0, *range(1, 15), *range(17, 31)]] = True
_SET = np.array([18, 4, 4, 4, 4, 2, 2])  # FU KY KE GI KI KA HI: the pieces of one set, by hand kind
_SET_BOTH = np.tile(_SET, 2).astype(np.uint8)  # both hands' limits, as the 14 hand bytes of a row lie
# hand-kind index (0..6) of each board code's piece, demoted and colour removed; 7 for kings and empty squares
_KIND_OF_CODE = np.full(256, 7, np.uint8)
for _code in [*range(1, 15), *range(17, 31)]:
    _pt = _code & 15
    if _pt != OU:
        _KIND_OF_CODE[_code] = HAND_INDEX[_pt - PROMOTED_OFFSET if _pt > OU else _pt]
del _code, _pt


def _all_valid(rows: np.ndarray) -> bool:
    """True when no row has a problem of ROW_PROBLEMS[1:7]: the checks of invalid_rows, on the whole
    batch at once (several times faster; the training loader checks every batch it reads)."""
    n = len(rows)
    board = np.ascontiguousarray(rows["board"]).ravel()
    if (((board & 15) == 15) | (board == 16) | (board > 31)).any():       # the codes _VALID_CODE refuses
        return False
    kings = np.flatnonzero((board & 0xEF) == 8)                             # 8 and 24: one of each a row
    if len(kings) != 2 * n or (kings[0::2] // 81 != np.arange(n)).any() or (kings[1::2] // 81 != np.arange(n)).any() \
            or (board[kings[0::2]] == board[kings[1::2]]).any():
        return False
    move16 = rows["move16"]
    to, frm = move16 & 0x7F, (move16 >> 7) & 0x7F
    return not ((rows["turn"] > 1).any() or (rows["result"] > 2).any()
                or (np.ascontiguousarray(rows["hand"]).reshape(n, 14) > _SET_BOTH).any()
                or ((to >= 81) | (frm > 87) | (frm == to) | ((frm >= 81) & (move16 >= 1 << 14))
                    | (move16 >= 1 << 15)).any())


def invalid_rows(rows: np.ndarray, piece_totals: bool = False) -> np.ndarray:
    """Per row, the index into ROW_PROBLEMS of its first problem (0 = none), vectorised.

    ``piece_totals`` adds the count of each kind over board and both hands (a few times dearer:
    verification does it, the training batches do not)."""
    if not piece_totals and _all_valid(rows):
        return np.zeros(len(rows), np.int64)
    board, hand = rows["board"], rows["hand"]
    move16 = rows["move16"].astype(np.int64)
    to, frm = move16 & 0x7F, (move16 >> 7) & 0x7F
    checks = [
        ~_VALID_CODE[board].all(axis=1),
        ((board == 8).sum(axis=1) != 1) | ((board == 24).sum(axis=1) != 1),
        rows["turn"] > 1,
        rows["result"] > 2,
        (hand > _SET).any(axis=(1, 2)),
        (to >= 81) | (frm > 87) | (frm == to) | ((frm >= 81) & (move16 >= 1 << 14)) | (move16 >= 1 << 15),
    ]
    if piece_totals:
        kinds = _KIND_OF_CODE[board]
        in_hands = hand.sum(axis=1, dtype=np.int64)
        checks.append(np.any([(kinds == k).sum(axis=1) + in_hands[:, k] > _SET[k] for k in range(7)], axis=0))
    problem = np.zeros(len(rows), np.int64)
    for index, bad in reversed(list(enumerate(checks, start=1))):
        problem[bad] = index
    return problem
