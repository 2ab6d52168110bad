"""``shogitrain match``: engines play colour-swapped game pairs from sampled openings; records and Elo.

An engine is a checkpoint (``.pt``) or ONNX file, run as a ``python -m shogitrain usi``
subprocess, or ``usi:COMMAND`` for any USI program. Every opening is played twice per engine pair,
each engine taking Black once; with three or more engines every pair plays (a round robin).
``--concurrency K`` runs K games at once, each worker with its own engine processes, which stay
loaded between games. An engine that crashes, hangs or answers nonsense loses that game (the
reason is recorded) and is restarted; ten such games in a row for one engine stop the match.
Ctrl-C (or SIGTERM) and an SPRT decision stop it too: games in progress are abandoned, finished ones are kept.
Output: ``DIR/games/*.csa`` (floodgate style), ``DIR/results.json`` (rewritten after every game),
``DIR/logs/`` (each engine process's stderr).
"""

from __future__ import annotations

import json
import queue
import random
import re
import shlex
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import combinations
from pathlib import Path

import shogi

from shogitrain.files import atomic_write
from shogitrain.play.csa_writer import csa_text, write_csa
from shogitrain.play.elo import sprt_state
from shogitrain.play.referee import Limit, Opening, Player, Rules, play_game, require_cshogi
from shogitrain.play.results import RESULTS_FILE, format_table, tally
from shogitrain.play.usi_client import EngineConfigError, EngineError, UsiEngine

DEFAULT_OPENINGS = Path(__file__).resolve().parents[2] / "data" / "openings" / "floodgate-2016-openings-24ply.sfen"
MAX_FAULT_STREAK = 10  # an engine failing this many of its games in a row stops the match
EVENT = "shogitrain-match"


class MatchError(Exception):
    """A match that cannot start or go on (one-line message)."""


@dataclass
class EngineSpec:
    spec: str  # as given: a .pt / .onnx path or usi:COMMAND
    limit: Limit
    options: dict[str, str] = field(default_factory=dict)
    name: str | None = None  # chosen by the user; else from the file or the engine's `id name`

    def command(self) -> list[str]:
        if self.spec.startswith("usi:"):
            argv = shlex.split(self.spec[4:])
            if not argv:
                raise MatchError(f"{self.spec!r}: usi: needs a command")
            return argv
        path = Path(self.spec)
        if path.suffix not in (".pt", ".onnx"):
            raise MatchError(f"{self.spec}: an engine is a checkpoint (.pt), an ONNX file (.onnx) or usi:COMMAND")
        if not path.is_file():
            raise MatchError(f"{self.spec}: no such file")
        flag = "--checkpoint" if path.suffix == ".pt" else "--onnx"
        return [sys.executable, "-m", "shogitrain", "usi", flag, str(path)]

    def default_name(self, id_name: str | None) -> str:
        if self.spec.startswith("usi:"):
            # the first two words of `id name` ("Fairy-Stockfish 11.1 LB 64" → Fairy-Stockfish_11.1)
            return " ".join((id_name or "").split()[:2]) or Path(self.command()[0]).name
        path = Path(self.spec)
        if path.stem != "checkpoint":
            return path.stem
        run = path.parent.resolve()  # a run directory; a sweep's (VARIANT/seed-N) is named by both
        return f"{run.parent.name}-{run.name}" if re.fullmatch(r"seed-\d+", run.name) else run.name


@dataclass
class MatchConfig:
    engines: list[EngineSpec]
    games: int  # per engine pair; even (colour-swapped pairs)
    out: Path
    openings: Path | None = None  # None: the bundled floodgate opening lines
    rules: Rules = field(default_factory=Rules)
    concurrency: int = 1
    sprt: tuple[float, float, float, float] | None = None  # elo0, elo1, alpha, beta
    seed: int = 0


@dataclass(frozen=True)
class Job:
    number: int  # 1-based game number, in schedule order
    pair: int  # the game pair (opening × engine pair) this game belongs to
    black: int
    white: int
    opening: Opening


