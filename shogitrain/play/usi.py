"""The USI protocol loop of ``shogitrain usi``: commands on stdin, answers on stdout.

The main thread reads commands; ``go`` starts a thinking thread that prints ``info`` lines and
the ``bestmove``, so ``stop``, ``ponderhit``, ``isready`` and ``quit`` are answered while it thinks.
The model is loaded (and warmed up) at ``isready``. A model or command the engine cannot use is
reported as ``info string error …`` on stdout and on stderr, and the engine keeps answering: with
no model, ``go`` answers ``bestmove resign``. Protocol and options: docs/play.md.
"""

from __future__ import annotations

import os
import shlex
import sys
import threading
import time

import numpy as np

from shogitrain import __version__
from shogitrain.play import PlayError, import_cshogi
from shogitrain.play.evaluator import load_evaluator
from shogitrain.play.options import EngineOptions
from shogitrain.play.search import Search, policy_move, win_rate_to_cp
from shogitrain.play.timeman import Clock, Limits, plan_time
from shogitrain.play.tree import LOSE, WIN

ENGINE_NAME = f"shogitrain {__version__}"
DEFAULT_PLAYOUTS = 1000      # a bare `go`, with no clock and no node count


class UsiEngine:
    """One engine: its options, model, position and search, and the thread that thinks."""

    def __init__(self, options: EngineOptions | None = None, out=None, err=None):
        self.options = options or EngineOptions()
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self._lock = threading.Lock()
        self.evaluator = None
        self._model_key = None
        self.search = None
        self._position = (None, [])            # (sfen or None, USI moves) of the last `position`
        self._thread = None
        self._stop = threading.Event()
        self._ponderhit = threading.Event()
        self._answered = threading.Event()       # the thinking thread has sent its bestmove
        self._silent = False                    # gameover, position: no bestmove for the search stopped
        self._rng = np.random.default_rng()

    # ------------------------------------------------------------------------------ output

    def send(self, line: str) -> None:
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()

    def error(self, message: str) -> None:
        self.send(f"info string error {message}")
        with self._lock:
            self._err.write(f"shogitrain usi: error: {message}\n")
            self._err.flush()

    # ------------------------------------------------------------------------------ the loop

    def run(self, lines) -> int:
        """Answer commands until ``quit`` or the end of input; returns the exit status (0)."""
        for line in lines:
            tokens = line.split()
            if not tokens:
                continue
            command, args = tokens[0], tokens[1:]
            if command == "quit":
                break
            handler = self._HANDLERS.get(command)
            if handler is None:
                self.send(f"info string unknown command {command}")
                continue
            try:
                handler(self, args)
            except PlayError as e:
                self.error(str(e))
            except Exception as e:      # keep answering the protocol; one line, no traceback
                self.error(f"internal: {command}: {type(e).__name__}: {e}")
        self._halt(silent=False)        # a search still running is stopped and answers
        self._unload_model()
        return 0

    def cmd_usi(self, args) -> None:
        self.send(f"id name {ENGINE_NAME}")
        self.send("id author shogitrain developers")
        for line in self.options.usi_lines():
            self.send(line)
        self.send("usiok")

    def cmd_setoption(self, args) -> None:
        text = " ".join(args)
        if not text.startswith("name "):
            raise PlayError(f"setoption: expected 'name NAME [value VALUE]', got {text!r}")
        name, _, value = text[5:].partition(" value ")
        self.options.set(name, value if value else "true")

    def cmd_isready(self, args) -> None:
        if self._thread is not None and self._answered.is_set():     # done: it is only exiting
            self._thread.join()
            self._thread = None
        try:
            if self._thread is None:           # not while thinking (a GUI's ping): keep the model
                self._load_model()
        except PlayError as e:      # reported; `go` then resigns, and the GUI is not left waiting
            self.error(str(e))
        self.send("readyok")

    def cmd_usinewgame(self, args) -> None:
        self._halt(silent=True)
        if self.search is not None:
            self.search.clear_tree()
        seed = self.options["Random_Seed"]
        self._rng = np.random.default_rng(seed if seed else None)

    def cmd_position(self, args) -> None:
        self._halt(silent=True)
        if "moves" in args:
            cut = args.index("moves")
            where, moves = args[:cut], args[cut + 1:]
        else:
            where, moves = args, []
        if where == ["startpos"]:
            sfen = None
        elif where[:1] == ["sfen"] and len(where) >= 4:
            sfen = " ".join(where[1:])
        else:
            raise PlayError(f"position: expected 'startpos' or 'sfen SFEN', got {' '.join(where)!r}")
        self._position = (sfen, moves)
        if self.search is not None:
            self.search.settings = self.options.search_settings()      # ReuseSubtree may have changed
            self.search.set_position(sfen, moves)

    def cmd_go(self, args) -> None:
        self._halt(silent=False)
        if args[:1] == ["mate"]:        # the mate-solving mode of USI GUIs: not offered
            self.send("checkmate notimplemented")
            return
        try:
            limits = Limits.parse(args)
        except ValueError as e:
            raise PlayError(str(e)) from None
        self._stop.clear()
        self._ponderhit.clear()
        self._answered.clear()
        self._silent = False
        self._thread = threading.Thread(target=self._think, args=(limits,), daemon=True)
        self._thread.start()

    def cmd_stop(self, args) -> None:
        self._halt(silent=False)

    def cmd_ponderhit(self, args) -> None:
        self._ponderhit.set()

    def cmd_gameover(self, args) -> None:
        self._halt(silent=True)
        if self.search is not None:
            self.search.clear_tree()

    _HANDLERS = {"usi": cmd_usi, "setoption": cmd_setoption, "isready": cmd_isready,
                 "usinewgame": cmd_usinewgame, "position": cmd_position, "go": cmd_go,
                 "stop": cmd_stop, "ponderhit": cmd_ponderhit, "gameover": cmd_gameover}

    def _halt(self, silent: bool) -> None:
        """Stop the thinking thread, if any, and wait for it (it prints its bestmove unless silent)."""
        if self._thread is not None:
            self._silent = self._silent or silent
            self._stop.set()
            self._thread.join()
            self._thread = None

    # ------------------------------------------------------------------------------ model

    def _unload_model(self) -> None:
        if self.search is not None and self.evaluator.working():
            self.search.finish()
        if self.evaluator is not None:
            self.evaluator.close()
        self.evaluator, self.search, self._model_key = None, None, None

    def _load_model(self) -> None:
        key = self.options.model_key()
        if key == self._model_key and self.evaluator is not None and self.evaluator.working():
            return
        self._unload_model()
        path = self.options["DNN_Model"]
        if not path:
            raise PlayError("no model: start with --checkpoint/--onnx or set the DNN_Model option")
        self.evaluator = load_evaluator(path, self.options["Device"], self.options["DNN_Batch_Size"],
                                        self.options["Threads"], self.options["Weights"],
                                        self.options["Net_Process"])
        self._model_key = key
        self.search = Search(self.evaluator, self.options.search_settings())
        self.send(f"info string loaded {self.evaluator.description}")
        try:
            self.search.set_position(*self._position)
        except PlayError as e:
            self.error(str(e))

    # ------------------------------------------------------------------------------ thinking

    def _think(self, limits: Limits) -> None:
        try:
            move, ponder = self._choose_move(limits)
        except PlayError as e:
            self.error(str(e))
            move, ponder = "resign", None
        except Exception as e:      # keep answering the protocol; one line, no traceback
            self.error(f"internal: {type(e).__name__}: {e}")
            move, ponder = "resign", None
        if limits.infinite or limits.ponder:       # the bestmove waits for stop (or ponderhit)
            while not self._stop.is_set() and not (limits.ponder and self._ponderhit.is_set()):
                self._stop.wait(0.01)
        self._answered.set()          # before the answer: a command sent after it finds it set
        if not self._silent:
            self.send(f"bestmove {move}" + (f" ponder {ponder}" if ponder else ""))

    def _choose_move(self, limits: Limits) -> tuple[str, str | None]:
        if self.search is None:
            raise PlayError("no model loaded (see the error at isready)")
        cshogi = import_cshogi()
        board = self.search.board
        self.search.settings = self.options.search_settings()
        if board.is_game_over():
            return "resign", None
        if board.is_nyugyoku():
            self.send("info string entering-king declaration")
            return "win", None
        if self.options["Mode"] == "policy":
            return self._policy_move(), None
        mate = self._root_mate()
        if mate:
            return cshogi.move_to_usi(mate), None
        return self._search_move(limits)

    def _policy_move(self) -> str:
        from cshogi import move_to_usi

        temperature = self.options["Policy_Temperature"] / 100
        move, value = policy_move(self.evaluator, self.search.board, temperature, self._rng)
        self.send(f"info depth 1 nodes 1 score cp {win_rate_to_cp(value)} pv {move_to_usi(move)}")
        return move_to_usi(move)

    def _root_mate(self) -> int:
        from cshogi import move_to_usi

        board, depth = self.search.board, self.options["Root_Mate_Search_Depth"]
        mate, plies = 0, 0
        if depth >= 1 and not board.is_check():
            mate, plies = board.mate_move_in_1ply(), 1
        if not mate and depth >= 3:
            mate, plies = board.mate_move(depth | 1), depth | 1
        if mate:
            self.send(f"info depth {plies} nodes 0 score mate {plies} pv {move_to_usi(mate)}")
        return mate

    def _search_move(self, limits: Limits) -> tuple[str, str | None]:
        from cshogi import move_to_usi

        search, options = self.search, self.options
        search.prepare_root()
        root = search.root
        node_limit = options["Const_Playout"] or limits.nodes
        if not node_limit and not limits.timed and not limits.infinite and not limits.ponder:
            node_limit = DEFAULT_PLAYOUTS
        ply = search.board.move_number
        clock = None
        if limits.timed and not options["Const_Playout"] and not limits.nodes:
            budget = plan_time(limits, search.board.turn, ply, options["Byoyomi_Margin"],
                               options["Time_Margin"], options["Draw_Ply"])
            clock = Clock(budget, ply)
        if root.moves is not None and len(root.moves) == 1 and clock is not None and not limits.ponder:
            move = move_to_usi(root.moves[0])
            value = root.value if root.value is not None else 0.5
            self.send(f"info depth 1 nodes 0 score cp {win_rate_to_cp(value)} pv {move}")
            return move, None
        seconds = self._search_loop(limits, node_limit, clock)
        search.finish()
        return self._report(seconds)

    def _search_loop(self, limits: Limits, node_limit: int, clock: Clock | None) -> float:
        """Run batches until stopped, the node limit, the tree limit or the clock; returns the
        seconds searched (from the ponderhit when pondering)."""
        search, options = self.search, self.options
        batch, tree_limit, interval = options["DNN_Batch_Size"], options["UCT_NodeLimit"], options["PV_Interval"]
        pondering = limits.ponder
        started = last_info = time.monotonic()
        batch_ms = 0.0
        while not self._stop.is_set():
            if pondering and self._ponderhit.is_set():
                pondering = False
                started = time.monotonic()
                search.stats.playouts = 0
                if clock is not None:
                    clock.start()
            searching_freely = pondering or limits.infinite
            if search.root.visits >= tree_limit or search.root.moves is None:
                if searching_freely:
                    self._stop.wait(0.01)
                    continue
                break
            todo = batch
            if node_limit and not searching_freely:
                todo = min(batch, node_limit - search.stats.playouts)
                if todo <= 0:
                    break
            if not searching_freely and clock is not None and self._clock_says_stop(clock, batch_ms):
                break
            t0 = time.monotonic()
            search.run_batch(todo)
            now = time.monotonic()
            batch_ms = (now - t0) * 1000.0
            if interval and (now - last_info) * 1000.0 >= interval:
                last_info = now
                self.send(self._info_line(now - started))
        return time.monotonic() - started

    def _clock_says_stop(self, clock: Clock, batch_ms: float) -> bool:
        search = self.search
        first, second, first_value, second_value = search.root_visits()
        return clock.should_stop(search.stats.playouts, first, second, first_value, second_value,
                                 batch_ms, search.proven() == WIN)

    def _info_line(self, seconds: float) -> str:
        from cshogi import move_to_usi

        search = self.search
        move, value, pv = search.best()
        stats = search.stats
        status = search.proven()
        score = "mate +" if status == WIN else "mate -" if status == LOSE else f"cp {win_rate_to_cp(value)}"
        ms = max(1, int(seconds * 1000))
        return (f"info depth {max(1, len(pv))} seldepth {max(stats.max_depth, len(pv))} time {ms} "
                f"nodes {stats.playouts} nps {stats.playouts * 1000 // ms} score {score} "
                f"pv {' '.join(move_to_usi(m) for m in pv)}")

    def _report(self, seconds: float) -> tuple[str, str | None]:
        from cshogi import move_to_usi

        search = self.search
        move, value, pv = search.best()
        if not move:
            return "resign", None
        self.send(self._info_line(seconds))
        if value < self.options["Resign_Threshold"] / 1000 and search.proven() != WIN:
            return "resign", None
        return move_to_usi(move), move_to_usi(pv[1]) if len(pv) > 1 else None


