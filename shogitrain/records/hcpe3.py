"""dlshogi ``hcpe3`` files: games with the visit counts of the search, read as dlshogi's trainer reads them.

Layout (dlshogi ``cppshogi.h``, little-endian, no padding), one game after another::

    HuffmanCodedPosAndEval3  hcp u1[32] (start position), moveNum <u2, result u1, opponent u1   36 bytes
    moveNum × ( MoveInfo     selectedMove16 <u2, eval <i2 (side to move), candidateNum <u2     6 bytes
                candidateNum × MoveVisits  move16 <u2, visitNum <u2 )                          4 bytes each

``result``: bits 0–1 the winner (0 draw, 1 Black, 2 White), 0x4 sennichite, 0x8 entering-king
declaration, 0x10 max moves. :func:`read_hcpe3_games` cuts the bytes into games (framing only);
:func:`replay_hcpe3_game` replays one from its start position and keeps the positions dlshogi trains
on: moves with candidateNum 0 are skipped, and so are moves that make a repetition draw or a
superior/inferior repetition within 16 plies (Apery's ``moveIsDraw``). :func:`visit_weights` turns
visit counts into policy targets with dlshogi's ``--temperature``. docs/dlshogi-data.md has the details.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from shogitrain.shogi.position import IllegalMove, Position
from shogitrain.shogi.vocabulary import usi_from_move16

__all__ = [
    "HCPE3_DTYPE", "MOVE_INFO_DTYPE", "MOVE_VISITS_DTYPE", "Hcpe3Game", "Hcpe3Problem", "read_hcpe3_games",
    "replay_hcpe3_game", "visit_weights", "result_meta", "result_bits",
]

HCPE3_DTYPE = np.dtype([("hcp", "u1", (32,)), ("moveNum", "<u2"), ("result", "u1"), ("opponent", "u1")])
MOVE_INFO_DTYPE = np.dtype([("selectedMove16", "<u2"), ("eval", "<i2"), ("candidateNum", "<u2")])
MOVE_VISITS_DTYPE = np.dtype([("move16", "<u2"), ("visitNum", "<u2")])
assert (HCPE3_DTYPE.itemsize, MOVE_INFO_DTYPE.itemsize, MOVE_VISITS_DTYPE.itemsize) == (36, 6, 4)

MAX_MOVES = 513        # dlshogi asserts moveNum <= 513 and candidateNum <= 593 (MaxLegalMoves)
MAX_CANDIDATES = 593
SENNICHITE, NYUGYOKU, MAXMOVE = 0x4, 0x8, 0x10
REPETITION_PLIES = 16  # moveIsDraw(move, 16)

_MOVE_INFO = struct.Struct("<HhH")


@dataclass
class Hcpe3Game:
    """One game's records as stored (framing only, nothing validated yet)."""

    index: int             # the game's ordinal in the file
    offset: int            # byte offset of its header in the file
    raw: bytes             # its bytes (header, move infos, visits)
    header: np.void        # HCPE3_DTYPE
    moves: np.ndarray      # MOVE_INFO_DTYPE [moveNum]
    visits: np.ndarray     # MOVE_VISITS_DTYPE [Σ candidateNum], move by move


@dataclass
class Hcpe3Problem:
    """A game that could not be read: where it starts and why; ``fatal`` when nothing after it can be framed."""

    index: int
    offset: int
    reason: str
    fatal: bool = False


