"""Control intervals in memory, and their encoding to and from the bytes of one CI.

Three kinds of CI live in the buffer pool:

* :class:`DataCI` -- the CI's bytes: fixed-length records in key order, searched in place (stride
  ``record_length``, key at ``key_offset``) and edited in place in a ``bytearray`` while a transaction changes it;
* :class:`IndexCI` -- index entries, each a high key and a CI pointer; a sequence-set CI (level 1) describes
  one CA and points at its data CIs, an index-set CI (level 2 and up) points at index CIs one level down;
* :class:`FreeCI` -- an index CI or a CA on a free list, chained by ``next``.

Index CIs are decoded into lists (they are few and hot: every request descends through them). Data CIs are not:
a record exists as an object only when a request hands it out.

One data set file holds several B+-trees (:mod:`ksds.tree`): the base cluster's (tree id 0) and, later, its
alternate indexes' (1..15). Each tree has its own :class:`Codec` (its record layout and index capacity) and every
data and index CI carries its tree's id in its descriptor's flags byte; :func:`codec_for` picks the codec a CI
image names. Free CIs belong to no tree.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from typing import Any

from .definition import Definition
from .errors import DamagedCIError
from .format import (
    CI_DATA,
    CI_FREE_CA,
    CI_FREE_INDEX,
    CI_INDEX_SET,
    CI_SEQUENCE_SET,
    CI_TYPE_NAMES,
    FLAGS_AT,
    LEVEL_MASK,
    TID_SHIFT,
    TRAILER,
    TRAILER_NOCRC,
    TRAILER_SIZE,
    crc32c,
)

#: the most records whose keys a lookup unpacks at once (:meth:`Codec.record_keys`) instead of binary-searching
#: slices: a few C calls beat log2(n) Python probes up to about this many
KEYS_AT_ONCE = 16


def stamp_of(txn: int) -> int:
    """The stamp a CI written by transaction ``txn`` carries: its low 32 bits, never 0 (0 in an index entry means
    "not known yet", which is not checked)."""
    return (txn & 0xFFFFFFFF) or 1


def search(buf: Any, base: int, n: int, rl: int, ko: int, kl: int, key: bytes) -> int:
    """Binary search in place: of the ``n`` records of ``rl`` bytes from ``base`` in ``buf`` (a CI's image, or the
    file's map), keys at ``ko`` for ``kl`` bytes, the slot of the first whose key is >= ``key`` (``n`` if none).
    O(log n) key slices, no objects but the slices."""
    ko += base
    end = ko + kl
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) >> 1
        o = mid * rl
        if buf[o + ko : o + end] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


class DataCI:
    """A data CI as its bytes: ``n`` records of ``rl`` bytes from offset 0 of ``buf``, in key order.

    ``buf`` is the CI's image -- the ``bytes`` read from disk or written by the last commit (shared with the log's
    copy: never changed in place) -- or, while a transaction changes the CI, a ``bytearray`` copy of it that the
    edits (:meth:`insert`, :meth:`delete`, :meth:`replace`) change in place and the commit seals (one CRC). A lookup
    binary-searches the records in place (:meth:`find`): no per-record objects on any read or browse path. The
    record layout (``rl``, ``ko``, ``kl``) is its tree's (``tid``), shared by every data CI of that tree.
    """

    __slots__ = ("ci", "buf", "n", "ref", "rl", "ko", "kl", "ops", "tid")
    ci: int
    buf: bytes | bytearray
    n: int
    ref: bool
    rl: int
    ko: int
    kl: int
    #: the record operations since ``buf`` was last a clean image, in order: (op, slot, record or None), op 1
    #: insert, 2 delete, 3 replace (what the log records: :mod:`ksds.journal`); None when the CI's whole image
    #: must be logged (a CI made or laid out anew)
    ops: list[tuple[int, int, bytes | None]] | None
    #: the id of the tree the CI belongs to (0: the base cluster)
    tid: int

    def __init__(
        self, ci: int, buf: bytes | bytearray, n: int, layout: tuple[int, int, int], tid: int = 0
    ) -> None:
        self.ci = ci
        self.buf = buf
        self.n = n
        self.ref = True
        self.rl, self.ko, self.kl = layout
        self.ops = None
        self.tid = tid

    # --- reading: O(log n) search, O(1) slices -------------------------------------------------------------

    def find(self, key: bytes) -> int:
        """The slot of the first record whose key is >= ``key`` (``n`` if none). O(log n) key slices."""
        return search(self.buf, 0, self.n, self.rl, self.ko, self.kl, key)

    def find_after(self, key: bytes) -> int:
        """The slot of the first record whose key is > ``key`` (``n`` if none). O(log n)."""
        buf = self.buf
        rl = self.rl
        ko = self.ko
        end = ko + self.kl
        lo, hi = 0, self.n
        while lo < hi:
            mid = (lo + hi) >> 1
            o = mid * rl
            if buf[o + ko : o + end] <= key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def key_at(self, j: int) -> bytes:
        o = j * self.rl + self.ko
        return bytes(self.buf[o : o + self.kl])

    def record(self, j: int) -> bytes:
        o = j * self.rl
        return bytes(self.buf[o : o + self.rl])

    def records(self, start: int = 0, end: int | None = None) -> list[bytes]:
        """Records ``start`` to ``end`` (exclusive; default: the last), as new ``bytes``. O(records)."""
        rl = self.rl
        stop = self.n if end is None else end
        buf = self.buf
        if type(buf) is not bytes:  # being changed: one copy of the records asked for, then slices of it
            buf = bytes(buf[start * rl : stop * rl])
            start, stop = 0, stop - start
        return [buf[o : o + rl] for o in range(start * rl, stop * rl, rl)]

    def body(self, start: int = 0, end: int | None = None) -> bytes:
        """The bytes of records ``start`` to ``end`` (exclusive; default: the last). O(bytes)."""
        stop = self.n if end is None else end
        return bytes(self.buf[start * self.rl : stop * self.rl])

    @property
    def recs(self) -> list[bytes]:
        """Every record (a new list: for tools and tests, not for hot paths)."""
        return self.records()

    @property
    def keys(self) -> list[bytes]:
        """Every key (a new list: for tools and tests, not for hot paths)."""
        ko, kl, rl, buf = self.ko, self.kl, self.rl, self.buf
        return [bytes(buf[o + ko : o + ko + kl]) for o in range(0, self.n * rl, rl)]

    # --- changing: in place in a bytearray --------------------------------------------------------------------

    def _editable(self) -> bytearray:
        buf = self.buf
        if type(buf) is not bytearray:
            buf = self.buf = bytearray(buf)  # copy on write: the clean image may be shared with the log
            self.ops = []  # a clean image: the log can record what changes from here
        return buf

    def insert(self, j: int, record: bytes) -> None:
        """Put ``record`` at slot ``j``, moving the records from ``j`` on up one slot. O(bytes moved)."""
        buf = self._editable()
        rl = self.rl
        o = j * rl
        end = self.n * rl
        buf[o + rl : end + rl] = buf[o:end]
        buf[o : o + rl] = record
        self.n += 1
        if self.ops is not None:
            self.ops.append((1, j, record))

    def delete(self, j: int) -> None:
        """Remove the record at slot ``j`` (the slot left at the end is zeroed). O(bytes moved)."""
        buf = self._editable()
        rl = self.rl
        o = j * rl
        end = self.n * rl
        buf[o : end - rl] = buf[o + rl : end]
        buf[end - rl : end] = bytes(rl)
        self.n -= 1
        if self.ops is not None:
            self.ops.append((2, j, None))

    def replace(self, j: int, record: bytes) -> None:
        """Replace the record at slot ``j``. O(record length)."""
        o = j * self.rl
        self._editable()[o : o + self.rl] = record
        if self.ops is not None:
            self.ops.append((3, j, record))

    def assign(self, body: bytes, n: int) -> None:
        """Make the CI hold the ``n`` records laid end to end in ``body`` (the rest of its record area zeroed)."""
        buf = self._editable()
        self.ops = None
        old, new = self.n * self.rl, len(body)
        buf[:new] = body
        if old > new:
            buf[new:old] = bytes(old - new)
        self.n = n

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` records (the rest of the record area is zeroed)."""
        if n < self.n:
            buf = self._editable()
            self.ops = None
            rl = self.rl
            buf[n * rl : self.n * rl] = bytes((self.n - n) * rl)
            self.n = n


