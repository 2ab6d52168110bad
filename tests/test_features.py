"""dlshogi features and move labels: batched torch encoder vs cshogi (the oracle)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FIXTURES, FLOODGATE_FILES, OPENINGS, SELFPLAY_FILES, extra_files
from shogitrain import features as F
from shogitrain.records.text import decode_record_bytes
from shogitrain.shards import format as fmt
from shogitrain.shogi import vocabulary as vocab

cshogi = pytest.importorskip("cshogi")
from cshogi import CSA, dlshogi  # noqa: E402


def _read_csa(path: Path) -> str:
    text, _ = decode_record_bytes(path.read_bytes())  # BOM stripped, Shift_JIS / EUC-JP decoded
    return text.replace("\r\n", "\n")  # cshogi 1.1.0 rejects CRLF line ends


def _has_piece_lists(text: str) -> bool:
    # "P-11OU…" / "P+…" lines that put pieces on the board crash cshogi (hand-only "P+00FU…" lines are fine)
    return any(line[:2] in ("P+", "P-") and any(line[k:k + 2] != "00" for k in range(2, len(line.rstrip()), 4))
               for line in text.splitlines())


def replay(paths, limit: int | None = None):
    """Positions of the games in ``paths``: (rows POSITION_DTYPE, f1 [N,62,9,9], f2 [N,57,9,9], labels [N])."""
    boards, hands, turns, moves16, labels, f1s, f2s = [], [], [], [], [], [], []
    f1 = np.zeros((62, 9, 9), np.float32)
    f2 = np.zeros((57, 9, 9), np.float32)
    n = 0
    for path in paths:
        text = _read_csa(Path(path))
        if _has_piece_lists(text):
            continue
        for game in CSA.Parser.parse_str(text):
            board = cshogi.Board(game.sfen)
            for move in game.moves:
                if not board.is_legal(move):
                    break
                boards.append(np.asarray(board.pieces, np.uint8))
                hands.append(np.asarray(board.pieces_in_hand, np.uint8))
                turns.append(board.turn)
                moves16.append(cshogi.move16(move))
                labels.append(dlshogi.make_move_label(move, board.turn))
                dlshogi.make_input_features(board, f1, f2)
                f1s.append(f1.copy())
                f2s.append(f2.copy())
                board.push(move)
                n += 1
                if limit is not None and n >= limit:
                    break
            if limit is not None and n >= limit:
                break
        if limit is not None and n >= limit:
            break
    rows = np.zeros(n, fmt.POSITION_DTYPE)
    rows["board"] = np.stack(boards)
    rows["hand"] = np.stack(hands)
    rows["turn"] = turns
    rows["move16"] = moves16
    return rows, np.stack(f1s), np.stack(f2s), np.asarray(labels, np.int64)


def assert_matches(rows, f1, f2, labels, batch=4096):
    for s in range(0, len(rows), batch):
        x1, x2, lab = F.encode_rows(rows[s:s + batch])
        bad1 = (x1.numpy() != f1[s:s + batch])
        bad2 = (x2.numpy() != f2[s:s + batch])
        bad3 = lab.numpy() != labels[s:s + batch]
        if bad1.any() or bad2.any() or bad3.any():
            i = int(np.flatnonzero(bad1.any((1, 2, 3)) | bad2.any((1, 2, 3)) | bad3)[0])
            planes1 = np.flatnonzero(bad1[i].any((1, 2))).tolist()
            planes2 = np.flatnonzero(bad2[i].any((1, 2))).tolist()
            r = rows[s + i]
            sfen = vocab.sfen_of(r["board"], r["hand"], int(r["turn"]))
            raise AssertionError(
                f"position {s + i} ({sfen}, move {vocab.usi_from_move16(int(r['move16']))}): "
                f"features1 planes {planes1}, features2 planes {planes2}, "
                f"label {int(lab[i])} vs {int(labels[s + i])}; "
                f"mismatching elements: {int(bad1.sum())} + {int(bad2.sum())} + {int(bad3.sum())}")


# ---------------------------------------------------------------- oracle sweeps


def _sweep(files) -> int:
    total = 0
    for s in range(0, len(files), 100):        # bounded memory: ~100 games at a time
        rows, f1, f2, labels = replay(files[s:s + 100])
        assert_matches(rows, f1, f2, labels)
        total += len(rows)
    return total


def test_oracle_bundled_subset():
    rows, f1, f2, labels = replay(FLOODGATE_FILES + SELFPLAY_FILES[::40])
    assert len(rows) > 2000
    assert (rows["turn"] == 1).any()
    assert_matches(rows, f1, f2, labels)


@pytest.mark.slow
def test_oracle_all_bundled_games():
    assert _sweep(FLOODGATE_FILES + SELFPLAY_FILES) > 150_000


def test_oracle_fixtures():
    """The format fixtures (handicap, mid-game board, tsume with white's whole hand, several games a file)."""
    rows, f1, f2, labels = replay(sorted(FIXTURES.glob("*.csa")))
    assert len(rows) > 800
    assert_matches(rows, f1, f2, labels)


@pytest.mark.slow
@pytest.mark.parametrize("corpus", ["wcsc28", "pro", "fixtures"])
def test_oracle_extra_corpus(corpus):
    assert _sweep(extra_files(corpus)) > 100


# ---------------------------------------------------------------- crafted positions


def cshogi_reference(sfens, moves=None):
    """rows built from cshogi's own board arrays + cshogi's features/labels for SFEN positions."""
    rows = np.zeros(len(sfens), fmt.POSITION_DTYPE)
    f1 = np.zeros((len(sfens), 62, 9, 9), np.float32)
    f2 = np.zeros((len(sfens), 57, 9, 9), np.float32)
    labels = np.zeros(len(sfens), np.int64)
    for i, sfen in enumerate(sfens):
        board = cshogi.Board(sfen)
        rows[i]["board"] = board.pieces
        rows[i]["hand"] = board.pieces_in_hand
        rows[i]["turn"] = board.turn
        dlshogi.make_input_features(board, f1[i], f2[i])
        if moves is not None:
            move = board.move_from_usi(moves[i])
            rows[i]["move16"] = cshogi.move16(move)
            labels[i] = dlshogi.make_move_label(move, board.turn)
    return rows, f1, f2, labels


def random_sfens(n, seed=0):
    """Arbitrary (not necessarily legal) positions: one king a side, random pieces, promoted ones
    included, random hands, both sides to move."""
    rng = np.random.default_rng(seed)
    caps = [18, 4, 4, 4, 4, 2, 2]
    out = []
    for i in range(n):
        board = np.zeros(81, np.uint8)
        squares = rng.permutation(81)
        board[squares[0]] = vocab.OU
        board[squares[1]] = vocab.OU + vocab.WHITE_OFFSET
        codes = [c for c in range(1, 15) if c != vocab.OU]
        codes += [c + vocab.WHITE_OFFSET for c in codes]
        count = int(rng.integers(0, 60))
        board[squares[2:2 + count]] = rng.choice(codes, size=count)
        hand = [[int(rng.integers(0, c + 1)) if rng.random() < 0.5 else 0 for c in caps] for _ in range(2)]
        out.append(vocab.sfen_of(board, hand, i % 2))
    return out


def check_sfens(sfens, moves=None):
    rows, f1, f2, labels = cshogi_reference(sfens, moves)
    # the SFEN parser in shards.format and cshogi agree on the rows
    own = fmt.rows_from_sfens(sfens)
    assert np.array_equal(own["board"], rows["board"]) and np.array_equal(own["hand"], rows["hand"])
    assert np.array_equal(own["turn"], rows["turn"])
    if moves is None:
        x1, x2, _ = F.encode_rows(rows)
        assert np.array_equal(x1.numpy(), f1)
        assert np.array_equal(x2.numpy(), f2)
    else:
        assert_matches(rows, f1, f2, labels)


def test_random_positions_promoted_pieces_everywhere():
    check_sfens(random_sfens(1500))


def test_lone_sliders_on_every_square():
    """Each slider alone on an open board (longest rays, every board edge), of each color, either
    side to move, and once more with a blocker on every other square of the board."""
    kings = {0: vocab.OU + vocab.WHITE_OFFSET, 80: vocab.OU}   # corners 1a / 9i
    sfens = []
    rng = np.random.default_rng(1)
    for sq in range(81):
        if sq in kings:
            continue
        for pt in (vocab.KA, vocab.UM, vocab.HI, vocab.RY):
            for color in (0, vocab.WHITE_OFFSET):
                for turn in (0, 1):
                    board = np.zeros(81, np.uint8)
                    for k_sq, code in kings.items():
                        board[k_sq] = code
                    board[sq] = pt + color
                    sfens.append(vocab.sfen_of(board, [[0] * 7, [0] * 7], turn))
                    free = [s for s in range(81) if board[s] == 0]
                    board[free[int(rng.integers(len(free)))]] = vocab.FU + (vocab.WHITE_OFFSET - color)
                    sfens.append(vocab.sfen_of(board, [[0] * 7, [0] * 7], turn))
    check_sfens(sfens)


def test_hand_beyond_caps():
    sfens = [
        "4k4/9/9/9/9/9/9/9/4K4 b 18P4L4N4S4G2B2R 1",
        "4k4/9/9/9/9/9/9/9/4K4 w 18P4L4N4S4G2B2R 1",
        "4k4/9/9/9/9/9/9/9/4K4 b 18p4l4n4s4g2b2r 1",
        "4k4/9/9/9/9/9/9/9/4K4 w 9P3L2N1S4g2b1r 1",
    ]
    check_sfens(sfens)
    # counts beyond any legal total saturate at the plane count
    rows = fmt.rows_from_sfens(["4k4/9/9/9/9/9/9/9/4K4 b - 1"])
    rows["hand"][0] = [[30, 9, 9, 9, 9, 9, 9], [255, 0, 5, 0, 1, 0, 3]]
    _, x2, _ = F.encode_rows(rows)
    per_plane = x2[0].sum((1, 2)).numpy()
    expect = np.zeros(57)
    expect[0:28] = 81
    expect[28:36] = 81           # opponent pawns: 8 of 8
    expect[40:44] = 81           # knights: 4 of 4
    expect[48:49] = 81           # gold: 1
    expect[54:56] = 81           # rook: 2 of 2
    assert np.array_equal(per_plane, expect)


CHECKS = [
    # side to move in check from each opponent piece type (black to move, then the mirrored white)
    "4k4/9/9/9/9/9/9/4p4/4K4 b - 1",      # FU
    "4k4/4l4/9/9/9/9/9/9/4K4 b - 1",      # KY (long range)
    "4k4/9/9/9/9/9/3n5/9/4K4 b - 1",      # KE
    "4k4/9/9/9/9/9/9/3s5/4K4 b - 1",      # GI (diagonal)
    "4k4/9/9/9/9/9/9/4s4/4K4 b - 1",      # GI (front)
    "4k4/9/9/9/9/9/9/9/3gK4 b - 1",       # KI (side)
    "b3k4/9/9/9/9/9/9/9/8K b - 1",        # KA (long diagonal)
    "8k/9/9/9/9/9/9/9/r7K b - 1",         # HI (long rank)
    "4k4/9/9/9/9/9/9/3+p5/4K4 b - 1",     # TO
    "4k4/9/9/9/9/9/9/5+l3/4K4 b - 1",     # NY
    "4k4/9/9/9/9/9/9/4+n4/4K4 b - 1",     # NK
    "4k4/9/9/9/9/9/9/9/4K+s3 b - 1",      # NG
    "k8/9/9/9/9/9/9/4+b4/4K4 b - 1",      # UM (step)
    "+b7k/9/9/9/9/9/9/9/8K b - 1",        # UM (ray)
    "4k4/9/9/9/9/9/9/3+r5/4K4 b - 1",     # RY (step)
    "4k4/9/9/9/4+r4/9/9/9/4K4 b - 1",     # RY (ray)
    "4k4/9/9/9/9/9/9/4P4/4K4 b - 1",      # blocked: own pawn in front, not in check
    "4k4/4l4/9/9/4P4/9/9/9/4K4 b - 1",    # lance blocked by own pawn
    "4k4/4l4/9/9/4p4/9/9/9/4K4 b - 1",    # lance blocked by its own side's pawn
]


def _mirror(sfen):
    board, hand, turn, ply = vocab.parse_sfen(sfen)
    rot = [0] * 81
    for sq, code in enumerate(board):
        if code:
            rot[80 - sq] = code + vocab.WHITE_OFFSET if code < vocab.WHITE_OFFSET else code - vocab.WHITE_OFFSET
    return vocab.sfen_of(rot, [hand[1], hand[0]], 1 - turn, ply)


def test_checks_by_every_piece_type_both_sides():
    sfens = CHECKS + [_mirror(s) for s in CHECKS]
    check_sfens(sfens)
    _, x2 = F.features_from_sfens(sfens)
    in_check = x2[:, 56].flatten(1)
    assert torch.all((in_check == 0) | (in_check == 1))
    expected = [1.0] * 16 + [0.0] * 3
    assert in_check[:, 0].tolist() == expected + expected
    assert torch.equal(in_check.min(1).values, in_check.max(1).values)


def _opening_lines(path, limit=None):
    lines = []
    for line in open(path, encoding="utf-8"):
        line = line.split("#", 1)[0].strip()
        if line.startswith("startpos"):
            lines.append(line.split()[2:] if " moves " in f" {line} " else [])
        if limit and len(lines) >= limit:
            break
    return lines


def _opening_positions(paths, limit=None, every_ply=True):
    sfens, moves = [], []
    for path in paths:
        for line in _opening_lines(path, limit):
            board = cshogi.Board()
            for usi in line:
                if every_ply:
                    sfens.append(board.sfen())
                    moves.append(usi)
                board.push_usi(usi)
            if not every_ply and line:
                sfens.append(board.sfen())
                moves.append(None)
    return sfens, moves


def test_openings_final_positions():
    sfens, _ = _opening_positions([OPENINGS], limit=2500, every_ply=False)
    assert len(sfens) > 2000
    check_sfens(sfens)


def _check_every_ply(paths):
    sfens, moves = _opening_positions(paths)
    for s in range(0, len(sfens), 20000):
        check_sfens(sfens[s:s + 20000], moves[s:s + 20000])
    return len(sfens)


@pytest.mark.slow
def test_openings_every_ply():
    assert _check_every_ply([OPENINGS]) == 10831 * 24


@pytest.mark.slow
def test_extra_openings_every_ply():
    assert _check_every_ply(extra_files("openings", pattern="*.sfen")) > 0


# ---------------------------------------------------------------- the spec's worked examples


START = vocab.STARTPOS_SFEN


@pytest.mark.parametrize("sfen,usi,label", [
    (START, "7g7f", 59),
    ("lnsgkgsnl/1r5b1/ppppppppp/9/9/2P6/PP1PPPPPP/1B5R1/LNSGKGSNL w - 2", "3c3d", 59),
    ("lnsgkgsnl/1r5b1/pppppp1pp/6p2/9/2P6/PP1PPPPPP/1B5R1/LNSGKGSNL b - 3", "8h2b+", 982),
    ("lnsgkgsnl/1r5b1/pppppp1pp/6p2/9/2P6/PP1PPPPPP/1B5R1/LNSGKGSNL b - 3", "8h2b", 172),
    ("4k4/9/9/9/9/9/9/9/4K4 b P 1", "P*1e", 1624),
    (START, "2h1h", 331),
])
def test_spec_move_labels(sfen, usi, label):
    assert F.move_label(sfen, usi) == label
    rows, _, _, labels = cshogi_reference([sfen], [usi])
    assert labels[0] == label


def test_drop_labels_follow_cshogi_piece_type_order():
    sfen = "4k4/9/9/9/9/9/9/9/4K4 b RBGSNLP 1"
    for usi, direction in [("P*5e", 20), ("L*5e", 21), ("N*5e", 22), ("S*5e", 23),
                           ("B*5e", 24), ("R*5e", 25), ("G*5e", 26)]:
        rows, _, _, labels = cshogi_reference([sfen], [usi])
        assert F.move_label(sfen, usi) == labels[0] == 81 * direction + 40


def test_spec_start_position_planes():
    x1, x2 = F.features_from_sfens(["startpos"])
    x1 = x1[0]
    assert x1.dtype == torch.float32 and x1.shape == (62, 9, 9)
    assert x1[0].nonzero().tolist() == [[f, 6] for f in range(9)]
    assert x1[1].nonzero().tolist() == [[0, 8], [8, 8]]
    assert x1[4].nonzero().tolist() == [[7, 7]]       # bishop 8h
    assert x1[5].nonzero().tolist() == [[1, 7]]       # rook 2h
    assert x1[6].nonzero().tolist() == [[3, 8], [5, 8]]
    assert x1[7].nonzero().tolist() == [[4, 8]]
    assert x1[14].nonzero().tolist() == [[f, 5] for f in range(9)]
    assert [int(x1[p].sum()) for p in (28, 29, 30)] == [30, 12, 6]
    assert torch.equal(x1[:31].flip(1, 2), x1[31:])   # symmetric start position
    assert int(x2.sum()) == 0


def test_spec_hand_example():
    _, x2 = F.features_from_sfens(["4k4/9/9/9/9/9/9/9/4K4 b RG2P 1"])
    set_planes = [p for p in range(57) if bool(x2[0, p].all())]
    assert set_planes == [0, 1, 20, 26]
    assert int(x2[0].sum()) == 4 * 81


# ---------------------------------------------------------------- API, dtypes, devices


def _sample_rows():
    return cshogi_reference(random_sfens(300, seed=7) + [START])[0]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.uint8, torch.bool, torch.float64])
