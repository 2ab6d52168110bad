"""CSA game records (``read_csa``): every game of a file, replayed and checked move by move.

Accepts CSA V2–V2.2 and older files as found in real archives: any of UTF-8 / Shift_JIS / EUC-JP
(``records.text``), several games per file separated by ``/``, ``PI`` / ``P1``–``P9`` / piece-list
start positions, comma-separated statements, ``'**`` engine scores (Black's view, as written),
floodgate's ``'black_rate:`` / ``'white_rate:`` ratings and ``'summary:`` lines (which decide the
ending and winner over the ``%`` token). Every move is replayed by ``shogi.position.Position``: an
illegal or unreadable move ends the game there (kept up to the move before, with a problem entry).
A game without a usable start position is dropped; ``RecordError`` only when nothing can be read.
docs/records.md spells out the accepted syntax and how each ending decides the winner.
"""

from __future__ import annotations

from shogitrain.records.game import GameRecord, RecordError
from shogitrain.records.text import iter_chunks, load_text
from shogitrain.shogi.position import STATE_SIZE, BadMove, IllegalMove, Position
from shogitrain.names import DEFAULT_MAX_MOVES
from shogitrain.shogi.rules import move_limit_end, repetition_end
from shogitrain.shogi.vocabulary import (
    CSA_PIECE, FU, GI, HI, KA, KE, KI, KY, OU, STARTPOS_SFEN, WHITE_OFFSET, on_board, parse_sfen, square,
)

__all__ = ["read_csa", "read_csa_text", "MAX_LINE"]

MAX_LINE = 100_000  # characters; longer lines are reported and skipped
_BLACK, _WHITE = 0, 1


# ----------------------------------------------------------------------------------------------------
# Game parsing
# ----------------------------------------------------------------------------------------------------

_HIRATE = parse_sfen(STARTPOS_SFEN)[0]
_FULL_SET = {FU: 18, KY: 4, KE: 4, GI: 4, KI: 4, KA: 2, HI: 2}

_SUMMARY_KINDS = {
    "toryo": "%TORYO", "kachi": "%KACHI", "sennichite": "%SENNICHITE", "max_moves": "%MAX_MOVES",
    "time up": "%TIME_UP", "time_up": "%TIME_UP", "illegal move": "%ILLEGAL_MOVE", "uchifuzume": "%ILLEGAL_MOVE",
    "oute_kaihimore": "%ILLEGAL_MOVE", "oute_sennichite": "%ILLEGAL_MOVE", "abnormal": "%CHUDAN",
    "jishogi": "%JISHOGI", "hikiwake": "%HIKIWAKE", "chudan": "%CHUDAN", "tsumi": "%TSUMI",
}
_LOSS_FOR_MOVER = ("%TORYO", "%TIME_UP", "%ILLEGAL_MOVE", "%TSUMI")
_NO_WINNER = ("%SENNICHITE", "%JISHOGI", "%MAX_MOVES", "%HIKIWAKE", "%CHUDAN", "%FUZUMI")


class _Skip(Exception):
    def __init__(self, line, reason):
        super().__init__(reason)
        self.line = line
        self.reason = reason


def _winner_from_token(token: str, mover: int):
    if token in _LOSS_FOR_MOVER:
        return mover ^ 1, True
    if token == "%KACHI":
        return mover, True
    if token == "%+ILLEGAL_ACTION":
        return _WHITE, True
    if token == "%-ILLEGAL_ACTION":
        return _BLACK, True
    return None, token in _NO_WINNER


def _parse_summary(body: str, names):
    """'summary:<kind>:<name> <res>:<name> <res>' (body without the prefix) → (endgame, winner)."""
    parts = body.split(":")
    kind = parts[0].strip().lower()
    endgame = _SUMMARY_KINDS.get(kind) or ("%" + kind.upper().replace(" ", "_") if kind else None)
    winner = None
    results = []
    for part in parts[1:3]:
        part = part.strip()
        name, _, res = part.rpartition(" ")
        results.append((name, res.lower()))
    for idx, (name, res) in enumerate(results):
        if res == "win":
            if names[0] != names[1] and name and name in names:
                winner = names.index(name)
            else:
                winner = idx  # equal or unmatched names: floodgate lists black first
            break
    return endgame, winner


