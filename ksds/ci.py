"""Control intervals in memory, and their encoding to and from the bytes of one CI.

Three kinds of CI live in the buffer pool:

* :class:`DataCI` -- records in key order (``recs``), with their keys alongside (``keys``) so a lookup is one
  ``bisect`` over a list of bytes;
* :class:`IndexCI` -- index entries, each a high key and a CI pointer; a sequence-set CI (level 1) describes
  one CA and points at its data CIs, an index-set CI (level 2 and up) points at index CIs one level down;
* :class:`FreeCI` -- an index CI or a CA on a free list, chained by ``next``.

Records and keys are plain ``bytes`` slices of the CI: no per-record objects.
"""

from __future__ import annotations

import struct

from .definition import Definition
from .errors import DamagedCIError
from .format import (
    CI_DATA,
    CI_FREE_CA,
    CI_FREE_INDEX,
    CI_INDEX_SET,
    CI_SEQUENCE_SET,
    CI_TYPE_NAMES,
    TRAILER,
    TRAILER_NOCRC,
    TRAILER_SIZE,
    crc32c,
)


class DataCI:
    """A data CI: ``recs`` (records in key order) and ``keys`` (their keys), parallel lists.

    A CI decoded from disk builds ``keys`` only when something first asks for them (a browse never does); after
    that it is a plain slot.
    """

    __slots__ = ("ci", "keys", "recs", "ref", "key_field")
    ci: int
    keys: list[bytes]
    recs: list[bytes]
    ref: bool
    key_field: tuple[int, int]

    def __init__(self, ci: int, keys: list[bytes], recs: list[bytes]) -> None:
        self.ci = ci
        self.keys = keys
        self.recs = recs
        self.ref = True

    @classmethod
    def lazy(cls, ci: int, recs: list[bytes], key_field: tuple[int, int]) -> DataCI:
        obj = cls.__new__(cls)
        obj.ci = ci
        obj.recs = recs
        obj.ref = True
        obj.key_field = key_field
        return obj

    def __getattr__(self, name: str) -> list[bytes]:
        # only called while the ``keys`` slot is empty
        if name != "keys":
            raise AttributeError(name)
        ko, kl = self.key_field
        end = ko + kl
        keys = [r[ko:end] for r in self.recs]
        self.keys = keys
        return keys


class IndexCI:
    """An index CI. ``keys[i]`` is the highest key that ``ptrs[i]`` may hold; ranges are ``(keys[i-1], keys[i]]``.

    ``level`` 1 is the sequence set (one CI per CA, ``ca`` is the CA's first CI); 2 and up is the index set.
    """

    __slots__ = ("ci", "level", "ca", "keys", "ptrs", "ref")

    def __init__(self, ci: int, level: int, ca: int, keys: list[bytes], ptrs: list[int]) -> None:
        self.ci = ci
        self.level = level
        self.ca = ca
        self.keys = keys
        self.ptrs = ptrs
        self.ref = True


class FreeCI:
    """A free index CI (``kind`` CI_FREE_INDEX) or the first CI of a free CA (CI_FREE_CA), chained by ``next``."""

    __slots__ = ("ci", "kind", "next", "ref")

    def __init__(self, ci: int, kind: int, next_: int) -> None:
        self.ci = ci
        self.kind = kind
        self.next = next_
        self.ref = True


AnyCI = DataCI | IndexCI | FreeCI


