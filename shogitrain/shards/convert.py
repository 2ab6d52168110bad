"""GameRecord → shard rows, one row per position before each move.

The CSA reader can keep the position before every move while it replays the game (``read_csa(...,
positions=True)``): the rows' board/hand/turn bytes are then copied from it as they are. Other records
are replayed here from their (already validated) USI moves, the compact board updated incrementally:
a few byte assignments per move instead of reading 81 squares back from a python-shogi board.

:func:`game_rows` converts one game; :func:`games_rows` converts many into one array (the same rows as
concatenating :func:`game_rows` of each, with far fewer numpy calls per game).
"""

from __future__ import annotations

import numpy as np

from shogitrain.records.game import GameRecord
from shogitrain.records.hcpe import HCPE_DTYPE, decode_hcp
from shogitrain.shards.format import EVAL_LIMIT, EVAL_MISSING, POSITION_DTYPE
from shogitrain.shogi.position import CAPTURE_SLOT, HAND_SLOT, STATE_SIZE, TURN_INDEX
from shogitrain.shogi.vocabulary import (
    OU, PROMOTED_OFFSET, SFEN_LETTERS, SQUARE_NAMES, SQUARE_OF_NAME, STARTPOS_SFEN, WHITE_OFFSET, move16_from_usi,
    parse_sfen,
)

_ROW = POSITION_DTYPE.itemsize
_MOVE16: dict = {}  # USI → move16, every board move and drop (filled on first use)


def _fill_move16() -> None:
    table = {}
    for frm, a in enumerate(SQUARE_NAMES):
        for to, b in enumerate(SQUARE_NAMES):
            if frm != to:
                table[a + b] = to | (frm << 7)
                table[a + b + "+"] = to | (frm << 7) | 0x4000
    for letter, pt in SFEN_LETTERS.items():
        if pt != OU:
            for to, b in enumerate(SQUARE_NAMES):
                table[f"{letter}*{b}"] = to | ((81 + pt - 1) << 7)
    _MOVE16.update(table)


def result_codes(winner: int | None, draw: bool) -> tuple[int, int]:
    """(result ×2 for black to move, for white to move)."""
    if draw or winner is None:
        return 1, 1
    return (2, 0) if winner == 0 else (0, 2)


def _replay(game: GameRecord, moves: list) -> tuple[bytes, list, int]:
    """(states before each move, move16s, ply of the start position) by replaying ``moves``."""
    board, hand, turn, ply0 = parse_sfen(game.sfen)
    state = bytearray(board) + bytearray(hand[0]) + bytearray(hand[1]) + bytearray([turn])
    out = bytearray()
    move16s = []
    for usi in moves:
        out += state
        mover = state[TURN_INDEX]
        if usi[1] == "*":
            pt = SFEN_LETTERS[usi[0]]
            to = SQUARE_OF_NAME[usi[2:4]]
            state[to] = pt + (WHITE_OFFSET if mover else 0)
            state[HAND_SLOT[mover][pt]] -= 1
            move16s.append(to | ((81 + pt - 1) << 7))
        else:
            frm = SQUARE_OF_NAME[usi[0:2]]
            to = SQUARE_OF_NAME[usi[2:4]]
            captured = state[to]
            if captured:
                state[CAPTURE_SLOT[captured]] += 1
            piece = state[frm]
            state[frm] = 0
            if len(usi) == 5:  # "+": promote
                state[to] = piece + PROMOTED_OFFSET
                move16s.append(to | (frm << 7) | 0x4000)
            else:
                state[to] = piece
                move16s.append(to | (frm << 7))
        state[TURN_INDEX] = mover ^ 1
    return bytes(out), move16s, ply0


def _ply_of(sfen: str) -> int:
    """The ply field of an SFEN (as :func:`parse_sfen` reads it), without parsing the board."""
    if sfen.strip() == "startpos":
        sfen = STARTPOS_SFEN
    parts = sfen.split()
    if parts and parts[0] == "sfen":
        parts = parts[1:]
    return int(parts[3]) if len(parts) > 3 else 1


def _positions(game: GameRecord, n: int) -> tuple[bytes, list, int]:
    """(states, move16s, start ply) for the first ``n`` moves: from the reader's snapshots when it kept
    them (``GameRecord.positions``), else by replaying."""
    moves = game.moves
    head = moves[:n]
    if game.positions is not None and len(game.positions) == len(moves) * STATE_SIZE:
        if not _MOVE16:
            _fill_move16()
        try:
            move16s = list(map(_MOVE16.__getitem__, head))
        except KeyError:  # not a move the reader writes (cannot happen for read_csa's records)
            move16s = [move16_from_usi(usi) for usi in head]
        states = game.positions
        return (states if len(head) == len(moves) else states[: len(head) * STATE_SIZE]), move16s, _ply_of(game.sfen)
    return _replay(game, head)


