"""CSA game-record reader (``read_csa``) and the lean move-legality checker the readers share.

What the reader accepts
=======================
Input: a ``pathlib.Path``, a ``str`` naming an existing file, ``bytes`` (file contents), or a ``str`` of
CSA text. Files are decoded without user help: UTF-8 (with or without BOM) first; otherwise Shift_JIS
(cp932) or EUC-JP, chosen by an ``'encoding=`` comment when present, else by which decodes cleanly (when
both do, the one producing fewer half-width katakana — the signature of EUC-JP read as Shift_JIS). Bytes
that decode under no candidate are replaced (cp932, ``errors='replace'``) and noted in ``problems``.
``\\r\\n`` and ``\\r`` line ends are accepted.

Structure, per game (several games per file are separated by a line starting with ``/``):

* ``V2``/``V2.1``/``V2.2`` or no version line; comments ``'…``; names ``N+…``/``N-…``; ``$EVENT:``,
  ``$START_TIME:`` (other ``$`` keys are ignored).
* Start position: ``PI`` with optional removals (``PI82HI22KA``), full ``P1``…``P9`` rows, or piece lists
  ``P+…``/``P-…`` (``00`` = hand, ``00AL`` = all remaining pieces but kings), then ``+``/``-``.
  Without a side-to-move line, the side of the first move is used (black when there are no moves).
* Moves ``+7776FU`` / ``-0055KA`` (piece after the move, CSA notation), time lines ``T…``, and several
  statements on one line separated by commas (``+7776FU,T10``, ``%TORYO,T1``); a comma statement starting
  with ``'`` makes the rest of the line a comment.
* ``'** <score> [pv…]``: the score (int, as written, Black's view) belongs to the move just before the
  comment; the PV is ignored, a non-integer score gives None; when a move has several ``'**`` comments the
  first counts. ``'black_rate:…:<r>`` / ``'white_rate:…:<r>`` give the ratings (float after the last ``:``).
* Endings: ``'summary:<kind>:<name> <win|lose|draw>:<name> <…>`` takes precedence over the ``%`` token.
  The kind maps to a token (``toryo``→%TORYO, ``kachi``→%KACHI, ``sennichite``→%SENNICHITE, ``max_moves``
  →%MAX_MOVES, ``time up``→%TIME_UP, ``illegal move``/``uchifuzume``/``oute_kaihimore``/``oute_sennichite``
  →%ILLEGAL_MOVE, ``abnormal``→%CHUDAN, ``jishogi``→%JISHOGI; others ``%`` + upper-cased kind) and the
  winner is the side marked ``win`` (matched to N+/N- by name; when the names are equal, as in self-play,
  or do not match, by order: floodgate lists black first, white second). Without a summary, the winner
  follows from the ``%`` token and the side to move at the end of the record:

  ===========================  =============================================================
  %TORYO                       side to move resigned → loses
  %TIME_UP                     side to move ran out of time → loses
  %ILLEGAL_MOVE                side to move made the (unrecorded) illegal move → loses
  %TSUMI                       side to move is mated → loses
  %KACHI                       side to move declared (entering-king rule) → wins
  %+ILLEGAL_ACTION             black committed the foul → white wins
  %-ILLEGAL_ACTION             white committed the foul → black wins
  %SENNICHITE                  repetition draw → None
  %JISHOGI, %HIKIWAKE          draw → None
  %MAX_MOVES                   move limit reached, draw → None
  %CHUDAN                      interrupted → None
  %FUZUMI                      "no mate" (tsume solving), not a game result → None
  anything else                kept as written in ``endgame``, winner None, noted in ``problems``
  ===========================  =============================================================

Validation: every move is checked for full legality (piece ownership, geometry and blocked paths,
promotion zone and forced promotion, drops: piece in hand, empty square, nifu, dead ranks, pawn-drop
mate, and the mover's king not left in check). An illegal or unreadable move ends the game there: the
moves before it are kept and ``(line, reason)`` is added to ``problems``. The ending is still read; the
side to move used for the ``%`` rules is that of the record as written (its move lines counted), so the
recorded result stays right for the positions kept. Garbage lines, unknown piece codes and lines longer
than ``MAX_LINE`` characters become ``problems`` entries with their line number. A game without a usable
start position is dropped (``skipped`` collects it when given); :class:`RecordError` is raised only when
the whole input yields no game (empty, binary, nothing but garbage).

Legality checker
================
The board is a list of 81 piece codes (``shogitrain.shards.format`` numbering: sq = (file-1)*9 + rank-1,
black 1–14, white +16) with hands indexed by piece type. A move string is compiled once (memoised) into
its static part: squares, piece before/after, the squares a slider passes over, and whether geometry
and promotion rules allow it. Per move only the dynamic checks run. King safety uses the invariant that
the side not to move is never in check (both the start position and every accepted move keep it):

* a king move is legal iff its destination is not attacked once the king has left its square;
* when the mover is in check (tracked incrementally, see below), any other move is followed by a full
  attack test of the king square;
* otherwise a non-king move can only expose the king along the line from the king through the
  from-square (a pin): a scan of that one ray decides, unless the piece stays on the line;
* after each move the opponent is in check iff the moved piece attacks its king directly, or a slider of
  the mover attacks it along the line through the vacated from-square (discovered check). No other
  piece's attacks changed, and before the move the opponent was not in check.

The checker is cross-checked against python-shogi's ``legal_moves`` on every candidate move of many
positions in ``tests/test_records_csa.py``.
"""

from __future__ import annotations

import os
import pathlib
from typing import Iterable

from shogitrain.records.game import GameRecord, RecordError
from shogitrain.shards.format import (
    FU, GI, HAND_INDEX, HAND_KINDS, HI, KA, KE, KI, KY, LETTER_OF, NG, NK, NY, OU, PIECE_NAMES, RY, STARTPOS_SFEN,
    TO, UM, WHITE_OFFSET, parse_sfen, sfen_of, square,
)

