"""sqlite3 (stdlib): WAL, a WITHOUT ROWID table with a BLOB primary key, synchronous NORMAL or FULL.

The page cache is set to the same size as ksds's buffer pool (``PRAGMA cache_size``); the connection is in
autocommit mode (``isolation_level=None``): a statement outside BEGIN/COMMIT is its own transaction.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from .base import DURABLE, KV, ORDERED, Store, chunks

INSERT = "INSERT INTO kv (k, v) VALUES (?, ?)"
SELECT = "SELECT v FROM kv WHERE k = ?"
SELECT_GE = "SELECT v FROM kv WHERE k >= ? ORDER BY k LIMIT 1"
RANGE = "SELECT v FROM kv WHERE k >= ? ORDER BY k LIMIT ?"
UPDATE = "UPDATE kv SET v = ? WHERE k = ?"
DELETE = "DELETE FROM kv WHERE k = ?"


class SqliteStore(Store):
    name = "sqlite"
    capabilities = frozenset({KV, ORDERED, DURABLE})

    @property
    def path(self) -> str:
        return os.path.join(self.directory, "data.sqlite")

    def open(self, *, create: bool = False, durable: bool = False, readonly: bool = False) -> None:
        self.durable = durable
        con = sqlite3.connect(self.path, isolation_level=None, cached_statements=64)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        con.execute(f"PRAGMA cache_size=-{self.buffer_space // 1024}")
        if create:
            con.execute("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
        self.con = con

    def close(self) -> None:
        self.con.close()

    def describe(self) -> dict[str, Any]:
        return {
            "version": sqlite3.sqlite_version,
            "config": f"WAL, WITHOUT ROWID, BLOB primary key, page 4096, cache_size {self.buffer_space >> 20} MiB; "
            "synchronous=NORMAL (non-durable rows) or FULL (durable rows)",
            "cache_bytes": self.buffer_space,
        }

    def _write(self, sql: str, params: Iterable[tuple[bytes, ...]], txn: int) -> int:
        ex = self.con.execute
        n = 0
        if txn == 1:  # autocommit: each statement its own transaction
            for p in params:
                n += ex(sql, p).rowcount
            return n
        for chunk in chunks(params, txn):  # type: ignore[arg-type]
            ex("BEGIN")
            for p in chunk:
                n += ex(sql, p).rowcount
            ex("COMMIT")
        return n

    def insert(self, records: Iterable[bytes], txn: int) -> int:
        kl = self.kl
        return self._write(INSERT, ((r[:kl], r) for r in records), txn)

    def rewrite(self, records: Iterable[bytes], txn: int) -> int:
        kl = self.kl
        return self._write(UPDATE, ((r, r[:kl]) for r in records), txn)

    def erase(self, keys: Iterable[bytes], txn: int) -> int:
        return self._write(DELETE, ((k,) for k in keys), txn)

    def read_hits(self, keys: Sequence[bytes]) -> int:
        ex = self.con.execute
        n = 0
        ex("BEGIN")
        for k in keys:
            if ex(SELECT, (k,)).fetchone() is not None:
                n += 1
        ex("COMMIT")
        return n

    def prefix_reads(self, prefixes: Sequence[bytes]) -> int:
        ex = self.con.execute
        n = 0
        ex("BEGIN")
        for p in prefixes:
            row = ex(SELECT_GE, (p,)).fetchone()
            if row is not None and row[0].startswith(p):
                n += 1
        ex("COMMIT")
        return n

    def scan(self, backward: bool) -> int:
        n = 0
        for _ in self.con.execute(f"SELECT v FROM kv ORDER BY k {'DESC' if backward else 'ASC'}"):
            n += 1
        return n

    def range_scans(self, starts: Sequence[bytes], length: int) -> int:
        ex = self.con.execute
        n = 0
        ex("BEGIN")
        for s in starts:
            for _ in ex(RANGE, (s, length)):
                n += 1
        ex("COMMIT")
        return n

    def cache_mix(self, ops: Sequence[tuple[bool, bytes]]) -> int:
        ex = self.con.execute
        kl = self.kl
        n = 0
        for w, x in ops:
            if w:
                ex(UPDATE, (x, x[:kl]))
            else:
                ex(SELECT, (x,)).fetchone()
            n += 1
        return n
