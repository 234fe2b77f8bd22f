"""Operating-system reference rows: the raw cost of one 4 KiB write plus a sync on the results folder's disk."""

from __future__ import annotations

import os
import time

BLOCK = 4096
BLOCKS = 64


def sync_cost(directory: str, count: int, kind: str) -> float:
    """Seconds for ``count`` requests of ``kind``: "fsync" / "fdatasync" (pwrite over an allocated, synced
    block, then sync) or "append_fdatasync" (append a block to a growing file, then fdatasync)."""
    path = os.path.join(directory, f"sync-reference-{kind}.bin")
    buf = os.urandom(BLOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if kind == "append_fdatasync":
            sync = os.fdatasync
            t0 = time.perf_counter()
            for i in range(count):
                os.pwrite(fd, buf, i * BLOCK)
                sync(fd)
            return time.perf_counter() - t0
        os.pwrite(fd, bytes(BLOCK * BLOCKS), 0)
        os.fsync(fd)
        sync = os.fsync if kind == "fsync" else os.fdatasync
        t0 = time.perf_counter()
        for i in range(count):
            os.pwrite(fd, buf, (i % BLOCKS) * BLOCK)
            sync(fd)
        return time.perf_counter() - t0
    finally:
        os.close(fd)
        os.unlink(path)


def disk_of(directory: str) -> str:
    """The device and file system holding ``directory`` (from /proc/self/mountinfo; best effort)."""
    try:
        st = os.stat(directory)
        major, minor = os.major(st.st_dev), os.minor(st.st_dev)
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                if parts[2] == f"{major}:{minor}":
                    sep = parts.index("-")
                    return f"{parts[sep + 2]} ({parts[sep + 1]}, mounted at {parts[4]})"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


def drop_from_page_cache(paths: list[str]) -> None:
    """fsync each file, then ask the kernel to drop its pages (posix_fadvise DONTNEED): a best effort."""
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass
        finally:
            os.close(fd)
