"""dlshogi ``hcpe`` files: 38-byte HuffmanCodedPosAndEval records, decoded and encoded in numpy.

A record is a 256-bit Huffman-coded position (Apery's format: side to move, the two king squares,
a prefix code per other square, then the pieces in hand), the eval from the side to move, the
move played (``bestMove16``, cshogi's move16) and the game result (1 black won, 2 white won, 0
draw). Decoding is vectorised over rows: an 8-bit window value is precomputed at every bit offset
and looked up in tables built from the codes, so a million positions decode in seconds;
:func:`encode_hcp` is the inverse. :func:`hcpe_games` recovers the games of a file: consecutive
records in which each position is the previous one after its ``bestMove16``. The bit layout and
the codes: docs/dlshogi-data.md, "The hcpe record and its Huffman-coded position".
"""

from __future__ import annotations

import os

import numpy as np

from shogitrain.records.game import RecordError
from shogitrain.shogi.position import IllegalMove, Position
from shogitrain.shogi.vocabulary import (
    FU, GI, HAND_INDEX, HI, KA, KE, KI, KY, OU, PROMOTED_OFFSET, WHITE_OFFSET, usi_from_move16,
)

__all__ = ["HCPE_DTYPE", "read_hcpe", "hcpe_records", "decode_hcp", "encode_hcp", "hcp_states", "hcpe_games",
           "follow_games"]

HCPE_DTYPE = np.dtype(
    [("hcp", "u1", (32,)), ("eval", "<i2"), ("bestMove16", "<u2"), ("gameResult", "u1"), ("dummy", "u1")]
)
assert HCPE_DTYPE.itemsize == 38

# kind prefixes (read order) and whether a promotion bit follows the colour bit
_BOARD_KINDS = {FU: ("10", True), KY: ("1100", True), KE: ("1110", True), GI: ("1101", True),
                KI: ("11110", False), KA: ("111110", True), HI: ("111111", True)}
_HAND_KINDS = {FU: "00", KY: "1000", KE: "1100", GI: "1010", KI: "1110", KA: "111110", HI: "111111"}


