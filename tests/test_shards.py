"""Shard rows, conversion from games, writer/reader and the split — checked against cshogi."""

import numpy as np
import pytest

from conftest import FLOODGATE_FILES, SELFPLAY_FILES
from shogitrain.records.filters import GameFilter
from shogitrain.records.game import GameRecord
from shogitrain.shards.convert import game_rows
from shogitrain.shards.format import EVAL_MISSING, POSITION_DTYPE, rows_from_sfens
from shogitrain.shogi.vocabulary import move16_from_usi, parse_sfen, sfen_of, usi_from_move16
from shogitrain.shards.reader import ShardDataset
from shogitrain.shards.writer import ShardWriter

cshogi = pytest.importorskip("cshogi")


def _cshogi_games(files):
    from cshogi import CSA

    for f in files:
        for kif in CSA.Parser.parse_str(f.read_text(encoding="utf-8-sig")):
            yield kif


def test_rows_equal_cshogi_boards_move_by_move():
    checked = 0
    for kif in _cshogi_games(FLOODGATE_FILES + SELFPLAY_FILES[:20]):
        game = GameRecord(sfen=kif.sfen, moves=[cshogi.move_to_usi(m) for m in kif.moves],
                          scores=list(kif.scores), winner=0)
        rows = game_rows(game, len(game.moves))
        board = cshogi.Board(kif.sfen)
        for row, move in zip(rows, kif.moves):
            assert row["board"].tolist() == board.pieces
            assert row["hand"].tolist() == [list(h) for h in board.pieces_in_hand]
            assert row["turn"] == board.turn
            assert row["move16"] == cshogi.move16(move)
            assert row["ply"] == board.move_number
            assert sfen_of(row["board"], row["hand"], row["turn"], int(row["ply"])) == board.sfen()
            board.push(move)
            checked += 1
    assert checked > 3000


def test_row_layout_is_compact():
    assert POSITION_DTYPE.itemsize <= 128


def test_move16_round_trip_matches_cshogi():
    board = cshogi.Board("lnsgk2nl/1r4gs1/p1pppp1pp/1p4p2/7P1/2P6/PP1PPPP1P/1SG4R1/LN2KGSNL b Bb 15")
    for move in board.legal_moves:
        usi = cshogi.move_to_usi(move)
        assert move16_from_usi(usi) == cshogi.move16(move)
        assert usi_from_move16(cshogi.move16(move)) == usi


def test_result_and_eval_from_side_to_move():
    game = GameRecord(sfen="startpos", moves=["7g7f", "3c3d", "2g2f", "8c8d"], scores=[120, None, 300, -40],
                      winner=1)
    rows = game_rows(game, 4)
    assert rows["turn"].tolist() == [0, 1, 0, 1]
    assert rows["result"].tolist() == [0, 2, 0, 2]  # white won
    assert rows["eval"].tolist() == [120, EVAL_MISSING, 300, 40]  # Black's view → side to move
    draw = game_rows(game, 3, draw=True)
    assert draw["result"].tolist() == [1, 1, 1]


def test_eval_clipped_and_mate_cut():
    game = GameRecord(sfen="startpos", moves=["7g7f", "3c3d", "2g2f", "8c8d"], scores=[50000, -50000, 100000, 1],
                      winner=0, endgame="%TORYO")
    f = GameFilter(min_moves=1)
    assert f.positions_kept(game) == 2
    rows = game_rows(game, f.positions_kept(game))
    assert rows["eval"].tolist() == [32767, 32767]
    assert GameFilter(min_moves=1, max_eval=40000).positions_kept(game) == 0
    assert GameFilter(min_moves=1, mate_score=0).positions_kept(game) == 4


def test_filter_rejections():
    game = GameRecord(sfen="startpos", moves=["7g7f"] * 60, scores=[None] * 60, winner=0, endgame="%TORYO",
                      ratings=(3600.0, 3400.0))
    f = GameFilter()
    assert f.rejection(game, has_evals_format=True) == "no eval comments"
    assert f.rejection(game, has_evals_format=False) is None
    assert "rated below" in GameFilter(min_rating=3500).rejection(game, False)
    assert "fewer than 61" in GameFilter(min_moves=61).rejection(game, False)
    game.endgame = "%SENNICHITE"
    game.winner = None
    assert "not allowed" in f.rejection(game, False)
    assert GameFilter(draws=True).rejection(game, False) is None
    game.endgame = "%TIME_UP"
    assert "not allowed" in f.rejection(game, False)


def test_writer_and_memmapped_reader(tmp_path):
    rows = rows_from_sfens(["startpos"] * 10, ["7g7f"] * 10)
    rows["ply"] = np.arange(10)
    w = ShardWriter(tmp_path, "train", shard_rows=4)
    w.add(rows[:3])
    w.add(rows[3:])
    shards = w.close()
    assert [s["rows"] for s in shards] == [4, 4, 2]
    import json

    manifest = {"format_version": 1, "splits": {"train": {"games": 1, "positions": 10, "shards": shards}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    data = ShardDataset(tmp_path, "train")
    assert isinstance(data.shards[0], np.memmap)
    assert len(data) == 10
    assert data.rows([9, 0, 5, 4]).tobytes() == rows[[9, 0, 5, 4]].tobytes()
    # every epoch is a permutation; ranks get disjoint halves of each global batch
    seen = np.concatenate([b for b in data.batch_indices(4, seed=1, epoch=0, drop_last=False)])
    assert sorted(seen.tolist()) == list(range(10))
    r0 = list(data.batch_indices(4, seed=1, epoch=0, rank=0, world_size=2))
    r1 = list(data.batch_indices(4, seed=1, epoch=0, rank=1, world_size=2))
    for a, b in zip(r0, r1):
        assert len(a) == len(b) == 2 and not set(a) & set(b)
    e0 = np.concatenate(list(data.batch_indices(4, seed=1, epoch=0)))
    e1 = np.concatenate(list(data.batch_indices(4, seed=1, epoch=1)))
    assert e0.tolist() != e1.tolist()


def test_parse_sfen_rejects_garbage():
    with pytest.raises(ValueError):
        parse_sfen("lnsgkgsnl/9 b - 1")
    with pytest.raises(ValueError):
        parse_sfen("lnsgkgsnX/1r5b1/ppppppppp/9/9/9/PPPPPPPPP/1B5R1/LNSGKGSNL b - 1")
