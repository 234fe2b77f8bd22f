"""The write-ahead log (``PATH-wal``): redo frames (whole CI images, or a data CI's record operations), one
transaction per request or batch.

Why a redo log (and not a rollback journal or copy-on-write): what a request changes is written to the log
in one ``pwritev`` (plus one ``fdatasync`` in power mode) and only later in place, so a request costs one sync,
a torn CI in the data file is always repaired from the log, and recovery is a replay that never has to reason
about half-done splits: a transaction's frames are either all there with their commit frame, or ignored.
Copy-on-write would move CIs on every update (breaking CA locality), and a rollback journal needs a sync
before every in-place write (two per request).

Layout (see ``docs/file-format.md``): a 512-byte header (two 256-byte slots), then frames, each a frame header,
a payload and a CRC32C, padded to 8 bytes. A frame holds a whole CI image, or -- for a data CI already imaged in
the log's current generation -- the record operations that change it (insert, delete or replace at a slot, with
the record's bytes) and its new descriptor: record-level logging, with a full image on a CI's first change after
each checkpoint (torn-page protection, as PostgreSQL's full_page_writes). A transaction ends with a commit frame
carrying the whole :class:`~ksds.format.State`. Reading the log rebuilds each CI's newest image from its image and
the operations after it, and checks the rebuilt image's CRC32C. After a checkpoint the log is reused from the
start with a new salt, so frames of older generations are told apart without truncating the file.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import fileio
from .ci import DataCI
from .errors import DamagedCIError, JournalCorruptError
from .fileio import LOG
from .format import FLAGS_AT, STATE_SIZE, TID_SHIFT, TRAILER_SIZE, crc32c

LOG_MAGIC = b"KSDSWAL\x00"
LOG_VERSION = 3  # 3: frames of any length (whole images, record operations, commits); 2: fixed-size image frames
#: magic, version, ci_size, salt, data set id, generation, durable CIs (HI-U-RBA that the last checkpoint synced)
LOG_HEADER = struct.Struct(">8sIIIQQI")
#: two header slots of 256 bytes, written alternately (a generation's header goes to slot ``generation % 2``), so a
#: torn header write leaves the previous generation's header, whose frames replay to the same state
LOG_SLOT = 256
LOG_HEADER_SIZE = 2 * LOG_SLOT
#: salt, ci, txn, kind, 0, index-in-txn, payload length
FRAME_HEAD = struct.Struct(">IIQBBHI")
KIND_IMAGE = 1  # payload: the CI's whole image
KIND_OPS = 2  # payload: the data CI's new descriptor (16 bytes), then its record operations in order
KIND_COMMIT = 3  # payload: the state after the transaction (CI 0); the transaction's last frame
#: a record operation in a KIND_OPS payload: op, 0, slot; INSERT and REPLACE are followed by the record
OP = struct.Struct(">BBH")
OP_INSERT, OP_DELETE, OP_REPLACE = 1, 2, 3
#: version 2's frame header (salt, ci, txn, index, flags, state), each frame that header + an image + CRC32C
FRAME_HEADER_V2 = struct.Struct(f">IIQHH{STATE_SIZE}s")
FLAG_COMMIT_V2 = 1
_PAD = bytes(8)
#: one record operation as a DataCI records it: (op, slot, record or None)
Op = tuple[int, int, bytes | None]


def frame_length(payload: int) -> int:
    """Bytes a frame with a payload of ``payload`` bytes takes: header, payload, CRC32C, padded to 8."""
    return (FRAME_HEAD.size + payload + 4 + 7) & ~7


def encode_ops(ops: Sequence[Op], trailer: bytes) -> bytes:
    """A KIND_OPS payload: the CI's new descriptor, then each operation (and its record). O(bytes)."""
    pack = OP.pack
    parts = [trailer]
    for op, slot, record in ops:
        parts.append(pack(op, 0, slot))
        if record is not None:
            parts.append(record)
    return b"".join(parts)


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
    version: int = LOG_VERSION  # the log's version (2: fixed-size frames of whole images)
    generation: int = 0  # the log's current generation