def _lut(codes: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """8-bit window (first read bit = LSB) → (value, code length); length 0 = no code matches."""
    val = np.zeros(256, np.int16)
    length = np.zeros(256, np.int16)
    for bits, v in codes.items():
        n = len(bits)
        prefix = sum(int(b) << k for k, b in enumerate(bits))
        for suffix in range(1 << (8 - n)):
            w = prefix | (suffix << n)
            assert length[w] == 0, "codes are not prefix-free"
            val[w] = v
            length[w] = n
    return val, length


def _board_codes() -> dict[str, int]:
    codes = {"0": 0}
    for pt, (kind, promotable) in _BOARD_KINDS.items():
        for c in (0, 1):
            if promotable:
                for p in (0, 1):
                    codes[kind + str(c) + str(p)] = pt + PROMOTED_OFFSET * p + WHITE_OFFSET * c
            else:
                codes[kind + str(c)] = pt + WHITE_OFFSET * c
    return codes


def _hand_codes() -> dict[str, int]:
    # value: colour * 8 + piece type
    return {kind + str(c): c * 8 + pt for pt, kind in _HAND_KINDS.items() for c in (0, 1)}


_BOARD_VAL, _BOARD_LEN = _lut(_board_codes())
_HAND_VAL, _HAND_LEN = _lut(_hand_codes())
_HAND_COL = np.array([HAND_INDEX.get(pt, 0) for pt in range(8)], np.intp)


def read_hcpe(path) -> np.ndarray:
    """Memory-map or read an hcpe file as an array of :data:`HCPE_DTYPE`. Raises RecordError."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise RecordError(path, None, f"cannot read: {e.strerror or e}") from None
    if size == 0:
        raise RecordError(path, None, "empty file")
    if size % HCPE_DTYPE.itemsize:
        raise RecordError(path, None, f"size {size} is not a multiple of 38 bytes: not an hcpe file")
    return np.fromfile(path, dtype=HCPE_DTYPE)


def decode_hcp(hcp: np.ndarray):
    """Decode Huffman positions ``hcp`` (uint8 [N, 32]) → (board u1[N,81], hand u1[N,2,7], turn u1[N], ok bool[N]).

    ``board`` uses shogitrain.shogi.vocabulary's piece codes, ``hand`` its HAND_KINDS order. Rows whose bits
    do not decode to a position with all 40 pieces get ``ok`` False (and zeros).
    """
    hcp = np.ascontiguousarray(hcp, dtype=np.uint8).reshape(-1, 32)
    n = hcp.shape[0]
    bits = np.zeros((n, 256 + 8), np.uint8)
    bits[:, :256] = np.unpackbits(hcp, axis=1, bitorder="little")
    win = np.zeros((n, 256), np.uint16)
    for k in range(8):
        win |= bits[:, k:k + 256].astype(np.uint16) << k
    rows = np.arange(n)
    turn = bits[:, 0].copy()
    weights = (1 << np.arange(7)).astype(np.int64)
    bk = bits[:, 1:8].astype(np.int64) @ weights
    wk = bits[:, 8:15].astype(np.int64) @ weights
    ok = (bk < 81) & (wk < 81) & (bk != wk)
    board = np.zeros((n, 81), np.uint8)
    bk_c, wk_c = np.minimum(bk, 80), np.minimum(wk, 80)
    ptr = np.full(n, 15, np.int64)
    pieces = np.zeros(n, np.int64)
    for sq in range(81):
        active = (bk != sq) & (wk != sq)
        w = win[rows, np.minimum(ptr, 255)]
        v = _BOARD_VAL[w]
        ln = _BOARD_LEN[w]
        ok &= ~active | (ln > 0)
        board[:, sq] = np.where(active, v, 0)
        pieces += active & (v > 0)
        ptr += np.where(active, ln, 0)
    board[rows, bk_c] = OU
    board[rows, wk_c] = OU + WHITE_OFFSET
    hand = np.zeros((n, 2, 7), np.uint8)
    for _ in range(38):
        need = ok & (pieces < 38)
        if not need.any():
            break
        w = win[rows, np.minimum(ptr, 255)]
        v = _HAND_VAL[w]
        ln = _HAND_LEN[w]
        ok &= ~need | ((ln > 0) & (ptr + ln <= 256))
        need &= ok
        idx = np.nonzero(need)[0]
        np.add.at(hand, (idx, v[idx] >> 3, _HAND_COL[v[idx] & 7]), 1)
        pieces += need
        ptr += np.where(need, ln, 0)
    ok &= (pieces == 38) & (ptr <= 256)
    board[~ok] = 0
    hand[~ok] = 0
    turn[~ok] = 0
    return board, hand, turn, ok


def hcpe_records(raw: bytes) -> tuple[np.ndarray, int]:
    """(the whole 38-byte records of ``raw``, the number of bytes of a truncated last record)."""
    whole = len(raw) - len(raw) % HCPE_DTYPE.itemsize
    return np.frombuffer(raw, dtype=HCPE_DTYPE, count=whole // HCPE_DTYPE.itemsize), len(raw) - whole


def hcp_states(hcp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Huffman positions → (states u1[N, 96] laid out like a shard row's board, hands and side to move, ok)."""
    board, hand, turn, ok = decode_hcp(hcp)
    return np.concatenate([board, hand.reshape(-1, 14), turn[:, None]], axis=1), ok


# encoding: (value with the first written bit as LSB, length) per board piece code and per hand piece
_BOARD_CODE = np.zeros((32, 2), np.int64)
for _bits, _code in _board_codes().items():
    _BOARD_CODE[_code] = (sum(int(b) << k for k, b in enumerate(_bits)), len(_bits))
_HAND_CODE = np.zeros((2, 7, 2), np.int64)
for _bits, _v in _hand_codes().items():
    _HAND_CODE[_v >> 3, HAND_INDEX[_v & 7]] = (sum(int(b) << k for k, b in enumerate(_bits)), len(_bits))
_HAND_MAX = (18, 4, 4, 4, 4, 2, 2)   # the most pieces of each kind a hand can hold


def encode_hcp(board: np.ndarray, hand: np.ndarray, turn: np.ndarray) -> np.ndarray:
    """Positions (board u1[N,81], hand u1[N,2,7], turn u1[N]) → Huffman-coded u1[N,32], as cshogi's
    ``Board.to_hcp``. Raises ValueError for a position that does not take exactly 256 bits (not one
    king of each colour, or pieces missing from board and hands)."""
    board = np.asarray(board, np.int64).reshape(-1, 81)
    hand = np.asarray(hand, np.int64).reshape(-1, 2, 7)
    n = len(board)
    kings = [np.argmax(board == OU + WHITE_OFFSET * c, axis=1) for c in (0, 1)]
    # codes in write order: turn, two 7-bit king squares, the 81 squares (kings: length 0), the hands
    value = [np.asarray(turn, np.int64).reshape(n, 1), kings[0][:, None], kings[1][:, None]]
    length = [np.ones((n, 1), np.int64), np.full((n, 1), 7), np.full((n, 1), 7)]
    is_king = (board & 15) == OU
    value.append(_BOARD_CODE[board, 0])
    length.append(np.where(is_king, 0, _BOARD_CODE[board, 1]))
    for c in (0, 1):
        for k, most in enumerate(_HAND_MAX):
            present = np.arange(most)[None, :] < hand[:, c, k:k + 1]
            value.append(np.broadcast_to(_HAND_CODE[c, k, 0], (n, most)))
            length.append(np.where(present, _HAND_CODE[c, k, 1], 0))
    value, length = np.concatenate(value, axis=1), np.concatenate(length, axis=1)
    ends = np.cumsum(length, axis=1)
    kings_ok = (is_king & (board < WHITE_OFFSET)).sum(1) == 1
    kings_ok &= (is_king & (board >= WHITE_OFFSET)).sum(1) == 1
    if not (kings_ok & (ends[:, -1] == 256)).all():
        bad = int(np.nonzero(~(kings_ok & (ends[:, -1] == 256)))[0][0])
        raise ValueError(f"position {bad} cannot be Huffman-coded (needs one king a side and all 40 pieces)")
    # OR each code into the 64-bit word it starts in, and its overflow into the next word; the four
    # little-endian words are the 32 bytes, first bit = LSB
    start = (ends - length).astype(np.uint64)
    word, shift = start >> np.uint64(6), start & np.uint64(63)
    value = np.where(length > 0, value, 0).astype(np.uint64)
    low = value << shift
    high = np.where(shift + length.astype(np.uint64) > 64, value >> (np.uint64(64) - shift) % np.uint64(64), 0)
    words = np.zeros((n, 4), np.uint64)
    for w in range(4):
        words[:, w] = np.where(word == w, low, 0).sum(1, dtype=np.uint64)
        if w:
            words[:, w] += np.where(word == w - 1, high, 0).sum(1, dtype=np.uint64)
    return words.astype("<u8").view(np.uint8).reshape(n, 32)


def hcpe_games(records: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]], list[tuple[int, str]]]:
    """Recover the games of hcpe ``records``: (states u1[N, 96], games as (first, stop) record ranges,
    bad records as (index, reason)); see :func:`follow_games`. A record that does not decode is bad."""
    states, ok = hcp_states(records["hcp"])
    games, bad = follow_games(states, records["bestMove16"], records["gameResult"], ok)
    return states, games, bad