__all__ = ["read_csa", "MAX_LINE", "Position", "IllegalMove", "decode_record_bytes", "load_text", "STATE_SIZE"]

MAX_LINE = 100_000  # characters; longer lines are reported and skipped
_BLACK, _WHITE = 0, 1


# ----------------------------------------------------------------------------------------------------
# Static tables
# ----------------------------------------------------------------------------------------------------

def _on(f: int, r: int) -> bool:
    return 1 <= f <= 9 and 1 <= r <= 9


_ORTH = ((0, -1), (0, 1), (-1, 0), (1, 0))
_DIAG = ((-1, -1), (1, -1), (-1, 1), (1, 1))
_GOLD = ((0, -1), (-1, -1), (1, -1), (-1, 0), (1, 0), (0, 1))
# (steps, slides) for black, as (file delta, rank delta); black moves towards rank 1.
_MOVES_BLACK = {
    FU: (((0, -1),), ()),
    KY: ((), ((0, -1),)),
    KE: (((-1, -2), (1, -2)), ()),
    GI: (((0, -1), (-1, -1), (1, -1), (-1, 1), (1, 1)), ()),
    KA: ((), _DIAG),
    HI: ((), _ORTH),
    KI: (_GOLD, ()),
    OU: (_ORTH + _DIAG, ()),
    TO: (_GOLD, ()),
    NY: (_GOLD, ()),
    NK: (_GOLD, ()),
    NG: (_GOLD, ()),
    UM: (_ORTH, _DIAG),
    RY: (_DIAG, _ORTH),
}
_DIRS = _ORTH + _DIAG  # direction d (1..8) is _DIRS[d - 1]


def _vectors(code: int):
    color = code >> 4
    pt = code & 15
    steps, slides = _MOVES_BLACK[pt]
    if color == _WHITE:
        steps = tuple((df, -dr) for df, dr in steps)
        slides = tuple((df, -dr) for df, dr in slides)
    return steps, slides


_CODES = [pt + WHITE_OFFSET * c for c in (0, 1) for pt in range(1, 15)]

# REACH[code][frm] = {to: squares passed over}, ignoring occupancy.
REACH: list = [None] * 32
for _code in _CODES:
    _steps, _slides = _vectors(_code)
    _table = []
    for _frm in range(81):
        _f, _r = _frm // 9 + 1, _frm % 9 + 1
        _d = {}
        for _df, _dr in _steps:
            if _on(_f + _df, _r + _dr):
                _d[square(_f + _df, _r + _dr)] = ()
        for _df, _dr in _slides:
            _between = []
            _f2, _r2 = _f + _df, _r + _dr
            while _on(_f2, _r2):
                _d[square(_f2, _r2)] = tuple(_between)
                _between.append(square(_f2, _r2))
                _f2, _r2 = _f2 + _df, _r2 + _dr
        _table.append(_d)
    REACH[_code] = _table

# REACH_LIST[code][frm][to]: the same as a list (None where unreachable).
REACH_LIST: list = [None] * 32
for _code in _CODES:
    REACH_LIST[_code] = [[_d.get(_to) for _to in range(81)] for _d in REACH[_code]]

# RAY[a][d]: squares from a in direction d (excluding a); DIRIDX[a][b]: d when b lies on such a ray, else 0.
RAY = [[()] * 9 for _ in range(81)]
DIRIDX = [[0] * 81 for _ in range(81)]
for _a in range(81):
    _f, _r = _a // 9 + 1, _a % 9 + 1
    for _di, (_df, _dr) in enumerate(_DIRS, start=1):
        _ray = []
        _f2, _r2 = _f + _df, _r + _dr
        while _on(_f2, _r2):
            _ray.append(square(_f2, _r2))
            DIRIDX[_a][square(_f2, _r2)] = _di
            _f2, _r2 = _f2 + _df, _r2 + _dr
        RAY[_a][_di] = tuple(_ray)

# SLIDE_CODES[c][d]: pieces of colour c that, standing on the ray from a target in direction d, attack
# the target by sliding back along it (at any distance).
SLIDE_CODES = [[frozenset()] * 9 for _ in range(2)]
for _c in (0, 1):
    for _di, (_df, _dr) in enumerate(_DIRS, start=1):
        SLIDE_CODES[_c][_di] = frozenset(
            code for code in _CODES if code >> 4 == _c and (-_df, -_dr) in _vectors(code)[1]
        )

def _step_targets(code: int, q: int) -> set:
    f, r = q // 9 + 1, q % 9 + 1
    return {square(f + df, r + dr) for df, dr in _vectors(code)[0] if _on(f + df, r + dr)}


# STEP_ATT[c][sq]: (q, codes) for neighbour / knight squares q from which a colour-c piece in codes
# attacks sq with a step. SLIDE_ATT[c][sq]: (ray, codes) for rays on which colour-c sliders may stand.
STEP_ATT = [[None] * 81 for _ in range(2)]
SLIDE_ATT = [[None] * 81 for _ in range(2)]
for _c in (0, 1):
    for _sq in range(81):
        _f, _r = _sq // 9 + 1, _sq % 9 + 1
        _entries = []
        for _df in (-1, 0, 1):
            for _dr in (-2, -1, 0, 1, 2):
                if (_df, _dr) == (0, 0) or (_dr in (-2, 2) and _df == 0) or not _on(_f + _df, _r + _dr):
                    continue
                _q = square(_f + _df, _r + _dr)
                _codes = frozenset(code for code in _CODES if code >> 4 == _c and _sq in _step_targets(code, _q))
                if _codes:
                    _entries.append((_q, _codes))
        STEP_ATT[_c][_sq] = tuple(_entries)
        SLIDE_ATT[_c][_sq] = tuple(
            (RAY[_sq][_di], SLIDE_CODES[_c][_di]) for _di in range(1, 9) if RAY[_sq][_di] and SLIDE_CODES[_c][_di]
        )
