"""The workload rows: what each one measures, on which state, with which inputs.

Every row's inputs are built once (from the seeded :class:`~benchmarks.data.Records`) and handed to every
store, so every store gets the same records in the same order. A row names the state it runs on:

* ``fresh``  -- a new, empty store (made before the clock starts);
* ``half``   -- a copy of a store that ``setup`` loaded once (untimed) with the even-numbered records;
* ``base``   -- the loaded data set (``records`` records), opened once per store (not durable), warmed, shared
  by the read rows and then by the rows that change values only (rewrite, cache_mix);
* ``copy``   -- a private copy of the loaded data set, opened (durable or not, as the row says) and warmed;
* ``cold``   -- the loaded data set, closed: the clock covers opening it and the first reads;
* ``raw``    -- no store: an operating-system reference (pwrite + sync).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .data import Records
from .stores.base import DURABLE, KV, ORDERED, Store

RANGE_LENGTH = 100
BATCH_SIZE = 1000
#: requests per transaction in the bulk rows (load, random insert, rewrite, erase), for every store alike
BULK_TXN = 1000


@dataclass(frozen=True)
class Plan:
    """How many requests each row makes, from the record count (``quick``: tiny sizes for a smoke run)."""

    records: int
    reads: int
    scans: int  # range scans of RANGE_LENGTH records
    range_length: int
    updates: int  # rewrites, erases, cache-mix requests
    requests: int  # per-request non-durable writes
    durable: int  # per-request durable writes
    batches: int  # durable batches of batch_size records
    batch_size: int
    syncs: int  # pwrite + sync reference
    cold_reads: int
    bulk_txn: int  # requests per transaction in the bulk rows (0: the whole row is one transaction)

    @classmethod
    def for_records(cls, n: int, quick: bool = False, bulk_txn: int = BULK_TXN) -> Plan:
        if n < 20:
            raise ValueError("--records must be at least 20")
        length = min(RANGE_LENGTH, n // 4)
        if quick:
            return cls(
                records=n, reads=min(n, 1000), scans=min(50, n // 10), range_length=length,
                updates=min(n // 5, 500), requests=min(n // 10, 200), durable=20, batches=2,
                batch_size=min(BATCH_SIZE, 100), syncs=20, cold_reads=min(n // 2, 200), bulk_txn=bulk_txn,
            )
        return cls(
            records=n, reads=min(n, 20_000), scans=max(10, min(1000, n // 100)), range_length=length,
            updates=max(10, min(10_000, n // 10)), requests=max(10, min(2000, n // 10)), durable=300,
            batches=5, batch_size=BATCH_SIZE, syncs=300, cold_reads=min(1000, max(10, n // 2)),
            bulk_txn=bulk_txn,
        )


@dataclass
class Row:
    """One workload row. ``run(store, inputs)`` is the timed part; it returns a count checked against
    ``expect(inputs)`` (so a store that silently does nothing is caught)."""

    name: str
    title: str
    state: str  # fresh | half | base | copy | cold | raw
    needs: str  # KV, ORDERED or DURABLE
    unit: str  # what one request is
    prepare: Callable[[Records, Plan], Any]
    run: Callable[[Store, Any, Plan], int]
    ops: Callable[[Any], int]
    expect: Callable[[Any], int]
    records_per_op: int | Callable[[Plan], int] = 1
    durable: bool = False
    setup: Callable[[Store, Any, Plan], None] | None = None
    txn: str = ""  # the transaction setup, for the README and the JSON
    tags: list[str] = field(default_factory=list)

    def rec_per_op(self, plan: Plan) -> int:
        r = self.records_per_op
        return r(plan) if callable(r) else r


# --- inputs ---------------------------------------------------------------------------------------------------


def _all_records(r: Records, plan: Plan) -> list[bytes]:
    return [r.record(i) for i in range(plan.records)]


def _halves(r: Records, plan: Plan) -> tuple[list[bytes], list[bytes]]:
    first = [r.record(i) for i in range(0, plan.records, 2)]
    second_idx = list(range(1, plan.records, 2))
    r.rng("random_insert").shuffle(second_idx)
    return first, [r.record(i) for i in second_idx]


def _hit_keys(purpose: str, attr: str = "reads") -> Callable[[Records, Plan], list[bytes]]:
    def prep(r: Records, plan: Plan) -> list[bytes]:
        return [r.key(i) for i in r.sample(purpose, getattr(plan, attr))]

    return prep


def _miss_keys(r: Records, plan: Plan) -> list[bytes]:
    return [r.miss_key(i) for i in r.sample("read_miss", plan.reads)]


def _prefixes(r: Records, plan: Plan) -> list[bytes]:
    return [r.prefix(i) for i in r.sample("prefix_read", plan.reads)]


def _range_starts(r: Records, plan: Plan) -> tuple[list[bytes], int]:
    # starts that leave range_length records after them, so every scan returns the same count
    idx = r.sample("range_scan", plan.scans, population=plan.records - plan.range_length)
    return [r.key(i) for i in idx], plan.range_length


class PerRepeat:
    """Inputs that differ in each repetition of a row (``for_repeat``), all of the same length: the rewrite and
    erase rows touch fresh records each time, so no store is favoured by a cache that already holds exactly the
    pages of the previous repetition."""

    def __init__(self, samples: list[list[bytes]]) -> None:
        self.samples = samples

    def for_repeat(self, rep: int) -> list[bytes]:
        return self.samples[rep % len(self.samples)]

    def __len__(self) -> int:
        return len(self.samples[0])


#: distinct samples prepared for the rows that must touch fresh records in each repetition
FRESH_SAMPLES = 8


def _fresh(purpose: str, plan: Plan, r: Records) -> list[list[int]]:
    """Up to FRESH_SAMPLES disjoint samples of ``plan.updates`` record indexes (as many as the records allow)."""
    chunks = max(1, min(FRESH_SAMPLES, plan.records // max(1, plan.updates)))
    idx = r.sample(purpose, plan.updates * chunks)
    return [idx[k * plan.updates : (k + 1) * plan.updates] for k in range(chunks)]


def _new_records(r: Records, plan: Plan) -> PerRepeat:
    return PerRepeat([[r.new_record(i) for i in chunk] for chunk in _fresh("rewrite", plan, r)])


def _erase_keys(r: Records, plan: Plan) -> PerRepeat:
    return PerRepeat([[r.key(i) for i in chunk] for chunk in _fresh("erase", plan, r)])


def _mix(r: Records, plan: Plan) -> list[tuple[bool, bytes]]:
    rng = r.rng("cache_mix")
    ops: list[tuple[bool, bytes]] = []
    for _ in range(plan.updates):
        i = rng.randrange(plan.records)
        if rng.random() < 0.1:
            ops.append((True, r.new_record(i)))
        else:
            ops.append((False, r.key(i)))
    return ops


def _extra(purpose: str, count: Callable[[Plan], int]) -> Callable[[Records, Plan], list[bytes]]:
    def prep(r: Records, plan: Plan) -> list[bytes]:
        return [r.extra_record(i) for i in r.sample(purpose, count(plan))]

    return prep


def _batched(r: Records, plan: Plan) -> tuple[list[bytes], int]:
    recs = _extra("batched_durable", lambda p: p.batches * p.batch_size)(r, plan)
    return recs, plan.batch_size


def _length(x: Sequence[Any]) -> int:
    return len(x)


# --- the rows -------------------------------------------------------------------------------------------------


def _load_first_half(store: Store, halves: tuple[list[bytes], list[bytes]], plan: Plan) -> None:
    store.insert(halves[0], plan.bulk_txn)


def _open_read(store: Store, keys: list[bytes], plan: Plan) -> int:
    store.open(readonly=True)
    return store.read_hits(keys)


ROWS: list[Row] = [
    Row("load", "load in key order", "fresh", KV, "record",
        _all_records, lambda s, x, p: s.insert(x, p.bulk_txn), _length, _length,
        txn="a transaction per --bulk-txn records (1000)"),
    Row("random_insert", "random insert (half loaded, other half in random order)", "half", KV, "record",
        _halves, lambda s, x, p: s.insert(x[1], p.bulk_txn), lambda x: len(x[1]), lambda x: len(x[1]),
        setup=lambda s, x, p: _load_first_half(s, x, p),
        txn="a transaction per --bulk-txn inserts (the half-load before them is untimed)"),
    Row("read_hit", "random read, key present", "base", KV, "record",
        _hit_keys("read_hit"), lambda s, x, p: s.read_hits(x), _length, _length,
        txn="one read transaction (sqlite, LMDB); none (ksds, bdb, diskcache)"),
    Row("read_miss", "random read, key absent", "base", KV, "record",
        _miss_keys, lambda s, x, p: s.read_misses(x), _length, lambda x: 0,
        txn="as read_hit"),
    Row("prefix_read", "generic (prefix) read: first record with a 16-byte prefix", "base", ORDERED, "record",
        _prefixes, lambda s, x, p: s.prefix_reads(x), _length, _length,
        txn="as read_hit; peers: seek to the first key >= prefix and check it"),
    Row("scan_forward", "full ordered scan, forward", "base", ORDERED, "record",
        lambda r, p: p.records, lambda s, x, p: s.scan(False), lambda x: x, lambda x: x,
        txn="as read_hit; a cursor / browse over all records"),
    Row("scan_backward", "full ordered scan, backward", "base", ORDERED, "record",
        lambda r, p: p.records, lambda s, x, p: s.scan(True), lambda x: x, lambda x: x,
        txn="as scan_forward"),
    Row("range_scan", "range scan of 100 records from a random key", "base", ORDERED, "scan",
        _range_starts, lambda s, x, p: s.range_scans(x[0], x[1]), lambda x: len(x[0]),
        lambda x: len(x[0]) * x[1], records_per_op=lambda p: p.range_length,
        txn="as read_hit; ksds: islice(ds.browse(start), 100)"),
    Row("rewrite", "rewrite (update) of random records", "base", KV, "record",
        _new_records, lambda s, x, p: s.rewrite(x, p.bulk_txn), _length, _length,
        txn="a transaction per --bulk-txn rewrites"),
    Row("cache_mix", "caching mix: 90% random read / 10% rewrite", "base", KV, "request",
        _mix, lambda s, x, p: s.cache_mix(x), _length, _length,
        txn="one transaction per request, not synced (ksds process durability, sqlite NORMAL autocommit)"),
    Row("erase", "erase of random records", "copy", KV, "record",
        _erase_keys, lambda s, x, p: s.erase(x, p.bulk_txn), _length, _length,
        txn="a transaction per --bulk-txn erases"),
    Row("write_request", "insert, one non-durable transaction per request", "copy", KV, "record",
        _extra("write_request", lambda p: p.requests), lambda s, x, p: s.insert(x, 1), _length, _length,
        txn="one transaction per insert, not synced (ksds durability process; sqlite NORMAL; "
            "LMDB sync off; bdb WRITE_NOSYNC)"),
    Row("fsync_4k", "reference: pwrite 4 KiB + fsync (allocated block, results folder's disk)", "raw", "",
        "request", lambda r, p: p.syncs, lambda s, x, p: 0, lambda x: x, lambda x: 0),
    Row("fdatasync_4k", "reference: pwrite 4 KiB + fdatasync (allocated block)", "raw", "",
        "request", lambda r, p: p.syncs, lambda s, x, p: 0, lambda x: x, lambda x: 0),
    Row("append_fdatasync_4k", "reference: append 4 KiB + fdatasync (file grows)", "raw", "",
        "request", lambda r, p: p.syncs, lambda s, x, p: 0, lambda x: x, lambda x: 0),
    Row("durable_write", "insert, one durable (synced) transaction per request", "copy", DURABLE, "record",
        _extra("durable_write", lambda p: p.durable), lambda s, x, p: s.insert(x, 1), _length, _length,
        durable=True,
        txn="one synced transaction per insert (ksds durability power; sqlite FULL autocommit; "
            "LMDB sync=True; bdb synced commit)"),
    Row("batched_durable", "durable batches of 1000 inserts (per record)", "copy", DURABLE, "record",
        _batched, lambda s, x, p: s.insert(x[0], x[1]), lambda x: len(x[0]), lambda x: len(x[0]),
        durable=True, txn="one synced transaction per batch (ksds: ds.batch() in durability power)"),
    Row("cold_start", "cold start: open + first random reads (page cache warm)", "cold", KV, "read",
        _hit_keys("cold_start", "cold_reads"), _open_read, _length, _length,
        txn="open read-only (where the store has it) + reads as in read_hit"),
    Row("cold_start_disk", "cold start with the files dropped from the page cache (fadvise)", "cold", KV,
        "read", _hit_keys("cold_start_disk", "cold_reads"), _open_read, _length, _length,
        txn="as cold_start, after fsync + posix_fadvise(DONTNEED) on every file of the store"),
]

ROW_NAMES = [r.name for r in ROWS]
ROWS_BY_NAME = {r.name: r for r in ROWS}
