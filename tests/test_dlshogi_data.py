"""prepare on dlshogi's own files — games recovered from hcpe, hcpe3 with visit-count targets,
--average-duplicates — and export-data back to hcpe / hcpe3."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SAMPLE
from shogitrain import prepare as prepare_module
from shogitrain.cli import main
from shogitrain.names import EVAL_SCALE
from shogitrain.prepare import prepare
from shogitrain.records.hcpe3 import read_hcpe3_games
from shogitrain.shards import average, rewrite
from shogitrain.shards.dlshogi import hcpe3_file_games
from shogitrain.shards.reader import ShardDataset, load_games, load_manifest
from shogitrain.shards.targets import SoftRows

cshogi = pytest.importorskip("cshogi")
from hcpe3_writer import game_bytes, games_from_csa, hcpe_records  # noqa: E402

SELFPLAY = sorted((SAMPLE / "selfplay").glob("*.csa"))


def tree_digest(root) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _positions(data: ShardDataset, game: dict):
    return data.read(np.arange(game["row_start"], game["row_start"] + game["positions"]))


def _without_game(rows: np.ndarray) -> bytes:
    """The rows' bytes with the game id (the dataset's numbering) blanked."""
    rows = rows.copy()
    rows["game"] = 0
    return rows.tobytes()


# ---------------------------------------------------------------- hcpe: games inside


def test_hcpe_games_are_recovered_and_split_by_game(tmp_path):
    games = games_from_csa(SELFPLAY[:30])
    records = hcpe_records(games)
    path = tmp_path / "fsf.hcpe"
    records.tofile(path)
    report = prepare([path], tmp_path / "ds", test_fraction=0.5, workers=1, progress=False)
    assert report["hcpe_games_recovered"] == report["games_read"] == report["games_kept"] == 30
    listed = load_games(tmp_path / "ds")
    lengths = [len(m) for _, m, _ in games]
    assert [g["records"][1] - g["records"][0] for g in listed] == [g["positions"] for g in listed] == lengths
    assert [g["records"][0] for g in listed] == np.cumsum([0] + lengths[:-1]).tolist()
    assert {g["split"] for g in listed} == {"train", "test"}
    for split in ("train", "test"):
        data = ShardDataset(tmp_path / "ds", split)
        for g in (g for g in listed if g["split"] == split):
            rows = _positions(data, g)
            a, b = g["records"]
            assert (rows["game"] == g["id"]).all() and (rows["move16"] == records["bestMove16"][a:b]).all()
            assert (rows["eval"] == records["eval"][a:b]).all()
            assert rows["ply"].tolist() == list(range(1, b - a + 1))      # the games start from the start position
            assert g["winner"] == {0: None, 1: 0, 2: 1}[int(records["gameResult"][a])]


def test_bad_hcpe_records_are_skipped_and_the_rest_kept(tmp_path):
    games = games_from_csa(SELFPLAY[:4])
    records = hcpe_records(games)
    records[45]["hcp"] = 0xFF                                   # does not decode: game 0 is cut in two
    path = tmp_path / "bad.hcpe"
    path.write_bytes(records.tobytes() + b"\x01" * 20)          # and a truncated last record
    report = prepare([path], tmp_path / "ds", test_fraction=0, workers=1, progress=False)
    skipped = json.loads((tmp_path / "ds" / "report.json").read_text())["skipped"]
    assert [(s["file"], s["record"]) for s in skipped] == [(str(path), 45), (str(path), len(records))]
    assert skipped[0]["reason"].startswith("bad Huffman code") and "20 of 38 bytes" in skipped[1]["reason"]
    assert report["hcpe_games_recovered"] == 5 and report["positions"] == len(records) - 1
    assert [g["records"] for g in load_games(tmp_path / "ds")][:2] == [[0, 45], [46, len(games[0][1])]]


def test_a_large_hcpe_file_read_in_pieces_gives_the_same_dataset(tmp_path, monkeypatch):
    path = tmp_path / "big.hcpe"
    hcpe_records(games_from_csa(SELFPLAY[:12])).tofile(path)
    prepare([path], tmp_path / "whole", test_fraction=0.3, workers=1, progress=False)
    monkeypatch.setattr(prepare_module, "BINARY_PIECE_BYTES", 38 * 97)       # pieces cut games anywhere
    prepare([path], tmp_path / "pieces", test_fraction=0.3, workers=2, progress=False)
    assert len(list(prepare_module._items([path]))) > 10
    assert tree_digest(tmp_path / "pieces") == tree_digest(tmp_path / "whole")


# ---------------------------------------------------------------- hcpe3


@pytest.fixture(scope="module")
def hcpe3_games():
    return games_from_csa(SELFPLAY[:40], np.random.default_rng(7))


def test_hcpe3_dataset_holds_the_visit_distributions(hcpe3_games, tmp_path):
    path = tmp_path / "sp.hcpe3"
    path.write_bytes(b"".join(game_bytes(*g) for g in hcpe3_games))
    report = prepare([path], tmp_path / "ds", test_fraction=0.25, workers=2, progress=False)
    read, _, _ = hcpe3_file_games(path.read_bytes(), str(path), 1.0)
    assert report["games_kept"] == 40 and report["positions"] == sum(len(g.rows) for g in read)
    manifest = load_manifest(tmp_path / "ds")
    assert all("targets" in s and "pairs" in s for split in manifest["splits"].values() for s in split["shards"])
    listed = load_games(tmp_path / "ds")
    assert [g["game"] for g in listed] == list(range(40)) and listed[3]["format"] == "hcpe3"
    for split in ("train", "test"):
        data = ShardDataset(tmp_path / "ds", split)
        for g in (g for g in listed if g["split"] == split):
            soft, want = _positions(data, g), read[g["game"]]
            assert isinstance(soft, SoftRows)
            assert _without_game(soft.rows) == _without_game(want.rows)
            assert soft.counts.tolist() == want.targets["count"].tolist()
            assert soft.pairs.tolist() == want.pairs.tolist()
            assert g["result"] == hcpe3_games[g["game"]][2] and g["moves"] == len(hcpe3_games[g["game"]][1])


def test_a_large_hcpe3_file_read_in_pieces_gives_the_same_dataset(hcpe3_games, tmp_path, monkeypatch):
    path = tmp_path / "big.hcpe3"
    path.write_bytes(b"".join(game_bytes(*g) for g in hcpe3_games[:15]) + b"\x05" * 30)   # and a damaged tail
    prepare([path], tmp_path / "whole", test_fraction=0.3, workers=1, progress=False)
    monkeypatch.setattr(prepare_module, "BINARY_PIECE_BYTES", 5000)
    prepare([path], tmp_path / "pieces", test_fraction=0.3, workers=2, progress=False)
    assert len(list(prepare_module._items([path]))) > 5
    assert tree_digest(tmp_path / "pieces") == tree_digest(tmp_path / "whole")
    skipped = json.loads((tmp_path / "whole" / "report.json").read_text())["skipped"]
    assert [s["record"] for s in skipped] == [15] and "truncated" in skipped[0]["reason"]


def test_hcpe3_data_trains_on_the_soft_cross_entropy(hcpe3_games, tmp_path):
    from test_train import tiny_config

    from shogitrain.train.loop import train
    from shogitrain.train.runlog import read_metrics

    path = tmp_path / "sp.hcpe3"
    path.write_bytes(b"".join(game_bytes(*g) for g in hcpe3_games[:20]))
    prepare([path], tmp_path / "ds", test_fraction=0.2, workers=1, progress=False)
    cfg = tiny_config(tmp_path / "ds", tmp_path / "run", "train.steps=6", "train.eval_interval=6",
                      "train.eval_sample=128")
    rows = read_metrics(train(cfg, progress=False))
    test = [r for r in rows if r["split"] == "test_sample"][-1]
    assert np.isfinite(test["policy_loss"]) and 0 <= test["policy_accuracy"] <= 1


# ---------------------------------------------------------------- --average-duplicates


def test_average_duplicates_by_hand(tmp_path):
    start = "lnsgkgsnl/1r5b1/ppppppppp/9/9/9/PPPPPPPPP/1B5R1/LNSGKGSNL b - 1"
    g1 = [("7g7f", 100, [("7g7f", 3), ("2g2f", 1)]), ("3c3d", -50, [("3c3d", 1)]), ("2g2f", 80, [("2g2f", 1)])]
    g2 = [("7g7f", 300, [("7g7f", 1), ("2g2f", 1)]), ("3c3d", 20, [("3c3d", 2), ("8c8d", 2)]),
          ("6i7h", 10, [("6i7h", 1)])]
    path = tmp_path / "two.hcpe3"
    path.write_bytes(game_bytes(start, g1, 1) + game_bytes(start, g2, 2))
    report = prepare([path], tmp_path / "ds", test_fraction=0, average_duplicates=True, workers=1, progress=False)
    assert report["train_positions_merged_as_duplicates"] == 3 and report["positions"] == 3
    data = ShardDataset(tmp_path / "ds", "train")
    soft = data.read(np.arange(3))
    board = cshogi.Board(start)
    m16 = {u: cshogi.move16(board.move_from_usi(u)) for u in ("7g7f", "2g2f")}
    board.push_usi("7g7f")
    m16 |= {u: cshogi.move16(board.move_from_usi(u)) for u in ("3c3d", "8c8d")}
    board.push_usi("3c3d")
    m16 |= {u: cshogi.move16(board.move_from_usi(u)) for u in ("2g2f", "6i7h")}

    def value(cp):
        return 1 / (1 + np.exp(-cp / EVAL_SCALE))

    def cp(v):
        return round(EVAL_SCALE * np.log(v / (1 - v)))

    # both games pass through the same three positions; G1 won by Black, G2 by White
    assert soft.rows["game"].tolist() == [0, 0, 0] and soft.result.tolist() == [0.5, 0.5, 0.5]
    assert soft.rows["move16"].tolist() == [m16["7g7f"], m16["3c3d"], m16["2g2f"]]     # the first game's moves
    assert soft.rows["eval"].tolist() == [cp((value(100) + value(300)) / 2), cp((value(-50) + value(20)) / 2),
                                          cp((value(80) + value(10)) / 2)]
    starts = np.cumsum(soft.counts) - soft.counts
    got = [dict(zip(soft.pairs["move16"][s:s + c].tolist(), soft.pairs["weight"][s:s + c].tolist()))
           for s, c in zip(starts, soft.counts)]
    assert got == [{m16["7g7f"]: 0.625, m16["2g2f"]: 0.375}, {m16["3c3d"]: 0.75, m16["8c8d"]: 0.25},
                   {m16["2g2f"]: 0.5, m16["6i7h"]: 0.5}]
    assert [(g["row_start"], g["positions"]) for g in load_games(tmp_path / "ds")] == [(0, 3), (3, 0)]


def test_average_duplicates_in_hash_partitions_gives_the_same_dataset(hcpe3_games, tmp_path, monkeypatch):
    path = tmp_path / "sp.hcpe3"
    path.write_bytes(b"".join(game_bytes(*g) for g in hcpe3_games[:20] + hcpe3_games[:6]))   # six games twice
    one = prepare([path], tmp_path / "one", test_fraction=0, average_duplicates=True, workers=1, progress=False)
    monkeypatch.setattr(average, "AVERAGE_ROWS", 300)
    monkeypatch.setattr(rewrite, "OPEN_PARTITIONS", 3)
    many = prepare([path], tmp_path / "many", test_fraction=0, average_duplicates=True, workers=1, progress=False)
    assert one == many and one["train_positions_merged_as_duplicates"] >= sum(len(g[1]) for g in hcpe3_games[:6]) - 6
    assert tree_digest(tmp_path / "one") == tree_digest(tmp_path / "many")


def test_dedupe_test_keeps_the_soft_targets_of_the_test_rows_it_keeps(hcpe3_games, tmp_path):
    train_file, test_file = tmp_path / "train.hcpe3", tmp_path / "test.hcpe3"
    train_file.write_bytes(b"".join(game_bytes(*g) for g in hcpe3_games[:20]))
    test_file.write_bytes(b"".join(game_bytes(*g) for g in hcpe3_games[15:25]))
    report = prepare([train_file], tmp_path / "ds", test_data=[test_file], dedupe_test=True, workers=1, progress=False)
    read, _, _ = hcpe3_file_games(test_file.read_bytes(), str(test_file), 1.0)
    assert report["test_positions_dropped_as_seen_in_train"] >= sum(len(g.rows) for g in read[:5])
    data = ShardDataset(tmp_path / "ds", "test")
    soft = data.read(np.arange(len(data)))
    starts = np.cumsum(soft.counts) - soft.counts
    by_state = {}      # position → the targets it has in the test file (a position may recur)
    for g in read:
        for i, row in enumerate(g.rows):
            t = g.targets[i]
            by_state.setdefault(row.tobytes()[:96], []).append(g.pairs[t["start"]:t["start"] + t["count"]].tolist())
    assert len(soft.rows) > 200
    for i, row in enumerate(soft.rows):
        assert soft.pairs[starts[i]:starts[i] + soft.counts[i]].tolist() in by_state[row.tobytes()[:96]]


# ---------------------------------------------------------------- export-data


def test_hcpe_round_trip_through_export_data_is_identical(tmp_path):
    path = tmp_path / "fsf.hcpe"
    hcpe_records(games_from_csa(SELFPLAY[:10])).tofile(path)
    prepare([path], tmp_path / "ds", test_fraction=0, workers=1, progress=False)
    result = CliRunner().invoke(main, ["export-data", str(tmp_path / "ds"), "--format", "hcpe", "--split", "train",
                                       "--out", str(tmp_path / "back.hcpe")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "back.hcpe").read_bytes() == path.read_bytes()


def test_hcpe3_round_trip_keeps_games_and_candidates(hcpe3_games, tmp_path):
    whole = [g for g in hcpe3_games
             if len(hcpe3_file_games(game_bytes(*g), "x", 1.0)[0][0].rows) == len(g[1])]  # nothing skipped
    path = tmp_path / "sp.hcpe3"
    path.write_bytes(b"".join(game_bytes(*g) for g in whole))
    prepare([path], tmp_path / "ds", test_fraction=0, workers=2, progress=False)
    result = CliRunner().invoke(main, ["export-data", str(tmp_path / "ds"), "--format", "hcpe3",
                                       "--out", str(tmp_path / "back.hcpe3")])
    assert result.exit_code == 0, result.output
    before, after = (list(read_hcpe3_games(p.read_bytes())) for p in (path, tmp_path / "back.hcpe3"))
    assert len(before) == len(after) == len(whole) > 20
    for a, b in zip(before, after):
        assert a.header.tobytes() == b.header.tobytes()
        assert a.moves.tobytes() == b.moves.tobytes()                 # selectedMove16, eval, candidateNum
        assert (a.visits["move16"] == b.visits["move16"]).all()
        for m in range(len(a.moves)):
            lo = int(a.moves["candidateNum"][:m].sum())
            v, w = (x["visitNum"][lo:lo + int(a.moves["candidateNum"][m])].astype(float) for x in (a.visits, b.visits))
            np.testing.assert_allclose(w / w.sum(), v / v.sum(), atol=2e-5)


def test_hcpe3_export_cuts_games_where_dlshogi_skips_positions(hcpe3_games, tmp_path):
    sfen, moves, result = hcpe3_games[0]
    moves = [(u, v, c if i not in (5, 40) else []) for i, (u, v, c) in enumerate(moves)]
    path = tmp_path / "gaps.hcpe3"
    path.write_bytes(game_bytes(sfen, moves, result))
    prepare([path], tmp_path / "ds", test_fraction=0, workers=1, progress=False)
    CliRunner().invoke(main, ["export-data", str(tmp_path / "ds"), "--format", "hcpe3",
                              "--out", str(tmp_path / "b.hcpe3")])
    exported = (tmp_path / "b.hcpe3").read_bytes()
    assert len(list(read_hcpe3_games(exported))) == 3
    (original,), _, _ = hcpe3_file_games(path.read_bytes(), "a", 1.0)
    again, _, _ = hcpe3_file_games(exported, "b", 1.0)
    rows = np.concatenate([g.rows for g in again])
    rows["ply"] = original.rows["ply"]          # a cut game no longer starts from the start position
    assert _without_game(rows) == _without_game(original.rows)


def test_export_data_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(main, ["export-data", str(tmp_path / "nothing"), "--format", "hcpe",
                                       "--out", str(tmp_path / "x.hcpe")])
    assert result.exit_code == 1 and "not a prepared dataset" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.hcpe").exists()
