"""The ``ksds`` storage mode: the cache in a KSDS data set, shared by several server processes (RLS).

Two layouts of the entries; both keep the bookkeeping in records of their own whose keys start with X'00'.

**native** (the default): no collisions, no leak between services.

* the caller's *partition* (:func:`~ksds.caching.model.partition_key`): a service id alone is itself; a caller
  with a proven DN (a verified certificate, or a DN header the operator trusts) is ``X'00' 'D' + len(DN) ':' DN``,
  then ``len(id) ':' id`` if it also names a service id. So ``X-CS-Service-ID: CN=x, SERVICE=gw`` is not the
  caller that proved ``CN=x`` calling as ``gw`` (earlier versions partitioned both by the string
  ``"CN=x, SERVICE=gw"``: entries and map items they stored for callers with a DN are not found by them now);
* entry: key ``X'00' 'E' + blake2b-128(partition) + blake2b-128(key)``, padded with X'00' to the key length;
  record ``key + seq (8 bytes, big-endian) + length (4 bytes, big-endian) + UTF-8 JSON
  {"serviceId", ["dn",] "key", "value", "created"} + X'00' padding``: ``serviceId`` is Zowe's string of the
  caller (``"<DN>, SERVICE=<id>"``), ``dn`` the proven DN (only for a caller with one). A read checks that the
  JSON's service id, DN and key are the ones asked for, so even a digest collision never returns another entry.
  A service's entries are the records starting ``X'00' 'E' + blake2b-128(partition)``: one generic browse, never
  another service's. A record whose JSON has bytes that are not UTF-8 is read with U+FFFD in their place; one
  that is not an entry's JSON at all is not an entry (not found, left out of lists).

**zowe** (``layout="zowe"``): Zowe's VSAM back end byte for byte (:mod:`ksds.zowe`): key
``rightPad(sid.hashCode() + ":" + key.hashCode(), keyLength)`` and record ``rightPad(key + Jackson JSON,
recordLength)``, in IBM-1047. A REPRO'd unload of a Zowe caching data set can be opened and served (the
bookkeeping records are built on first open: one scan). Differences from Zowe: ``readForService`` and
``deleteForService`` take the records starting ``hash + ":"`` whose JSON ``serviceId`` is the service's (or
empty), so they no longer leak into services whose hash starts with the same digits (Zowe's defect 11.2) nor
into a service with the same hash; ``read``/``update``/``delete`` answer 404 when the record at the hashed key
belongs to another key or service (Zowe returns it: defect 11.1); characters IBM-1047 cannot represent are
refused (400) instead of silently becoming "?". As in Zowe, two keys (or services) with equal Java hashCodes
share one record key: the second ``create`` is 409. The entries' partition is Zowe's string ``"<DN>,
SERVICE=<id>"`` (so a data set Zowe wrote is served to the same callers); a service id alone could spell such a
string, so the REST API refuses a service id holding ``=`` from a caller without a DN (401 ZWECS800E,
``flat_identities``).

**Bookkeeping records** (both layouts; every key starts with X'00', which no Zowe key does: Zowe's start with
``-`` X'60' or a digit X'F0'-X'F9'; keys are padded with X'00' to the key length, records with X'00' to the
record length; "u32"/"u64" are big-endian; JSON is UTF-8):

* counter, key ``X'00' 'C'``; record: key, u32 length, JSON {"layout", "count" (entries), "seq" (the last
  sequence number given)};
* time index, key ``X'00' 'T' + u64 (created + 2**63) + u64 seq``; record: key, then the entry's key. The oldest
  entry is the first record starting ``X'00' 'T'`` (one generic read); ties go to the lowest seq (stored or
  last updated first);
* slot (zowe layout only: Zowe's JSON has no room for seq), key ``X'00' 'S' + blake2b-128(entry key)``; record:
  key, the entry key, the 16 bytes created + seq of its time-index key. Update and delete find the entry's
  time-index record through it, without a scan;
* expiry indexes (``ttlSeconds``), key ``X'00' 'X' + u64 expiry (epoch ms) + digest(record key)`` for entries and
  ``X'00' 'Y' + ...`` for map items (the digest blake2b of ``min(16, key length - 10)`` bytes); record: key, then
  the key of the entry or map item. The entry or item has its expiry too (native entries and map items:
  ``"expires"`` in their JSON; zowe entries: the u64 after the time-index bytes of their slot record, 0 for
  none), which every read checks: nothing expired is returned. The first records starting ``X'00' 'X'`` (or
  ``'Y'``) are what expires first: every change of entries (of map items) first removes what has expired by then
  (generic reads, no scan), and a rebuild keeps the expiries;
* map item, key ``X'00' 'M' + digest(service id) + digest(map key) + digest(item key)`` (blake2b of
  ``min(16, (key length - 2) // 3)`` bytes; the service id's digest is the partition's, in both layouts); record:
  key, u32 length, JSON {"serviceId", ["dn",] "mapKey", "key", "value"}, checked on every read; a different item
  at the same digests (possible only with short keys) is refused with 409.

The key length must be at least 34 for the native layout (full-strength map digests from 50) and 23 for the
zowe layout (Zowe's minimum); the record length at least twice the key length + 16 (the zowe layout keeps an
entry's expiry only from twice the key length + 24). A data set whose counter
record is missing (new, or a fresh REPRO) is counted and indexed on open; :meth:`KsdsStorage.rebuild` does it
on demand.

**Concurrency and atomicity.** Each operation's record changes are one ``with ds.batch()``: one transaction, all
or nothing, also across a kill -9; in RLS mode a batch holds the data set's exclusive latch from start to end,
so other processes see it whole or not at all, and its reads see everything other processes committed before it
(the batch's start catches its view up with theirs). So the batches of every process run one at a time, and
that alone orders every entry change: an operation that changes entries (create, update, delete,
deleteForService) reads the counter, checks the size limit and rewrites the counter within its batch, with no
other process's change in between, so two processes cannot both pass the size check, and the count and the
time index stay exact. No record lock is waited for: the latch is the only thing a request waits for (at most
``lock_timeout``, then 503), and a record lock met inside a batch fails at once (``RecordLockedError``: a
process holds it outside a batch, e.g. a READ UPDATE by hand): the batch is rolled back and tried again until
``lock_timeout``, then 503. Reads take no lock (NRI): each sees what other processes committed. Within a
process one open data set serves every thread, one request at a time.

**Availability.** A data set that cannot be opened (damaged, not a data set, held elsewhere in a mode that
excludes this one, unreadable) or that fails while in use makes every call raise 503 ZWECS703W (Zowe's "Cache is
not available"); with ``lazy_open`` the storage is made all the same and opens the data set on a later call
(trying at most once a second), so a server starts and answers 503 until then. A data set removed (or removed
and defined again) by hand while open is noticed by the next call that changes something (each checks that the
file at the path is the one open: two system calls), which then opens what is at the path: no change is
acknowledged into a removed file. Calls that only read check it at most every ``PATH_CHECK_SECONDS`` (50 ms):
for that long after a removal they may still answer from the removed data set, as it was when removed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from .. import zowe
from ..dataset import Dataset, define
from ..dataset import open as ksds_open
from ..definition import CI_TRAILER, MAX_CI_SIZE, round_ci_size
from ..errors import (
    CorruptionError,
    DatasetClosedError,
    DatasetInUseError,
    DatasetNotFoundError,
    DeadlockError,
    KsdsError,
    LatchTimeoutError,
    NotADatasetError,
    RecordLockedError,
    RecordNotFoundError,
)
from .common import (
    created_order,
    entry_expiry,
    expired,
    item_expiry,
    rule_is_stale,
    token_is_expired,
    with_service,
)
from .model import (
    CACHE_NOT_AVAILABLE,
    DEFAULT_EVICTION,
    DEFAULT_SIZE,
    DUPLICATE_KEY,
    INSUFFICIENT_STORAGE,
    INVALID_PAYLOAD,
    KEY_NOT_IN_CACHE,
    PAYLOAD_TOO_LARGE,
    KeyValue,
    Storage,
    StorageError,
    caller_dn,
    partition_key,
)

T = TypeVar("T")
P = ParamSpec("P")
log = logging.getLogger("ksds")

LAYOUTS = ("native", "zowe")
#: Zowe's defaults, and the environment variables that change them (as Zowe's docs say)
DEFAULT_KEY_LENGTH = zowe.KEY_LENGTH
DEFAULT_RECORD_LENGTH = zowe.RECORD_LENGTH
ENV_KEY_LENGTH = "CACHING_STORAGE_VSAM_KEYLENGTH"
ENV_RECORD_LENGTH = "CACHING_STORAGE_VSAM_RECORDLENGTH"

COUNTER = b"\x00C"
ENTRY = b"\x00E"
MAP = b"\x00M"
SLOT = b"\x00S"
TIME = b"\x00T"
EXP_ENTRY = b"\x00X"
EXP_ITEM = b"\x00Y"
#: the most expired entries (or items) one call removes; the rest go with the next calls
PURGE_BATCH = 1000
#: how often (seconds, at most) a call that only reads checks that the open data set is still the one at the path
#: (calls that change it check every time)
PATH_CHECK_SECONDS = 0.05
#: what the engine raises when the data set is not available: 503
_UNAVAILABLE = (CorruptionError, DatasetClosedError, DatasetInUseError, DatasetNotFoundError, LatchTimeoutError,
                NotADatasetError, RecordLockedError, DeadlockError, OSError)


def _available(fn: Callable[P, T]) -> Callable[P, T]:
    """A public method of the storage that may change it: the data set opened first if it is not yet
    (``lazy_open``) or if it was removed from under the storage (checked on every call), and the engine's errors
    that say the data set is not available raised as 503 ZWECS703W."""

    @functools.wraps(fn)
    def call(*args: P.args, **kw: P.kwargs) -> T:
        self = args[0]
        assert isinstance(self, KsdsStorage)
        try:
            self._ready(True)
            return fn(*args, **kw)
        except _UNAVAILABLE as e:
            raise StorageError(CACHE_NOT_AVAILABLE, f"the data set {self.path}: {type(e).__name__}: {e}") from None

    return call


def _available_reads(fn: Callable[P, T]) -> Callable[P, T]:
    """:func:`_available` for a method that only reads: whether the data set was removed from under the storage is
    checked at most once every :data:`PATH_CHECK_SECONDS` (two system calls saved on almost every read)."""

    @functools.wraps(fn)
    def call(*args: P.args, **kw: P.kwargs) -> T:
        self = args[0]
        assert isinstance(self, KsdsStorage)
        try:
            self._ready(False)
            return fn(*args, **kw)
        except _UNAVAILABLE as e:
            raise StorageError(CACHE_NOT_AVAILABLE, f"the data set {self.path}: {type(e).__name__}: {e}") from None

    return call
DIGEST = 16
#: shortest keys: native entries (type + two digests); zowe: what Zowe accepts
MIN_KEY_LENGTH = {"native": 2 + 2 * DIGEST, "zowe": zowe.MIN_KEY_LENGTH}
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_NATIVE_HEAD = 8 + 4  # seq, JSON length
_NATIVE_HEADER = struct.Struct(">QI")
_EBCDIC_SPACE = b"\x40"


def ksds_config_from_env(environ: Mapping[str, str] | None = None) -> tuple[int | None, int | None]:
    """``(key_length, record_length)`` from ``CACHING_STORAGE_VSAM_KEYLENGTH`` / ``..._RECORDLENGTH`` (None where a
    variable is not set). Raises ValueError naming a variable that is not a positive integer."""
    env = os.environ if environ is None else environ
    out: list[int | None] = []
    for name in (ENV_KEY_LENGTH, ENV_RECORD_LENGTH):
        raw = env.get(name)
        if raw is None or raw.strip() == "":
            out.append(None)
            continue
        try:
            n = int(raw.strip())
        except ValueError:
            raise ValueError(f"{name} must be a positive integer, not {raw!r}") from None
        if n <= 0:
            raise ValueError(f"{name} must be a positive integer, not {raw!r}")
        out.append(n)
    return out[0], out[1]


def _digest(text: str, size: int) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=size).digest()


#: ``json.dumps(obj, ensure_ascii=False, separators=(",", ":"))`` without making an encoder per call
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
#: what ``json.loads`` parses with (its decoder), called directly (``loads`` adds two calls and a regex)
_RAW_DECODE = json.JSONDecoder().raw_decode


def _json_bytes(obj: object) -> bytes:
    return _ENCODE(obj).encode("utf-8", "surrogatepass")


def _json_load(data: bytes) -> Any:
    """The JSON of a record. Bytes that are not UTF-8 (a record written into the data set by something else) are
    read as U+FFFD, so the rest of the record is still read; lone surrogates an older version stored are read
    as they were stored."""
    try:
        text = data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        text = data.decode("utf-8", "replace")
    try:
        obj, end = _RAW_DECODE(text)
    except ValueError:
        end = -1
    if end != len(text):  # white space around it, or not JSON: exactly as json.loads takes or refuses it
        return json.loads(text)
    return obj


#: what reading a record that does not hold what it should raises (caught: the record is not an entry)
_UNREADABLE = (ValueError, KeyError, TypeError, AttributeError, RecursionError, struct.error)


def _owner(service_id: str) -> tuple[str, str | None]:
    """What a native record says about its caller: Zowe's string (its ``serviceId``) and the DN if proven."""
    return str(service_id), caller_dn(service_id)