def _float_after_colon(s: str):
    try:
        return float(s.rsplit(":", 1)[1])
    except (ValueError, IndexError):
        return None


class _Header:
    __slots__ = ("board", "hand", "turn", "names", "event", "start_time", "rates", "summary", "problems",
                 "max_moves")

    def __init__(self):
        self.board = None
        self.hand = [[0] * 8, [0] * 8]
        self.turn = None
        self.names = [None, None]
        self.event = None
        self.start_time = None
        self.rates = [None, None]
        self.summary = None
        self.problems = []
        self.max_moves = None  # from 'Max_Moves:N


def _comment(h: _Header, line: str, ln: int):
    """Comments that carry data (anywhere in a game)."""
    if line.startswith("'black_rate:"):
        h.rates[0] = _float_after_colon(line)
    elif line.startswith("'white_rate:"):
        h.rates[1] = _float_after_colon(line)
    elif line.startswith("'summary:"):
        if h.summary is None:
            h.summary = (line[9:], ln)
    elif line.startswith("'Max_Moves:"):
        limit = _float_after_colon(line)
        if limit is not None and limit >= 1:
            h.max_moves = int(limit)


def _place_row(h: _Header, line: str, ln: int):
    rank = ord(line[1]) - 48
    row = line[2:].ljust(27)
    if h.board is None:
        h.board = [0] * 81
    for i in range(9):
        cell = row[3 * i:3 * i + 3]
        sq = square(9 - i, rank)
        if cell.strip() in ("*", ""):
            h.board[sq] = 0
            continue
        pt = CSA_PIECE.get(cell[1:3])
        if cell[0] not in "+-" or pt is None:
            raise _Skip(ln, f"unknown piece code {cell!r} in board row")
        h.board[sq] = pt + (WHITE_OFFSET if cell[0] == "-" else 0)


def _place_list(h: _Header, line: str, ln: int):
    color = 0 if line[1] == "+" else 1
    body = line[2:].rstrip()
    if len(body) % 4:
        raise _Skip(ln, f"malformed piece list {line[:40]!r}")
    if h.board is None:
        h.board = [0] * 81
    for k in range(0, len(body), 4):
        sqs, name = body[k:k + 2], body[k + 2:k + 4]
        if not sqs.isdigit() or not sqs.isascii():
            raise _Skip(ln, f"malformed piece list entry {body[k:k + 4]!r}")
        if sqs == "00" and name == "AL":
            counts = dict(_FULL_SET)
            for v in h.board:
                if v and v & 15 != OU:
                    pt = v & 15
                    counts[pt - 8 if pt > OU else pt] -= 1
            for c in (0, 1):
                for pt in counts:
                    counts[pt] -= h.hand[c][pt]
            for pt, n in counts.items():
                if n > 0:
                    h.hand[color][pt] += n
            continue
        pt = CSA_PIECE.get(name)
        if pt is None:
            raise _Skip(ln, f"unknown piece code {name!r} in piece list")
        if sqs == "00":
            if pt > KI:
                raise _Skip(ln, f"{name} cannot be in hand")
            h.hand[color][pt] += 1
        else:
            f, r = int(sqs[0]), int(sqs[1])
            if not on_board(f, r):
                raise _Skip(ln, f"bad square {sqs!r} in piece list")
            h.board[square(f, r)] = pt + WHITE_OFFSET * color


