"""Waking, joining and draining the integration's threads and queues, up to a deadline."""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
import time
from typing import Any, Callable

# A thread of the integration (the worker, a Segment consumer) with nothing to do for this
# long ends; the next event starts another.
IDLE_SECONDS = 2.0


class Bell:
    """Wakes the worker. Ringing it is one call into C (a SimpleQueue's put), where setting a
    threading.Event runs a Condition's Python code on the capturing thread."""

    def __init__(self) -> None:
        # Looked up now, not at import: under gevent, the patched queue once it is patched.
        self._rings: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self.ring = functools.partial(self._rings.put, True)

    def wait(self, timeout: float) -> bool:
        """Whether it rang within timeout seconds."""
        try:
            return self._rings.get(timeout=timeout)
        except queue.Empty:
            return False

    def silence(self) -> None:
        """Forget the rings that came while the worker was awake."""
        with contextlib.suppress(queue.Empty):
            while True:
                self._rings.get_nowait()


# How often drain() looks at a queue that has no condition to wait on, and join_unless()
# whether a thread ended.
POLL_SECONDS = 0.002


def join_unless(thread: threading.Thread, took_work: Callable[[], bool], deadline: float) -> None:
    """Wait until the thread has ended, at most until deadline, or until took_work() says it
    took new work instead of ending."""
    while thread.is_alive() and time.monotonic() < deadline:
        thread.join(POLL_SECONDS)
        if thread.is_alive() and took_work():
            return


def drain(
    work: queue.Queue[Any], deadline: float, give_up: Callable[[], bool] = lambda: False
) -> bool:
    """Wait until every item put on the queue was marked done, or the deadline passes, or
    give_up() says no more will be done for now (the queue's waiters are notified then)."""
    if not hasattr(work, "all_tasks_done"):
        # gevent's queue, once monkey-patched, has no condition: look, sleeping (a yield).
        while work.unfinished_tasks:
            if time.monotonic() >= deadline or give_up():
                return False
            time.sleep(POLL_SECONDS)
        return True
    with work.all_tasks_done:
        while work.unfinished_tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or give_up():
                return False
            work.all_tasks_done.wait(remaining)
    return True
