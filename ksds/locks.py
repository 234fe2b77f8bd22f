"""Locks between opens: open-mode locks and the physical-update latch (on the data file), record locks (RLS).

Every lock here is a Linux **open-file-description (OFD) byte-range lock** (``F_OFD_SETLK``). An OFD lock belongs
to one ``open()`` of a file, not to a process: two descriptors opened separately conflict with each other exactly
as two processes do, in one process or across processes, threads included; the kernel sets or refuses a lock
atomically (no in-process table, no race between a check and the lock call), and drops every lock of a
descriptor when it is closed or its process dies (SIGKILL included). Lock bytes lie far beyond the end of the
files (offsets are 64-bit), so the files never grow for them.

* **On the data file** (the descriptor of the data set's :class:`~ksds.pager.Pager`): the share-option checks
  at open (:class:`OpenLocks`) and the **latch** that serialises physical updates (shared for a read,
  exclusive for an update, held for one request or one ``batch()``). A latch wait ends after the open's
  ``lock_timeout`` with :class:`~ksds.LatchTimeoutError` (0 waits forever).
* **On ``PATH.lck``**, opened by each RLS open with a descriptor of its own (:class:`RecordLocks`): so **every RLS
  open is its own lock owner**. Its bytes:

  - ``RECORD_BASE + blake2b-64(key) % RECORD_SPACE``: the record lock of a key (shared for CR/CRE reads,
    exclusive for an update). Two keys can share a byte (false contention, as in RLS's lock table), with odds
    of about n/2**40.
  - ``CLAIM`` (``SLOT_BASE - 1``): the **claim lock**, held exclusively while an open claims a slot and while a
    closing open cuts the registry, so claims never race each other.
  - ``SLOT_BASE + 2k`` and ``SLOT_BASE + 2k + 1``: **slot** k of the wait-for registry. An open, holding the claim
    lock, takes the lowest k whose byte ``SLOT_BASE + 2k`` it can lock exclusively ("owned"), so slot numbers stay
    below the most opens at one time; if no slot above k is owned, the entries from k on are dead and it cuts the
    registry there (``ftruncate`` to entry k: to nothing for slot 0); it writes a clean entry k, locks
    ``SLOT_BASE + 2k + 1`` ("entry k is current") and lets the claim lock go; it keeps both slot bytes for its
    life. Slot k is **live** while ``SLOT_BASE + 2k + 1`` is locked; the kernel frees both when the open closes
    or its process dies, so a dead owner's entry is never mistaken for a live one, not even while a new owner
    of the slot is still cleaning it. An open that closes takes the claim lock (at most 1 s, else it leaves this
    to later opens) and, if no slot above its own is owned, cuts the registry after the highest slot still owned
    below its own (its own entry and the dead ones in between go); it lets the claim lock go with its slot, in
    one unlock. So the registry ends at the highest owned slot (a killed owner's entry lasts until the next
    claim or close with no owned slot above it). A claim that cannot have
    the claim lock within 5 s (its holder was stopped) takes the lowest free slot without it and cuts nothing.
  - data, from offset 0: the **wait-for registry**, entry k at ``ENTRY_SIZE * k`` (:data:`ENTRY_HEAD`, a CRC32,
    then the n held locks listed, 6 bytes each, at most :data:`MAX_HELD`; see docs/file-format.md for the
    fields).

Deadlocks. An owner that must wait for a record lock writes into its entry (one ``pwrite``) its owner id
(``pid << 32 | serial``, unique per open), the byte it waits for and in which mode, a wait serial, and every
record lock it holds: a waiting owner neither takes nor releases locks, so that list is exact for the whole wait.
Before each retry it reads the registry (an ``fstat`` and one ``pread``) and searches for a cycle from itself:
byte waited for -> the waiting owners that hold it in a conflicting mode -> the byte each of those waits for ->
... -> a byte it holds itself. It only follows owners whose id is lower than its own, so it finds a cycle exactly
when it has the highest id in it, and that owner is the **one victim**: it gets :class:`~ksds.DeadlockError`
(its caller releases its record locks). An owner that is not waiting is in no cycle (it is running). A cycle is
confirmed before anyone is chosen: every member's slot is live at the first sighting, and the next round (one
``pread`` later) finds the same owners in the same waits (same ids and wait serials). Each member was then
waiting through the whole interval between the two reads, holding the locks its entry lists, so at one instant
all of them were stuck on each other: a real deadlock, not a phantom made of entries read at different times.
Entries carry a CRC32 (a read torn by a concurrent write is ignored for that round).

An owner holding more record locks than an entry lists (:data:`MAX_HELD`, 165) lists instead, flagged
**partial**, those of its locks that conflict with what other waiters wait for, as of its own last read of the
registry: it reads the registry once before it writes its entry, and at each poll (which reads it anyway)
rewrites the entry (one ``pwrite``, same wait serial) when that set changed. That is all a cycle search asks of
it (only bytes that someone waits for are looked up), and every lock listed is still held for the whole wait,
so the search stays exact: an owner is never taken for the holder of a lock it does not hold (no phantom
victim), and a cycle through it is found once it has polled after the other members started waiting (a few ms
later). Only when more than 165 of its locks are waited for at once are some left out: a deadlock through
those is not seen and ends by lock timeout.

Record-lock waits end after ``timeout`` seconds with :class:`~ksds.RecordLockedError` (RLSTMOUT; 0 waits
forever). OFD locks do not tell who holds them (``F_OFD_GETLK`` and ``/proc/locks`` report pid -1), but
``/proc/PID/fdinfo/FD`` lists the locks of each descriptor: the messages of a timeout or a refused no-wait lock
name the holder found there (only then; it costs a scan of ``/proc``).

An open is not shared across ``fork()``: a child inherits the open file descriptions, and with them the parent's
locks (:meth:`RecordLocks.close` unlocks everything before closing, so a child's copy does not keep them).

**Other platforms.** :data:`OpenLocks` is the open-mode locks' class for this process, chosen once at import
(:data:`IMPLEMENTATION`): :class:`OFDOpenLocks` (above) where the system has OFD locks, else
:class:`~ksds.portable_locks.PortableOpenLocks` (``flock`` lock files in ``PATH.locks/`` through portalocker: macOS,
the BSDs); ``KSDS_LOCKS=portable`` forces the latter on Linux, for testing. Both have the same interface
(acquire, announce_power, power_users, alone, latch, unlatch, close, remove_files). Record locks stay OFD-only
(:data:`RLS_AVAILABLE`). Importing this module on a system without ``fcntl`` or ``os.pread``/``os.pwritev``
(Windows) raises one ``ImportError`` that says so.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import struct
import sys
import time
import zlib
from dataclasses import dataclass

from .errors import (
    DatasetClosedError,
    DatasetInUseError,
    DeadlockError,
    KsdsError,
    LatchTimeoutError,
    RecordLockedError,
    show_key,
)
from .lockbytes import (
    BUSY as _BUSY,
)
from .lockbytes import FLOCK as _FLOCK
from .lockbytes import (
    HAVE_OFD,
    LATCH,
    NONRLS_OUTPUT,
    NONRLS_UNSHARED,
    OPEN_ANY,
    PORTABLE_OPEN,
    POWER_OPEN,
    RLS_OPEN,
    SHM_NONE,
    SHM_USER,
    UPDATER,
    describe_holders,
    fcntl,  # the module, once lockbytes has refused (in words) a system that has none
    lock_holders,
    remove_lock_dir,
)
from .lockbytes import flock_arg as _flock
from .lockbytes import holder as _holder
from .lockbytes import try_lock as _try

# --- record locks: byte offsets (lock file) ----------------------------------------------------------------------

SLOT_BASE = 1 << 40  # lock file: slot k owned through byte SLOT_BASE + 2k, live through SLOT_BASE + 2k + 1
CLAIM = SLOT_BASE - 1  # lock file: held exclusively while an open claims a slot, or a closing one shrinks the registry
RECORD_BASE = 1 << 41  # lock file: record locks
RECORD_SPACE = 1 << 40
ENTRY_SIZE = 1024  # lock file data: registry entry k at offset ENTRY_SIZE * k
#: owner id, pid, wait serial, byte waited for (0: not waiting), exclusive wanted, partial list, listed count
ENTRY_HEAD = struct.Struct(">QIIQBBH")
_CRC = struct.Struct(">I")  # after ENTRY_HEAD: CRC32 of the head and the held list
_HELD_AT = ENTRY_HEAD.size + _CRC.size  # 32
_HELD_SIZE = 6  # a held lock: bit 47 exclusive, bits 0-39 the byte's offset from RECORD_BASE
_HELD_X = 1 << 47
MAX_HELD = (ENTRY_SIZE - _HELD_AT) // _HELD_SIZE  # 165: the most held locks an entry lists


# --- open-mode locks and the latch (data file) ---------------------------------------------------------------------

_LATCH_X = _flock(fcntl.F_WRLCK, LATCH)
_LATCH_S = _flock(fcntl.F_RDLCK, LATCH)
_LATCH_U = _flock(fcntl.F_UNLCK, LATCH)
_ANY_OPEN = _flock(fcntl.F_WRLCK, OPEN_ANY, PORTABLE_OPEN - OPEN_ANY + 1)
_LATCH_SPIN = 0.0003  # latch wait: seconds of tries with a yield between, before the sleeps
_LATCH_FIRST_DELAY = 0.00005  # latch poll: the first sleep, doubled up to the cap
_LATCH_MAX_DELAY = 0.002


def _try_set(fd: int, req: bytes) -> bool:
    """Set the OFD lock ``req`` (a packed ``struct flock``) without waiting: whether it was set."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, req)
        return True
    except OSError as e:
        if e.errno not in _BUSY:
            raise
        return False


