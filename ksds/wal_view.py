"""A read-only view of a data set: its file with the committed transactions of its log (``PATH-wal``) laid over it.

What EXAMINE, ``ksds map`` and the CLI's readers (LISTCAT, PRINT, REPRO from a data set that another process has
open for update) see, without opening the data set: no open-mode locks, no latch, no recovery, and nothing is
ever written. :class:`View` gives

* the header state as of the last committed transaction (the state its commit frame carries; the header CI's
  state when the log holds none), with the definition's FREESPACE and SHAREOPTIONS as that state has them;
* CI bytes by CI number (:meth:`View.ci`): the newest committed image in the log when it has one, else the file's.

Only frames of committed transactions count, as :meth:`ksds.journal.Journal.read` and
:meth:`~ksds.journal.Journal.scan` define them (a transaction's frames count once its commit frame is there and
checks), so a reader never sees half of a transaction. A log left by another data set of the same name (stale)
is ignored.

**Reading while another process updates** (``live=True``). A writer appends transactions to the log and writes
CIs in place only at a checkpoint (the images of the log's current generation), then rewrites the header CI and
starts a new log generation (see :mod:`ksds.pager`); a close does the same and removes the log. So the file as
read is consistent with the view as long as no checkpoint has written in place a transaction the view does not
have. After each CI read from the file, a live view checks that: the header CI's bytes are unchanged, the log is
the same file in the same generation, and no committed transaction follows the last one it has. If one does (same
generation), the view takes it in (:attr:`View.version` goes up); if anything else changed, the view is read
again from the start (a new version too). Either way the CI is read again. Readers that keep decoded CIs (an
index walk) start over when the version changes; :func:`records` resumes after the last key it gave.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator

from .ci import AnyCI, Codec, DataCI, IndexCI, codec_for
from .definition import Definition
from .errors import CorruptionError, DatasetNotFoundError, JournalCorruptError, KsdsError, NotADatasetError
from .format import HEADER_MAX, State, decode_header
from .journal import Journal, Replay
from .locks import OpenLocks
from .pager import data_set_path, log_path
from .tree import TreeLayouts

__all__ = ["View", "in_use", "records"]

#: how many times a live view is read again from the start when it keeps changing before giving up
_RETRIES = 50
#: how many times one CI is read again because the view changed meanwhile
_REREADS = 10000


def in_use(path: str) -> bool:
    """Whether any open of the data set at ``path`` exists now (in this process or another), without taking a
    lock: :meth:`ksds.locks.OpenLocks.alone` on a descriptor of our own (which holds none), as ``ksds.delete``
    asks it."""
    fd = os.open(data_set_path(path), os.O_RDONLY)
    try:
        return not OpenLocks(fd, path, can_write=False).alone()
    finally:
        os.close(fd)


class View:
    """The data set at ``path`` as of its last committed transaction (see the module's docstring).

    Raises :class:`~ksds.DatasetNotFoundError` for a missing file, :class:`~ksds.NotADatasetError` (no ksds
    header) or :class:`~ksds.CorruptionError` (a header CI that fails its check). A damaged log is not raised:
    :attr:`log_error` says what is wrong, and the file is shown without it.
    """

    path: str
    definition: Definition
    created: int
    state: State
    #: the log as read (None: there is none, or it is another data set's)
    replay: Replay | None
    #: the log is damaged (its frames are not laid over the file)
    log_error: JournalCorruptError | None
    #: committed transactions of the log laid over the file
    transactions: int
    #: the data file's HI-U-RBA (CIs) that must be in the file: the log's last checkpoint's, else the header's
    durable_cis: int
    #: goes up each time a live view takes in other transactions or is read again
    version: int

    def __init__(self, path: str, *, live: bool = False) -> None:
        self.path = data_set_path(path)
        self.live = live
        self.version = 0
        if os.path.isdir(self.path):
            raise NotADatasetError(f"{self.path} is a directory, not a ksds data set")
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise DatasetNotFoundError(f"no data set at {self.path}") from None
        self._journal: Journal | None = None
        try:
            self._snapshot()
        except BaseException:
            self.close()
            raise

    # --- the public view ----------------------------------------------------------------------------------

    @property
    def codec(self) -> Codec:
        """The base cluster's codec (tree 0)."""
        return self._codec

    @property
    def codecs(self) -> list[Codec | None]:
        """The codec of each tree id the view knows (None: none): the base cluster's and its alternate indexes'."""
        return self._codecs

    def decode(self, data: bytes, ci: int) -> AnyCI:
        """CI ``ci``'s image decoded with the codec of the tree its descriptor names (checked: a
        :class:`~ksds.DamagedCIError` names the CI). O(1) plus the decode."""
        return codec_for(self._codecs, data, ci).decode(data, ci)

    @property
    def file_size(self) -> int:
        return os.fstat(self._fd).st_size

    def ci(self, n: int) -> bytes:
        """CI ``n``'s bytes: the log's newest committed image, else the file's (short past the end of the file)."""
        cisz = self.definition.ci_size
        for _ in range(_REREADS):
            image = self._overlay.get(n)
            if image is not None:
                return image
            data = os.pread(self._fd, cisz, n * cisz)
            if not self.live or self._current():
                return data
        raise KsdsError(f"{self.path} changes too fast to be read without opening it; try again")

    def in_log(self, n: int) -> bool:
        """Whether CI ``n``'s bytes come from the log (else from the file, where a stale image can lie)."""
        return n in self._overlay

    def close(self) -> None:
        if self._journal is not None and self._journal.fd >= 0:
            self._journal.close(remove=False)
        self._journal = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> View:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading the file and the log ---------------------------------------------------------------------

    def _snapshot(self) -> None:
        """Read the header and the log; a live view retries until it gets a consistent pair."""
        for attempt in range(_RETRIES):
            try:
                self._take()
            except CorruptionError:
                # a header or log read torn by a concurrent checkpoint; a view that is not live reports it
                if not self.live or attempt == _RETRIES - 1:
                    raise
            else:
                # consistent when the file and the log are still the generation read: a transaction committed
                # since is simply not in this version (a live view takes it in at its next CI read from the file)
                if not self.live or self._same_generation() or self._unchanged():
                    return
            time.sleep(0.001 * min(attempt + 1, 20))
        raise KsdsError(f"{self.path} changes too fast to be read without opening it; try again")

    def _take(self) -> None:
        self.version += 1
        if self._journal is not None:
            self._journal.close(remove=False)
            self._journal = None
        head = os.pread(self._fd, HEADER_MAX, 0)
        defn, created, state = decode_header(head, self.path)
        self._head = head = head[: defn.ci_size]  # CI 0 alone (a 512-byte CI is shorter than HEADER_MAX)
        self.created = created
        trees = self._trees = TreeLayouts(defn, self.path, state)
        self._codecs: list[Codec | None] = trees.codecs
        codec = trees.codecs[0]
        assert codec is not None
        self._codec = codec
        self._overlay: dict[int, bytes] = {}
        self._log_id: tuple[int, int] | None = None  # the log file's (device, inode) read, if any
        self._log_head: tuple[int, int] | None = None  # the log's (salt, generation) when it was read
        self._end = 0  # log offset just after the last committed frame read
        self.replay = None
        self.log_error = None
        self.transactions = 0
        self.durable_cis = state.hurba
        journal = Journal(log_path(self.path), defn.ci_size, created, trees.layouts)
        journal.on_commit = trees.learn  # an alternate index defined in the log: its CIs' record operations follow
        if journal.join(False):
            self._journal = journal
            st = os.fstat(journal.fd)
            self._log_id = (st.st_dev, st.st_ino)
            self._log_head = journal.header()
            try:
                replay: Replay | None = journal.read()
            except JournalCorruptError as e:
                if self.live:
                    raise  # perhaps a read torn by the writer: try again
                self.log_error = e
                replay = None
            except FileNotFoundError:
                replay = None  # removed since it was joined: the check afterwards notices
            if replay is not None and not replay.stale:
                if self._log_head is not None and (journal.salt, journal.generation) != self._log_head:
                    self._log_head = (-1, -1)  # a new generation began between the two reads: not consistent
                self.replay = replay
                if replay.durable_cis >= 0:
                    self.durable_cis = replay.durable_cis
                self._end = replay.end
                for _, images, last in replay.transactions:
                    self._overlay.update((ci, image) for ci, image in images if ci)
                    state = State.unpack(last)
                self.transactions = len(replay.transactions)
        self._set_state(defn, state)

    def _set_state(self, defn: Definition, state: State) -> None:
        self.state = state
        self._trees.take(state)
        fs = (state.freespace_ci, state.freespace_ca)
        so = (state.share_region, state.share_system)
        if defn.freespace != fs or defn.share_options != so:
            defn = dataclasses.replace(defn, freespace=fs, share_options=so)  # ALTER since the last checkpoint
        self.definition = defn

    def _unchanged(self) -> bool:
        """Whether the file and the log are as this view read them (nothing written in place since)."""
        if os.pread(self._fd, len(self._head), 0) != self._head:
            return False
        try:
            st = os.stat(log_path(self.path))
        except FileNotFoundError:
            return self._log_id is None
        j = self._journal
        if j is None or self._log_id != (st.st_dev, st.st_ino) or j.header() != self._log_head:
            return False
        if self._log_head is None or self.replay is None:
            return True  # a log with no header of this data set yet, or another data set's
        txns, _ = j.scan(self._end, self._log_head[0], self.state.txn, self._overlay)
        return not txns

    def _current(self) -> bool:
        """After a file read: True if the view is still consistent with the file; else bring it up to date
        (a new version) and return False, so that the read is done again."""
        if self._unchanged():
            return True
        j = self._journal
        head = self._log_head
        if j is not None and head is not None and self.replay is not None and self._same_generation():
            # the same generation: take in the transactions committed since (their frames are in the log)
            txns, end = j.scan(self._end, head[0], self.state.txn, self._overlay)
            images = {ci: image for _, frames, _ in txns for ci, image in frames if ci}
            if txns and self._same_generation():  # (the frames were not overwritten by a new one meanwhile)
                self.version += 1
                self._overlay = {**self._overlay, **images}
                self._end = end
                self.transactions += len(txns)
                self._set_state(self.definition, State.unpack(txns[-1][2]))
                return False
        self._snapshot()
        return False

    def _same_generation(self) -> bool:
        """The header CI unchanged and the log still the one read, in the same generation."""
        j = self._journal
        if j is None or os.pread(self._fd, len(self._head), 0) != self._head or j.header() != self._log_head:
            return False
        try:
            st = os.stat(log_path(self.path))
        except FileNotFoundError:
            return False
        return self._log_id == (st.st_dev, st.st_ino)


def records(view: View, lo: bytes | None = None) -> Iterator[bytes]:
    """The records of ``view`` in key order, from the first key >= ``lo`` (all when None).

    The index is walked from its top CI; when a live view changes (another process's transaction), the walk
    starts again after the last key given, so no record is given twice or skipped because it moved.
    """
    codec = view.codec
    ko, kl = codec.ko, codec.kl
    after: bytes | None = None  # the last key given
    target, strict = lo, False  # where the next data CI is looked for
    cache: dict[int, IndexCI] = {}
    version = view.version
    while True:
        if view.version != version:
            version = view.version
            cache.clear()
            target, strict = (after, True) if after is not None else (lo, False)
        found = _data_ci(view, cache, target, strict)
        if view.version != version:
            continue
        if found is None:
            return
        data, high = found
        changed = False
        for rec in data.recs:
            key = rec[ko : ko + kl]
            if (after is not None and key <= after) or (lo is not None and key < lo):
                continue
            yield rec
            after = key
            if view.version != version:  # (a generator: the view may change while the caller works)
                changed = True
                break
        if changed:
            continue
        if high == b"\xff" * kl:
            return
        target, strict = high, True


def _index(view: View, cache: dict[int, IndexCI], ci: int) -> IndexCI:
    node = cache.get(ci)
    if node is None:
        obj = view.decode(view.ci(ci), ci)
        if not isinstance(obj, IndexCI) or obj.tid != 0:
            raise view.codec.damaged(ci, "is not an index CI, but the index points at it")
        node = cache[ci] = obj
    return node


def _data_ci(
    view: View, cache: dict[int, IndexCI], target: bytes | None, strict: bool
) -> tuple[DataCI, bytes] | None:
    """The data CI whose key range holds the first key at (or, ``strict``, after) ``target``, with its high key;
    None past the last one."""
    version = view.version
    ci = view.state.root
    for _ in range(256):
        node = _index(view, cache, ci)
        if view.version != version:
            return None
        keys = node.keys
        if target is None:
            j = 0
        else:
            j = next((i for i, k in enumerate(keys) if (k > target if strict else k >= target)), -1)
            if j < 0:
                return None
        if node.level == 1:
            ptr = node.ptrs[j]
            obj = view.decode(view.ci(ptr), ptr)
            if not isinstance(obj, DataCI) or obj.tid != 0:
                raise view.codec.damaged(ptr, "is not a data CI, but the sequence set points at it")
            return obj, keys[j]
        ci = node.ptrs[j]
    raise view.codec.damaged(ci, "is more than 255 index levels down")
