"""dlshogi input features and move labels, encoded for a whole batch with tensor ops.

The encoder runs on the device that trains (CPU or CUDA, same code, no Python loop over
positions). It matches ``cshogi.dlshogi.make_input_features`` / ``make_move_label`` (cshogi 1.1.0)
element for element; the exact definition is in ``docs/features-spec.md``. ``input2_planes=119``
adds dlshogi's ``NYUGYOKU_FEATURES`` (cshogi's ``use_nyugyoku_features(True)``): per side, 31 planes
on entering-king declaration (king in the enemy camp, pieces there, points), see :func:`_nyugyoku`.

How the planes are computed (two frames per position, file-packed bitboards, Kogge-Stone slider
fills, a bit-sliced attack counter, table-driven expansion; chunks on CPU): docs/features-spec.md,
"How the encoder computes them"; the measurements behind each choice: docs/benchmarks.md, "Features".
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from shogitrain.names import FEATURES1_PLANES, FEATURES2_PLANES, INPUT2_PLANES, NYUGYOKU_PLANES
from shogitrain.shards import format as fmt
from shogitrain.shogi import vocabulary as vocab

FEATURE_VERSION = 1

# Piece planes per color, in dlshogi (Apery) piece-type order.
PIECE_ORDER = (vocab.FU, vocab.KY, vocab.KE, vocab.GI, vocab.KA, vocab.HI, vocab.KI, vocab.OU,
               vocab.TO, vocab.NY, vocab.NK, vocab.NG, vocab.UM, vocab.RY)
# Hand planes per kind, in hand order FU KY KE GI KI KA HI.
HAND_PLANES = (8, 4, 4, 4, 4, 2, 2)

# Internal slot of each own piece type: each movement group is a contiguous slot range.
#   KE FU UM KI TO NY NK NG OU GI RY HI KY KA
_SLOT_TYPES = (vocab.KE, vocab.FU, vocab.UM, vocab.KI, vocab.TO, vocab.NY, vocab.NK, vocab.NG, vocab.OU, vocab.GI,
               vocab.RY, vocab.HI, vocab.KY, vocab.KA)
_SLOT = {pt: i for i, pt in enumerate(_SLOT_TYPES)}
S_KE, S_FU, S_UM, S_OU, S_GI, S_RY, S_KY, S_KA, S_HI = (
    _SLOT[vocab.KE], _SLOT[vocab.FU], _SLOT[vocab.UM], _SLOT[vocab.OU], _SLOT[vocab.GI], _SLOT[vocab.RY],
    _SLOT[vocab.KY], _SLOT[vocab.KA], _SLOT[vocab.HI])
N_OWN = 14
# scatter rows: the 14 slots (the side to move's pieces in the low half of the int32, the
# opponent's in the high half), the side to move's king once more (both halves), empty squares
R_OWN_KING = N_OWN
R_EMPTY = N_OWN + 1
N_ROWS = N_OWN + 2
# Movement groups (slot ranges): step up at the same file, step down at the same file, step up /
# sideways / down to a neighbouring file.
_UP0 = slice(1, 10)     # FU UM KI TO NY NK NG OU GI
_DOWN0 = slice(2, 9)    # UM KI TO NY NK NG OU
_UP1 = slice(3, 11)     # KI TO NY NK NG OU GI RY
_SIDE1 = slice(2, 9)    # UM KI TO NY NK NG OU
_DOWN1 = slice(8, 11)   # OU GI RY
_N_STEP_SLOTS = 11      # slots 0..10 have step moves

MASK9 = 0x1FF


def _scatter_tables():
    """Scatter row and value of (square, code | turn << 5), [81 * 64] each; squares in Black's
    view. The row is ``row * 11 + file + 1`` of the square as the side to move sees it (rotated
    180° when White moves; files 0 and 10 are guards); the value is the rank bit in the low half
    (the side to move's frame) and/or the rank-mirrored bit in the high half (the opponent's
    frame, seen upside down)."""
    rows = np.zeros((81, 64), np.int64)
    values = np.zeros((81, 64), np.int32)
    for sq in range(81):
        for turn in (0, 1):
            file, rank = divmod(80 - sq if turn else sq, 9)
            low, high = 1 << rank, 1 << (16 + 8 - rank)
            for code in range(32):
                white = code >= vocab.WHITE_OFFSET
                pt = code - vocab.WHITE_OFFSET if white else code
                if not vocab.FU <= pt <= vocab.RY:
                    row, value = R_EMPTY, low | high
                elif white != bool(turn):
                    row, value = _SLOT[pt], high
                elif pt == vocab.OU:
                    row, value = R_OWN_KING, low | high
                else:
                    row, value = _SLOT[pt], low
                rows[sq, code | turn << 5] = row * 11 + file + 1
                values[sq, code | turn << 5] = value
    return rows.reshape(-1), values.reshape(-1)


_SCATTER_ROW, _SCATTER_VALUE = _scatter_tables()
# output order of the 14 piece / attack planes, as slots
_OUT_SLOTS = [_SLOT[pt] for pt in PIECE_ORDER]

# hand planes of one color: for each of the 28 planes its kind (FU KY KE GI KI KA HI) and threshold
_HAND_COL, _HAND_THR = [], []
for _k, _n in enumerate(HAND_PLANES):
    for _j in range(_n):
        _HAND_COL.append(_k)
        _HAND_THR.append(_j)


# Slider fills: guard files before file 0 (a shift by up to 4 files is a view), and for each
# (side, group, piece, file) the row of ``own.view(14 * 11, N)`` (or of the guarded empty-square
# words) that it starts from: the slider slot at that file, read in reverse on side 1; guards read
# file 0 (always empty). The skew turns group 0 / group 2 diagonals into lines across files: a
# word moves up f / 8 - f ranks (f in the side's file order). A skewed word needs 17 bits, but the
# square that lands on bit 16 (file 8 rank i for group 0, file 0 rank i for group 2) is neither
# reached nor passed by a ray of its group, so int16 may drop it.
_RAY_GUARD = 4


def _ray_tables():
    files = range(-_RAY_GUARD, 9)
    slots = ((S_KA, S_UM), (S_RY, S_HI), (S_KA, S_UM))

    def guarded_file(f, side):      # index into the 11 guarded files of a word set
        return 0 if f < 0 else (8 - f if side else f) + 1

    rows, empty_rows = [], []
    for side in (0, 1):
        for group in slots:
            for slot in group:
                rows += [slot * 11 + guarded_file(f, side) for f in files]
        empty_rows += [guarded_file(f, side) for f in files]
    skew = np.zeros((3, len(files)), np.int16)       # group 1 (sideways) and the guards: none
    for j, f in enumerate(files):
        if f >= 0:
            skew[0, j], skew[2, j] = f, 8 - f
    return (np.array(rows, np.int64), np.array(empty_rows, np.int64),
            skew.reshape(1, 3, 1, len(files), 1))


_RAY_ROWS, _RAY_EMPTY_ROWS, _RAY_SKEW = _ray_tables()


class _Consts:
    """Per-(device, dtype) constant tensors, built once."""

    _cache: dict = {}

    @classmethod
    def get(cls, device: torch.device, dtype: torch.dtype) -> "_Consts":
        key = (str(device), dtype)
        c = cls._cache.get(key)
        if c is None:
            c = cls._cache[key] = cls(device, dtype)
        return c

    def __init__(self, device: torch.device, dtype: torch.dtype):
        sq = torch.arange(81, device=device)
        self.scatter_row = torch.from_numpy(_SCATTER_ROW).to(device)      # index sq * 64 + key
        self.scatter_value = torch.from_numpy(_SCATTER_VALUE).to(device)
        self.key_offset = (sq * 64).to(torch.int32).view(81, 1)
        self.out_slots = torch.tensor(_OUT_SLOTS, device=device)
        v = torch.arange(512, device=device).view(512, 1)
        r = torch.arange(9, device=device).view(1, 9)
        plain = (v >> r) & 1
        rev = (v >> (8 - r)) & 1
        self.lut = torch.cat([plain, rev]).to(dtype).contiguous()  # [1024, 9]
        self.lut2 = torch.tensor([[0] * 81, [1] * 81], device=device).to(dtype)   # [2, 81]
        # features2 hand planes: the kind and the threshold of each of a color's 28 planes
        self.hand_col = torch.tensor(_HAND_COL, device=device)
        self.hand_thr = torch.tensor(_HAND_THR, dtype=torch.uint8, device=device)
        self.labels = torch.from_numpy(_LABELS).to(device)
        self.ray_rows = torch.from_numpy(_RAY_ROWS).to(device)
        self.ray_empty_rows = torch.from_numpy(_RAY_EMPTY_ROWS).to(device)
        self.ray_skew = torch.from_numpy(_RAY_SKEW).to(device)
        # int16 ``>>`` is arithmetic: unskewing a word with bit 15 set by 8 also sets bit 8,
        # which at those files is the unreachable square of the group: cleared
        skew = self.ray_skew[:, :, :, _RAY_GUARD:]
        self.ray_mask = torch.where(skew == 8, 0xFF, MASK9).to(torch.int16)


def _bitboards(board: torch.Tensor, turn: torch.Tensor, k: _Consts):
    """board [B, 81] uint8, turn [B] -> (own [14, 11, 2B] int16, empty [11, 2B] int16, king [9, B] int32).

    Layout ``[slot, file, frame]``. Frames interleave: 2n = position n seen by the side to move
    (rotated 180° when White moves), 2n + 1 = the same seen by the opponent (the first frame
    mirrored top-bottom, colors swapped). In both, "own" pieces move towards rank a. ``king`` is
    the side to move's king in the second frame, in the high half of an int32 (a pair of frames
    seen as one int32 has the second frame there). Files 0 and 10 of ``own`` are empty guards.
    """
    n = board.shape[0]
    key = torch.empty(81, n, dtype=torch.uint8, device=board.device)
    torch.bitwise_or(board.t(), turn.view(1, n) << 5, out=key)
    key = key + k.key_offset                                       # [81, B] int32
    index = torch.index_select(k.scatter_row, 0, key.view(-1)).view(81, n)
    value = torch.index_select(k.scatter_value, 0, key.view(-1)).view(81, n)
    bb = torch.zeros(N_ROWS * 11, n, dtype=torch.int32, device=board.device)
    bb.scatter_add_(0, index, value)
    bb = bb.view(N_ROWS, 11, n)
    own = bb[:N_OWN]
    own_king = own[S_OU]
    own_king |= bb[R_OWN_KING] & 0xFFFF
    king = bb[R_OWN_KING, 1:10] & -65536
    return own.view(torch.int16), bb[R_EMPTY].view(torch.int16), king


def _sat_add(c1, c2, c3, x):
    """Add bitboard x (one attacker per set bit) into the saturating counter planes ≥1, ≥2, ≥3."""
    c3 |= c2 & x
    c2 |= c1 & x
    c1 |= x


def _rank_shift(x: torch.Tensor, ranks: int) -> torch.Tensor:
    """x moved ``ranks`` ranks towards rank a (negative: towards rank i), unmasked."""
    return x >> ranks if ranks > 0 else x << -ranks if ranks < 0 else x


def _attacks(bb: torch.Tensor, empty_g: torch.Tensor, planes: torch.Tensor, k: _Consts):
    """own bitboards [14, 11, N], empty squares [11, N] (guard files 0 and 10 empty) -> ``planes``
    [31, 9, N] (piece 14, attack 14, count 3, output order), filled in place.

    One function on purpose: its intermediates (shifted words, rays, the ten direction words) are
    views of each other, and the op order is what docs/benchmarks.md ("Features") measured."""
    wd = bb.dtype
    n = bb.shape[2]
    dev = bb.device
    inner = bb[:, 1:10]                                # [14, 9, N]
    empty = empty_g[1:10]                              # [9, N]
    occ = empty ^ MASK9

    # ---- stepping pieces (slots 0..10) ----
    att = torch.empty(14, 9, n, dtype=wd, device=dev)
    step = att[:_N_STEP_SLOTS]
    step.zero_()
    lr = bb[:_N_STEP_SLOTS, 0:9] | bb[:_N_STEP_SLOTS, 2:11]   # pieces on the neighbouring files
    # (``view |= x`` on a named view: ``step[i] |= x`` would also call ``__setitem__``)
    for src, group, ranks in ((inner, _UP0, 1), (inner, _DOWN0, -1), (lr, _UP1, 1), (lr, _SIDE1, 0),
                              (lr, _DOWN1, -1), (lr, S_KE, 2)):
        v = step[group]
        v |= _rank_shift(src[group], ranks)

    # per-direction unions of step attacks (for the counts); pieces never share a square, so
    # the sum over slots is their union
    up0 = bb[_UP0].sum(0, dtype=wd)          # [11, N]
    side = bb[_SIDE1].sum(0, dtype=wd)       # = the _DOWN0 group
    up1 = bb[_UP1].sum(0, dtype=wd)
    down1 = bb[_DOWN1].sum(0, dtype=wd)
    ke = bb[S_KE]

    # ---- vertical rays, inside the file word ----
    vs = inner[S_RY:S_KY + 1]                          # [3, 9, N]: RY HI KY
    g = vs.clone()
    p = empty
    g |= p & (g >> 1)
    p = p & (p >> 1)
    g |= p & (g >> 2)
    p = p & (p >> 2)
    g |= p & (g >> 4)
    ray_up = g >> 1                                    # RY HI KY towards rank a
    ray_down = (occ ^ (occ - (vs[0:2] << 1))) & MASK9  # RY HI towards rank i

    # ---- horizontal and diagonal rays, across files ----
    # groups: 0 = KA UM up-diagonal, 1 = RY HI sideways, 2 = KA UM down-diagonal; side 0 moves
    # towards higher files, side 1 towards lower files (its files are gathered in reverse).
    # Skewed words (file f's word shifted up f ranks for group 0, 8 - f for group 2) turn the
    # diagonals into horizontal lines, and _RAY_GUARD empty files before file 0 make a shift by
    # k files a view. Occluded fill (Kogge-Stone: steps of 1, 2, 4 files over empty squares),
    # then one more step onto the first blocker.
    n_files = _RAY_GUARD + 9
    fill = torch.index_select(bb.view(-1, n), 0, k.ray_rows).view(2, 3, 2, n_files, n)
    fill <<= k.ray_skew
    through = torch.index_select(empty_g, 0, k.ray_empty_rows).view(2, 1, 1, n_files, n) << k.ray_skew
    real = slice(_RAY_GUARD, n_files)
    fill_real, through_real = fill[:, :, :, real], through[:, :, :, real]
    for step_files in (1, 2, 4):
        from_ = slice(_RAY_GUARD - step_files, n_files - step_files)
        fill_real |= through_real & fill[:, :, :, from_]
        if step_files < 4:
            through_real.copy_(through_real & through[:, :, :, from_])
    from_ = slice(_RAY_GUARD - 1, n_files - 1)
    hray = ((fill[:, :, :, from_] >> k.ray_skew[:, :, :, real]) & k.ray_mask).view(2, 6, 9, n)
    hray_e = hray[0]
    hray_w = hray[1].flip(1)                           # back to normal file order

    # ---- per-type attack planes ----
    diag = hray_e[0:2] | hray_w[0:2] | hray_e[4:6] | hray_w[4:6]      # [2, 9, N] KA UM
    orth = hray_e[2:4] | hray_w[2:4] | ray_up[0:2] | ray_down         # [2, 9, N] RY HI
    step &= MASK9
    v = att[S_UM]
    v |= diag[1]
    v = att[S_RY]
    v |= orth[0]
    att[S_HI] = orth[1]
    att[S_KY] = ray_up[2]
    att[S_KA] = diag[0]

    # ---- attack counts: 10 directions, at most one attacker each ----
    dirs = [
        ((side[1:10] << 1) & MASK9) | ray_down.sum(0, dtype=wd),        # from above (down moves)
        side[0:9] | hray_e[2:4].sum(0, dtype=wd),                        # from the lower file
        side[2:11] | hray_w[2:4].sum(0, dtype=wd),                       # from the higher file
        (up1[0:9] >> 1) | hray_e[0:2].sum(0, dtype=wd),
        (up1[2:11] >> 1) | hray_w[0:2].sum(0, dtype=wd),
        ((down1[0:9] << 1) & MASK9) | hray_e[4:6].sum(0, dtype=wd),
        ((down1[2:11] << 1) & MASK9) | hray_w[4:6].sum(0, dtype=wd),
        ke[0:9] >> 2,
        ke[2:11] >> 2,
    ]
    c1, c2, c3 = planes[28], planes[29], planes[30]
    torch.bitwise_or(up0[1:10] >> 1, ray_up.sum(0, dtype=wd), out=c1)   # from below (up moves)
    c2.zero_()
    c3.zero_()
    for x in dirs:
        _sat_add(c1, c2, c3, x)

    torch.index_select(inner, 0, k.out_slots, out=planes[0:14])
    torch.index_select(att, 0, k.out_slots, out=planes[14:28])


def _resolve_device(device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def _encode_chunk(board, hand, turn, k: _Consts, x1: torch.Tensor, small: torch.Tensor) -> None:
    """Features of one chunk of positions: x1 (contiguous [b, 62, 9, 9]) and the 57 features2
    values (``small``, a [b, 57] bool view), filled in place."""
    device = board.device
    n = board.shape[0]
    board = board.to(torch.uint8)
    turn = turn.to(torch.uint8).view(n)
    own, empty, king = _bitboards(board, turn, k)
    planes = torch.empty(31, 9, 2 * n, dtype=torch.int16, device=device)
    _attacks(own, empty, planes, k)

    # Frame pairs as int32: the low half is the side to move's frame, the high half the opponent's.
    pairs = planes.view(torch.int32)
    # side to move in check: a piece of the opponent (the own color of the second frame) other
    # than its king attacks the king (cshogi counts checkers without the king): where the
    # opponent king attacks the square, a second attacker is needed.
    king_att = pairs[14 + 7]
    checked = (pairs[28] & ~king_att) | (pairs[29] & king_att)
    torch.any(checked & king, 0, out=small[:, 56])

    # hand planes: each count repeated over its kind's planes, then compared with the plane's
    # threshold
    hand = hand.reshape(n, 2, 7)
    own_first = torch.where(turn.view(n, 1, 1).bool(), hand.flip(1), hand)
    torch.gt(torch.index_select(own_first, 2, k.hand_col), k.hand_thr, out=small[:, :56].view(n, 2, 28))

    # lookup-table row per (position, plane, file). The opponent's planes (mirrored top-bottom)
    # use the rank-reversed half of the table (rows 512…1023): the frames interleave, so as
    # int32 every element is the pair (own word, opponent word), and bit 9 of the opponent word
    # is bit 25. Transposed, the [2B, 31 * 9] rows are the own then the opponent planes of each
    # position, the order of x1.
    pairs.bitwise_or_(512 << 16)
    idx = torch.empty(n, 2 * 31 * 9, dtype=torch.int32, device=device)
    idx.view(2 * n, 31 * 9).copy_(planes.view(31 * 9, 2 * n).t().contiguous())
    torch.index_select(k.lut, 0, idx.view(-1), out=x1.view(-1, 9))


# A large CPU batch is encoded in chunks of at most CHUNK positions, so that a chunk's working
# set stays in cache.
CHUNK = 4096


def _run_chunks(n: int, device: torch.device, encode_chunk) -> None:
    """Call ``encode_chunk(slice)`` over the batch: one slice on CUDA, chunks on CPU."""
    size = n if device.type != "cpu" else CHUNK
    for s in range(0, n, max(size, 1)):
        encode_chunk(slice(s, min(s + size, n)))


def _nyugyoku(board: torch.Tensor, hand: torch.Tensor, turn: torch.Tensor, out: torch.Tensor) -> None:
    """dlshogi's NYUGYOKU_FEATURES into ``out`` ([b, 62] bool): 31 planes per side, the side to move's
    first. For the side c with enemy camp E (ranks a–c for Black, g–i for White): plane 0 its king is
    in E; planes 1…10 one-hot at 1 + r, r = 10 − (its other pieces in E); planes 11…30 one-hot at
    11 + r, r = (28 Black / 27 White) − points, points = small pieces in E and in hand + 5 × (bishops
    and rooks, promoted or not, in E and in hand). As cshogi 1.1.0 (the oracle) a plane is set only
    for 0 ≤ r < 10 (20); DeepLearningShogi's own code sets the first plane for r < 0 as well."""
    n = board.shape[0]
    code = board.to(torch.int64)
    rank = torch.arange(81, device=board.device) % 9
    camp = torch.stack([rank <= 2, rank >= 6])                          # [2, 81]: Black's, White's
    kind = code & 15
    big = (kind == vocab.KA) | (kind == vocab.HI) | (kind == vocab.UM) | (kind == vocab.RY)
    planes = torch.zeros(n, 2, 31, dtype=torch.bool, device=board.device)
    rows = torch.arange(n, device=board.device)
    for c in (0, 1):
        mine = (code != 0) & ((code >> 4) == c) & camp[c]
        king = (mine & (kind == vocab.OU)).any(1)
        pieces = mine.sum(1) - king.to(torch.int64)
        big_pieces = (mine & big).sum(1)
        h = hand[:, c].to(torch.int64)                                   # FU KY KE GI KI KA HI
        points = pieces - big_pieces + h[:, :5].sum(1) + 5 * (big_pieces + h[:, 5] + h[:, 6])
        rest_field, rest_points = 10 - pieces, (28 - c) - points
        planes[:, c, 0] = king
        planes[rows, c, 1 + rest_field.clamp(0, 9)] |= (rest_field >= 0) & (rest_field < 10)
        planes[rows, c, 11 + rest_points.clamp(0, 19)] |= (rest_points >= 0) & (rest_points < 20)
    own_first = torch.where(turn.view(n, 1, 1).bool(), planes.flip(1), planes)
    out.copy_(own_first.reshape(n, NYUGYOKU_PLANES))


