"""A USI client for engine subprocesses that survives engines that crash, hang or talk nonsense.

``UsiEngine(command)`` starts the program, does the handshake (``usi``/``usiok``, ``setoption``,
``isready``/``readyok``) and then runs searches: ``search(position, go, timeout)`` returns the
``bestmove`` with the last ``info`` score and pv. Every wait has a deadline; a reader thread turns
the engine's stdout into a queue, so a silent engine is noticed on time and a dead one at once.
Failures raise :class:`EngineCrashed` or :class:`EngineTimeout` (an :class:`EngineError` with a
one-line ``reason``); the caller kills and restarts the process. The engine runs in its own session,
so a Ctrl-C in the terminal reaches the match runner, not the engines. Its stderr goes to a log file.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

MATE_SCORE = 100000  # a mate score in centipawns, as floodgate records write it
MAX_LINE = 1 << 16
_EOF = None


class EngineError(Exception):
    """The engine failed; ``reason`` is one line for the game record."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class EngineCrashed(EngineError):
    """The process exited (or closed its pipes)."""


class EngineTimeout(EngineError):
    """No answer before the deadline; ``responsive`` tells whether ``stop`` brought a bestmove."""

    def __init__(self, reason: str, elapsed: float, responsive: bool = False):
        super().__init__(reason)
        self.elapsed = elapsed
        self.responsive = responsive


class EngineConfigError(ValueError):
    """A setoption the engine does not declare, or an engine that cannot be started at all."""


@dataclass
class SearchResult:
    bestmove: str  # a USI move, "resign", "win", or whatever the engine sent (checked by the referee)
    score: int | None = None  # last info score, mover's view, centipawns; mate as ±MATE_SCORE
    pv: list[str] = field(default_factory=list)
    nodes: int | None = None
    elapsed: float = 0.0  # seconds from `go` to `bestmove`


def parse_info(line: str, result: SearchResult) -> None:
    """Update ``result`` with the score / pv / nodes of one ``info`` line (other multipv lines ignored)."""
    tokens = line.split()
    score = pv = nodes = None
    i = 1
    while i < len(tokens):
        key = tokens[i]
        if key == "string":
            break
        if key == "pv":
            pv = tokens[i + 1:]
            break
        if key == "multipv" and i + 1 < len(tokens) and tokens[i + 1] != "1":
            return
        if key == "score" and i + 2 < len(tokens):
            score = _score(tokens[i + 1], tokens[i + 2])
            i += 3
            continue
        if key == "nodes" and i + 1 < len(tokens) and tokens[i + 1].isdigit():
            nodes = int(tokens[i + 1])
        i += 1
    if score is not None:
        result.score = score
        result.pv = pv or []
    if nodes is not None:
        result.nodes = nodes


def _score(kind: str, value: str) -> int | None:
    if kind == "cp":
        try:
            return int(value)
        except ValueError:
            return None
    if kind == "mate":
        # "mate 5" / "mate +" : the mover mates; "mate -3" / "mate -" / "mate 0" / "mate -0": it is mated.
        if value in ("+", "-"):
            return MATE_SCORE if value == "+" else -MATE_SCORE
        try:
            plies = int(value)
        except ValueError:
            return None
        return MATE_SCORE if plies > 0 and not value.startswith("-") else -MATE_SCORE
    return None


