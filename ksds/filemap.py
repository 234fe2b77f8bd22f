"""The read-only map of a data set file through which an exclusive open reads clean CIs in place.

An open that nobody else changes the file under (exclusive: no SHAREOPTIONS(2)-(4) sharing, no RLS) maps the whole
CIs the file holds, read-only and shared, so that a lookup reads a CI's records where they lie: no system call,
no copy. :attr:`FileMap.checked` has one bit per mapped CI whose image this open has checked (CRC32C, at its first
touch, or because this open wrote that image itself): a CI is checked once per open, and a remap keeps the bits of
the CIs still mapped. The pager decides which CIs may be read here (a CI whose newest image is pooled or in the log
is not); this module only keeps the map and the bits. Only the open's own checkpoint writes the file, and the file
only grows while it is open, so the map never sees a CI change under a reader.

Thread safety: none (one per :class:`~ksds.pager.Pager`, used under its open's mutex). Costs: O(1) per call.
"""

from __future__ import annotations

import mmap
import os

from .fileio import FileIO


class FileMap:
    """The map of one open's data set file (``mm``, covering ``mapped`` CIs) and its checked-CI bits."""

    __slots__ = ("fd", "ci_size", "io", "mm", "mapped", "checked")

    def __init__(self, fd: int, ci_size: int, io: FileIO) -> None:
        self.fd = fd
        self.ci_size = ci_size
        self.io = io
        self.mm: mmap.mmap | None = None
        #: how many whole CIs the map covers (0: no map yet)
        self.mapped = 0
        #: bit ``ci`` set: CI ``ci``'s image in the file passed its check in this open
        self.checked = bytearray()

    def grow(self) -> None:
        """Map the whole CIs the file now holds, if it grew (the bits of the CIs mapped before are kept)."""
        cisz = self.ci_size
        size = os.fstat(self.fd).st_size // cisz
        if size <= self.mapped:
            return
        mm = self.io.map(self.fd, size * cisz)
        if mm is None:
            return
        if self.mm is not None:
            self.mm.close()
        self.mm = mm
        self.mapped = size
        self.checked.extend(bytes((size >> 3) + 1 - len(self.checked)))

    def is_checked(self, ci: int) -> bool:
        """Whether CI ``ci`` is mapped and its image checked in this open."""
        return ci < self.mapped and bool(self.checked[ci >> 3] >> (ci & 7) & 1)

    def mark(self, ci: int) -> None:
        """CI ``ci``'s image in the file is known good (checked, or written by this open); no-op if not mapped."""
        if ci < self.mapped:
            self.checked[ci >> 3] |= 1 << (ci & 7)

    def image(self, ci: int) -> bytes:
        """A copy of CI ``ci``'s image from the map (it must be mapped)."""
        assert self.mm is not None
        base = ci * self.ci_size
        return self.mm[base : base + self.ci_size]

    def close(self) -> None:
        """Unmap (the bits go with the map)."""
        if self.mm is not None:
            self.mm.close()
            self.mm = None
        self.mapped = 0
        self.checked = bytearray()
