"""Shogi's vocabulary as shogitrain writes it: piece codes, squares, SFEN, USI and move16.

Squares: ``sq = (file - 1) * 9 + (rank - 1)`` — 1a = 0, 1i = 8, 9i = 80 (cshogi numbering).
Piece codes: black FU=1 KY=2 KE=3 GI=4 KA=5 HI=6 KI=7 OU=8 TO=9 NY=10 NK=11 NG=12 UM=13 RY=14,
white = black + 16, empty = 0 (cshogi / Apery numbering). Hands are counted in ``HAND_KINDS``
order (FU KY KE GI KI KA HI), dlshogi's features2 order.

move16: ``to | from << 7 | promote << 14``; a drop has ``from = 81 + piece_type - 1`` with the
piece types FU=1 … KI=7 above (KA=5, HI=6 come before KI=7) — cshogi's encoding.
"""

from __future__ import annotations

BLACK, WHITE = 0, 1
WHITE_OFFSET = 16
FU, KY, KE, GI, KA, HI, KI, OU, TO, NY, NK, NG, UM, RY = range(1, 15)
PIECE_NAMES = ["", "FU", "KY", "KE", "GI", "KA", "HI", "KI", "OU", "TO", "NY", "NK", "NG", "UM", "RY"]
CSA_PIECE = {name: pt for pt, name in enumerate(PIECE_NAMES) if name}  # CSA's two letters → piece type
PROMOTED_OFFSET = 8  # TO = FU + 8, …, RY = HI + 8 (KI and OU do not promote)

# Hand order used by hand[c, :] and by dlshogi's features2: FU KY KE GI KI KA HI.
HAND_KINDS = (FU, KY, KE, GI, KI, KA, HI)
HAND_INDEX = {pt: i for i, pt in enumerate(HAND_KINDS)}

SFEN_LETTERS = {"P": FU, "L": KY, "N": KE, "S": GI, "B": KA, "R": HI, "G": KI, "K": OU}
LETTER_OF = {v: k for k, v in SFEN_LETTERS.items()}

STARTPOS_SFEN = "lnsgkgsnl/1r5b1/ppppppppp/9/9/9/PPPPPPPPP/1B5R1/LNSGKGSNL b - 1"


def on_board(file: int, rank: int) -> bool:
    return 1 <= file <= 9 and 1 <= rank <= 9


def square(file: int, rank: int) -> int:
    """cshogi square index of (file 1–9, rank 1–9)."""
    return (file - 1) * 9 + (rank - 1)


# USI name of each square ("1a" … "9i") and the square of each name.
SQUARE_NAMES = tuple(f"{sq // 9 + 1}{chr(97 + sq % 9)}" for sq in range(81))
SQUARE_OF_NAME = {name: sq for sq, name in enumerate(SQUARE_NAMES)}


def parse_sfen(sfen: str) -> tuple[list[int], list[list[int]], int, int]:
    """Parse an SFEN position into (board[81], hand[2][7], turn, ply). ``startpos`` is accepted."""
    if sfen.strip() == "startpos":
        sfen = STARTPOS_SFEN
    parts = sfen.split()
    if parts and parts[0] == "sfen":
        parts = parts[1:]
    if len(parts) < 3:
        raise ValueError(f"bad SFEN {sfen!r}: expected board, side to move and hand")
    rows = parts[0].split("/")
    if len(rows) != 9:
        raise ValueError(f"bad SFEN {sfen!r}: expected 9 ranks")
    board = [0] * 81
    for rank, row in enumerate(rows, start=1):
        file = 9
        promoted = False
        for ch in row:
            if ch.isdigit():
                file -= int(ch)
                continue
            if ch == "+":
                promoted = True
                continue
            pt = SFEN_LETTERS.get(ch.upper())
            if pt is None or file < 1:
                raise ValueError(f"bad SFEN {sfen!r}: unexpected {ch!r} in rank {rank}")
            if promoted:
                if pt in (KI, OU):
                    raise ValueError(f"bad SFEN {sfen!r}: {ch!r} cannot promote")
                pt += PROMOTED_OFFSET
            board[square(file, rank)] = pt + (WHITE_OFFSET if ch.islower() else 0)
            file -= 1
            promoted = False
        if file != 0:
            raise ValueError(f"bad SFEN {sfen!r}: rank {rank} does not have 9 files")
    if parts[1] not in ("b", "w"):
        raise ValueError(f"bad SFEN {sfen!r}: side to move must be b or w")
    turn = BLACK if parts[1] == "b" else WHITE
    hand = [[0] * 7, [0] * 7]
    if parts[2] != "-":
        count = ""
        for ch in parts[2]:
            if ch.isdigit():
                count += ch
                continue
            pt = SFEN_LETTERS.get(ch.upper())
            if pt is None or pt == OU:
                raise ValueError(f"bad SFEN {sfen!r}: bad hand piece {ch!r}")
            hand[WHITE if ch.islower() else BLACK][HAND_INDEX[pt]] += int(count or 1)
            count = ""
    ply = int(parts[3]) if len(parts) > 3 else 1
    return board, hand, turn, ply


def sfen_of(board, hand, turn: int, ply: int = 1) -> str:
    """Inverse of :func:`parse_sfen` for a board/hand in row layout."""
    ranks = []
    for rank in range(1, 10):
        out, empty = "", 0
        for file in range(9, 0, -1):
            code = int(board[square(file, rank)])
            if code == 0:
                empty += 1
                continue
            if empty:
                out += str(empty)
                empty = 0
            white = code >= WHITE_OFFSET
            pt = code - WHITE_OFFSET if white else code
            prefix = ""
            if pt > OU:
                prefix, pt = "+", pt - PROMOTED_OFFSET
            letter = LETTER_OF[pt]
            out += prefix + (letter.lower() if white else letter)
        if empty:
            out += str(empty)
        ranks.append(out)
    hand_str = ""
    for color in (BLACK, WHITE):
        for pt in (HI, KA, KI, GI, KE, KY, FU):  # SFEN's customary order
            n = int(hand[color][HAND_INDEX[pt]])
            if n:
                letter = LETTER_OF[pt] if color == BLACK else LETTER_OF[pt].lower()
                hand_str += (str(n) if n > 1 else "") + letter
    return f"{'/'.join(ranks)} {'bw'[turn]} {hand_str or '-'} {ply}"


def move16_from_usi(usi: str) -> int:
    """cshogi move16 of a USI move string (``7g7f``, ``8h2b+``, ``P*5e``)."""
    if len(usi) >= 4 and usi[1] == "*":
        pt = SFEN_LETTERS[usi[0].upper()]
        return SQUARE_OF_NAME[usi[2:4]] | ((81 + pt - 1) << 7)
    frm, to = SQUARE_OF_NAME[usi[0:2]], SQUARE_OF_NAME[usi[2:4]]
    return to | (frm << 7) | ((1 << 14) if usi.endswith("+") else 0)


def usi_from_move16(move16: int) -> str:
    to = move16 & 0x7F
    frm = (move16 >> 7) & 0x7F
    if frm >= 81:
        return f"{LETTER_OF[frm - 80]}*{SQUARE_NAMES[to]}"
    return SQUARE_NAMES[frm] + SQUARE_NAMES[to] + ("+" if move16 & (1 << 14) else "")
