"""read_csa: oracle against cshogi on the real data, the legality checker against python-shogi, bad input,
endings and winners on hand-made records."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from conftest import FIXTURES, FLOODGATE_FILES, SELFPLAY_FILES, extra_files
from shogitrain.records import RecordError, read_csa
from shogitrain.records.csa import _Header, _read_moves
from shogitrain.records.text import decode_record_bytes
from shogitrain.shogi.position import IllegalMove, Position
from shogitrain.records.game import GameRecord
from shogitrain.shogi.vocabulary import STARTPOS_SFEN, parse_sfen

cshogi = pytest.importorskip("cshogi")
import cshogi.CSA  # noqa: E402

FIXTURE_FILES = sorted(FIXTURES.glob("*.csa"))
CSA_FILES = [str(p) for p in FLOODGATE_FILES + FIXTURE_FILES]
SELFPLAY = [str(p) for p in SELFPLAY_FILES]
# cshogi 1.1.0 segfaults on P+/P- piece-list setups: these are checked by hand below, not by the oracle.
PIECE_LIST_FILES = {"tsume-piece-list.csa"}

HIRATE_HEADER = """V2.2
N+alice
N-bob
PI
+
"""


def _uses_piece_lists(path: str) -> bool:
    """P+/P- lines that put pieces on the board (hand-only lists are fine for cshogi)."""
    with open(path, "rb") as fh:
        for line in fh:
            body = line.strip()[2:]
            if line.startswith((b"P+", b"P-")) and any(body[k:k + 2] != b"00" for k in range(0, len(body), 4)):
                return True
    return False


# ------------------------------------------------------------------------------------------------------
# Oracle
# ------------------------------------------------------------------------------------------------------

# Where read_csa and cshogi disagree, read_csa is right:
# * hand order in SFEN: cshogi writes hands FU-first ("3psr"), we write the customary R B G S N L P order;
#   both are valid SFEN for the same position, so positions are compared parsed, not as strings.
# * missing data: cshogi reports 0 for a move without '** comment and 0.0 for an absent rating; we give
#   None (a real 0 score / unrated player must stay distinguishable).
# * '%TSUMI' (tsume-board.csa): cshogi gives win 0 (no result); the side to move is mated, so the other
#   side (black here) wins.
# * max-moves self-play games written as '%JISHOGI' + "'summary:max_moves:…": the summary takes
#   precedence, so our endgame is '%MAX_MOVES' where cshogi reports '%JISHOGI' (both: no winner).
# * games without '%' line but with a summary: cshogi has no ending; ours comes from the summary.
def _check_against_cshogi(path: str):
    raw = open(path, "rb").read()
    text, _ = decode_record_bytes(raw)  # BOM stripped, Shift_JIS / EUC-JP decoded for cshogi
    text = text.replace("\r\n", "\n")  # cshogi 1.1.0 rejects CRLF line ends ("Board infomation is not defined")
    ours = read_csa(path)
    theirs = cshogi.CSA.Parser.parse_str(text)
    assert len(ours) == len(theirs), path
    for a, b in zip(ours, theirs):
        assert parse_sfen(a.sfen) == parse_sfen(b.sfen), path
        assert a.moves == [cshogi.move_to_usi(m) for m in b.moves], path
        assert [0 if s is None else s for s in a.scores] == list(b.scores), path
        assert tuple(0.0 if r is None else r for r in a.ratings) == tuple(b.ratings), path
        assert a.problems == [], (path, a.problems)
        expected_winner = {0: None, 1: 0, 2: 1}[b.win]  # cshogi: 0 draw/none, 1 black, 2 white
        summary = "'summary:" in text
        if a.endgame == "%TSUMI":
            assert b.win == 0 and a.winner == (len(a.moves) + (a.sfen.split()[1] == "w")) % 2 ^ 1
        elif summary and a.endgame != b.endgame:
            assert (a.endgame, b.endgame) == ("%MAX_MOVES", "%JISHOGI"), path
            assert a.winner is None and expected_winner is None
        else:
            assert a.endgame == (b.endgame or None), path
            assert a.winner == expected_winner, path
        names = tuple(n if n else None for n in b.names)
        assert a.names == names or (a.names == (None, None) and names == (None, None)), path


@pytest.mark.parametrize("path", [p for p in CSA_FILES if os.path.basename(p) not in PIECE_LIST_FILES],
                         ids=os.path.basename)
def test_oracle_bundled_files(path):
    """The floodgate games and every fixture but the piece-list one (test_piece_list_fixture)."""
    assert not _uses_piece_lists(path)
    _check_against_cshogi(path)


@pytest.mark.slow
@pytest.mark.parametrize("corpus", ["wcsc28", "pro", "fixtures", "floodgate"])
def test_oracle_extra_corpus(corpus):
    """Every CSA file of an optional corpus; files with board piece lists (cshogi crashes) are left out."""
    files = [str(p) for p in extra_files(corpus) if not _uses_piece_lists(str(p))]
    assert files
    for path in files:
        _check_against_cshogi(path)


def test_oracle_selfplay_all():
    # the full sweep takes about 1 s (both parsers), so it runs by default rather than under -m slow
    assert len(SELFPLAY) == 1140
    for path in SELFPLAY:
        _check_against_cshogi(path)


def test_selfplay_summary_order_is_black_first():
    """Self-play names are equal, so the summary's order decides; it lists black first: check it against
    the %TORYO rule (the side to move resigned) on every resignation of the subset."""
    checked = 0
    for path in SELFPLAY[::10]:
        g = read_csa(path)[0]
        if g.endgame == "%TORYO":
            turn_at_end = ("bw".index(g.sfen.split()[1]) + len(g.moves)) % 2
            assert g.winner == 1 - turn_at_end, path
            checked += 1
    assert checked > 50


def test_piece_list_fixture():
    """tsume-piece-list.csa (P-/P+ piece lists and P-00AL; cshogi segfaults) is the same tsume as
    tsume-board.csa (P rows, white's hand listed piece by piece)."""
    a = read_csa(FIXTURES / "tsume-piece-list.csa")[0]
    b = read_csa(FIXTURES / "tsume-board.csa")[0]
    assert a.sfen == b.sfen == "4p3k/9/6L1p/7l+R/9/9/9/9/9 b BLrb4g4s4nl16p 1"
    assert a.moves == b.moves == ["1d1c", "P*1b", "B*2b", "1a2a", "3c3a+"]
    assert a.endgame == "%TSUMI" and a.winner == 0 and a.problems == []
    assert a.names == ("攻め方", "玉方")


def test_cshogi_subprocess_on_piece_list_file_crashes_or_agrees():
    """Run cshogi on the piece-list fixture in a subprocess: it must not take the test process down."""
    path = FIXTURES / "tsume-piece-list.csa"
    code = (
        "import sys, cshogi, cshogi.CSA\n"
        f"t = open({str(path)!r}, encoding='cp932').read()\n"
        "p = cshogi.CSA.Parser.parse_str(t)[0]\n"
        "print(' '.join(cshogi.move_to_usi(m) for m in p.moves))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    if r.returncode == 0:  # a fixed cshogi: then it must agree
        assert r.stdout.split() == read_csa(path)[0].moves
    else:
        assert r.returncode != 0


def test_encodings_of_fixtures():
    sjis = read_csa(FIXTURES / "sjis-declared-v22.csa")[0]
    assert sjis.names == ("先手 一郎", "後手 次郎") and sjis.event == "第1回 検証将棋大会"
    assert sjis.start_time == "2026/11/21 10:00:00"
    euc = read_csa(FIXTURES / "eucjp-v21.csa")[0]
    assert euc.names == ("佐藤 花子", "鈴木 三郎") and euc.event == "練習対局"
    bom = read_csa(FIXTURES / "utf8-bom.csa")[0]
    assert bom.names == ("shogitrain-a", "きふ太郎") and bom.start_time == "2026/11/21 11:00:54"
    for g in (sjis, euc, bom):
        assert g.problems == [] and g.winner == 0 and g.endgame == "%TORYO"


def _selfplay_game(number: int):
    return read_csa(next(p for p in SELFPLAY if p.endswith(f"s1w0g{number:05d}.csa")))[0]


@pytest.mark.parametrize("name, games", [
    # file: per game (self-play game it copies or None, moves kept, endgame, winner)
    ("sjis-declared-v22.csa", [(11, 73, "%TORYO", 0)]),
    ("eucjp-v21.csa", [(20, 79, "%TORYO", 0)]),
    ("utf8-bom.csa", [(3, 85, "%TORYO", 0)]),
    ("crlf.csa", [(6, 95, "%TORYO", 0)]),
    ("no-final-newline.csa", [(9, 87, "%TORYO", 0)]),
    ("several-games.csa", [(19, 113, "%TORYO", 0), (26, 109, "%SENNICHITE", None), (28, 40, "%CHUDAN", None)]),
    ("illegal-move.csa", [(29, 61, "%ILLEGAL_MOVE", 0)]),      # white to move made the illegal move
    ("illegal-action.csa", [(30, 48, "%+ILLEGAL_ACTION", 1)]),  # black's foul
    ("chudan.csa", [(31, 33, "%CHUDAN", None)]),
    ("handicap-two-piece.csa", [(None, 96, "%TORYO", 0)]),     # white to move resigned
    ("midgame-board.csa", [(None, 54, "%TORYO", 0)]),
])
def test_fixture_quirks(name, games):
    """Each fixture reads as the game it was written from: moves, ending, winner, no problems."""
    got = read_csa(FIXTURES / name)
    assert len(got) == len(games)
    for g, (number, n_moves, endgame, winner) in zip(got, games):
        assert (len(g.moves), g.endgame, g.winner, g.problems) == (n_moves, endgame, winner, [])
        if number is not None:
            source = _selfplay_game(number)
            assert g.sfen == source.sfen == STARTPOS_SFEN and g.moves == source.moves[:n_moves]


def test_fixture_start_positions_and_ratings():
    (handicap,) = read_csa(FIXTURES / "handicap-two-piece.csa")
    assert handicap.sfen == "lnsgkgsnl/9/ppppppppp/9/9/9/PPPPPPPPP/1B5R1/LNSGKGSNL w - 1"
    assert handicap.moves[:2] == ["5a4b", "9g9f"]
    (mid,) = read_csa(FIXTURES / "midgame-board.csa")
    source = _selfplay_game(33)
    assert mid.moves == source.moves[51:] and mid.scores == source.scores[51:]
    board = shogi.Board(source.sfen)
    for m in source.moves[:51]:
        board.push_usi(m)
    assert parse_sfen(mid.sfen)[:3] == parse_sfen(board.sfen())[:3] and mid.sfen.split()[1] == "w"
    (crlf,) = read_csa(FIXTURES / "crlf.csa")
    assert crlf.ratings == (3210.0, 3105.5) and crlf.names == ("alpha_crlf", "beta_crlf")
    assert b"\r\n" in (FIXTURES / "crlf.csa").read_bytes()
    assert not (FIXTURES / "no-final-newline.csa").read_bytes().endswith(b"\n")


# ------------------------------------------------------------------------------------------------------
# Legality checker vs python-shogi
# ------------------------------------------------------------------------------------------------------

shogi = pytest.importorskip("shogi")
_NAMES = ["", "FU", "KY", "KE", "GI", "KA", "HI", "KI", "OU", "TO", "NY", "NK", "NG", "UM", "RY"]


def _candidates(pos: Position):
    """Every CSA move string worth trying: all own pieces (and promoted forms) to all squares, all drops."""
    sign = "+-"[pos.turn]
    out = []
    for frm, code in enumerate(pos.board):
        if not code or code >> 4 != pos.turn:
            continue
        pt = code & 15
        f1, r1 = frm // 9 + 1, frm % 9 + 1
        kinds = {pt} | ({pt + 8} if pt <= 6 else set())
        for to in range(81):
            if to != frm:
                for k in kinds:
                    out.append(f"{sign}{f1}{r1}{to // 9 + 1}{to % 9 + 1}{_NAMES[k]}")
    for pt in range(1, 8):
        for to in range(81):
            out.append(f"{sign}00{to // 9 + 1}{to % 9 + 1}{_NAMES[pt]}")
    return out


def _fast_play(pos: Position, s: str):
    """The reader's move loop (_read_moves) on one move line: the USI move, or None when it
    rejects it. An accepted move must leave exactly the position Position.push leaves (state, side to
    move, king squares, check flag), and the snapshot must be the position before it."""
    p = pos.copy()
    h = _Header()
    rec = GameRecord(sfen="")
    snaps = bytearray()
    _read_moves([s], 0, 1, p, h, rec, snaps)
    if not rec.moves:
        assert not snaps and len(h.problems) == 1
        return None
    assert bytes(snaps) == bytes(pos.st)
    ref = pos.copy()
    assert ref.push(s) == rec.moves[0]
    assert (p.st, p.turn, p.ksq, p.in_check) == (ref.st, ref.turn, ref.ksq, ref.in_check), s
    return rec.moves[0]


def _compare_position(sfen: str, fast: bool = True):
    """Position.push and the reader's move loop against python-shogi on every candidate move."""
    pos = Position.from_sfen(sfen)
    board = shogi.Board(sfen)
    legal = {m.usi() for m in board.legal_moves}
    assert pos.in_check == board.is_check()
    ours, fast_ours = set(), set()
    for s in _candidates(pos):
        try:
            ours.add(pos.copy().push(s))
        except IllegalMove:
            pass
        if fast:
            u = _fast_play(pos, s)
            if u is not None:
                fast_ours.add(u)
    assert ours == legal, (sfen, sorted(ours ^ legal)[:10])
    if fast:
        assert fast_ours == legal, (sfen, sorted(fast_ours ^ legal)[:10])
    return len(legal)


def _random_game_sfens(seed: int, plies: int = 160):
    rng = random.Random(seed)
    board = shogi.Board()
    out = []
    for _ in range(plies):
        moves = list(board.legal_moves)
        if not moves:
            break
        # prefer checks, captures and drops now and then to reach odd positions quickly
        checks = []
        if rng.random() < 0.3:
            for m in moves:
                board.push(m)
                if board.is_check():
                    checks.append(m)
                board.pop()
        board.push(rng.choice(checks or moves))
        out.append(board.sfen())
    return out


def test_legality_matches_python_shogi_on_special_positions():
    positions = [
        STARTPOS_SFEN,
        # pawn-drop mate available (illegal) next to a legal pawn drop check
        "7nl/7k1/9/7P1/9/9/9/9/4K4 b P 1",
        "8k/9/8P/9/9/9/9/9/4K4 b GP 1",
        # pinned pieces, king in check by a slider, double check, discovered check
        "4r4/9/9/9/4B4/9/9/4K4/9 b - 1",
        "k8/9/9/9/4r4/9/4G4/4K4/9 b - 1",
        "k8/9/9/9/4r4/9/2b6/4K4/9 b P 1",
        "3k5/9/9/9/9/9/9/3l5/r2K5 b GS 1",
        # promotion zone, forced promotion, nifu, dead-rank drops
        "4k4/P8/1N7/2L6/9/9/9/9/4K4 b PLN 1",
        "4k4/9/9/9/9/9/p8/1n7/4K3l w pln 1",
        "4k4/9/9/9/9/4P4/9/9/4K4 b P 1",
        # no black king (tsume setup)
        "7pk/7p1/7p1/7p1/7p1/7p1/7p1/7p1/7p1 b 2R4L4s4n 1",
    ]
    for sfen in positions:
        _compare_position(sfen)


def test_legality_matches_python_shogi_on_random_games():
    n = 0
    for seed in range(6):
        for i, sfen in enumerate(_random_game_sfens(seed)[::4]):
            n += _compare_position(sfen, fast=i % 2 == 0) >= 0
    assert n > 150


def test_legality_matches_python_shogi_on_real_positions():
    n = 0
    for path in SELFPLAY[:6] + CSA_FILES[:3]:
        for g in read_csa(path):
            b = shogi.Board(g.sfen)
            for i, m in enumerate(g.moves):
                b.push_usi(m)
                if i % 7 == 3 or b.is_check():
                    _compare_position(b.sfen())
                    n += 1
    assert n > 100


def _csa_text_of(usi_moves, extra_line=None):
    """A hirate CSA record of the given moves (converted through Position.usi_to_csa)."""
    pos = Position.from_sfen(STARTPOS_SFEN)
    out = [HIRATE_HEADER.rstrip("\n")]
    for u in usi_moves:
        s = pos.usi_to_csa(u)
        pos.push(s)
        out += [s, "T1"]
    if extra_line is not None:
        out.append(extra_line)
    return "\n".join(out) + "\n"


def test_reader_tracks_king_and_check_through_random_games():
    """The incremental state of the reader's move loop (check flag, king squares) over whole games full of
    checks: after every prefix the flag equals python-shogi's is_check, each kept position equals the
    board python-shogi reaches, and in positions in check every candidate move is judged right from the
    state the loop kept (not one rebuilt from scratch)."""
    n_checks = 0
    for seed in range(4):
        rng = random.Random(100 + seed)
        board = shogi.Board()
        usi = []
        for _ in range(120):
            moves = list(board.legal_moves)
            if not moves:
                break
            checks = [m for m in moves if board.is_check() or rng.random() < 0.5]
            pick = rng.choice(moves)
            for m in rng.sample(checks, min(6, len(checks))):
                board.push(m)
                gives = board.is_check()
                board.pop()
                if gives:
                    pick = m
                    break
            board.push(pick)
            usi.append(pick.usi())
        (g,) = read_csa(_csa_text_of(usi), positions=True)
        assert g.moves == usi
        replay = shogi.Board()
        states = g.positions
        for k, u in enumerate(usi):
            assert states[96 * k: 96 * (k + 1)] == bytes(Position.from_sfen(replay.sfen()).st)
            replay.push_usi(u)
        replay = shogi.Board()
        for k in range(len(usi)):
            replay.push_usi(usi[k])
            pos = Position.from_sfen(STARTPOS_SFEN)
            rec = GameRecord(sfen="")
            lines = _csa_text_of(usi[: k + 1]).split("\n")
            _read_moves(lines, 5, 1, pos, _Header(), rec)
            assert rec.moves == usi[: k + 1]
            assert pos.in_check == replay.is_check(), (seed, k)
            assert pos.st == Position.from_sfen(replay.sfen()).st
            if replay.is_check() and k % 2 == 0:  # candidates judged from the incrementally kept state
                n_checks += 1
                legal = {m.usi() for m in replay.legal_moves}
                fast = {u for u in (_fast_play(pos, c) for c in _candidates(pos)) if u is not None}
                assert fast == legal, (seed, k, sorted(fast ^ legal)[:10])
    assert n_checks > 10


# ------------------------------------------------------------------------------------------------------
# Format features on hand-made texts
# ------------------------------------------------------------------------------------------------------

def test_text_input_commas_scores_and_ratings():
    text = (
        "V2\nN+alice\nN-bob\n$EVENT:test\n$START_TIME:2020/01/01\nPI\n+\n"
        "'black_rate:alice+abc:3500.5\n'white_rate:bob+def:junk\n"
        "+7776FU,T10\n'** 50 -3334FU +8822UM\n-3334FU\nT3\n'**\n"
        "+8822UM,T1\n'** abc 7g7f\n-3122GI\n'** -300 #499 junk\n'** 999\n%TORYO,T1\n"
    )
    g = read_csa(text)[0]
    assert g.moves == ["7g7f", "3c3d", "8h2b+", "3a2b"]
    assert g.scores == [50, None, None, -300]
    assert g.ratings == (3500.5, None)
    assert g.names == ("alice", "bob") and g.event == "test" and g.start_time == "2020/01/01"
    assert g.endgame == "%TORYO" and g.winner == 1  # black to move resigned
    assert g.problems == []


def test_first_score_token_after_a_move_counts():
    """A '** comment without a usable token does not use up the move's score; one with a bad token does."""
    text = HIRATE_HEADER + (
        "+7776FU\n'**\n'** \n'**_x\n'** 12_3\n'** 40\n'** 41\n"
        "-3334FU\n'** zz\n'** 7\n"
        "+2726FU\n'**\t-15 +2625FU\n'** 3\n"
        "-8384FU\n'**   +20\tpv\n%TORYO\n"
    )
    g = read_csa(text)[0]
    assert g.scores == [40, None, -15, None]


def test_crlf_bom_and_path_inputs(tmp_path):
    text = HIRATE_HEADER + "+7776FU\n-3334FU\n%TORYO\n"
    p = tmp_path / "g.csa"
    p.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    for arg in (p, str(p), p.read_bytes(), "\ufeff" + text):
        (g,) = read_csa(arg)
        assert g.moves == ["7g7f", "3c3d"] and g.winner == 1 and g.source in (None, str(p))


def test_shift_jis_and_euc_jp_detected(tmp_path):
    text = "'日本語のコメント\n" + HIRATE_HEADER.replace("alice", "先手太郎") + "+7776FU\n%TORYO\n"
    for enc in ("cp932", "euc_jp", "utf-8"):
        p = tmp_path / f"{enc}.csa"
        p.write_bytes(text.encode(enc))
        (g,) = read_csa(p)
        assert g.names[0] == "先手太郎", enc
    p = tmp_path / "declared.csa"
    p.write_bytes(("'encoding=Shift_JIS\n" + text).encode("cp932"))
    assert read_csa(p)[0].names[0] == "先手太郎"


def test_several_games_per_file():
    text = HIRATE_HEADER + "+7776FU\n%TORYO\n/\n" + HIRATE_HEADER + "+2726FU\n-8384FU\n%KACHI\n/\n"
    a, b = read_csa(text)
    assert a.moves == ["7g7f"] and a.winner == 0 and a.line == 1
    assert b.moves == ["2g2f", "8c8d"] and b.winner == 0 and b.line == 9


def test_handicap_and_piece_lists():
    (g,) = read_csa("PI82HI22KA\n-\n-3334FU\n+7776FU\n")
    assert g.sfen == "lnsgkgsnl/9/ppppppppp/9/9/9/PPPPPPPPP/1B5R1/LNSGKGSNL w - 1"
    assert g.moves == ["3c3d", "7g7f"]
    (g,) = read_csa("P-51OU\nP+59OU00KI\nP-00AL\n+\n+0052KI\n")
    board, hand, turn, _ = parse_sfen(g.sfen)
    assert hand[0] == [0, 0, 0, 0, 1, 0, 0] and hand[1] == [18, 4, 4, 4, 3, 2, 2] and turn == 0
    assert g.moves == ["G*5b"]


def test_p_rows_with_trailing_spaces_stripped():
    rows = [
        "P1-KY-KE-GI-KI-OU-KI-GI-KE-KY", "P2 * -HI *  *  *  *  * -KA *", "P3-FU-FU-FU-FU-FU-FU-FU-FU-FU",
        "P4", "P5", "P6", "P7+FU+FU+FU+FU+FU+FU+FU+FU+FU", "P8 * +KA *  *  *  *  * +HI *",
        "P9+KY+KE+GI+KI+OU+KI+GI+KE+KY",
    ]
    (g,) = read_csa("\n".join(rows) + "\n+\n+7776FU\n")
    assert g.sfen == STARTPOS_SFEN and g.moves == ["7g7f"]


# ------------------------------------------------------------------------------------------------------
# Endings and winners
# ------------------------------------------------------------------------------------------------------

def _game(ending: str, moves: str = "+7776FU\n-3334FU\n") -> tuple:
    g = read_csa(HIRATE_HEADER + moves + ending)[0]
    return g.endgame, g.winner


@pytest.mark.parametrize(
    "ending, expected",
    [
        ("%TORYO\n", ("%TORYO", 1)),            # black to move resigns → white wins
        ("%TIME_UP\n", ("%TIME_UP", 1)),         # black to move ran out of time
        ("%ILLEGAL_MOVE\n", ("%ILLEGAL_MOVE", 1)),  # black to move made the illegal move
        ("%TSUMI\n", ("%TSUMI", 1)),             # black to move is mated
        ("%KACHI\n", ("%KACHI", 0)),             # black to move declares a win
        ("%+ILLEGAL_ACTION\n", ("%+ILLEGAL_ACTION", 1)),
        ("%-ILLEGAL_ACTION\n", ("%-ILLEGAL_ACTION", 0)),
        ("%SENNICHITE\n", ("%SENNICHITE", None)),
        ("%JISHOGI\n", ("%JISHOGI", None)),
        ("%MAX_MOVES\n", ("%MAX_MOVES", None)),
        ("%HIKIWAKE\n", ("%HIKIWAKE", None)),
        ("%CHUDAN\n", ("%CHUDAN", None)),
        ("%FUZUMI\n", ("%FUZUMI", None)),
        ("", (None, None)),                      # truncated / unfinished record
        ("%TORYO\n'summary:toryo:alice win:bob lose\n", ("%TORYO", 0)),  # summary wins over the rule
        ("'summary:max_moves:alice draw:bob draw\n", ("%MAX_MOVES", None)),
        ("%SENNICHITE\n'summary:sennichite:alice draw:bob draw\n", ("%SENNICHITE", None)),
        ("%TIME_UP\n'summary:time up:alice lose:bob win\n", ("%TIME_UP", 1)),
        ("%KACHI\n'summary:kachi:alice win:bob lose\n", ("%KACHI", 0)),
        ("'summary:illegal move:alice win:bob lose\n", ("%ILLEGAL_MOVE", 0)),
        ("'summary:abnormal:alice lose:bob win\n", ("%CHUDAN", 1)),
        ("%TORYO\n'summary:toryo:bob win:alice lose\n", ("%TORYO", 1)),  # names, not order, decide
    ],
)
def test_endings(ending, expected):
    assert _game(ending) == expected


def test_white_to_move_rules():
    moves = "+7776FU\n"
    assert _game("%TORYO\n", moves) == ("%TORYO", 0)
    assert _game("%KACHI\n", moves) == ("%KACHI", 1)
    assert _game("%TSUMI\n", moves) == ("%TSUMI", 0)


def test_summary_with_equal_names_uses_order():
    text = "N+x\nN-x\nPI\n+\n+7776FU\n%TORYO\n'summary:toryo:x win:x lose\n"
    assert read_csa(text)[0].winner == 0
    text = "N+x\nN-x\nPI\n+\n+7776FU\n%TORYO\n'summary:toryo:x lose:x win\n"
    assert read_csa(text)[0].winner == 1


def test_unknown_ending_kept_with_problem():
    g = read_csa(HIRATE_HEADER + "+7776FU\n%WHATEVER\n")[0]
    assert g.endgame == "%WHATEVER" and g.winner is None and g.problems


# ------------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------------

def test_illegal_move_mid_game_keeps_prefix():
    text = HIRATE_HEADER + "+7776FU\n-3334FU\n+2824HI\n-8384FU\n%TORYO\n"  # rook jumps over the 2g pawn
    g = read_csa(text)[0]
    assert g.moves == ["7g7f", "3c3d"] and g.scores == [None, None]
    assert len(g.problems) == 1 and g.problems[0][0] == 8 and "illegal" in g.problems[0][1]
    # the ending is still read, with the side to move of the record as written (4 moves: black resigned)
    assert g.endgame == "%TORYO" and g.winner == 1


@pytest.mark.parametrize(
    "bad",
    ["-3334FU", "+7775FU", "+7776KI", "+5958OU\n-5152OU\n+5857OU", "+0055FU", "+7776FU\n-8384FU\n+8822UM",
     "+7776FU\n-3334FU\n+8822UM\n-2122KE", "+7776FU\n-3334FU\n+5968OU\n-2277UM\n+2726FU"],
)
def test_illegal_moves_are_rejected(bad):
    g = read_csa(HIRATE_HEADER + bad + "\n")[0]
    assert g.problems and g.problems[-1][0] is not None
    assert len(g.moves) == bad.count("\n")


def test_unknown_piece_code_and_garbage_lines():
    g = read_csa(HIRATE_HEADER + "+7776FU\nhello world\n-3334XX\n+2726FU\n")[0]
    assert g.moves == ["7g7f"]
    lines = {ln for ln, _ in g.problems}
    assert {7, 8} <= lines
    assert any("unknown piece code" in r for _, r in g.problems)
    with pytest.raises(RecordError) as e:
        read_csa("P1-KY-KE-GI-KI-OU-KI-GI-KE-XX\n+\n")
    assert e.value.line == 1 and "unknown piece code" in e.value.reason


def test_empty_binary_and_no_position(tmp_path):
    empty = tmp_path / "empty.csa"
    empty.write_bytes(b"")
    with pytest.raises(RecordError, match="empty"):
        read_csa(empty)
    blank = tmp_path / "blank.csa"
    blank.write_bytes(b"\n\n  \n")
    with pytest.raises(RecordError):
        read_csa(blank)
    binary = tmp_path / "bin.csa"
    binary.write_bytes(bytes(random.Random(1).randrange(256) for _ in range(5000)))
    with pytest.raises(RecordError) as e:
        read_csa(binary)
    assert e.value.file == str(binary)
    with pytest.raises(RecordError, match="no start position"):
        read_csa("V2\nN+a\n+7776FU\n")


def test_truncated_file(tmp_path):
    p = tmp_path / "trunc.csa"
    p.write_text("V2\nN+a\nN-b\nP1-KY-KE-GI-KI-OU-KI-GI-KE-KY\nP2 * -H")
    with pytest.raises(RecordError):
        read_csa(p)  # cut inside the position: nothing usable
    p.write_text(HIRATE_HEADER + "+7776FU\nT1\n-3334FU\n+77")
    g = read_csa(p)[0]
    assert g.moves == ["7g7f", "3c3d"] and g.endgame is None and g.winner is None
    assert g.problems and g.problems[0][0] == 9


def test_wrong_encoding_is_replaced_not_fatal(tmp_path):
    p = tmp_path / "latin.csa"
    p.write_bytes(HIRATE_HEADER.encode() + "'café \xff\xfe\x80\n".encode("latin-1") + b"+7776FU\n%TORYO\n")
    (g,) = read_csa(p)
    assert g.moves == ["7g7f"] and g.winner == 0
    assert g.problems and "undecodable" in g.problems[0][1]


def test_ten_megabyte_single_line(tmp_path):
    p = tmp_path / "huge.csa"
    p.write_bytes(b"+7776FU," * (10 * 1024 * 1024 // 8))
    with pytest.raises(RecordError):
        read_csa(p)
    q = tmp_path / "huge_comment.csa"
    q.write_bytes(HIRATE_HEADER.encode() + b"+7776FU\n'" + b"x" * (10 * 1024 * 1024) + b"\n-3334FU\n%TORYO\n")
    (g,) = read_csa(q)
    assert g.moves == ["7g7f", "3c3d"] and g.winner == 1
    assert any("characters" in reason for _, reason in g.problems)
    r = tmp_path / "huge_move_line.csa"
    r.write_bytes(HIRATE_HEADER.encode() + b"+7776FU," * (10 * 1024 * 1024 // 8) + b"\n")
    (g,) = read_csa(r)
    assert g.moves == [] and any("characters" in reason for _, reason in g.problems)


def test_directory_with_mixed_files(tmp_path):
    good = HIRATE_HEADER + "+7776FU\n-3334FU\n%TORYO\n"
    (tmp_path / "a.csa").write_text(good)
    (tmp_path / "b.csa").write_bytes(good.encode("cp932"))
    (tmp_path / "c.csa").write_bytes(b"")
    (tmp_path / "d.csa").write_bytes(b"\x00\x01\x02garbage")
    (tmp_path / "e.csa").write_text(good + "/\nP1 garbage\n+\n/\n" + good)
    (tmp_path / "f.csa").write_text("just some words\n")
    games, errors = [], []
    for path in sorted(tmp_path.iterdir()):
        try:
            games.extend(read_csa(path, skipped=errors))
        except RecordError as e:
            errors.append(e)
    assert len(games) == 4 and all(g.moves == ["7g7f", "3c3d"] and g.winner == 1 for g in games)
    assert sorted(os.path.basename(e.file) for e in errors) == ["c.csa", "d.csa", "e.csa", "f.csa"]
