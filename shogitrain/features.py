"""dlshogi input features and move labels, encoded for a whole batch with tensor ops.

The encoder runs on the device that trains (CPU or CUDA, same code, no Python loop over
positions). It matches ``cshogi.dlshogi.make_input_features`` / ``make_move_label`` (cshogi 1.1.0)
element for element; the exact definition is in ``docs/features-spec.md``.

Design (measurements in ``docs/benchmarks.md``, "Features"):

* Two *frames* per position: the position seen by the side to move (rotated 180° when White is
  to move), and the same seen by the opponent — the first frame mirrored top-bottom with the
  colors swapped. In both, the "own" pieces move towards rank a, so every attack is computed
  once, for "own" pieces, over ``2B`` interleaved frames (frame ``2n`` / ``2n + 1``).
* File-packed bitboards: one int16 per (piece slot, file, frame), bit ``r`` = rank ``r`` (rank a =
  bit 0), laid out ``[slot, file, frame]`` — the batch is the innermost, contiguous dimension, so
  a file shift is a view on an outer dimension and every op is one long vectorized loop. Two
  guard files (always empty) pad the file dimension. One ``scatter_add`` of an int32 per square
  builds both frames at once: the low half carries the rank bit, the high half the mirrored one,
  so the int32 tensor viewed as int16 is the interleaved pair of frames.
* Stepping pieces: one shift per rank offset over stacked slot ranges (slots are ordered so each
  movement group is a contiguous range), files via views.
* Sliders: vertical rays inside the int16 (Kogge-Stone fill towards rank a, borrow trick
  ``occ ^ (occ - 2·s)`` towards rank i); horizontal and diagonal rays by stepping file by file
  (≤ 8 steps, each over the files a ray can still be on), both horizontal senses at once.
* Attack counts: rays and steps of one color in one of the 10 directions (8 + 2 knight jumps)
  never overlap, so the number of attackers of a square is the number of directions it is attacked
  from; a bit-sliced saturating counter over the 10 direction bitboards gives the ≥1/≥2/≥3 planes.
* Expansion: the [31 planes × 9 files, 2B] words are transposed once (2-D blocked copy; the
  interleaved frames make each position's rows "own planes, then opponent planes"), and each
  9-bit file value indexes a 9-wide lookup table (1024 rows: plain ranks, and rank-reversed for
  the mirrored opponent frame) with one ``index_select`` straight into the output, which may be
  preallocated (``out=``). features2 is 57 values a position; each plane is one 81-wide row of
  a two-row table (all zeros / all ones), again one ``index_select``.
* On CPU the bit-twiddling part runs on one intra-op thread (``SINGLE_THREAD_COMPUTE``), the
  output writes on torch's default thread count.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import numpy as np
import torch

from shogitrain.shards import format as fmt

FEATURE_VERSION = 1

FEATURES1_NUM = 62
FEATURES2_NUM = 57
MOVE_LABEL_NUM = 27 * 81

# Piece planes per color, in dlshogi (Apery) piece-type order.
PIECE_ORDER = (fmt.FU, fmt.KY, fmt.KE, fmt.GI, fmt.KA, fmt.HI, fmt.KI, fmt.OU,
               fmt.TO, fmt.NY, fmt.NK, fmt.NG, fmt.UM, fmt.RY)
# Hand planes per kind, in hand order FU KY KE GI KI KA HI.
HAND_PLANES = (8, 4, 4, 4, 4, 2, 2)

# Internal slot of each own piece type: each movement group is a contiguous slot range.
#   KE FU UM KI TO NY NK NG OU GI RY HI KY KA
_SLOT_TYPES = (fmt.KE, fmt.FU, fmt.UM, fmt.KI, fmt.TO, fmt.NY, fmt.NK, fmt.NG, fmt.OU, fmt.GI,
               fmt.RY, fmt.HI, fmt.KY, fmt.KA)
_SLOT = {pt: i for i, pt in enumerate(_SLOT_TYPES)}
S_KE, S_FU, S_UM, S_OU, S_GI, S_RY, S_KY, S_KA, S_HI = (
    _SLOT[fmt.KE], _SLOT[fmt.FU], _SLOT[fmt.UM], _SLOT[fmt.OU], _SLOT[fmt.GI], _SLOT[fmt.RY],
    _SLOT[fmt.KY], _SLOT[fmt.KA], _SLOT[fmt.HI])
N_OWN = 14
S_EMPTY = 2 * N_OWN     # scatter slots: 0..13 black pieces, 14..27 white pieces, 28 empty squares
N_SLOTS = 2 * N_OWN + 1
# Movement groups (slot ranges): step up at the same file, step down at the same file, step up /
# sideways / down to a neighbouring file.
_UP0 = slice(1, 10)     # FU UM KI TO NY NK NG OU GI
_DOWN0 = slice(2, 9)    # UM KI TO NY NK NG OU
_UP1 = slice(3, 11)     # KI TO NY NK NG OU GI RY
_SIDE1 = slice(2, 9)    # UM KI TO NY NK NG OU
_DOWN1 = slice(8, 11)   # OU GI RY
_N_STEP_SLOTS = 11      # slots 0..10 have step moves

MASK9 = 0x1FF


def _code_tables():
    """Scatter slot of (code | turn << 5): the side to move's pieces get slots 0..13 ("black" half
    of the scatter), the opponent's 14..27, in internal slot order."""
    slot = np.full(64, S_EMPTY, dtype=np.int64)
    for pt in range(1, 15):
        black, white = pt, pt + fmt.WHITE_OFFSET
        slot[black] = _SLOT[pt]                      # black to move
        slot[white] = N_OWN + _SLOT[pt]
        slot[32 + white] = _SLOT[pt]                 # white to move
        slot[32 + black] = N_OWN + _SLOT[pt]
    return slot