KING_NEIGHBOURS = [tuple(q for q in REACH[OU][sq]) for sq in range(81)]

_PIECE_CODE = {name: pt for pt, name in enumerate(PIECE_NAMES) if name}
_FILE_DIGITS = "0123456789"


def attacked(board, sq: int, by: int) -> bool:
    """Is square ``sq`` attacked by a piece of colour ``by``?"""
    for q, codes in STEP_ATT[by][sq]:
        if board[q] in codes:
            return True
    for ray, codes in SLIDE_ATT[by][sq]:
        for q in ray:
            v = board[q]
            if v:
                if v in codes:
                    return True
                break
    return False


# ----------------------------------------------------------------------------------------------------
# Move compilation (memoised per move string)
# ----------------------------------------------------------------------------------------------------

class IllegalMove(Exception):
    """The move is not legal in the position (the position is left undefined)."""


class BadMove(IllegalMove):
    """The move text cannot be read at all (bad squares, unknown piece code)."""


def _sqname(sq: int) -> str:
    return f"{sq // 9 + 1}{chr(97 + sq % 9)}"


# template: (color, frm, to, code, before_np, btw_np, usi_np, before_p, btw_p, usi_p, king, reach)
#   board move: before_* is the piece code the from-square must hold (no promotion / promotion), btw_* the
#   squares passed over, None when geometry or promotion rules forbid it; king: the mover is a king;
#   reach: REACH_LIST[code][to], the squares the piece attacks from its destination.
#   drop: frm = -1, before_np = index of the piece's hand slot in the state (0 when it has none),
#   btw_np = () or None for a statically forbidden drop, before_p = True for a pawn.
_MEMO: dict = {}


def _compile(s: str):
    if len(s) != 7 or s[0] not in "+-" or not s[1:5].isdigit() or not s[1:5].isascii():
        raise BadMove(f"unreadable move {s[:20]!r}")
    pt = _PIECE_CODE.get(s[5:7])
    if pt is None:
        raise BadMove(f"unknown piece code {s[5:7]!r} in {s!r}")
    color = 0 if s[0] == "+" else 1
    f1, r1, f2, r2 = (ord(ch) - 48 for ch in s[1:5])
    if not _on(f2, r2):
        raise BadMove(f"bad destination square in {s!r}")
    to = square(f2, r2)
    code = pt + WHITE_OFFSET * color
    last = 1 if color == 0 else 9
    if f1 == 0 and r1 == 0:
        ok = pt <= KI
        if pt in (FU, KY) and r2 == last:
            ok = False
        if pt == KE and r2 in ((1, 2) if color == 0 else (8, 9)):
            ok = False
        slot = HAND_SLOT[color][pt] if pt <= KI else 0
        t = (color, -1, to, code, slot, () if ok else None, f"{LETTER_OF.get(pt, '?')}*{_sqname(to)}",
             pt == FU, None, None, False, REACH_LIST[code][to])
    else:
        if not _on(f1, r1):
            raise BadMove(f"bad from square in {s!r}")
        frm = square(f1, r1)
        btw_np = REACH[code][frm].get(to)
        if btw_np is not None and (
            (pt in (FU, KY) and r2 == last) or (pt == KE and r2 in ((1, 2) if color == 0 else (8, 9)))
        ):
            btw_np = None  # must promote
        before_p = btw_p = None
        if TO <= pt <= RY:
            before_p = code - 8
            btw_p = REACH[before_p][frm].get(to)
            zone = (lambda r: r <= 3) if color == 0 else (lambda r: r >= 7)
            if btw_p is not None and not (zone(r1) or zone(r2)):
                btw_p = None
        usi = _sqname(frm) + _sqname(to)
        t = (color, frm, to, code, code, btw_np, usi, before_p, btw_p, usi + "+", pt == OU, REACH_LIST[code][to])
    _MEMO[s] = t
    return t


# ----------------------------------------------------------------------------------------------------
# Position
# ----------------------------------------------------------------------------------------------------

# The position state is one bytearray laid out like a shard row's first 96 bytes (see
# ``shogitrain.shards.format``): board[81] (piece codes), hands [black 7, white 7] in HAND_KINDS order,
# side to move. A snapshot of a position is then a plain copy of the state.
STATE_SIZE = 96
TURN_INDEX = 95
# HAND_SLOT[c][pt]: index in the state of colour c's count of hand piece type pt (FU..KI), 0 for others.
HAND_SLOT = [[0] * 15 for _ in (0, 1)]
for _c in (0, 1):
    for _pt in HAND_KINDS:
        HAND_SLOT[_c][_pt] = 81 + 7 * _c + HAND_INDEX[_pt]
# CAPTURE_SLOT[code]: the hand slot a captured piece ``code`` goes to (the capturer's, demoted type).
CAPTURE_SLOT = [0] * 32
for _code in _CODES:
    _pt = _code & 15
    if _pt != OU:
        CAPTURE_SLOT[_code] = HAND_SLOT[(_code >> 4) ^ 1][_pt - 8 if _pt > OU else _pt]

_SFEN_CACHE: dict = {}


