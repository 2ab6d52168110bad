"""SFEN lines, KIF (python-shogi), and read_records dispatch."""

from __future__ import annotations

import pytest
import shogi
import shogi.KIF

from conftest import FIXTURES, OPENINGS, SELFPLAY_FILES, extra_files
from shogitrain.records import RecordError, read_csa, read_kif, read_records, read_sfen_lines
from shogitrain.shogi.vocabulary import STARTPOS_SFEN


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


def test_sfen_opening_file():
    games = read_sfen_lines(OPENINGS)
    assert len(games) == 10831 and not any(g.problems for g in games)
    assert all(len(g.moves) == 24 and g.sfen == STARTPOS_SFEN for g in games)


def test_sfen_fixture_with_comments_and_every_line_form():
    games = read_sfen_lines(FIXTURES / "openings-commented.sfen")
    assert [g.line for g in games] == [3, 4, 6, 7, 8, 9, 10]
    assert [len(g.moves) for g in games] == [24, 24, 24, 24, 12, 0, 0]
    assert not any(g.problems for g in games)
    openings = read_sfen_lines(OPENINGS)[:4]
    assert [g.moves for g in games[:4]] == [g.moves for g in openings]
    assert games[4].sfen == games[5].sfen and games[4].sfen.endswith(" b Bp 41")
    assert games[6].sfen == STARTPOS_SFEN


@pytest.mark.slow
def test_sfen_extra_opening_files():
    """Opening sets of an optional corpus (e.g. openings/*.sfen with '#' comment headers)."""
    files = extra_files("openings", pattern="*.sfen")
    assert files
    for path in files:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.split("#", 1)[0].strip()]
        games = read_sfen_lines(path)
        assert len(games) == len(lines) > 0 and not any(g.problems for g in games), path


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


def test_kif_fixture_in_shift_jis():
    """sjis.kif (Shift_JIS, CRLF, time columns, 同, drops, promotions) is self-play game s1w0g00017."""
    (k,) = read_kif(FIXTURES / "sjis.kif")
    source = read_csa(next(p for p in SELFPLAY_FILES if p.name.endswith("s1w0g00017.csa")))[0]
    assert k.moves == source.moves and len(k.moves) == 127 and k.sfen == STARTPOS_SFEN
    assert k.names == ("先手 四郎", "後手 五郎") and k.winner == 0 and k.endgame == "%TORYO"
    assert k.problems == [] and read_records(FIXTURES / "sjis.kif")[0].moves == source.moves


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