def write_wrapper(path, model_args: list[str]) -> str:
    """Write an executable shell script that starts this engine with ``model_args`` (atomically);
    returns its path. GUIs and match tools that start an engine by a bare path run the script."""
    target = os.path.abspath(path)
    command = [sys.executable, "-m", "shogitrain", "usi", *model_args]
    text = ("#!/bin/sh\n# A shogitrain USI engine, written by `shogitrain usi --write-wrapper`.\n"
            f"exec {' '.join(shlex.quote(a) for a in command)} \"$@\"\n")
    tmp = f"{target}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except OSError as e:
        raise PlayError(f"{path}: cannot write the wrapper ({e.strerror})") from None
    return target


def run_usi(options: EngineOptions, stdin=None) -> int:
    """Speak USI on stdin/stdout until quit; the exit status."""
    engine = UsiEngine(options)
    stream = stdin or sys.stdin
    return engine.run(line for line in iter(stream.readline, ""))


def start_engine(settings: list[tuple[str, str]], wrapper: str | None = None) -> str | int:
    """``shogitrain usi``: the engine with these starting option values (NAME, VALUE), run on
    stdin/stdout (returns the exit status), or, with ``wrapper``, a script that runs it (returns
    its path). PlayError for a bad option or a missing cshogi."""
    import_cshogi()
    options = EngineOptions()
    for name, value in settings:
        if name == "DNN_Model" and value:
            value = os.path.abspath(value)
        options.set(name, value)
    if wrapper:
        args = []
        for name, value in settings:
            args += ["--option", f"{name}={options.values[name] if name == 'DNN_Model' else value}"]
        return write_wrapper(wrapper, args)
    return run_usi(options)