def safe_name(name: str) -> str:
    """A name usable in CSA ``N+`` lines, summaries and file names."""
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", name).strip("_")[:48] or "engine"


# ---------------------------------------------------------------------------------------------- openings


def parse_opening(line: str, index: int) -> Opening:
    """One ``startpos [moves …]`` / ``sfen … [moves …]`` line (``position`` prefix allowed), checked."""
    cshogi = require_cshogi()
    tokens = line.split()
    if tokens[:1] == ["position"]:
        tokens = tokens[1:]
    if tokens[:1] == ["startpos"]:
        sfen, rest = cshogi.STARTING_SFEN, tokens[1:]
    elif tokens[:1] == ["sfen"] and len(tokens) >= 5:
        sfen, rest = " ".join(tokens[1:5]), tokens[5:]
    else:
        raise ValueError("expected 'startpos …' or 'sfen …'")
    if rest and rest[0] != "moves":
        raise ValueError(f"unexpected {rest[0]!r} (expected 'moves')")
    try:
        if sfen != cshogi.STARTING_SFEN:
            shogi.Board(sfen)  # cshogi aborts the process on a malformed SFEN; python-shogi raises
    except ValueError:
        raise ValueError(f"bad sfen {sfen!r}") from None
    placement = sfen.split()[0]
    if placement.count("K") != 1 or placement.count("k") != 1:
        raise ValueError(f"sfen {sfen!r} needs one king per side")
    board = cshogi.Board(sfen)
    sfen = board.sfen()
    for usi in rest[1:]:
        move = board.move_from_usi(usi) if usi.isascii() and 4 <= len(usi) <= 5 else 0
        if not move or move not in set(board.legal_moves):
            raise ValueError(f"illegal move {usi!r}")
        board.push(move)
    if len(board.legal_moves) == 0:
        raise ValueError("the side to move has no legal move")
    return Opening(index, sfen, tuple(rest[1:]))