class OFDOpenLocks:
    """The open-time share checks and the latch, on one data-file descriptor (OFD byte-range locks, Linux)."""

    def __init__(self, fd: int, path: str, can_write: bool = True) -> None:
        self.fd = fd
        self.path = path
        #: the descriptor is open for writing: exclusive locks are possible (a read-only file gets shared ones)
        self.can_write = can_write

    def _in_use(self, why: str) -> DatasetInUseError:
        return DatasetInUseError(f"{self.path} is in use: {why}")

    def acquire(self, *, writable: bool, rls: bool, share_region: int) -> bool:
        """Take the locks an open needs, or raise DatasetInUseError. Returns whether we are the only opener.

        Call it holding the latch exclusively (:meth:`latch`), as the caller must to read the header too, so
        that no open check, header read or recovery races another open or a checkpoint.
        """
        fd = self.fd
        set_, get = fcntl.F_OFD_SETLK, fcntl.F_OFD_GETLK
        alone = _holder(fd, get, fcntl.F_WRLCK, OPEN_ANY) is None
        if rls:
            if _holder(fd, get, fcntl.F_WRLCK, NONRLS_OUTPUT) is not None:
                raise self._in_use("it is open for update without RLS (an RLS open needs none)")
            if _holder(fd, get, fcntl.F_WRLCK, NONRLS_UNSHARED) is not None:
                raise self._in_use("it is open without RLS and without SHAREOPTIONS(2) (RLS cannot join that)")
            if not _try(fd, set_, fcntl.F_RDLCK, OPEN_ANY):
                raise self._in_use("another process has it open with SHAREOPTIONS(1) for update")
            _try(fd, set_, fcntl.F_RDLCK, RLS_OPEN)
            self._no_portable_opens()
            return alone
        rls_open = _holder(fd, get, fcntl.F_WRLCK, RLS_OPEN) is not None
        if rls_open and (writable or share_region != 2):
            raise self._in_use(
                "it is open in RLS mode; without RLS it can only be read, and only with SHAREOPTIONS(2)"
            )
        if writable and share_region == 1:
            if not _try(fd, set_, fcntl.F_WRLCK, OPEN_ANY):
                raise self._in_use("another process has it open (SHAREOPTIONS(1): one updater or many readers)")
        elif not _try(fd, set_, fcntl.F_RDLCK, OPEN_ANY):
            raise self._in_use("another process has it open for update with SHAREOPTIONS(1)")
        if writable:
            if share_region == 2 and not _try(fd, set_, fcntl.F_WRLCK, UPDATER):
                raise self._in_use("another process has it open for update (SHAREOPTIONS(2): one updater)")
            _try(fd, set_, fcntl.F_RDLCK, NONRLS_OUTPUT)
        if share_region != 2:
            _try(fd, set_, fcntl.F_RDLCK, NONRLS_UNSHARED)
        self._no_portable_opens()
        return alone

    def _no_portable_opens(self) -> None:
        """Refuse while opens with the portable locks use the data set (they cannot see ours). Tested after
        OPEN_ANY is ours, as they set PORTABLE_OPEN before they test OPEN_ANY: of two racing opens, one sees the
        other (see :mod:`ksds.portable_locks`)."""
        if _holder(self.fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, PORTABLE_OPEN) is not None:
            raise self._in_use(
                "it is open by a process that uses the portable locks (KSDS_LOCKS=portable), which do not see "
                "the OFD locks: every process of a data set must use the same locks"
            )

    def announce_power(self) -> None:
        """This open promises power-safe requests: every process's checkpoints must sync the data file."""
        _try(self.fd, fcntl.F_OFD_SETLK, fcntl.F_RDLCK, POWER_OPEN)

    def power_users(self) -> bool:
        """Whether any open (ours included) has durability "power"."""
        return _holder(self.fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, POWER_OPEN) is not None

    #: these locks can tell which opens map the shared-state file (:mod:`ksds.coherence`)
    supports_shared_state = True

    def shared_state_users(self) -> tuple[bool, bool]:
        """(another open maps the shared-state file, another open can write the data set without one)."""
        get = fcntl.F_OFD_GETLK
        return (
            _holder(self.fd, get, fcntl.F_WRLCK, SHM_USER) is not None,
            _holder(self.fd, get, fcntl.F_WRLCK, SHM_NONE) is not None,
        )

    def announce_shared_state(self, mapped: bool) -> None:
        """This open maps the shared-state file (``mapped``), or can write the data set without one."""
        _try(self.fd, fcntl.F_OFD_SETLK, fcntl.F_RDLCK, SHM_USER if mapped else SHM_NONE)

    def alone(self) -> bool:
        """Whether no other open of the data set exists (ours aside): no other lock on OPEN_ANY ... PORTABLE_OPEN
        (every OFD open holds OPEN_ANY, every portable one PORTABLE_OPEN); one ``F_OFD_GETLK`` over the range."""
        out = fcntl.fcntl(self.fd, fcntl.F_OFD_GETLK, _ANY_OPEN)
        return bool(_FLOCK.unpack_from(out, 0)[0] == fcntl.F_UNLCK)

    def close(self) -> None:
        """Nothing to do: closing the data file drops every lock of the open (the pager does)."""

    def remove_files(self) -> list[str]:
        """``ksds.delete``: remove the lock files of the portable locks, left by an earlier use (the paths removed)."""
        return remove_lock_dir(self.path)

    def latch(self, exclusive: bool, timeout: float = 0.0) -> None:
        """Take the physical-update latch: at once if it is free (one system call), else wait for it, at most
        ``timeout`` seconds (0: forever), then :class:`~ksds.LatchTimeoutError`.

        A bounded wait tries again at once for 300 us (yielding the CPU between tries), then polls with a short
        backoff (50 us doubling to 2 ms: a latch is normally held for one request); an unbounded one blocks in the
        kernel (``F_OFD_SETLKW``).
        """
        req = _LATCH_X if exclusive and self.can_write else _LATCH_S
        fd = self.fd
        if _try_set(fd, req):
            return
        if timeout <= 0:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, req)
            return
        now = time.monotonic()
        deadline = now + timeout
        # a latch is normally held for one request (tens of us): try again at once for a moment, yielding the CPU
        # to the holder in between, before sleeping (a sleep takes 60 us or more on Linux)
        spin_end = now + min(_LATCH_SPIN, timeout)
        while time.monotonic() < spin_end:
            os.sched_yield()
            if _try_set(fd, req):
                return
        delay = _LATCH_FIRST_DELAY
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._latch_timeout(req is _LATCH_X, timeout)
            time.sleep(min(delay, left))
            delay = min(delay * 2, _LATCH_MAX_DELAY)
            if _try_set(fd, req):
                return

    def _latch_timeout(self, exclusive: bool, timeout: float) -> LatchTimeoutError:
        who = describe_holders(lock_holders(self.fd, LATCH, exclusive))
        return LatchTimeoutError(
            f"{self.path}: the latch (the lock that serialises updates of the data set) is still held by {who} "
            f"after {timeout:g}s; another open probably holds a batch() open for a long time (a batch keeps the "
            f"latch from start to end): end batches sooner, or raise lock_timeout (0 waits forever)"
        )

    def unlatch(self) -> None:
        fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, _LATCH_U)