def _outputs(n: int, device, dtype, out, expand_x2: bool, planes2: int = FEATURES2_PLANES):
    """(x1, x2 or None) to write: fresh, or the caller's ``out`` checked."""
    if out is None:
        x1 = torch.empty(n, FEATURES1_PLANES, 9, 9, dtype=dtype, device=device)
        x2 = torch.empty(n, planes2, 9, 9, dtype=dtype, device=device) if expand_x2 else None
        return x1, x2
    x1, x2 = out
    if x2 is None and expand_x2:
        raise ValueError("out=(x1, None) needs expand_x2=False")
    if x1.shape != (n, FEATURES1_PLANES, 9, 9) or not x1.is_contiguous() or x1.device != device:
        raise ValueError("out x1 must be a contiguous [B, 62, 9, 9] tensor on the encoding device")
    if x2 is not None and (x2.shape != (n, planes2, 9, 9) or not x2.is_contiguous()
                           or x2.dtype != x1.dtype or x2.device != device):
        raise ValueError(f"out x2 must be a contiguous [B, {planes2}, 9, 9] tensor of x1's dtype and device")
    return x1, (x2 if expand_x2 else None)


def _encode(board, hand, turn, move16, dtype, out, expand_x2: bool, planes2: int = FEATURES2_PLANES):
    """-> (x1, x2, labels or None); see :func:`encode_board`."""
    if planes2 not in INPUT2_PLANES:
        raise ValueError(f"input2_planes must be one of {INPUT2_PLANES}, not {planes2}")
    device = board.device
    n = board.shape[0]
    if out is not None:
        dtype = out[0].dtype
    k = _Consts.get(device, dtype)
    x1, x2 = _outputs(n, device, dtype, out, expand_x2, planes2)
    small = torch.empty(n, planes2, dtype=torch.bool, device=device)
    labels = None if move16 is None else torch.empty(n, dtype=torch.int64, device=device)

    def encode_chunk(s: slice) -> None:
        _encode_chunk(board[s], hand[s], turn[s], k, x1[s], small[s, :FEATURES2_PLANES])
        if planes2 > FEATURES2_PLANES:
            _nyugyoku(board[s], hand[s].reshape(-1, 2, 7), turn[s], small[s, FEATURES2_PLANES:])
        if x2 is not None:        # each plane is all zeros or all ones: one 81-wide table row
            torch.index_select(k.lut2, 0, small[s].reshape(-1).to(torch.int32), out=x2[s].view(-1, 81))
        if labels is not None:
            labels[s] = _labels(move16[s], turn[s], k.labels)

    _run_chunks(n, device, encode_chunk)
    if x2 is None:                # [B, 57, 9, 9] view, stride 0 over the cells
        x2 = small.to(x1.dtype).view(n, planes2, 1, 1).expand(n, planes2, 9, 9)
    return x1, x2, labels


