"""The compact position row stored in shards.

One row per position (107 bytes, numpy structured dtype ``POSITION_DTYPE``):

=========  ==========  ==================================================================
field      dtype       meaning
=========  ==========  ==================================================================
board      u1[81]      piece code per square, cshogi/Apery numbering (see below)
hand       u1[2,7]     pieces in hand, [black, white] × HAND_KINDS order (FU KY KE GI KI KA HI)
turn       u1          side to move: 0 black (sente), 1 white (gote)
ply        <u2         ply number of the position (1 = start position of the record)
move16     <u2         the move played from this position (cshogi move16 encoding)
result     u1          game result from the side to move ×2: 0 loss, 1 draw, 2 win
eval       <i2         engine eval in centipawns from the side to move, clipped to ±32767;
                       EVAL_MISSING (-32768) when the record has no score for it
game       <u4         index into the dataset's per-game table (games.jsonl)
=========  ==========  ==================================================================

Squares, piece codes, hand order and move16 are shogitrain.shogi.vocabulary's. The board is
stored from Black's view; the feature encoder rotates it.
"""

from __future__ import annotations

import numpy as np

from shogitrain.shogi.vocabulary import move16_from_usi, parse_sfen

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