class IndexCI:
    """An index CI. ``keys[i]`` is the highest key that ``ptrs[i]`` may hold; ranges are ``(keys[i-1], keys[i]]``.

    ``level`` 1 is the sequence set (one CI per CA, ``ca`` is the CA's first CI); 2 and up is the index set.
    ``stamps[i]`` is the stamp that the image of CI ``ptrs[i]`` in the file must carry (0: not known yet, as for a
    CI still in the log): a child read from the file with another stamp is a lost or misdirected write. Stamps are
    set by each checkpoint, for the CIs it writes in place (see :func:`ksds.btree.restamp`). ``tid``: the id of the
    tree the CI belongs to (0: the base cluster).
    """

    __slots__ = ("ci", "level", "ca", "keys", "ptrs", "stamps", "ref", "tid")

    def __init__(
        self,
        ci: int,
        level: int,
        ca: int,
        keys: list[bytes],
        ptrs: list[int],
        stamps: list[int] | None = None,
        tid: int = 0,
    ) -> None:
        self.tid = tid
        self.ci = ci
        self.level = level
        self.ca = ca
        self.keys = keys
        self.ptrs = ptrs
        self.stamps = [0] * len(ptrs) if stamps is None else stamps
        self.ref = True


class FreeCI:
    """A free index CI (``kind`` CI_FREE_INDEX) or the first CI of a free CA (CI_FREE_CA), chained by ``next``.
    Free space is the data set's, shared by its trees: a free CI belongs to none (its descriptor's flags are 0;
    ``tid`` 0 says which codec encodes it, any would do)."""

    __slots__ = ("ci", "kind", "next", "ref")
    tid = 0

    def __init__(self, ci: int, kind: int, next_: int) -> None:
        self.ci = ci
        self.kind = kind
        self.next = next_
        self.ref = True