_SLOT_OF_KEY = _code_tables()
# output order of the 14 piece / attack planes, as slots
_OUT_SLOTS = [_SLOT[pt] for pt in PIECE_ORDER]

# hand planes of one color: for each of the 28 planes its kind (FU KY KE GI KI KA HI) and threshold
_HAND_COL, _HAND_THR = [], []
for _k, _n in enumerate(HAND_PLANES):
    for _j in range(_n):
        _HAND_COL.append(_k)
        _HAND_THR.append(_j)


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
        # scatter row of (square, code | turn << 5): slot * 11 + file + 1; guard files 0 and 10
        rows = (sq.view(81, 1) // 9 + 1) + 11 * torch.tensor(_SLOT_OF_KEY, device=device).view(1, 64)
        self.scatter_row = rows.reshape(-1).contiguous()          # [81 * 64], index sq * 64 + key
        self.key_offset = (sq * 64).to(torch.int32).view(81, 1)
        # one int32 per square carries the rank bit twice: low half plain (frame of the side to
        # move), high half rank-mirrored (frame of the opponent, seen upside down)
        r = sq % 9
        self.rank_bits = ((1 << r) | (1 << (16 + 8 - r))).to(torch.int32).view(81, 1)
        self.out_slots = torch.tensor(_OUT_SLOTS, device=device)
        v = torch.arange(512, device=device).view(512, 1)
        r = torch.arange(9, device=device).view(1, 9)
        plain = (v >> r) & 1
        rev = (v >> (8 - r)) & 1
        self.lut = torch.cat([plain, rev]).to(dtype).contiguous()  # [1024, 9]
        self.lut2 = torch.tensor([[0] * 81, [1] * 81], device=device).to(dtype)   # [2, 81]
        self.hand_thr = torch.tensor(_HAND_THR, device=device, dtype=torch.float32)
        self.side_offset = torch.tensor([0, 512], dtype=torch.int32, device=device).view(1, 2, 1)
        self.labels = torch.from_numpy(_LABELS).to(device)
        # features2 hand planes: kind -> plane repetition matrix and threshold per plane
        rep = torch.zeros(7, 28)
        rep[torch.tensor(_HAND_COL), torch.arange(28)] = 1
        self.hand_repeat = rep.to(device)


def _bitboards(board: torch.Tensor, turn: torch.Tensor, k: _Consts):
    """board [B, 81] uint8, turn [B] -> (own [14, 11, 2B] int16, occ [9, 2B] int16, king [9, B] int16).

    Layout ``[slot, file, frame]``. Frames interleave: 2n = position n seen by the side to move
    (rotated 180° when White moves), 2n + 1 = the same seen by the opponent (the first frame
    mirrored top-bottom, colors swapped). In both, "own" pieces move towards rank a. ``king`` is
    the side to move's king in the second frame. Files 0 and 10 of ``own`` are empty guards.
    """
    n = board.shape[0]
    white = turn.view(1, n).bool()
    bt = board.t()
    key = torch.empty(81, n, dtype=torch.uint8, device=board.device)
    torch.where(white, bt.flip(0), bt, out=key)        # squares rotated for White to move
    key |= turn.view(1, n) << 5
    index = torch.index_select(k.scatter_row, 0, (key + k.key_offset).view(-1)).view(81, n)
    bb = torch.zeros(N_SLOTS * 11, n, dtype=torch.int32, device=board.device)
    bb.scatter_add_(0, index, k.rank_bits.expand(81, n))
    bb = bb.view(N_SLOTS, 11, n)
    own = (bb[:N_OWN] & 0xFFFF) | (bb[N_OWN:S_EMPTY] & -65536)
    occ = bb[:S_EMPTY, 1:10].sum(0, dtype=torch.int32)
    king = (bb[S_OU, 1:10] >> 16).to(torch.int16)
    return own.view(torch.int16), occ.view(torch.int16), king


def _sat_add(c1, c2, c3, x):
    """Add bitboard x (one attacker per set bit) into the saturating counter planes ≥1, ≥2, ≥3."""
    c3 |= c2 & x
    c2 |= c1 & x
    c1 |= x


def _attacks(bb: torch.Tensor, occ: torch.Tensor, planes: torch.Tensor, out_slots: torch.Tensor):
    """own bitboards [14, 11, N], occupancy [9, N] -> ``planes`` [31, 9, N] (piece 14, attack 14,
    count 3, output order), filled in place."""
    wd = bb.dtype
    n = bb.shape[2]
    dev = bb.device
    inner = bb[:, 1:10]                                # [14, 9, N]
    empty = occ ^ MASK9                                # [9, N]

    # ---- stepping pieces (slots 0..10) ----
    att = torch.empty(14, 9, n, dtype=wd, device=dev)
    step = att[:_N_STEP_SLOTS]
    step.zero_()
    step[_UP0] |= inner[_UP0] >> 1
    step[_DOWN0] |= inner[_DOWN0] << 1
    lr = bb[:_N_STEP_SLOTS, 0:9] | bb[:_N_STEP_SLOTS, 2:11]   # pieces on the neighbouring files
    step[_UP1] |= lr[_UP1] >> 1
    step[_SIDE1] |= lr[_SIDE1]
    step[_DOWN1] |= lr[_DOWN1] << 1
    step[S_KE] |= lr[S_KE] >> 2

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

    # ---- horizontal and diagonal rays, file by file ----
    # variants: 0,1 = KA UM up-diagonal, 2,3 = RY HI sideways, 4,5 = KA UM down-diagonal;
    # side 0 moves towards higher files, side 1 towards lower files (files read in reverse).
    ka, um, hi, ry = (inner[i:i + 1] for i in (S_KA, S_UM, S_HI, S_RY))
    sl = torch.cat([ka, um, ry, hi, ka, um], 0)        # [6, 9, N]
    cur = torch.stack([sl, sl.flip(1)])                # [2, 6, 9, N]
    emp2 = torch.stack([empty, empty.flip(0)]).unsqueeze(1)   # [2, 1, 9, N]
    hray = torch.zeros(2, 6, 9, n, dtype=wd, device=dev)
    for k in range(1, 9):
        src = cur[:, :, : 9 - k]                       # fronts that can still move (dest files k..8)
        t = torch.empty_like(src)
        torch.bitwise_right_shift(src[:, 0:2], 1, out=t[:, 0:2])
        t[:, 2:4] = src[:, 2:4]
        torch.bitwise_left_shift(src[:, 4:6], 1, out=t[:, 4:6])
        hray[:, :, k:] |= t
        cur = t & emp2[:, :, k:]                       # fronts on empty squares, files k..8
    hray &= MASK9
    hray_e = hray[0]
    hray_w = hray[1].flip(1)                           # back to normal file order

    # ---- per-type attack planes ----
    diag = hray_e[0:2] | hray_w[0:2] | hray_e[4:6] | hray_w[4:6]      # [2, 9, N] KA UM
    orth = hray_e[2:4] | hray_w[2:4] | ray_up[0:2] | ray_down         # [2, 9, N] RY HI
    att[S_UM] |= diag[1]
    att[S_RY] |= orth[0]
    att[S_HI] = orth[1]
    att[S_KY] = ray_up[2]
    att[S_KA] = diag[0]
    att[:_N_STEP_SLOTS] &= MASK9

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

    torch.index_select(inner, 0, out_slots, out=planes[0:14])
    torch.index_select(att, 0, out_slots, out=planes[14:28])


def _resolve_device(device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


# On CPU the bit-twiddling part of the encoder runs on one intra-op thread: its tensors are small
# (≤ 1 MB), so splitting each of its ~200 ops over threads costs more in synchronisation than it
# saves, and on a busy machine (another process on the cores) every parallel op can stall for a
# scheduler slice. The large output writes keep the default thread count. Set to False to leave
# the thread count alone.
SINGLE_THREAD_COMPUTE = True


@contextmanager
def _compute_threads(device: torch.device):
    threads = torch.get_num_threads()
    if not (SINGLE_THREAD_COMPUTE and device.type == "cpu" and threads > 1):
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _encode_compact(board, hand, turn, k: _Consts):
    """-> (LUT rows [B, 2, 279] int16 before the side offset, features2 values [B, 57] bool)."""
    device = board.device
    n = board.shape[0]
    board = board.to(torch.uint8)
    turn = turn.to(torch.uint8).view(n)
    own, occ, king = _bitboards(board, turn, k)
    planes = torch.empty(31, 9, 2 * n, dtype=torch.int16, device=device)
    _attacks(own, occ, planes, k.out_slots)

    # side to move in check: a piece of the opponent (the own color of the second frame) other
    # than its king attacks the king (cshogi counts checkers without the king): where the
    # opponent king attacks the square, a second attacker is needed.
    fb = planes.view(31, 9, n, 2)[:, :, :, 1]
    king_att = fb[14 + 7]
    checked = (fb[28] & ~king_att) | (fb[29] & king_att)
    small = torch.empty(n, FEATURES2_NUM, dtype=torch.bool, device=device)
    torch.any((checked & king) != 0, 0, out=small[:, 56])

    hand = hand.reshape(n, 2, 7)
    own_first = torch.where(turn.view(n, 1, 1).bool(), hand.flip(1), hand).to(torch.float32)
    # each hand count repeated over its kind's planes (a 0/1 [7, 28] matmul), then thresholds
    torch.gt(own_first @ k.hand_repeat, k.hand_thr, out=small[:, :56].view(n, 2, 28))

    # lookup-table row per (position, plane, file): the frames interleave, so the transposed
    # [2B, 31 * 9] rows are the own then the opponent planes of each position
    rows = planes.view(31 * 9, 2 * n).t().contiguous().view(n, 2, 31 * 9)
    return rows, small


def _expand(rows, small, k: _Consts, dtype, out, expand_x2=True):
    n = rows.shape[0]
    device = rows.device
    if out is None:
        x1 = torch.empty(n, FEATURES1_NUM, 9, 9, dtype=dtype, device=device)
        x2 = torch.empty(n, FEATURES2_NUM, 9, 9, dtype=dtype, device=device) if expand_x2 else None
    else:
        x1, x2 = out
        if x2 is None and expand_x2:
            raise ValueError("out=(x1, None) needs expand_x2=False")
        if x1.shape != (n, FEATURES1_NUM, 9, 9) or not x1.is_contiguous():
            raise ValueError("out x1 must be a contiguous [B, 62, 9, 9] tensor")
        if x2 is not None and (x2.shape != (n, FEATURES2_NUM, 9, 9) or not x2.is_contiguous()
                               or x2.dtype != x1.dtype):
            raise ValueError("out x2 must be a contiguous [B, 57, 9, 9] tensor of x1's dtype")
        if not expand_x2:
            x2 = None
    # the opponent's planes (mirrored top-bottom) use the rank-reversed half of the table
    idx = torch.empty(n, 2, 31 * 9, dtype=torch.int32, device=device)
    torch.add(rows, k.side_offset, out=idx)
    torch.index_select(k.lut, 0, idx.view(-1), out=x1.view(-1, 9))
    if x2 is None:                             # [B, 57, 9, 9] view, stride 0 over the cells
        return x1, small.to(x1.dtype).view(n, FEATURES2_NUM, 1, 1).expand(n, FEATURES2_NUM, 9, 9)
    # each plane is all zeros or all ones: one 81-wide table row per (position, plane)
    torch.index_select(k.lut2, 0, small.view(-1).to(torch.int32), out=x2.view(-1, 81))
    return x1, x2


def encode_board(board: torch.Tensor, hand: torch.Tensor, turn: torch.Tensor,
                 dtype: torch.dtype = torch.float32, out=None, expand_x2: bool = True):
    """dlshogi features of a batch.

    board uint8 [B, 81] (cshogi piece codes, Black's view), hand uint8 [B, 2, 7] (FU KY KE GI KI KA
    HI), turn uint8 [B] (0 black, 1 white to move), all on the device that encodes.
    Returns ``(x1 [B, 62, 9, 9], x2 [B, 57, 9, 9])`` of ``dtype`` (float32, bfloat16, float16,
    uint8 or bool). ``out=(x1, x2)``: preallocated contiguous outputs of that shape and dtype to
    fill instead (saves the page faults of fresh large CPU allocations).
    ``expand_x2=False``: x2 comes back as a broadcast view (stride 0 over the 81 cells, every
    plane of features2 is constant) instead of a materialized tensor — same values, no 57 × 81
    writes a position; ``out`` then only needs x1 (``out=(x1, None)``).
    """
    if out is not None:
        dtype = out[0].dtype
    k = _Consts.get(board.device, dtype)
    with _compute_threads(board.device):
        rows, small = _encode_compact(board, hand, turn, k)
    return _expand(rows, small, k, dtype, out, expand_x2)


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
    """label of (turn, move16 from field 0..87, to) without the promotion: [2 * 88 * 81] int64."""
    table = np.zeros((2, 88, 81), np.int64)
    for turn in range(2):
        for frm in range(88):
            for to in range(81):
                t = 80 - to if turn else to
                if frm >= 81:
                    # cshogi 1.1.0 numbers drops by piece type (FU KY KE GI KA HI KI -> 20 … 26),
                    # i.e. the move16 drop code itself: G*5b is 26, B*5b 24, R*5b 25
                    # (docs/features-spec.md lists hand order, which disagrees with cshogi for
                    # KI/KA/HI; the tests pin cshogi's numbering)
                    direction = 20 + frm - 81
                else:
                    direction = _direction(80 - frm if turn else frm, t)
                table[turn, frm, to] = 81 * direction + t
    return table.reshape(-1)


_LABELS = _label_table()


def move_labels(board, move16: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """dlshogi move labels (``81 * direction + to``, 0 … 2186) of cshogi move16 codes, int64 [B].

    ``board`` is not needed (the label depends on the move and the side to move only); it is
    accepted for symmetry with :func:`encode_board` and may be None.
    """
    m = move16.to(torch.int32)
    device = m.device
    table = _Consts.get(device, torch.float32).labels
    frm = ((m >> 7) & 0x7F).clamp_(max=87)
    key = (turn.to(device=device, dtype=torch.int32).view(-1) * 88 + frm) * 81 + (m & 0x7F).clamp_(max=80)
    return torch.index_select(table, 0, key.view(-1)) + 810 * ((m >> 14) & 1).view(-1)


def _fields(rows: np.ndarray) -> np.ndarray:
    if rows.dtype != fmt.POSITION_DTYPE:
        raise TypeError(f"expected rows of POSITION_DTYPE, got {rows.dtype}")
    raw = np.ascontiguousarray(rows).view(np.uint8).reshape(len(rows), fmt.POSITION_DTYPE.itemsize)
    # shards are read with np.load(mmap_mode="r"): torch wants a writable buffer (107 bytes a row)
    return raw if raw.flags.writeable else raw.copy()


def encode_rows(rows: np.ndarray, device="cpu", non_blocking: bool = False,
                dtype: torch.dtype = torch.float32, out=None, expand_x2: bool = True):
    """Shard rows (POSITION_DTYPE) -> ``(x1, x2, labels)`` on ``device``.

    The compact rows (107 bytes a position) go to the device as one byte tensor (pinned first
    when the device is CUDA) and are encoded there. ``dtype``, ``out``, ``expand_x2``: as in
    :func:`encode_board`.
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
    if out is not None:
        dtype = out[0].dtype
    k = _Consts.get(device, dtype)
    with _compute_threads(device):
        rows, small = _encode_compact(board, hand, turn, k)
        labels = move_labels(board, move16, turn)
    x1, x2 = _expand(rows, small, k, dtype, out, expand_x2)
    return x1, x2, labels


def features_from_sfens(sfens: Sequence[str], device="cpu"):
    """(x1 float [B, 62, 9, 9], x2 float [B, 57, 9, 9]) of SFEN positions (``startpos`` accepted)."""
    rows = fmt.rows_from_sfens(sfens)
    x1, x2, _ = encode_rows(rows, device=device)
    return x1, x2


def move_label(sfen: str, usi_move: str) -> int:
    """dlshogi move label of a USI move played from an SFEN position."""
    rows = fmt.rows_from_sfens([sfen], [usi_move])
    m = torch.from_numpy(rows["move16"].astype(np.int32))
    t = torch.from_numpy(rows["turn"].copy())
    return int(move_labels(None, m, t)[0])
