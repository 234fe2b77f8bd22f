"""The one file I/O path of a data set and its log: every write, sync, truncation and removal goes through here.

:data:`IO` is the production implementation, :class:`FileIO`. The crash tests (:mod:`ksds.faults`) replace it, when
``KSDS_FAULTS`` is set, by a subclass that counts each event, kills the process at a chosen one (leaving a write
torn: whole 512-byte sectors of its first pieces) and traces what reached the files; that subclass calls the
methods below for everything it lets through, so what the crash harness kills is exactly what users run: the same
``pwritev`` of the same pieces with the same short-write loop, the same ``fdatasync``.

Reads (``pread``, and the read-only map of the data set file an exclusive open searches in place: :meth:`FileIO.map`)
are not faults' business: the pager and the log read directly.

``file`` names which file a call is about (:data:`DATA` or :data:`LOG`), for the trace. Each method is O(bytes).
Thread safety: stateless (the faulty subclass counts events in one process; the crash tests use one thread).
"""

from __future__ import annotations

import mmap
import os
import sys

DATA = 0  # the data set file
LOG = 1  # its log (PATH-wal)

#: macOS's fsync leaves data in the drive's cache; F_FULLFSYNC is what makes it durable there
_FULLFSYNC: int | None = getattr(__import__("fcntl"), "F_FULLFSYNC", None) if sys.platform == "darwin" else None


class FileIO:
    """Writes that retry short writes, and syncs (``fdatasync``; ``F_FULLFSYNC`` on macOS)."""

    def pwrite(self, fd: int, file: int, data: bytes | bytearray | memoryview, offset: int) -> None:
        """Write every byte of ``data`` at ``offset`` (a regular file may take a short write)."""
        done = os.pwrite(fd, data, offset)
        while done < len(data):
            done += os.pwrite(fd, memoryview(data)[done:], offset + done)

    def pwritev(self, fd: int, file: int, parts: list[bytes], offset: int) -> int:
        """Write the pieces one after another at ``offset`` with one ``pwritev`` (retrying after a short write, and
        in chunks of at most 1020 pieces, under Linux's IOV_MAX); return the bytes written."""
        total = 0
        for start in range(0, len(parts), IOV_MAX):
            chunk = parts[start : start + IOV_MAX]
            size = sum(map(len, chunk))
            done = os.pwritev(fd, chunk, offset)
            if done < size:
                rest = b"".join(chunk)
                while done < size:
                    done += os.pwrite(fd, memoryview(rest)[done:], offset + done)
            offset += size
            total += size
        return total

    def datasync(self, fd: int, file: int) -> None:
        """Make the file's data durable (``fdatasync``: size changes included; on macOS ``F_FULLFSYNC``)."""
        if _FULLFSYNC is not None:
            import fcntl

            fcntl.fcntl(fd, _FULLFSYNC)
        else:
            os.fdatasync(fd)

    def fullsync(self, fd: int, file: int) -> None:
        """Make the file durable, metadata included (``fsync``; on macOS ``F_FULLFSYNC``)."""
        if _FULLFSYNC is not None:
            import fcntl

            fcntl.fcntl(fd, _FULLFSYNC)
        else:
            os.fsync(fd)

    def map(self, fd: int, length: int) -> mmap.mmap | None:
        """A read-only shared map of the first ``length`` bytes of the file (None if ``length`` is 0 or the file
        cannot be mapped). Pages come from the OS page cache, so the map sees every ``pwrite`` at once."""
        if length <= 0:
            return None
        try:
            return mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ)
        except (OSError, ValueError):
            return None

    def truncate(self, fd: int, file: int, size: int) -> None:
        os.ftruncate(fd, size)

    def unlink(self, path: str, file: int) -> None:
        os.unlink(path)


#: pieces per ``pwritev`` (a multiple of 3: a log frame is header, image, CRC); Linux allows 1024
IOV_MAX = 1020

#: the I/O path in use (:mod:`ksds.faults` replaces it for the crash tests before any data set is opened)
IO: FileIO = FileIO()
