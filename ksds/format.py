"""The on-disk format: the header CI, the mutable state, the CI descriptor. See ``docs/file-format.md``.

A data set is one file of CIs, all ``ci_size`` bytes; CI number ``n`` starts at RBA ``n * ci_size``.
CI 0 is the header. Every other CI ends with the same 16-byte descriptor (``TRAILER``), whose last four
bytes are a CRC32C of everything before them in the CI.
"""

from __future__ import annotations

import dataclasses
import operator
import struct
from dataclasses import dataclass, field, fields

import crc32c as _crc32c

from .definition import Definition
from .errors import NotADatasetError

crc32c = _crc32c.crc32c

#: first 8 bytes of a data set; the \\r\\n and \\x1a catch a text-mode (line-end converting) transfer
MAGIC = b"\x89KSDS\r\n\x1a"
#: 2: index entries keep their child's stamp (lost writes are detected); the state has the root's stamp.
#: 3: the state is followed by the catalog of alternate indexes (written only by a data set that has one: a data
#: set without an alternate index stays version 2, byte for byte)
FORMAT_VERSION = 2
FORMAT_VERSION_AIX = 3

# CI types (first byte of the descriptor)
CI_DATA = 1
CI_SEQUENCE_SET = 2
CI_INDEX_SET = 3
CI_FREE_INDEX = 4
CI_FREE_CA = 5
CI_TYPE_NAMES = {
    0: "never written",
    CI_DATA: "data",
    CI_SEQUENCE_SET: "sequence set",
    CI_INDEX_SET: "index set",
    CI_FREE_INDEX: "free index CI",
    CI_FREE_CA: "free CA",
}

#: the CI descriptor: type, flags, count, CI number, aux, crc. The flags byte: the tree id in its high nibble
#: (``tid << 4``; 0 the base cluster, 1..15 alternate indexes) and, for an index CI, its level in the low nibble
TRAILER = struct.Struct(">BBHIII")
#: offset of the flags byte in the descriptor
FLAGS_AT = 1
#: the flags byte's tree id is ``flags >> TID_SHIFT``; an index CI's level is ``flags & LEVEL_MASK``
TID_SHIFT = 4
LEVEL_MASK = 0x0F
#: tree ids a descriptor can name (0 the base cluster, 1..15 alternate indexes)
MAX_TREES = 16
#: the most index levels a tree can have (an index CI's level is the flags byte's low nibble)
MAX_LEVELS = LEVEL_MASK
TRAILER_SIZE = TRAILER.size  # 16
TRAILER_NOCRC = struct.Struct(">BBHII")  # the first 12 bytes

#: the fixed part of the header CI
HEADER_FIXED = struct.Struct(">8sHHIHHIIIQ")  # magic ver hdrlen cisz kl pad ko rl cpa created
#: the mutable state, also carried by every commit frame of the write-ahead log
STATE = struct.Struct(">Q4BIHHIIIIII8QI")
STATE_SIZE = STATE.size
HEADER_SIZE = HEADER_FIXED.size + STATE_SIZE + 4
#: the most bytes a header takes (a catalog of every alternate index it may have): what to read to decode one
HEADER_MAX = HEADER_SIZE + 2 + 15 * 76  # CATALOG_HEAD + MAX_AIXES * AIX_ENTRY (checked below)


