"""LMDB (``lmdb`` package): writemap off, map_size large enough for the data set (4 KiB per record, 1 GiB at
least); ``sync``/``metasync`` on for durable rows, off otherwise. One write transaction per bulk row, per
request or per batch as the row says; reads share one read transaction (``buffers=False``: a read returns
``bytes``, as ksds does).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

import lmdb

from .base import DURABLE, KV, ORDERED, Store, chunks


class LmdbStore(Store):
    name = "lmdb"
    capabilities = frozenset({KV, ORDERED, DURABLE})

    @property
    def map_size(self) -> int:
        return max(1 << 30, self.max_records * 4096)

    def open(self, *, create: bool = False, durable: bool = False, readonly: bool = False) -> None:
        self.durable = durable
        self.env = lmdb.open(
            self.directory,
            map_size=self.map_size,
            subdir=True,
            readonly=readonly,
            sync=durable,
            metasync=durable,
            writemap=False,
            max_dbs=0,
            lock=True,
        )

    def close(self) -> None:
        self.env.close()

    def describe(self) -> dict[str, Any]:
        return {
            "version": f"py-lmdb {lmdb.__version__}, LMDB {'.'.join(map(str, lmdb.version()))}",
            "config": "writemap off, map_size >= 1 GiB, sync+metasync on for durable rows only; "
            "cache: the OS page cache (mmap)",
            "cache_bytes": None,
        }

    def warm(self) -> None:
        self.scan(False)

    def insert(self, records: Iterable[bytes], txn: int) -> int:
        kl = self.kl
        n = 0
        if txn == 1:
            begin = self.env.begin
            for r in records:
                t = begin(write=True)
                if t.put(r[:kl], r, overwrite=False):
                    n += 1
                t.commit()
            return n
        for chunk in chunks(records, txn):
            with self.env.begin(write=True) as t:
                put = t.put
                for r in chunk:
                    if put(r[:kl], r, overwrite=False):
                        n += 1
        return n

    def rewrite(self, records: Iterable[bytes], txn: int) -> int:
        kl = self.kl
        n = 0
        if txn == 1:
            begin = self.env.begin
            for r in records:
                t = begin(write=True)
                t.put(r[:kl], r)
                t.commit()
                n += 1
            return n
        for chunk in chunks(records, txn):
            with self.env.begin(write=True) as t:
                put = t.put
                for r in chunk:
                    put(r[:kl], r)
            n += len(chunk)
        return n

    def erase(self, keys: Iterable[bytes], txn: int) -> int:
        n = 0
        if txn == 1:
            begin = self.env.begin
            for k in keys:
                t = begin(write=True)
                if t.delete(k):
                    n += 1
                t.commit()
            return n
        for chunk in chunks(keys, txn):
            with self.env.begin(write=True) as t:
                delete = t.delete
                for k in chunk:
                    if delete(k):
                        n += 1
        return n

    def read_hits(self, keys: Sequence[bytes]) -> int:
        n = 0
        with self.env.begin() as txn:
            get = txn.get
            for k in keys:
                if get(k) is not None:
                    n += 1
        return n

    def prefix_reads(self, prefixes: Sequence[bytes]) -> int:
        n = 0
        with self.env.begin() as txn:
            cur = txn.cursor()
            set_range = cur.set_range
            value = cur.value
            for p in prefixes:
                if set_range(p) and value().startswith(p):
                    n += 1
        return n

    def scan(self, backward: bool) -> int:
        n = 0
        with self.env.begin() as txn:
            cur = txn.cursor()
            it = cur.iterprev(keys=False, values=True) if backward else cur.iternext(keys=False, values=True)
            for _ in it:
                n += 1
        return n

    def range_scans(self, starts: Sequence[bytes], length: int) -> int:
        n = 0
        with self.env.begin() as txn:
            cur = txn.cursor()
            set_range = cur.set_range
            iternext = cur.iternext
            for s in starts:
                if set_range(s):
                    for _ in islice(iternext(keys=False, values=True), length):
                        n += 1
        return n

    def cache_mix(self, ops: Sequence[tuple[bool, bytes]]) -> int:
        begin = self.env.begin
        kl = self.kl
        n = 0
        for w, x in ops:
            if w:
                txn = begin(write=True)
                txn.put(x[:kl], x)
                txn.commit()
            else:
                txn = begin()
                txn.get(x)
                txn.abort()
            n += 1
        return n
