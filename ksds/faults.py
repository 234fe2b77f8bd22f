"""Fault injection for the crash tests: named crash points, torn writes and an I/O trace.

Off unless the environment variable ``KSDS_FAULTS`` is set when ksds is imported; then :class:`Plan`, a
:class:`~ksds.fileio.FileIO`, becomes :data:`ksds.fileio.IO`: every write and sync of the engine is one of its
events, and what it lets through goes down the production path unchanged (the same ``pwritev`` of the same pieces,
the same ``fdatasync``). Production code pays one ``is None`` test per crash point. ``KSDS_FAULTS`` is a
``;``-separated list of settings:

``crash=N``
    kill this process with SIGKILL at the N-th fault event (a crash point, a write or a sync; counted from 1);
``point=NAME``
    count only the crash point NAME (and no writes or syncs) towards ``crash``;
``torn=1``
    when the N-th event is a write, write only its first half (whole 512-byte sectors) before dying;
``trace=PATH``
    append every write, sync, truncate and unlink of the data set and its log to PATH, plus the
    acknowledgements :func:`ack` records, for the power-cut simulation in ``tools/crashtest.py``.

Trace entries are ``>BBQI`` (op, file, offset, length) followed by ``length`` bytes of data for writes.
"""

from __future__ import annotations

import os
import signal
import struct

from . import fileio

OP_WRITE = 1
OP_SYNC = 2
OP_TRUNCATE = 3
OP_UNLINK = 4
OP_ACK = 5
FILE_DATA = fileio.DATA
FILE_LOG = fileio.LOG
ENTRY = struct.Struct(">BBQI")

#: named crash points inside the engine, for ``point=NAME``
POINTS = (
    "log-written",  # a transaction's frames are written to the log (not yet synced in power mode)
    "request-done",  # a request (or batch) committed: in the log; its CIs wait for the checkpoint
    "split-ci",  # a CI split built in memory, before its commit
    "split-ca",  # a CA split built in memory, before its commit
    "ci-written",  # one CI written in place by a checkpoint or a close (between the CIs it writes)
    "checkpoint-header",  # the header CI written by a checkpoint, log not yet reset
    "checkpoint-done",  # log reset
)


class Plan(fileio.FileIO):
    """What to do at each fault event, parsed from ``KSDS_FAULTS``; the I/O path while it is active."""

    def __init__(self, spec: str) -> None:
        self.crash_at = -1
        self.point: str | None = None
        self.torn = False
        self.trace_fd = -1
        self.events = 0
        self.counts: dict[str, int] = {}  # hits per crash point, and per "write" / "sync"
        for item in filter(None, (s.strip() for s in spec.split(";"))):
            name, _, value = item.partition("=")
            if name == "crash":
                self.crash_at = int(value)
            elif name == "point":
                self.point = value
            elif name == "torn":
                self.torn = value not in ("", "0")
            elif name == "trace":
                self.trace_fd = os.open(value, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            else:
                raise ValueError(f"KSDS_FAULTS: unknown setting {name!r}")

    def _die(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def _event(self, point: str | None) -> bool:
        self.counts[point or "io"] = self.counts.get(point or "io", 0) + 1
        if self.point is not None and point != self.point:
            return False
        self.events += 1
        return self.events == self.crash_at

    def crashpoint(self, name: str) -> None:
        if self._event(name):
            self._die()

    def _trace(self, op: int, file: int, offset: int, data: bytes = b"", length: int = 0) -> None:
        if self.trace_fd >= 0:
            os.write(self.trace_fd, ENTRY.pack(op, file, offset, length or len(data)) + data)

    def _cut(self, size: int) -> int:
        """How much of a write a kill in its middle leaves: whole sectors of its first half (0 if not torn)."""
        return (size // 2) // 512 * 512 if self.torn else 0

    def pwrite(self, fd: int, file: int, data: bytes | bytearray | memoryview, offset: int) -> None:
        if self.point is None and self._event(None):
            cut = self._cut(len(data))  # a write of one sector or less is never torn
            if cut:
                super().pwrite(fd, file, data[:cut], offset)
                self._trace(OP_WRITE, file, offset, bytes(data[:cut]))
            self._die()
        super().pwrite(fd, file, data, offset)
        self._trace(OP_WRITE, file, offset, bytes(data))

    def pwritev(self, fd: int, file: int, parts: list[bytes], offset: int) -> int:
        if self.point is None and self._event(None):
            cut = self._cut(sum(len(p) for p in parts))
            if cut:  # the iovec list torn after ``cut`` bytes, through the production call
                kept: list[bytes] = []
                left = cut
                for piece in parts:
                    if left <= 0:
                        break
                    kept.append(piece[:left])
                    left -= len(kept[-1])
                super().pwritev(fd, file, kept, offset)
                self._trace(OP_WRITE, file, offset, b"".join(kept))
            self._die()
        n = super().pwritev(fd, file, parts, offset)
        self._trace(OP_WRITE, file, offset, b"".join(parts))
        return n

    def datasync(self, fd: int, file: int) -> None:
        if self.point is None and self._event(None):
            self._die()
        super().datasync(fd, file)
        self._trace(OP_SYNC, file, 0)

    def fullsync(self, fd: int, file: int) -> None:
        if self.point is None and self._event(None):
            self._die()
        super().fullsync(fd, file)
        self._trace(OP_SYNC, file, 0)

    def truncate(self, fd: int, file: int, size: int) -> None:
        super().truncate(fd, file, size)
        self._trace(OP_TRUNCATE, file, size)

    def unlink(self, path: str, file: int) -> None:
        super().unlink(path, file)
        self._trace(OP_UNLINK, file, 0)

    def ack(self, number: int) -> None:
        self._trace(OP_ACK, 0, number)


ACTIVE: Plan | None = Plan(os.environ["KSDS_FAULTS"]) if os.environ.get("KSDS_FAULTS") else None
if ACTIVE is not None:
    fileio.IO = ACTIVE  # every write and sync of the engine goes through the plan


def crashpoint(name: str) -> None:
    """A named point where the crash tests may kill the process."""
    if ACTIVE is not None:
        ACTIVE.crashpoint(name)


def ack(number: int) -> None:
    """Record in the trace that request ``number`` was acknowledged to the caller (crash tests only)."""
    if ACTIVE is not None:
        ACTIVE.ack(number)