def _owner_fields(service_id: str) -> dict[str, str]:
    dn = caller_dn(service_id)
    return {"serviceId": str(service_id)} if dn is None else {"serviceId": str(service_id), "dn": dn}


def _owner_of(obj: dict[str, Any]) -> tuple[str, str | None]:
    sid, dn = obj["serviceId"], obj.get("dn")
    if not isinstance(sid, str) or not (dn is None or isinstance(dn, str)):
        raise TypeError("serviceId and dn are strings")
    return sid, dn


#: the counter's JSON as :meth:`KsdsStorage._counter_record` writes it (JSON's integers: no leading zeros)
_COUNTER_JSON = re.compile(rb'\{"layout":"(native|zowe)","count":(-?(?:0|[1-9][0-9]*)),"seq":(-?(?:0|[1-9][0-9]*))\}')


class _NoCounter(RecordNotFoundError):
    """The counter record is missing (a new data set, or erased): it is built again."""


@dataclass
class _Counter:
    layout: str
    count: int
    seq: int


def _define(path: str, key_length: int, record_length: int) -> None:
    """Define the data set unless it exists; atomic against another process doing the same (define aside, link)."""
    ci_size = round_ci_size(min(MAX_CI_SIZE, max(4096, 4 * record_length + CI_TRAILER)))
    tmp = f"{path}.defining.{os.getpid()}.{threading.get_ident()}"
    define(tmp, key_length=key_length, record_length=record_length, ci_size=ci_size, share_options=(2, 3))
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