def encode_board(board: torch.Tensor, hand: torch.Tensor, turn: torch.Tensor,
                 dtype: torch.dtype = torch.float32, out=None, expand_x2: bool = True,
                 input2_planes: int = FEATURES2_PLANES):
    """dlshogi features of a batch.

    board uint8 [B, 81] (cshogi piece codes, Black's view), hand uint8 [B, 2, 7] (FU KY KE GI KI KA
    HI), turn uint8 [B] (0 black, 1 white to move), all on the device that encodes.
    Returns ``(x1 [B, 62, 9, 9], x2 [B, 57, 9, 9])`` of ``dtype`` (float32, bfloat16, float16,
    uint8 or bool). ``out=(x1, x2)``: preallocated contiguous outputs of that shape and dtype to
    fill instead (saves the page faults of fresh large CPU allocations).
    ``expand_x2=False``: x2 comes back as a broadcast view (stride 0 over the 81 cells, every
    plane of features2 is constant) instead of a materialized tensor — same values, no 57 × 81
    writes a position; ``out`` then only needs x1 (``out=(x1, None)``). ``input2_planes=119``: x2 is
    [B, 119, 9, 9] with dlshogi's entering-king planes after the 57.
    """
    x1, x2, _ = _encode(board, hand.reshape(-1, 2, 7), turn, None, dtype, out, expand_x2, input2_planes)
    return x1, x2