class Position:
    """A shogi position with a fast, exact legality check for CSA moves (see module docstring).

    ``st`` is the state bytearray (board, hands, side to move; see ``STATE_SIZE``); ``board`` and ``hand``
    are read-only copies in list form.
    """

    __slots__ = ("st", "turn", "ksq", "in_check")

    def __init__(self, board, hand, turn: int):
        """``board``: 81 codes; ``hand``: [black, white], each indexed by piece type 1..7 (len 8)."""
        st = bytearray(STATE_SIZE)
        st[:81] = bytes(board)
        for c in (0, 1):
            for pt in HAND_KINDS:
                n = hand[c][pt]
                if not 0 <= n <= 255:
                    raise ValueError(f"{n} pieces of a kind in hand")
                st[HAND_SLOT[c][pt]] = n
        st[TURN_INDEX] = turn
        self._setup(st, turn)

    def _setup(self, st: bytearray, turn: int):
        self.st = st
        self.turn = turn
        if st.count(OU, 0, 81) > 1 or st.count(OU + WHITE_OFFSET, 0, 81) > 1:
            raise ValueError("more than one king of a colour")
        self.ksq = [k if k >= 0 else None for k in (st.find(OU, 0, 81), st.find(OU + WHITE_OFFSET, 0, 81))]
        opp = self.ksq[turn ^ 1]
        if opp is not None and attacked(st, opp, turn):
            raise ValueError("the side not to move is in check")
        me = self.ksq[turn]
        self.in_check = me is not None and attacked(st, me, turn ^ 1)

    @classmethod
    def from_state(cls, state) -> "Position":
        """Position from a 96-byte state (a shard row's board, hands and side to move)."""
        st = bytearray(state)
        if len(st) != STATE_SIZE:
            raise ValueError(f"state of {len(st)} bytes, expected {STATE_SIZE}")
        p = cls.__new__(cls)
        p._setup(st, st[TURN_INDEX])
        return p

    @classmethod
    def from_sfen(cls, sfen: str) -> "Position":
        board, hand7, turn, _ply = parse_sfen(sfen)
        hand = [[0] * 8, [0] * 8]
        for c in (0, 1):
            for i, pt in enumerate(HAND_KINDS):
                hand[c][pt] = hand7[c][i]
        return cls(board, hand, turn)

    @property
    def board(self) -> list:
        return list(self.st[:81])

    @property
    def hand(self) -> list:
        st = self.st
        return [[0] + [st[HAND_SLOT[c][pt]] for pt in range(1, 8)] for c in (0, 1)]

    def copy(self) -> "Position":
        p = Position.__new__(Position)
        p.st = bytearray(self.st)
        p.turn = self.turn
        p.ksq = self.ksq[:]
        p.in_check = self.in_check
        return p

    def sfen(self, ply: int = 1) -> str:
        st = self.st
        key = (bytes(st), ply)
        s = _SFEN_CACHE.get(key)
        if s is None:
            hand7 = [list(st[81:88]), list(st[88:95])]
            s = sfen_of(st[:81], hand7, self.turn, ply)
            if len(_SFEN_CACHE) > 4096:
                _SFEN_CACHE.clear()
            _SFEN_CACHE[key] = s
        return s

    def push(self, s: str) -> str:
        """Play CSA move ``s`` (exactly 7 characters, e.g. ``+7776FU``) and return it in USI.

        Raises :class:`IllegalMove` (:class:`BadMove` for unreadable text); the position is then undefined.
        """
        t = _MEMO.get(s)
        if t is None:
            t = _compile(s)
        color, frm, to, code, before_np, btw_np, usi, before_p, btw_p, usi_p, king, reach = t
        if color != self.turn:
            raise IllegalMove("move by the side not to move")
        st = self.st
        if frm < 0:  # drop; before_np is the hand slot, before_p "is a pawn"
            if btw_np is None:
                raise IllegalMove("this piece cannot be dropped there")
            if st[to]:
                raise IllegalMove("drop on an occupied square")
            if not st[before_np]:
                raise IllegalMove("piece not in hand")
            if before_p:
                f0 = to - to % 9
                if code in st[f0:f0 + 9]:
                    raise IllegalMove("second unpromoted pawn on the file (nifu)")
            st[to] = code
            if self.in_check:
                if attacked(st, self.ksq[color], color ^ 1):
                    raise IllegalMove("leaves the king in check")
            st[before_np] -= 1
            chk = False
            eks = self.ksq[color ^ 1]
            if eks is not None:
                b = reach[eks]
                if b is not None:
                    chk = True
                    for q in b:
                        if st[q]:
                            chk = False
                            break
                    if chk and before_p and _pawn_drop_mates(st, to, eks, color ^ 1):
                        raise IllegalMove("pawn-drop mate (uchifuzume)")
            self.in_check = chk
            self.turn = st[TURN_INDEX] = color ^ 1
            return usi
        p = st[frm]
        if p == before_np:
            btw = btw_np
        elif p == before_p:
            btw = btw_p
            usi = usi_p
        else:
            raise IllegalMove("the from-square does not hold that piece")
        if btw is None:
            raise IllegalMove("the piece cannot move so (geometry or promotion rule)")
        for q in btw:
            if st[q]:
                raise IllegalMove("path blocked")
        cap = st[to]
        if cap:
            if cap >> 4 == color:
                raise IllegalMove("captures its own piece")
            if cap & 15 == OU:
                raise IllegalMove("captures the king")
        st[frm] = 0
        st[to] = code
        enemy = color ^ 1
        ksq = self.ksq
        if king:
            ksq[color] = to
            if attacked(st, to, enemy):
                raise IllegalMove("king moves into check")
        else:
            ks = ksq[color]
            if ks is not None:
                if self.in_check:
                    if attacked(st, ks, enemy):
                        raise IllegalMove("leaves the king in check")
                else:
                    dk = DIRIDX[ks]
                    d = dk[frm]
                    if d and dk[to] != d:
                        codes = SLIDE_CODES[enemy][d]
                        for q in RAY[ks][d]:
                            v = st[q]
                            if v:
                                if v in codes:
                                    raise IllegalMove("moves a pinned piece")
                                break
        if cap:
            st[CAPTURE_SLOT[cap]] += 1
        chk = False
        eks = ksq[enemy]
        if eks is not None:
            b = reach[eks]
            if b is not None:
                chk = True
                for q in b:
                    if st[q]:
                        chk = False
                        break
            if not chk:
                dk = DIRIDX[eks]
                d = dk[frm]
                if d and dk[to] != d:
                    codes = SLIDE_CODES[color][d]
                    for q in RAY[eks][d]:
                        v = st[q]
                        if v:
                            chk = v in codes
                            break
        self.in_check = chk
        self.turn = st[TURN_INDEX] = enemy
        return usi

    def usi_to_csa(self, usi: str) -> str:
        """The CSA move string of a USI move in this position (raises BadMove when unreadable)."""
        t = _USI_MEMO.get(usi)
        if t is None:
            t = _compile_usi(usi)
        sign = "+-"[self.turn]
        if t[0] is None:  # drop
            return f"{sign}00{t[1]}{t[2]}"
        frm, fd, td, promote = t
        pt = self.st[frm] & 15
        if promote and TO > pt and pt not in (KI, OU) and pt:
            pt += 8
        elif promote:
            raise IllegalMove(f"{usi}: this piece cannot promote")
        if not pt:
            raise IllegalMove(f"{usi}: no piece on the from-square")
        return f"{sign}{fd}{td}{PIECE_NAMES[pt]}"

    def push_usi(self, usi: str) -> str:
        return self.push(self.usi_to_csa(usi))


