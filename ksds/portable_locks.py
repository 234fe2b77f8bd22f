"""Open-mode locks and the latch without Linux's OFD locks: whole-file ``flock`` locks through ``portalocker``.

:class:`PortableOpenLocks` has the interface and the semantics of :class:`ksds.locks.OFDOpenLocks` (acquire,
announce_power, power_users, alone, latch, unlatch; shared and exclusive locks owned by the open, not by the
process; dropped by the kernel when the open closes or its process dies), for POSIX systems without
``F_OFD_SETLK`` (macOS, the BSDs). :mod:`ksds.locks` chooses it once, at import: on Linux only when the
environment says ``KSDS_LOCKS=portable`` (for testing it where CI runs).

``flock`` (what ``portalocker.lock`` calls on POSIX) locks a whole file, per open file description, exactly as
an OFD lock does a byte: two ``open()``\\ s of a file conflict alike in one process or two. So each lock byte of
the OFD implementation becomes one small, empty file in the folder ``PATH.locks/``, which an open opens with a
descriptor of its own:

========== ==================================================================================================
``latch``  the physical-update latch: shared for a read, exclusive for an update (as byte 2**40 of ``PATH``)
``open``   every open holds it shared; a SHAREOPTIONS(1) updater exclusive (byte 2**40 + 1)
``updater`` a SHAREOPTIONS(2) updater holds it exclusive (byte 2**40 + 2)
``power``  every open with durability "power" holds it shared (byte 2**40 + 6)
``slot.K`` slot K, held exclusively by one open for its life: what :meth:`PortableOpenLocks.alone` looks at
========== ==================================================================================================

What a whole-file lock cannot do as a byte lock does, and how it is done instead:

* **No F_GETLK.** "Does anyone hold X?" is a lock attempt that does not wait, on a second descriptor, undone at
  once (a *probe*). A probe conflicts with our own lock on X too, so it only answers "anyone, us included"
  (:meth:`~PortableOpenLocks.power_users` wants exactly that). "Anyone but us" (:meth:`~PortableOpenLocks.alone`)
  uses the slots: each open claims the first ``slot.K`` it can lock exclusively and keeps it; an open is alone when
  a shared probe of every other slot file succeeds. Probes are shared where they can be (two probes never
  conflict); a probe of ``power`` must be exclusive, and one that meets another process's probe reports a power
  user that is not there (one needless sync, never a missing one). Slot files stay (as many as the most opens
  at one time); a probe never creates a file.
* **No atomic conversion.** ``flock`` converts shared <-> exclusive by dropping the lock and taking it again (and
  a failed non-blocking conversion leaves none), so no descriptor here ever changes mode: every lock is taken
  from unlocked and released to unlocked.
* **Files can be deleted under it.** ``ksds.delete`` removes ``PATH.locks/`` holding the latch, after the data
  file. An open that opened the latch file before that and then gets the latch holds it on a deleted file: the
  first latch of every open checks that its latch file is still the one at its path (device and inode), else it
  opens the path again (the pager then finds the data file gone or replaced, as with OFD locks). Every other
  lock file is opened only while holding a latch checked so, and is unlinked only under the latch, so it is
  always the current one.
* **Who holds the latch.** On Linux ``/proc/PID/fdinfo`` lists flock locks too, so a latch timeout names the
  holder as with OFD locks; elsewhere it says "another open".
* **No record locks.** RLS needs byte-range locks for its record locks and its wait-for registry
  (:class:`~ksds.locks.RecordLocks`): ``sharing="rls"`` is refused with a :class:`~ksds.KsdsError` naming the
  platform (:func:`rls_unavailable`).
* **Permissions.** Every open (a reader too) must be able to create ``PATH.locks/`` and its files the first time,
  or find them there: the files are opened read-only (``flock`` needs no write access).

Never mix implementations on one data set: opens with OFD locks and opens with portable locks do not see each
other's locks. On Linux (where both exist) each side checks for the other at open, and refuses
(:class:`~ksds.DatasetInUseError`): a portable open holds a shared OFD lock on byte 2**40 + 7 of ``PATH``
(``PORTABLE_OPEN``), then looks for an OFD open's lock on 2**40 + 1; an OFD open takes 2**40 + 1, then looks at
2**40 + 7 (each sets before it tests, so of two racing opens at least one sees the other). Both ``alone()``
tests count the other kind's opens.

A portable latch costs one ``flock`` when it is free and its release one more: about 3.5 us for the pair with
portalocker's wrapper (its ``FlockLocker``: always ``flock``, whatever ``portalocker.LOCKER`` says), against
1 us for the OFD latch.
"""

