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


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """`items` in order, the next one produced in a thread while the caller
    works on the current one."""
    handed: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
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

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, err = handed.get()
            if err is not None:
                raise err
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()  # a consumer that stops early lets the reader go


def _put(handed: queue.Queue, entry: tuple, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            handed.put(entry, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