def test_dtype_variants_equal_float32(dtype):
    rows = _sample_rows()
    x1, x2, lab = F.encode_rows(rows)
    y1, y2, lab2 = F.encode_rows(rows, dtype=dtype)
    assert y1.dtype == dtype and y2.dtype == dtype
    assert torch.equal(y1.to(torch.float32), x1) and torch.equal(y2.to(torch.float32), x2)
    assert torch.equal(lab, lab2)


def test_out_buffers_and_encode_board():
    rows = _sample_rows()
    n = len(rows)
    x1, x2, lab = F.encode_rows(rows)
    out = (torch.full((n, 62, 9, 9), 7.0), torch.full((n, 57, 9, 9), 7.0))
    y1, y2, _ = F.encode_rows(rows, out=out)
    assert y1.data_ptr() == out[0].data_ptr() and torch.equal(y1, x1) and torch.equal(y2, x2)
    board = torch.from_numpy(rows["board"].copy())
    hand = torch.from_numpy(rows["hand"].copy())
    turn = torch.from_numpy(rows["turn"].copy())
    z1, z2 = F.encode_board(board, hand, turn)
    assert torch.equal(z1, x1) and torch.equal(z2, x2)
    labels = F.move_labels(board, torch.from_numpy(rows["move16"].astype(np.int32)), turn)
    assert labels.dtype == torch.int64 and torch.equal(labels, lab)
    with pytest.raises(ValueError):
        F.encode_rows(rows, out=(out[0][:-1], out[1][:-1]))


