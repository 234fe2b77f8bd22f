"""What the processes sharing one data set share in memory: a change counter in a mapped file beside it.

Processes that share a data set (SHAREOPTIONS(2)-(4), RLS) each keep a view of it: their buffer pool, and the
images of the CIs that the current log generation changed (:class:`~ksds.pager.Pager`). A request must see what
the others committed, and finding out by reading the log's header costs system calls even when nothing moved. So,
as SQLite's ``-shm`` file does for its WAL, the openers map one small file, ``PATH-shm``, that holds a **change
counter**: every change to the log or to the file in place (a commit, a checkpoint, recovery, a new log) is
bracketed by the process making it, under the exclusive latch: the counter is made odd before the first byte
changes and even (one more) after the last. A process that read the counter as ``c`` (even) while its view was up
to date, under the latch, knows that nothing changed while it still reads ``c``: a read then runs with no system
call (no latch, no log header read). A second word, the **in-place counter**, is odd while a process writes CIs
(or the header) in place in the data set file (a checkpoint, the last close): a read only checks after it that
this word has not moved (as a sequence lock). A commit only appends to the log, so a read whose view was current
when the commit began still reads a consistent data set (the one before the commit, which nobody has been told
about yet): reads go on while a change is in progress (counter odd, one above the value at which the view was
current), and wait for nothing but in-place writes. When the counter moved further and is even, a reader catches up
with the log's committed transactions itself, without the latch, and checks the in-place counter after its read in
the same way. A writer under the
exclusive latch skips reading the log when the counter says nothing moved.

Crash safety does not depend on this file: it is never the only copy of anything. A process that dies inside a
change leaves the counter odd, so every other opener takes the latch and reads the log (as if there were no
file) until the next opener that holds the latch has read the whole log and makes it even again. The file is
not synced; at an open that finds it missing, short, or of another data set (its id is the data set's creation
stamp) while nobody else has the data set open, a fresh one is written beside it and renamed over it; one that is
missing while other opens use one (they hold the SHM byte of the data file's locks) was deleted under them: the
open is refused, since the new file's counter would not be theirs. It may be deleted when no process has the data
set open. Layout (little-endian; docs/file-format.md section 12): magic ``KSDS-SHM`` (8 bytes), version (u32),
reserved (u32), data set id (u64), change counter (u64 at offset 24), in-place counter (u64 at offset 32); 4096
bytes in all.

Memory order: the counter is 8 aligned bytes written with one store by the only process holding the exclusive
latch; a read that tears between two of its values never equals the earlier even value (the low byte differs by 1
or 2), and the system calls between a writer's store and its ``pwrite`` (and a reader's ``pread`` and its second
load) order them on the machines ksds runs on.

Thread safety: one :class:`SharedState` per open, used under its mutex. Costs: O(1) per call, no system call
except :func:`SharedState.open` and :meth:`SharedState.close`.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys

from .errors import DatasetInUseError

MAGIC = b"KSDS-SHM"
VERSION = 2
SIZE = 4096
#: magic, version, reserved, data set id
_HEAD = struct.Struct("<8sIIQ")
#: the change counter
_COUNTER = struct.Struct("<Q")
COUNTER_AT = 24
#: the counter's index among the file's 8-byte words
COUNTER_WORD = COUNTER_AT // 8
#: the in-place counter: odd while a process writes CIs (or the header) in place in the data set file
IN_PLACE_AT = 32
IN_PLACE_WORD = IN_PLACE_AT // 8


def shm_path(path: str) -> str:
    """The shared-state file of the data set at ``path``."""
    return path + "-shm"


class SharedState:
    """The mapped ``PATH-shm`` of one open (``counter`` read in memory; ``begin_change``/``end_change`` under the
    exclusive latch)."""

    __slots__ = ("path", "mm", "words", "writable", "_depth")

    def __init__(self, path: str, mm: mmap.mmap, writable: bool) -> None:
        self.path = path
        self.mm = mm
        #: the file as 8-byte words where they are little-endian, as the file's are (``words[COUNTER_WORD]`` is
        #: the counter: one index, no struct call); None elsewhere (use :attr:`counter`)
        self.words: memoryview | None = memoryview(mm).cast("Q") if sys.byteorder == "little" else None
        #: this open can change the counter (the file is open for writing)
        self.writable = writable
        self._depth = 0  # nested changes of this open (a checkpoint inside a commit)

    @classmethod
    def open(cls, path: str, ident: int, others_use_it: bool, can_write: bool) -> SharedState | None:
        """Map the shared state of the data set at ``path`` (call it holding the exclusive latch at open), making
        a fresh file if there is none that is sound and of this data set (``ident``). ``others_use_it``: another
        open maps one now (then a missing file was deleted under it: :class:`~ksds.DatasetInUseError`). None
        when this open cannot have one (a directory it may not write, a file it may not read): it then reads the
        log under the latch at every request, as if there were no shared state, and never changes anything
        others must learn of (an open that cannot write the file cannot write the data set either)."""
        spath = shm_path(path)
        try:
            fd = os.open(spath, os.O_RDWR if can_write else os.O_RDONLY)
        except FileNotFoundError:
            fd = -1
        except PermissionError:
            return None
        try:
            sound = fd >= 0 and _sound(fd, ident)
            if not sound:
                if others_use_it:
                    raise DatasetInUseError(
                        f"{path} is in use, and its shared-state file {spath} was deleted or changed while it "
                        f"was open (a file made now would not be the one the other opens use): close every "
                        f"open of the data set, then open it again (delete {spath} only when nobody has it open)"
                    )
                if not can_write:
                    return None
                if fd >= 0:
                    os.close(fd)
                    fd = -1
                fd = _make(spath, ident)
                if fd < 0:
                    return None
            mm = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | (mmap.PROT_WRITE if can_write else 0))
        finally:
            if fd >= 0:
                os.close(fd)
        return cls(path, mm, can_write)

    def _get(self, at: int) -> int:
        """The 8-byte counter at offset ``at``. O(1), in memory."""
        w = self.words
        if w is not None:
            return int(w[at >> 3])
        return int(_COUNTER.unpack_from(self.mm, at)[0])

    def _to_odd(self, at: int) -> None:
        c = self._get(at)
        if not c & 1:
            _COUNTER.pack_into(self.mm, at, c + 1)

    def _to_even(self, at: int) -> int:
        c = self._get(at)
        if c & 1:
            c += 1
            _COUNTER.pack_into(self.mm, at, c)
        return c

    @property
    def counter(self) -> int:
        """The change counter (odd: a change is in progress, or its process died inside it). O(1), in memory."""
        return self._get(COUNTER_AT)

    def begin_change(self) -> None:
        """Before changing the log or the file (holding the exclusive latch): make the counter odd. Nested calls
        of one open make one change."""
        self._depth += 1
        if self._depth == 1:
            self._to_odd(COUNTER_AT)

    def end_change(self) -> int:
        """After the change (still holding the latch): make the counter even, one above the odd value; returns
        it (the view of this open is current at that value)."""
        self._depth -= 1
        if self._depth > 0:
            return self.counter
        return self._to_even(COUNTER_AT)

    @property
    def in_place(self) -> int:
        """The in-place counter (odd: CIs are being written in place, or their writer died doing it). O(1)."""
        return self._get(IN_PLACE_AT)

    def begin_in_place(self) -> None:
        """Before writing CIs or the header in place (holding the exclusive latch, inside a change): odd."""
        self._to_odd(IN_PLACE_AT)

    def end_in_place(self) -> None:
        """After the last in-place write: even again."""
        self._to_even(IN_PLACE_AT)

    def settle(self) -> int:
        """Holding the latch (in either mode: nobody can be inside a change then) with a view that has read the
        whole log: end a change left unfinished by a process that died inside it (odd counter; two settling at
        once write the same value). Returns the counter (even, unless this open cannot write the file)."""
        if not self.writable:
            return self.counter
        self._to_even(IN_PLACE_AT)
        return self._to_even(COUNTER_AT)

    def close(self) -> None:
        if self.words is not None:
            self.words.release()
            self.words = None
        self.mm.close()


def _sound(fd: int, ident: int) -> bool:
    """Whether the open file is a shared state of the data set ``ident``, of this version and size."""
    try:
        if os.fstat(fd).st_size != SIZE:
            return False
        magic, version, _, who = _HEAD.unpack(os.pread(fd, _HEAD.size, 0))
    except (OSError, struct.error):
        return False
    return bool(magic == MAGIC and version == VERSION and who == ident)


def _make(spath: str, ident: int) -> int:
    """Write a fresh shared state under a temporary name and rename it over ``spath``; its descriptor (-1 if the
    directory refuses it). Openers of an earlier file keep theirs (another inode). The counter starts from a
    random even value, so a value an opener of an earlier file remembers is not met again by accident."""
    tmp = f"{spath}.new-{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError:
        return -1
    try:
        start = int.from_bytes(os.urandom(7), "little") << 1
        os.pwrite(fd, (_HEAD.pack(MAGIC, VERSION, 0, ident) + _COUNTER.pack(start)).ljust(SIZE, b"\0"), 0)
        os.rename(tmp, spath)
    except OSError:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return -1
    return fd
