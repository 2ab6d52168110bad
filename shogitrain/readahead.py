"""Items produced ahead of their consumer: in a thread (training batches), or in a process of its
own (decompressed archive members).

A thread overlaps the consumer's work wherever it releases the GIL (numpy gathers from memory maps,
torch ops). A process overlaps all of it: decompressing an archive is mostly C, but parsing its
members is Python, which would take the GIL from the main process's own conversion work.
"""

from __future__ import annotations

import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from multiprocessing import get_context

__all__ = ["Handoff", "Stopped", "read_ahead", "produced_in_process"]


class Stopped(Exception):
    """The consuming side has gone: the producer stops."""


class Handoff:
    """Items passed from a producer thread to the consuming side through a bounded queue.

    The producer's exception is raised on the consuming side, in order; once the consuming side
    stops (the generator of :meth:`run` is closed or finished), the producer's next ``put`` raises
    :class:`Stopped`."""

    _END = object()

    def __init__(self, depth: int):
        self.queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self.stop = threading.Event()

    def put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise Stopped

    def run(self, produce: Callable[["Handoff"], None]) -> Iterator:
        """Run ``produce(self)`` in a thread; yield what it puts."""
        def target() -> None:
            try:
                produce(self)
                self.put(self._END)
            except Stopped:
                pass
            except BaseException as e:
                try:
                    self.put(e)
                except Stopped:
                    pass

        worker = threading.Thread(target=target, daemon=True)
        worker.start()
        try:
            while True:
                item = self.queue.get()
                if item is self._END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.stop.set()
            worker.join()


def read_ahead(items: Iterable, depth: int = 2) -> Iterator:
    """The items of ``items``, produced by a thread up to ``depth`` ahead; a generator given as
    ``items`` runs (and is closed) in that thread."""
    def produce(handoff: Handoff) -> None:
        try:
            for item in items:
                handoff.put(item)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    return Handoff(depth).run(produce)


def produced_in_process(produce: Callable, *args) -> Iterator:
    """The items ``produce(put, *args)`` passes to ``put``, produced in a process of its own (forked;
    spawned on macOS, where ``produce`` and ``args`` must pickle). Its exception is raised here after
    the items before it; the items wait in the pipe between the two (a few hundred KB at most: the
    producer waits when it is full). Closing the generator early kills the process."""
    context = get_context("spawn" if sys.platform == "darwin" else "fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_produce_into, args=(sender, produce, args), daemon=True,
                              name=f"shogitrain-{getattr(produce, '__name__', 'producer')}")
    process.start()
    sender.close()
    kind = None
    try:
        while True:
            try:
                kind, item = receiver.recv()
            except EOFError:
                process.join()
                raise RuntimeError(f"the producing process ended (exit code {process.exitcode})") from None
            if kind == "item":
                yield item
            elif kind == "end":
                return
            else:
                raise item
    finally:
        receiver.close()
        if kind != "end":             # stopped early (or it failed): nothing more is wanted from it
            process.kill()
        process.join()


def _produce_into(sender, produce: Callable, args) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the consumer's to handle
    try:
        produce(lambda item: sender.send(("item", item)), *args)
        sender.send(("end", None))
    except (BrokenPipeError, ConnectionResetError):  # the consumer has gone
        pass
    except Exception as e:
        try:
            sender.send(("error", e))
        except Exception:                            # it does not pickle
            sender.send(("error", RuntimeError(f"{type(e).__name__}: {e}")))