def test_batch_independence():
    rows = _sample_rows()
    x1, x2, _ = F.encode_rows(rows)
    for i in (0, 5, len(rows) - 1):
        y1, y2, _ = F.encode_rows(rows[i:i + 1])
        assert torch.equal(y1[0], x1[i]) and torch.equal(y2[0], x2[i])


@pytest.mark.parametrize("chunk", [1, 64, 100])
def test_chunked_encoding_equals_one_chunk(monkeypatch, chunk):
    rows = _sample_rows()                       # 301 positions: the last chunk is partial
    x1, x2, lab = F.encode_rows(rows)
    monkeypatch.setattr(F, "CHUNK", chunk)
    for dtype in (torch.float32, torch.uint8):
        y1, y2, lab2 = F.encode_rows(rows, dtype=dtype)
        assert torch.equal(y1.float(), x1) and torch.equal(y2.float(), x2) and torch.equal(lab2, lab)


def test_feature_version():
    assert F.FEATURE_VERSION == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    rows = _sample_rows()
    x1, x2, lab = F.encode_rows(rows)
    y1, y2, lab2 = F.encode_rows(rows, device="cuda", non_blocking=True)
    assert torch.equal(y1.cpu(), x1) and torch.equal(y2.cpu(), x2) and torch.equal(lab2.cpu(), lab)
    z1, z2 = F.features_from_sfens([START], device="cuda")
    assert z1.device.type == "cuda"