@dataclass
class State:
    """Everything about a data set that changes: index root, allocation, statistics.

    It is written to the header CI at each checkpoint and carried whole by every commit in the write-ahead log,
    so recovery never has to derive it from the data.
    """

    txn: int = 0  # number of the last committed transaction
    freespace_ci: int = 0
    freespace_ca: int = 0
    share_region: int = 1
    share_system: int = 3
    root: int = 0  # CI number of the index's top CI
    levels: int = 1  # index levels (1: the sequence set alone)
    reserved: int = 0
    hurba: int = 1  # CIs in use or formatted: HI-U-RBA = hurba * ci_size
    ca_count: int = 0  # CAs in use
    free_ca: int = 0  # first CI of the first free CA (0: none)
    free_index: int = 0  # first free index CI (0: none)
    index_cis: int = 0  # index CIs in use
    data_cis: int = 0  # data CIs in use
    rec_total: int = 0
    rec_inserted: int = 0
    rec_deleted: int = 0
    rec_updated: int = 0
    rec_retrieved: int = 0
    splits_ci: int = 0
    splits_ca: int = 0
    excps: int = 0
    root_stamp: int = 0  # the stamp the top index CI's image must carry (0: not known yet, not checked)
    #: the catalog: the data set's alternate indexes, in tree id order (not in ``STATE``: packed after it)
    aixes: list[AixMeta] = field(default_factory=list)

    def pack(self) -> bytes:
        """The state's bytes: ``STATE``, then the catalog if there is an alternate index. O(alternate indexes)."""
        base = STATE.pack(*_state_values(self))
        if not self.aixes:
            return base
        return b"".join((base, CATALOG_HEAD.pack(len(self.aixes)), *(a.pack() for a in self.aixes)))

    @classmethod
    def unpack(cls, data: bytes | memoryview) -> State:
        """The state from its bytes (a catalog after ``STATE`` is read if present). Raises ``struct.error`` or
        ``ValueError`` for bytes that are not a state."""
        st = cls(*STATE.unpack_from(data, 0))
        if len(data) > STATE_SIZE:
            (n,) = CATALOG_HEAD.unpack_from(data, STATE_SIZE)
            at = STATE_SIZE + CATALOG_HEAD.size
            if len(data) < at + n * AIX_ENTRY.size:
                raise ValueError(f"the catalog claims {n} alternate indexes, more than its {len(data) - at} bytes hold")
            st.aixes = [AixMeta.unpack(data, at + i * AIX_ENTRY.size) for i in range(n)]
        return st

    def copy(self) -> State:
        st = State(*_state_values(self))
        st.aixes = [dataclasses.replace(a) for a in self.aixes]
        return st


_state_values = operator.attrgetter(*(f.name for f in fields(State) if f.name != "aixes"))

#: the catalog's head: how many alternate indexes follow (each ``AIX_ENTRY``)
CATALOG_HEAD = struct.Struct(">H")
#: an alternate index in the catalog: tree id, name, alternate key length and offset, flags, FREESPACE (CI%, CA%),
#: index levels, top index CI, its stamp, CAs, data CIs, index CIs, records, CI splits, CA splits
AIX_ENTRY = struct.Struct(">B31sHHBBBBIIIIIQII")
AIX_UNIQUE = 1  # flags: alternate keys are unique
AIX_UPGRADE = 2  # flags: kept in step with every change of the base
AIX_CURRENT = 4  # flags: in step with the base (built, and upgraded since, or the base unchanged since the build)
#: most alternate indexes a data set has (tree ids 1..15: the high nibble of a CI descriptor's flags)
MAX_AIXES = 15


@dataclass
class AixMeta:
    """An alternate index as the catalog keeps it: its definition (name, alternate key, UNIQUEKEY, UPGRADE,
    FREESPACE) and its tree's meta, the same fields the state keeps for the base's tree. Its records are the
    alternate key followed by the base record's prime key (fixed length ``key_length + prime key length``); the
    tree's key is the whole record, so a non-unique alternate key's base records follow in prime-key order."""

    tid: int
    name: str
    key_length: int
    key_offset: int
    unique: bool
    upgrade: bool
    current: bool
    freespace_ci: int = 0
    freespace_ca: int = 0
    levels: int = 1
    root: int = 0
    root_stamp: int = 0
    ca_count: int = 0
    data_cis: int = 0
    index_cis: int = 0
    rec_total: int = 0
    splits_ci: int = 0
    splits_ca: int = 0

    def pack(self) -> bytes:
        flags = (AIX_UNIQUE if self.unique else 0) | (AIX_UPGRADE if self.upgrade else 0) | (
            AIX_CURRENT if self.current else 0
        )
        return AIX_ENTRY.pack(
            self.tid, self.name.encode("ascii"), self.key_length, self.key_offset, flags, self.freespace_ci,
            self.freespace_ca, self.levels, self.root, self.root_stamp, self.ca_count, self.data_cis,
            self.index_cis, self.rec_total, self.splits_ci, self.splits_ca,
        )

    @classmethod
    def unpack(cls, data: bytes | memoryview, at: int) -> AixMeta:
        tid, name, kl, ko, flags, fci, fca, levels, root, stamp, cas, dcis, icis, recs, sci, sca = (
            AIX_ENTRY.unpack_from(data, at)
        )
        if not 1 <= tid <= MAX_AIXES:
            raise ValueError(f"an alternate index in the catalog has tree id {tid} (1..{MAX_AIXES} allowed)")
        return cls(
            tid, bytes(name).rstrip(b"\0").decode("ascii", "replace"), kl, ko, bool(flags & AIX_UNIQUE),
            bool(flags & AIX_UPGRADE), bool(flags & AIX_CURRENT), fci, fca, levels, root, stamp, cas, dcis, icis,
            recs, sci, sca,
        )