def _place_pi(h: _Header, line: str, ln: int):
    h.board = list(_HIRATE)
    body = line[2:].rstrip()
    for k in range(0, len(body), 4):
        item = body[k:k + 4]
        pt = CSA_PIECE.get(item[2:4])
        if len(item) != 4 or not item[:2].isdigit() or not item[:2].isascii() or pt is None:
            raise _Skip(ln, f"malformed PI removal {item!r}")
        f, r = int(item[0]), int(item[1])
        if not on_board(f, r) or h.board[square(f, r)] & 15 != pt:
            raise _Skip(ln, f"PI removal {item!r} does not match the initial position")
        h.board[square(f, r)] = 0


def _parse_game(lines: list[str], first: int, source, positions: bool = False,
                max_moves: int = DEFAULT_MAX_MOVES) -> GameRecord | None:
    """Parse one game's lines (``first`` = line number of lines[0]). None for a game with no content."""
    h = _Header()
    n = len(lines)
    i = 0
    start = None  # index of the first line of the move section
    content = False
    while i < n:
        line = lines[i]
        ln = first + i
        if len(line) > MAX_LINE:
            h.problems.append((ln, f"line of {len(line)} characters skipped"))
            content = True
            i += 1
            continue
        line = line.rstrip() if line[:1] != "P" else line.rstrip("\n")
        if not line.strip():
            i += 1
            continue
        content = True
        c = line[0]
        if c == "'":
            _comment(h, line, ln)
        elif c == "+" or c == "-":
            if len(line) == 1:
                h.turn = 0 if c == "+" else 1
                start = i + 1
            else:
                start = i
            break
        elif c == "%":
            start = i
            break
        elif c == "P":
            kind = line[1:2]
            if kind == "I":
                _place_pi(h, line, ln)
            elif kind in ("1", "2", "3", "4", "5", "6", "7", "8", "9"):
                _place_row(h, line, ln)
            elif kind in ("+", "-"):
                _place_list(h, line, ln)
            else:
                raise _Skip(ln, f"unrecognised position line {line[:40]!r}")
        elif c == "N" and line[1:2] in ("+", "-"):
            h.names[0 if line[1] == "+" else 1] = line[2:] or None
        elif c == "$":
            if line.startswith("$EVENT:"):
                h.event = line[7:]
            elif line.startswith("$START_TIME:"):
                h.start_time = line[12:]
        elif c == "V" or c == "T":
            pass
        else:
            h.problems.append((ln, f"unrecognised line {line[:40]!r}"))
        i += 1
    if not content:
        return None
    if h.board is None:
        raise _Skip(first + (start if start is not None else 0), "no start position")
    if start is None:
        start = n
    if h.turn is None:
        turn = 0
        for j in range(start, n):
            s = lines[j].lstrip()
            if s[:1] in ("+", "-") and len(s) >= 7:
                turn = 0 if s[0] == "+" else 1
                break
        h.turn = turn
        h.problems.append((None, "no side-to-move line; assumed " + "+-"[turn]))
    try:
        pos = Position(h.board, h.hand, h.turn)
    except ValueError as e:
        raise _Skip(first + max(start - 1, 0), f"bad start position: {e}") from None
    rec = GameRecord(sfen=pos.sfen(), source=source, line=first)
    snaps = bytearray()
    _read_moves(lines, start, first, pos, h, rec, snaps, max_moves)
    if positions:
        rec.positions = bytes(snaps)
    return rec