# --- record locks (lock file) ----------------------------------------------------------------------------------------


def key_byte(key: bytes) -> int:
    """The lock byte of a record key."""
    h = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    return RECORD_BASE + h % RECORD_SPACE


#: how many keys' lock bytes an open remembers (a unit of work asks for one key's byte 3 or 4 times)
_BYTES_KEPT = 1024


_serial = itertools.count(1)  # next() is atomic under the GIL: owner ids stay unique between threads
_UNLOCK_RECORDS = _flock(fcntl.F_UNLCK, RECORD_BASE, RECORD_SPACE)
_UNLOCK_ALL = _flock(fcntl.F_UNLCK, 0, 0)  # length 0: to the end of every possible offset
_WAIT_FIRST_DELAY = 0.0002  # record-lock poll: the first sleep, doubled up to the cap
_WAIT_MAX_DELAY = 0.01
_CLAIM_X = _flock(fcntl.F_WRLCK, CLAIM)
_CLAIM_U = _flock(fcntl.F_UNLCK, CLAIM)
_CLAIM_WAIT = 5.0  # an open waits this long for the claim lock (held for a few system calls), then claims without
_SHRINK_WAIT = 1.0  # a closing open waits this long for it to shrink the registry, then leaves that to others


@dataclass(slots=True, eq=False)
class _Waiter:
    """A registry entry of another owner that is waiting (as read from the lock file)."""

    slot: int
    owner: int
    pid: int
    seq: int
    want: int  # the lock byte it waits for
    want_x: bool  # ... exclusively
    partial: bool  # it holds more than MAX_HELD locks: ``held`` lists those that other waiters wait for
    held: dict[int, bool]  # lock byte -> exclusive? (each held by it for the whole wait)


