"""Browses (STARTBR / READNEXT / READPREV / RESETBR / ENDBR): iterators over records in key order.

A browse keeps a path through the index and an offset in the current data CI, so each step is a list index.
When the data set changes (any write, rewrite or erase through the same ``Dataset``), the next step re-seeks
from the last record it returned: records written ahead of the browse are seen, erased ones are not, and
nothing is returned twice.
"""

from __future__ import annotations

from collections.abc import Iterator

from . import btree
from .btree import Position
from .errors import DatasetClosedError
from .session import Session


class Browse:
    """An open browse over a :class:`~ksds.Dataset`; iterate it, ``reposition`` it, ``close`` it."""

    def __init__(
        self, ds: Session, key: bytes | None, *, gteq: bool, generic: bool, backward: bool, stop: bytes | None = None
    ) -> None:
        self._ds = ds
        self.backward = backward
        #: exclusive end key (forward: before the first key >= it; backward: before the first key <= it)
        self.stop = stop
        self._it: Iterator[bytes] = iter(())
        self._ended = False  # ENDBR: close() was called
        self.reposition(key, gteq=gteq, generic=generic, backward=backward)

    def reposition(
        self, key: bytes | None = None, *, gteq: bool = True, generic: bool = False, backward: bool | None = None
    ) -> None:
        """Move the browse (RESETBR), with the same start rules as :meth:`Dataset.browse`."""
        if backward is None:
            backward = self.backward
        ds = self._ds
        ds.acquire()
        try:
            p = ds.opened()
            if p.shared:
                pos = ds.latched(p, False, ds.position, key, gteq, generic, backward)
            else:
                pos = ds.position(key, gteq, generic, backward)
            mod = ds.mod  # the position is good until the data set changes
        finally:
            ds.release()
        self.backward = backward
        start = (key, gteq, generic)
        self._end()
        self._ended = False
        if p.shared:
            self._it = self._shared(pos, start, mod)
        else:
            self._it = self._backward(pos, start, mod) if backward else self._forward(pos, start, mod)

    def __iter__(self) -> Iterator[bytes]:
        # ``yield from`` passes records through in C; a reposition ends the inner iterator and we go on
        # with the new one
        while True:
            it = self._it
            yield from it
            if self._it is it:
                self._check_open()
                return

    def __next__(self) -> bytes:
        try:
            return next(self._it)
        except StopIteration:
            self._check_open()
            raise

    def _check_open(self) -> None:
        """A browse of a closed data set always says so (not only on the step that found it closed)."""
        if self._ds.pager is None and not self._ended:
            raise DatasetClosedError(f"{self._ds.path} is closed")

    def close(self) -> None:
        """End the browse (ENDBR)."""
        self._end()
        self._it = iter(())
        self._ended = True

    def _end(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Browse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reseek(self, after: bytes | None, start: tuple[bytes | None, bool, bool]) -> Position | None:
        ds = self._ds
        p = ds.pager
        if p is None:
            raise DatasetClosedError(f"{ds.path} is closed")
        if after is None:  # nothing returned yet: start again as asked
            try:
                return ds.position(start[0], True, start[2], self.backward)
            except KeyError:
                return None
        if self.backward:
            return btree.seek_le(p.base, after, strict=True)
        return btree.seek_ge(p.base, after, strict=True)

    def _shared(
        self, pos: Position | None, start: tuple[bytes | None, bool, bool], mod: int
    ) -> Iterator[bytes]:
        """A browse while other processes may change the data set: each step runs under the latch, with a view
        caught up with theirs, and re-seeks after the last record returned when anything changed."""
        ds = self._ds
        ko, kl = ds.ko, ds.kl
        backward = self.backward
        last: bytes | None = None

        def step() -> bytes | None:
            nonlocal pos, mod
            p = ds.opened()
            if p.view_changed:
                ds.mod += 1
            if ds.mod != mod:
                mod = ds.mod
                pos = self._reseek(last, start)
            if pos is None:
                return None
            path, ci, i = pos
            if backward:
                if i < 0:
                    prv = btree.prev_data(p.base, path)
                    if prv is None:
                        pos = None
                        return None
                    ci, i = prv, prv.n - 1
                pos = (path, ci, i - 1)
            else:
                if i >= ci.n:
                    nxt = btree.next_data(p.base, path)
                    if nxt is None:
                        pos = None
                        return None
                    ci, i = nxt, 0
                pos = (path, ci, i + 1)
            rec = ci.record(i)
            stop = self.stop
            if stop is not None:
                k = rec[ko : ko + kl]
                if (k <= stop) if backward else (k >= stop):
                    pos = None
                    return None
            p.state.rec_retrieved += 1
            return rec

        while True:
            ds.acquire()
            try:
                rec = ds.latched(ds.opened(), False, step)
            finally:
                ds.release()
            if rec is None:
                return
            last = rec[ko : ko + kl]
            yield rec

    def _forward(
        self, pos: Position | None, start: tuple[bytes | None, bool, bool], mod: int
    ) -> Iterator[bytes]:
        """Records from ``pos`` on; ``mod`` is the data set's change count when ``pos`` was found.

        Each CI is one step under the open's mutex (re-seek if the data set changed, move to the next CI, take the
        CI's records from the position on); its records are then passed on without the mutex, and the browse stops
        to re-seek as soon as anything changes. So a thread's browse never reads a CI another thread is changing.
        """
        ds = self._ds
        ko = ds.ko
        kl = ds.kl
        last: bytes | None = None
        counted = 0  # records returned and not yet added to REC-RETRIEVED
        path: btree.Path = []
        more = False  # the records of the CI at ``pos`` were all returned: go on with the next CI
        try:
            while True:
                ds.acquire()
                try:
                    p = ds.pager
                    if p is None:
                        raise DatasetClosedError(f"{ds.path} is closed")
                    p.state.rec_retrieved += counted
                    counted = 0
                    if ds.mod != mod:
                        mod = ds.mod
                        pos = self._reseek(last[ko : ko + kl] if last is not None else None, start)
                        more = False
                    if more:
                        nxt = btree.next_records(p.base, path)  # in place: no CI object, nothing pooled
                        if nxt is None:
                            return
                        recs = nxt
                    else:
                        if pos is None:
                            return
                        path, ci, i = pos
                        recs = ci.records(i)  # new bytes: another thread may change the CI once we let go
                finally:
                    ds.release()
                final = False
                stop = self.stop
                if stop is not None and recs and recs[-1][ko : ko + kl] >= stop:
                    lo, hi = 0, len(recs)  # the first record at or past the end key
                    while lo < hi:
                        mid = (lo + hi) >> 1
                        if recs[mid][ko : ko + kl] < stop:
                            lo = mid + 1
                        else:
                            hi = mid
                    del recs[lo:]
                    final = True
                for last in recs:
                    counted += 1
                    yield last
                    if ds.mod != mod:
                        break
                if final and ds.mod == mod:
                    return
                more = True
        finally:
            if counted:
                self._count(counted)

    def _backward(
        self, pos: Position | None, start: tuple[bytes | None, bool, bool], mod: int
    ) -> Iterator[bytes]:
        """Records from ``pos`` backward; ``mod`` is the data set's change count when ``pos`` was found.
        Steps as :meth:`_forward` does."""
        ds = self._ds
        ko = ds.ko
        kl = ds.kl
        last: bytes | None = None
        counted = 0
        path: btree.Path = []
        more = False
        try:
            while True:
                ds.acquire()
                try:
                    p = ds.pager
                    if p is None:
                        raise DatasetClosedError(f"{ds.path} is closed")
                    p.state.rec_retrieved += counted
                    counted = 0
                    if ds.mod != mod:
                        mod = ds.mod
                        pos = self._reseek(last[ko : ko + kl] if last is not None else None, start)
                        more = False
                    if more:
                        prv = btree.prev_records(p.base, path)
                        if prv is None:
                            return
                        recs = prv
                    else:
                        if pos is None:
                            return
                        path, ci, i = pos
                        recs = ci.records(0, i + 1)[::-1] if i >= 0 else []
                finally:
                    ds.release()
                final = False
                stop = self.stop
                if stop is not None and recs and recs[-1][ko : ko + kl] <= stop:
                    lo, hi = 0, len(recs)  # the first record at or before the end key (keys descend here)
                    while lo < hi:
                        mid = (lo + hi) >> 1
                        if recs[mid][ko : ko + kl] > stop:
                            lo = mid + 1
                        else:
                            hi = mid
                    del recs[lo:]
                    final = True
                for last in recs:
                    counted += 1
                    yield last
                    if ds.mod != mod:
                        break
                if final and ds.mod == mod:
                    return
                more = True
        finally:
            if counted:
                self._count(counted)

    def _count(self, n: int) -> None:
        """Add records returned to REC-RETRIEVED (when a browse ends or is dropped)."""
        ds = self._ds
        if not ds.mutex.acquire(False):
            ds.uncounted.append(n)  # another thread has the open (ending a browse never waits): counted later
            return
        try:
            if ds.pager is not None:
                ds.pager.state.rec_retrieved += n
        finally:
            ds.release()