from __future__ import annotations

import errno
import os
import sys
import time

import portalocker
from portalocker.portalocker import FlockLocker

from .errors import DatasetInUseError, KsdsError, LatchTimeoutError
from .lockbytes import (
    HAVE_OFD,
    OPEN_ANY,
    PORTABLE_OPEN,
    describe_holders,
    lock_dir,
    lock_holders,
    remove_lock_dir,
)

_EX = portalocker.LockFlags.EXCLUSIVE
_SH = portalocker.LockFlags.SHARED
_NB = portalocker.LockFlags.NON_BLOCKING
_EX_NB = _EX | _NB  # computed once: an enum "|" costs about as much as the system call
_SH_NB = _SH | _NB
#: flock whatever ``portalocker.LOCKER`` is set to by others (lockf's locks belong to the process, not the open)
_LOCKER = FlockLocker()
_BUSY = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
_LATCH_FIRST_DELAY = 0.00005  # as the OFD latch: the first sleep of a bounded wait, doubled up to the cap
_LATCH_MAX_DELAY = 0.002
_REOPENS = 20  # latch files found deleted in a row before giving up
_OPEN_FLAGS = os.O_RDONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


def platform_name() -> str:
    return {"darwin": "macOS", "linux": "Linux"}.get(sys.platform, sys.platform)


def rls_unavailable(path: str) -> str:
    """Why ``sharing="rls"`` is refused here (no byte-range OFD locks), and what works instead."""
    where = (
        "with KSDS_LOCKS=portable (the portable locks, for testing)"
        if sys.platform.startswith("linux")
        else f"on {platform_name()}"
    )
    return (
        f"{path}: sharing='rls' is not available {where}: record-level sharing needs Linux's open-file-description "
        f"byte-range locks (F_OFD_SETLK) for its record locks and deadlock detection; here use sharing='nonrls' "
        f"with SHAREOPTIONS(2) (one updater, many readers) or (3)/(4) (many updaters), or run on Linux"
    )


def _lock(fd: int, flags: portalocker.LockFlags) -> bool:
    """``flock`` through portalocker; False if another open holds a conflicting lock (``flags`` has NB)."""
    try:
        _LOCKER.lock(fd, flags)
        return True
    except portalocker.exceptions.LockException as e:
        cause = e.__cause__
        if isinstance(e, portalocker.exceptions.AlreadyLocked) or (
            isinstance(cause, OSError) and cause.errno in _BUSY
        ):
            return False
        if isinstance(cause, OSError):
            raise OSError(cause.errno, cause.strerror) from e
        raise OSError(errno.ENOLCK, str(e)) from e


def _unlock(fd: int) -> None:
    try:
        _LOCKER.unlock(fd)
    except portalocker.exceptions.LockException as e:
        cause = e.__cause__
        raise OSError(getattr(cause, "errno", errno.ENOLCK), str(e)) from e