class Journal:
    """The log of one data set. Frames are appended with :meth:`append`; :meth:`reset` starts a new generation."""

    def __init__(
        self, path: str, ci_size: int, dataset_id: int, layouts: Mapping[int, tuple[int, int, int]]
    ) -> None:
        """``layouts``: each tree's (record length, key offset, key length) by tree id, which record operations
        need: a frame of them applies to its base image with the layout of the tree that image's descriptor names
        (the mapping is read at each use, so a tree its owner adds later is known)."""
        self.path = path
        self.ci_size = ci_size
        self.dataset_id = dataset_id
        self.layouts = layouts
        #: called with each commit frame's state as the log is read (:meth:`scan`, :meth:`read`), before the
        #: frames after it: its owner learns the layouts of trees the state's catalog defines
        self.on_commit: Callable[[bytes], None] | None = None
        self._trailer_off = ci_size - TRAILER_SIZE
        #: bytes of the frame of one whole CI image
        self.image_frame = frame_length(ci_size)
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

    def scan(
        self, offset: int, salt: int, txn: int, images: Mapping[int, Any], lazy: bool = False
    ) -> tuple[list[tuple[int, list[tuple[int, Any]], bytes]], int]:
        """Committed transactions after ``offset`` (each: txn, [(ci, its new image)], state) and the new end.

        ``txn`` is the last transaction already seen; frames must continue from it. ``images``: the newest image of
        each CI in this generation so far (what record operations apply to). Frames of a transaction with no
        commit frame yet (one being written, or left by a process that died) are not returned.

        ``lazy``: a frame of record operations gives a :class:`Pending` image (its operations applied when the
        image is first needed: a process catching up with others' transactions reads few of the CIs they change),
        and a base that is a :class:`Pending` is taken as it is. Otherwise every image is built and checked here.
        """
        out: list[tuple[int, list[tuple[int, Any]], bytes]] = []
        hs = FRAME_HEAD.size
        fd = self.fd
        # a few KiB first: most calls find one or two transactions, or nothing new
        buf = os.pread(fd, _SCAN_FIRST, offset)
        start = offset
        if len(buf) < hs:
            return out, offset
        unpack = FRAME_HEAD.unpack_from
        limit = self.ci_size * 2 + hs  # no payload is longer than an image and a CI's operations
        end = pos = offset
        current: dict[int, Any] = {}
        pending: list[tuple[int, Any]] = []
        expect = txn + 1
        while True:
            o = pos - start
            if o + hs > len(buf):
                buf = os.pread(fd, _SCAN_CHUNK, pos)
                start, o = pos, 0
                if len(buf) < hs:
                    break
            fsalt, ci, ftxn, kind, _, _, length = unpack(buf, o)
            if fsalt != salt or ftxn != expect or not KIND_IMAGE <= kind <= KIND_COMMIT or length > limit:
                break
            size = frame_length(length)
            if o + size > len(buf):
                buf = os.pread(fd, max(_SCAN_CHUNK, size), pos)
                start, o = pos, 0
                if len(buf) < size:
                    break
            body = o + hs + length
            if crc32c(memoryview(buf)[o:body]) != int.from_bytes(buf[body : body + 4], "big"):
                break
            payload = buf[o + hs : body]
            nxt = pos + size
            if kind == KIND_COMMIT:
                if self.on_commit is not None:
                    self.on_commit(payload)
                out.append((ftxn, pending, payload))
                current.update(pending)
                pending = []
                expect = ftxn + 1
                end = pos = nxt
                continue
            base = current.get(ci) or images.get(ci)
            image: Any
            if lazy and kind == KIND_OPS and base is not None:
                if not TRAILER_SIZE <= length <= self.ci_size * 2:
                    break
                image = Pending(self, ci, base, payload)
            else:
                if type(base) is Pending:
                    base = base.image()
                image = self._image(kind, ci, payload, base, pos)
                if image is None:
                    break
            pending.append((ci, image))
            pos = nxt
        return out, end

    def _frames(self, data: Any, pos: int, salt: int) -> Iterator[tuple[int, int, int, int, bytes, int]]:
        """The valid frames of generation ``salt`` from ``pos`` on, in order: (offset, ci, txn, kind, payload,
        offset of the next frame). Stops at the first frame that is cut short or fails its check."""
        hs = FRAME_HEAD.size
        limit = self.ci_size * 2 + hs  # no payload is longer than an image and a CI's operations
        while True:
            head = data.read(pos, hs)
            if len(head) < hs:
                return
            fsalt, ci, ftxn, kind, _, _, length = FRAME_HEAD.unpack(head)
            if fsalt != salt or not KIND_IMAGE <= kind <= KIND_COMMIT or length > limit:
                return
            size = frame_length(length)
            frame = data.read(pos, size)
            if len(frame) < size:
                return
            if crc32c(memoryview(frame)[: hs + length]) != int.from_bytes(frame[hs + length : hs + length + 4], "big"):
                return
            yield pos, ci, ftxn, kind, frame[hs : hs + length], pos + size
            pos += size

    def _image(self, kind: int, ci: int, payload: bytes, base: bytes | None, pos: int) -> bytes | None:
        """The image a frame gives CI ``ci``: its payload (KIND_IMAGE), or ``base`` with the frame's record
        operations applied (KIND_OPS) with the layout of the tree named in ``base``'s descriptor. None if the frame
        cannot be applied (no base image, a base of a tree the data set does not have, a payload that does not
        parse, an image whose CRC32C fails: the frame ends the log as a damaged one would)."""
        cisz = self.ci_size
        if kind == KIND_IMAGE:
            return payload if len(payload) == cisz else None
        if base is None or len(payload) < TRAILER_SIZE:
            return None
        t = self._trailer_off
        tid = base[t + FLAGS_AT] >> TID_SHIFT
        layout = self.layouts.get(tid)
        if layout is None or payload[FLAGS_AT] >> TID_SHIFT != tid:
            return None  # a base of a tree this data set does not have, or operations of another tree's CI
        obj = DataCI(ci, base, int.from_bytes(base[t + 2 : t + 4], "big"), layout, tid)
        rl = layout[0]
        capacity = t // rl
        o = TRAILER_SIZE
        end = len(payload)
        try:
            while o < end:
                op, _, slot = OP.unpack_from(payload, o)
                o += OP.size
                if op == OP_DELETE and slot < obj.n:
                    obj.delete(slot)
                elif op == OP_INSERT and slot <= obj.n < capacity and o + rl <= end:
                    obj.insert(slot, payload[o : o + rl])
                    o += rl
                elif op == OP_REPLACE and slot < obj.n and o + rl <= end:
                    obj.replace(slot, payload[o : o + rl])
                    o += rl
                else:
                    return None
        except struct.error:
            return None
        buf = obj.buf if type(obj.buf) is bytearray else bytearray(obj.buf)
        buf[t:] = payload[:TRAILER_SIZE]
        if crc32c(memoryview(buf)[: cisz - 4]) != int.from_bytes(buf[cisz - 4 :], "big"):
            return None  # the operations do not rebuild the image their descriptor describes
        return bytes(buf)

    def frames(self) -> list[tuple[int, int, int, int]]:
        """Every valid frame of the current generation, in order, as (offset, ci, txn, kind): for tools and
        tests. O(log size)."""
        head = self.header()
        if head is None:
            return []
        data = _Reader(self.fd, LOG_HEADER_SIZE)
        return [(pos, ci, txn, kind) for pos, ci, txn, kind, _, _ in self._frames(data, LOG_HEADER_SIZE, head[0])]

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

    def append(self, changes: Sequence[tuple[int, bytes, Sequence[Op] | None]], txn: int, state: bytes) -> None:
        """Append one transaction: for each changed CI (ci, its new image, its record operations or None), a frame
        of its record operations when they are given, else of its whole image; then the commit frame with the
        state. One ``pwritev`` of (header, payload, CRC + padding) pieces: images are not copied.
        """
        salt = self.salt
        pack = FRAME_HEAD.pack
        parts: list[bytes] = []
        size = 0
        t = self._trailer_off
        for i, (ci, image, ops) in enumerate(changes):
            if ops is not None:
                payload = encode_ops(ops, image[t:])
                kind = KIND_OPS
            else:
                payload = image
                kind = KIND_IMAGE
            n = len(payload)
            head = pack(salt, ci, txn, kind, 0, i & 0xFFFF, n)
            whole = frame_length(n)
            parts += (head, payload, crc32c(payload, crc32c(head)).to_bytes(4, "big") + _PAD[: whole - n - 28])
            size += whole
        n = len(state)  # STATE_SIZE, or more with a catalog of alternate indexes
        head = pack(salt, 0, txn, KIND_COMMIT, 0, len(changes) & 0xFFFF, n)
        whole = frame_length(n)
        parts += (head, state, crc32c(state, crc32c(head)).to_bytes(4, "big") + _PAD[: whole - n - 28])
        size += whole
        self.io.pwritev(self.fd, LOG, parts, self.offset)
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
            # a log whose generation went to slot 0 of a new file holds only that slot: a header, no frames
            if self._best_slot(data.ljust(LOG_HEADER_SIZE, b"\0")) is None:
                replay.discarded_bytes = len(data)
                return replay
            data = data.ljust(LOG_HEADER_SIZE, b"\0")
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
        if version not in (2, LOG_VERSION) or ci_size != self.ci_size:
            raise JournalCorruptError(
                f"{self.path}: log version {version} / CI size {ci_size} does not match the data set "
                f"(versions 2 and {LOG_VERSION}, CI size {self.ci_size})"
            )
        self.salt = salt
        self.generation = generation
        replay.version = version
        replay.generation = generation
        if version == 2:
            return self._read_v2(data, salt, replay)
        current: dict[int, bytes] = {}
        pending: list[tuple[int, bytes]] = []
        expect: int | None = None
        last_commit = -1
        off = LOG_HEADER_SIZE
        source = _Bytes(data)
        damaged = False
        for pos, ci, txn, kind, payload, nxt in self._frames(source, off, salt):
            if expect is not None and txn != expect:
                damaged = True
                break
            expect = txn
            if kind == KIND_COMMIT:
                if self.on_commit is not None:
                    self.on_commit(payload)
                replay.transactions.append((txn, pending, payload))
                current.update(pending)
                pending = []
                expect = txn + 1
                last_commit = txn
                replay.end = nxt
            else:
                image = self._image(kind, ci, payload, current.get(ci), pos)
                if image is None:
                    damaged = True
                    break
                pending.append((ci, image))
            off = nxt
        replay.discarded_frames = len(pending)
        self.offset = off
        head = source.read(off, FRAME_HEAD.size)
        if not damaged and 0 < len(head) < FRAME_HEAD.size and any(head):
            replay.discarded_bytes = len(head)  # a frame header cut short by the end of the file
        if not damaged and len(head) == FRAME_HEAD.size:
            fsalt, _, _, _, _, _, length = FRAME_HEAD.unpack(head)
            if fsalt == salt:  # a frame of this generation that did not check: torn, or cut short by the crash
                if off + frame_length(length) > len(data):
                    replay.discarded_bytes = len(data) - off
                else:
                    damaged = True
        if damaged:
            replay.damaged_at = off
        if off < len(data):
            # Where the scan stopped, frames of the transaction in flight may follow (a torn write reaches the
            # disk out of order); frames of a *later* transaction mean damage in the middle of the log.
            self._refuse_later(off, expect, list(self._later_frames(source, off + 8, salt, last_commit)))
        return replay

    def _refuse_later(self, off: int, expect: int | None, later: list[tuple[int, int]]) -> None:
        """The damage-in-the-middle rule: where the scan stopped at ``off``, the transaction in flight is
        ``expect`` (or, if no frame was taken, the lowest txn of ``later``); a valid frame of a later transaction
        after it, (offset, txn) in ``later``, means committed requests lie beyond the damage."""
        in_flight = expect if expect is not None else min((t for _, t in later), default=0)
        for pos, txn in later:
            if txn > in_flight:
                raise JournalCorruptError(
                    f"{self.path}: log frame at offset {off} is damaged (checksum or sequence) but frames of "
                    f"later transactions follow at offset {pos}; replaying would lose committed requests "
                    f"(ksds verify --recover keeps what comes before the damage)"
                )

    def _later_frames(self, source: _Bytes, pos: int, salt: int, after: int) -> Iterator[tuple[int, int]]:
        """Valid frames of generation ``salt`` of a transaction later than ``after``, at 8-byte aligned offsets
        from ``pos`` on: (offset, txn). One ``bytes.find`` pass over the rest of the log, a CRC check per hit."""
        data = source.data
        key = salt.to_bytes(4, "big")
        pos = (pos + 7) & ~7
        while True:
            pos = data.find(key, pos)
            if pos < 0:
                return
            if pos % 8:
                pos += 8 - pos % 8
                continue
            for _, _, txn, _, _, _ in self._frames(source, pos, salt):
                if txn > after:
                    yield pos, txn
                break
            pos += 8

    def _read_v2(self, data: bytes, salt: int, replay: Replay) -> Replay:
        """Version 2 (fixed-size frames of whole images, each with a state field), read by version 2's rules (the
        damage-in-the-middle check included), so a data set left unclosed by ksds before record-level logging is
        recovered by this version."""
        fs = FRAME_HEADER_V2.size + self.ci_size + 4
        hs = FRAME_HEADER_V2.size
        off = LOG_HEADER_SIZE
        pending: list[tuple[int, bytes]] = []
        expect: int | None = None
        last_commit = -1
        while off + fs <= len(data):
            frame = data[off : off + fs]
            fsalt, ci, txn, _, flags, state = FRAME_HEADER_V2.unpack_from(frame, 0)
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
            if flags & FLAG_COMMIT_V2:
                replay.transactions.append((txn, pending, state))
                pending = []
                expect = txn + 1
                last_commit = txn
                replay.end = off + fs
            off += fs
        replay.discarded_frames = len(pending)
        self.offset = off
        if off + fs <= len(data):
            later: list[tuple[int, int]] = []
            pos = off + fs
            while pos + fs <= len(data):
                frame = data[pos : pos + fs]
                fsalt, _, txn, _, _, _ = FRAME_HEADER_V2.unpack_from(frame, 0)
                if fsalt == salt and txn > last_commit and crc32c(frame[:-4]) == int.from_bytes(frame[-4:], "big"):
                    later.append((pos, txn))
                pos += fs
            self._refuse_later(off, expect, later)
        else:
            replay.discarded_bytes = len(data) - off
        return replay


