"""The data set API: ``define``, ``open`` and the requests (WRITE, READ, REWRITE, ERASE, browse).

Inserts follow VSAM's two strategies, chosen per request instead of per open (VSAM's weakness 9): a WRITE whose
key follows the previous WRITE's key in the same CI is *sequential* (a load, or a mass insert), any other is
*direct*.

* Direct: a full CI splits at its middle into a free CI of the same CA (a CI split).
* Sequential: a CI fills up to FREESPACE ci% and then splits at the insertion point; appending past a CI's
  last record starts a new CI without moving records, and past the end of a CA (filled up to FREESPACE ca%)
  starts a new CA.
* A CI split with no free CI in the CA first moves about half the CA's CIs to a new CA (a CA split).

Every request is one transaction of the :mod:`~ksds.pager` (one log write, and one sync in power mode),
unless it runs inside :meth:`Dataset.batch`.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

from . import aix, btree
from .browse import Browse
from .coherence import COUNTER_WORD, IN_PLACE_WORD, shm_path
from .definition import CI_TRAILER, Definition, check_freespace, check_share_options, make_definition
from .errors import (
    DatasetClosedError,
    DatasetExistsError,
    DatasetInUseError,
    DatasetNotFoundError,
    DeadlockError,
    DuplicateKeyError,
    InvalidRequestError,
    KsdsError,
    LatchTimeoutError,
    ReadOnlyError,
    RecordLengthError,
    RecordNotFoundError,
    show_key,
)
from .format import HEADER_MAX, MAGIC, State, decode_header
from .locks import RLS_AVAILABLE, OpenLocks, RecordLocks
from .pager import CHECKPOINT_BYTES, Pager, Recovery, create, data_set_path, log_path, same_file
from .path import Path
from .portable_locks import rls_unavailable
from .session import Session

#: default buffer pool size (bytes of CIs kept in memory)
DEFAULT_BUFFER_SPACE = 32 << 20
#: how long ``delete`` waits for the latch before it calls the data set in use
DELETE_WAIT = 10.0
Position = btree.Position
T = TypeVar("T")
P = ParamSpec("P")


def define(
    path: str,
    *,
    key_length: int,
    record_length: int,
    key_offset: int = 0,
    ci_size: int = 4096,
    cis_per_ca: int | None = None,
    freespace: tuple[int, int] = (0, 0),
    share_options: tuple[int, int] = (1, 3),
    exist_ok: bool = False,
) -> Definition:
    """Create an empty data set at ``path`` (IDCAMS DEFINE CLUSTER INDEXED); error if ``path`` exists.

    ``ci_size`` is rounded up as VSAM does; ``cis_per_ca`` defaults to what one sequence-set CI can address
    (at most 1 MiB per CA). Returns the definition as stored. Raises :class:`~ksds.DefinitionError` naming a bad
    parameter, :class:`~ksds.DatasetExistsError` if ``path`` exists.

    ``exist_ok=True``: a data set already at ``path`` is fine if its definition is this one (every attribute,
    FREESPACE and SHAREOPTIONS included, as they are now); it is left as it is and its definition returned. One
    that differs is :class:`~ksds.DatasetExistsError` naming each attribute that differs. O(1): reads the header.
    """
    defn = make_definition(
        key_length=key_length,
        record_length=record_length,
        key_offset=key_offset,
        ci_size=ci_size,
        cis_per_ca=cis_per_ca,
        freespace=freespace,
        share_options=share_options,
    )
    path = data_set_path(path)
    if exist_ok and os.path.lexists(path):
        return _existing(path, defn)
    try:
        create(path, defn, time.time_ns())
    except DatasetExistsError:
        if not exist_ok:
            raise
        return _existing(path, defn)  # defined by someone else meanwhile
    return defn


def _existing(path: str, want: Definition) -> Definition:
    """``define(exist_ok=True)`` of a data set that exists: its definition (from its header), if it is ``want``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise DatasetExistsError(f"{path} already exists and cannot be read: {e.strerror}") from None
    try:
        have = decode_header(os.pread(fd, HEADER_MAX, 0), path)[0]
    finally:
        os.close(fd)
    if have == want:
        return have
    names = ("key_length", "key_offset", "record_length", "ci_size", "cis_per_ca", "freespace", "share_options")
    diff = [f"{n} is {getattr(have, n)!r}, not {getattr(want, n)!r}" for n in names
            if getattr(have, n) != getattr(want, n)]
    raise DatasetExistsError(
        f"{path} already exists with another definition: {'; '.join(diff)} (delete it first, choose another name, "
        f"or ALTER what can change: freespace, share_options)"
    )


def delete(path: str) -> list[str]:
    """DELETE CLUSTER: remove the data set at ``path`` with its log, shared state and lock file; returns the paths
    removed.

    Refuses (:class:`~ksds.DatasetInUseError`) while any process has it open, and a file that is not a data set
    (:class:`~ksds.NotADatasetError`); :class:`~ksds.DatasetNotFoundError` if there is nothing at ``path``.
    """
    path = data_set_path(path)
    if not os.path.isfile(path):
        raise DatasetNotFoundError(f"no data set at {path}")
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        raise DatasetNotFoundError(f"no data set at {path}") from None
    try:
        if os.pread(fd, len(MAGIC), 0) != MAGIC:
            decode_header(os.pread(fd, HEADER_MAX, 0), path)  # NotADatasetError, before any lock on the file
        locks = OpenLocks(fd, path)
        try:
            try:
                locks.latch(True, DELETE_WAIT)
            except LatchTimeoutError as e:
                raise DatasetInUseError(f"{path} is in use: {e}; not deleted") from None
            if not same_file(fd, path):
                raise DatasetNotFoundError(
                    f"no data set at {path} any more (deleted or replaced meanwhile); not deleted"
                )
            if not locks.alone():
                raise DatasetInUseError(f"{path} is in use: another process has it open; not deleted")
            # under the latch and alone: nobody writes the header now (an exclusive updater, SHAREOPTIONS(1), writes
            # it at its checkpoints without the latch, so it is read only once no one else has the data set open)
            decode_header(os.pread(fd, HEADER_MAX, 0), path)
            # the log and the lock file go first, the data file last: until it goes, nobody can open this data set
            # (an open waits for the latch, then finds its file gone), and a data set defined at the path after it
            # finds neither a log nor a lock file of this one
            removed = [p for p in (path, log_path(path), shm_path(path), path + ".lck") if os.path.exists(p)]
            for p in reversed(removed):
                os.unlink(p)
            return removed + locks.remove_files()  # the portable locks' files, latch last (after the data file)
        finally:
            locks.close()
    finally:
        os.close(fd)