def read_hcpe3_games(raw, first_index: int = 0, base_offset: int = 0):
    """Yield :class:`Hcpe3Game` for each game of ``raw`` (bytes of whole games), then — when the bytes do
    not end at a game boundary or a count is out of dlshogi's bounds — one fatal :class:`Hcpe3Problem`."""
    view = memoryview(raw)
    size = len(view)
    pos, index = 0, first_index
    while pos < size:
        start = pos

        def fatal(reason: str) -> Hcpe3Problem:
            return Hcpe3Problem(index, base_offset + start, reason, True)

        if size - pos < HCPE3_DTYPE.itemsize:
            yield fatal(f"truncated game: {size - pos} bytes of a 36-byte header")
            return
        header = np.frombuffer(view, HCPE3_DTYPE, 1, pos)[0]
        move_num = int(header["moveNum"])
        if move_num > MAX_MOVES:
            yield fatal(f"moveNum {move_num} > {MAX_MOVES}: not an hcpe3 game")
            return
        pos += HCPE3_DTYPE.itemsize
        infos, visit_spans = [], []
        for m in range(move_num):
            if size - pos < _MOVE_INFO.size:
                yield fatal(f"truncated game: the file ends in move {m + 1} of {move_num}")
                return
            info = _MOVE_INFO.unpack_from(view, pos)
            pos += _MOVE_INFO.size
            candidates = info[2]
            if candidates > MAX_CANDIDATES:
                yield fatal(f"move {m + 1}: candidateNum {candidates} > {MAX_CANDIDATES}: not an hcpe3 game")
                return
            if size - pos < 4 * candidates:
                yield fatal(f"truncated game: move {m + 1}: candidateNum {candidates} goes beyond the end of the file")
                return
            infos.append(info)
            visit_spans.append(view[pos:pos + 4 * candidates])
            pos += 4 * candidates
        moves = np.array(infos, dtype=np.int64).reshape(-1, 3)
        move_info = np.zeros(move_num, MOVE_INFO_DTYPE)
        move_info["selectedMove16"], move_info["eval"], move_info["candidateNum"] = moves.T
        visits = np.frombuffer(b"".join(visit_spans), MOVE_VISITS_DTYPE)
        yield Hcpe3Game(index, base_offset + start, bytes(view[start:pos]), header, move_info, visits)
        index += 1


def game_ends(raw, limit: int):
    """Byte offsets after each game of ``raw`` up to ``limit`` bytes in, one at a time, read from the
    counts alone (for cutting a large file into pieces at game boundaries); stops at the first framing
    problem."""
    view = memoryview(raw)
    size, pos = len(view), 0
    while pos < min(size, limit):
        if size - pos < 36:
            return
        move_num = struct.unpack_from("<H", view, pos + 32)[0]
        pos += 36
        if move_num > MAX_MOVES:
            return
        for _ in range(move_num):
            if size - pos < 6:
                return
            candidates = struct.unpack_from("<H", view, pos + 4)[0]
            pos += 6 + 4 * candidates
            if candidates > MAX_CANDIDATES or pos > size:
                return
        yield pos


@dataclass
class Hcpe3Positions:
    """The positions of one game that dlshogi trains on (``kept`` move indices, in order)."""

    states: bytes                      # 96 bytes per kept position (board, hands, side to move)
    kept: list[int] = field(default_factory=list)
    repetitions: int = 0               # moves with candidates left out as repetitions


def _repetition(history: list[bytes], after: int, checks: list[int], mover: int) -> str | None:
    """Apery's ``moveIsDraw(move, 16)`` for the move that led to ``history[after]``: 'draw', 'superior',
    'inferior', 'win' / 'lose' (a repetition by continuous check) or None. ``checks``: plies of continuous
    check per colour before the move."""
    now = history[after]
    side = now[95]
    hand = now[81 + 7 * side:88 + 7 * side]
    for i in range(4, min(after, REPETITION_PLIES) + 1, 2):
        then = history[after - i]
        if then[:81] != now[:81]:
            continue
        earlier = then[81 + 7 * side:88 + 7 * side]
        if earlier == hand:
            return "win" if i <= checks[mover] else "lose" if i <= checks[mover ^ 1] else "draw"
        if all(a >= b for a, b in zip(hand, earlier)):
            return "superior"
        if all(b >= a for a, b in zip(hand, earlier)):
            return "inferior"
    return None