_USI_MEMO: dict = {}
_USI_DROP = {"P": "FU", "L": "KY", "N": "KE", "S": "GI", "G": "KI", "B": "KA", "R": "HI"}


def _usi_sq(f: str, r: str):
    if f in "123456789" and len(f) == 1 and len(r) == 1 and "a" <= r <= "i":
        return f + str(ord(r) - 96)
    return None


def _compile_usi(usi: str):
    if len(usi) == 4 and usi[1] == "*" and usi[0] in _USI_DROP:
        to = _usi_sq(usi[2], usi[3])
        if to is None:
            raise BadMove(f"unreadable USI move {usi[:20]!r}")
        t = (None, to, _USI_DROP[usi[0]])
    elif len(usi) in (4, 5) and (len(usi) == 4 or usi[4] == "+"):
        fd, td = _usi_sq(usi[0], usi[1]), _usi_sq(usi[2], usi[3])
        if fd is None or td is None:
            raise BadMove(f"unreadable USI move {usi[:20]!r}")
        t = (square(int(fd[0]), int(fd[1])), fd, td, len(usi) == 5)
    else:
        raise BadMove(f"unreadable USI move {usi[:20]!r}")
    _USI_MEMO[usi] = t
    return t


def _pawn_drop_mates(board, to: int, eks: int, them: int) -> bool:
    """After a pawn drop on ``to`` checking the king of ``them`` on ``eks``: is it mate?

    The check is adjacent, so it cannot be blocked: only a king move or a capture of the pawn helps.
    """
    us = them ^ 1
    kcode = board[eks]
    board[eks] = 0
    try:
        for q in KING_NEIGHBOURS[eks]:
            v = board[q]
            if v and v >> 4 == them:
                continue
            board[q] = kcode
            safe = not attacked(board, q, us)
            board[q] = v
            if safe:
                return False
    finally:
        board[eks] = kcode
    pawn = board[to]
    candidates = [q for q, codes in STEP_ATT[them][to] if board[q] in codes and board[q] & 15 != OU]
    for ray, codes in SLIDE_ATT[them][to]:
        for q in ray:
            v = board[q]
            if v:
                if v in codes:
                    candidates.append(q)
                break
    for q in candidates:
        v = board[q]
        board[q] = 0
        board[to] = v
        safe = not attacked(board, eks, us)
        board[q] = v
        board[to] = pawn
        if safe:
            return False
    return True


# ----------------------------------------------------------------------------------------------------
# Loading and decoding
# ----------------------------------------------------------------------------------------------------

_ENCODING_NAMES = {
    "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "cp932": "cp932", "windows-31j": "cp932",
    "ms932": "cp932", "euc-jp": "euc_jp", "euc_jp": "euc_jp", "eucjp": "euc_jp", "utf-8": "utf-8-sig",
    "utf8": "utf-8-sig",
}


def _halfwidth_kana(text: str) -> int:
    return sum(1 for ch in text if "\uff61" <= ch <= "\uff9f")


def decode_record_bytes(raw: bytes, source=None) -> tuple[str, list]:
    """Decode a record file's bytes → (text, problems). Raises RecordError for empty or binary input."""
    if not raw.strip():
        raise RecordError(source, None, "empty file")
    if b"\x00" in raw:
        raise RecordError(source, None, "binary data (NUL bytes), not a text record")
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        pass
    declared = None
    k = raw.find(b"'encoding=", 0, 4096)
    if k >= 0:
        name = raw[k + 10:k + 40].split(b"\n")[0].strip().decode("ascii", "replace").lower()
        declared = _ENCODING_NAMES.get(name)
    candidates = {}
    for enc in ([declared] if declared else []) + ["cp932", "euc_jp"]:
        if enc in candidates:
            continue
        try:
            candidates[enc] = raw.decode(enc)
        except (UnicodeDecodeError, LookupError):
            continue
        if enc == declared:
            return candidates[enc], []
    if len(candidates) == 1:
        return next(iter(candidates.values())), []
    if candidates:
        sj, eu = candidates["cp932"], candidates["euc_jp"]
        return (eu if _halfwidth_kana(eu) < _halfwidth_kana(sj) else sj), []
    return raw.decode(declared or "cp932", errors="replace"), [
        (None, "undecodable bytes replaced (encoding guessed as Shift_JIS)")
    ]