def _direction(frm: int, to: int) -> int:
    """dlshogi move direction of a board move between (already rotated) squares."""
    dx = frm // 9 - to // 9            # from_x - to_x
    dy = to % 9 - frm % 9              # to_y - from_y
    rules = (
        (dy < 0 and dx == 0, 0), (dy == -2 and dx == -1, 8), (dy == -2 and dx == 1, 9),
        (dy < 0 and dx < 0, 1), (dy < 0 and dx > 0, 2), (dy == 0 and dx < 0, 3),
        (dy == 0 and dx > 0, 4), (dy > 0 and dx == 0, 5), (dy > 0 and dx < 0, 6),
        (dy > 0 and dx > 0, 7),
    )
    return next((d for cond, d in rules if cond), 0)


def _label_table() -> np.ndarray:
    """label of ``move16 & 0x7FFF | turn << 15`` (to | from << 7 | promote << 14 | turn << 15):
    [65536] int64. Fields past the board / the drop codes (garbage rows) read as the last ones."""
    table = np.zeros((2, 88, 81), np.int64)
    for turn in range(2):
        for frm in range(88):
            for to in range(81):
                t = 80 - to if turn else to
                if frm >= 81:
                    # cshogi 1.1.0 numbers drops by piece type (FU KY KE GI KA HI KI -> 20 … 26),
                    # i.e. the move16 drop code itself: G*5b is 26, B*5b 24, R*5b 25
                    # (docs/features-spec.md, "Move labels": not the hand order of features2;
                    # the tests pin cshogi's numbering)
                    direction = 20 + frm - 81
                else:
                    direction = _direction(80 - frm if turn else frm, t)
                table[turn, frm, to] = 81 * direction + t
    fields = np.arange(128)
    full = table[:, np.minimum(fields, 87)][:, :, np.minimum(fields, 80)]     # [turn, from, to]
    promote = np.array([0, 810]).reshape(1, 2, 1, 1)
    return (full[:, None] + promote).reshape(-1)                             # [turn, promote, from, to]


