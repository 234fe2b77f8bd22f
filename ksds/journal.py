"""The write-ahead log (``PATH-wal``): whole-CI redo frames, one transaction per request or batch.

Why a redo log of whole CIs (and not a rollback journal or copy-on-write): a request's CIs are written to the log
in one ``pwritev`` (plus one ``fdatasync`` in power mode) and only later in place, so a request costs one sync,
a torn CI in the data file is always repaired from the log, and recovery is a replay that never has to reason
about half-done splits: a transaction's frames are either all there with their commit frame, or ignored.
Copy-on-write would move CIs on every update (breaking CA locality), and a rollback journal needs a sync
before every in-place write (two per request).

Layout (see ``docs/file-format.md``): a 512-byte header (two 256-byte slots), then fixed-size frames, each a frame
header, one CI image and a CRC32C. The last frame of a transaction has the commit flag and carries the whole
:class:`~ksds.format.State`. After a checkpoint the log is reused from the start with a new salt, so frames
of older generations are told apart without truncating the file.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from . import fileio
from .errors import JournalCorruptError
from .fileio import LOG
from .format import STATE_SIZE, crc32c

LOG_MAGIC = b"KSDSWAL\x00"
LOG_VERSION = 2  # 2: the state in commit frames has the root stamp
#: magic, version, ci_size, salt, data set id, generation, durable CIs (HI-U-RBA that the last checkpoint synced)
LOG_HEADER = struct.Struct(">8sIIIQQI")
#: two header slots of 256 bytes, written alternately (a generation's header goes to slot ``generation % 2``), so a
#: torn header write leaves the previous generation's header, whose frames replay to the same state
LOG_SLOT = 256
LOG_HEADER_SIZE = 2 * LOG_SLOT
FRAME_HEADER = struct.Struct(f">IIQHH{STATE_SIZE}s")  # salt, ci, txn, index-in-txn, flags, state
FLAG_COMMIT = 1
_ZERO_STATE = bytes(STATE_SIZE)


@dataclass
class Replay:
    """What recovery found in the log."""

    transactions: list[tuple[int, list[tuple[int, bytes]], bytes]] = field(default_factory=list)
    discarded_frames: int = 0  # frames of a transaction with no commit frame (a request cut by the crash)
    discarded_bytes: int = 0  # a partial frame at the end of the log
    damaged_at: int | None = None  # offset of the first frame that failed its check, if any
    stale: bool = False  # the log belongs to another data set (one deleted and defined again)
    durable_cis: int = -1  # the data file's HI-U-RBA (CIs) the log's last checkpoint made durable (-1: unknown)
    end: int = LOG_HEADER_SIZE  # the offset just past the last committed frame (where a next frame would go)


class Journal:
    """The log of one data set. Frames are appended with :meth:`append`; :meth:`reset` starts a new generation."""

    def __init__(self, path: str, ci_size: int, dataset_id: int) -> None:
        self.path = path
        self.ci_size = ci_size
        self.dataset_id = dataset_id
        self.frame_size = FRAME_HEADER.size + ci_size + 4
        self.fd = -1
        self.salt = 0
        self.generation = 0
        self.offset = LOG_HEADER_SIZE  # where the next frame goes
        self._last_head = b""  # the header bytes last parsed by header(), and what they said
        self._last_parsed: tuple[int, int] | None = None
        self.size = 0  # bytes in the file
        self.io = fileio.IO  # every write and sync goes through the one I/O path
        self.writable = False  # ``fd`` is open for writing

    # --- writing ------------------------------------------------------------------------------------------

    def create(self, sync: bool, durable_cis: int, preallocate: int = 0) -> None:
        """Open (creating if needed) and start a fresh generation (see :meth:`reset`).

        ``preallocate``: then write zeros up to that many bytes (once), so that later frames overwrite blocks
        that exist: a request's ``fdatasync`` flushes its data only, not a file-size change as well.
        """
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self.writable = True
        self.size = os.fstat(self.fd).st_size
        self.reset(sync, durable_cis)
        if self.size < preallocate:
            zeros = bytes(1 << 20)
            pos = max(self.size, LOG_HEADER_SIZE)  # after the header reset() just wrote
            while pos < preallocate:
                n = min(len(zeros), preallocate - pos)
                self.io.pwrite(self.fd, LOG, zeros[:n], pos)
                pos += n
            self.io.fullsync(self.fd, LOG)
            self.size = pos
        if sync:
            dirfd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)

    def join(self, writable: bool) -> bool:
        """Open the log another process keeps (without resetting it); False if there is none yet."""
        try:
            self.fd = os.open(self.path, os.O_RDWR if writable else os.O_RDONLY)
        except FileNotFoundError:
            return False
        self.writable = writable
        self.size = os.fstat(self.fd).st_size
        return True

    def make_writable(self) -> None:
        """Reopen a log joined for reading only, for writing (a reader that closes last checkpoints it)."""
        if not self.writable:
            fd = os.open(self.path, os.O_RDWR)
            os.close(self.fd)
            self.fd = fd
            self.writable = True

    def header(self) -> tuple[int, int] | None:
        """(salt, generation) of the log's current generation as it is now, or None if there is none."""
        head = os.pread(self.fd, LOG_HEADER_SIZE, 0)
        if head == self._last_head:  # the usual case, once per request in shared mode: no CRC to compute again
            return self._last_parsed
        best = self._best_slot(head)
        if best is None or best[4] != self.dataset_id:
            return None  # no valid header yet, or a log left by an earlier data set of this name: not ours
        self._last_head = head
        self._last_parsed = (best[3], best[5])
        return self._last_parsed

    def stale(self) -> bool:
        """Whether the log belongs to another data set (an earlier one of the same name)."""
        best = self._best_slot(os.pread(self.fd, LOG_HEADER_SIZE, 0))
        return best is not None and best[4] != self.dataset_id

    def _best_slot(self, head: bytes) -> tuple[bytes, int, int, int, int, int, int] | None:
        """The valid header slot of the newest generation (its unpacked fields), or None."""
        best = None
        for off in (0, LOG_SLOT):
            slot = head[off : off + LOG_HEADER.size + 4]
            if len(slot) < LOG_HEADER.size + 4 or crc32c(slot[:-4]) != int.from_bytes(slot[-4:], "big"):
                continue
            fields = LOG_HEADER.unpack_from(slot, 0)
            if fields[0] != LOG_MAGIC:
                continue
            if best is None or fields[5] > best[5]:
                best = fields
        return best

    def scan(self, offset: int, salt: int, txn: int) -> tuple[list[tuple[int, list[tuple[int, int]], bytes]], int]:
        """Committed transactions after ``offset`` (each: txn, [(ci, frame offset)], state) and the new end.

        ``txn`` is the last transaction already seen; frames must continue from it. Frames of a transaction with
        no commit frame yet (one being written, or left by a process that died) are not returned.
        """
        fs = self.frame_size
        out: list[tuple[int, list[tuple[int, int]], bytes]] = []
        pending: list[tuple[int, int]] = []
        end = offset
        pos = offset
        expect = txn + 1
        # most calls find nothing new: look at one frame header before reading whole frames
        head = os.pread(self.fd, 16, pos)
        if len(head) < 16:
            return out, end
        fsalt, _, ftxn = struct.unpack(">IIQ", head)
        if fsalt != salt or ftxn != expect:
            return out, end
        while True:
            chunk = os.pread(self.fd, fs * 16, pos)
            n = len(chunk) // fs
            if n == 0:
                return out, end
            for k in range(n):
                frame = chunk[k * fs : (k + 1) * fs]
                fsalt, ci, ftxn, _, flags, state = FRAME_HEADER.unpack_from(frame, 0)
                if fsalt != salt or ftxn != expect or crc32c(frame[:-4]) != int.from_bytes(frame[-4:], "big"):
                    return out, end
                pending.append((ci, pos + k * fs))
                if flags & FLAG_COMMIT:
                    out.append((ftxn, pending, state))
                    pending = []
                    expect = ftxn + 1
                    end = pos + (k + 1) * fs
            pos += n * fs

    def reset(self, sync: bool, durable_cis: int) -> None:
        """Start a new generation: later frames carry a new salt, older ones no longer count.

        ``durable_cis``: the data set's HI-U-RBA (in CIs) that is on disk now, after the checkpoint's sync:
        recovery calls a data file shorter than that truncated (CIs written since are in the log).
        """
        self.generation += 1
        self.salt = int.from_bytes(os.urandom(4), "big") or 1
        head = LOG_HEADER.pack(
            LOG_MAGIC, LOG_VERSION, self.ci_size, self.salt, self.dataset_id, self.generation, durable_cis
        )
        head += crc32c(head).to_bytes(4, "big")
        self._write(head.ljust(LOG_SLOT, b"\0"), (self.generation % 2) * LOG_SLOT)
        if sync:
            self.sync()
        self.offset = LOG_HEADER_SIZE

    def append(self, images: list[tuple[int, bytes]], txn: int, state: bytes) -> None:
        """Append one transaction: a frame per CI image; the last carries the commit flag and the state.

        One ``pwritev`` of (header, image, crc) pieces: the images are not copied.
        """
        salt = self.salt
        if len(images) == 1:  # most requests change one CI
            ci, image = images[0]
            head = FRAME_HEADER.pack(salt, ci, txn, 0, FLAG_COMMIT, state)
            crc = crc32c(image, crc32c(head)).to_bytes(4, "big")
            self.io.pwritev(self.fd, LOG, [head, image, crc], self.offset)
            self.offset += self.frame_size
            if self.offset > self.size:
                self.size = self.offset
            return
        parts: list[bytes] = []
        last = len(images) - 1
        pack = FRAME_HEADER.pack
        for i, (ci, image) in enumerate(images):
            if i == last:
                head = pack(salt, ci, txn, i & 0xFFFF, FLAG_COMMIT, state)
            else:
                head = pack(salt, ci, txn, i & 0xFFFF, 0, _ZERO_STATE)
            parts.append(head)
            parts.append(image)
            parts.append(crc32c(image, crc32c(head)).to_bytes(4, "big"))
        size = self.io.pwritev(self.fd, LOG, parts, self.offset)
        self.offset += size
        if self.offset > self.size:
            self.size = self.offset

    def _write(self, data: bytes, offset: int) -> None:
        self.io.pwrite(self.fd, LOG, data, offset)

    def sync(self) -> None:
        self.io.datasync(self.fd, LOG)

    def close(self, remove: bool) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if remove:
            try:
                self.io.unlink(self.path, LOG)
            except FileNotFoundError:
                pass

    # --- reading (recovery) ---------------------------------------------------------------------------------

    def read(self) -> Replay:
        """Parse the log file at ``self.path``: the committed transactions in order, and what was cut off.

        A frame that fails its check ends the log. If valid frames of the same generation follow it, the damage is
        in the middle of the log and committed requests would be lost: :class:`JournalCorruptError`.
        """
        with open(self.path, "rb") as f:
            data = f.read()
        replay = Replay()
        if len(data) < LOG_HEADER_SIZE:
            replay.discarded_bytes = len(data)
            return replay
        best = self._best_slot(data[:LOG_HEADER_SIZE])
        if best is None:
            if len(data) <= LOG_HEADER_SIZE or not any(data[LOG_HEADER_SIZE:]):
                return replay  # nothing was ever logged (a crash while the log was being created)
            raise JournalCorruptError(
                f"{self.path}: both log header slots fail their check and {len(data) - LOG_HEADER_SIZE} bytes of "
                f"frames follow; the log cannot be trusted (ksds verify --recover discards it)"
            )
        _, version, ci_size, salt, dataset_id, generation, durable = best
        replay.durable_cis = durable
        if dataset_id != self.dataset_id:
            replay.stale = True  # left behind by another data set that had this name: not ours to replay
            return replay
        if version != LOG_VERSION or ci_size != self.ci_size:
            raise JournalCorruptError(
                f"{self.path}: log version {version} / CI size {ci_size} does not match the data set "
                f"(version {LOG_VERSION}, CI size {self.ci_size})"
            )
        self.salt = salt
        self.generation = generation
        fs = self.frame_size
        hs = FRAME_HEADER.size
        off = LOG_HEADER_SIZE
        pending: list[tuple[int, bytes]] = []
        expect: int | None = None
        last_commit = -1
        while off + fs <= len(data):
            frame = data[off : off + fs]
            fsalt, ci, txn, _, flags, state = FRAME_HEADER.unpack_from(frame, 0)
            if fsalt != salt:
                break  # a frame of an older generation: the normal end of the log
            ok = crc32c(frame[:-4]) == int.from_bytes(frame[-4:], "big")
            if ok and expect is not None and txn != expect:
                ok = False
            if not ok:
                replay.damaged_at = off
                break
            expect = txn
            pending.append((ci, frame[hs : hs + self.ci_size]))
            if flags & FLAG_COMMIT:
                replay.transactions.append((txn, pending, state))
                pending = []
                expect = txn + 1
                last_commit = txn
                replay.end = off + fs
            off += fs
        replay.discarded_frames = len(pending)
        self.offset = off
        if off + fs <= len(data):
            # A frame failed. Frames of the transaction in flight may follow it (a torn write reaches the disk
            # out of order); frames of a *later* transaction mean damage in the middle of the log.
            later: list[tuple[int, int]] = []
            pos = off + fs
            while pos + fs <= len(data):
                frame = data[pos : pos + fs]
                fsalt, _, txn, _, _, _ = FRAME_HEADER.unpack_from(frame, 0)
                if fsalt == salt and txn > last_commit and crc32c(frame[:-4]) == int.from_bytes(frame[-4:], "big"):
                    later.append((pos, txn))
                pos += fs
            in_flight = expect if expect is not None else min((t for _, t in later), default=0)
            for pos, txn in later:
                if txn > in_flight:
                    raise JournalCorruptError(
                        f"{self.path}: log frame at offset {off} is damaged (checksum or sequence) but frames of "
                        f"later transactions follow at offset {pos}; replaying would lose committed requests "
                        f"(ksds verify --recover keeps what comes before the damage)"
                    )
        else:
            replay.discarded_bytes = len(data) - off
        return replay
