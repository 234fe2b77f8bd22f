"""Locks between processes: open-mode locks and the physical-update latch (on the data file), record locks (RLS).

Two kinds of Linux byte-range lock, each where its semantics fit:

* **Open-file-description (OFD) locks on the data file** -- they belong to one ``open()``, so two data sets open
  in one process conflict like two processes, and the kernel drops them when the process dies. Used for
  the share-option checks at open (:class:`OpenLocks`) and for the **latch** that serialises physical
  updates (shared for a read, exclusive for an update, held for one request only).
* **POSIX record locks on ``PATH.lck``** -- the kernel tells who holds a conflicting lock (``F_GETLK`` gives
  the holder's pid), which is what deadlock detection needs. They belong to the process, so the lock file is
  opened once per process (:func:`lock_file`) and conflicts between data sets of one process are settled by
  an in-process table. Dropped by the kernel when the process dies (SIGKILL included).

Lock bytes lie far beyond the end of the files (offsets are 64-bit), so the files never grow for them; the
lock file holds only the wait-for registry (16 bytes per pid, from offset 1 MiB).
A record lock is the byte ``RECORD_BASE + hash(key) % RECORD_SPACE``: two keys can share a byte (false
contention, as in RLS's lock table), with odds of about n/2**40.

Deadlocks: a waiter writes what it waits for into the lock file at ``WAIT_BASE + 16 * pid``; before each
retry it follows holder -> what that holder waits for -> its holder ... and if the chain comes back to itself,
the process with the highest pid in the cycle gives up with :class:`~ksds.DeadlockError` (so exactly one side
does). Waits end after ``timeout`` seconds with :class:`~ksds.RecordLockedError` (RLSTMOUT; 0 waits forever).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import struct
import time
from dataclasses import dataclass, field

from .errors import DatasetInUseError, DeadlockError, RecordLockedError

# --- byte offsets ------------------------------------------------------------------------------------------------

LATCH = 1 << 40  # physical-update latch (data file, OFD)
OPEN_ANY = LATCH + 1  # every open holds it shared; a SHAREOPTIONS(1) updater holds it exclusive
UPDATER = LATCH + 2  # a SHAREOPTIONS(2) updater holds it exclusive
NONRLS_OUTPUT = LATCH + 3  # every non-RLS open for update holds it shared
RLS_OPEN = LATCH + 4  # every RLS open holds it shared
NONRLS_UNSHARED = LATCH + 5  # every non-RLS open without SHAREOPTIONS(2) holds it shared (RLS may not join it)
POWER_OPEN = LATCH + 6  # every open with durability "power" holds it shared: checkpoints then sync the data
RECORD_BASE = 1 << 41  # record locks (lock file, POSIX)
RECORD_SPACE = 1 << 40
WAIT_BASE = 1 << 20  # wait-for registry (lock file data): 16 bytes per pid
WAIT = struct.Struct(">QQ")  # lock byte waited for (0: none), holder pid seen

_FLOCK = struct.Struct("@hhqqi")  # struct flock on Linux (l_type, l_whence, l_start, l_len, l_pid)
_FLOCK_SIZE = 32


def _flock(kind: int, start: int, length: int = 1) -> bytes:
    return _FLOCK.pack(kind, os.SEEK_SET, start, length, 0).ljust(_FLOCK_SIZE, b"\0")


def _try(fd: int, cmd: int, kind: int, start: int) -> bool:
    """Set a lock without waiting; False if another holder conflicts."""
    try:
        fcntl.fcntl(fd, cmd, _flock(kind, start))
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


def _holder(fd: int, cmd: int, kind: int, start: int) -> int | None:
    """Who would stop us taking ``kind`` at ``start``: None if nobody; a pid (-1 for OFD locks)."""
    out = fcntl.fcntl(fd, cmd, _flock(kind, start))
    ltype, _, _, _, pid = _FLOCK.unpack_from(out, 0)
    return None if ltype == fcntl.F_UNLCK else pid


# --- open-mode locks and the latch (OFD, data file) ------------------------------------------------------------------

_LATCH_X = _flock(fcntl.F_WRLCK, LATCH)
_LATCH_S = _flock(fcntl.F_RDLCK, LATCH)
_LATCH_U = _flock(fcntl.F_UNLCK, LATCH)


class OpenLocks:
    """The open-time share checks and the latch, on one data-file descriptor."""

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
        return alone

    def announce_power(self) -> None:
        """This open promises power-safe requests: every process's checkpoints must sync the data file."""
        _try(self.fd, fcntl.F_OFD_SETLK, fcntl.F_RDLCK, POWER_OPEN)

    def power_users(self) -> bool:
        """Whether any open (ours included) has durability "power"."""
        return _holder(self.fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, POWER_OPEN) is not None

    def alone(self) -> bool:
        """Whether no other open of the data set exists (ours aside)."""
        return _holder(self.fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, OPEN_ANY) is None

    def latch(self, exclusive: bool) -> None:
        """Take the physical-update latch, waiting for it (it is held for one request at most)."""
        fcntl.fcntl(self.fd, fcntl.F_OFD_SETLKW, _LATCH_X if exclusive and self.can_write else _LATCH_S)

    def unlatch(self) -> None:
        fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, _LATCH_U)


# --- record locks (POSIX, lock file) ---------------------------------------------------------------------------------


@dataclass
class _LockFile:
    fd: int
    users: int = 0
    #: lock byte -> {owner id: exclusive?}, for every lock held by this process
    held: dict[int, dict[int, bool]] = field(default_factory=dict)


_files: dict[tuple[int, int], _LockFile] = {}