def _read_moves(lines, start, first, pos: Position, h: _Header, rec: GameRecord, snaps: bytearray | None = None,
                max_moves: int = DEFAULT_MAX_MOVES):
    """Replay the move section into ``rec``, appending the state before each kept move (``STATE_SIZE``
    bytes each) to ``snaps``; a game that the rules end (the fourth repetition, the move limit) is
    cut there.

    Every move is played by :meth:`Position.push`, whose legality checks are cross-checked against
    python-shogi. Long on purpose: the common lines (a plain move, a score comment, a time line) take
    an inlined fast path before the general statement parser; prepare spends most of its time here.
    """
    snaps = bytearray() if snaps is None else snaps
    moves = rec.moves
    moves_append = moves.append
    sc = {}              # number of moves played → score of the last of them
    last_scored = 0      # the largest key of sc (sc only grows at the end)
    problems = h.problems
    state = pos.st
    start_turn = pos.turn
    stopped = False      # an illegal/unreadable move ended the replay
    stop_index = -1      # index in the record's move count of the rejected move
    extra = 0            # move lines of the record not in ``moves`` (rejected, or after a rejection)
    token = None
    token_recorded = 0
    after_end = False
    clean = True         # not stopped and not after the end: the fast path applies
    limit = h.max_moves or max_moves

    def play(move: str, line_no: int) -> None:
        """Play one move line; an illegal or unreadable one ends the replay (the game is kept before it),
        and so do the fourth repetition and the move limit (the game itself ended there)."""
        nonlocal stopped, clean, extra, stop_index
        if len(moves) >= limit:  # the game ended before this move
            stopped, clean = True, False
            extra += 1
            return
        snaps.extend(state)
        try:
            moves_append(pos.push(move))
        except IllegalMove as e:
            del snaps[-STATE_SIZE:]
            stopped = True
            clean = False
            extra += 1
            stop_index = len(moves) + extra
            problems.append((line_no, f"{'unreadable' if isinstance(e, BadMove) else 'illegal'} "
                                      f"move {move[:20]!r}: {e}; game kept up to the move before"))
            return

    n = len(lines)
    for idx in range(start, n):
        line = lines[idx]
        c = line[:1]
        if c == "+" or c == "-":
            if clean:
                if len(line) == 7:
                    s = line
                elif len(line) > 8 and line[7] == "," and line[8] == "T" and line.find(",", 8) < 0:
                    s = line[:7]
                else:
                    s = None
                if s is not None:
                    play(s, first + idx)
                    continue
        elif c == "T":
            continue
        elif c == "'":
            if line[1:3] == "**":
                if not stopped:
                    nm = len(moves)
                    if nm != last_scored:  # the first '** with a score token after a move counts
                        tok = line[3:].lstrip().partition(" ")[0]
                        if tok and "_" not in tok:
                            last_scored = nm
                            try:
                                sc[nm] = int(tok)
                            except ValueError:
                                sc[nm] = None
                continue
            if len(line) <= MAX_LINE:
                _comment(h, line, first + idx)
            else:
                problems.append((first + idx, f"comment line of {len(line)} characters skipped"))
            continue
        # ---- slow path: comma statements, endings, names, garbage ----
        ln = first + idx
        if len(line) > MAX_LINE:
            problems.append((ln, f"line of {len(line)} characters skipped"))
            continue
        stripped = line.strip()
        if not stripped:
            continue
        if stripped[0] == "'":
            _comment(h, stripped, ln)
            continue
        stmts = stripped.split(",") if "," in stripped else [stripped]
        for k, st in enumerate(stmts):
            st = st.strip()
            if not st:
                continue
            ch = st[0]
            if ch == "'":
                _comment(h, ",".join(stmts[k:]).strip(), ln)
                break
            if ch == "+" or ch == "-":
                if after_end:
                    problems.append((ln, f"move after the end of the game: {st[:20]!r}"))
                    continue
                if stopped:
                    extra += 1
                    continue
                play(st, ln)
            elif ch == "T":
                continue
            elif ch == "%":
                if token is None:
                    token = st.split()[0]
                    token_recorded = len(moves) + extra
                    after_end = True
                    clean = False
            elif ch == "N" and st[1:2] in ("+", "-") and k == 0:
                h.names[0 if st[1] == "+" else 1] = stripped[2:] or None
                break
            elif ch == "$" and k == 0:
                if stripped.startswith("$EVENT:"):
                    h.event = stripped[7:]
                elif stripped.startswith("$START_TIME:"):
                    h.start_time = stripped[12:]
                break
            elif ch == "V" and k == 0:
                break
            else:
                problems.append((ln, f"unrecognised statement {st[:40]!r}"))
    # ---- the rules' end, when the record runs on past it ----
    end = repetition_end(bytes(snaps) + bytes(state))
    if end is None and len(moves) >= limit and extra:
        end = move_limit_end(limit)
    if end is not None and (end.moves < len(moves) or extra):
        extra += len(moves) - end.moves
        del moves[end.moves:]
        del snaps[end.moves * STATE_SIZE:]
        problems.append((None, f"{end.why} after move {end.moves}: the game ends there ({extra} more move "
                               "line(s) of the record ignored)"))
    else:
        end = None
    # ---- result ----
    rec.scores = [None] * len(moves)
    for k, v in sc.items():
        if k <= len(moves):
            rec.scores[k - 1] = v
    rec.names = (h.names[0], h.names[1])
    rec.ratings = (h.rates[0], h.rates[1])
    rec.event = h.event
    rec.start_time = h.start_time
    endgame = winner = None
    if h.summary is not None:
        endgame, winner = _parse_summary(h.summary[0], h.names)
    elif token is not None:
        endgame = token
        if token == "%ILLEGAL_MOVE" and stopped and stop_index == token_recorded:
            # the illegal move itself was recorded (last before the token): its maker is the offender
            mover = start_turn ^ ((token_recorded - 1) & 1)
        else:
            mover = start_turn ^ (token_recorded & 1)
        winner, known = _winner_from_token(token, mover)
        if not known:
            problems.append((None, f"unknown ending {token!r}: winner None"))
    if end is not None:
        endgame, winner = end.endgame, end.winner
    rec.endgame = endgame
    rec.winner = winner
    rec.problems = problems



