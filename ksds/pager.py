"""The pager: the data set file, its log, the buffer pool, transactions, checkpoints and recovery.

Everything above it (the index, the requests) works on decoded CIs that it gets with :meth:`Pager.get` (or reads
in place: :meth:`Pager.view`, :meth:`Pager.index_entry`) and hands back with :meth:`Pager.dirty_ci`; the pager
makes each transaction atomic and durable:

1. :meth:`commit` encodes the transaction's changed CIs once and appends them to the log in one write -- a data
   CI already imaged in the log's generation as its record operations, any other CI as its whole image -- then a
   commit frame carrying the state; in power mode it syncs the log. The CIs are not yet written in place:
   :attr:`walmap` names them and :attr:`images` keeps their newest images, which a pool miss takes;
2. :meth:`checkpoint` (when the log reaches ``CHECKPOINT_BYTES``, and when the last opener closes) copies
   those CIs in place, once each, and writes the header CI; syncs the data file (power mode, or a shared log);
   and starts a new log generation;
3. at open, a log with committed transactions and no other process using it means the data set was not closed
   cleanly: they are replayed (each CI's newest image rebuilt from the log, so replay is idempotent), the header
   is rewritten from the last commit's state, and :attr:`recovery` says what was done.

So a request costs one log write (plus one sync in power mode), and a CI updated many times between
checkpoints is written in place once.

**Sharing.** With SHAREOPTIONS(2), (3), (4) or RLS, several processes use one data set and one log. Each request
runs between :meth:`begin` and :meth:`end`, under the latch (:mod:`ksds.locks`): :meth:`begin` reads the
transactions other processes committed since this one last looked (their CIs leave the pool, their rebuilt images
go to :attr:`images`, the state is theirs) and a new log generation (someone's checkpoint) empties the pool. So a
process that dies in the middle of a request leaves nothing anyone reads: its frames have no commit.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import mmap
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import faults, fileio
from .bufferpool import BufferPool, capacity_for
from .ci import AnyCI, Codec, DataCI, IndexCI, codec_for, describe
from .coherence import SharedState, shm_path
from .definition import Definition
from .errors import (
    CorruptionError,
    DamagedCIError,
    DatasetNotFoundError,
    InvalidRequestError,
    KsdsError,
    LatchTimeoutError,
    NoSpaceError,
    NotADatasetError,
)
from .fileio import DATA
from .filemap import FileMap
from .format import (
    CI_DATA,
    CI_INDEX_SET,
    CI_SEQUENCE_SET,
    FLAGS_AT,
    HEADER_MAX,
    LEVEL_MASK,
    MAX_TREES,
    STATE_SIZE,
    TID_SHIFT,
    TRAILER,
    AixMeta,
    State,
    decode_header,
    encode_header,
)
from .journal import LOG_HEADER_SIZE, LOG_VERSION, Journal, Op, Pending, Replay
from .locks import OpenLocks
from .tree import BASE, Tree, tree_definition

log = logging.getLogger("ksds")

#: checkpoint when the log holds this many bytes of frames
CHECKPOINT_BYTES = 8 << 20


@dataclass(frozen=True)
class Recovery:
    """What opening a data set that was not closed cleanly did (``Dataset.recovery``)."""

    transactions: int  # committed transactions replayed from the log
    frames: int  # frames of committed transactions replayed (images and record operations)
    discarded_frames: int  # frames of a transaction cut off by the crash (never acknowledged)
    discarded_bytes: int  # a partial frame at the end of the log
    damaged_at: int | None  # log offset where a damaged (torn) frame ended the log

    def __str__(self) -> str:
        if self.transactions:
            s = f"replayed {self.transactions} transactions ({self.frames} CIs) from the log"
        else:
            s = "nothing to replay from the log"
        if self.discarded_frames or self.discarded_bytes or self.damaged_at is not None:
            s += (
                f"; discarded an unfinished transaction ({self.discarded_frames} frames"
                + (f", {self.discarded_bytes} bytes of a partial frame" if self.discarded_bytes else "")
                + (f", torn frame at log offset {self.damaged_at}" if self.damaged_at is not None else "")
                + ")"
            )
        return s


def data_set_path(path: object) -> str:
    """A data set path as the API takes it: ``str``, ``bytes`` or ``os.PathLike``, as :func:`open` does.

    Anything else (None, a number, ...) and a path with a NUL are :class:`~ksds.InvalidRequestError`: never a file
    named ``None`` or ``12345``, nor ``b'...'`` turned into text.
    """
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise InvalidRequestError(
            f"a data set path must be a str, bytes or os.PathLike, not {type(path).__name__} ({path!r})"
        )
    try:
        text = os.fspath(path)
    except TypeError as e:  # an os.PathLike whose __fspath__ gives neither str nor bytes
        raise InvalidRequestError(f"a data set path must be text: {e}") from None
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not isinstance(text, str):  # an os.PathLike whose __fspath__ returns something else
        raise InvalidRequestError(f"a data set path must be text, not {type(text).__name__} ({path!r})")
    if not text:
        raise InvalidRequestError("a data set path must not be empty")
    if "\0" in text:
        raise InvalidRequestError(f"a data set path must not contain a NUL character: {text!r}")
    return text


def log_path(path: str) -> str:
    return path + "-wal"


#: how many times an open follows a data set deleted and defined again while it waited for the latch
_REOPENS = 5
#: how many times an open reads again a header that fails its check while another open exists (2 ms apart)
_HEADER_TRIES = 50


def same_file(fd: int, path: str) -> bool:
    """Whether the open descriptor ``fd`` is the file now at ``path`` (same device and inode)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


