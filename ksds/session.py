"""What one open data set shares with its browses: the pager, the mutex, the change count.

A :class:`~ksds.Dataset` and every :class:`~ksds.Browse` made from it hold the same :class:`Session`. The
data set's requests and a browse's steps each hold :attr:`Session.mutex` (one at a time per open, across
threads); every change through the open bumps :attr:`Session.mod`, so that a browse re-seeks after the last record
it returned; :attr:`Session.pager` is None once the open is closed. The data set hands in the two things a browse
needs of its request logic: where a browse starts (``position``) and how a step runs in shared mode (``latched``:
under the latch, with a view caught up with other processes).

Thread safety: the mutex is what makes the rest safe; ``mod`` and ``uncounted`` are changed holding it (a browse
that ends while another thread holds it leaves its count in ``uncounted``, a list append). Costs: O(1).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .btree import Position
from .errors import DatasetClosedError, LatchTimeoutError
from .pager import Pager

T = TypeVar("T")


class Session:
    """The state an open shares with its browses (see the module docstring)."""

    __slots__ = ("path", "pager", "mutex", "mod", "uncounted", "lock_timeout", "ko", "kl", "position", "latched")

    def __init__(self, path: str, pager: Pager, lock_timeout: float) -> None:
        self.path = path
        #: the open's pager; None once it is closed
        self.pager: Pager | None = pager
        #: one request at a time (reentrant: a batch holds it while its requests take it again)
        self.mutex = threading.RLock()
        #: bumped by every change through the open: open browses re-seek when it moves
        self.mod = 0
        #: records returned by browses that ended while another thread had the open (REC-RETRIEVED, added later)
        self.uncounted: list[int] = []
        self.lock_timeout = lock_timeout
        d = pager.defn
        self.ko = d.key_offset
        self.kl = d.key_length
        #: ``position(key, gteq, generic, backward)``: where a browse starts (set by the data set)
        self.position: Callable[[bytes | None, bool, bool, bool], Position | None]
        #: ``latched(pager, exclusive, fn, *args)``: run ``fn`` as a request of the open (set by the data set)
        self.latched: Callable[..., Any]

    def opened(self) -> Pager:
        """The pager; :class:`~ksds.DatasetClosedError` once the open is closed."""
        p = self.pager
        if p is None:
            raise DatasetClosedError(f"{self.path} is closed")
        return p

    def wait_turn(self) -> None:
        """Wait for another thread's request or batch on this open to end (``lock_timeout``; 0: forever)."""
        t = self.lock_timeout
        if not self.mutex.acquire(True, t if t > 0 else -1):
            raise LatchTimeoutError(
                f"{self.path}: another thread of this process kept this open busy for {t:g}s (lock timeout): a "
                f"batch held open, or a long request; end batches sooner, raise lock_timeout, or give each thread "
                f"its own open"
            )

    def acquire(self) -> None:
        """Take the open's mutex (at once if free, else :meth:`wait_turn`)."""
        if not self.mutex.acquire(False):
            self.wait_turn()

    def release(self) -> None:
        self.mutex.release()