def read_csa(path_or_text, *, skipped: list | None = None, positions: bool = False,
             max_moves: int = DEFAULT_MAX_MOVES) -> list[GameRecord]:
    """Read every game of a CSA record (file path, Path, bytes or text). See the module docstring.

    ``skipped``: when given, a :class:`RecordError` is appended for each game that had to be dropped
    (no usable start position) when at least one game was read. Raises :class:`RecordError` (the first
    problem found) when no game at all can be read.

    ``positions``: also keep, on each record, the position before every move as it was replayed
    (``GameRecord.positions``), so that ``shards.convert`` need not replay the game again.

    ``max_moves``: a game longer than its record's ``'Max_Moves:N`` (else than this) ends there, a
    draw; so does one that reaches a position for the fourth time (perpetual check: the checking
    side loses). Moves the record has after such an end are ignored and noted in ``problems``.
    """
    text, source, file_problems = load_text(path_or_text)
    return read_csa_text(text, source, file_problems, skipped=skipped, positions=positions, max_moves=max_moves)


def read_csa_text(text: str, source=None, file_problems=(), *, skipped: list | None = None,
                  positions: bool = False, max_moves: int = DEFAULT_MAX_MOVES) -> list[GameRecord]:
    """:func:`read_csa` on decoded text (e.g. from :func:`decode_record_bytes`): ``source`` is the file
    name to report, ``file_problems`` the decoding problems to put first in the ``problems`` of each
    game (of the game holding its line, when it has one)."""
    file_problems = list(file_problems)
    games: list[GameRecord] = []
    dropped: list[RecordError] = []
    for first, lines in iter_chunks(text):
        try:
            rec = _parse_game(lines, first, source, positions, max_moves)
        except _Skip as e:
            dropped.append(RecordError(source, e.line, e.reason))
            continue
        if rec is None:
            continue
        if file_problems:
            last = first + len(lines)
            rec.problems[:0] = [(ln, why) for ln, why in file_problems if ln is None or first <= ln < last]
        games.append(rec)
    if not games:
        if dropped:
            raise dropped[0]
        raise RecordError(source, None, "no game found")
    if skipped is not None:
        skipped.extend(dropped)
    return games