def replay_hcpe3_game(game: Hcpe3Game, start: bytes) -> Hcpe3Positions:
    """Replay ``game`` from its decoded start position ``start`` (96 bytes). Raises ValueError naming the
    move when the start position is not legal or a selectedMove16 is not legal in its position."""
    try:
        position = Position.from_state(start)
    except ValueError as e:
        raise ValueError(f"the start position is not legal: {e}") from None
    history = [bytes(start)]
    checks = [0, 0]
    out = Hcpe3Positions(b"")
    states = []
    for m, (move16, candidates) in enumerate(zip(game.moves["selectedMove16"].tolist(),
                                                  game.moves["candidateNum"].tolist())):
        mover = position.turn
        before = list(checks)
        try:
            position.push_usi(usi_from_move16(move16))
        except (IllegalMove, KeyError, IndexError) as e:
            raise ValueError(f"move {m + 1}: selectedMove16 {move16:#06x} is not legal in its position ({e})") from None
        history.append(bytes(position.st))
        checks[mover] = checks[mover] + 2 if position.in_check else 0
        if candidates == 0:
            continue
        if _repetition(history, m + 1, before, mover) in ("draw", "superior", "inferior"):
            out.repetitions += 1
            continue
        out.kept.append(m)
        states.append(history[m])
    out.states = b"".join(states)
    return out


def visit_weights(visit_nums: np.ndarray, counts: np.ndarray, temperature: float) -> np.ndarray:
    """Policy targets (float32, one per candidate) from visit counts, position by position (``counts``
    candidates each, all > 0), as dlshogi's ``visits_to_proberbility``: a single candidate is one-hot;
    temperature 0 puts 1 on the first most-visited move; 1 divides by the sum (in float32); otherwise
    ``v^(1/T) / Σ v^(1/T)`` in float64. A position whose visits sum to 0 gets NaN weights."""
    visits = np.asarray(visit_nums, np.int64)
    counts = np.asarray(counts, np.int64)
    if len(counts) == 0:
        return np.zeros(0, np.float32)
    starts = np.cumsum(counts) - counts
    owner = np.repeat(np.arange(len(counts)), counts)
    if temperature == 0:
        best = np.maximum.reduceat(visits, starts)[owner] == visits
        first = np.full(len(counts), len(visits))      # the first most-visited candidate of each position
        np.minimum.at(first, owner[best], np.nonzero(best)[0])
        weights = np.zeros(len(visits), np.float32)
        weights[first] = 1.0
    elif temperature == 1:
        total = np.add.reduceat(visits, starts).astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            weights = visits.astype(np.float32) / total[owner]
    else:
        powered = visits.astype(np.float64) ** (1.0 / temperature)
        with np.errstate(invalid="ignore", divide="ignore"):
            weights = (powered / np.add.reduceat(powered, starts)[owner]).astype(np.float32)
    weights[np.repeat(counts == 1, counts)] = 1.0
    return weights


ENDGAME_OF_FLAG = {SENNICHITE: "%SENNICHITE", NYUGYOKU: "%KACHI", MAXMOVE: "%MAX_MOVES"}
FLAG_OF_ENDGAME = {"%SENNICHITE": SENNICHITE, "%KACHI": NYUGYOKU, "%MAX_MOVES": MAXMOVE, "%JISHOGI": MAXMOVE}


def result_meta(result: int) -> tuple[int | None, str | None]:
    """(winner: 0 Black, 1 White, None for a draw; the CSA ending it stands for) of a result byte.
    Raises ValueError for a winner field of 3."""
    winner = result & 3
    if winner == 3:
        raise ValueError(f"result byte {result:#04x}: winner field 3 is neither a draw nor a win")
    flags = [ENDGAME_OF_FLAG[f] for f in (SENNICHITE, NYUGYOKU, MAXMOVE) if result & f]
    endgame = flags[0] if flags else ("%TORYO" if winner else None)
    return (None if winner == 0 else winner - 1), endgame


def result_bits(winner: int | None, endgame: str | None) -> int:
    """The result byte of a game (inverse of :func:`result_meta`)."""
    return (0 if winner is None else winner + 1) | FLAG_OF_ENDGAME.get(endgame or "", 0)