def load_text(path_or_text, decode=decode_record_bytes) -> tuple[str, str | None, list]:
    """(text, source, problems) for a Path, a str path, bytes, or a str of record text."""
    if isinstance(path_or_text, os.PathLike):
        path = os.fspath(path_or_text)
        if os.path.isdir(path):
            raise RecordError(path, None, "is a directory")
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as e:
            raise RecordError(path, None, f"cannot read: {e.strerror or e}") from None
        text, probs = decode(raw, path)
        return text, path, probs
    if isinstance(path_or_text, (bytes, bytearray, memoryview)):
        text, probs = decode(bytes(path_or_text), None)
        return text, None, probs
    if isinstance(path_or_text, str):
        s = path_or_text
        if "\n" not in s and len(s) < 4096 and s.strip() and "\x00" not in s:
            try:
                is_file = os.path.isfile(s)
            except (OSError, ValueError):
                is_file = False
            if is_file:
                return load_text(pathlib.Path(s), decode)
        if s.startswith("\ufeff"):
            s = s[1:]
        return s, None, []
    raise TypeError(f"expected a path, bytes or text, not {type(path_or_text).__name__}")


def iter_chunks(text: str, sep: str = "/") -> Iterable[tuple[int, list[str]]]:
    """Yield (line number of the first line, lines) per game; games are separated by lines starting with
    ``sep``. Only one game's lines exist at a time."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    n = len(text)
    pos = 0
    lineno = 1
    marker = "\n" + sep
    if text.startswith(sep):  # separator on the very first line
        nl = text.find("\n")
        pos = n if nl < 0 else nl + 1
        lineno = 2
    while pos < n:
        j = text.find(marker, pos)
        end = n if j < 0 else j
        lines = text[pos:end].split("\n")
        yield lineno, lines
        lineno += len(lines)  # the separator line
        if j < 0:
            break
        nl = text.find("\n", j + 1)
        pos = n if nl < 0 else nl + 1
        lineno += 1


# ----------------------------------------------------------------------------------------------------
# Game parsing
# ----------------------------------------------------------------------------------------------------

_HIRATE = parse_sfen(STARTPOS_SFEN)[0]
_FULL_SET = {FU: 18, KY: 4, KE: 4, GI: 4, KI: 4, KA: 2, HI: 2}

_SUMMARY_KINDS = {
    "toryo": "%TORYO", "kachi": "%KACHI", "sennichite": "%SENNICHITE", "max_moves": "%MAX_MOVES",
    "time up": "%TIME_UP", "time_up": "%TIME_UP", "illegal move": "%ILLEGAL_MOVE", "uchifuzume": "%ILLEGAL_MOVE",
    "oute_kaihimore": "%ILLEGAL_MOVE", "oute_sennichite": "%ILLEGAL_MOVE", "abnormal": "%CHUDAN",
    "jishogi": "%JISHOGI", "hikiwake": "%HIKIWAKE", "chudan": "%CHUDAN", "tsumi": "%TSUMI",
}
_LOSS_FOR_MOVER = ("%TORYO", "%TIME_UP", "%ILLEGAL_MOVE", "%TSUMI")
_NO_WINNER = ("%SENNICHITE", "%JISHOGI", "%MAX_MOVES", "%HIKIWAKE", "%CHUDAN", "%FUZUMI")


class _Skip(Exception):
    def __init__(self, line, reason):
        super().__init__(reason)
        self.line = line
        self.reason = reason


def _winner_from_token(token: str, mover: int):
    if token in _LOSS_FOR_MOVER:
        return mover ^ 1, True
    if token == "%KACHI":
        return mover, True
    if token == "%+ILLEGAL_ACTION":
        return _WHITE, True
    if token == "%-ILLEGAL_ACTION":
        return _BLACK, True
    return None, token in _NO_WINNER


def _parse_summary(body: str, names):
    """'summary:<kind>:<name> <res>:<name> <res>' (body without the prefix) → (endgame, winner)."""
    parts = body.split(":")
    kind = parts[0].strip().lower()
    endgame = _SUMMARY_KINDS.get(kind) or ("%" + kind.upper().replace(" ", "_") if kind else None)
    winner = None
    results = []
    for part in parts[1:3]:
        part = part.strip()
        name, _, res = part.rpartition(" ")
        results.append((name, res.lower()))
    for idx, (name, res) in enumerate(results):
        if res == "win":
            if names[0] != names[1] and name and name in names:
                winner = names.index(name)
            else:
                winner = idx  # equal or unmatched names: floodgate lists black first
            break
    return endgame, winner


def _float_after_colon(s: str):
    try:
        return float(s.rsplit(":", 1)[1])
    except (ValueError, IndexError):
        return None


class _Header:
    __slots__ = ("board", "hand", "turn", "names", "event", "start_time", "rates", "summary", "problems")

    def __init__(self):
        self.board = None
        self.hand = [[0] * 8, [0] * 8]
        self.turn = None
        self.names = [None, None]
        self.event = None
        self.start_time = None
        self.rates = [None, None]
        self.summary = None
        self.problems = []


def _comment(h: _Header, line: str, ln: int):
    """Comments that carry data (anywhere in a game)."""
    if line.startswith("'black_rate:"):
        h.rates[0] = _float_after_colon(line)
    elif line.startswith("'white_rate:"):
        h.rates[1] = _float_after_colon(line)
    elif line.startswith("'summary:"):
        if h.summary is None:
            h.summary = (line[9:], ln)


def _place_row(h: _Header, line: str, ln: int):
    rank = ord(line[1]) - 48
    row = line[2:].ljust(27)
    if h.board is None:
        h.board = [0] * 81
    for i in range(9):
        cell = row[3 * i:3 * i + 3]
        sq = square(9 - i, rank)
        if cell.strip() in ("*", ""):
            h.board[sq] = 0
            continue
        pt = _PIECE_CODE.get(cell[1:3])
        if cell[0] not in "+-" or pt is None:
            raise _Skip(ln, f"unknown piece code {cell!r} in board row")
        h.board[sq] = pt + (WHITE_OFFSET if cell[0] == "-" else 0)


def _place_list(h: _Header, line: str, ln: int):
    color = 0 if line[1] == "+" else 1
    body = line[2:].rstrip()
    if len(body) % 4:
        raise _Skip(ln, f"malformed piece list {line[:40]!r}")
    if h.board is None:
        h.board = [0] * 81
    for k in range(0, len(body), 4):
        sqs, name = body[k:k + 2], body[k + 2:k + 4]
        if not sqs.isdigit() or not sqs.isascii():
            raise _Skip(ln, f"malformed piece list entry {body[k:k + 4]!r}")
        if sqs == "00" and name == "AL":
            counts = dict(_FULL_SET)
            for v in h.board:
                if v and v & 15 != OU:
                    pt = v & 15
                    counts[pt - 8 if pt > OU else pt] -= 1
            for c in (0, 1):
                for pt in counts:
                    counts[pt] -= h.hand[c][pt]
            for pt, n in counts.items():
                if n > 0:
                    h.hand[color][pt] += n
            continue
        pt = _PIECE_CODE.get(name)
        if pt is None:
            raise _Skip(ln, f"unknown piece code {name!r} in piece list")
        if sqs == "00":
            if pt > KI:
                raise _Skip(ln, f"{name} cannot be in hand")
            h.hand[color][pt] += 1
        else:
            f, r = int(sqs[0]), int(sqs[1])
            if not _on(f, r):
                raise _Skip(ln, f"bad square {sqs!r} in piece list")
            h.board[square(f, r)] = pt + WHITE_OFFSET * color


def _place_pi(h: _Header, line: str, ln: int):
    h.board = list(_HIRATE)
    body = line[2:].rstrip()
    for k in range(0, len(body), 4):
        item = body[k:k + 4]
        pt = _PIECE_CODE.get(item[2:4])
        if len(item) != 4 or not item[:2].isdigit() or not item[:2].isascii() or pt is None:
            raise _Skip(ln, f"malformed PI removal {item!r}")
        f, r = int(item[0]), int(item[1])
        if not _on(f, r) or h.board[square(f, r)] & 15 != pt:
            raise _Skip(ln, f"PI removal {item!r} does not match the initial position")
        h.board[square(f, r)] = 0


def _parse_game(lines: list[str], first: int, source, positions: bool = False) -> GameRecord | None:
    """Parse one game's lines (``first`` = line number of lines[0]). None for a game with no content."""
    h = _Header()
    n = len(lines)
    i = 0
    start = None  # index of the first line of the move section
    content = False
    while i < n:
        line = lines[i]
        ln = first + i
        if len(line) > MAX_LINE:
            h.problems.append((ln, f"line of {len(line)} characters skipped"))
            content = True
            i += 1
            continue
        line = line.rstrip() if line[:1] != "P" else line.rstrip("\n")
        if not line.strip():
            i += 1
            continue
        content = True
        c = line[0]
        if c == "'":
            _comment(h, line, ln)
        elif c == "+" or c == "-":
            if len(line) == 1:
                h.turn = 0 if c == "+" else 1
                start = i + 1
            else:
                start = i
            break
        elif c == "%":
            start = i
            break
        elif c == "P":
            kind = line[1:2]
            if kind == "I":
                _place_pi(h, line, ln)
            elif kind in ("1", "2", "3", "4", "5", "6", "7", "8", "9"):
                _place_row(h, line, ln)
            elif kind in ("+", "-"):
                _place_list(h, line, ln)
            else:
                raise _Skip(ln, f"unrecognised position line {line[:40]!r}")
        elif c == "N" and line[1:2] in ("+", "-"):
            h.names[0 if line[1] == "+" else 1] = line[2:] or None
        elif c == "$":
            if line.startswith("$EVENT:"):
                h.event = line[7:]
            elif line.startswith("$START_TIME:"):
                h.start_time = line[12:]
        elif c == "V" or c == "T":
            pass
        else:
            h.problems.append((ln, f"unrecognised line {line[:40]!r}"))
        i += 1
    if not content:
        return None
    if h.board is None:
        raise _Skip(first + (start if start is not None else 0), "no start position")
    if start is None:
        start = n
    if h.turn is None:
        turn = 0
        for j in range(start, n):
            s = lines[j].lstrip()
            if s[:1] in ("+", "-") and len(s) >= 7:
                turn = 0 if s[0] == "+" else 1
                break
        h.turn = turn
        h.problems.append((None, "no side-to-move line; assumed " + "+-"[turn]))
    try:
        pos = Position(h.board, h.hand, h.turn)
    except ValueError as e:
        raise _Skip(first + max(start - 1, 0), f"bad start position: {e}") from None
    rec = GameRecord(sfen=pos.sfen(), source=source, line=first)
    snaps = bytearray() if positions else None
    _read_moves(lines, start, first, pos, h, rec, snaps)
    if snaps is not None:
        rec._positions = (bytes(snaps), rec.moves)
    return rec