def _entry(
    owner: int, pid: int, seq: int, want: int, want_x: bool, held: dict[int, bool], partial: bool = False
) -> bytes:
    """A registry entry (see the module docstring); ``want`` 0: not waiting. Lists at most MAX_HELD of ``held``."""
    items = list(held.items())[:MAX_HELD] if want else []
    body = b"".join(((_HELD_X if x else 0) | (b - RECORD_BASE)).to_bytes(_HELD_SIZE, "big") for b, x in items)
    head = ENTRY_HEAD.pack(owner, pid & 0xFFFFFFFF, seq, want, want_x, want != 0 and partial, len(items))
    return head + _CRC.pack(zlib.crc32(body, zlib.crc32(head))) + body


def _range_free(fd: int, start: int, length: int) -> bool:
    """Whether no other open holds a lock on any byte of ``length`` bytes from ``start`` (one ``F_OFD_GETLK``)."""
    out = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock(fcntl.F_WRLCK, start, length))
    return bool(_FLOCK.unpack_from(out, 0)[0] == fcntl.F_UNLCK)


def _take_claim(fd: int, patience: float) -> bool:
    """Take the claim lock, waiting at most ``patience`` seconds (polling: a claim holds it for a few system
    calls, and no open may hang behind a stopped process). Whether we have it."""
    deadline = time.monotonic() + patience
    delay = _LATCH_FIRST_DELAY
    while True:
        if _try_set(fd, _CLAIM_X):
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(delay, left))
        delay = min(delay * 2, _LATCH_MAX_DELAY)