class Pager:
    """Owns the file descriptors of one open data set. Not thread-safe: one Pager per thread of use."""

    #: the shared state (:mod:`ksds.coherence`) of a shared open (None: none, or not shared)
    shm: SharedState | None

    def __init__(
        self,
        path: str,
        *,
        writable: bool,
        power: bool,
        buffer_space: int,
        rls: bool = False,
        lock_timeout: float = 0.0,
        restamp: Callable[[Pager], None] | None = None,
    ) -> None:
        self.path = path
        #: before the CIs of the log are written in place: make the index keep the stamps of their images
        #: (:func:`ksds.btree.restamp`; the pager sits below the tree, so the tree hands it in)
        self.restamp = restamp
        self._restamping = False
        self.writable = writable
        self.power = power
        #: every write and sync goes through the one I/O path (the crash tests' when they run)
        self.io = fileio.IO
        #: seconds a latch wait may take before LatchTimeoutError (0: forever)
        self.lock_timeout = lock_timeout
        self.fd = -1
        # The file at ``path`` may be deleted (ksds.delete) or deleted and defined again while we wait for the
        # latch: after taking it, make sure the descriptor is still the file at the path (as SQLite checks the
        # device and inode), else open the path again. Nothing is ever acknowledged to a removed data set.
        for _ in range(_REOPENS):
            self._open_file(path, writable)
            try:
                self.locks = OpenLocks(self.fd, path, can_write=self._rw)
                self.locks.latch(True, lock_timeout)  # no checkpoint rewrites the header while we read it
                try:
                    if not same_file(self.fd, path):
                        self._close_fds()
                        continue
                    self.defn, self.created, self.state = self._read_header()
                    alone = self.locks.acquire(writable=writable, rls=rls, share_region=self.state.share_region)
                    if power:
                        self.locks.announce_power()
                    self._setup(buffer_space, alone, rls)
                    return
                finally:
                    if self.fd >= 0:
                        self.locks.unlatch()
            except OSError as e:
                self._close_fds()
                raise KsdsError(f"{path}: cannot open: {e}") from e
            except BaseException:
                self._close_fds()
                raise
        raise KsdsError(f"{path}: the data set was deleted and defined again {_REOPENS} times while opening it")

    def _read_header(self) -> tuple[Definition, int, State]:
        """The header, read holding the latch. An exclusive updater (SHAREOPTIONS(1), not shared) writes it at its
        checkpoints without the latch, so a header that fails its check while another open exists is read again
        for a moment (that open then refuses ours as in use) before it counts as damage."""
        for _ in range(_HEADER_TRIES):
            try:
                return decode_header(os.pread(self.fd, HEADER_MAX, 0), self.path)
            except CorruptionError:
                if self.locks.alone():
                    raise
                time.sleep(0.002)
        return decode_header(os.pread(self.fd, HEADER_MAX, 0), self.path)

    def _open_file(self, path: str, writable: bool) -> None:
        if not os.path.exists(path):
            raise DatasetNotFoundError(f"no data set at {path}")
        if os.path.isdir(path):
            raise NotADatasetError(f"{path} is a directory, not a ksds data set")
        # read-write whenever the file allows it, even for mode "r": exclusive locks (the latch, recovery)
        # need a descriptor open for writing; mode "r" still refuses every update request
        self._rw = writable or os.access(path, os.W_OK)
        try:
            self.fd = os.open(path, os.O_RDWR if self._rw else os.O_RDONLY)
        except FileNotFoundError:
            raise DatasetNotFoundError(f"no data set at {path}") from None
        except PermissionError as e:
            raise KsdsError(f"{path}: cannot open for {'update' if writable else 'reading'}: {e.strerror}") from None

    def _close_fds(self) -> None:
        if getattr(self, "fmap", None) is not None:
            self.fmap.close()
        shm = getattr(self, "shm", None)
        if shm is not None:
            shm.close()
            self.shm = None
        if self.fd >= 0:
            if hasattr(self, "locks"):
                self.locks.close()  # the portable locks' own descriptors (OFD locks go with the data file)
            os.close(self.fd)
            self.fd = -1
        journal = getattr(self, "journal", None)
        if journal is not None and journal.fd >= 0:
            journal.close(remove=False)

    def _setup(self, buffer_space: int, alone: bool, rls: bool) -> None:
        """The rest of opening, under the exclusive latch."""
        path = self.path
        self.ci_size = self.defn.ci_size
        #: the B+-trees of the file by tree id (:mod:`ksds.tree`): the base cluster's (0), whose meta is
        #: :attr:`state` (rebound by :meth:`set_state`), and alternate indexes' (:meth:`add_tree`)
        base = self.base = Tree(self, BASE, self.defn, self.state)
        self.trees: dict[int, Tree[Pager]] = {BASE: base}
        #: the base cluster's codec (for what only ever sees the base, and for what any codec does: checks, stamps)
        self.codec = base.codec
        #: the codec of each tree id (None: no such tree), which a CI's descriptor names
        self.codecs: list[Codec | None] = [None] * MAX_TREES
        self.codecs[BASE] = base.codec
        #: each tree's record layout, which the log's record operations need (shared with the journal)
        self.layouts: dict[int, tuple[int, int, int]] = {BASE: base.codec.layout}
        self._flags_at = self.ci_size - TRAILER.size + FLAGS_AT
        #: several processes may use the data set: requests go through begin()/end()
        self.shared = rls or self.state.share_region >= 2
        self.dirty: dict[int, AnyCI] = {}
        self.state_dirty = False
        #: the shared state (:mod:`ksds.coherence`), mapped at the end of opening, and the change counter at which
        #: this open's view was last known current (-1: not known; the next request reads the log under the latch)
        self.shm = None
        self.seen = -1
        #: the in-place counter when :attr:`seen` was taken: a read without the latch may go on during the change
        #: that began since only while no CI was written in place since (a checkpoint inside that change would
        #: have left the file newer than this view)
        self.seen_ip = -1
        #: CI -> log offset of the newest committed transaction that changed it, in the current log generation
        #: (not yet in place)
        self.walmap: dict[int, int] = {}
        #: CI -> its newest committed image, for every CI of :attr:`walmap`: a pool miss and the checkpoint take
        #: it from here, never from the log (whose frames may hold record operations only). Bounded by the log's
        #: size: each CI in it has a whole image frame in it. Another process's record operations, read while
        #: catching up, stay a :class:`~ksds.journal.Pending` image until the CI is read or written in place
        self.images: dict[int, bytes | Pending] = {}
        self.view_salt: int | None = None  # the log generation this process has read (up to journal.offset)
        self.view_changed = False  # begin() found transactions of other processes
        #: an I/O error after a log append: the log may hold a transaction the caller was told failed
        self.failed: OSError | None = None
        self.pool = BufferPool(capacity_for(buffer_space, self.ci_size), self.dirty)
        #: an exclusive open (nobody else changes the file) reads clean CIs through a read-only map of the file:
        #: no system call, no copy for a lookup; each image CRC-checked once per open
        self.fmap = FileMap(self.fd, self.ci_size, self.io)
        self.journal = Journal(log_path(path), self.ci_size, self.created, self.layouts)
        self.journal.on_commit = self.layouts_of
        if self.state.aixes:
            self._sync_trees()
        #: the most record operations a data CI's log frame holds (more: its whole image is logged instead)
        self.max_ops = max(1, (self.ci_size // 2) // (self.defn.record_length + 4))
        self.file_size = os.fstat(self.fd).st_size
        self.recovery: Recovery | None = None
        have_log = os.path.exists(self.journal.path)
        if have_log and alone:
            self.recovery = self._recover()
            have_log = False
        elif self.file_size < self.state.hurba * self.ci_size and alone:
            raise self._truncated()
        elif have_log:
            have_log = self.journal.join(self.writable)
            if have_log and self.writable and self.journal.stale():
                # left by an earlier data set of this name and kept by readers that could not remove it (they
                # ignore it); nobody's transactions are in it
                log.warning("%s: replacing a log left by an earlier data set of the same name", path)
                self.journal.close(remove=True)
                have_log = False
        if self.writable and not have_log:
            # power mode: a log of real blocks up to the checkpoint size, so each request syncs data only
            self.journal.create(
                sync=self.power,
                durable_cis=self.state.hurba,
                preallocate=CHECKPOINT_BYTES + (1 << 20) if self.power else 0,
            )
            self.view_salt = self.journal.salt
        elif have_log:
            self._sync_view()
        self.committed = self.state.pack()
        if self.shared and self.locks.supports_shared_state:
            self._map_shared_state()

    # --- trees ----------------------------------------------------------------------------------------------

    def add_tree(self, tid: int, defn: Definition, meta: AixMeta) -> Tree[Pager]:
        """Make tree ``tid`` (an alternate index: 1..15) known to this open: its CIs, whose descriptors carry
        ``tid``, are decoded with the codec of ``defn`` (its record layout; the data set's CI size and CIs per CA)
        from here on, and its meta is ``meta`` (its entry in the state's catalog). :meth:`set_state` calls it for
        every alternate index of the catalog."""
        if not 0 < tid < MAX_TREES or tid in self.trees:
            raise InvalidRequestError(f"{self.path}: tree id {tid} is taken or outside 1..{MAX_TREES - 1}")
        if defn.ci_size != self.ci_size or defn.cis_per_ca != self.defn.cis_per_ca:
            raise InvalidRequestError(f"{self.path}: a tree's CI size and CIs per CA are the data set's")
        tree = Tree(self, tid, defn, meta)
        self.trees[tid] = tree
        self.codecs[tid] = tree.codec
        self.layouts[tid] = tree.codec.layout
        return tree

    def drop_tree(self, tid: int) -> None:
        """Forget tree ``tid`` (an alternate index no longer in the catalog)."""
        if tid != BASE and self.trees.pop(tid, None) is not None:
            self.codecs[tid] = None
            del self.layouts[tid]

    def tree_of(self, a: AixMeta) -> Tree[Pager]:
        """The tree of alternate index ``a`` (an entry of the current state's catalog). O(1)."""
        t = self.trees.get(a.tid)
        if t is None or t.meta is not a:
            self._sync_trees()
            t = self.trees[a.tid]
        return t

    def set_state(self, state: State) -> None:
        """Make ``state`` this open's state (it replaces the state object): tree 0's meta follows it, and so do the
        alternate indexes' trees, one per entry of its catalog (made, rebound to their entry, or forgotten). O(1)
        without alternate indexes, O(A) with A of them."""
        self.state = state
        self.base.meta = state
        if state.aixes or len(self.trees) > 1:
            self._sync_trees()

    def _sync_trees(self) -> None:
        """The trees of the current state's catalog: each alternate index's made if new (or defined again with
        another layout), its meta rebound to its entry; the trees of the ones that are gone forgotten."""
        want = {a.tid: a for a in self.state.aixes}
        for tid in [t for t in self.trees if t != BASE and t not in want]:
            self.drop_tree(tid)
        for tid, a in want.items():
            t = self.trees.get(tid)
            defn = tree_definition(self.defn, a)
            if t is not None and t.defn.layout != defn.layout:
                self.drop_tree(tid)
                t = None
            if t is None:
                t = self.add_tree(tid, defn, a)
            elif t.defn != defn:
                t.size(defn)
            t.meta = a

    def layouts_of(self, state: bytes) -> None:
        """Learn the layouts of the alternate indexes a commit frame's state names (its catalog), for the record
        operations of their CIs that later frames carry (recovery and catch-up read a log that may define an
        alternate index before it changes its CIs). O(1) for a state without a catalog."""
        if len(state) > STATE_SIZE:
            for a in State.unpack(state).aixes:
                # the layout the catalog gives now (a tree id freed by DELETE AIX may be another AIX's since)
                self.layouts[a.tid] = tree_definition(self.defn, a).layout

    def _map_shared_state(self) -> None:
        """Map the shared state (at open, under the exclusive latch, with a view that has read the whole log)."""
        locks = self.locks
        users, without = locks.shared_state_users()
        shm = None if without else SharedState.open(self.path, self.created, users, locks.can_write)
        if shm is None and locks.can_write and users:
            raise KsdsError(
                f"{self.path}: other opens share the data set through {shm_path(self.path)}, which this process "
                f"cannot write: give it write access to that file and its directory"
            )
        if shm is not None or locks.can_write:
            locks.announce_shared_state(shm is not None)
        self.shm = shm
        if shm is not None:
            c = shm.settle()
            self.seen = -1 if c & 1 else c
            self.seen_ip = shm.in_place

    # --- reading --------------------------------------------------------------------------------------------

    def get(self, ci: int, expect: int = 0) -> AnyCI:
        """The CI numbered ``ci``, from the pool or the file (checked: CRC32C, self-address, and read from the file,
        the stamp ``expect`` its index entry keeps, unless 0)."""
        obj = self.pool.get(ci)
        if obj is not None:
            obj.ref = True
            return obj
        return self.load(ci, True, expect)

    def peek(self, ci: int, expect: int = 0) -> AnyCI:
        """Like :meth:`get`, but a CI read from disk is not added to the pool (browses: a scan neither evicts
        the working set nor pays for pool upkeep)."""
        obj = self.pool.get(ci)
        if obj is not None:
            obj.ref = True
            return obj
        return self.load(ci, False, expect)

    def load(self, ci: int, cache: bool = True, expect: int = 0) -> AnyCI:
        if not 0 < ci < self.state.hurba:
            raise DamagedCIError(
                f"{self.path}: the index points at CI {ci}, outside the data set (HI-U-RBA "
                f"{self.state.hurba * self.ci_size})",
                ci,
            )
        data = self._newest(ci)  # the log's newest image: the newest by construction, not checked
        crc = True
        mapped = False
        if data is None:
            fmap = self.fmap
            if ci >= fmap.mapped and not self.shared:
                fmap.grow()
            if fmap.is_checked(ci):  # checked before: a copy from the map, no system call, no CRC
                data = fmap.image(ci)
                crc = False
            else:  # first touch: pread is cheaper than a page fault of the map (2 vs 5 us with the CRC)
                data = os.pread(self.fd, self.ci_size, ci * self.ci_size)
                mapped = True
            self.state.excps += 1
        else:
            expect = 0
        self.pool.misses += 1
        # the codec of the tree the descriptor names (an unknown tree id: codec_for names the CI)
        codec = self.codecs[data[self._flags_at] >> TID_SHIFT] if len(data) == self.ci_size else self.codec
        if codec is None:
            codec = codec_for(self.codecs, data, ci, crc)
        obj = codec.decode(data, ci, crc)
        if crc and mapped:
            self.fmap.mark(ci)
        if expect:  # read from the file: it must be the image its index entry saw written (lost writes)
            stamp = self.codec.stamp(data)
            if stamp != expect:
                raise self.codec.stale(ci, stamp, expect)
        if cache or self.pool.used < self.pool.capacity:  # a browse still caches while there is room
            self.pool.put(obj)
        return obj

    def view(self, ci: int, expect: int = 0, tid: int = BASE) -> tuple[bytes | bytearray | mmap.mmap, int, int]:
        """``(buffer, offset, count)``: where the ``count`` records of data CI ``ci`` of tree ``tid`` lie, for a
        lookup that reads them in place without adding the CI to the pool. In an exclusive open, a CI whose newest
        image is the file's is read through the map: its CRC32C once per open, its self-address, type, tree id and
        the stamp ``expect`` its index entry keeps (lost writes) at every lookup. Otherwise the CI as :meth:`get`
        gives it (decoded by the codec its descriptor names). O(1)."""
        at = self._in_place(ci)
        if at is not None:
            buf, base = at
            kind, flags, count, number, stamp, _ = TRAILER.unpack_from(buf, base + self.codec.trailer_off)
            if kind == CI_DATA and number == ci and flags == tid << TID_SHIFT:
                if expect and stamp != expect:
                    raise self.codec.stale(ci, stamp, expect)
                return buf, base, count
        obj = self.get(ci, expect)
        if type(obj) is not DataCI or obj.tid != tid:
            raise self.codec.damaged(ci, f"is {describe(obj)} where the index of tree {tid} expects a data CI")
        return obj.buf, 0, obj.n

    def _in_place(self, ci: int) -> tuple[bytes | mmap.mmap, int] | None:
        """Where CI ``ci``'s image can be read in place: (the file's map, its offset), or on its first touch in this
        open (bytes read with ``pread``, 0) after its CRC32C check; None when the file does not hold its newest
        image (it is pooled or in the log) or the open shares the data set (no map). O(1)."""
        fmap = self.fmap
        if ci >= fmap.mapped and not self.shared:
            fmap.grow()
        if ci >= fmap.mapped or ci in self.pool.map or ci in self.images or ci in self.walmap:
            return None
        mm = fmap.mm
        assert mm is not None
        base = ci * self.ci_size
        checked = fmap.checked
        if checked[ci >> 3] >> (ci & 7) & 1:
            return mm, base
        # first touch in this open: read and check it (pread is cheaper than the map's page fault); the map serves
        # the next lookups
        data = os.pread(self.fd, self.ci_size, base)
        self.codec.check(data, ci)
        checked[ci >> 3] |= 1 << (ci & 7)
        self.state.excps += 1
        self.pool.misses += 1
        return data, 0

    def index_entry(self, ci: int, expect: int, key: bytes, tid: int = BASE) -> tuple[int, int, int] | None:
        """The entry a search for ``key`` follows in index CI ``ci`` of tree ``tid``, read in place from the file's
        map without decoding or pooling the CI, with the codec its descriptor names: (level of the CI, its entry's
        CI pointer, the entry's stamp). None when the CI is not a clean mapped CI (it is pooled, in the log, or
        the open shares the data set) or is not an index CI of that tree: use :meth:`get` (which names what is
        wrong). Checked as :meth:`view` checks a data CI. O(log entries)."""
        at = self._in_place(ci)
        if at is None:
            return None
        buf, base = at
        kind, flags, count, number, _, _ = TRAILER.unpack_from(buf, base + self.codec.trailer_off)
        codec = self.codecs[flags >> TID_SHIFT]
        if (
            kind not in (CI_SEQUENCE_SET, CI_INDEX_SET)
            or number != ci
            or codec is None
            or codec.tid != tid
            or not 0 < count <= codec.index_cap
        ):
            return None  # get() names what is wrong
        level = flags & LEVEL_MASK
        if expect:
            stamp = codec.own_stamp_in(buf, base)
            if stamp != expect:
                raise codec.stale(ci, stamp, expect)
        entry = codec.entry_in(buf, base, count, key)
        return None if entry is None else (level, entry[0], entry[1])

    # --- sharing ----------------------------------------------------------------------------------------------

    def begin(self, exclusive: bool) -> None:
        """Start a request in shared mode: take the latch and catch up with other processes' transactions (none
        to read when the shared change counter has not moved since this open's view was current: no system call
        beyond the latch's). A begin ends a change that a dead process left unfinished."""
        self.locks.latch(exclusive, self.lock_timeout)
        try:
            shm = self.shm
            if shm is not None and shm.counter == self.seen:
                self.view_changed = False
                return
            self._sync_view()
            if shm is not None:
                # an odd counter while we hold the latch (either mode: every change is made holding it
                # exclusively) was left by a process that died inside its change: end it, so that readers without
                # the latch catch up with what it committed before anyone returns it
                c = shm.settle()
                self.seen = -1 if c & 1 else c
                self.seen_ip = shm.in_place
        except BaseException:
            self.locks.unlatch()
            raise

    def read_begin(self) -> int:
        """For a read without the latch: a token (>= 0) if it may go on, after bringing this open's view up to date
        when needed; -1: take the latch. A read may go on while no CI is being written in place (the shared
        state's in-place counter is even) and this open's view is current: nothing changed since it was (the
        change counter is the value then), or only the change in progress began since (one above: a commit appends
        to the log, which the read does not look at, and nobody was told of it) while no CI was written in place
        since the view was current (the in-place counter is the value then: a checkpoint inside that change leaves
        the file newer than the view). When the change counter moved further and no change is in progress (even),
        the committed transactions past the view are read from the log first, as :meth:`begin` reads them. After
        the read, :meth:`read_valid` says whether it stands. O(1) and no system call when nothing moved."""
        shm = self.shm
        if shm is None:
            return -1
        token = shm.in_place
        if token & 1:
            return -1
        c = shm.counter
        seen = self.seen
        if c != seen and not (c & 1 and c == seen + 1 and token == self.seen_ip):
            if c & 1:
                return -1
            try:
                self._sync_view()
            except (KsdsError, OSError):
                return -1  # a torn header or frame of a change that began meanwhile: the latch will tell
            self.seen = c
            self.seen_ip = token
        return token

    def read_valid(self, token: int) -> bool:
        """Whether a read begun with ``token`` (:meth:`read_begin`) stands: no CI was written in place meanwhile."""
        shm = self.shm
        return shm is not None and shm.in_place == token

    def end(self) -> None:
        if self.fd >= 0:  # after close the number may be another file's: never unlock through it
            self.locks.unlatch()

    def _sync_view(self) -> None:
        """Read what other processes committed since we last looked (call under the latch)."""
        j = self.journal
        self.view_changed = False
        if j.fd < 0 and not j.join(self.writable):
            return  # no log yet: nobody has written
        head = j.header()
        if head is None:
            if not self.writable:
                j.close(remove=False)  # a stale log, which an updater may replace: look at the path again next time
            return
        salt = head[0]
        j.salt = salt  # frames we append belong to this generation
        j.generation = head[1]
        if salt != self.view_salt:
            # a new log generation: someone checkpointed (or we just joined); start from the header, read (and
            # checked) before anything of the view changes: a reader without the latch may meet a torn one
            state = decode_header(os.pread(self.fd, HEADER_MAX, 0), self.path)[2]
            self.view_salt = salt
            self.walmap.clear()
            self.images.clear()
            self.pool.clear()
            j.offset = LOG_HEADER_SIZE
            self._adopt(state)
            self.view_changed = True
        txns, end = j.scan(j.offset, salt, self.state.txn, self.images, lazy=True)
        if not txns:
            return
        walmap = self.walmap
        images = self.images
        drop = self.pool.drop
        at = j.offset
        for _, frames, _ in txns:
            for ci, image in frames:
                walmap[ci] = at
                images[ci] = image
                drop(ci)
        self._adopt(State.unpack(txns[-1][2]))
        j.offset = end
        self.view_changed = True

    def _adopt(self, state: State) -> None:
        """Take another process's state, keeping this process's own retrieval and I/O counts."""
        mine = self.state
        state.rec_retrieved = max(state.rec_retrieved, mine.rec_retrieved)
        state.excps = max(state.excps, mine.excps)
        self.set_state(state)
        self.committed = state.pack()
        self.file_size = os.fstat(self.fd).st_size
        self.sync_defn()  # another process may have run ALTER

    def sync_defn(self) -> None:
        """Make the definition's FREESPACE and SHAREOPTIONS those of the state (ALTER changes the state)."""
        st = self.state
        fs = (st.freespace_ci, st.freespace_ca)
        so = (st.share_region, st.share_system)
        if self.defn.freespace != fs or self.defn.share_options != so:
            self.defn = dataclasses.replace(self.defn, freespace=fs, share_options=so)
            self.base.size(self.defn)

    # --- changing ---------------------------------------------------------------------------------------------

    def dirty_ci(self, obj: AnyCI) -> None:
        """Mark a CI changed by the transaction in progress (and keep it in the pool until the commit)."""
        ci = obj.ci
        self.dirty[ci] = obj
        if self.pool.get(ci) is not obj:
            self.pool.put(obj)

    def forget(self, ci: int) -> None:
        """CI ``ci`` left the tree in the transaction in progress (a data CI emptied, a CA's CIs moved or reused):
        it is neither changed nor pooled any more. O(1)."""
        self.dirty.pop(ci, None)
        self.pool.drop(ci)

    # --- transactions -------------------------------------------------------------------------------------

    def commit(self) -> None:
        """Make the changes since the last commit one atomic, durable transaction."""
        dirty = self.dirty
        if not dirty and not self.state_dirty:
            return
        if self.failed is not None:
            raise KsdsError(
                f"{self.path}: updates stopped after an I/O error ({self.failed}); close and reopen the data set "
                f"(recovery keeps or drops the request that failed, as the log holds it)"
            )
        st = self.state
        st.txn += 1
        txn = st.txn
        trees = self.trees
        walmap = self.walmap
        most_ops = self.max_ops
        changes: list[tuple[int, bytes, list[Op] | None]] = []
        for ci, obj in dirty.items():
            ops = None
            if type(obj) is DataCI:
                ops = obj.ops
                obj.ops = None
                # record operations only where the log holds the image they apply to (this generation's), and
                # while they are smaller than the image
                if ops is not None and (ci not in walmap or len(ops) > most_ops):
                    ops = None
            changes.append((ci, trees[obj.tid].codec.encode(obj, txn), ops))
        need = st.hurba * self.ci_size
        blob = st.pack()
        appended = self.journal.offset
        self._in_change(self._commit, changes, txn, blob, need, appended)

    def _in_change(self, fn: Callable[..., None], *args: Any) -> None:
        """``fn(*args)``, a change to the log or the file, inside the shared state's change bracket (odd counter);
        this open's view is current at its end. Just ``fn(*args)`` without a shared state."""
        shm = self.shm
        if shm is None:
            fn(*args)
            return
        shm.begin_change()
        try:
            fn(*args)
        finally:
            self.seen = shm.end_change()
            self.seen_ip = shm.in_place

    def _commit(
        self, changes: list[tuple[int, bytes, list[Op] | None]], txn: int, blob: bytes, need: int, appended: int
    ) -> None:
        """The commit's writes (inside the shared state's change bracket)."""
        walmap = self.walmap
        dirty = self.dirty
        try:
            if need > self.file_size:
                self._truncate(need)
            self.journal.append(changes, txn, blob)
            faults.crashpoint("log-written")
            if self.power:
                self.journal.sync()
            images = self.images
            for ci, image, _ in changes:
                walmap[ci] = appended
                images[ci] = image
        except OSError as e:
            if self.journal.offset != appended:
                self.failed = e  # the commit frame may be in the log: no further transaction may follow it
            self._io_failed(e)
        faults.crashpoint("request-done")
        dirty.clear()
        self.state_dirty = False
        self.committed = blob
        if self.journal.offset >= CHECKPOINT_BYTES and not self._restamping:
            try:
                self.checkpoint()
            except KsdsError as e:
                # the request is committed (in the log); the next one reports that the data set needs reopening
                log.error("%s: checkpoint failed: %s", self.path, e)

    def _flush(self) -> None:
        """Copy the CIs of the current log generation in place (their newest images, in CI order)."""
        fd = self.fd
        cisz = self.ci_size
        io = self.io
        newest = self.committed_image
        mark = self.fmap.mark
        for ci in sorted(self.walmap):
            io.pwrite(fd, DATA, newest(ci), ci * cisz)
            mark(ci)  # our own image: checked when it was made
            faults.crashpoint("ci-written")

    def _write_in_place(self) -> None:
        """The log's CIs and the header, written in place, with the shared state's in-place counter odd meanwhile
        (readers without the latch then read again)."""
        shm = self.shm
        if shm is not None:
            shm.begin_in_place()
        try:
            self._flush()
            self._write_header()
        finally:
            if shm is not None:
                shm.end_in_place()

    def committed_image(self, ci: int) -> bytes:
        """The image of CI ``ci`` as the current log generation last committed it (it must be in :attr:`walmap`)."""
        image = self._newest(ci)
        assert image is not None
        return image

    def _newest(self, ci: int) -> bytes | None:
        """CI ``ci``'s newest image in the log's generation (:attr:`images`; a pending one is built now, and kept),
        or None if the log has none. O(1), or the operations of a pending image."""
        image = self.images.get(ci)
        if type(image) is Pending:
            image = self.images[ci] = image.image()
        return image  # type: ignore[return-value]

    def _stamp_index(self) -> None:
        """Before the CIs of the log go in place: one more transaction, in which the index entries (and the state,
        for the top CI) take the stamps of the images their children will have in the file."""
        if self.restamp is None or not self.walmap or self._restamping:
            return
        self._restamping = True
        try:
            self.journal.make_writable()
            self.restamp(self)
            self.commit()
        finally:
            self._restamping = False

    def rollback(self) -> None:
        """Forget every change since the last commit (the pool drops the changed CIs; the state goes back)."""
        for ci in self.dirty:
            self.pool.drop(ci)
        self.dirty.clear()
        st = self.state
        keep = st.rec_retrieved, st.excps
        self.set_state(State.unpack(self.committed))
        self.state.rec_retrieved, self.state.excps = keep
        self.state_dirty = False
        self.sync_defn()

    def _io_failed(self, e: OSError) -> None:
        """An I/O error mid-commit: undo the transaction in memory and raise a ksds error."""
        self.rollback()
        self.pool.clear()
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise NoSpaceError(f"{self.path}: no space to extend the data set or its log: {e.strerror}") from e
        raise KsdsError(f"{self.path}: I/O error: {e}") from e

    def _truncate(self, size: int) -> None:
        self.io.truncate(self.fd, DATA, size)
        self.file_size = size

    def _write_header(self) -> None:
        self.io.pwrite(self.fd, DATA, encode_header(self.defn, self.created, self.state, self.ci_size), 0)

    def _sync_data(self) -> None:
        self.io.datasync(self.fd, DATA)  # the data and the file's size

    def checkpoint(self) -> None:
        """Write the logged CIs in place and the header; sync the data file (in power mode, or when another
        process sharing the log has acknowledged power-safe requests); start a new log generation."""
        self._in_change(self._checkpoint)

    def _checkpoint(self) -> None:
        sync = self.power or (self.shared and self.locks.power_users())
        self._stamp_index()
        try:
            self._write_in_place()
            faults.crashpoint("checkpoint-header")
            if sync:
                self._sync_data()
            self.journal.reset(sync=sync, durable_cis=self.state.hurba)
        except OSError as e:
            self.failed = e  # the log must stay as it is: recovery at the next open replays it
            raise KsdsError(f"{self.path}: checkpoint failed: {e}") from e
        self.walmap.clear()
        self.images.clear()
        self.view_salt = self.journal.salt
        faults.crashpoint("checkpoint-done")

    def sync(self) -> None:
        """Put every committed transaction on stable storage (one log sync)."""
        self.journal.sync()

    def close(self) -> None:
        """Commit what is pending; the last opener (reader or updater, if it can write the file) writes
        everything in place and removes the log. After an I/O error the log is left for recovery."""
        if self.fd < 0:
            return
        try:
            if self.failed is None and (self.writable or self.shared) and self.locks.can_write:
                if self.shared:
                    try:
                        self.begin(True)
                    except LatchTimeoutError as e:
                        # every request of ours is committed (a batch was rolled back): the opener that holds
                        # the latch, or the last one to close, writes the log in place
                        log.warning("%s: closed without a checkpoint: %s", self.path, e)
                        return
                if self.writable:
                    self.commit()
                if self.locks.alone() and self.journal.fd >= 0:
                    self._in_change(self._write_back)
        except OSError as e:
            raise KsdsError(f"{self.path}: close failed: {e} (the log is kept: the next open recovers)") from e
        finally:
            self._close_fds()  # closing the data file drops our open-mode locks and the latch

    def _write_back(self) -> None:
        """The last close: every CI of the log in place (the index's stamps first), synced, and the log removed."""
        self._stamp_index()
        self._write_in_place()
        self._sync_data()
        self.journal.close(remove=True)

    def abandon(self) -> None:
        """Close the files without writing anything (what a crash leaves; for tests)."""
        if self.fd >= 0:
            self._close_fds()

    # --- recovery -------------------------------------------------------------------------------------------

    def _truncated(self) -> CorruptionError:
        want = self.state.hurba * self.ci_size
        first = self.file_size // self.ci_size
        return CorruptionError(
            f"{self.path} is truncated: HI-U-RBA is {want} but the file has {self.file_size} bytes "
            f"(CIs {first} to {self.state.hurba - 1} are missing)"
        )

    def _recover(self) -> Recovery | None:
        """Replay the log left by a data set that was not closed cleanly."""
        replay = self.journal.read()
        if replay.stale:
            log.warning("%s: ignoring a log left by an earlier data set of the same name", self.path)
            if self.file_size < self.state.hurba * self.ci_size:
                raise self._truncated()
            if self.writable:
                self.io.unlink(self.journal.path, fileio.LOG)
            return None
        durable = replay.durable_cis if replay.durable_cis >= 0 else self.state.hurba
        if self.file_size < durable * self.ci_size:
            # CIs the last checkpoint made durable are gone: not repairable from the log. (The header may say more
            # than the file holds when a power cut came between a checkpoint's header write and its sync; the log
            # then still holds those CIs, and replay rewrites them.)
            self.state.hurba = durable
            raise self._truncated()
        if not self.locks.can_write:
            raise KsdsError(f"{self.path} was not closed cleanly and needs recovery, which needs write access")
        self._replay(self.fd, replay)
        frames = sum(len(images) for _, images, _ in replay.transactions)
        rec = Recovery(
            transactions=len(replay.transactions),
            frames=frames,
            discarded_frames=replay.discarded_frames,
            discarded_bytes=replay.discarded_bytes,
            damaged_at=replay.damaged_at,
        )
        log.warning("%s was not closed cleanly: %s", self.path, rec)
        return rec

    def _replay(self, fd: int, replay: Replay) -> None:
        """Take the log's committed transactions as this open's own, then write them in place as a checkpoint does
        (the index's stamps first, in one more transaction, synced before anything goes in place); remove the log.
        Idempotent: a crash in the middle leaves a log that replays to the same data set."""
        cisz = self.ci_size
        io = self.io
        file_hurba = self.state.hurba  # the header's: what the file held at the last checkpoint
        for _, images, _state in replay.transactions:
            for ci, image in images:
                if ci:
                    self.images[ci] = image
                    self.walmap[ci] = -1  # the image is in ``images``
        if replay.transactions:
            self.set_state(State.unpack(replay.transactions[-1][2]))
        self.committed = self.state.pack()
        need = self.state.hurba * cisz
        if os.fstat(fd).st_size < need:
            io.truncate(fd, DATA, need)  # CIs allocated after the last checkpoint and never written
        self.file_size = os.fstat(fd).st_size
        j = self.journal
        j.fd = os.open(j.path, os.O_RDWR)
        j.writable = True
        j.size = os.fstat(j.fd).st_size
        j.offset = replay.end
        if replay.version != LOG_VERSION:
            j = self._convert_log(j, replay.durable_cis if replay.durable_cis >= 0 else file_hurba)
        self.view_salt = j.salt
        if self.walmap and self.restamp is not None:
            self._stamp_index()
            j.sync()  # the stamps' transaction is durable before any CI it changes goes in place
        self._flush()
        io.pwrite(fd, DATA, encode_header(self.defn, self.created, self.state, cisz), 0)
        io.fullsync(fd, DATA)
        j.close(remove=True)
        self.walmap.clear()
        self.images.clear()
        self.pool.clear()


    def _convert_log(self, old: Journal, durable_cis: int) -> Journal:
        """Recovery of a log of an earlier version: its committed transactions, replayed, are written as one
        transaction of whole images to a new log of this version beside it, synced, and renamed over it (then the
        directory synced), so that what recovery appends next is in this version's format. A crash before the
        rename leaves the old log, which replays the same. O(CIs in the log)."""
        tmp = old.path + ".convert"
        new = Journal(tmp, self.ci_size, self.created, self.layouts)
        new.create(sync=False, durable_cis=durable_cis)
        new.append([(ci, self.committed_image(ci), None) for ci in sorted(self.walmap)], self.state.txn,
                   self.committed)
        new.sync()
        os.rename(tmp, old.path)
        dirfd = os.open(os.path.dirname(os.path.abspath(old.path)), os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
        new.path = old.path
        old.close(remove=False)
        log.warning("%s: converted its log from an earlier version of ksds", self.path)
        self.journal = new
        return new


def create(path: str, defn: Definition, created: int) -> None:
    """Write a new, empty data set: header, one sequence-set CI, and CA 0 whose first CI is an empty data CI."""
    cisz = defn.ci_size
    codec = Codec(defn, path)
    st = State(
        freespace_ci=defn.freespace[0],
        freespace_ca=defn.freespace[1],
        share_region=defn.share_options[0],
        share_system=defn.share_options[1],
        root=1,
        levels=1,
        hurba=2 + defn.cis_per_ca,
        ca_count=1,
        index_cis=1,
        data_cis=1,
        txn=1,  # the define: its two CIs carry stamp 1, and so do the entry and the state that point at them
        root_stamp=1,
    )
    high = b"\xff" * defn.key_length
    seq = IndexCI(1, 1, 2, [high], [2], [1])
    data = codec.new_data(2, b"", 0)
    # write it under a temporary name, then link it into place: nobody ever sees a half-written data set,
    # and the link fails if the name was taken meanwhile
    if os.path.exists(path):
        from .errors import DatasetExistsError

        raise DatasetExistsError(f"{path} already exists (delete it first, or choose another name)")
    tmp = f"{path}.define-{os.getpid()}-{created}"
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        raise KsdsError(f"cannot create data set {path}: {e.strerror}") from None
    try:
        io = fileio.IO
        io.truncate(fd, DATA, st.hurba * cisz)
        io.pwrite(fd, DATA, encode_header(defn, created, st, cisz), 0)
        io.pwrite(fd, DATA, codec.encode(seq, 1), cisz)
        io.pwrite(fd, DATA, codec.encode(data, 1), 2 * cisz)
        io.fullsync(fd, DATA)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        from .errors import DatasetExistsError

        raise DatasetExistsError(f"{path} already exists (delete it first, or choose another name)") from None
    finally:
        os.unlink(tmp)
    dirfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
    # A log left by an earlier data set of this name is not removed here (someone may have opened the new data
    # set and made its log already): it carries another data set id, and opens ignore it or replace it.