def encode_header(defn: Definition, created: int, state: State, ci_size: int) -> bytes:
    """The header CI: fixed definition, then the state (and its catalog of alternate indexes, if any: version 3),
    then a CRC32C of both; zero-padded to the CI size."""
    body = state.pack()
    fixed = HEADER_FIXED.pack(
        MAGIC,
        FORMAT_VERSION_AIX if state.aixes else FORMAT_VERSION,
        HEADER_FIXED.size + len(body) + 4,
        defn.ci_size,
        defn.key_length,
        0,
        defn.key_offset,
        defn.record_length,
        defn.cis_per_ca,
        created,
    )
    body = fixed + body
    if len(body) + 4 > ci_size:
        raise ValueError(f"a header of {len(body) + 4} bytes does not fit a CI of {ci_size}")
    return (body + crc32c(body).to_bytes(4, "big")).ljust(ci_size, b"\0")


def decode_header(data: bytes, path: str) -> tuple[Definition, int, State]:
    """Check and decode a header CI. Raises :class:`NotADatasetError` or returns (definition, created, state)."""
    if len(data) < HEADER_SIZE or data[:8] != MAGIC:
        if len(data) >= 8 and data[1:5] == b"KSDS":
            raise NotADatasetError(
                f"{path}: the header's magic is mangled (was the file transferred in text mode?)"
            )
        raise NotADatasetError(f"{path} is not a ksds data set (no ksds header)")
    magic, version, hdrlen, cisz, kl, _, ko, rl, cpa, created = HEADER_FIXED.unpack_from(data, 0)
    aix = version == FORMAT_VERSION_AIX and HEADER_SIZE + CATALOG_HEAD.size <= hdrlen <= min(len(data), HEADER_MAX)
    if hdrlen == HEADER_SIZE or aix:
        body = data[: hdrlen - 4]
        stored = int.from_bytes(data[len(body) : len(body) + 4], "big")
        if crc32c(body) != stored:
            from .errors import CorruptionError

            raise CorruptionError(f"{path}: the header CI (CI 0, RBA 0) fails its CRC32C check")
    if version == 1:
        raise NotADatasetError(
            f"{path} has format version 1 (written by ksds 0.1), whose index entries carry no stamps of their "
            f"CIs; this ksds reads version {FORMAT_VERSION}. Convert it with ksds 0.1: `ksds repro {path} "
            f"unload.jsonl`, then with this ksds `ksds define NEW ...` (same KEYS, RECORDSIZE, CISZ) and "
            f"`ksds repro unload.jsonl NEW`"
        )
    if not aix and (version != FORMAT_VERSION or hdrlen != HEADER_SIZE):
        raise NotADatasetError(
            f"{path} has format version {version} (header of {hdrlen} bytes); this ksds reads versions "
            f"{FORMAT_VERSION} ({HEADER_SIZE} bytes) and {FORMAT_VERSION_AIX} (with alternate indexes)"
        )
    try:
        state = State.unpack(data[HEADER_FIXED.size : hdrlen - 4])
    except (ValueError, struct.error) as e:
        from .errors import CorruptionError

        raise CorruptionError(f"{path}: the header CI's catalog of alternate indexes does not parse: {e}") from e
    defn = Definition(
        key_length=kl,
        key_offset=ko,
        record_length=rl,
        ci_size=cisz,
        cis_per_ca=cpa,
        freespace=(state.freespace_ci, state.freespace_ca),
        share_options=(state.share_region, state.share_system),
    )
    return defn, created, state


assert HEADER_MAX == HEADER_SIZE + CATALOG_HEAD.size + MAX_AIXES * AIX_ENTRY.size