def _read_moves(lines, start, first, pos: Position, h: _Header, rec: GameRecord, snaps=None):
    """Replay the move section into ``rec``; with ``snaps`` (a bytearray), the state before each kept move
    (``STATE_SIZE`` bytes each) is appended to it.

    Every move is played by :meth:`Position.push`, whose legality checks are cross-checked against
    python-shogi.
    """
    moves = rec.moves
    moves_append = moves.append
    sc = {}              # number of moves played → score of the last of them
    last_scored = 0      # the largest key of sc (sc only grows at the end)
    problems = h.problems
    state = pos.st
    snap = snaps is not None
    start_turn = pos.turn
    stopped = False      # an illegal/unreadable move ended the replay
    stop_index = -1      # index in the record's move count of the rejected move
    extra = 0            # move lines of the record not in ``moves`` (rejected, or after a rejection)
    token = None
    token_recorded = 0
    after_end = False
    clean = True         # not stopped and not after the end: the fast path applies

    def play(move: str, line_no: int) -> None:
        """Play one move line; an illegal or unreadable one ends the replay (the game is kept before it)."""
        nonlocal stopped, clean, extra, stop_index
        if snap:
            snaps.extend(state)
        try:
            moves_append(pos.push(move))
        except IllegalMove as e:
            if snap:
                del snaps[-STATE_SIZE:]
            stopped = True
            clean = False
            extra += 1
            stop_index = len(moves) + extra
            problems.append((line_no, f"{'unreadable' if isinstance(e, BadMove) else 'illegal'} "
                                      f"move {move[:20]!r}: {e}; game kept up to the move before"))

    n = len(lines)
    for idx in range(start, n):
        line = lines[idx]
        c = line[:1]
        if c == "+" or c == "-":
            if clean:
                if len(line) == 7:
                    s = line
                elif len(line) > 8 and line[7] == "," and line[8] == "T" and line.find(",", 8) < 0:
                    s = line[:7]
                else:
                    s = None
                if s is not None:
                    play(s, first + idx)
                    continue
        elif c == "T":
            continue
        elif c == "'":
            if line[1:3] == "**":
                if not stopped:
                    nm = len(moves)
                    if nm != last_scored:  # the first '** with a score token after a move counts
                        tok = line[3:].lstrip().partition(" ")[0]
                        if tok and "_" not in tok:
                            last_scored = nm
                            try:
                                sc[nm] = int(tok)
                            except ValueError:
                                sc[nm] = None
                continue
            if len(line) <= MAX_LINE:
                _comment(h, line, first + idx)
            else:
                problems.append((first + idx, f"comment line of {len(line)} characters skipped"))
            continue
        # ---- slow path: comma statements, endings, names, garbage ----
        ln = first + idx
        if len(line) > MAX_LINE:
            problems.append((ln, f"line of {len(line)} characters skipped"))
            continue
        stripped = line.strip()
        if not stripped:
            continue
        if stripped[0] == "'":
            _comment(h, stripped, ln)
            continue
        stmts = stripped.split(",") if "," in stripped else [stripped]
        for k, st in enumerate(stmts):
            st = st.strip()
            if not st:
                continue
            ch = st[0]
            if ch == "'":
                _comment(h, ",".join(stmts[k:]).strip(), ln)
                break
            if ch == "+" or ch == "-":
                if after_end:
                    problems.append((ln, f"move after the end of the game: {st[:20]!r}"))
                    continue
                if stopped:
                    extra += 1
                    continue
                play(st, ln)
            elif ch == "T":
                continue
            elif ch == "%":
                if token is None:
                    token = st.split()[0]
                    token_recorded = len(moves) + extra
                    after_end = True
                    clean = False
            elif ch == "N" and st[1:2] in ("+", "-") and k == 0:
                h.names[0 if st[1] == "+" else 1] = stripped[2:] or None
                break
            elif ch == "$" and k == 0:
                if stripped.startswith("$EVENT:"):
                    h.event = stripped[7:]
                elif stripped.startswith("$START_TIME:"):
                    h.start_time = stripped[12:]
                break
            elif ch == "V" and k == 0:
                break
            else:
                problems.append((ln, f"unrecognised statement {st[:40]!r}"))
    # ---- result ----
    rec.scores = [None] * len(moves)
    for k, v in sc.items():
        if k <= len(moves):
            rec.scores[k - 1] = v
    rec.names = (h.names[0], h.names[1])
    rec.ratings = (h.rates[0], h.rates[1])
    rec.event = h.event
    rec.start_time = h.start_time
    endgame = winner = None
    if h.summary is not None:
        endgame, winner = _parse_summary(h.summary[0], h.names)
    elif token is not None:
        endgame = token
        if token == "%ILLEGAL_MOVE" and stopped and stop_index == token_recorded:
            # the illegal move itself was recorded (last before the token): its maker is the offender
            mover = start_turn ^ ((token_recorded - 1) & 1)
        else:
            mover = start_turn ^ (token_recorded & 1)
        winner, known = _winner_from_token(token, mover)
        if not known:
            problems.append((None, f"unknown ending {token!r}: winner None"))
    rec.endgame = endgame
    rec.winner = winner
    rec.problems = problems