class RecordLocks:
    """The record locks of one open (its own descriptor of ``PATH.lck``, its own slot in the registry).

    Not thread-safe by itself: one object per open, used by one thread at a time (its Dataset's mutex).
    """

    #: set by :meth:`abort`: the open is closing, and a wait in progress ends with DatasetClosedError
    aborted = False

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock_path = path + ".lck"
        self.owner = os.getpid() << 32 | (next(_serial) & 0xFFFFFFFF)
        self.pid = os.getpid()
        #: lock byte -> exclusive?, for every record lock this open holds
        self.mine: dict[int, bool] = {}
        self._bytes: dict[bytes, int] = {}
        self._seq = 0
        try:
            self.fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise KsdsError(f"{path}: cannot open its lock file {self.lock_path}: {e.strerror}") from e
        try:
            self.slot = self._claim()
        except BaseException as e:
            os.close(self.fd)
            self.fd = -1
            if isinstance(e, OSError):
                raise KsdsError(f"{path}: cannot use its lock file {self.lock_path}: {e.strerror}") from e
            raise

    def _claim(self) -> int:
        """Take the lowest free slot, holding the claim lock: its owner byte, a clean entry, its "live" byte.

        Claims are serialised, so the lowest free slot is at most the number of owned slots: slot numbers stay
        below the most opens at one time. If no slot above ours is owned, the entries beyond ours are dead ones:
        the registry is cut there first (to nothing when we take slot 0).
        """
        fd = self.fd
        serialised = _take_claim(fd, _CLAIM_WAIT)  # else (a claimer stopped for seconds) claim without it
        try:
            k = 0
            while not _try(fd, fcntl.F_OFD_SETLK, fcntl.F_WRLCK, SLOT_BASE + 2 * k):
                k += 1
            above = SLOT_BASE + 2 * k + 2
            if serialised and _range_free(fd, above, RECORD_BASE - above):
                os.ftruncate(fd, ENTRY_SIZE * k)
            os.pwrite(fd, _entry(self.owner, self.pid, 0, 0, False, {}), ENTRY_SIZE * k)
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_WRLCK, SLOT_BASE + 2 * k + 1))
        finally:
            if serialised:
                fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _CLAIM_U)
        return k

    def _shrink(self, fd: int) -> None:
        """At close, holding the claim lock (so that no slot is claimed meanwhile), if ours is the highest owned
        slot: cut the registry after the highest other owned slot (dropping ours and the dead entries below it).
        The caller lets the claim lock go together with our slot (one unlock): of two opens closing at once, the
        second sees the first one's slot free. Nothing if the claim lock stays busy."""
        if not _take_claim(fd, _SHRINK_WAIT):
            return
        above = SLOT_BASE + 2 * self.slot + 2
        if not _range_free(fd, above, RECORD_BASE - above):
            return  # a slot above is owned: its close does it
        k = self.slot
        while k > 0 and _range_free(fd, SLOT_BASE + 2 * (k - 1), 1):
            k -= 1
        os.ftruncate(fd, ENTRY_SIZE * k)

    def close(self) -> None:
        """Release every lock of this open and its slot (shrinking the registry first if ours is the highest
        slot), and close the descriptor."""
        self.mine.clear()
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                self._shrink(fd)
            except OSError:
                pass  # best effort: a later claim or close cuts the registry
            finally:
                try:
                    # the close alone would not drop them while a forked child still shares the open file
                    # description
                    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _UNLOCK_ALL)
                finally:
                    os.close(fd)

    def abort(self) -> None:
        """End any wait in progress (at its next poll) with :class:`~ksds.DatasetClosedError`: the open closes once
        the waiter has left (:meth:`close` is deferred until then by the caller)."""
        self.aborted = True

    def holds(self, key: bytes, exclusive: bool = True) -> bool:
        mode = self.mine.get(self._byte(key))
        return mode is not None and (mode or not exclusive)

    def lock(self, key: bytes, exclusive: bool, timeout: float, wait: bool = True) -> None:
        """Take (or upgrade to) a record lock; wait up to ``timeout`` s (0: forever) unless ``wait`` is False."""
        b = self._byte(key)
        have = self.mine.get(b)
        if have is not None and (have or not exclusive):
            return
        req = _flock(fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK, b)
        try:
            fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, req)
            self.mine[b] = exclusive
            return
        except OSError as e:
            if e.errno not in _BUSY:
                raise
        if not wait:
            raise RecordLockedError(
                f"{self.path}: record {show_key(key)} is locked by {self._who(b, exclusive)} (no wait)"
            )
        self._wait(key, b, exclusive, req, timeout)

    def _wait(self, key: bytes, b: int, exclusive: bool, req: bytes, timeout: float) -> None:
        deadline = None if timeout <= 0 else time.monotonic() + timeout
        self._seq = self._seq % 0xFFFFFFFF + 1
        at = ENTRY_SIZE * self.slot
        # More held locks than an entry lists: list those that other waiters wait for, kept current at each poll
        partial = len(self.mine) > MAX_HELD
        listed = self._wanted_of_mine(self._registry()[1]) if partial else self.mine
        os.pwrite(self.fd, _entry(self.owner, self.pid, self._seq, b, exclusive, listed, partial), at)
        delay = _WAIT_FIRST_DELAY
        candidate: list[_Waiter] | None = None  # a cycle seen in the last round, to confirm in this one
        try:
            while True:
                waiters, wanted = self._registry()
                if partial and (now := self._wanted_of_mine(wanted)) != listed:
                    listed = now
                    os.pwrite(self.fd, _entry(self.owner, self.pid, self._seq, b, exclusive, listed, True), at)
                if candidate is not None:
                    if all(
                        (w := waiters.get(c.slot)) is not None and (w.owner, w.seq) == (c.owner, c.seq)
                        for c in candidate
                    ):
                        holder = candidate[0]
                        raise DeadlockError(
                            f"{self.path}: deadlock waiting for record {show_key(key)} held by "
                            f"{describe_holders([holder.pid])} (which waits for a record this open holds"
                            f"{'' if len(candidate) == 1 else f', through {len(candidate) - 1} other waiters'}); "
                            f"this request was chosen to break it (its record locks are released)"
                        )
                    candidate = None
                cycle = self._cycle(b, exclusive, waiters)
                if cycle is not None and all(self._live(w.slot) for w in cycle):
                    candidate = cycle
                if deadline is not None and time.monotonic() >= deadline:
                    raise RecordLockedError(
                        f"{self.path}: record {show_key(key)} still locked by {self._who(b, exclusive)} after "
                        f"{timeout:g}s (lock timeout)"
                    )
                if self.aborted:
                    raise DatasetClosedError(
                        f"{self.path} was closed (by another thread) while this request waited for record "
                        f"{show_key(key)}"
                    )
                time.sleep(delay)
                delay = min(delay * 2, _WAIT_MAX_DELAY)
                try:
                    fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, req)
                    self.mine[b] = exclusive
                    return
                except OSError as e:
                    if e.errno not in _BUSY:
                        raise
        finally:
            if self.fd >= 0:
                os.pwrite(self.fd, _entry(self.owner, self.pid, self._seq, 0, False, {}), at)

    def _who(self, b: int, exclusive: bool) -> str:
        return describe_holders(lock_holders(self.fd, b, exclusive))

    def _byte(self, key: bytes) -> int:
        """:func:`key_byte`, remembered for the last keys asked (a blake2b costs about 1 us). O(1)."""
        b = self._bytes.get(key)
        if b is None:
            if len(self._bytes) >= _BYTES_KEPT:
                self._bytes.clear()
            b = self._bytes[key] = key_byte(key)
        return b

    def unlock(self, key: bytes) -> None:
        b = self._byte(key)
        if self.mine.pop(b, None) is not None:
            fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_UNLCK, b))

    def unlock_all(self) -> None:
        if self.mine:
            self.mine.clear()
            fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, _UNLOCK_RECORDS)  # every record byte in one call

    # --- deadlock detection ------------------------------------------------------------------------------------

    def _live(self, slot: int) -> bool:
        return _holder(self.fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, SLOT_BASE + 2 * slot + 1) is not None

    def _wanted_of_mine(self, wanted: dict[int, bool]) -> dict[int, bool]:
        """The record locks we hold that conflict with what other waiters wait for (at most MAX_HELD)."""
        mine = self.mine
        out: dict[int, bool] = {}
        for byte, want_x in wanted.items():
            mode = mine.get(byte)
            if mode is not None and (mode or want_x):
                out[byte] = mode
                if len(out) == MAX_HELD:
                    break
        return out

    def _registry(self) -> tuple[dict[int, _Waiter], dict[int, bool]]:
        """Read the registry: its waiting owners with a lower id than ours (the only ones our cycle search
        follows), and what every other waiter waits for (lock byte -> exclusively, by any of them)."""
        size = os.fstat(self.fd).st_size
        data = os.pread(self.fd, size, 0)
        out: dict[int, _Waiter] = {}
        wanted: dict[int, bool] = {}
        me = self.owner
        for slot, at in enumerate(range(0, len(data) - _HELD_AT + 1, ENTRY_SIZE)):
            owner, pid, seq, want, want_x, partial, n = ENTRY_HEAD.unpack_from(data, at)
            if not want or slot == self.slot:
                continue
            # (heads unchecked: a torn one can only make a partial waiter list a lock it does hold)
            wanted[want] = bool(want_x) or wanted.get(want, False)
            if owner >= me:
                continue
            body = data[at + _HELD_AT : at + _HELD_AT + _HELD_SIZE * n]
            (crc,) = _CRC.unpack_from(data, at + ENTRY_HEAD.size)
            if len(body) != _HELD_SIZE * n or zlib.crc32(body, zlib.crc32(data[at : at + ENTRY_HEAD.size])) != crc:
                continue  # torn by a concurrent write: ignored this round
            held: dict[int, bool] = {}
            for i in range(0, len(body), _HELD_SIZE):
                v = int.from_bytes(body[i : i + _HELD_SIZE], "big")
                held[RECORD_BASE + (v & (RECORD_SPACE - 1))] = bool(v & _HELD_X)
            out[slot] = _Waiter(slot, owner, pid, seq, want, bool(want_x), bool(partial), held)
        return out, wanted

    def _cycle(self, b: int, exclusive: bool, waiters: dict[int, _Waiter]) -> list[_Waiter] | None:
        """A wait-for path from us through ``waiters`` back to a lock we hold (first: who holds ``b``), or None."""
        if not waiters or not self.mine:
            return None
        holders: dict[int, list[tuple[_Waiter, bool]]] = {}
        for w in waiters.values():
            for hb, hx in w.held.items():
                holders.setdefault(hb, []).append((w, hx))

        def blockers(byte: int, want_x: bool, who: _Waiter | None) -> list[_Waiter]:
            return [w for w, hx in holders.get(byte, ()) if (want_x or hx) and w is not who]

        parent: dict[int, _Waiter | None] = {}
        stack: list[_Waiter] = []
        for w in blockers(b, exclusive, None):
            parent[w.slot] = None
            stack.append(w)
        while stack:
            w = stack.pop()
            mode = self.mine.get(w.want)
            if mode is not None and (mode or w.want_x):
                path = [w]
                p = parent[w.slot]
                while p is not None:
                    path.append(p)
                    p = parent[p.slot]
                return path[::-1]
            for nxt in blockers(w.want, w.want_x, w):
                if nxt.slot not in parent:
                    parent[nxt.slot] = w
                    stack.append(nxt)
        return None