def follow_games(states: np.ndarray, moves: np.ndarray, groups=None, ok=None):
    """Cut consecutive positions into games: (games as (first, stop) ranges, bad positions as (index,
    reason)). Position i continues the game of position i − 1 when it is that position after move
    ``moves[i − 1]`` (and ``groups`` — e.g. the game results — are equal); any other position starts a
    new game. A position that is not legal (or not ``ok``), or whose move is not legal in it, is bad:
    it is left out and ends its game."""
    groups = [0] * len(states) if groups is None else np.asarray(groups).tolist()
    moves = np.asarray(moves).tolist()
    games: list[tuple[int, int]] = []
    bad: list[tuple[int, str]] = []
    position = None   # the position after the last kept move, while a game is open
    first = 0
    for i in range(len(states)):
        state = states[i].tobytes()
        if not (position is not None and position.st == state and groups[i] == groups[i - 1]):
            if position is not None:
                games.append((first, i))
            position, first = None, i
            if ok is not None and not ok[i]:
                bad.append((i, "bad Huffman code: the record does not decode to a position"))
                continue
            try:
                position = Position.from_state(state)
            except ValueError as e:
                bad.append((i, f"not a legal position: {e}"))
                continue
        try:
            position.push_usi(usi_from_move16(moves[i]))
        except (IllegalMove, KeyError, IndexError) as e:
            bad.append((i, f"bestMove16 {moves[i]:#06x} is not a legal move in its position ({e})"))
            if i > first:
                games.append((first, i))
            position = None
    if position is not None:
        games.append((first, len(states)))
    return games, bad