class _Bytes:
    """A log read whole (recovery): ``read(pos, n)`` slices it."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, pos: int, n: int) -> bytes:
        return self.data[pos : pos + n]


#: bytes a catch-up reads first, then more at a time (:meth:`Journal.scan`)
_SCAN_FIRST = 8192
_SCAN_CHUNK = 1 << 15


class Pending:
    """The image of a data CI that a frame of record operations gives it, not built yet: the operations applied to
    ``base`` (an image, or another :class:`Pending`) when :meth:`image` is first called. A live reader's catch-up
    makes these (:meth:`Journal.scan` with ``lazy``); the frame's CRC32C was checked when it was read."""

    __slots__ = ("journal", "ci", "base", "payload", "_image")

    def __init__(self, journal: Journal, ci: int, base: Any, payload: bytes) -> None:
        self.journal = journal
        self.ci = ci
        self.base = base
        self.payload = payload
        self._image: bytes | None = None

    def image(self) -> bytes:
        """The image (built once; the chain of bases below it too, without recursion). Raises
        :class:`~ksds.DamagedCIError` if the operations do not rebuild the image their descriptor describes."""
        if self._image is not None:
            return self._image
        chain = [self]
        base = self.base
        while type(base) is Pending and base._image is None:
            chain.append(base)
            base = base.base
        image: bytes
        if type(base) is Pending:
            assert base._image is not None
            image = base._image
        else:
            image = base
        for p in reversed(chain):
            built = p.journal._image(KIND_OPS, p.ci, p.payload, image, -1)
            if built is None:
                raise DamagedCIError(
                    f"{p.journal.path}: the record operations logged for CI {p.ci} do not rebuild its image", p.ci
                )
            p._image = image = built
            p.base = None  # the chain below is no longer needed
        return image


class _Reader:
    """A log read from its descriptor in chunks as frames are parsed (a scan of what others appended)."""

    CHUNK = 1 << 15  # a few frames: most scans find one or two transactions

    def __init__(self, fd: int, start: int) -> None:
        self.fd = fd
        self.start = start
        self.buf = b""

    def read(self, pos: int, n: int) -> bytes:
        if not (self.start <= pos and pos + n <= self.start + len(self.buf)):
            self.start = pos
            self.buf = os.pread(self.fd, max(n, self.CHUNK), pos)
        o = pos - self.start
        return self.buf[o : o + n]