class KsdsStorage(Storage):
    """The cache in the ksds data set at ``path`` (defined if missing), opened with RLS.

    ``key_length`` / ``record_length``: for a new data set, else checked against it; when not given, the
    environment variables ``CACHING_STORAGE_VSAM_KEYLENGTH`` / ``CACHING_STORAGE_VSAM_RECORDLENGTH``, else an
    existing data set's, else 128 / 4096 (Zowe's). ``layout``: "native" or "zowe" (module docstring); a data set
    keeps the layout it was first used with. ``durability``: "process" (an acknowledged request survives kill -9)
    or "power" (also power loss). ``lock_timeout``: seconds to wait for another process's request.
    ``lazy_open``: if the data set cannot be opened now (it is damaged, not a data set, held elsewhere), make the
    storage anyway and answer 503 until a later call opens it (the key and record lengths are then checked when it
    opens). ``clock``: the time expiries are measured against (epoch seconds; tests give their own).
    """

    #: safe to call from several threads at once (the REST server need not serialise the calls)
    thread_safe = True
    #: its calls take microseconds (the page cache; one at a time anyway, under the mutex) and wait only for another
    #: process's request (the data set's latch): the REST server makes them on its event loop,
    #: where a trip to the thread pool and the threads' contention for the GIL would cost more than the call
    inline_calls = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        key_length: int | None = None,
        record_length: int | None = None,
        *,
        layout: str = "native",
        size: int = DEFAULT_SIZE,
        eviction: str = DEFAULT_EVICTION,
        durability: str = "process",
        lock_timeout: float = 30.0,
        lazy_open: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(size, eviction, clock=clock)
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
        env_kl, env_rl = ksds_config_from_env() if key_length is None or record_length is None else (None, None)
        want_kl = key_length if key_length is not None else env_kl
        want_rl = record_length if record_length is not None else env_rl
        path = os.fspath(path)
        self.path = path
        self.layout = layout
        self._zowe = layout == "zowe"
        #: zowe: partitions are Zowe's strings (``"<DN>, SERVICE=<id>"``), which a service id could spell
        self.flat_identities = self._zowe
        if want_kl is not None or want_rl is not None:  # a configuration that cannot work fails at once
            self._check_lengths(want_kl if want_kl is not None else DEFAULT_KEY_LENGTH,
                                want_rl if want_rl is not None else DEFAULT_RECORD_LENGTH)
        self.lock_timeout = lock_timeout
        #: figures for the service's metrics (counted when their transaction commits): entries removed by
        #: removeOldest, entries and map items removed because they expired; the seconds spent starting
        #: transactions (waiting for the data set's latch while other processes' transactions ran), the
        #: transactions tried again after meeting a locked record, and the requests ended by a lock or latch timeout
        self.evictions = 0
        self.expired_entries = 0
        self.expired_items = 0
        self.lock_wait_seconds = 0.0
        self.lock_retries = 0
        self.lock_timeouts = 0
        self._pending = [0, 0, 0]  # evictions, expired entries, expired items of the transaction under way
        self._want = (want_kl, want_rl, durability)
        self._mutex = threading.RLock()
        self._ds_or_none: Dataset | None = None
        self._closed = False
        self._next_try = 0.0
        self._last_error = ""
        self._path_checked = 0.0  # time.monotonic() of the last check that the open data set is the one at the path
        self._partitions: dict[object, bytes] = {}  # the entries' key prefixes of recent callers (native layout)
        try:
            self._open()
        except _UNAVAILABLE as e:
            if not lazy_open:
                raise
            self._last_error = f"{type(e).__name__}: {e}"
            self._next_try = time.monotonic() + 1.0

    @property
    def dataset(self) -> Dataset | None:
        """The open data set (None while it is not open), for figures such as its LISTCAT statistics."""
        return self._ds_or_none

    @property
    def _ds(self) -> Dataset:
        ds = self._ds_or_none
        if ds is None:
            raise DatasetClosedError(f"{self.path} is not open")
        return ds

    def _open(self) -> None:
        """Open the data set (defined first if missing) and check it (lengths, layout; the counter built if
        missing)."""
        want_kl, want_rl, durability = self._want
        path = self.path
        if not os.path.exists(path):
            kl = want_kl if want_kl is not None else DEFAULT_KEY_LENGTH
            rl = want_rl if want_rl is not None else DEFAULT_RECORD_LENGTH
            self._check_lengths(kl, rl)
            _define(path, kl, rl)
        ds = ksds_open(path, durability=durability, sharing="rls", lock_timeout=self.lock_timeout)
        try:
            d = ds.definition
            for what, want, have in (("key_length", want_kl, d.key_length), ("record_length", want_rl,
                                                                              d.record_length)):
                if want is not None and want != have:
                    raise ValueError(
                        f"{path} has {what} {have}, but {want} is configured (argument or "
                        f"{ENV_KEY_LENGTH if what == 'key_length' else ENV_RECORD_LENGTH}); they must agree"
                    )
            if d.key_offset != 0:
                raise ValueError(f"{path} has its key at offset {d.key_offset}; the caching service needs 0")
            self._check_lengths(d.key_length, d.record_length)
            self.key_length = d.key_length
            self.record_length = d.record_length
            self._kl = d.key_length
            self._rl = d.record_length
            self._map_digest = min(DIGEST, (self._kl - 2) // 3)
            self._exp_digest = min(DIGEST, self._kl - 10)
            #: the zowe layout's slot records hold an entry's expiry (else ttlSeconds on entries is refused)
            self._slot_expiry = self._rl >= 2 * self._kl + 24
            self._counter_key = self._pad(COUNTER)
            self._ds_or_none = ds
            self._bootstrap()
            self._path_checked = time.monotonic()
        except BaseException:
            self._ds_or_none = None
            ds.close()
            raise

    def _ready(self, changes: bool) -> None:
        """Open the data set if the storage was made without it (``lazy_open``), or if the one it has open was removed
        from under it (by hand: its file is no longer the one at the path; writes to it would be lost): at most one
        try a second. ``changes``: the call may change the data set, so the path is checked now (two system calls);
        a call that only reads checks it only if the last check is :data:`PATH_CHECK_SECONDS` old (until then it may
        still read the removed data set, as it was when removed)."""
        ds = self._ds_or_none
        if ds is not None:
            now = time.monotonic()
            if not changes and now - self._path_checked < PATH_CHECK_SECONDS:
                return
            if ds.at_path():
                self._path_checked = now
                return
            with self._mutex:
                if self._ds_or_none is ds:
                    self._ds_or_none = None
                    self._last_error = "the data set was removed while it was open"
                    self._next_try = 0.0
                    try:
                        ds.close()
                    except KsdsError as e:
                        log.warning("%s: closing a data set that was removed: %s", self.path, e)
        if self._ds_or_none is not None or self._closed:
            return
        with self._mutex:
            if self._ds_or_none is not None:
                return
            if time.monotonic() < self._next_try:
                raise DatasetClosedError(f"{self.path} could not be opened ({self._last_error}); the next try is "
                                         "within a second")
            self._next_try = time.monotonic() + 1.0
            try:
                self._open()
            except _UNAVAILABLE as e:
                self._last_error = f"{type(e).__name__}: {e}"
                raise

    def _check_lengths(self, kl: int, rl: int) -> None:
        low = MIN_KEY_LENGTH[self.layout]
        if kl < low:
            raise ValueError(
                f"key_length {kl} is too short for the {self.layout} layout: at least {low} "
                + ("(X'00' 'E' + two 16-byte digests)" if self.layout == "native" else "(Zowe's minimum)")
            )
        if rl < 2 * kl + 16:
            raise ValueError(
                f"record_length {rl} is too short for key_length {kl}: at least {2 * kl + 16} "
                "(a time-index record holds the key of its entry)"
            )

    # --- keys and records ---------------------------------------------------------------------------------------

    def _pad(self, prefix: bytes) -> bytes:
        return prefix.ljust(self._kl, b"\0")

    def _record(self, key: bytes, body: bytes) -> bytes:
        return key + body + bytes(self._rl - self._kl - len(body))

    def _partition_digest(self, service_id: str, size: int) -> bytes:
        """``_digest(partition_key(service_id), size)``, remembered for the callers seen last (a few thousand)."""
        sid = service_id if type(service_id) is str else (str(service_id), caller_dn(service_id),
                                                          getattr(service_id, "service", None))
        memo = self._partitions
        got = memo.get((sid, size))
        if got is None:
            if len(memo) >= 4096:
                memo.clear()
            got = memo[sid, size] = _digest(partition_key(service_id), size)
        return got

    def _entry_key(self, service_id: str, key: str) -> bytes:
        if self._zowe:
            return zowe.vsam_key(service_id, key, key_length=self._kl)
        return (ENTRY + self._partition_digest(service_id, DIGEST) + _digest(key, DIGEST)).ljust(self._kl, b"\0")

    def _service_prefix(self, service_id: str) -> bytes:
        if self._zowe:
            return f"{zowe.java_string_hash(service_id)}:".encode(zowe.ENCODING)
        return ENTRY + self._partition_digest(service_id, DIGEST)

    def _encode(self, service_id: str, kv: KeyValue, expires: int | None = None) -> bytes:
        """The entry's record (native: with seq 0, set by :meth:`_with_seq`); 400 if it does not fit. ``expires``:
        native: kept in the JSON (zowe: in the slot record, :meth:`_index`)."""
        if self._zowe:
            zkv = zowe.KeyValue(kv.key, kv.value, service_id, kv.created)
            try:
                return zowe.encode_record(
                    service_id, zkv, key_length=self._kl, record_length=self._rl, errors="strict"
                )
            except UnicodeEncodeError as e:
                raise StorageError(
                    INVALID_PAYLOAD, kv.key, f"{e.object[e.start:e.end]!r} has no IBM-1047 code (zowe layout)"
                ) from None
            except zowe.PayloadTooLargeError:
                need = len((zowe.key_text(service_id, kv.key, self._kl) + zowe.to_json(zkv)).encode(zowe.ENCODING))
                raise StorageError(PAYLOAD_TOO_LARGE, kv.key, need, self._rl) from None
        fields: dict[str, object] = {**_owner_fields(service_id), "key": kv.key, "value": kv.value,
                                     "created": kv.created}
        if expires is not None:
            fields["expires"] = expires
        body = _json_bytes(fields)
        need = self._kl + _NATIVE_HEAD + len(body)
        if need > self._rl:
            raise StorageError(PAYLOAD_TOO_LARGE, kv.key, need, self._rl)
        return self._record(self._entry_key(service_id, kv.key), bytes(8) + _U32.pack(len(body)) + body)

    def _with_seq(self, record: bytes, seq: int) -> bytes:
        if self._zowe:
            return record
        return record[: self._kl] + _U64.pack(seq) + record[self._kl + 8 :]

    def _decode(self, record: bytes) -> tuple[KeyValue, int, str | None, int | None] | None:
        """The entry of a record, its seq (zowe: 0, the slot record has it), the DN of its caller (None for a
        service id alone; zowe: always None) and its expiry (zowe: None, the slot record has it); None if it can't
        be decoded."""
        if self._zowe:
            try:
                z = zowe.decode_record(record, key_length=self._kl)
            except (zowe.ZoweLayoutError, RecursionError):
                return None
            return KeyValue(z.key, z.value, z.service_id, z.created or ""), 0, None, None
        kl = self._kl
        try:
            seq, n = _NATIVE_HEADER.unpack_from(record, kl)
            obj = _json_load(record[kl + _NATIVE_HEAD : kl + _NATIVE_HEAD + n])
            sid, dn = obj["serviceId"], obj.get("dn")
            if not isinstance(sid, str) or not (dn is None or isinstance(dn, str)):
                return None
            key, value, created, expires = obj["key"], obj["value"], obj["created"], obj.get("expires")
            if not (isinstance(key, str) and isinstance(value, str) and isinstance(created, str)):
                return None
            if not (expires is None or (isinstance(expires, int) and not isinstance(expires, bool))):
                expires = None
            return KeyValue(key, value, sid, created), seq, dn, expires
        except _UNREADABLE:
            return None

    def _owned(self, kv: KeyValue, dn: str | None, service_id: str) -> bool:
        """Whether a decoded entry belongs to the caller: the same service id string and (native) the same proven
        DN, so a service id that spells a DN's string is not that DN (zowe: a record without serviceId is taken
        by hash)."""
        if self._zowe:
            return kv.service_id == service_id or kv.service_id == ""
        return (kv.service_id, dn) == _owner(service_id)

    def _time_key(self, created: str, seq: int) -> bytes:
        return self._pad(TIME + _U64.pack(created_order(created) + (1 << 63)) + _U64.pack(seq))

    def _slot_key(self, entry_key: bytes) -> bytes:
        return self._pad(SLOT + hashlib.blake2b(entry_key, digest_size=DIGEST).digest())

    def _map_prefix(self, service_id: str, map_key: str | None = None) -> bytes:
        d = self._map_digest
        prefix = MAP + self._partition_digest(service_id, d)
        return prefix if map_key is None else prefix + _digest(map_key, d)

    def _map_key(self, service_id: str, map_key: str, key: str) -> bytes:
        return self._pad(self._map_prefix(service_id, map_key) + _digest(key, self._map_digest))

    def _map_record(self, service_id: str, map_key: str, kv: KeyValue, expires: int | None = None) -> bytes:
        key = self._map_key(service_id, map_key, kv.key)
        fields: dict[str, object] = {**_owner_fields(service_id), "mapKey": map_key, "key": kv.key, "value": kv.value}
        if expires is not None:
            fields["expires"] = expires
        body = _json_bytes(fields)
        need = self._kl + 4 + len(body)
        if need > self._rl:
            raise StorageError(PAYLOAD_TOO_LARGE, kv.key, need, self._rl)
        return self._record(key, _U32.pack(len(body)) + body)

    def _load(self, record: bytes) -> Any:
        (n,) = _U32.unpack_from(record, self._kl)
        return _json_load(record[self._kl + 4 : self._kl + 4 + n])

    # --- the counter and the time index --------------------------------------------------------------------------

    def _read_counter(self) -> _Counter:
        """The counter (:class:`_NoCounter` if its record is missing). Its JSON as :meth:`_counter_record` writes it
        is parsed without the JSON parser (one regular expression: 4x faster); any other JSON with it."""
        rec = self._ds.get(self._counter_key)
        if rec is None:
            raise _NoCounter(f"{self.path}: the counter record is missing")
        kl = self._kl
        (n,) = _U32.unpack_from(rec, kl)
        body = rec[kl + 4 : kl + 4 + n]
        m = _COUNTER_JSON.fullmatch(body)
        if m is not None:
            return _Counter(m[1].decode(), int(m[2]), int(m[3]))
        obj = _json_load(body)
        return _Counter(obj["layout"], obj["count"], obj["seq"])

    def _counter_record(self, c: _Counter) -> bytes:
        """The counter's record: the JSON is what ``json.dumps`` writes (the same bytes), built without it."""
        if c.layout in LAYOUTS and type(c.count) is int and type(c.seq) is int:
            body = b'{"layout":"%s","count":%d,"seq":%d}' % (c.layout.encode(), c.count, c.seq)
        else:
            body = _json_bytes({"layout": c.layout, "count": c.count, "seq": c.seq})
        return self._record(self._counter_key, _U32.pack(len(body)) + body)

    def _index(self, entry_key: bytes, created: str, seq: int, expires: int | None = None) -> None:
        """Add the entry's time-index record (and, zowe, its slot record, with the expiry) and expiry-index record."""
        tkey = self._time_key(created, seq)
        self._ds.write(self._record(tkey, entry_key))
        if self._zowe:
            tail = _U64.pack(expires or 0) if self._slot_expiry else b""
            self._ds.write(self._record(self._slot_key(entry_key), entry_key + tkey[2:18] + tail))
        self._add_expiry(EXP_ENTRY, entry_key, expires)

    def _slot_expires(self, entry_key: bytes) -> int | None:
        """A zowe entry's expiry, from its slot record (None: none, or no slot)."""
        if not self._slot_expiry:
            return None
        slot = self._ds.get(self._slot_key(entry_key))
        if slot is None or slot[self._kl : 2 * self._kl] != entry_key:
            return None
        (n,) = _U64.unpack_from(slot, 2 * self._kl + 16)
        return n or None

    def _unindex(self, entry_key: bytes, kv: KeyValue, seq: int, expires: int | None = None) -> None:
        """Remove the entry's time-index record (and slot record) if it has them, and its expiry-index record
        (native: ``expires`` is the entry's; zowe: the slot record's)."""
        ds = self._ds
        if self._zowe:
            skey = self._slot_key(entry_key)
            slot = ds.get(skey)
            if slot is None or slot[self._kl : 2 * self._kl] != entry_key:
                return
            tkey = self._pad(TIME + slot[2 * self._kl : 2 * self._kl + 16])
            if self._slot_expiry:
                (n,) = _U64.unpack_from(slot, 2 * self._kl + 16)
                expires = n or None
            ds.erase(skey)
        else:
            tkey = self._time_key(kv.created, seq)
        t = ds.get(tkey)
        if t is not None and t[self._kl : 2 * self._kl] == entry_key:
            ds.erase(tkey)
        self._drop_expiry(EXP_ENTRY, entry_key, expires)

    # --- the expiry indexes --------------------------------------------------------------------------------------

    def _exp_key(self, kind: bytes, record_key: bytes, expires: int) -> bytes:
        return self._pad(kind + _U64.pack(max(0, expires)) + hashlib.blake2b(record_key,
                                                                          digest_size=self._exp_digest).digest())

    def _add_expiry(self, kind: bytes, record_key: bytes, expires: int | None) -> None:
        if expires is None:
            return
        rec = self._record(self._exp_key(kind, record_key, expires), record_key)
        if self._ds.get(rec[: self._kl]) is None:
            self._ds.write(rec)
        else:
            self._ds.rewrite(rec)

    def _drop_expiry(self, kind: bytes, record_key: bytes, expires: int | None) -> None:
        if expires is None:
            return
        ekey = self._exp_key(kind, record_key, expires)
        rec = self._ds.get(ekey)
        if rec is not None and rec[self._kl : 2 * self._kl] == record_key:
            self._ds.erase(ekey)

    def _expired_first(self, kind: bytes, now: int) -> tuple[bytes, int, bytes] | None:
        """The first expiry-index record of ``kind`` if it has expired by ``now``: (its key, expiry, record key).

        A browse from ``kind`` that stops before the expiry-index keys of ``now + 1``: none is an answer, not an
        exception (in a batch, half the cost of a generic read that raises :class:`~ksds.RecordNotFoundError`)."""
        if now < 0:
            return None  # the index keys hold max(0, expiry)
        kl = self._kl
        for rec in self._ds.browse(kind, generic=True, stop=(kind + _U64.pack(now + 1)).ljust(kl, b"\0")):
            (expires,) = _U64.unpack_from(rec, 2)
            return rec[:kl], expires, rec[kl : 2 * kl]
        return None

    def _expiring(self, kind: bytes, now: int) -> bool:
        """Whether an expiry-index record of ``kind`` has expired by ``now`` (outside a batch, where a read that
        raises, which needs no latch while nothing changed, is cheaper than a browse, which takes it)."""
        try:
            rec = self._ds.read(kind, generic=True)
        except RecordNotFoundError:
            return False
        (expires,) = _U64.unpack_from(rec, 2)
        return bool(expires <= now)

    def _purge_entries(self, c: _Counter, now: int) -> bool:
        """Remove the entries expired by ``now`` (at most PURGE_BATCH), counting them off ``c`` (call in a
        transaction that read ``c``). Returns whether anything changed."""
        changed = False
        for _ in range(PURGE_BATCH):
            got = self._expired_first(EXP_ENTRY, now)
            if got is None:
                break
            ekey, expires, rkey = got
            self._ds.erase(ekey)
            changed = True
            rec = self._ds.get(rkey)
            decoded = None if rec is None else self._decode(rec)
            if decoded is None:
                continue
            kv, seq, _, own = decoded
            if self._zowe:
                own = self._slot_expires(rkey)
            if own != expires:  # the entry was written again since, with another expiry (or none)
                continue
            self._unindex(rkey, kv, seq, None)
            self._ds.erase(rkey)
            c.count -= 1
            self._pending[1] += 1
        return changed

    def _expired_entry(self, rkey: bytes, rec: bytes, now: int) -> bool:
        """If the entry record ``rec`` (key ``rkey``) has expired by ``now``: remove it with its index records
        (call in the transaction that read the counter; the caller counts it off) and say so."""
        decoded = self._decode(rec)
        if decoded is None:
            return False
        kv, seq, _, own = decoded
        if self._zowe:
            own = self._slot_expires(rkey)
        if not expired(own, now):
            return False
        self._unindex(rkey, kv, seq, own)
        self._ds.erase(rkey)
        self._pending[1] += 1
        return True

    def _purge_items(self, now: int) -> None:
        """Remove the map items expired by ``now`` (at most PURGE_BATCH; call in a transaction)."""
        for _ in range(PURGE_BATCH):
            got = self._expired_first(EXP_ITEM, now)
            if got is None:
                break
            ekey, expires, rkey = got
            self._ds.erase(ekey)
            rec = self._ds.get(rkey)
            if rec is None:
                continue
            try:
                own = self._load(rec).get("expires")
            except _UNREADABLE:
                continue
            if own == expires:
                self._ds.erase(rkey)
                self._pending[2] += 1

    def _evict_oldest(self) -> bool | None:
        """Remove the oldest entry: True; False if the oldest index record pointed nowhere; None if no index."""
        ds = self._ds
        try:
            t = ds.read(TIME, generic=True)
        except RecordNotFoundError:
            return None
        kl = self._kl
        entry_key = t[kl : 2 * kl]
        ds.erase(t[:kl])
        if self._zowe:
            skey = self._slot_key(entry_key)
            if ds.get(skey) is not None:
                ds.erase(skey)
        if ds.get(entry_key) is None:
            return False
        ds.erase(entry_key)
        self._pending[0] += 1
        return True

    def _prefixed(self, prefix: bytes) -> Iterator[bytes]:
        for rec in self._ds.browse(prefix, generic=True):
            if not rec.startswith(prefix):
                return
            yield rec

    def _bootstrap(self) -> None:
        """Make sure the counter exists: on a new data set, or a REPRO'd Zowe one, build it and the time index."""
        self._txn(self._ensure_counter, counter=False)

    def _ensure_counter(self) -> None:
        try:
            c = self._read_counter()
        except RecordNotFoundError:
            self._rebuild()
            return
        if c.layout != self.layout:
            raise ValueError(f"{self.path} holds the {c.layout} layout, not {self.layout}")

    def _rebuild(self) -> None:
        """Count the entries and index them by created (one scan, in the bootstrap batch)."""
        ds = self._ds
        kl = self._kl
        kept: dict[bytes, int] = {}  # zowe: the entries' expiries, which only their slot records hold
        if self._zowe and self._slot_expiry:
            for rec in self._prefixed(SLOT):
                (n,) = _U64.unpack_from(rec, 2 * kl + 16)
                if n:
                    kept[rec[kl : 2 * kl]] = n
        for prefix in (TIME, SLOT, EXP_ENTRY):
            for key in [r[:kl] for r in self._prefixed(prefix)]:
                ds.erase(key)
        entries: list[tuple[bytes, KeyValue, int, int | None]] = []
        if self._zowe:
            for rec in ds.browse(b"\x01", generic=True):  # every key that does not start with X'00'
                got = self._decode(rec)
                if got is not None:
                    entries.append((rec[:kl], got[0], len(entries) + 1, kept.get(rec[:kl])))
        else:
            for rec in self._prefixed(ENTRY):
                got = self._decode(rec)
                if got is not None:
                    entries.append((rec[:kl], got[0], got[1], got[3]))
        for key, kv, seq, expires in entries:
            self._index(key, kv.created, seq, expires)
        last = max((seq for _, _, seq, _ in entries), default=0)
        counter = self._counter_record(_Counter(self.layout, len(entries), last))
        if ds.get(self._counter_key) is None:
            ds.write(counter)
        else:
            ds.rewrite(counter)

    def _txn(self, fn: Callable[[], T], *, counter: bool) -> T:
        """Run ``fn`` as one transaction (a batch). ``counter``: ``fn`` reads the counter record (first), and if it is
        missing (erased by hand?) it is built again and ``fn`` tried again.

        The batch holds the data set's exclusive latch from start to end and sees every other process's committed
        work, so the transactions of every process run one at a time: ``fn`` reads the counter, checks and changes
        it with no other process in between (no record lock to wait for). A record lock met inside the batch (held
        by a process that took it outside a batch) rolls it back; it is tried again until ``lock_timeout`` has
        passed.
        """
        ds = self._ds
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.0005
        with self._mutex:
            while True:
                try:
                    self._pending = pending = [0, 0, 0]
                    waited = time.monotonic()
                    with ds.batch():  # waits for the latch while another process's transaction runs
                        self.lock_wait_seconds += time.monotonic() - waited
                        result = fn()
                    self.evictions += pending[0]
                    self.expired_entries += pending[1]
                    self.expired_items += pending[2]
                    return result
                except _NoCounter:
                    if not counter:
                        raise
                    self._txn(self._ensure_counter, counter=False)
                    continue
                except LatchTimeoutError:
                    self.lock_timeouts += 1
                    raise
                except (RecordLockedError, DeadlockError):
                    if time.monotonic() >= deadline:
                        self.lock_timeouts += 1
                        raise
                    self.lock_retries += 1
                time.sleep(delay)
                delay = min(delay * 2, 0.02)

    # --- entries -----------------------------------------------------------------------------------------------

    def _find(self, service_id: str, key: str, now: int) -> tuple[bytes, KeyValue, int, int | None] | None:
        """The entry's record key, entry, seq and expiry; None if the service has no such key (or it expired)."""
        rkey = self._entry_key(service_id, key)
        rec = self._ds.get(rkey)
        if rec is None:
            return None
        got = self._decode(rec)
        if got is None or got[0].key != key or not self._owned(got[0], got[2], service_id):
            return None
        if self._zowe:
            expires = self._slot_expires(rkey)
            kv = with_service(service_id, got[0])
        else:  # owned: its service id is already str(service_id), and the entry a new object
            expires = got[3]
            kv = got[0]
        if expires is not None and expires <= now:  # expired(expires, now)
            return None
        return rkey, kv, got[1], expires

    def _entry_expiry(self, kv: KeyValue, now: int) -> int | None:
        expires = entry_expiry(kv, now)
        if expires is not None and self._zowe and not self._slot_expiry:
            raise StorageError(
                INVALID_PAYLOAD, kv.key, f"ttlSeconds needs a record length of at least {2 * self._kl + 24} in the "
                f"zowe layout (this data set's is {self._rl})"
            )
        return expires

    @_available
    def create(self, service_id: str, kv: KeyValue) -> KeyValue:
        stored = with_service(service_id, kv)

        def fn() -> KeyValue:
            ds = self._ds
            now = self.now_ms()
            c = self._read_counter()
            changed = self._purge_entries(c, now)
            expires = self._entry_expiry(kv, now)
            record = self._encode(service_id, stored, expires)
            rkey = record[: self._kl]
            old = ds.get(rkey)
            if old is not None and self._expired_entry(rkey, old, now):
                changed = True  # an expired entry the purge had not reached: it is gone, and its key is free
                c.count -= 1
            elif old is not None:  # this key, or (zowe) one with the same hashCodes
                if changed:
                    ds.rewrite(self._counter_record(c))
                raise StorageError(DUPLICATE_KEY, kv.key)
            if expired(expires, now):  # ttlSeconds <= 0: nothing to store
                if changed:
                    ds.rewrite(self._counter_record(c))
                return stored
            if self.size and c.count >= self.size:
                if self.eviction == "reject":
                    if changed:
                        ds.rewrite(self._counter_record(c))
                    raise StorageError(INSUFFICIENT_STORAGE)
                while c.count >= self.size:
                    gone = self._evict_oldest()
                    if gone is None:
                        raise StorageError(INSUFFICIENT_STORAGE)
                    if gone:
                        c.count -= 1
            c.seq += 1
            c.count += 1
            ds.write(self._with_seq(record, c.seq))
            self._index(rkey, stored.created, c.seq, expires)
            ds.rewrite(self._counter_record(c))
            return stored

        return self._txn(fn, counter=True)

    @_available_reads
    def read(self, service_id: str, key: str) -> KeyValue:
        with self._mutex:
            found = self._find(service_id, key, self.now_ms())
        if found is None:
            raise StorageError(KEY_NOT_IN_CACHE, key, service_id)
        return found[1]

    @_available
    def update(self, service_id: str, kv: KeyValue) -> KeyValue:
        stored = with_service(service_id, kv)

        def fn() -> KeyValue:
            now = self.now_ms()
            c = self._read_counter()
            if self._purge_entries(c, now):
                self._ds.rewrite(self._counter_record(c))
            expires = self._entry_expiry(kv, now)
            record = self._encode(service_id, stored, expires)
            found = self._find(service_id, kv.key, now)
            if found is None:
                raise StorageError(KEY_NOT_IN_CACHE, kv.key, service_id)
            rkey, old, seq, old_expires = found
            self._unindex(rkey, old, seq, old_expires)
            if expired(expires, now):  # ttlSeconds <= 0: the entry is removed
                self._ds.erase(rkey)
                c.count -= 1
            else:
                c.seq += 1
                self._ds.rewrite(self._with_seq(record, c.seq))
                self._index(rkey, stored.created, c.seq, expires)
            self._ds.rewrite(self._counter_record(c))
            return stored

        return self._txn(fn, counter=True)

    @_available
    def delete(self, service_id: str, key: str) -> KeyValue:
        def fn() -> KeyValue:
            now = self.now_ms()
            c = self._read_counter()
            if self._purge_entries(c, now):
                self._ds.rewrite(self._counter_record(c))
            found = self._find(service_id, key, now)
            if found is None:
                raise StorageError(KEY_NOT_IN_CACHE, key, service_id)
            rkey, old, seq, expires = found
            c.count -= 1
            self._unindex(rkey, old, seq, expires)
            self._ds.erase(rkey)
            self._ds.rewrite(self._counter_record(c))
            return old

        return self._txn(fn, counter=True)

    def _service_entries(self, service_id: str, now: int) -> Iterator[tuple[bytes, KeyValue, int, int | None]]:
        for rec in self._prefixed(self._service_prefix(service_id)):
            got = self._decode(rec)
            if got is not None and self._owned(got[0], got[2], service_id):
                rkey = rec[: self._kl]
                expires = self._slot_expires(rkey) if self._zowe else got[3]
                if not expired(expires, now):
                    yield rkey, with_service(service_id, got[0]), got[1], expires

    @_available_reads
    def read_for_service(self, service_id: str) -> dict[str, KeyValue]:
        with self._mutex:
            return {kv.key: kv for _, kv, _, _ in self._service_entries(service_id, self.now_ms())}

    @_available
    def delete_for_service(self, service_id: str) -> None:
        def fn() -> None:
            now = self.now_ms()
            c = self._read_counter()
            changed = self._purge_entries(c, now)
            found = list(self._service_entries(service_id, now))
            for rkey, kv, seq, expires in found:
                self._unindex(rkey, kv, seq, expires)
                self._ds.erase(rkey)
            c.count -= len(found)
            if found or changed:
                self._ds.rewrite(self._counter_record(c))

        self._txn(fn, counter=True)

    @_available
    def count(self) -> int:
        """The entries held (what the size limit counts), after removing the expired ones if there are any."""
        with self._mutex:
            if not self._expiring(EXP_ENTRY, self.now_ms()):
                return self._read_counter().count

        def fn() -> tuple[int, bool]:
            c = self._read_counter()
            now = self.now_ms()
            if self._purge_entries(c, now):
                self._ds.rewrite(self._counter_record(c))
            return c.count, self._expired_first(EXP_ENTRY, now) is not None

        while True:  # a batch of PURGE_BATCH at a time, so that no transaction grows without bound
            count, more = self._txn(fn, counter=True)
            if not more:
                return count

    # --- list maps ---------------------------------------------------------------------------------------------

    def _item_of(self, rec: bytes, owner: tuple[str, str | None], now: int) -> tuple[str, str, str, int | None] | None:
        """(map key, item key, value, expiry) of a map item record of ``owner`` that has not expired, else None."""
        try:
            obj = self._load(rec)
            if _owner_of(obj) != owner:
                return None
            m, k, v, expires = obj["mapKey"], obj["key"], obj["value"], obj.get("expires")
            if not (isinstance(m, str) and isinstance(k, str) and isinstance(v, str)):
                return None
        except _UNREADABLE:
            return None
        if not (expires is None or (isinstance(expires, int) and not isinstance(expires, bool))):
            expires = None
        if expired(expires, now):
            return None
        return m, k, v, expires

    def _map_items(self, service_id: str, map_key: str | None, now: int) -> Iterator[tuple[bytes, str, str, str]]:
        """(record key, map key, item key, value) of the service's items (of one map, or all) that have not
        expired."""
        owner = _owner(service_id)
        for rec in self._prefixed(self._map_prefix(service_id, map_key)):
            got = self._item_of(rec, owner, now)
            if got is None or (map_key is not None and got[0] != map_key):
                continue
            yield rec[: self._kl], got[0], got[1], got[2]

    @_available
    def store_map_item(self, service_id: str, map_key: str, kv: KeyValue) -> KeyValue:
        def fn() -> KeyValue:
            now = self.now_ms()
            self._purge_items(now)
            expires = item_expiry(map_key, kv, now)
            record = self._map_record(service_id, map_key, kv, expires)
            rkey = record[: self._kl]
            old = self._ds.get(rkey)
            if old is not None:
                try:
                    obj = self._load(old)
                    same = (_owner_of(obj), obj["mapKey"], obj["key"]) == (_owner(service_id), map_key, kv.key)
                    old_expires = obj.get("expires")
                except _UNREADABLE:  # not a map item we can read (written by something else): replaced
                    same, old_expires = True, None
                if not same:
                    raise StorageError(DUPLICATE_KEY, kv.key)  # digests collide (short keys only)
                if isinstance(old_expires, int) and not isinstance(old_expires, bool):
                    self._drop_expiry(EXP_ITEM, rkey, old_expires)
            if expired(expires, now):  # removed instead of stored (Zowe: ttlSeconds <= 0)
                if old is not None:
                    self._ds.erase(rkey)
            else:
                if old is None:
                    self._ds.write(record)
                else:
                    self._ds.rewrite(record)
                self._add_expiry(EXP_ITEM, rkey, expires)
            return with_service(service_id, kv)

        return self._txn(fn, counter=False)

    @_available_reads
    def get_all_map_items(self, service_id: str, map_key: str) -> dict[str, str]:
        with self._mutex:
            return {k: v for _, _, k, v in self._map_items(service_id, map_key, self.now_ms())}

    @_available_reads
    def get_all_maps(self, service_id: str) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        with self._mutex:
            for _, m, k, v in self._map_items(service_id, None, self.now_ms()):
                out.setdefault(m, {})[k] = v
        return out

    @_available_reads
    def get_map_items(self, service_id: str, query: Mapping[str, Sequence[str | None]]) -> dict[str, dict[str, str]]:
        """One keyed read per item asked for (its record key is the digests of the caller, map and item)."""
        owner = _owner(service_id)
        out: dict[str, dict[str, str]] = {}
        with self._mutex:
            now = self.now_ms()
            for map_key, keys in query.items():
                found: dict[str, str] = {}
                for key in keys:
                    if key is None or key in found:
                        continue
                    rec = self._ds.get(self._map_key(service_id, map_key, key))
                    got = None if rec is None else self._item_of(rec, owner, now)
                    if got is not None and got[0] == map_key and got[1] == key:
                        found[key] = got[2]
                if found:
                    out[map_key] = found
        return out

    def _evict_items(self, service_id: str, map_key: str, stale: Callable[[str, int], bool]) -> None:
        def fn() -> None:
            now = self.now_ms()
            self._purge_items(now)
            owner = _owner(service_id)
            for rec in list(self._prefixed(self._map_prefix(service_id, map_key))):
                got = self._item_of(rec, owner, now)
                if got is not None and got[0] == map_key and stale(got[2], now):
                    self._drop_expiry(EXP_ITEM, rec[: self._kl], got[3])
                    self._ds.erase(rec[: self._kl])

        self._txn(fn, counter=False)

    @_available
    def remove_non_relevant_rules(self, service_id: str, map_key: str) -> None:
        self._evict_items(service_id, map_key, rule_is_stale)

    @_available
    def remove_non_relevant_tokens(self, service_id: str, map_key: str) -> None:
        self._evict_items(service_id, map_key, lambda v, now: token_is_expired(v, now / 1000))

    # --- the rest ----------------------------------------------------------------------------------------------

    @_available
    def rebuild(self) -> int:
        """Recount the entries and rebuild the time index (one scan, one transaction): after records were added
        to the data set behind the storage's back, e.g. REPRO'd into it once it was in use. Returns the count.
        (A data set with no counter record, a new one or a fresh REPRO, is rebuilt on open.)"""

        def fn() -> int:
            self._rebuild()
            return self._read_counter().count

        return self._txn(fn, counter=True)

    @_available_reads
    def audit(self) -> dict[str, int]:
        """Scan the data set and count its records by kind (for tests and diagnostics: the storage never scans).

        ``entries``, ``time_index``, ``slots``, ``map_items`` and ``counter`` (the counter's count), and
        ``expiry_index`` where there are expiry-index records; the bookkeeping is consistent when entries ==
        time_index == counter (and, zowe, == slots).
        """
        with self._mutex:
            kinds = {"entries": 0, "time_index": 0, "slots": 0, "map_items": 0, "expiry_index": 0}
            for rec in self._ds.browse():
                t = rec[:2]
                if t in (EXP_ENTRY, EXP_ITEM):
                    kinds["expiry_index"] += 1
                elif t == TIME:
                    kinds["time_index"] += 1
                elif t == SLOT:
                    kinds["slots"] += 1
                elif t == MAP:
                    kinds["map_items"] += 1
                elif t == ENTRY or (self._zowe and rec[:1] != b"\0"):
                    kinds["entries"] += 1
            kinds["counter"] = self._read_counter().count
            if not kinds["expiry_index"]:
                del kinds["expiry_index"]  # only for data sets with expiries (the keys stay what they were)
            return kinds

    def close(self) -> None:
        with self._mutex:
            self._closed = True
            if self._ds_or_none is not None:
                self._ds_or_none.close()

    def __enter__(self) -> KsdsStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