def _same(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _probe(path: str, flags: portalocker.LockFlags) -> bool | None:
    """Whether a lock of ``flags`` (non-blocking) could be taken on ``path`` now; None if there is no such file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    try:
        return _lock(fd, flags | _NB)  # closing the descriptor drops it
    finally:
        os.close(fd)


class PortableOpenLocks:
    """The open-time share checks and the latch of one open, as ``flock`` locks on files in ``PATH.locks/``.

    ``fd`` is the open's data-file descriptor (used only for the guard against OFD opens on Linux). The lock
    files' descriptors belong to this object: :meth:`close` releases them (the pager calls it when it closes
    the data file).
    """

    def __init__(self, fd: int, path: str, can_write: bool = True) -> None:
        self.fd = fd
        self.path = path
        self.dir = lock_dir(path)
        #: as OFD: a read-only open takes the latch shared even for what would be exclusive
        self.can_write = can_write
        self._latch = -1  # descriptor of dir/latch, opened at the first latch() and checked against the path
        self._held: dict[str, int] = {}  # lock file name -> our descriptor holding it (open, updater, power, slot.K)
        self._slot: str | None = None

    # --- files ---------------------------------------------------------------------------------------------

    def _open(self, name: str) -> int:
        """Open ``dir/name``, creating the folder and the file if need be (call holding a checked latch, except
        for the latch file itself)."""
        p = os.path.join(self.dir, name)
        for _ in range(_REOPENS):
            try:
                return os.open(p, _OPEN_FLAGS, 0o644)
            except FileNotFoundError:  # no folder yet, or a delete removed it meanwhile
                try:
                    os.mkdir(self.dir, 0o755)
                except FileExistsError:
                    pass
                except OSError as e:
                    raise self._no_files(e) from e
            except OSError as e:
                raise self._no_files(e) from e
        raise KsdsError(f"{self.path}: its lock folder {self.dir} keeps disappearing (deleted by another process?)")

    def _no_files(self, e: OSError) -> KsdsError:
        return KsdsError(
            f"{self.path}: cannot create or open its lock files in {self.dir} ({e.strerror}); with the portable "
            f"locks every open, a reader too, needs them (create the folder once with write access)"
        )

    def _take(self, name: str, flags: portalocker.LockFlags) -> bool:
        """Open ``name`` and lock it (``flags``); keep the descriptor if it is locked."""
        fd = self._open(name)
        try:
            ok = _lock(fd, flags)
        except BaseException:
            os.close(fd)
            raise
        if not ok:
            os.close(fd)
            return False
        self._held[name] = fd
        return True

    def close(self) -> None:
        """Release every lock of this open and close the lock files (unlocking first: a forked child that
        shares the descriptors must not keep the locks)."""
        fds = list(self._held.values())
        if self._latch >= 0:
            fds.append(self._latch)
        self._held.clear()
        self._latch = -1
        self._slot = None
        for fd in fds:
            try:
                _unlock(fd)
            except OSError:
                pass
            finally:
                os.close(fd)

    def remove_files(self) -> list[str]:
        """Remove ``PATH.locks/`` (``ksds.delete``, holding the latch, after the data file): the paths removed."""
        return remove_lock_dir(self.path)

    # --- open-mode locks --------------------------------------------------------------------------------------

    def _in_use(self, why: str) -> DatasetInUseError:
        return DatasetInUseError(f"{self.path} is in use: {why}")

    def acquire(self, *, writable: bool, rls: bool, share_region: int) -> bool:
        """As :meth:`ksds.locks.OFDOpenLocks.acquire` (call it holding the latch exclusively); RLS is refused."""
        if rls:
            raise KsdsError(rls_unavailable(self.path))
        alone = self._others_gone(None)
        if HAVE_OFD:
            from .lockbytes import ofd_holds, ofd_share

            ofd_share(self.fd, PORTABLE_OPEN)  # set, then test: see the module docstring
            if ofd_holds(self.fd, OPEN_ANY):
                raise self._in_use(
                    "it is open by a process that uses the Linux OFD locks, which the portable locks "
                    "(KSDS_LOCKS=portable) do not see: every process of a data set must use the same locks"
                )
        if writable and share_region == 1:
            if not self._take("open", _EX | _NB):
                raise self._in_use("another process has it open (SHAREOPTIONS(1): one updater or many readers)")
        elif not self._take("open", _SH | _NB):
            raise self._in_use("another process has it open for update with SHAREOPTIONS(1)")
        if writable and share_region == 2 and not self._take("updater", _EX | _NB):
            raise self._in_use("another process has it open for update (SHAREOPTIONS(2): one updater)")
        k = 0
        while not self._take(f"slot.{k}", _EX | _NB):  # a slot held by a live open, or being probed
            k += 1
        self._slot = f"slot.{k}"
        return alone

    #: the portable locks cannot tell which opens map a shared-state file: every shared request reads the log
    supports_shared_state = False

    def shared_state_users(self) -> tuple[bool, bool]:
        return False, False

    def announce_shared_state(self, mapped: bool) -> None:
        pass

    def announce_power(self) -> None:
        """This open promises power-safe requests: every process's checkpoints must sync the data file."""
        if not hasattr(os, "fdatasync"):
            raise KsdsError(
                f"{self.path}: durability='power' is not available on {platform_name()}: Python has no os.fdatasync "
                f"there (and fsync does not empty the drive's cache; F_FULLFSYNC would); use durability='process'"
            )
        if "power" not in self._held:
            self._take("power", _SH)  # waits only for a probe (power_users) to end

    def power_users(self) -> bool:
        """Whether any open (ours included) has durability "power" (an exclusive probe of ``power``)."""
        return _probe(os.path.join(self.dir, "power"), _EX) is False

    def alone(self) -> bool:
        """Whether no other open of the data set exists (ours aside): every other slot file is free."""
        if HAVE_OFD:
            from .lockbytes import ofd_holds

            if ofd_holds(self.fd, OPEN_ANY):
                return False
        return self._others_gone(self._slot)

    def _others_gone(self, mine: str | None) -> bool:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return True
        for name in names:
            if name.startswith("slot.") and name != mine:
                if _probe(os.path.join(self.dir, name), _SH) is False:
                    return False
        return True

    # --- the latch ----------------------------------------------------------------------------------------------

    def latch(self, exclusive: bool, timeout: float = 0.0) -> None:
        """As :meth:`ksds.locks.OFDOpenLocks.latch`: at once if it is free (one ``flock``), else wait, at most
        ``timeout`` seconds (0: forever), then :class:`~ksds.LatchTimeoutError`. A bounded wait polls with the
        OFD latch's backoff; an unbounded one blocks in the kernel."""
        x = exclusive and self.can_write
        fd = self._latch
        if fd >= 0:
            if not _lock(fd, _EX_NB if x else _SH_NB):
                self._wait(fd, _EX if x else _SH, x, timeout, None if timeout <= 0 else time.monotonic() + timeout)
            return
        flags = _EX if x else _SH
        path = os.path.join(self.dir, "latch")
        deadline = None if timeout <= 0 else time.monotonic() + timeout
        for _ in range(_REOPENS):
            fd = self._open("latch")
            try:
                if not _lock(fd, flags | _NB):
                    self._wait(fd, flags, x, timeout, deadline)
                if _same(fd, path):  # still the latch of the data set at this path (not deleted meanwhile)
                    self._latch = fd
                    return
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # drops the latch we got on a deleted file
        raise KsdsError(f"{self.path}: its latch file {path} keeps being deleted and created again")

    def _wait(
        self, fd: int, flags: portalocker.LockFlags, exclusive: bool, timeout: float, deadline: float | None
    ) -> None:
        if deadline is None:
            _lock(fd, flags)  # blocks in the kernel
            return
        delay = _LATCH_FIRST_DELAY
        while True:
            rest = deadline - time.monotonic()
            if rest <= 0:
                raise self._latch_timeout(fd, exclusive, timeout)
            time.sleep(min(delay, rest))
            delay = min(delay * 2, _LATCH_MAX_DELAY)
            if _lock(fd, flags | _NB):
                return

    def _latch_timeout(self, fd: int, exclusive: bool, timeout: float) -> LatchTimeoutError:
        who = describe_holders(lock_holders(fd, 0, exclusive))
        return LatchTimeoutError(
            f"{self.path}: the latch (the lock that serialises updates of the data set) is still held by {who} "
            f"after {timeout:g}s; another open probably holds a batch() open for a long time (a batch keeps the "
            f"latch from start to end): end batches sooner, or raise lock_timeout (0 waits forever)"
        )

    def unlatch(self) -> None:
        if self._latch >= 0:
            _unlock(self._latch)
