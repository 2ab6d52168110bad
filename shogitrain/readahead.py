"""Items produced ahead of their consumer in a thread: training batches, decompressed archive members.

The producer overlaps the consumer's work wherever it releases the GIL (numpy gathers from memory
maps, torch ops, zlib/lzma/bz2/7z decompression).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator

__all__ = ["Handoff", "Stopped", "read_ahead"]


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