_LABELS = _label_table()


def label_table() -> np.ndarray:
    """The dlshogi move label of every ``move16 & 0x7FFF | turn << 15``: int64 [65536] (do not modify)
    (cshogi's full move codes have move16 in their low 16 bits, so they index it the same way)."""
    return _LABELS


def move_labels(board, move16: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """dlshogi move labels (``81 * direction + to``, 0 … 2186) of cshogi move16 codes, int64 [B].

    ``board`` is not needed (the label depends on the move and the side to move only); it is
    accepted for symmetry with :func:`encode_board` and may be None.
    """
    return _labels(move16, turn, _Consts.get(move16.device, torch.float32).labels)


def _labels(move16: torch.Tensor, turn: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    key = move16.to(torch.int32) & 0x7FFF
    key |= turn.to(device=key.device, dtype=torch.int32).view(-1) << 15
    return torch.index_select(table, 0, key.view(-1))


def _fields(rows: np.ndarray) -> np.ndarray:
    if rows.dtype != fmt.POSITION_DTYPE:
        raise TypeError(f"expected rows of POSITION_DTYPE, got {rows.dtype}")
    raw = np.ascontiguousarray(rows).view(np.uint8).reshape(len(rows), fmt.POSITION_DTYPE.itemsize)
    # shards are read with np.load(mmap_mode="r"): torch wants a writable buffer (107 bytes a row)
    return raw if raw.flags.writeable else raw.copy()


def encode_rows(rows: np.ndarray, device="cpu", non_blocking: bool = False,
                dtype: torch.dtype = torch.float32, out=None, expand_x2: bool = True,
                input2_planes: int = FEATURES2_PLANES):
    """Shard rows (POSITION_DTYPE) -> ``(x1, x2, labels)`` on ``device``.

    The compact rows (107 bytes a position) go to the device as one byte tensor (pinned first
    when the device is CUDA) and are encoded there. ``dtype``, ``out``, ``expand_x2``,
    ``input2_planes``: as in :func:`encode_board`.
    """
    device = _resolve_device(device)
    raw = torch.from_numpy(_fields(rows))
    if device.type == "cuda":
        raw = raw.pin_memory()
    raw = raw.to(device, non_blocking=non_blocking)
    f = fmt.POSITION_DTYPE.fields
    ob, oh, ot, om = f["board"][1], f["hand"][1], f["turn"][1], f["move16"][1]
    board = raw[:, ob:ob + 81]
    hand = raw[:, oh:oh + 14].reshape(-1, 2, 7)
    turn = raw[:, ot]
    move16 = raw[:, om].to(torch.int32) | (raw[:, om + 1].to(torch.int32) << 8)
    return _encode(board, hand, turn, move16, dtype, out, expand_x2, input2_planes)


def features_from_sfens(sfens: Sequence[str], device="cpu", input2_planes: int = FEATURES2_PLANES):
    """(x1 float [B, 62, 9, 9], x2 float [B, 57 or 119, 9, 9]) of SFEN positions (``startpos`` accepted)."""
    rows = fmt.rows_from_sfens(sfens)
    x1, x2, _ = encode_rows(rows, device=device, input2_planes=input2_planes)
    return x1, x2


def move_label(sfen: str, usi_move: str) -> int:
    """dlshogi move label of a USI move played from an SFEN position."""
    rows = fmt.rows_from_sfens([sfen], [usi_move])
    m = torch.from_numpy(rows["move16"].astype(np.int32))
    t = torch.from_numpy(rows["turn"].copy())
    return int(move_labels(None, m, t)[0])
