"""hcpe3: the reader against files written in dlshogi's layout (tests/hcpe3_writer.py) and cshogi's
replay of them; dlshogi's semantics (visit temperature, result bits, candidateNum 0, repetitions);
damaged files keep their good games."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SAMPLE
from shogitrain.records.hcpe3 import (
    HCPE3_DTYPE, MOVE_INFO_DTYPE, MOVE_VISITS_DTYPE, read_hcpe3_games, result_bits, result_meta, visit_weights,
)
from shogitrain.shards.dlshogi import hcpe3_file_games

cshogi = pytest.importorskip("cshogi")
from hcpe3_writer import (  # noqa: E402
    MAXMOVE, NYUGYOKU, SENNICHITE, HuffmanCodedPosAndEval3, MoveInfo, MoveVisits, game_bytes, games_from_csa,
)

SELFPLAY = sorted((SAMPLE / "selfplay").glob("*.csa"))
FLOODGATE = sorted((SAMPLE / "floodgate").glob("*.csa"))
STARTPOS = "lnsgkgsnl/1r5b1/ppppppppp/9/9/9/PPPPPPPPP/1B5R1/LNSGKGSNL b - 1"


def test_dtypes_follow_dlshogi_layout():
    for ours, theirs in ((HCPE3_DTYPE, HuffmanCodedPosAndEval3), (MOVE_INFO_DTYPE, MoveInfo),
                         (MOVE_VISITS_DTYPE, MoveVisits)):
        assert ours.itemsize == theirs.itemsize
        assert ours.names == theirs.names
        for name in ours.names:
            assert ours.fields[name][1] == theirs.fields[name][1]          # byte offset
            assert ours.fields[name][0].base.itemsize == theirs.fields[name][0].base.itemsize
    assert (HCPE3_DTYPE.itemsize, MOVE_INFO_DTYPE.itemsize, MOVE_VISITS_DTYPE.itemsize) == (36, 6, 4)


def test_framing_matches_an_independent_numpy_reading():
    games = games_from_csa(SELFPLAY[:6], np.random.default_rng(9))
    raw = b"".join(game_bytes(*g) for g in games)
    ours = list(read_hcpe3_games(raw))
    pos = 0
    for game in ours:       # walk the file with the writer's dtypes, record by record
        header = np.frombuffer(raw, HuffmanCodedPosAndEval3, 1, pos)
        assert game.offset == pos and game.header.tobytes() == header.tobytes()
        pos += HuffmanCodedPosAndEval3.itemsize
        infos, visits = [], []
        for _ in range(int(header["moveNum"][0])):
            info = np.frombuffer(raw, MoveInfo, 1, pos)
            pos += MoveInfo.itemsize
            n = int(info["candidateNum"][0])
            infos.append(info.tobytes())
            visits.append(np.frombuffer(raw, MoveVisits, n, pos).tobytes())
            pos += n * MoveVisits.itemsize
        assert game.moves.tobytes() == b"".join(infos) and game.visits.tobytes() == b"".join(visits)
        assert game.raw == raw[game.offset:pos]
    assert pos == len(raw) and len(ours) == len(games)


def _expected(game, temperature=1.0):
    """What dlshogi trains on, worked out with cshogi: per kept move (board, hand, turn, move16, eval,
    [(candidate move16, weight)])."""
    sfen, moves, result = game
    board = cshogi.Board(sfen)
    out = []
    for usi, value, candidates in moves:
        move = board.move_from_usi(usi)
        before = (np.array(board.pieces, np.uint8), np.array(board.pieces_in_hand, np.uint8), board.turn)
        board.push(move)
        if candidates and board.is_draw(16) not in (cshogi.REPETITION_DRAW, cshogi.REPETITION_SUPERIOR,
                                                    cshogi.REPETITION_INFERIOR):
            visits = np.array([n for _, n in candidates], np.float64)
            if len(candidates) == 1:
                weights = [1.0]
            elif temperature == 1:
                weights = (np.float32(visits) / np.float32(visits.sum())).tolist()
            elif temperature == 0:
                weights = np.eye(len(visits))[int(np.argmax(visits))].tolist()
            else:
                powered = visits ** (1 / temperature)
                weights = (powered / powered.sum()).astype(np.float32).tolist()
            board.pop()
            m16 = [cshogi.move16(board.move_from_usi(u)) for u, _ in candidates]
            board.push(move)
            out.append((*before, cshogi.move16(move), value, list(zip(m16, weights))))
    return out


def _check(games_read, games, temperature=1.0):
    for game, read in zip(games, games_read):
        expected = _expected(game, temperature)
        rows, targets, pairs = read.rows, read.targets, read.pairs
        assert len(rows) == len(expected)
        winner = game[2] & 3
        for i, (board, hand, turn, m16, value, candidates) in enumerate(expected):
            assert rows["board"][i].tolist() == board.tolist()
            assert rows["hand"][i].tolist() == hand.tolist() and rows["turn"][i] == turn
            assert rows["move16"][i] == m16 and rows["eval"][i] == value
            assert rows["result"][i] == (1 if winner == 0 else 2 if winner - 1 == turn else 0)
            got = pairs[targets["start"][i]:targets["start"][i] + targets["count"][i]]
            assert got["move16"].tolist() == [m for m, _ in candidates]
            np.testing.assert_allclose(got["weight"], [w for _, w in candidates], rtol=1e-6)
        assert (targets["result"] == rows["result"] / 2).all()


def test_multi_candidate_games_match_a_cshogi_replay():
    games = games_from_csa(SELFPLAY[:25] + FLOODGATE[:4], np.random.default_rng(1))
    raw = b"".join(game_bytes(*g) for g in games)
    read, skipped, n = hcpe3_file_games(raw, "sp.hcpe3", 1.0)
    assert skipped == [] and n == len(games) == len(read)
    assert sum(len(g.pairs) for g in read) > 3 * sum(len(g.rows) for g in read)     # many candidates
    _check(read, games)
    assert [g.meta["game"] for g in read] == list(range(len(games)))
    assert read[0].meta["offset"] == 0 and read[1].meta["offset"] == len(game_bytes(*games[0]))


@pytest.mark.parametrize("temperature", [0.0, 0.5, 2.0])
def test_visit_temperature_as_dlshogi(temperature):
    games = games_from_csa(SELFPLAY[:3], np.random.default_rng(2))
    read, _, _ = hcpe3_file_games(b"".join(game_bytes(*g) for g in games), "t.hcpe3", temperature)
    _check(read, games, temperature)


def test_visit_weights_by_hand():
    visits = np.array([3, 1, 0, 5, 5, 2, 7])
    counts = np.array([3, 3, 1])
    np.testing.assert_allclose(visit_weights(visits, counts, 1.0), [0.75, 0.25, 0, 5 / 12, 5 / 12, 2 / 12, 1])
    assert visit_weights(visits, counts, 0.0).tolist() == [1, 0, 0, 1, 0, 0, 1]     # first of the ties
    np.testing.assert_allclose(visit_weights(visits, counts, 0.5), [0.9, 0.1, 0, 25 / 54, 25 / 54, 4 / 54, 1],
                               rtol=1e-6)
    assert np.isnan(visit_weights(np.array([0, 0]), np.array([2]), 1.0)).all()


def test_result_bits_map_to_the_csa_endings():
    assert result_meta(1) == (0, "%TORYO") and result_meta(2) == (1, "%TORYO")
    assert result_meta(0 | SENNICHITE) == (None, "%SENNICHITE")
    assert result_meta(2 | NYUGYOKU) == (1, "%KACHI")
    assert result_meta(0 | MAXMOVE) == (None, "%MAX_MOVES")
    assert result_meta(0) == (None, None)
    with pytest.raises(ValueError, match="winner field 3"):
        result_meta(3)
    for bits in (1, 2, SENNICHITE, 1 | NYUGYOKU, 2 | NYUGYOKU, MAXMOVE):
        assert result_bits(*result_meta(bits)) == bits


def test_draw_results_score_half_and_flags_reach_games_jsonl():
    sfen, moves, _ = games_from_csa(SELFPLAY[:1])[0]
    raw = game_bytes(sfen, moves, SENNICHITE) + game_bytes(sfen, moves, 1 | NYUGYOKU, opponent=2)
    (draw, declared), _, _ = hcpe3_file_games(raw, "d.hcpe3", 1.0)
    assert (draw.rows["result"] == 1).all() and (draw.targets["result"] == 0.5).all()
    assert draw.meta["endgame"] == "%SENNICHITE" and draw.meta["winner"] is None and draw.meta["result"] == 4
    black = declared.rows["turn"] == 0
    assert (declared.rows["result"][black] == 2).all() and (declared.rows["result"][~black] == 0).all()
    assert declared.meta["endgame"] == "%KACHI" and declared.meta["opponent"] == 2


def test_moves_with_candidate_num_zero_are_skipped():
    sfen, moves, result = games_from_csa(SELFPLAY[:1], np.random.default_rng(3))[0]
    moves = [(u, v, c if i % 3 else []) for i, (u, v, c) in enumerate(moves)]
    (game,), _, _ = hcpe3_file_games(game_bytes(sfen, moves, result), "z.hcpe3", 1.0)
    assert len(game.rows) == sum(1 for _, _, c in moves if c)
    _check([game], [(sfen, moves, result)])
    assert game.rows["ply"][:3].tolist() == [2, 3, 5]        # from the start position: ply = move index + 1


# Repetitions within 16 plies, no checks (where Apery's moveIsDraw and cshogi's is_draw agree):
# (start position — all 40 pieces, as Huffman codes need —, moves, the repetition the last move makes)
REPETITIONS = [
    ("k8/9/9/9/9/9/9/9/8K b 2R2B4G4S4N4L18P 1", "1i2i 9a8a 2i1i 8a9a", "REPETITION_DRAW"),
    # White drops a pawn, Black takes it and both come back (White by a triangle): Black to move
    # with the same board and a pawn more in hand
    ("k8/9/9/9/9/9/9/4R4/4K4 b R2B4G4S4N4L18p 1", "5i4i P*5e 5h5e 9a8a 5e5h 8a8b 4i5i 8b9a",
     "REPETITION_SUPERIOR"),
    # Black drops a pawn, White takes it and both come back (Black by a triangle): Black to move
    # with the same board and a pawn less
    ("k8/4r4/9/9/9/9/9/9/8K b r2b4g4s4n4l18P 1", "P*5e 5b5e 1i2i 5e5b 2i2h 9a8a 2h1i 8a9a",
     "REPETITION_INFERIOR"),
]


@pytest.mark.parametrize("sfen,line,kind", REPETITIONS)
def test_repetitions_are_skipped_as_dlshogi_skips_them(sfen, line, kind):
    moves = [(usi, 0, [(usi, 1)]) for usi in (line.split() * 2)[: len(line.split()) + 3]]
    board = cshogi.Board(sfen)
    kinds = []
    for usi, _, _ in moves:
        board.push_usi(usi)
        kinds.append(board.is_draw(16))
        assert not board.is_check()
    assert kinds[len(line.split()) - 1] == getattr(cshogi, kind)
    (read,), _, _ = hcpe3_file_games(game_bytes(sfen, moves, 0), "r.hcpe3", 1.0)
    assert len(read.rows) < len(moves)
    _check([read], [(sfen, moves, 0)])   # the oracle: cshogi's is_draw(16) after each move


# ---------------------------------------------------------------- damaged files


def _three_games():
    games = games_from_csa(SELFPLAY[:3], np.random.default_rng(5))
    return games, [game_bytes(*g) for g in games]


def _reasons(skipped):
    return [(s["file"], s["record"], s["reason"]) for s in skipped]


def test_illegal_move16_skips_that_game_only():
    games, blobs = _three_games()
    sfen, moves, _ = games[1]
    board = cshogi.Board(sfen)
    for usi, _, _ in moves[:10]:
        board.push_usi(usi)
    empty = next(sq for sq in range(81) if board.pieces[sq] == 0)
    raw = bytearray(blobs[1])
    pos = 36 + sum(6 + 4 * len(c) for _, _, c in moves[:10])   # move 11's MoveInfo
    raw[pos:pos + 2] = ((empty << 7) | (empty + 1) % 81).to_bytes(2, "little")   # from an empty square
    read, skipped, n = hcpe3_file_games(blobs[0] + bytes(raw) + blobs[2], "m.hcpe3", 1.0)
    assert n == 3 and [g.meta["game"] for g in read] == [0, 2]
    ((file, record, reason),) = _reasons(skipped)
    assert file == "m.hcpe3" and record == 1 and "move 11: selectedMove16" in reason and "not legal" in reason
    _check(read, [games[0], games[2]])


def test_bad_huffman_code_skips_that_game_only():
    games, blobs = _three_games()
    broken = bytearray(blobs[1])
    broken[0:32] = b"\xff" * 32                      # counts intact: the framing goes on
    read, skipped, n = hcpe3_file_games(blobs[0] + bytes(broken) + blobs[2], "h.hcpe3", 1.0)
    assert [g.meta["game"] for g in read] == [0, 2]
    ((_, record, reason),) = _reasons(skipped)
    assert record == 1 and "bad Huffman code" in reason and f"byte {len(blobs[0])}" in reason
    _check(read, [games[0], games[2]])


def test_truncated_last_game_is_reported_and_the_rest_kept():
    games, blobs = _three_games()
    for cut in (10, 36 + 3, len(blobs[2]) - 1):
        read, skipped, n = hcpe3_file_games(blobs[0] + blobs[1] + blobs[2][:cut], "t.hcpe3", 1.0)
        assert [g.meta["game"] for g in read] == [0, 1] and n == 3
        ((_, record, reason),) = _reasons(skipped)
        assert record == 2 and "truncated" in reason
        _check(read, games[:2])


def test_candidate_num_beyond_the_file_is_reported_and_the_rest_kept():
    games, blobs = _three_games()
    last = bytearray(blobs[2])
    last[36 + 4:36 + 6] = (500).to_bytes(2, "little")     # first move: 500 candidates, 2000 bytes the file lacks
    last = last[:36 + 6 + 100]
    read, skipped, _ = hcpe3_file_games(blobs[0] + blobs[1] + bytes(last), "c.hcpe3", 1.0)
    assert [g.meta["game"] for g in read] == [0, 1]
    ((_, record, reason),) = _reasons(skipped)
    assert record == 2 and "candidateNum 500 goes beyond the end of the file" in reason
    framed = list(read_hcpe3_games(blobs[0] + bytes(last)))
    assert framed[-1].fatal and "beyond" in framed[-1].reason