def lock_file(data_fd: int, path: str) -> _LockFile:
    """This process's lock file for the data set open on ``data_fd`` (opened once per process)."""
    st = os.fstat(data_fd)
    ident = (st.st_dev, st.st_ino)
    lf = _files.get(ident)
    if lf is None:
        fd = os.open(path + ".lck", os.O_RDWR | os.O_CREAT, 0o644)
        lf = _files[ident] = _LockFile(fd)
        # a process that had our pid and died while waiting may have left its wait entry: not ours
        os.pwrite(fd, WAIT.pack(0, 0), WAIT_BASE + 16 * os.getpid())
    lf.users += 1
    return lf


def release_lock_file(data_fd: int, lf: _LockFile) -> None:
    lf.users -= 1
    if lf.users == 0:
        for ident, f in list(_files.items()):
            if f is lf:
                del _files[ident]
        os.close(lf.fd)  # drops every lock this process held on it


def key_byte(key: bytes) -> int:
    """The lock byte of a record key."""
    h = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    return RECORD_BASE + h % RECORD_SPACE


class RecordLocks:
    """Record locks of one open data set (``owner``), shared with the rest of the process through the lock file."""

    _serial = 0

    def __init__(self, lf: _LockFile, path: str) -> None:
        RecordLocks._serial += 1
        self.owner = RecordLocks._serial
        self.lf = lf
        self.path = path
        self.mine: dict[int, bool] = {}  # lock byte -> exclusive?

    def holds(self, key: bytes, exclusive: bool = True) -> bool:
        mode = self.mine.get(key_byte(key))
        return mode is not None and (mode or not exclusive)

    def lock(self, key: bytes, exclusive: bool, timeout: float, wait: bool = True) -> None:
        """Take (or upgrade to) a record lock; wait up to ``timeout`` s (0: forever) unless ``wait`` is False."""
        b = key_byte(key)
        have = self.mine.get(b)
        if have is not None and (have or not exclusive):
            return
        deadline = None if timeout <= 0 else time.monotonic() + timeout
        delay = 0.0002
        registered = False
        try:
            while True:
                holder = self._try(b, exclusive)
                if holder is None:
                    self.mine[b] = exclusive
                    self.lf.held.setdefault(b, {})[self.owner] = exclusive
                    return
                if not wait:
                    raise RecordLockedError(
                        f"{self.path}: record {key.hex().upper()} is locked by {self._who(holder)} (no wait)"
                    )
                if holder > 0:
                    self._register(b, holder)
                    registered = True
                    victim = self._deadlock(b, holder)
                    if victim:
                        raise DeadlockError(
                            f"{self.path}: deadlock waiting for record {key.hex().upper()} held by process "
                            f"{holder}; this request was chosen to break it (its record locks are released)"
                        )
                if deadline is not None and time.monotonic() >= deadline:
                    raise RecordLockedError(
                        f"{self.path}: record {key.hex().upper()} still locked by {self._who(holder)} after "
                        f"{timeout:g}s (lock timeout)"
                    )
                time.sleep(delay)
                delay = min(delay * 2, 0.01)
        finally:
            if registered:
                self._register(0, 0)

    def _who(self, holder: int) -> str:
        return "this process (another open)" if holder == 0 else f"process {holder}"

    def _try(self, b: int, exclusive: bool) -> int | None:
        """Take the lock byte; None on success, else the holder's pid (0: another owner in this process)."""
        others = {o: x for o, x in self.lf.held.get(b, {}).items() if o != self.owner}
        if others and (exclusive or any(others.values())):
            return 0
        if others:
            return None  # other owners of this process share it, and so do we: the process lock is held
        kind = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
        if _try(self.lf.fd, fcntl.F_SETLK, kind, b):
            return None
        holder = _holder(self.lf.fd, fcntl.F_GETLK, kind, b)
        return holder if holder is not None else -1

    def unlock(self, key: bytes) -> None:
        self._release(key_byte(key))

    def unlock_all(self) -> None:
        for b in list(self.mine):
            self._release(b)

    def _release(self, b: int) -> None:
        if self.mine.pop(b, None) is None:
            return
        owners = self.lf.held.get(b, {})
        owners.pop(self.owner, None)
        if owners:
            if not any(owners.values()):  # the rest only share it: the process lock becomes shared
                _try(self.lf.fd, fcntl.F_SETLK, fcntl.F_RDLCK, b)
            return
        self.lf.held.pop(b, None)
        fcntl.fcntl(self.lf.fd, fcntl.F_SETLK, _flock(fcntl.F_UNLCK, b))

    # --- deadlock detection ------------------------------------------------------------------------------------

    def _register(self, b: int, holder: int) -> None:
        os.pwrite(self.lf.fd, WAIT.pack(b, holder), WAIT_BASE + 16 * os.getpid())

    def _waits_for(self, pid: int) -> int:
        data = os.pread(self.lf.fd, 16, WAIT_BASE + 16 * pid)
        return WAIT.unpack(data)[0] if len(data) == 16 else 0

    def _deadlock(self, b: int, holder: int) -> bool:
        """Follow the wait-for chain from ``holder``; True if it comes back to us and we are the victim."""
        me = os.getpid()
        cycle = [me]
        pid = holder
        for _ in range(64):
            if pid == me:
                return max(cycle) == me
            if pid in cycle:
                return False  # a cycle that does not include us: its members will break it
            cycle.append(pid)
            want = self._waits_for(pid)
            if not want:
                return False
            if self.lf.held.get(want):
                pid = me  # it waits for a lock this process holds
                continue
            nxt = _holder(self.lf.fd, fcntl.F_GETLK, fcntl.F_WRLCK, want)
            if nxt is None or nxt <= 0:
                return False
            pid = nxt
        return False
