"""The interface every store adapter implements.

Each adapter runs a whole workload's loop itself (``for k in keys: get(k)``, with the store's request bound to a
local name), so the harness adds the same small cost to every store: one Python loop step per request. Records
are stored as values under their key (the value is the whole record, key included), so every store's read
returns the same bytes a ksds read returns.

Transactions (what each store does is in its module and in ``benchmarks/README.md``):

* ``insert``, ``rewrite`` and ``erase`` take ``txn``: the number of requests per transaction. 1: every request is
  its own transaction (ksds: a plain request); N > 1: each N requests are one transaction (ksds: one
  ``ds.batch()``); 0: the whole call is one transaction.
* ``cache_mix`` makes every request its own transaction.
* reads (``read_hits``, ``read_misses``, ``prefix_reads``, ``scan``, ``range_scans``) run in one read
  transaction where the store has them (sqlite, LMDB); ksds, Berkeley DB and diskcache read without one.

Whether a commit syncs is set when the store is opened: ``durable=False`` (process-safe: a commit survives the
death of the process, not a power loss) or ``durable=True`` (power-safe: one sync per commit).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

#: what a store can do: "kv" (get/set/delete), "ordered" (prefix reads, scans), "durable" (power-safe commits)
KV = "kv"
ORDERED = "ordered"
DURABLE = "durable"


def chunks(records: Iterable[bytes], size: int) -> Iterable[list[bytes]]:
    """Lists of ``size`` items (the last may be shorter); ``size`` 0: one list of everything."""
    if size <= 0:
        yield list(records)
        return
    it = iter(records)
    while True:
        chunk = list(islice(it, size))
        if not chunk:
            return
        yield chunk


class Store:
    """One store, living in the directory ``directory`` (created empty by the caller)."""

    name = "?"
    capabilities: frozenset[str] = frozenset({KV})

    def __init__(self, directory: str, *, key_length: int, record_length: int, buffer_space: int,
                 max_records: int, options: dict[str, Any] | None = None) -> None:
        self.directory = directory
        self.options = options or {}  # store-specific settings from the command line (ksds: freespace)
        self.kl = key_length
        self.rl = record_length
        self.buffer_space = buffer_space
        self.max_records = max_records  # the most records it will hold (LMDB's map size, diskcache's limit)
        self.durable = False

    # --- life cycle ----------------------------------------------------------------------------------------

    def open(self, *, create: bool = False, durable: bool = False, readonly: bool = False) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def files(self) -> list[str]:
        """Every file of the store (to drop from the page cache for a cold start)."""
        out = []
        for root, _, names in os.walk(self.directory):
            out.extend(os.path.join(root, n) for n in names)
        return sorted(out)

    def describe(self) -> dict[str, Any]:
        """Version and configuration, for the JSON results and the README's table."""
        return {}

    def drop_caches(self) -> None:
        """Forget any cache the store keeps on disk between opens (the store is closed): for a cold start."""

    def warm(self) -> None:
        """Bring the store's own cache to its steady state before a timed run (default: one forward scan)."""
        if ORDERED in self.capabilities:
            self.scan(False)

    # --- requests (each returns how many requests found / changed a record) ----------------------------------

    def insert(self, records: Iterable[bytes], txn: int) -> int:
        """Insert new records (an error if a key exists, where the store tells), ``txn`` per transaction."""
        raise NotImplementedError

    def rewrite(self, records: Iterable[bytes], txn: int) -> int:
        """Replace existing records, ``txn`` per transaction."""
        raise NotImplementedError

    def erase(self, keys: Iterable[bytes], txn: int) -> int:
        """Delete records by key, ``txn`` per transaction."""
        raise NotImplementedError

    def read_hits(self, keys: Sequence[bytes]) -> int:
        raise NotImplementedError

    def read_misses(self, keys: Sequence[bytes]) -> int:
        """Like ``read_hits``; returns how many were found (0 when every key is a miss)."""
        return self.read_hits(keys)

    def prefix_reads(self, prefixes: Sequence[bytes]) -> int:
        raise NotImplementedError

    def scan(self, backward: bool) -> int:
        raise NotImplementedError

    def range_scans(self, starts: Sequence[bytes], length: int) -> int:
        raise NotImplementedError

    def cache_mix(self, ops: Sequence[tuple[bool, bytes]]) -> int:
        """Per-request: ``(True, record)`` rewrites ``record``, ``(False, key)`` reads ``key``."""
        raise NotImplementedError
