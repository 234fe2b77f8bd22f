"""The lock bytes of a data set and the system calls on them: what both lock implementations share.

:mod:`ksds.locks` (Linux OFD locks, and RLS record locks) and :mod:`ksds.portable_locks` (flock lock files) both
stand on this: the byte offsets of the open-mode locks and the latch on the data file, building ``struct flock``
arguments, a lock tried without waiting, who holds a lock (``/proc/PID/fdinfo``: the kernel names no owner of an
OFD lock anywhere else), and the portable locks' folder. It refuses, at import, a system where ksds cannot run.
"""

from __future__ import annotations

import errno
import os
import struct
import sys

try:
    import fcntl as fcntl  # (re-exported for ksds.locks and ksds.portable_locks)
except ImportError:  # Windows: no fcntl, and no os.pread / os.pwrite / os.pwritev / os.fdatasync either
    raise ImportError(
        f"ksds does not run on {sys.platform}: it needs a POSIX system (Linux; macOS or a BSD with the portable "
        f"locks) for os.pread/os.pwritev, fsync and file locks; on Windows use WSL 2 (Linux)"
    ) from None
_MISSING = [f"os.{f}" for f in ("pread", "pwrite", "pwritev", "fsync") if not hasattr(os, f)]
if _MISSING:  # e.g. macOS before 11 (no pwritev)
    raise ImportError(f"ksds does not run on this {sys.platform} system: Python has no {', '.join(_MISSING)} here")

# --- byte offsets ------------------------------------------------------------------------------------------------

LATCH = 1 << 40  # physical-update latch (data file)
OPEN_ANY = LATCH + 1  # every open holds it shared; a SHAREOPTIONS(1) updater holds it exclusive
UPDATER = LATCH + 2  # a SHAREOPTIONS(2) updater holds it exclusive
NONRLS_OUTPUT = LATCH + 3  # every non-RLS open for update holds it shared
RLS_OPEN = LATCH + 4  # every RLS open holds it shared
NONRLS_UNSHARED = LATCH + 5  # every non-RLS open without SHAREOPTIONS(2) holds it shared (RLS may not join it)
POWER_OPEN = LATCH + 6  # every open with durability "power" holds it shared: checkpoints then sync the data
PORTABLE_OPEN = LATCH + 7  # Linux: every open with the portable locks (KSDS_LOCKS=portable) holds it shared
SHM_USER = LATCH + 8  # every shared open that maps the shared-state file (PATH-shm) holds it shared
SHM_NONE = LATCH + 9  # every shared open that can write but has no shared-state file holds it shared

FLOCK = struct.Struct("@hhqqi")  # struct flock on Linux (l_type, l_whence, l_start, l_len, l_pid)
FLOCK_SIZE = 32
BUSY = (errno.EAGAIN, errno.EACCES)


def flock_arg(kind: int, start: int, length: int = 1) -> bytes:
    return FLOCK.pack(kind, os.SEEK_SET, start, length, 0).ljust(FLOCK_SIZE, b"\0")


def try_lock(fd: int, cmd: int, kind: int, start: int) -> bool:
    """Set a lock without waiting; False if another holder conflicts."""
    try:
        fcntl.fcntl(fd, cmd, flock_arg(kind, start))
        return True
    except OSError as e:
        if e.errno in BUSY:
            return False
        raise


def try_range(fd: int, kind: int, start: int, length: int) -> bool:
    """Set an OFD lock on ``length`` bytes from ``start`` without waiting; False if another holder conflicts."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, flock_arg(kind, start, length))
        return True
    except OSError as e:
        if e.errno in BUSY:
            return False
        raise


def holder(fd: int, cmd: int, kind: int, start: int) -> int | None:
    """Who would stop us taking ``kind`` at ``start``: None if nobody; a pid (-1 for OFD locks)."""
    out = fcntl.fcntl(fd, cmd, flock_arg(kind, start))
    ltype, _, _, _, pid = FLOCK.unpack_from(out, 0)
    return None if ltype == fcntl.F_UNLCK else pid


def lock_holders(fd: int, start: int, exclusive: bool) -> list[int]:
    """The pids of the processes whose descriptors of ``fd``'s file hold a lock on byte ``start`` that conflicts
    with taking it (``exclusive``: any lock; else exclusive ones), ``fd`` itself aside. From
    ``/proc/PID/fdinfo``: the kernel reports no owner for OFD locks anywhere else. Processes we may not
    inspect are missed. Slow (a stat of every descriptor we can see): for error messages only."""
    st = os.fstat(fd)
    ident = (st.st_dev, st.st_ino)
    me = os.getpid()
    found: set[int] = set()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    for pid in pids:
        base = f"/proc/{pid}"
        try:
            fds = os.listdir(base + "/fd")
        except OSError:
            continue
        for n in fds:
            if pid == me and n == str(fd):
                continue
            try:
                s = os.stat(f"{base}/fd/{n}")
                if (s.st_dev, s.st_ino) != ident:
                    continue
                with open(f"{base}/fdinfo/{n}") as f:
                    info = f.read()
            except (OSError, ValueError):
                continue
            for line in info.splitlines():
                # lock:	1: OFDLCK  ADVISORY  WRITE -1 fe:00:2148205 1099511627776 1099511627776
                parts = line.split()
                if len(parts) < 8 or parts[0] != "lock:":
                    continue
                try:
                    lo = int(parts[-2])
                    hi = (1 << 63) if parts[-1] == "EOF" else int(parts[-1])
                except ValueError:
                    continue
                if lo <= start <= hi and (exclusive or "WRITE" in parts):
                    found.add(pid)
    return sorted(found)


def describe_holders(pids: list[int]) -> str:
    """``lock_holders`` in words: "process 1234", "this process (another open)", ..."""
    me = os.getpid()
    words = ["this process (another open)" if p == me else f"process {p}" for p in pids]
    if not words:
        return "another open (its process could not be identified)"
    return " and ".join(words)


#: whether this system has open-file-description locks (Linux 3.15 and later)
HAVE_OFD = hasattr(fcntl, "F_OFD_SETLK")


def ofd_holds(fd: int, start: int) -> bool:
    """Whether another open holds an OFD lock on byte ``start`` of ``fd``'s file (any mode)."""
    return holder(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, start) is not None


def ofd_share(fd: int, start: int) -> None:
    """Take a shared OFD lock on byte ``start`` of ``fd``'s file (nothing exclusive is ever taken there)."""
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, flock_arg(fcntl.F_RDLCK, start))


def lock_dir(path: str) -> str:
    """The folder of the portable locks' files (:mod:`ksds.portable_locks`)."""
    return path + ".locks"


def remove_lock_dir(path: str) -> list[str]:
    """Remove the portable locks' folder and its files, the latch file last (``ksds.delete``, holding the latch,
    after the data file: an open that still gets a latch on the deleted file sees that it is not the one at the
    path any more). Returns the paths removed; a folder another open filled again meanwhile stays."""
    d = lock_dir(path)
    try:
        names = sorted(os.listdir(d), key=lambda n: n == "latch")
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for n in names:
        try:
            os.unlink(os.path.join(d, n))
            removed.append(os.path.join(d, n))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(d)
        removed.append(d)
    except OSError:
        pass
    return removed


