"""Berkeley DB (``berkeleydb`` package, needs ``libdb-dev``): a B-tree database (page 4096) in a transactional
environment (DB_INIT_TXN | DB_INIT_LOG | DB_INIT_LOCK | DB_INIT_MPOOL), its cache set to ksds's buffer pool size.
Non-durable rows commit with DB_TXN_WRITE_NOSYNC (the log is written to the OS, not synced: process-safe);
durable rows commit with the default (log synced). Reads run outside transactions. The environment's region
files (``__db.*``, which hold its cache between opens) are not copied, and are removed before a cold start.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from berkeleydb import db

from .base import DURABLE, KV, ORDERED, Store, chunks

ENV_FLAGS = db.DB_CREATE | db.DB_INIT_MPOOL | db.DB_INIT_TXN | db.DB_INIT_LOG | db.DB_INIT_LOCK
NOOVERWRITE = db.DB_NOOVERWRITE


class BdbStore(Store):
    name = "bdb"
    capabilities = frozenset({KV, ORDERED, DURABLE})

    def open(self, *, create: bool = False, durable: bool = False, readonly: bool = False) -> None:
        self.durable = durable
        env = db.DBEnv()
        env.set_cachesize(0, self.buffer_space, 1)
        locks = max(100_000, self.max_records // 2)
        env.set_lk_max_locks(locks)
        env.set_lk_max_objects(locks)
        env.set_lg_bsize(4 << 20)
        env.open(self.directory, ENV_FLAGS, 0o644)
        env.log_set_config(db.DB_LOG_AUTO_REMOVE, 1)  # keep only the log files recovery still needs
        if not durable:
            env.set_flags(db.DB_TXN_WRITE_NOSYNC, 1)
        d = db.DB(env)
        d.set_pagesize(4096)
        d.set_get_returns_none(2)
        d.open("data.db", None, db.DB_BTREE, db.DB_CREATE | db.DB_AUTO_COMMIT, 0o644)
        self.env = env
        self.db = d

    def close(self) -> None:
        self.db.close()
        self.env.txn_checkpoint()
        self.env.close()

    def describe(self) -> dict[str, Any]:
        return {
            "version": f"berkeleydb {getattr(db, '__version__', '?')}, "
            f"Berkeley DB {'.'.join(map(str, db.version()))}",
            "config": f"B-tree, page 4096, transactional env, cache {self.buffer_space >> 20} MiB; "
            "DB_TXN_WRITE_NOSYNC (non-durable rows) or synced commits (durable rows); reads without txn",
            "cache_bytes": self.buffer_space,
        }

    def insert(self, records: Iterable[bytes], txn: int) -> int:
        begin = self.env.txn_begin
        put = self.db.put
        kl = self.kl
        n = 0
        if txn == 1:
            for r in records:
                t = begin()
                put(r[:kl], r, t, NOOVERWRITE)
                t.commit()
                n += 1
            return n
        for chunk in chunks(records, txn):
            t = begin()
            for r in chunk:
                put(r[:kl], r, t, NOOVERWRITE)
            t.commit()
            n += len(chunk)
        return n

    def rewrite(self, records: Iterable[bytes], txn: int) -> int:
        begin = self.env.txn_begin
        put = self.db.put
        kl = self.kl
        n = 0
        if txn == 1:
            for r in records:
                t = begin()
                put(r[:kl], r, t)
                t.commit()
                n += 1
            return n
        for chunk in chunks(records, txn):
            t = begin()
            for r in chunk:
                put(r[:kl], r, t)
            t.commit()
            n += len(chunk)
        return n

    def erase(self, keys: Iterable[bytes], txn: int) -> int:
        begin = self.env.txn_begin
        delete = self.db.delete
        n = 0
        if txn == 1:
            for k in keys:
                t = begin()
                delete(k, t)
                t.commit()
                n += 1
            return n
        for chunk in chunks(keys, txn):
            t = begin()
            for k in chunk:
                delete(k, t)
            t.commit()
            n += len(chunk)
        return n

    def read_hits(self, keys: Sequence[bytes]) -> int:
        get = self.db.get
        n = 0
        for k in keys:
            if get(k) is not None:
                n += 1
        return n

    def prefix_reads(self, prefixes: Sequence[bytes]) -> int:
        cur = self.db.cursor()
        set_range = cur.set_range
        n = 0
        for p in prefixes:
            kv = set_range(p)
            if kv is not None and kv[1].startswith(p):
                n += 1
        cur.close()
        return n

    def scan(self, backward: bool) -> int:
        cur = self.db.cursor()
        step = cur.prev if backward else cur.next
        kv = cur.last() if backward else cur.first()
        n = 0
        while kv is not None:
            n += 1
            kv = step()
        cur.close()
        return n

    def range_scans(self, starts: Sequence[bytes], length: int) -> int:
        cur = self.db.cursor()
        set_range = cur.set_range
        nxt = cur.next
        n = 0
        for s in starts:
            kv = set_range(s)
            m = 0
            while kv is not None:
                n += 1
                m += 1
                if m == length:
                    break
                kv = nxt()
        cur.close()
        return n

    def cache_mix(self, ops: Sequence[tuple[bool, bytes]]) -> int:
        begin = self.env.txn_begin
        put = self.db.put
        get = self.db.get
        kl = self.kl
        n = 0
        for w, x in ops:
            if w:
                txn = begin()
                put(x[:kl], x, txn)
                txn.commit()
            else:
                get(x)
            n += 1
        return n

    def drop_caches(self) -> None:
        # the environment's region files (__db.*) keep its cache between opens: remove them, as a cold start
        # (a reboot, or a new environment) would find none
        db.DBEnv().remove(self.directory)

    def files(self) -> list[str]:
        return [f for f in super().files() if not os.path.basename(f).startswith("__db.")]