class Codec:
    """Encodes and decodes the CIs of one data set (its sizes are fixed, so the structs are built once)."""

    def __init__(self, defn: Definition, path: str) -> None:
        self.path = path
        self.ci_size = defn.ci_size
        self.kl = defn.key_length
        self.ko = defn.key_offset
        self.rl = defn.record_length
        self.index_cap = defn.entries_per_index_ci
        self._ptr_off = self.index_cap * self.kl
        self._trailer_off = self.ci_size - TRAILER_SIZE
        self._crc_off = self.ci_size - 4
        self._ptr_structs: dict[int, struct.Struct] = {}
        self._zeros = memoryview(bytes(self.ci_size))
        self._key_field = (self.ko, self.kl)

    def _ptrs(self, n: int) -> struct.Struct:
        s = self._ptr_structs.get(n)
        if s is None:
            s = self._ptr_structs[n] = struct.Struct(f">{n}I")
        return s

    # --- encode -------------------------------------------------------------------------------------------

    def _seal(self, body: bytes, kind: int, flags: int, count: int, ci: int, aux: int) -> bytes:
        pad = self._zeros[: self._trailer_off - len(body)]
        trailer = TRAILER_NOCRC.pack(kind, flags, count, ci, aux)
        crc = crc32c(trailer, crc32c(pad, crc32c(body)))
        return b"".join((body, pad, trailer, crc.to_bytes(4, "big")))

    def encode(self, obj: AnyCI, txn: int) -> bytes:
        """The CI's bytes, descriptor and CRC32C included. ``txn`` is recorded in data and index-set CIs."""
        if type(obj) is DataCI:
            return self._seal(b"".join(obj.recs), CI_DATA, 0, len(obj.recs), obj.ci, txn)
        if type(obj) is IndexCI:
            n = len(obj.keys)
            body = b"".join(obj.keys).ljust(self._ptr_off, b"\0") + self._ptrs(n).pack(*obj.ptrs)
            if obj.level == 1:
                return self._seal(body, CI_SEQUENCE_SET, 1, n, obj.ci, obj.ca)
            return self._seal(body, CI_INDEX_SET, obj.level, n, obj.ci, txn)
        assert type(obj) is FreeCI
        return self._seal(b"", obj.kind, 0, 0, obj.ci, obj.next)

    # --- decode -------------------------------------------------------------------------------------------

    def damaged(self, ci: int, what: str) -> DamagedCIError:
        return DamagedCIError(f"{self.path}: CI {ci} (RBA {ci * self.ci_size}) {what}", ci)

    def check(self, data: bytes, ci: int) -> tuple[int, int, int, int]:
        """Check a CI's length, CRC32C and self-address; return (type, flags, count, aux)."""
        if len(data) != self.ci_size:
            raise self.damaged(ci, f"is cut short: {len(data)} of {self.ci_size} bytes (file truncated?)")
        kind, flags, count, number, aux, crc = TRAILER.unpack_from(data, self._trailer_off)
        if crc32c(memoryview(data)[: self._crc_off]) != crc:
            if not any(data):
                return 0, 0, 0, 0  # never written: all zeros
            raise self.damaged(ci, "fails its CRC32C check (damaged or torn write)")
        if number != ci:
            raise self.damaged(ci, f"holds the contents of CI {number} (misdirected write)")
        return kind, flags, count, aux

    def decode(self, data: bytes, ci: int) -> AnyCI:
        """Decode a CI read from disk. Raises :class:`DamagedCIError` naming the CI if anything is wrong."""
        kind, flags, count, aux = self.check(data, ci)
        if kind == CI_DATA:
            rl = self.rl
            end = count * rl
            if end > self._trailer_off:
                raise self.damaged(ci, f"claims {count} records, more than fit")
            return DataCI.lazy(ci, [data[i : i + rl] for i in range(0, end, rl)], self._key_field)
        if kind in (CI_SEQUENCE_SET, CI_INDEX_SET):
            if count > self.index_cap or count == 0:
                raise self.damaged(ci, f"is an index CI with {count} entries (1..{self.index_cap} allowed)")
            kl = self.kl
            keys = [data[i : i + kl] for i in range(0, count * kl, kl)]
            ptrs = list(self._ptrs(count).unpack_from(data, self._ptr_off))
            level = flags
            if (kind == CI_SEQUENCE_SET) != (level == 1):
                raise self.damaged(ci, f"is an index CI whose level {level} does not match its type")
            return IndexCI(ci, level, aux if level == 1 else 0, keys, ptrs)
        if kind in (CI_FREE_INDEX, CI_FREE_CA):
            return FreeCI(ci, kind, aux)
        raise self.damaged(ci, f"has unknown CI type {kind} ({CI_TYPE_NAMES.get(kind, '?')})")