def read_csa(path_or_text, *, skipped: list | None = None, positions: bool = False) -> list[GameRecord]:
    """Read every game of a CSA record (file path, Path, bytes or text). See the module docstring.

    ``skipped``: when given, a :class:`RecordError` is appended for each game that had to be dropped
    (no usable start position) when at least one game was read. Raises :class:`RecordError` (the first
    problem found) when no game at all can be read.

    ``positions``: also keep, on each record, the position before every move as it was replayed, for
    :func:`shogitrain.shards.convert.game_rows` (which then does not replay the game again): the private
    attribute ``_positions`` = (states, moves), ``states`` being ``len(moves) * STATE_SIZE`` bytes (board,
    hands, side to move, laid out as a shard row's first 96 bytes) and ``moves`` the record's move list
    object (a record whose move list was replaced or changed in length is replayed instead).
    """
    text, source, file_problems = load_text(path_or_text)
    return read_csa_text(text, source, file_problems, skipped=skipped, positions=positions)


def read_csa_text(text: str, source=None, file_problems=(), *, skipped: list | None = None,
                  positions: bool = False) -> list[GameRecord]:
    """:func:`read_csa` on decoded text (e.g. from :func:`decode_record_bytes`): ``source`` is the file
    name to report, ``file_problems`` the decoding problems to put first in each game's ``problems``."""
    file_problems = list(file_problems)
    games: list[GameRecord] = []
    dropped: list[RecordError] = []
    for first, lines in iter_chunks(text):
        try:
            rec = _parse_game(lines, first, source, positions)
        except _Skip as e:
            dropped.append(RecordError(source, e.line, e.reason))
            continue
        if rec is None:
            continue
        if file_problems:
            rec.problems[:0] = file_problems
        games.append(rec)
    if not games:
        if dropped:
            raise dropped[0]
        raise RecordError(source, None, "no game found")
    if skipped is not None:
        skipped.extend(dropped)
    return games