class UsiEngine:
    """One engine process. ``start()`` (again after a failure) spawns it and does the handshake."""

    def __init__(self, command: list[str], options: dict[str, str] | None = None, log_path: Path | None = None,
                 label: str = "engine"):
        self.command = list(command)
        self.options = dict(options or {})
        self.log_path = log_path
        self.label = label
        self.id_name: str | None = None
        self.declared: dict[str, str] = {}  # option name → its `option` line
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue = queue.Queue()
        self._log = None
        self._log_start = 0

    # ------------------------------------------------------------------------------------ lifecycle

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        """Spawn, ``usi``/``usiok``, ``setoption`` each option, ``isready``/``readyok``."""
        self.kill()
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")
            self._log_start = self._log.tell()
        try:
            self._proc = subprocess.Popen(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self._log if self._log is not None else subprocess.DEVNULL,
                text=True, encoding="utf-8", errors="replace", bufsize=1, start_new_session=True)
        except OSError as e:
            self.kill()
            raise EngineConfigError(f"cannot run {self.command[0]!r} ({e.strerror or e})") from None
        self._lines = queue.Queue()
        threading.Thread(target=self._read, args=(self._proc.stdout, self._lines), daemon=True).start()
        try:
            self._handshake(time.monotonic() + timeout)
        except (EngineError, EngineConfigError):
            self.kill()
            raise

    def _handshake(self, deadline: float) -> None:
        self.send("usi")
        self.declared = {}
        while True:
            line = self._next_line(deadline, "usiok")
            if line.startswith("id name "):
                self.id_name = line[8:].strip()
            elif line.startswith("option name "):
                name = line[12:].split(" type ")[0].strip()
                self.declared[name] = line
            elif line.strip() == "usiok":
                break
        for name, value in self.options.items():
            self.send(f"setoption name {self._declared_name(name)} value {value}")
        self.ready(deadline - time.monotonic())

    def _declared_name(self, name: str) -> str:
        if name in self.declared or name.startswith("USI_"):
            return name
        for declared in self.declared:
            if declared.lower() == name.lower():
                return declared
        known = ", ".join(sorted(self.declared)) or "none"
        raise EngineConfigError(f"no option {name!r} (the engine declares: {known})")

    def ready(self, timeout: float) -> None:
        self.send("isready")
        deadline = time.monotonic() + timeout
        while self._next_line(deadline, "readyok").strip() != "readyok":
            pass

    def new_game(self, timeout: float = 60.0) -> None:
        self.ready(timeout)
        self.send("usinewgame")

    def game_over(self, result: str) -> None:
        """``gameover win|lose|draw`` (ignored when the engine is gone)."""
        try:
            self.send(f"gameover {result}")
        except EngineCrashed:
            pass

    def close(self, wait: float = 2.0) -> None:
        """``quit``, then kill whatever is left after ``wait`` seconds."""
        if self.alive:
            try:
                self.send("quit")
                self._proc.wait(wait)
            except (EngineCrashed, subprocess.TimeoutExpired):
                pass
        self.kill()

    def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (AttributeError, ProcessLookupError, PermissionError):
                    proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
        if self._log is not None:
            self._log.close()
            self._log = None

    # ------------------------------------------------------------------------------------ searching

    def search(self, position: str, go: str, timeout: float, grace: float = 2.0) -> SearchResult:
        """Send ``position``/``go``; wait up to ``timeout`` s for ``bestmove``.

        On the deadline ``stop`` is sent and ``grace`` more seconds are allowed for the bestmove,
        which is discarded: :class:`EngineTimeout` is raised either way, ``responsive`` telling
        whether the engine can go on.
        """
        self._drain()
        self.send(position)
        self.send(go)
        started = time.monotonic()
        result = SearchResult(bestmove="")
        try:
            result.bestmove = self._await_bestmove(started + timeout, result)
        except EngineTimeout:
            elapsed = time.monotonic() - started
            self.send("stop")
            try:
                self._await_bestmove(time.monotonic() + grace, SearchResult(bestmove=""))
                responsive = True
            except EngineTimeout:
                responsive = False
            raise EngineTimeout(f"no bestmove within {timeout:.1f} s", elapsed, responsive) from None
        result.elapsed = time.monotonic() - started
        return result

    def _await_bestmove(self, deadline: float, result: SearchResult) -> str:
        while True:
            line = self._next_line(deadline, "bestmove")
            if line.startswith("info "):
                parse_info(line, result)
            elif line.startswith("bestmove"):
                tokens = line.split()
                return tokens[1] if len(tokens) > 1 else ""

    # ------------------------------------------------------------------------------------ plumbing

    def send(self, line: str) -> None:
        if self._proc is None:
            raise EngineCrashed(f"{self.label} is not running")
        try:
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise EngineCrashed(self._crash_reason()) from None

    @staticmethod
    def _read(stdout, lines: queue.Queue) -> None:
        try:
            for line in iter(lambda: stdout.readline(MAX_LINE), ""):
                lines.put(line.rstrip("\r\n"))
        except (OSError, ValueError):
            pass
        lines.put(_EOF)

    def _next_line(self, deadline: float, waiting_for: str) -> str:
        try:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise EngineTimeout(f"no {waiting_for} in time", 0.0) from None
        if line is _EOF:
            raise EngineCrashed(self._crash_reason())
        return line

    def _drain(self) -> None:
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return
            if line is _EOF:
                raise EngineCrashed(self._crash_reason())

    def _crash_reason(self) -> str:
        code = None
        if self._proc is not None:
            try:
                code = self._proc.wait(1.0)
            except subprocess.TimeoutExpired:
                pass
        reason = "engine crashed" + (f" (exit status {code})" if code is not None else " (closed its output)")
        tail = self._stderr_tail()
        return reason + (f": {tail}" if tail else "")

    def _stderr_tail(self) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(max(self._log_start, self.log_path.stat().st_size - 400))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        return lines[-1][:200] if lines else ""