AnyCI = DataCI | IndexCI | FreeCI


def describe(obj: AnyCI) -> str:
    """What a CI is, for a message: "a DataCI of tree 1", "a FreeCI"."""
    name = type(obj).__name__
    return f"a {name}" if type(obj) is FreeCI else f"a {name} of tree {obj.tid}"


class Codec:
    """Encodes and decodes the CIs of one tree of a data set (its sizes are fixed, so the structs are built once).

    ``defn`` gives the tree's record layout (key length and offset, record length: an alternate index's are its
    own) and the data set's CI size; ``tid`` is the tree's id, written in the flags byte of every data and index
    CI it encodes (``tid << 4``, an index CI's level in the low nibble) and checked by :meth:`decode`."""

    def __init__(self, defn: Definition, path: str, tid: int = 0) -> None:
        if not 0 <= tid <= 0xFF >> TID_SHIFT:
            raise ValueError(f"tree id {tid} is outside 0..{0xFF >> TID_SHIFT}")
        self.path = path
        self.tid = tid
        #: the flags byte of this tree's data CIs (an index CI's adds its level)
        self.data_flags = tid << TID_SHIFT
        self.ci_size = defn.ci_size
        self.kl = defn.key_length
        self.ko = defn.key_offset
        self.rl = defn.record_length
        self.index_cap = defn.entries_per_index_ci
        self._ptr_off = self.index_cap * self.kl
        self._stamps_off = self._ptr_off + self.index_cap * 4
        self._trailer_off = self.ci_size - TRAILER_SIZE
        #: where the descriptor (``TRAILER``) of a CI image starts
        self.trailer_off = self._trailer_off
        self._own_stamp_off = self._trailer_off - 4  # an index CI's own stamp: the last 4 bytes of its body
        self._crc_off = self.ci_size - 4
        self._ptr_structs: dict[int, struct.Struct] = {}
        self._key_structs: dict[int, struct.Struct] = {}
        self._record_key_structs: dict[int, struct.Struct] = {}
        self._sample_structs: dict[int, struct.Struct] = {}
        self._zeros = memoryview(bytes(self.ci_size))
        #: (record length, key offset, key length): what every DataCI of this data set is cut by
        self.layout = (self.rl, self.ko, self.kl)
        self._data_end = self._trailer_off

    def _ptrs(self, n: int) -> struct.Struct:
        s = self._ptr_structs.get(n)
        if s is None:
            s = self._ptr_structs[n] = struct.Struct(f">{n}I")
        return s

    def _keys(self, n: int) -> struct.Struct:
        """``n`` keys laid end to end: one C call makes the list of them (6x a comprehension of slices)."""
        s = self._key_structs.get(n)
        if s is None:
            s = self._key_structs[n] = struct.Struct(f"{self.kl}s" * n)
        return s

    def record_keys(self, n: int) -> struct.Struct | None:
        """The keys of ``n`` records laid end to end (a data CI's first ``n``): one C call makes the tuple of them,
        which ``bisect_left`` (C) searches. Only for small ``n`` (:data:`KEYS_AT_ONCE`), where that beats a
        binary search of slices; None above it."""
        if n > KEYS_AT_ONCE or n <= 0:
            return None
        s = self._record_key_structs.get(n)
        if s is None:
            rl, ko, kl = self.layout
            one = f"{ko}x{kl}s{rl - ko - kl}x" if rl - ko - kl else f"{ko}x{kl}s"
            last = f"{ko}x{kl}s"
            s = self._record_key_structs[n] = struct.Struct(one * (n - 1) + last)
        return s

    def _samples(self, n: int) -> struct.Struct:
        """The keys of records 0, K, 2K, ... of ``n`` records laid end to end (K = :data:`KEYS_AT_ONCE`): one C call
        makes the tuple of them."""
        s = self._sample_structs.get(n)
        if s is None:
            rl, ko, kl = self.layout
            count = -(-n // KEYS_AT_ONCE)
            one = f"{ko}x{kl}s{KEYS_AT_ONCE * rl - ko - kl}x"
            s = self._sample_structs[n] = struct.Struct(one * (count - 1) + f"{ko}x{kl}s")
        return s

    def bisect(self, buf: Any, base: int, n: int, key: bytes) -> int:
        """The slot of the first of the ``n`` records at ``base`` in ``buf`` whose key is >= ``key`` (``n`` if
        none): ``bisect_left`` over their keys, in place. Up to :data:`KEYS_AT_ONCE` records, their keys unpacked
        by one C call and bisected; above it, every K-th key unpacked and bisected to find the block, then that
        block's keys: two C calls and two bisects in place of log2(n) Python probes. O(n / K + K) bytes copied."""
        if n <= KEYS_AT_ONCE:
            if n <= 0:
                return 0
            s = self._record_key_structs.get(n) or self.record_keys(n)
            assert s is not None
            return bisect_left(s.unpack_from(buf, base), key)
        ks = (self._sample_structs.get(n) or self._samples(n)).unpack_from(buf, base)
        b = bisect_left(ks, key)  # sample b - 1 < key <= sample b
        if b == 0:
            return 0
        if b < len(ks) and ks[b] == key:
            return b * KEYS_AT_ONCE
        lo = (b - 1) * KEYS_AT_ONCE + 1  # the answer is in lo .. min(b * K, n)
        m = min(b * KEYS_AT_ONCE, n) - lo
        if m <= 0:
            return lo
        s = self._record_key_structs.get(m) or self.record_keys(m)
        assert s is not None
        return lo + bisect_left(s.unpack_from(buf, base + lo * self.rl), key)

    # --- encode -------------------------------------------------------------------------------------------

    def _seal(self, body: bytes, kind: int, flags: int, count: int, ci: int, aux: int) -> bytes:
        pad = self._zeros[: self._trailer_off - len(body)]
        trailer = TRAILER_NOCRC.pack(kind, flags, count, ci, aux)
        crc = crc32c(trailer, crc32c(pad, crc32c(body)))
        return b"".join((body, pad, trailer, crc.to_bytes(4, "big")))

    def encode(self, obj: AnyCI, txn: int) -> bytes:
        """The CI's bytes, descriptor and CRC32C included. ``txn`` is recorded in data and index-set CIs."""
        if type(obj) is DataCI:
            return self.seal_data(obj, txn)
        if type(obj) is IndexCI:
            n = len(obj.keys)
            pack = self._ptrs(n).pack
            stamp = stamp_of(txn)
            body = b"".join(
                (
                    b"".join(obj.keys).ljust(self._ptr_off, b"\0"),
                    pack(*obj.ptrs).ljust(self._stamps_off - self._ptr_off, b"\0"),
                    pack(*obj.stamps).ljust(self._own_stamp_off - self._stamps_off, b"\0"),
                    stamp.to_bytes(4, "big"),
                )
            )
            if obj.level == 1:
                return self._seal(body, CI_SEQUENCE_SET, 1 | self.data_flags, n, obj.ci, obj.ca)
            assert 1 < obj.level <= LEVEL_MASK
            return self._seal(body, CI_INDEX_SET, obj.level | self.data_flags, n, obj.ci, stamp)
        assert type(obj) is FreeCI
        return self._seal(b"", obj.kind, 0, 0, obj.ci, obj.next)

    def seal_data(self, obj: DataCI, txn: int) -> bytes:
        """A data CI's image: its record area as it is (the bytes past the records are zeros), the descriptor and
        one CRC32C. The image becomes the CI's clean ``buf`` (the next change copies it)."""
        buf = obj.buf
        if len(buf) != self.ci_size:  # a CI built from records (a split, a new CA): lay it out once
            buf = bytearray(self.ci_size)
            buf[: len(obj.buf)] = obj.buf
        elif type(buf) is not bytearray:
            buf = bytearray(buf)
        TRAILER_NOCRC.pack_into(buf, self._trailer_off, CI_DATA, self.data_flags, obj.n, obj.ci, stamp_of(txn))
        buf[self._crc_off :] = crc32c(memoryview(buf)[: self._crc_off]).to_bytes(4, "big")
        image = bytes(buf)
        obj.buf = image
        return image

    def new_data(self, ci: int, body: bytes | bytearray, n: int) -> DataCI:
        """A data CI of this tree made of ``n`` records laid end to end in ``body`` (not yet sealed)."""
        return DataCI(ci, bytearray(body), n, self.layout, self.tid)

    # --- decode -------------------------------------------------------------------------------------------

    def damaged(self, ci: int, what: str) -> DamagedCIError:
        return DamagedCIError(f"{self.path}: CI {ci} (RBA {ci * self.ci_size}) {what}", ci)

    def _foreign(self, ci: int, flags: int) -> DamagedCIError:
        tid = flags >> TID_SHIFT
        if tid != self.tid:
            return self.damaged(ci, f"belongs to tree {tid} where tree {self.tid} was expected")
        return self.damaged(ci, f"is a data CI with flags {flags:#04x} (its low nibble must be 0)")

    def stamp(self, data: bytes) -> int:
        """The stamp a CI's image carries (the transaction that last changed it, low 32 bits): a data CI's is in its
        descriptor, an index CI's at the end of its body; -1 for a free CI (no index entry points at it)."""
        kind = data[self._trailer_off]
        if kind == CI_DATA:
            return int.from_bytes(data[self._trailer_off + 8 : self._trailer_off + 12], "big")
        if kind in (CI_SEQUENCE_SET, CI_INDEX_SET):
            return int.from_bytes(data[self._own_stamp_off : self._trailer_off], "big")
        return -1

    def stale(self, ci: int, found: int, expected: int) -> DamagedCIError:
        return self.damaged(
            ci,
            f"holds an older image than its index expects (stamp {found}, expected {expected}): a lost or "
            f"misdirected write, or the file restored from an older copy",
        )

    def check(self, data: bytes, ci: int, crc: bool = True) -> tuple[int, int, int, int]:
        """Check a CI's length, CRC32C (unless ``crc`` is False: an image this open already checked) and
        self-address; return (type, flags, count, aux)."""
        if len(data) != self.ci_size:
            raise self.damaged(ci, f"is cut short: {len(data)} of {self.ci_size} bytes (file truncated?)")
        kind, flags, count, number, aux, stored = TRAILER.unpack_from(data, self._trailer_off)
        if crc and crc32c(memoryview(data)[: self._crc_off]) != stored:
            if data.count(0) == len(data):
                return 0, 0, 0, 0  # never written: all zeros
            raise self.damaged(ci, "fails its CRC32C check (damaged or torn write)")
        if number != ci:
            raise self.damaged(ci, f"holds the contents of CI {number} (misdirected write)")
        return kind, flags, count, aux

    def entry_in(self, buf: Any, base: int, count: int, key: bytes) -> tuple[int, int] | None:
        """In the index CI image at ``base`` in ``buf`` (``count`` entries, checked), the entry a search for
        ``key`` follows -- the first whose high key is >= ``key``, as ``bisect_left`` over its decoded keys -- as
        (CI pointer, stamp); None if every high key is lower. O(log count) key slices, no objects made."""
        kl = self.kl
        lo, hi = 0, count
        while lo < hi:
            mid = (lo + hi) >> 1
            o = base + mid * kl
            if buf[o : o + kl] < key:
                lo = mid + 1
            else:
                hi = mid
        if lo == count:
            return None
        o = base + self._ptr_off + 4 * lo
        s = base + self._stamps_off + 4 * lo
        return int.from_bytes(buf[o : o + 4], "big"), int.from_bytes(buf[s : s + 4], "big")

    def own_stamp_in(self, buf: Any, base: int) -> int:
        """The stamp an index CI image at ``base`` in ``buf`` carries (see :meth:`stamp`)."""
        o = base + self._own_stamp_off
        return int.from_bytes(buf[o : o + 4], "big")

    def decode(self, data: bytes, ci: int, crc: bool = True) -> AnyCI:
        """Decode a CI read from disk (its CRC32C checked unless ``crc`` is False). Raises
        :class:`DamagedCIError` naming the CI if anything is wrong."""
        kind, flags, count, aux = self.check(data, ci, crc)
        if kind == CI_DATA:
            if flags != self.data_flags:
                raise self._foreign(ci, flags)
            if count * self.rl > self._trailer_off:
                raise self.damaged(ci, f"claims {count} records, more than fit")
            return DataCI(ci, data, count, self.layout, self.tid)
        if kind in (CI_SEQUENCE_SET, CI_INDEX_SET):
            if flags >> TID_SHIFT != self.tid:
                raise self._foreign(ci, flags)
            if count > self.index_cap or count == 0:
                raise self.damaged(ci, f"is an index CI with {count} entries (1..{self.index_cap} allowed)")
            keys = list(self._keys(count).unpack_from(data))
            unpack = self._ptrs(count).unpack_from
            ptrs = list(unpack(data, self._ptr_off))
            stamps = list(unpack(data, self._stamps_off))
            level = flags & LEVEL_MASK
            if (kind == CI_SEQUENCE_SET) != (level == 1) or level == 0:
                raise self.damaged(ci, f"is an index CI whose level {level} does not match its type")
            return IndexCI(ci, level, aux if level == 1 else 0, keys, ptrs, stamps, self.tid)
        if kind in (CI_FREE_INDEX, CI_FREE_CA):
            if flags:
                raise self.damaged(ci, f"is a free CI with flags {flags:#04x} (a free CI belongs to no tree: 0)")
            return FreeCI(ci, kind, aux)
        raise self.damaged(ci, f"has unknown CI type {kind} ({CI_TYPE_NAMES.get(kind, '?')})")


def codec_for(codecs: list[Codec | None], data: Any, ci: int, crc: bool = True) -> Codec:
    """The codec of the tree that the descriptor of CI image ``data`` names (its flags byte's high nibble), from
    ``codecs`` (indexed by tree id, None for a tree the data set does not have; ``codecs[0]`` is the base
    cluster's). A tree id with no codec is a :class:`DamagedCIError` naming the CI -- after the image's own checks
    (length, CRC32C unless ``crc`` is False, self-address), so a damaged CI is reported as damaged. An image cut
    short gets the base codec (whose :meth:`Codec.decode` names it). O(1)."""
    base = codecs[0]
    assert base is not None
    if len(data) != base.ci_size:
        return base
    tid: int = data[base.trailer_off + FLAGS_AT] >> TID_SHIFT
    codec = codecs[tid]
    if codec is not None:
        return codec
    base.check(data, ci, crc)
    raise base.damaged(ci, f"names tree {tid} in its descriptor, which the data set does not have")