def define_aix(
    path: str,
    name: str,
    *,
    key_length: int,
    key_offset: int,
    unique: bool = False,
    upgrade: bool = True,
    freespace: tuple[int, int] = (0, 0),
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """DEFINE ALTERNATEINDEX + BLDINDEX: an alternate index ``name`` over the data set at ``path``, keyed by the
    ``key_length`` bytes at ``key_offset`` of each record (it may overlap the prime key), built from the records
    there now. ``unique``: UNIQUEKEY (a second record with one alternate key is refused); ``upgrade``: kept in
    step with every WRITE, REWRITE and ERASE, in the same transaction (False: NOUPGRADE, stale after the first
    change until :func:`build_aix`). ``progress(done, total)`` is called while it builds. The alternate index lives
    in the data set's file. Opens the data set for update and holds it (and, when it is shared, its latch) while
    it builds. Returns what :meth:`Dataset.aixes` says of it. Raises :class:`~ksds.DefinitionError` naming a bad
    parameter, :class:`~ksds.DuplicateKeyError` for a unique one over records that share an alternate key (nothing
    is defined). O(N log N) for N records."""
    with open(path, "rw") as ds:
        return ds._define_aix(name, key_length, key_offset, unique, upgrade, freespace, progress)


def build_aix(path: str, name: str, *, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """BLDINDEX: empty the alternate index ``name`` and build it from the base's records as they are now (a
    NOUPGRADE one is current again). Returns what :meth:`Dataset.aixes` says of it. O(N log N)."""
    with open(path, "rw") as ds:
        return ds._build_aix(name, progress)


def delete_aix(path: str, name: str) -> None:
    """DELETE ALTERNATEINDEX: remove the alternate index ``name`` in one transaction; its CAs and index CIs go to
    the data set's free lists. O(CIs of its index)."""
    with open(path, "rw") as ds:
        ds._delete_aix(name)


def open(  # noqa: A001 - the module's API mirrors builtins.open on purpose
    path: str,
    mode: str = "rw",
    *,
    durability: str = "process",
    buffer_space: int = DEFAULT_BUFFER_SPACE,
    sharing: str = "nonrls",
    read_integrity: str = "nri",
    lock_timeout: float = 30.0,
) -> Dataset:
    """Open a data set: ``mode`` "r" (reading) or "rw" (reading and updating).

    ``durability`` "process": a request that returned survives the death of the process (kill -9).
    ``durability`` "power": it is also on stable storage (one log sync per request or batch).
    ``buffer_space``: bytes of CIs kept in memory (the buffer pool); memory use does not grow beyond it with the
    size of the data set.
    ``sharing`` "nonrls": the data set's SHAREOPTIONS decide who else may open it (1: many readers or one
    updater; 2: one updater and many readers; 3 and 4: many updaters); ``"rls"``: record-level sharing, many
    readers and updaters with record locks. ``read_integrity`` (RLS): "nri" no lock, "cr" wait for a committed
    record, "cre" keep a shared lock until :meth:`Dataset.unlock`. ``lock_timeout``: seconds a request waits
    for a record lock before :class:`~ksds.RecordLockedError` (0: forever).
    """
    return Dataset(
        path, mode, durability, buffer_space, sharing=sharing, read_integrity=read_integrity,
        lock_timeout=lock_timeout,
    )


#: how many times a shared read tries without the latch (catching up with the log when it moved) before it takes it
_UNLATCHED_TRIES = 3


def _prefix_end(prefix: bytes, length: int, backward: bool) -> bytes | None:
    """The exclusive end key of the records whose keys start with ``prefix`` (None: they run to the end)."""
    if backward:
        low = prefix.ljust(length, b"\0")
        return None if not any(low) else btree.pred(low)
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None  # all X'FF': nothing follows
    return (stripped[:-1] + bytes([stripped[-1] + 1])).ljust(length, b"\0")


def _serialised(method: Callable[Concatenate[Dataset, P], T]) -> Callable[Concatenate[Dataset, P], T]:
    """Run a :class:`Dataset` method holding the open's mutex (one request at a time per open)."""

    @functools.wraps(method)
    def run(self: Dataset, /, *args: P.args, **kwargs: P.kwargs) -> T:
        m = self._s.mutex
        if not m.acquire(False):
            self._s.wait_turn()
        try:
            return method(self, *args, **kwargs)
        finally:
            m.release()

    return run


class Dataset:
    """An open data set. Use as a context manager.

    **Threads**: an open may be shared by any number of threads. Its requests are serialised (one at a time, as in
    sqlite3's serialized mode): each request, browse step, batch and close holds the open's mutex, so threads never
    see half of another's request. A :meth:`batch` belongs to the thread that began it and holds the open until it
    ends; other threads' requests wait for it (at most ``lock_timeout`` seconds, then
    :class:`~ksds.LatchTimeoutError`). For requests that run in parallel, give each thread its own open (with
    SHAREOPTIONS(3)/(4) or RLS, as for processes).
    """

    def __init__(
        self,
        path: str,
        mode: str,
        durability: str,
        buffer_space: int,
        *,
        sharing: str = "nonrls",
        read_integrity: str = "nri",
        lock_timeout: float = 30.0,
    ) -> None:
        if sharing not in ("nonrls", "rls"):
            raise InvalidRequestError(f"sharing must be 'nonrls' or 'rls', not {sharing!r}")
        if read_integrity not in ("nri", "cr", "cre"):
            raise InvalidRequestError(f"read_integrity must be 'nri', 'cr' or 'cre', not {read_integrity!r}")
        if (
            isinstance(lock_timeout, bool)
            or not isinstance(lock_timeout, (int, float))
            or not math.isfinite(lock_timeout)
            or lock_timeout < 0
            or lock_timeout > threading.TIMEOUT_MAX
        ):
            raise InvalidRequestError(
                f"lock_timeout must be a finite number of seconds >= 0 (0 waits forever), not {lock_timeout!r}"
            )
        if mode not in ("r", "rw"):
            raise InvalidRequestError(f"mode must be 'r' or 'rw', not {mode!r}")
        if durability not in ("process", "power"):
            raise InvalidRequestError(f"durability must be 'process' or 'power', not {durability!r}")
        if isinstance(buffer_space, bool) or not isinstance(buffer_space, int) or buffer_space <= 0:
            raise InvalidRequestError(f"buffer_space must be a positive number of bytes, not {buffer_space!r}")
        path = data_set_path(path)
        self.path = path
        self.mode = mode
        self.durability = durability
        self.sharing = sharing
        self.read_integrity = read_integrity
        self.lock_timeout = float(lock_timeout)
        if sharing == "rls" and not RLS_AVAILABLE:
            raise KsdsError(rls_unavailable(path))
        pager = Pager(
            path,
            writable=mode == "rw",
            power=durability == "power",
            buffer_space=buffer_space,
            rls=sharing == "rls",
            lock_timeout=self.lock_timeout,
            restamp=btree.restamp,
        )
        #: what this open shares with its browses: the pager, the mutex, the change count
        s = self._s = Session(path, pager, self.lock_timeout)
        s.position = self._position
        s.latched = self._latched
        #: record locks (RLS only)
        self._locks: RecordLocks | None = None
        if sharing == "rls":
            try:
                self._locks = RecordLocks(path)
            except BaseException as e:
                pager.close()
                if isinstance(e, OSError):
                    raise KsdsError(f"{path}: cannot open its lock file {path}.lck: {e.strerror}") from e
                raise
        self._batch_locks: set[bytes] = set()
        #: threads waiting for a record lock (without the mutex), and record locks whose close waits for them
        self._waiting = 0
        self._closing_locks: RecordLocks | None = None
        d = pager.defn
        self._kl = d.key_length
        self._ko = d.key_offset
        self._rl = d.record_length
        self._cap = d.records_per_ci
        self._max = b"\xff" * d.key_length
        self._min = bytes(d.key_length)
        self._batch = 0
        self._broken: BaseException | None = None
        self._last_write: bytes | None = None
        #: what opening did to recover a data set that was not closed cleanly (None if it was)
        self.recovery: Recovery | None = pager.recovery

    @property
    def _pager(self) -> Pager | None:
        """The open's pager (None once closed): for white-box tests."""
        return self._s.pager

    # --- the definition ---------------------------------------------------------------------------------------

    @property
    @_serialised
    def definition(self) -> Definition:
        p = self._open()
        st = p.state
        d = p.defn
        return Definition(
            key_length=d.key_length,
            key_offset=d.key_offset,
            record_length=d.record_length,
            ci_size=d.ci_size,
            cis_per_ca=d.cis_per_ca,
            freespace=(st.freespace_ci, st.freespace_ca),
            share_options=(st.share_region, st.share_system),
        )

    @property
    def key_length(self) -> int:
        return self._kl

    @property
    def key_offset(self) -> int:
        return self._ko

    @property
    def record_length(self) -> int:
        return self._rl

    def key_of(self, record: bytes) -> bytes:
        """The key field of a record."""
        return record[self._ko : self._ko + self._kl]

    # --- checks ----------------------------------------------------------------------------------------------

    def _open(self) -> Pager:
        p = self._s.pager
        if p is None:
            raise DatasetClosedError(f"{self.path} is closed")
        return p

    def _writable(self) -> Pager:
        p = self._open()
        if self.mode != "rw":
            raise ReadOnlyError(f"{self.path} is open for reading only (mode 'r')")
        if self._broken is not None:
            raise KsdsError(f"{self.path}: the batch was rolled back after an error ({self._broken}); end it first")
        return p

    def _key(self, key: object, generic: bool = False) -> bytes:
        if not isinstance(key, bytes):
            if isinstance(key, (bytearray, memoryview)):
                key = bytes(key)
            else:
                raise InvalidRequestError(f"{self.path}: a key must be bytes, not {type(key).__name__}")
        key = bytes(key) if type(key) is not bytes else key
        n = len(key)
        if generic:
            if not 0 < n <= self._kl:
                raise InvalidRequestError(
                    f"{self.path}: a generic key must have 1 to {self._kl} bytes, not {n}"
                )
        elif n != self._kl:
            raise InvalidRequestError(
                f"{self.path}: key {show_key(key)} has {n} bytes; this data set's keys have {self._kl}"
                + (" (use generic=True for a prefix)" if n < self._kl else "")
            )
        return key

    def _record(self, record: object) -> bytes:
        if not isinstance(record, bytes):
            if isinstance(record, (bytearray, memoryview)):
                record = bytes(record)
            else:
                raise InvalidRequestError(f"{self.path}: a record must be bytes, not {type(record).__name__}")
        record = bytes(record) if type(record) is not bytes else record
        if len(record) != self._rl:
            raise RecordLengthError(
                f"{self.path}: record of {len(record)} bytes; this data set's records have {self._rl}"
            )
        return record

    def _fail(self, p: Pager, e: BaseException) -> None:
        """A request failed after it changed CIs in memory: undo the transaction in progress."""
        p.rollback()
        self._s.mod += 1
        if self._batch:
            self._broken = e

    def _done(self, p: Pager) -> None:
        self._s.mod += 1
        if not self._batch:
            try:
                p.commit()
            except BaseException as e:
                self._fail(p, e)
                raise

    # --- keyed requests --------------------------------------------------------------------------------------

    def read(
        self,
        key: bytes,
        *,
        gteq: bool = False,
        generic: bool = False,
        update: bool = False,
        integrity: str | None = None,
    ) -> bytes:
        """READ by key: the record with key ``key`` (EQUAL), or with the lowest key >= ``key`` (``gteq``),
        or the first whose key starts with the prefix ``key`` (``generic``; with ``gteq``, the first record
        at or after the prefix). Raises :class:`~ksds.RecordNotFoundError`. O(L log n) for L index levels.

        RLS: ``update=True`` takes an exclusive lock on the record, held until the REWRITE or ERASE of that key or
        :meth:`unlock` (CICS READ UPDATE); ``integrity`` ("nri", "cr", "cre") overrides the open's read
        integrity for this read. Without RLS both are accepted and the read is a plain read.
        """
        m = self._s.mutex
        if not m.acquire(False):
            self._s.wait_turn()
        try:
            p = self._s.pager
            if p is None:
                raise DatasetClosedError(f"{self.path} is closed")
            if type(key) is not bytes or len(key) != self._kl or gteq or generic or update or integrity is not None:
                if p.shared or update or integrity is not None:
                    return self._read_shared(p, key, gteq, generic, update, integrity)
                return self._read_slow(p, key, gteq, generic)
            if not p.shared:
                rec = self._find(p, key)
            elif self._plain_reads(p):
                rec = self._find_shared(p, key)
            else:
                return self._read_shared(p, key, gteq, generic, update, integrity)
            if rec is None:
                raise RecordNotFoundError(f"{self.path}: no record with key {show_key(key)}")
            return rec
        finally:
            m.release()

    def _find(self, p: Pager, key: bytes) -> bytes | None:
        """READ EQUAL of a key of the right length, holding the mutex (and in shared mode a current view or the
        latch): the record (a copy) or None. The hot path of every keyed read (:func:`btree.find`). O(L log n)."""
        rec = btree.find(p.base, key)
        if rec is not None:
            p.state.rec_retrieved += 1
        return rec

    def _plain_reads(self, p: Pager) -> bool:
        """Whether a read in shared mode takes no record lock and keeps its buffers (then it may run without the
        latch while nothing changed: :meth:`_find_shared`): NONRLS but SHAREOPTIONS(4), whose buffers are
        refreshed at every request; RLS with read integrity NRI."""
        if self._locks is None:
            return p.defn.share_options[0] != 4
        return self.read_integrity == "nri"

    def _find_shared(self, p: Pager, key: bytes) -> bytes | None:
        """:meth:`_find` in shared mode (reads that take no record lock: :meth:`_plain_reads`), without the latch:
        with no system call while this open's view is current (only a change in progress, if any, began since it
        was); after the log's new transactions are read when the view is behind (:meth:`Pager.read_begin`). If CIs
        were written in place meanwhile (:meth:`Pager.read_valid`: a checkpoint; a lookup may have failed on a CI
        being written) the lookup is tried again, and after :data:`_UNLATCHED_TRIES` (or while CIs are being
        written in place) done under the latch. O(L log n)."""
        shm = p.shm
        words = shm.words if shm is not None else None
        if words is not None:  # the usual case, inlined (as Pager.read_begin / read_valid do it)
            token = words[IN_PLACE_WORD]
            if not token & 1:
                c = words[COUNTER_WORD]
                seen = p.seen
                if c == seen or (c & 1 and c == seen + 1 and token == p.seen_ip):
                    retrieved = p.state.rec_retrieved
                    try:
                        rec = self._find(p, key)
                    except Exception:
                        if words[IN_PLACE_WORD] == token:
                            raise
                    else:
                        if words[IN_PLACE_WORD] == token:
                            return rec
                    p.state.rec_retrieved = retrieved  # counted again
        return self._unlatched(p, self._find, p, key)

    def _read_slow(self, p: Pager, key: Any, gteq: bool, generic: bool) -> bytes:
        return self._lookup(p, self._key(key, generic), gteq, generic)

    def _lookup(self, p: Pager, key: bytes, gteq: bool, generic: bool) -> bytes:
        """READ EQUAL / GTEQ / GENERIC of a checked key."""
        if not gteq and not generic:
            _, _, ci = btree.locate(p.base, key)
            j = ci.find(key)
            if j < ci.n and ci.key_at(j) == key:
                p.state.rec_retrieved += 1
                return ci.record(j)
            raise RecordNotFoundError(f"{self.path}: no record with key {show_key(key)}")
        ko = self._ko
        end = ko + self._kl
        if generic:
            rec = btree.first_ge(p.base, key.ljust(self._kl, b"\0"))
            if rec is not None and (gteq or rec[ko:end].startswith(key)):
                p.state.rec_retrieved += 1
                return rec
            raise RecordNotFoundError(f"{self.path}: no record with a key starting {show_key(key)}")
        rec = btree.first_ge(p.base, key)
        if rec is not None and (gteq or rec[ko:end] == key):
            p.state.rec_retrieved += 1
            return rec
        raise RecordNotFoundError(
            f"{self.path}: no record with key {'>= ' if gteq else ''}{show_key(key)}"
        )

    def _read_shared(
        self, p: Pager, key: Any, gteq: bool, generic: bool, update: bool, integrity: str | None
    ) -> bytes:
        """A read when other processes may be changing the data set: under the latch, with RLS record locks."""
        key = self._key(key, generic)
        if integrity is not None and integrity not in ("nri", "cr", "cre"):
            raise InvalidRequestError(f"integrity must be 'nri', 'cr' or 'cre', not {integrity!r}")
        locks = self._locks
        integ = integrity or self.read_integrity
        if locks is None or (not update and integ == "nri"):
            return self._shared_lookup(p, key, gteq, generic)
        exclusive = update
        exact = not gteq and not generic
        target = key if exact else None
        while True:
            if target is None:  # find which record a GTEQ / GENERIC read lands on, then lock it
                target = self.key_of(self._shared_lookup(p, key, gteq, generic))
            had = locks.holds(target, False)  # held in any mode before this read: never released by it
            self._lock(p, locks, target, exclusive)
            try:
                rec = self._shared_lookup(p, key, gteq, generic)
            except RecordNotFoundError:
                if not had:
                    locks.unlock(target)
                raise
            got = self.key_of(rec)
            if got != target:  # the data set changed before we had the lock: lock the record there now
                if not had:
                    locks.unlock(target)
                target = got
                continue
            if integ == "cr" and not update and not had:
                locks.unlock(target)  # CR: we waited for a committed record; nothing to keep
            return rec

    def _shared_lookup(self, p: Pager, key: bytes, gteq: bool, generic: bool) -> bytes:
        """:meth:`_lookup` in shared mode, without the latch as :meth:`_find_shared` does it. SHAREOPTIONS(4)
        without RLS refreshes its buffers at every request, under the latch."""
        if self._locks is not None or p.defn.share_options[0] != 4:
            return self._unlatched(p, self._lookup, p, key, gteq, generic)
        return self._latched(p, False, self._lookup, p, key, gteq, generic)

    def _unlatched(self, p: Pager, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, a read, without the latch (:meth:`Pager.read_begin`, :meth:`Pager.read_valid`), tried
        :data:`_UNLATCHED_TRIES` times, then under the latch (:meth:`_latched`)."""
        for _ in range(_UNLATCHED_TRIES):
            token = p.read_begin()
            if token < 0:
                break
            if p.view_changed:
                p.view_changed = False
                self._s.mod += 1  # open browses re-seek
            st = p.state
            retrieved = st.rec_retrieved
            try:
                rec = fn(*args)
            except Exception:
                if p.read_valid(token):
                    raise
            else:
                if p.read_valid(token):
                    return rec
            st.rec_retrieved = retrieved  # counted again
        return self._latched(p, False, fn, *args)

    def _lock(self, p: Pager, locks: RecordLocks, key: bytes, exclusive: bool) -> None:
        """Take a record lock for a request (called holding the open's mutex, once, and nothing changed yet).

        Outside a batch the mutex is let go while the lock is taken, so that a wait for a record does not hold
        the open: another thread (which may hold the record through another open, and need this one to end its
        unit of work) goes on meanwhile. Inside a batch a busy record fails at once (the batch holds the latch).
        """
        if self._batch:
            try:
                locks.lock(key, exclusive, self.lock_timeout, wait=False)
            except DeadlockError:
                locks.unlock_all()
                raise
            self._batch_locks.add(key)
            return
        self._waiting += 1
        self._s.mutex.release()
        try:
            locks.lock(key, exclusive, self.lock_timeout)
        except DeadlockError as e:
            dead: DeadlockError | None = e
        else:
            dead = None
        finally:
            self._s.mutex.acquire()  # the caller releases it; a batch of another thread is ended by that thread
            self._waiting -= 1
            if self._waiting == 0 and self._closing_locks is not None:
                self._closing_locks.close()  # closed by another thread while we waited: its last step is ours
                self._closing_locks = None
        if self._s.pager is not p:  # closed by another thread meanwhile (close released every record lock)
            raise DatasetClosedError(f"{self.path} is closed")
        if dead is not None:
            locks.unlock_all()
            raise dead

    def _latched(self, p: Pager, exclusive: bool, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` under the latch, with a view caught up with other processes (shared mode)."""
        if not p.shared or self._batch:
            return fn(*args)
        p.begin(exclusive)
        try:
            if p.view_changed:
                self._s.mod += 1
            if p.defn.share_options[0] == 4 and self._locks is None:
                p.pool.clear()  # SHAREOPTIONS(4): buffers are refreshed on every request
            return fn(*args)
        finally:
            p.end()

    def _update(self, p: Pager, key: bytes, release: bool, fn: Callable[..., T], *args: Any) -> T:
        """Run an update request: with RLS, under an exclusive record lock (kept if a READ UPDATE took it and
        ``release`` is False); in shared mode, under the exclusive latch."""
        locks = self._locks
        took = False
        if locks is not None and not locks.holds(key):
            self._lock(p, locks, key, True)
            took = True
        try:
            return self._latched(p, True, fn, *args)
        finally:
            if locks is not None and (took or release):
                if self._batch:
                    self._batch_locks.add(key)  # released when the batch ends
                else:
                    locks.unlock(key)

    @_serialised
    def unlock(self, key: bytes | None = None) -> None:
        """Release this open's lock on record ``key`` (CICS UNLOCK), or every record lock it holds (None)."""
        self._open()
        if self._locks is None:
            return
        if key is None:
            self._locks.unlock_all()
        else:
            self._locks.unlock(self._key(key))

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        """The record with key ``key``, or ``default`` if there is none (a dict-like READ EQUAL; a miss raises
        nothing). O(L log n)."""
        m = self._s.mutex
        if not m.acquire(False):
            self._s.wait_turn()
        try:
            p = self._s.pager
            if p is not None and type(key) is bytes and len(key) == self._kl:
                if not p.shared:
                    rec = self._find(p, key)
                    return default if rec is None else rec
                if self._plain_reads(p):
                    rec = self._find_shared(p, key)
                    return default if rec is None else rec
            try:
                return self.read(key)
            except RecordNotFoundError:
                return default
        finally:
            m.release()

    def __contains__(self, key: object) -> bool:
        """``key in ds``: whether a record with that key exists. O(L log n)."""
        return self.get(key) is not None  # type: ignore[arg-type]

    def __getitem__(self, key: bytes) -> bytes:
        """``ds[key]``: READ EQUAL; :class:`~ksds.RecordNotFoundError` (a ``KeyError``) if there is none. O(L log n)."""
        return self.read(key)

    def keys(self) -> Iterator[bytes]:
        """The keys in key order, lazily (a browse from the first record). O(1) per key, amortised."""
        ko, end = self._ko, self._ko + self._kl
        return (r[ko:end] for r in self.browse())

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """``(key, record)`` pairs in key order, lazily (a browse from the first record). O(1) per record, amortised."""
        ko, end = self._ko, self._ko + self._kl
        return ((r[ko:end], r) for r in self.browse())

    def put(self, record: bytes) -> bool:
        """Write ``record``, or rewrite the record that has its key (an upsert): one request, one transaction.

        Returns True if the record was new (counted as a WRITE), False if it replaced one (a REWRITE). With RLS the
        record is locked for the request as by ``write``/``rewrite``. O(L log n), plus a split's cost when new.
        """
        return self._by_record(record, True, self._put)

    def _put(self, p: Pager, key: bytes, record: bytes) -> bool:
        if self._replace(p, key, record):
            return False
        self._write(p, key, record)
        return True

    def _by_record(self, record: bytes, release: bool, fn: Callable[[Pager, bytes, bytes], T]) -> T:
        """Run a request on a whole record (WRITE, REWRITE, put) holding the open's mutex: ``fn(pager, key,
        record)``, under the record lock and the latch in shared mode (``release``: as :meth:`_update`)."""
        m = self._s.mutex  # taken inline, not through @_serialised: this is the hot path of every update
        if not m.acquire(False):
            self._s.wait_turn()
        try:
            p = self._writable()
            record = self._record(record)
            key = record[self._ko : self._ko + self._kl]
            if p.shared:
                return self._update(p, key, release, fn, p, key, record)
            return fn(p, key, record)
        finally:
            m.release()

    def _replace(self, p: Pager, key: bytes, record: bytes) -> bool:
        """Replace the record with key ``key`` (one transaction, with the alternate indexes' changes); False if
        there is none (nothing changed)."""
        old = None
        if p.state.aixes:
            old = btree.find(p.base, key)
            if old is None:
                return False
            aix.check_write(p, old, record)  # a unique alternate key taken: nothing changed yet
        at = btree.replace(p.base, key)
        if at is None:
            return False
        ci, j = at
        ci.replace(j, record)
        if old is not None:
            self._aixes_follow(p, old, record)
        p.state.rec_updated += 1
        self._done(p)
        return True

    def _aixes_follow(self, p: Pager, old: bytes | None, new: bytes | None) -> None:
        """The alternate indexes follow a base change the request made (the transaction is undone on failure)."""
        try:
            aix.changed(p, old, new)
        except BaseException as e:
            self._fail(p, e)
            raise

    def write(self, record: bytes) -> None:
        """WRITE a new record (its key is the key field). Raises :class:`~ksds.DuplicateKeyError`.

        O(L log n) plus, on a split, O(records of a CI) (CI split) or O(CIs of a CA) (CA split).
        """
        self._by_record(record, False, self._write)

    def _write(self, p: Pager, key: bytes, record: bytes) -> None:
        aixes = p.state.aixes
        if aixes:
            aix.check_write(p, None, record)  # a unique alternate key taken: nothing changed yet
        try:
            at_end = btree.insert(p.base, key, record, self._last_write)
        except DuplicateKeyError:
            raise
        except BaseException as e:
            self._fail(p, e)
            raise
        if aixes:
            self._aixes_follow(p, None, record)
        st = p.state
        st.rec_total += 1
        if not at_end:
            st.rec_inserted += 1
        self._last_write = key
        self._done(p)

    def rewrite(self, record: bytes) -> None:
        """REWRITE the record whose key is the key field of ``record``. Raises :class:`~ksds.RecordNotFoundError`."""
        self._by_record(record, True, self._rewrite)

    def _rewrite(self, p: Pager, key: bytes, record: bytes) -> None:
        if not self._replace(p, key, record):
            raise RecordNotFoundError(f"{self.path}: no record with key {show_key(key)} to rewrite")

    def erase(self, key: bytes) -> None:
        """ERASE the record with key ``key``. Raises :class:`~ksds.RecordNotFoundError`.

        A CI left empty goes back to its CA's free CIs; a CA left empty is freed (CA reclaim).
        """
        m = self._s.mutex
        if not m.acquire(False):
            self._s.wait_turn()
        try:
            p = self._writable()
            key = self._key(key)
            if p.shared:
                self._update(p, key, True, self._erase, p, key)
            else:
                self._erase(p, key)
        finally:
            m.release()

    def _erase(self, p: Pager, key: bytes) -> None:
        old = btree.find(p.base, key) if p.state.aixes else None
        try:
            btree.delete(p.base, key)
        except RecordNotFoundError:
            raise  # found before anything changed
        except BaseException as e:
            self._fail(p, e)
            raise
        if old is not None:
            self._aixes_follow(p, old, None)
        st = p.state
        st.rec_total -= 1
        st.rec_deleted += 1
        self._done(p)

    def _position(
        self, key: bytes | None, gteq: bool, generic: bool, backward: bool
    ) -> Position | None:
        """Where a browse starts; raises RecordNotFoundError for an EQUAL or GENERIC start that is not there."""
        p = self._open()
        if key is None:
            return btree.seek_le(p.base, self._max) if backward else btree.seek_ge(p.base, self._min)
        k = self._key(key, generic)
        if generic:
            if backward:
                pos = btree.seek_le(p.base, k.ljust(self._kl, b"\xff"))
            else:
                pos = btree.seek_ge(p.base, k.ljust(self._kl, b"\0"))
            if not gteq and (pos is None or not pos[1].key_at(pos[2]).startswith(k)):
                raise RecordNotFoundError(f"{self.path}: no record with a key starting {show_key(k)}")
            return pos
        pos = btree.seek_le(p.base, k) if backward else btree.seek_ge(p.base, k)
        if not gteq and (pos is None or pos[1].key_at(pos[2]) != k):
            raise RecordNotFoundError(f"{self.path}: no record with key {show_key(k)} to start a browse")
        return pos

    @_serialised
    def browse(
        self,
        key: bytes | None = None,
        *,
        gteq: bool = True,
        generic: bool = False,
        backward: bool = False,
        stop: bytes | None = None,
        prefix_only: bool = False,
    ) -> Browse:
        """A browse (STARTBR): an iterator over records in key order, forward or ``backward``.

        It starts at the first record (``key`` None; the last, backward), at ``key`` (EQUAL, ``gteq=False``),
        at the first record >= ``key`` (``gteq``; backward: the last record <= ``key``), or at the first
        record whose key starts with the prefix ``key`` (``generic``; backward: the last). It then runs to the
        end of the data set. Raises :class:`~ksds.RecordNotFoundError` at once for an EQUAL start that is not
        there. Several browses may be open at once; each stays correct when records are written or erased
        around it (it carries on after the last record it returned). ``reposition`` moves it (RESETBR).
        Each step is O(1) amortised. In shared mode each step runs under the latch and sees what other processes
        committed before it.

        ``stop``: an exclusive end key: a forward browse ends before the first record whose key is >= ``stop``, a
        backward one before the first whose key is <= ``stop``. ``prefix_only`` (with ``generic``): end where the
        records with the prefix ``key`` end (``browse(b"AB", generic=True, prefix_only=True)`` returns exactly the
        keys that start with ``AB``). Stopping costs nothing per record (one binary search per CI).
        """
        if stop is not None:
            stop = self._key(stop)
        if prefix_only:
            if not generic or key is None:
                raise InvalidRequestError(f"{self.path}: prefix_only=True needs generic=True and a prefix key")
            if stop is not None:
                raise InvalidRequestError(f"{self.path}: give stop or prefix_only, not both")
            prefix = self._key(key, True)
            stop = _prefix_end(prefix, self._kl, backward)
        return Browse(self._s, key, gteq=gteq, generic=generic, backward=backward, stop=stop)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.browse())  # the browse's own generator: records pass through without a call each

    @_serialised
    def __len__(self) -> int:
        p = self._open()
        if p.shared:
            self._latched(p, False, lambda: None)
        return p.state.rec_total

    # --- alternate indexes -----------------------------------------------------------------------------------

    @_serialised
    def aixes(self) -> dict[str, dict[str, Any]]:
        """The data set's alternate indexes, by name: their definitions (``key_length``, ``key_offset``,
        ``unique``, ``upgrade``), whether each is ``current`` (in step with the base), and their trees' statistics
        (``records``, ``levels``, ``data_cis``, ``index_cis``, ``cas``, ``splits_ci``, ``splits_ca``). O(A)."""
        p = self._open()
        if p.shared:
            self._latched(p, False, lambda: None)
        return {a.name: aix.describe(a, p.defn) for a in p.state.aixes}

    @_serialised
    def aix(self, name: str) -> Path:
        """A PATH: the base's records reached by the alternate key of alternate index ``name`` (reads, browses,
        counts; see :class:`~ksds.path.Path`). :class:`~ksds.InvalidRequestError` if there is none. O(A)."""
        p = self._open()
        if p.shared:
            self._latched(p, False, aix.find, p, name)
        else:
            aix.find(p, name)
        return Path(self._s, name)

    def _define_aix(
        self, name: object, key_length: object, key_offset: object, unique: bool, upgrade: bool,
        freespace: tuple[int, int], progress: Callable[[int, int], None] | None,
    ) -> dict[str, Any]:
        """DEFINE ALTERNATEINDEX + BLDINDEX, holding the open (and in shared mode the latch) throughout."""
        with self.batch():
            p = self._writable()
            a = aix.define(p, name, key_length, key_offset, unique, upgrade, freespace)
            aix.build(p, a, p.commit, progress=progress)
            self._s.mod += 1
            return aix.describe(a, p.defn)

    def _build_aix(self, name: str, progress: Callable[[int, int], None] | None) -> dict[str, Any]:
        with self.batch():
            p = self._writable()
            a = aix.find(p, name)
            aix.build(p, a, p.commit, progress=progress)
            self._s.mod += 1
            return aix.describe(a, p.defn)

    def _delete_aix(self, name: str) -> None:
        with self.batch():
            p = self._writable()
            aix.delete(p, aix.find(p, name))
            self._s.mod += 1

    # --- batches, sync, close ----------------------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[Dataset]:
        """Group requests into one transaction: one log write (and one sync in power mode) when the block ends.

        The requests are acknowledged together when the block ends; if the block raises, none of them happened.
        A request that fails with a request error (duplicate key, not found, ...) changes nothing and the
        batch goes on. Nested batches join the outermost one; an inner batch whose block raises undoes the whole
        batch (the outer one then ends with an error even if it caught the exception). :meth:`close` inside the
        block rolls the batch back, and the block's end says so (:class:`~ksds.DatasetClosedError`). While a
        batch is open its changed CIs stay in memory, above the buffer pool budget.

        Threads: the batch holds this open from start to end; other threads' requests on it wait until it ends.
        Shared mode: the batch holds the exclusive latch from start to end (other processes wait), and with RLS
        a record lock it cannot have at once fails with :class:`~ksds.RecordLockedError` instead of waiting; its
        record locks are released when it ends.
        """
        self._s.acquire()  # held until the batch ends: the batch belongs to this thread
        try:
            p = self._writable()
            outer = self._batch == 0
            if outer and p.shared:
                p.begin(True)
                if p.view_changed:
                    self._s.mod += 1
        except BaseException:
            self._s.release()
            raise
        self._batch += 1
        try:
            try:
                yield self
            except BaseException as e:
                if self._s.pager is not p:
                    raise  # closed inside the block: close() rolled the batch back
                self._batch -= 1
                if self._batch == 0:
                    p.rollback()
                    self._s.mod += 1
                    self._broken = None
                elif self._broken is None:
                    # an inner batch failed: its requests are undone now, and so is the outer batch when it ends
                    p.rollback()
                    self._s.mod += 1
                    self._broken = e
                raise
            if self._s.pager is not p:
                raise DatasetClosedError(f"{self.path} was closed inside the batch: its requests were rolled back")
            self._batch -= 1
            if self._batch == 0:
                broken = self._broken
                self._broken = None
                if broken is not None:
                    raise KsdsError(f"{self.path}: the batch was rolled back after an error: {broken}")
                try:
                    p.commit()
                except BaseException as e:
                    self._fail(p, e)
                    raise
        finally:
            try:
                if outer and self._s.pager is p:
                    # record locks first: a process waiting for one then finds the latch free soon after
                    if self._locks is not None:
                        for k in self._batch_locks:
                            self._locks.unlock(k)
                    self._batch_locks.clear()
                    if p.shared:
                        p.end()
            finally:
                self._s.release()

    @_serialised
    def sync(self) -> None:
        """Put every request acknowledged so far on stable storage (one log sync). A no-op for mode "r"."""
        p = self._open()
        if self._batch:
            raise InvalidRequestError(f"{self.path}: sync() inside a batch; the batch syncs when it ends")
        if self.mode == "rw":
            p.sync()

    @_serialised
    def checkpoint(self) -> None:
        """Write everything into the data set file and start a new log (done automatically; rarely needed)."""
        p = self._writable()
        if self._batch:
            raise InvalidRequestError(f"{self.path}: checkpoint() inside a batch")
        self._latched(p, True, p.checkpoint)

    @_serialised
    def alter(
        self, *, freespace: tuple[int, int] | None = None, share_options: tuple[int, int] | None = None
    ) -> None:
        """ALTER the attributes that can change: FREESPACE and SHAREOPTIONS."""
        p = self._writable()
        self._latched(p, True, self._alter, p, freespace, share_options)

    def _alter(
        self, p: Pager, freespace: tuple[int, int] | None, share_options: tuple[int, int] | None
    ) -> None:
        st = p.state
        if freespace is not None:
            st.freespace_ci, st.freespace_ca = check_freespace(freespace)
        if share_options is not None:
            if not p.locks.alone():
                raise DatasetInUseError(
                    f"{self.path} is in use: SHAREOPTIONS can only be altered while no other process has it open"
                )
            st.share_region, st.share_system = check_share_options(share_options)
        p.sync_defn()
        p.state_dirty = True
        self._done(p)

    @_serialised
    def close(self) -> None:
        """Close: an open batch is rolled back; everything else is written and the log removed."""
        p = self._s.pager
        if p is None:
            return
        if self._batch:
            p.rollback()
            self._batch = 0
            self._broken = None
            self._batch_locks.clear()  # released with every other record lock below
        self._s.pager = None
        self._s.mod += 1
        try:
            p.close()
        finally:
            self._release_locks(p)

    def _release_locks(self, p: Pager) -> None:
        if self._locks is not None and self._waiting:
            # another thread waits for a record through these locks: it ends its wait at the next poll and
            # closes them (never under a waiter's feet: their descriptor number could be reused meanwhile)
            self._locks.abort()
            self._closing_locks = self._locks
            self._locks = None
        if self._locks is not None:
            self._locks.close()  # releases its record locks and its registry slot
            self._locks = None

    @_serialised
    def _abandon(self) -> None:
        """Drop the data set as a crash would (no close): for the crash tests."""
        p = self._s.pager
        if p is not None:
            self._s.pager = None
            self._s.mod += 1
            p.abandon()
            self._release_locks(p)

    @property
    def closed(self) -> bool:
        return self._s.pager is None

    def at_path(self) -> bool:
        """Whether the file at this open's path is still the one it has open (False once the data set was removed,
        or removed and defined again, by hand: ``ksds.delete`` refuses while it is open). Two system calls."""
        p = self._s.pager
        return p is not None and same_file(p.fd, self.path)

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._s.pager is None else f"mode={self.mode!r}"
        return f"<ksds.Dataset {self.path!r} {state}>"

    # --- statistics ---------------------------------------------------------------------------------------------

    @_serialised
    def stats(self) -> dict[str, Any]:
        """LISTCAT ALL statistics, keyed by LISTCAT's names (REC-TOTAL, SPLITS-CI, LEVELS, HI-U-RBA, ...)."""
        p = self._open()
        if p.shared:
            self._latched(p, False, lambda: None)
        st = p.state
        while self._s.uncounted:
            st.rec_retrieved += self._s.uncounted.pop()
        return listcat(st, p.defn, p.file_size)

    def log_stats(self) -> dict[str, int]:
        """The write-ahead log as this open sees it: LOG-BYTES (appended since the last checkpoint, header
        included), LOG-GENERATION (one more at each checkpoint; 0 before the first log) and CHECKPOINT-BYTES (the
        size at which a checkpoint runs). O(1)."""
        p = self._open()
        j = p.journal
        return {"LOG-BYTES": max(j.offset, 0), "LOG-GENERATION": j.generation or 0,
                "CHECKPOINT-BYTES": CHECKPOINT_BYTES}


def listcat(st: State, d: Definition, file_size: int) -> dict[str, Any]:
    """LISTCAT ALL's statistics of a data set in state ``st`` (keyed by LISTCAT's names): what
    :meth:`Dataset.stats` returns, and what ``ksds listcat`` shows of a data set read without opening it. O(1)."""
    data_bytes = st.ca_count * d.cis_per_ca * (d.ci_size - CI_TRAILER)
    return {
        "REC-TOTAL": st.rec_total,
        "REC-INSERTED": st.rec_inserted,
        "REC-DELETED": st.rec_deleted,
        "REC-UPDATED": st.rec_updated,
        "REC-RETRIEVED": st.rec_retrieved,
        "SPLITS-CI": st.splits_ci,
        "SPLITS-CA": st.splits_ca,
        "FREESPACE-%CI": st.freespace_ci,
        "FREESPACE-%CA": st.freespace_ca,
        "FREESPC": data_bytes - st.rec_total * d.record_length,
        "LEVELS": st.levels,
        "HI-U-RBA": st.hurba * d.ci_size,
        "HI-A-RBA": file_size,
        "CISIZE": d.ci_size,
        "CI/CA": d.cis_per_ca,
        "KEYLEN": d.key_length,
        "RKP": d.key_offset,
        "MAXLRECL": d.record_length,
        "AVGLRECL": d.record_length,
        "SHROPTNS": (st.share_region, st.share_system),
        "EXCPS": st.excps,
        "CAS": st.ca_count,
        "DATA-CIS": st.data_cis,
        "INDEX-CIS": st.index_cis,
        "FREE-CIS": st.ca_count * d.cis_per_ca - st.data_cis,
        "RECORDS/CI": d.records_per_ci,
        "HI-LEVEL-RBA": st.root * d.ci_size,
        "TXN": st.txn,
    }
