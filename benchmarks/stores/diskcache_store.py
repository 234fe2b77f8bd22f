"""diskcache (``diskcache.Cache``): a cache on SQLite (WAL, synchronous NORMAL: not power-safe), so only the
get/set/delete rows. Its SQLite page cache is set to ksds's buffer pool size; it also maps the database with
mmap (its default 64 MiB). Bulk rows run inside one ``cache.transact()``; other requests are one each.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import diskcache

from .base import KV, Store, chunks


class DiskcacheStore(Store):
    name = "diskcache"
    capabilities = frozenset({KV})

    def open(self, *, create: bool = False, durable: bool = False, readonly: bool = False) -> None:
        if durable:
            raise ValueError("diskcache is not power-safe")
        self.cache = diskcache.Cache(
            self.directory,
            size_limit=1 << 62,
            sqlite_cache_size=max(1, self.buffer_space // 4096),
        )

    def close(self) -> None:
        self.cache.close()

    def describe(self) -> dict[str, Any]:
        return {
            "version": diskcache.__version__,
            "config": f"Cache, SQLite WAL + synchronous NORMAL, sqlite cache {self.buffer_space >> 20} MiB, "
            "mmap 64 MiB, eviction off in practice (size_limit huge), statistics off",
            "cache_bytes": self.buffer_space,
        }

    def warm(self) -> None:
        pass  # no ordered scan; its mmap of the database file makes the OS page cache its cache

    def insert(self, records: Iterable[bytes], txn: int) -> int:
        cache = self.cache
        setv = cache.set
        kl = self.kl
        n = 0
        if txn == 1:
            for r in records:
                setv(r[:kl], r)
                n += 1
            return n
        for chunk in chunks(records, txn):
            with cache.transact():
                for r in chunk:
                    setv(r[:kl], r)
            n += len(chunk)
        return n

    def rewrite(self, records: Iterable[bytes], txn: int) -> int:
        return self.insert(records, txn)

    def erase(self, keys: Iterable[bytes], txn: int) -> int:
        cache = self.cache
        delete = cache.delete
        n = 0
        if txn == 1:
            for k in keys:
                if delete(k):
                    n += 1
            return n
        for chunk in chunks(keys, txn):
            with cache.transact():
                for k in chunk:
                    if delete(k):
                        n += 1
        return n

    def read_hits(self, keys: Sequence[bytes]) -> int:
        get = self.cache.get
        n = 0
        for k in keys:
            if get(k) is not None:
                n += 1
        return n

    def cache_mix(self, ops: Sequence[tuple[bool, bytes]]) -> int:
        cache = self.cache
        setv = cache.set
        get = cache.get
        kl = self.kl
        n = 0
        for w, x in ops:
            if w:
                setv(x[:kl], x)
            else:
                get(x)
            n += 1
        return n