# --- the implementation of the open-mode locks, chosen once --------------------------------------------------------


def _choose() -> str:
    """"ofd" on Linux, "portable" where there are no OFD locks, or what ``KSDS_LOCKS`` says (for testing)."""
    want = os.environ.get("KSDS_LOCKS", "")
    if want not in ("", "ofd", "portable"):
        raise ImportError(f"KSDS_LOCKS={want!r}: it may be 'portable' (flock lock files, for testing) or 'ofd'")
    if want == "ofd" and not HAVE_OFD:
        raise ImportError(f"KSDS_LOCKS=ofd: {sys.platform} has no open-file-description locks (F_OFD_SETLK)")
    return want or ("ofd" if HAVE_OFD else "portable")


#: "ofd" (Linux: byte-range OFD locks on the data file, RLS available) or "portable" (flock lock files in
#: PATH.locks/ through portalocker; no RLS). Chosen at import: see the README ("Platforms").
IMPLEMENTATION = _choose()

from .portable_locks import PortableOpenLocks  # noqa: E402 - it uses the helpers above

#: the open-mode locks and latch of this platform (one class for the whole process)
OpenLocks: type[OFDOpenLocks] | type[PortableOpenLocks] = OFDOpenLocks if IMPLEMENTATION == "ofd" else PortableOpenLocks
#: whether sharing="rls" is available (record locks need OFD locks)
RLS_AVAILABLE = IMPLEMENTATION == "ofd"