def test_labels_of_every_legal_move():
    """All legal moves (promotions, drops of every kind, both colors) of game positions."""
    positions = []
    for path in FLOODGATE_FILES[:6]:
        for game in CSA.Parser.parse_str(_read_csa(path)):
            board = cshogi.Board(game.sfen)
            for i, move in enumerate(game.moves):
                if i % 7 == 0:
                    positions.append(board.sfen())
                board.push(move)
    positions.append("4k4/9/9/9/9/9/9/9/4K4 b RBGSNLP 1")
    positions.append("4k4/9/9/9/9/9/9/9/4K4 w rbgsnlp 1")
    rows, labels = [], []
    for sfen in positions:
        board = cshogi.Board(sfen)
        for move in board.legal_moves:
            rows.append((cshogi.move16(move), board.turn))
            labels.append(dlshogi.make_move_label(move, board.turn))
    m = torch.tensor([r[0] for r in rows], dtype=torch.int32)
    t = torch.tensor([r[1] for r in rows], dtype=torch.uint8)
    assert len(rows) > 5000
    assert F.move_labels(None, m, t).tolist() == labels


def test_rows_from_a_read_only_memmap(tmp_path):
    rows = _sample_rows()
    np.save(tmp_path / "shard.npy", rows)
    mm = np.load(tmp_path / "shard.npy", mmap_mode="r")
    x1, x2, lab = F.encode_rows(rows)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y1, y2, lab2 = F.encode_rows(mm[1::2])
    assert torch.equal(y1, x1[1::2]) and torch.equal(y2, x2[1::2]) and torch.equal(lab2, lab[1::2])


def test_unexpanded_x2_view():
    rows = _sample_rows()
    x1, x2, lab = F.encode_rows(rows)
    y1, y2, lab2 = F.encode_rows(rows, expand_x2=False)
    assert y2.shape == x2.shape and y2.stride()[2:] == (0, 0)
    assert torch.equal(y1, x1) and torch.equal(y2, x2) and torch.equal(lab2, lab)
    out1 = torch.empty_like(x1)
    z1, z2, _ = F.encode_rows(rows, dtype=torch.bfloat16, out=(out1, None), expand_x2=False)
    assert z1.data_ptr() == out1.data_ptr() and torch.equal(z2.float(), x2)
    with pytest.raises(ValueError):
        F.encode_rows(rows, out=(out1, None))
