"""The fast paths of `prepare`: rows taken from the CSA reader's own replay instead of a second one,
many games converted at once, rows handed from workers through a spool file, consecutive games written
with one writer call, games.jsonl lines assembled from pre-encoded metadata. Each must give exactly what
the plain path gives."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES, SAMPLE, extra_files
from shogitrain.prepare import GameResult, _games_line, prepare
from shogitrain.records import read_csa
from shogitrain.shogi.position import STATE_SIZE, Position
from shogitrain.records.filters import ALL_ENDINGS, GameFilter
from shogitrain.shards.convert import game_rows, games_rows
from shogitrain.shogi.vocabulary import STARTPOS_SFEN
from shogitrain.shards.reader import load_games

SELFPLAY = sorted((SAMPLE / "selfplay").glob("*.csa"))
FLOODGATE = sorted((SAMPLE / "floodgate").glob("*.csa"))
ODD = sorted(FIXTURES.glob("*.csa"))  # encodings, handicaps, piece lists, several games a file, odd endings
KEEP_ALL = GameFilter(endings=ALL_ENDINGS + (None,), min_moves=0, require_eval=False, mate_score=0)


def test_reader_positions_give_the_rows_of_a_replay():
    assert _check_reader_positions(SELFPLAY[:30] + FLOODGATE + ODD) > 50


@pytest.mark.slow
def test_reader_positions_on_extra_corpus():
    assert _check_reader_positions(extra_files("fixtures", "wcsc28", "pro")) > 50


def _check_reader_positions(files) -> int:
    """For every game: rows from the reader's own replay equal rows from a second replay; returns the count."""
    rng = random.Random(0)
    n_games = 0
    for path in files:
        fast = read_csa(path, positions=True)
        plain = read_csa(path)
        assert fast == plain  # the records themselves are unchanged (positions do not take part in ==)
        items = []
        for g, p in zip(fast, plain):
            assert p.positions is None
            assert len(g.positions) == STATE_SIZE * len(g.moves)
            for n in {len(g.moves), rng.randrange(len(g.moves) + 1), 0}:
                a = game_rows(g, n, game_id=7, draw=g.winner is None)
                b = game_rows(p, n, game_id=7, draw=g.winner is None)
                assert a.tobytes() == b.tobytes(), (path, g.line, n)
            items.append((g, len(g.moves) // 2, n_games, n_games % 3 == 0))
            n_games += 1
        together = games_rows(items)
        one_by_one = [game_rows(*item) for item in items]
        assert together.tobytes() == b"".join(r.tobytes() for r in one_by_one)
    return n_games


def test_positions_of_a_changed_record_are_not_used():
    (g,) = read_csa(SELFPLAY[0], positions=True)
    want = game_rows(read_csa(SELFPLAY[0])[0], 20)
    g.moves = list(g.moves)  # another list of the same moves: the same rows
    assert game_rows(g, 20).tobytes() == want.tobytes()
    (g,) = read_csa(SELFPLAY[0], positions=True)
    g.positions = b"\x00" * len(g.positions)  # (the snapshots are what is used otherwise)
    assert game_rows(g, 20).tobytes() != want.tobytes()
    g.moves.append("1g1f")  # same list, other length: replayed
    assert game_rows(g, 20).tobytes() == want.tobytes()


def test_position_state_and_list_views():
    sfen = "lnsgkgsnl/1r5b1/ppppppppp/9/9/9/PPPPPPPPP/1B5R1/LNSGKGSNL w 3G2Pr 7"
    pos = Position.from_sfen(sfen)
    assert pos.sfen(7) == sfen
    assert pos.turn == 1 and len(pos.st) == STATE_SIZE and pos.st[95] == 1
    assert pos.hand[0][1] == 2 and pos.hand[0][7] == 3 and pos.hand[1][6] == 1  # FU, KI; HI
    again = Position(pos.board, pos.hand, pos.turn)
    assert again.st == pos.st and again.ksq == pos.ksq
    assert Position.from_state(bytes(pos.st)).sfen(7) == sfen
    with pytest.raises(ValueError):
        Position.from_state(b"\x00" * 95)
    with pytest.raises(ValueError):
        Position([0] * 81, [[0, 300] + [0] * 6, [0] * 8], 0)
    assert Position.from_sfen(STARTPOS_SFEN).ksq == [44, 36]  # 5i, 5a


@pytest.mark.parametrize("meta", [
    {},
    {"source": "a/b.csa", "line": 3, "names": ["先手", None], "ratings": [3500.5, None], "winner": 0},
    {"source": 'q"uote\\\n', "event": "\u00e9\u2028", "x": float("nan"), "y": [1e300, -0.0]},
])
def test_games_line_is_json_dumps(meta):
    g = GameResult(meta, np.zeros(0), b"")
    g.positions = 12
    line = _games_line(41, "test", 9, g)
    assert line == json.dumps({"id": 41, "split": "test", "row_start": 9, "positions": 12} | meta,
                              ensure_ascii=False) + "\n"


def _hcpe_file(csa: Path, out: Path) -> None:
    cshogi = pytest.importorskip("cshogi")
    from cshogi import CSA

    kif = CSA.Parser.parse_file(str(csa))[0]
    board = cshogi.Board(kif.sfen)
    arr = np.zeros(len(kif.moves), cshogi.HuffmanCodedPosAndEval)
    for i, move in enumerate(kif.moves):
        board.to_hcp(arr[i]["hcp"])
        arr[i]["bestMove16"] = move & 0xFFFF
        board.push(move)
    arr.tofile(out)


@pytest.fixture
def mixed_dir(tmp_path) -> Path:
    d = tmp_path / "mixed"
    d.mkdir()
    for f in SELFPLAY[:25] + FLOODGATE[:4]:
        shutil.copy(f, d / f.name)
    for f in SELFPLAY[:3]:
        shutil.copy(f, d / ("dup-" + f.name))
    _hcpe_file(FLOODGATE[0], d / "a.hcpe")
    shutil.copy(d / "a.hcpe", d / "b.hcpe")
    text = FLOODGATE[1].read_text()
    (d / "comma.csa").write_text(text.replace("\nT", ",T"))
    lines = text.splitlines(keepends=True)
    k = [i for i, line in enumerate(lines) if line[:1] in "+-" and len(line.strip()) == 7][50]
    (d / "illegal.csa").write_text("".join(lines[:k] + [lines[k][0] + "5511OU\n"] + lines[k + 1:]))
    (d / "empty.csa").write_bytes(b"")
    return d


def test_workers_spool_and_writer_batches_give_the_rows_of_each_game(mixed_dir, tmp_path):
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        prepare([mixed_dir], out, workers=workers, game_filter=KEEP_ALL, test_fraction=0.3, seed=4,
                dedupe=True, shard_rows=1000, progress=False)
        runs[workers] = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert runs[1] == runs[2]
    out = tmp_path / "w2"
    games = load_games(out)
    assert {Path(g["source"]).suffix for g in games} == {".csa", ".hcpe"}
    manifest = json.loads((out / "manifest.json").read_text())
    for split in ("train", "test"):
        shards = [np.load(out / s["file"]) for s in manifest["splits"][split]["shards"]]
        rows = np.concatenate(shards)
        mine = [g for g in games if g["split"] == split]
        assert sum(g["positions"] for g in mine) == len(rows) and len(mine) > 3
        start = 0
        for g in mine:  # games follow each other in id order, each where games.jsonl says
            assert g["row_start"] == start
            part = rows[start : start + g["positions"]]
            assert (part["game"] == g["id"]).all()
            if g["source"].endswith(".csa"):
                (want,) = [x for x in read_csa(g["source"]) if x.line == g["line"]]
                expect = game_rows(want, g["positions"], game_id=g["id"], draw=want.winner is None)
                assert part.tobytes() == expect.tobytes(), g
            start += g["positions"]


def test_spool_files_and_their_fallback(tmp_path):
    from shogitrain.prepare import _attach_rows, _process_task, process_files

    paths = SELFPLAY[:4]
    want = [g.rows.tobytes() for fr in process_files(paths, KEEP_ALL) for g in fr.games]
    spool = tmp_path / "spool"
    spool.mkdir()
    for where in (spool, tmp_path / "missing"):  # a spool that cannot be written: rows come back inline
        results, rows = _process_task(paths, KEEP_ALL, str(where))
        assert isinstance(rows, str) == (where == spool)
        got = [g.rows.tobytes() for fr in _attach_rows(results, rows) for g in fr.games]
        assert got == want
        assert not list(spool.iterdir())  # read and removed
