"""SFEN lines, KIF (python-shogi), and read_records dispatch."""

from __future__ import annotations

import os
import pathlib

import pytest
import shogi
import shogi.KIF

from shogitrain.records import RecordError, read_csa, read_kif, read_records, read_sfen_lines
from shogitrain.shogi.vocabulary import STARTPOS_SFEN

DATA = pathlib.Path(os.environ.get("SHOGITRAIN_DATA", "/work/shared/data"))
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared data not available")


def test_sfen_line_forms():
    text = (
        "# comment\n\nstartpos moves 7g7f 3c3d\n"
        "position startpos moves 2g2f\n"
        "sfen lnsgkgsnl/1r5b1/ppppppppp/9/9/9/PPPPPPPPP/1B5R1/LNSGKGSNL w - 5 moves 3c3d\n"
        "position sfen 4k4/9/9/9/9/9/9/9/4K4 b G moves G*5b\n"
        "startpos\n"
    )
    a, b, c, d, e = read_sfen_lines(text)
    assert a.moves == ["7g7f", "3c3d"] and a.line == 3 and a.sfen == STARTPOS_SFEN
    assert b.moves == ["2g2f"]
    assert c.sfen.endswith(" w - 5") and c.moves == ["3c3d"]
    assert d.moves == ["G*5b"] and d.sfen == "4k4/9/9/9/9/9/9/9/4K4 b G 1"
    assert e.moves == [] and all(g.winner is None and g.endgame is None for g in (a, b, c, d, e))
    assert a.scores == [None, None]


def test_sfen_bad_lines():
    skipped = []
    games = read_sfen_lines("startpos moves 7g7f\nfoo bar\nsfen xx b - 1\nstartpos moves 7g7f 7c7d 7f7e 7e7d\n"
                            "startpos nonsense 7g7f\n", skipped=skipped)
    assert [g.line for g in games] == [1, 4]
    assert games[1].moves == ["7g7f", "7c7d", "7f7e"] and games[1].problems[0][0] == 4
    assert [e.line for e in skipped] == [2, 3, 5]
    with pytest.raises(RecordError) as e:
        read_sfen_lines("garbage\n")
    assert e.value.line == 1


@needs_data
def test_sfen_opening_files():
    for name, count in (("openings-v3.sfen", 3000), ("floodgate-2016-openings-24ply.sfen", 10831)):
        games = read_sfen_lines(DATA / "openings" / name)
        assert len(games) == count and not any(g.problems for g in games)


def test_kif_roundtrip_via_python_shogi_exporter(tmp_path):
    text = "V2\nPI\n+\n+7776FU\n-3334FU\n+8822UM\n-3122GI\n+0045KA\n-8384FU\n%TORYO\n"
    g = read_csa(text)[0]
    kif = shogi.KIF.Exporter.kif({"names": ["先手さん", "後手さん"], "sfen": g.sfen, "moves": g.moves, "win": "w"})
    for enc in ("cp932", "utf-8"):
        p = tmp_path / f"g_{enc}.kif"
        p.write_bytes(kif.encode(enc))
        (k,) = read_kif(p)
        assert k.moves == g.moves and k.sfen == g.sfen
        assert k.names == ("先手さん", "後手さん") and k.winner == 1 and k.endgame == "%TORYO"
        assert read_records(p)[0].moves == g.moves


def test_kif_illegal_move_truncates():
    kif = (
        "手合割：平手\n先手：a\n後手：b\n手数----指手---------消費時間--\n"
        "   1 ７六歩(77)\n   2 ３四歩(33)\n   3 ２二角成(88)\n   4 ２二銀(31)\n   5 ２二角打\n   6 投了\n"
    )
    (k,) = read_kif(kif)
    assert k.moves == ["7g7f", "3c3d", "8h2b+", "3a2b"]
    assert k.problems and k.problems[0][0] == 9


def test_read_records_dispatch(tmp_path):
    csa = "V2\nPI\n+\n+7776FU\n%TORYO\n"
    for name in ("a.csa", "a.CSA", "noext", "a.txt", "a.dat"):
        (tmp_path / name).write_text(csa)
        assert read_records(tmp_path / name)[0].moves == ["7g7f"], name
    (tmp_path / "b.sfen").write_text("startpos moves 7g7f\n")
    (tmp_path / "b.txt").write_text("startpos moves 7g7f\n")
    assert read_records(tmp_path / "b.sfen")[0].moves == read_records(tmp_path / "b.txt")[0].moves == ["7g7f"]
    (tmp_path / "c.xyz").write_text("hello\n")
    with pytest.raises(RecordError, match="unknown record type"):
        read_records(tmp_path / "c.xyz")
    (tmp_path / "d.hcpe").write_bytes(b"\x00" * 38)
    with pytest.raises(RecordError):
        read_records(tmp_path / "d.hcpe")
    with pytest.raises(RecordError):
        read_records(tmp_path / "missing.csa")
    with pytest.raises(RecordError):
        read_records(tmp_path)
