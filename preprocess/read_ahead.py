"""The next item of an iterator made in a thread while the caller works on the current one.

Reading and validating a 100,000-row chunk costs about half a second of the
main process (pandas, then the per-row checks); tokenising it runs in the
tokenizer processes while the main process only waits for them. A reader
thread one chunk ahead puts the two side by side. The same goes one level
up: chunks tokenised in a thread while the GPU predicts the one before.
Errors come out where they would have without it: an InputError of chunk
k+1 is raised when chunk k+1 is asked for, after chunk k was handed over.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from typing import Iterator, TypeVar

T = TypeVar("T")

_DONE = object()


class ReadAhead(Iterator[T]):
    """`items` in order, produced in a thread from the moment this is made
    (so a caller can load a model while the first item is read), at most one
    item ahead of the one handed over. close() (or dropping it) lets the
    thread go and closes `items`."""

    def __init__(self, items: Iterator[T]):
        self._handed: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()  # set: the consumer is done, or let the reader go
        # The thread holds the queue and the event, not this object, so a
        # consumer that drops it unfinished lets the thread go (__del__).
        threading.Thread(target=_produce, args=(items, self._handed, self._stop), name="read-ahead",
                         daemon=True).start()

    def __next__(self) -> T:
        if self._stop.is_set():
            raise StopIteration
        item, err = self._handed.get()
        if err is not None or item is _DONE:
            self.close()
            if err is not None:
                raise err
            raise StopIteration
        return item

    def close(self) -> None:
        """Let the reader go: a consumer that stops early, or never began."""
        self._stop.set()

    def __del__(self):
        self.close()


def read_ahead(items: Iterator[T]) -> ReadAhead[T]:
    return ReadAhead(items)


def _produce(items: Iterator, handed: queue.Queue, stop: threading.Event) -> None:
    try:
        for item in items:
            if not _put(handed, (item, None), stop):
                return
        _put(handed, (_DONE, None), stop)
    except BaseException as err:  # handed to the consumer, raised there
        _put(handed, (_DONE, err), stop)
    finally:
        # A consumer that stopped early leaves a generator mid-way: closed
        # here, so what it holds open (tokenizer processes) ends now.
        # Its own errors then are not the run's: the consumer is already
        # on its way out with the first one.
        close = getattr(items, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()


def _put(handed: queue.Queue, entry: tuple, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            handed.put(entry, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
