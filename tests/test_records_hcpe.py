"""hcpe: the numpy Huffman decoder against cshogi's encoder, and the conversion to shard rows."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import FLOODGATE_FILES, SELFPLAY_FILES
from shogitrain.records import RecordError, read_csa
from shogitrain.records.hcpe import HCPE_DTYPE, decode_hcp, read_hcpe
from shogitrain.shards.convert import rows_from_hcpe
from shogitrain.shards.format import POSITION_DTYPE
from shogitrain.shogi.vocabulary import STARTPOS_SFEN, move16_from_usi, parse_sfen

cshogi = pytest.importorskip("cshogi")


def _positions():
    """(sfen, usi move) pairs from real games (hands of every kind, promoted pieces, both sides to move)."""
    out = []
    for path in SELFPLAY_FILES[:25] + FLOODGATE_FILES[:10]:
        for g in read_csa(path):
            b = cshogi.Board(g.sfen)
            for m in g.moves:
                out.append((b.sfen(), m))
                b.push_usi(m)
    assert len(out) > 3000
    return out


def _hcpe_for(pairs, rng):
    arr = np.zeros(len(pairs), dtype=cshogi.HuffmanCodedPosAndEval)
    b = cshogi.Board()
    for i, (sfen, usi) in enumerate(pairs):
        b.set_sfen(sfen)
        b.to_hcp(arr[i:i + 1]["hcp"])
        arr[i]["bestMove16"] = cshogi.move16(b.move_from_usi(usi))
    arr["eval"] = rng.integers(-3000, 3000, len(pairs))
    arr["gameResult"] = rng.integers(0, 3, len(pairs))
    return arr


def test_dtype_matches_cshogi_layout():
    assert HCPE_DTYPE.itemsize == cshogi.HuffmanCodedPosAndEval.itemsize == 38
    assert HCPE_DTYPE.names == cshogi.HuffmanCodedPosAndEval.names
    for name in HCPE_DTYPE.names:
        assert HCPE_DTYPE.fields[name][1] == cshogi.HuffmanCodedPosAndEval.fields[name][1]


def test_decode_matches_cshogi(tmp_path):
    rng = np.random.default_rng(0)
    pairs = _positions()
    arr = _hcpe_for(pairs, rng)
    path = tmp_path / "x.hcpe"
    arr.tofile(path)
    back = read_hcpe(path)
    assert back.tobytes() == arr.tobytes()
    board, hand, turn, ok = decode_hcp(back["hcp"])
    assert ok.all()
    b = cshogi.Board()
    for i, (sfen, _) in enumerate(pairs):
        b.set_hcp(arr[i]["hcp"])  # cshogi's own decoder as the oracle
        eb, eh, et, _ = parse_sfen(b.sfen())
        assert board[i].tolist() == eb and hand[i].tolist() == eh and int(turn[i]) == et, sfen
    rows = rows_from_hcpe(back)
    assert rows.dtype == POSITION_DTYPE
    assert rows["move16"].tolist() == [move16_from_usi(u) for _, u in pairs]
    assert (rows["eval"] == arr["eval"]).all()
    res = arr["gameResult"]
    expect = np.where(res == 0, 1, np.where((res == 1) == (rows["turn"] == 0), 2, 0))
    assert (rows["result"] == expect).all()


def test_bad_hcpe_files(tmp_path):
    p = tmp_path / "bad.hcpe"
    p.write_bytes(b"\x01" * 37)
    with pytest.raises(RecordError, match="multiple of 38"):
        read_hcpe(p)
    p.write_bytes(b"")
    with pytest.raises(RecordError, match="empty"):
        read_hcpe(p)
    garbage = np.frombuffer(np.random.default_rng(1).bytes(38 * 50), dtype=HCPE_DTYPE)
    _, _, _, ok = decode_hcp(garbage["hcp"])
    assert not ok.all()
    with pytest.raises(ValueError):
        rows_from_hcpe(garbage)


def test_startpos_roundtrip():
    b = cshogi.Board(STARTPOS_SFEN)
    hcp = np.zeros(1, dtype=cshogi.HuffmanCodedPos)
    b.to_hcp(hcp)
    board, hand, turn, ok = decode_hcp(hcp["hcp"])
    assert ok[0] and board[0].tolist() == parse_sfen(STARTPOS_SFEN)[0] and hand.sum() == 0 and turn[0] == 0