def game_rows(game: GameRecord, n_positions: int, game_id: int = 0, draw: bool = False) -> np.ndarray:
    """Rows for the positions before the first ``n_positions`` moves of ``game``."""
    return games_rows([(game, n_positions, game_id, draw)])


def games_rows(items) -> np.ndarray:
    """Rows of several games at once: ``items`` are (game, n_positions, game_id, draw) tuples; the result
    is the concatenation of their :func:`game_rows`."""
    states, move16s, plies, results, evals, ids, counts = [], [], [], [], [], [], []
    for game, n_positions, game_id, draw in items:
        st, m16, ply0 = _positions(game, n_positions)
        n = len(m16)
        if n == 0:
            continue
        states.append(st)
        move16s += m16
        plies.append(ply0)
        counts.append(n)
        ids.append(game_id)
        results.append(result_codes(game.winner, draw))
        scores = game.scores[:n]
        evals += [EVAL_MISSING if s is None else s for s in scores]
        if len(scores) < n:
            evals += [EVAL_MISSING] * (n - len(scores))
    total = len(move16s)
    rows = np.zeros(total, dtype=POSITION_DTYPE)
    if total == 0:
        return rows
    raw = np.frombuffer(b"".join(states), dtype=np.uint8).reshape(total, STATE_SIZE)
    rows.view(np.uint8).reshape(total, _ROW)[:, :STATE_SIZE] = raw
    turns = raw[:, TURN_INDEX]
    counts_a = np.array(counts, dtype=np.int64)
    starts = np.cumsum(counts_a) - counts_a
    # ply = start ply of the game + index within the game
    ply = np.arange(total, dtype=np.int64) + np.repeat(np.array(plies, dtype=np.int64) - starts, counts_a)
    rows["ply"] = np.minimum(ply, 0xFFFF)
    rows["move16"] = move16s
    res = np.repeat(np.array(results, dtype=np.uint8), counts_a, axis=0)  # (total, 2): black, white
    rows["result"] = np.where(turns == 0, res[:, 0], res[:, 1])
    scores = np.array(evals, dtype=np.int64)
    missing = scores == EVAL_MISSING
    from_mover = np.clip(np.where(turns == 0, scores, -scores), -EVAL_LIMIT, EVAL_LIMIT)
    rows["eval"] = np.where(missing, EVAL_MISSING, from_mover)
    rows["game"] = np.repeat(np.array(ids, dtype=np.int64), counts_a)
    return rows


def hcpe_result_codes(game_result: np.ndarray, turn: np.ndarray) -> np.ndarray:
    """Row result codes (×2, side to move) of hcpe gameResults (1 Black won, 2 White won, else a draw)."""
    res = np.asarray(game_result, np.int64)
    win_side = np.where(res == 1, 0, np.where(res == 2, 1, -1))
    return np.where(win_side < 0, 1, np.where(win_side == turn, 2, 0)).astype(np.uint8)


def rows_from_hcpe(arr: np.ndarray, *, game: int = 0) -> np.ndarray:
    """hcpe records → shard rows (POSITION_DTYPE). Rows that do not decode raise ValueError.

    result: gameResult (1 black win, 2 white win, 0 draw) from the side to move ×2 (0 loss, 1 draw, 2 win);
    eval: as stored (already from the side to move); move16 copied; ply 0
    (hcpe does not record it); game = ``game``.
    """
    arr = np.asarray(arr)
    if arr.dtype != HCPE_DTYPE:
        arr = arr.view(HCPE_DTYPE) if arr.dtype.itemsize == 38 else arr.astype(HCPE_DTYPE)
    board, hand, turn, ok = decode_hcp(arr["hcp"])
    if not ok.all():
        bad = np.nonzero(~ok)[0]
        raise ValueError(f"{bad.size} hcpe rows do not decode (first: row {int(bad[0])})")
    rows = np.zeros(arr.shape[0], POSITION_DTYPE)
    rows["board"] = board
    rows["hand"] = hand
    rows["turn"] = turn
    rows["ply"] = 0
    rows["move16"] = arr["bestMove16"]
    rows["result"] = hcpe_result_codes(arr["gameResult"], turn)
    rows["eval"] = arr["eval"]
    rows["game"] = game
    return rows
