"""A shogi position with a fast, exact legality check for CSA and USI moves (the record readers' replay).

The state is one bytearray laid out like a shard row's first 96 bytes: board[81] (piece codes of
shogitrain.shogi.vocabulary), hands [black 7, white 7] in HAND_KINDS order, side to move — a snapshot
of a position is a plain copy. A move string is compiled once (memoised) into its static part:
squares, piece before/after, the squares a slider passes over, and whether geometry and promotion
rules allow it; per move only the dynamic checks run. King safety relies on the side not to move
never being in check: a king move is legal iff its destination is not attacked; a player in check
tests the king square after any other move; otherwise only a pin along the line king → from-square
can expose the king; and the opponent is in check after a move iff the moved piece attacks its king
or a slider attacks it through the vacated square. docs/records.md ("Move legality") has the
details; tests/test_records_csa.py cross-checks every candidate move against python-shogi.
"""

from __future__ import annotations

from shogitrain.shogi.vocabulary import (
    CSA_PIECE, FU, GI, HAND_INDEX, HAND_KINDS, HI, KA, KE, KI, KY, LETTER_OF, NG, NK, NY, OU, PIECE_NAMES, RY,
    SFEN_LETTERS, SQUARE_NAMES, SQUARE_OF_NAME, TO, UM, WHITE_OFFSET, on_board, parse_sfen, sfen_of, square,
)

__all__ = ["Position", "IllegalMove", "BadMove", "STATE_SIZE", "TURN_INDEX", "attacked"]

_BLACK, _WHITE = 0, 1

# ----------------------------------------------------------------------------------------------------
# Static tables
# ----------------------------------------------------------------------------------------------------

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
            if on_board(_f + _df, _r + _dr):
                _d[square(_f + _df, _r + _dr)] = ()
        for _df, _dr in _slides:
            _between = []
            _f2, _r2 = _f + _df, _r + _dr
            while on_board(_f2, _r2):
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
        while on_board(_f2, _r2):
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
    return {square(f + df, r + dr) for df, dr in _vectors(code)[0] if on_board(f + df, r + dr)}


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
                if (_df, _dr) == (0, 0) or (_dr in (-2, 2) and _df == 0) or not on_board(_f + _df, _r + _dr):
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
    pt = CSA_PIECE.get(s[5:7])
    if pt is None:
        raise BadMove(f"unknown piece code {s[5:7]!r} in {s!r}")
    color = 0 if s[0] == "+" else 1
    f1, r1, f2, r2 = (ord(ch) - 48 for ch in s[1:5])
    if not on_board(f2, r2):
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
        t = (color, -1, to, code, slot, () if ok else None, f"{LETTER_OF.get(pt, '?')}*{SQUARE_NAMES[to]}",
             pt == FU, None, None, False, REACH_LIST[code][to])
    else:
        if not on_board(f1, r1):
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
        usi = SQUARE_NAMES[frm] + SQUARE_NAMES[to]
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
        Long on purpose: every record replays every move through here, so the drop and board-move
        checks are inlined rather than split into calls.
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
_USI_DROP = {letter: PIECE_NAMES[pt] for letter, pt in SFEN_LETTERS.items() if pt != OU}  # "P" → "FU"


def _csa_square(name: str) -> str | None:
    """CSA's two digits ("77") of a USI square name ("7g"); None when it is not one."""
    sq = SQUARE_OF_NAME.get(name)
    return None if sq is None else f"{sq // 9 + 1}{sq % 9 + 1}"


def _compile_usi(usi: str):
    if len(usi) == 4 and usi[1] == "*" and usi[0] in _USI_DROP:
        to = _csa_square(usi[2:4])
        if to is None:
            raise BadMove(f"unreadable USI move {usi[:20]!r}")
        t = (None, to, _USI_DROP[usi[0]])
    elif len(usi) in (4, 5) and (len(usi) == 4 or usi[4] == "+"):
        fd, td = _csa_square(usi[0:2]), _csa_square(usi[2:4])
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