def read_openings(path: Path) -> tuple[list[Opening], list[str]]:
    """The usable opening lines of ``path`` and ``file:line: reason`` for each one skipped."""
    openings, skipped = [], []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    openings.append(parse_opening(line, number))
                except ValueError as e:
                    skipped.append(f"{path}:{number}: {e}")
    except OSError as e:
        raise MatchError(f"{path}: cannot read openings ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise MatchError(f"{path}: not a UTF-8 text file of opening lines") from None
    if not openings:
        raise MatchError(f"{path}: no usable opening line" + (f" ({skipped[0]})" if skipped else ""))
    return openings, skipped


def sample_openings(openings: list[Opening], count: int, seed: int) -> list[Opening]:
    """``count`` openings drawn without replacement (reshuffled and reused when there are fewer)."""
    rng = random.Random(seed)
    out: list[Opening] = []
    while len(out) < count:
        out += rng.sample(openings, min(len(openings), count - len(out)))
    return out


def schedule(n_engines: int, openings: list[Opening]) -> list[Job]:
    """Per opening and engine pair, two games with the colours swapped."""
    jobs = []
    for slot, opening in enumerate(openings):
        for k, (a, b) in enumerate(combinations(range(n_engines), 2)):
            pair = slot * (n_engines * (n_engines - 1) // 2) + k
            for black, white in ((a, b), (b, a)):
                jobs.append(Job(len(jobs) + 1, pair, black, white, opening))
    return jobs


# ---------------------------------------------------------------------------------------------- running


class _Match:
    """Shared state of a running match: the job queue, finished games, each worker's engines."""

    def __init__(self, cfg: MatchConfig, names: list[str], first_engines: dict[int, UsiEngine], info: dict,
                 jobs: list[Job], echo):
        self.cfg, self.names, self.info, self.echo = cfg, names, info, echo
        self.jobs: queue.Queue = queue.Queue()
        for job in jobs:
            self.jobs.put(job)
        self.total = len(jobs)
        self.games: list[dict] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.stopped: str | None = None
        self.sprt: dict | None = None
        self.error: Exception | None = None
        self.fault_streak = [0] * len(names)
        self.engines = [first_engines] + [{} for _ in range(cfg.concurrency - 1)]

    def engine(self, worker: int, index: int) -> UsiEngine:
        engines = self.engines[worker]
        if index not in engines:
            spec = self.cfg.engines[index]
            engines[index] = UsiEngine(spec.command(), spec.options,
                                       self.cfg.out / "logs" / f"engine{index + 1}.w{worker}.stderr",
                                       label=f"engine {index + 1} ({self.names[index]})")
        return engines[index]

    def work(self, worker: int) -> None:
        while not self.stop.is_set():
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return
            players = [Player(self.engine(worker, i), self.names[i], self.cfg.engines[i].limit)
                       for i in (job.black, job.white)]
            try:
                game = play_game(players[0], players[1], job.opening, self.cfg.rules)
                if self.stop.is_set():
                    return  # abandoned: the match was stopped while it was being played
                for side in game.ending.faulty:
                    players[side].engine.kill()
                self.record(job, game)
            except EngineConfigError as e:  # an engine that cannot be run at all any more
                self.halt(f"game {job.number}: {e}")
                return
            except Exception as e:  # noqa: BLE001 - engines killed under a running game by a stop, or a bug
                if not self.stop.is_set():
                    self.error = e
                    self.halt(f"internal error in game {job.number}: {e!r}")
                return

    def record(self, job: Job, game) -> None:
        ending = game.ending
        event = f"{EVENT}+{self.names[job.black]}+{self.names[job.white]}+g{job.number:05d}"
        path = self.cfg.out / "games" / f"{event}.csa"
        inc = self.cfg.engines[job.black].limit.inc if self.cfg.engines[job.black].limit.time is not None else None
        write_csa(path, csa_text(game, event, self.cfg.rules.max_moves, None if inc is None else inc // 1000))
        entry = {"game": job.number, "pair": job.pair, "opening_line": job.opening.index, "black": job.black,
                 "white": job.white, "score_black": 0.5 if ending.winner is None else float(ending.winner == 0),
                 "ending": ending.summary, "reason": ending.reason, "plies": len(game.moves),
                 "record": str(path.relative_to(self.cfg.out))}
        with self.lock:
            self.games.append(entry)
            self._note_faults(job, ending)
            if self.cfg.sprt is not None and not self.stop.is_set():
                self.sprt = sprt_state(tally(self.games, self.names)["pairs"][0]["pentanomial"], *self.cfg.sprt)
                if self.sprt["decision"] is not None:
                    self.halt(f"SPRT decided: {self.sprt['decision']}")
            self.write_results()
            result = {0.5: "draw", 1.0: "black wins", 0.0: "white wins"}[entry["score_black"]]
            self.echo(f"[{len(self.games)}/{self.total}] game {job.number}: {self.names[job.black]} (black) vs "
                      f"{self.names[job.white]} (white): {result}, {ending.summary} after {len(game.moves)} plies"
                      f" — {ending.reason}")

    def _note_faults(self, job: Job, ending) -> None:
        for side, index in enumerate((job.black, job.white)):
            self.fault_streak[index] = self.fault_streak[index] + 1 if side in ending.faulty else 0
            if self.fault_streak[index] >= MAX_FAULT_STREAK:
                self.halt(f"engine {index + 1} ({self.names[index]}) failed {MAX_FAULT_STREAK} games in a row "
                          f"(last: {ending.reason})")

    def halt(self, reason: str) -> None:
        """Stop scheduling, abandon the games in progress (their engines are killed)."""
        if self.stopped is None:
            self.stopped = reason
        self.stop.set()
        for engines in self.engines:
            for engine in list(engines.values()):
                engine.kill()

    def results(self) -> dict:
        return {**self.info, "games_planned": self.total, "games": sorted(self.games, key=lambda g: g["game"]),
                "tally": tally(self.games, self.names), "sprt": self.sprt, "stopped": self.stopped,
                "complete": self.stopped is None and len(self.games) == self.total,
                "written": datetime.now().isoformat(timespec="seconds")}

    def write_results(self) -> None:
        with atomic_write(self.cfg.out / RESULTS_FILE) as f:
            f.write(json.dumps(self.results(), indent=1, ensure_ascii=False) + "\n")


def _start_engines(cfg: MatchConfig) -> tuple[list[str], dict[int, UsiEngine]]:
    """Start one instance of every engine (it becomes worker 0's) and settle the names."""
    engines, names = {}, []
    for i, spec in enumerate(cfg.engines):
        log = cfg.out / "logs" / f"engine{i + 1}.w0.stderr"
        engine = UsiEngine(spec.command(), spec.options, log, label=f"engine {i + 1} ({spec.spec})")
        try:
            engine.start(timeout=max(60.0, cfg.rules.move_timeout))
        except BaseException as e:  # a failed start, or Ctrl-C during one: no engine is left running
            engine.kill()
            for started in engines.values():
                started.close()
            if not isinstance(e, (EngineError, EngineConfigError)):
                raise
            message = e.reason if isinstance(e, EngineError) else str(e)
            raise MatchError(f"engine {i + 1} ({spec.spec}) did not start: {message}") from None
        engines[i] = engine
        names.append(safe_name(spec.name or spec.default_name(engine.id_name)))
    for i, name in enumerate(names):  # equal names (a net against itself) get a suffix
        if names.count(name) > 1:
            names[i] = f"{name}_{names[:i].count(name) + 1}"
    return names, engines


def _check_config(cfg: MatchConfig) -> None:
    if len(cfg.engines) < 2:
        raise MatchError("a match needs at least two engines")
    if cfg.games < 2 or cfg.games % 2:
        raise MatchError(f"--games {cfg.games}: give an even number ≥ 2 (games come in colour-swapped pairs)")
    if cfg.sprt is not None and len(cfg.engines) != 2:
        raise MatchError("--sprt tests one engine against another: give exactly two engines")
    if cfg.concurrency < 1:
        raise MatchError("--concurrency must be at least 1")
    if (cfg.out / RESULTS_FILE).exists():
        raise MatchError(f"{cfg.out} already holds a match ({RESULTS_FILE}); choose another --out")


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a scheduler's kill, a timeout) stops the match like Ctrl-C: finished games are kept."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, interrupt) if main_thread else None
    try:
        yield
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def run_match(cfg: MatchConfig, echo=print) -> dict:
    """Play the match described by ``cfg``; return (and write) its results. Raises MatchError."""
    try:
        require_cshogi()
    except ImportError as e:
        raise MatchError(str(e)) from None
    _check_config(cfg)
    for spec in cfg.engines:
        spec.command()  # a missing file or bad spec fails here, before anything is written
    openings_path = cfg.openings or DEFAULT_OPENINGS
    openings, skipped = read_openings(openings_path)
    jobs = schedule(len(cfg.engines), sample_openings(openings, cfg.games // 2, cfg.seed))
    (cfg.out / "games").mkdir(parents=True, exist_ok=True)
    names, first = _start_engines(cfg)
    info = {"format": "shogitrain-match", "version": 1,
            "engines": [{"index": i + 1, "name": names[i], "spec": s.spec, "limit": s.limit.describe(),
                         "options": s.options, "id_name": first[i].id_name} for i, s in enumerate(cfg.engines)],
            "rules": asdict(cfg.rules), "seed": cfg.seed, "concurrency": cfg.concurrency,
            "openings": {"file": str(openings_path), "usable": len(openings), "skipped": skipped[:20],
                         "skipped_total": len(skipped)},
            "started": datetime.now().isoformat(timespec="seconds")}
    match = _Match(cfg, names, first, info, jobs, echo)
    match.write_results()
    workers = [threading.Thread(target=match.work, args=(k,), daemon=True) for k in range(cfg.concurrency)]
    for w in workers:
        w.start()
    with _sigterm_as_interrupt():
        try:
            while any(w.is_alive() for w in workers):
                for w in workers:
                    w.join(0.2)
        except KeyboardInterrupt:
            match.halt("interrupted (Ctrl-C)")
            for w in workers:
                w.join(10.0)
    for engines in match.engines:
        for engine in engines.values():
            engine.close()
    with match.lock:
        match.write_results()
        results = match.results()
    if match.error is not None:
        raise match.error
    echo(format_table(results))
    return results


# ---------------------------------------------------------------------------------------------- the CLI's options


def _indexed(values, n_engines: int, option: str, form: str) -> list[tuple[int, str]]:
    """``I:REST`` option values → [(0-based index, REST)], the index checked against the engines."""
    out = []
    for value in values:
        index, sep, rest = value.partition(":")
        if not sep or not index.isdigit() or not 1 <= int(index) <= n_engines or not rest:
            raise MatchError(f"{option} {value!r}: expected ENGINE:{form} with ENGINE from 1 to {n_engines}")
        out.append((int(index) - 1, rest))
    return out


def _parse_sprt(text: str) -> tuple[float, float, float, float]:
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (2, 4) or values[0] >= values[1] or (
            len(values) == 4 and not all(0 < v < 0.5 for v in values[2:])):
        raise MatchError(f"--sprt {text!r}: expected ELO0,ELO1[,ALPHA,BETA] with ELO0 < ELO1 and 0 < ALPHA, BETA < 0.5")
    return (*values, 0.05, 0.05) if len(values) == 2 else tuple(values)


def match_config(engines, games: int, out, *, nodes=None, byoyomi=None, time=None, inc=0, limits=(), options=(),
                 names=(), sprt=None, openings=None, concurrency=1, seed=0, rules: Rules | None = None) -> MatchConfig:
    """Build a :class:`MatchConfig` from the command line's values (``I:…`` options are 1-based)."""
    n = len(engines)
    given = [k for k, v in (("--nodes", nodes), ("--byoyomi", byoyomi), ("--time", time)) if v is not None]
    if len(given) > 1:
        raise MatchError(f"give one of --nodes, --byoyomi, --time (got {', '.join(given)})")
    if inc and time is None:
        raise MatchError("--inc goes with --time")
    default = None
    if given:
        default = Limit(nodes=nodes, byoyomi=byoyomi, time=time, inc=inc or 0)
    per_engine = [default] * n
    for i, spec in _indexed(limits, n, "--limit", "nodes=N|byoyomi=MS|time=MS,inc=MS"):
        try:
            per_engine[i] = Limit.parse(spec)
        except ValueError as e:
            raise MatchError(str(e)) from None
    if None in per_engine:
        missing = ", ".join(str(i + 1) for i, lim in enumerate(per_engine) if lim is None)
        raise MatchError(f"no search limit for engine {missing}: give --nodes, --byoyomi or --time (or --limit)")
    specs = [EngineSpec(e, per_engine[i]) for i, e in enumerate(engines)]
    for i, setting in _indexed(options, n, "--option", "NAME=VALUE"):
        key, sep, value = setting.partition("=")
        if not sep or not key.strip():
            raise MatchError(f"--option {i + 1}:{setting!r}: expected ENGINE:NAME=VALUE")
        specs[i].options[key.strip()] = value.strip()
    for i, name in _indexed(names, n, "--name", "NAME"):
        specs[i].name = name
    return MatchConfig(engines=specs, games=games, out=Path(out), openings=None if openings is None else Path(openings),
                       rules=rules or Rules(), concurrency=concurrency,
                       sprt=None if sprt is None else _parse_sprt(sprt), seed=seed)
