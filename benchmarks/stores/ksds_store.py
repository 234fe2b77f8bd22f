"""ksds: the engine under test. A transaction of several requests is a ``ds.batch()``; one request alone is its
own transaction (one log write; one sync in durability "power")."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

import ksds

from .base import DURABLE, KV, ORDERED, Store, chunks


class KsdsStore(Store):
    name = "ksds"
    capabilities = frozenset({KV, ORDERED, DURABLE})

    @property
    def freespace(self) -> tuple[int, int]:
        ci, ca = self.options.get("ksds_freespace", (0, 0))
        return int(ci), int(ca)

    @property
    def path(self) -> str:
        return os.path.join(self.directory, "data.ksds")

    def open(self, *, create: bool = False, durable: bool = False, readonly: bool = False) -> None:
        if create:
            ksds.define(self.path, key_length=self.kl, record_length=self.rl, ci_size=4096,
                        freespace=self.freespace)
        self.durable = durable
        self.ds = ksds.open(
            self.path,
            "r" if readonly else "rw",
            durability="power" if durable else "process",
            buffer_space=self.buffer_space,
        )

    def close(self) -> None:
        self.ds.close()

    def describe(self) -> dict[str, Any]:
        return {
            "version": ksds.__version__,
            "config": f"ci_size 4096, freespace {self.freespace}, buffer_space {self.buffer_space >> 20} MiB; "
            'durability "process" (non-durable rows) or "power" (durable rows)',
            "cache_bytes": self.buffer_space,
        }

    def stats(self) -> dict[str, Any]:
        return self.ds.stats()

    def insert(self, records: Iterable[bytes], txn: int) -> int:
        ds = self.ds
        write = ds.write
        n = 0
        if txn == 1:
            for r in records:
                write(r)
                n += 1
            return n
        for chunk in chunks(records, txn):
            with ds.batch():
                for r in chunk:
                    write(r)
            n += len(chunk)
        return n

    def read_hits(self, keys: Sequence[bytes]) -> int:
        read = self.ds.read
        n = 0
        for k in keys:
            read(k)
            n += 1
        return n

    def read_misses(self, keys: Sequence[bytes]) -> int:
        get = self.ds.get
        n = 0
        for k in keys:
            if get(k) is not None:
                n += 1
        return n

    def prefix_reads(self, prefixes: Sequence[bytes]) -> int:
        read = self.ds.read
        notfound = ksds.RecordNotFoundError
        n = 0
        for p in prefixes:
            try:
                read(p, generic=True)
                n += 1
            except notfound:
                pass
        return n

    def scan(self, backward: bool) -> int:
        n = 0
        for _ in self.ds.browse(backward=backward):
            n += 1
        return n

    def range_scans(self, starts: Sequence[bytes], length: int) -> int:
        browse = self.ds.browse
        n = 0
        for s in starts:
            for _ in islice(browse(s), length):
                n += 1
        return n

    def rewrite(self, records: Iterable[bytes], txn: int) -> int:
        ds = self.ds
        rewrite = ds.rewrite
        n = 0
        if txn == 1:
            for r in records:
                rewrite(r)
                n += 1
            return n
        for chunk in chunks(records, txn):
            with ds.batch():
                for r in chunk:
                    rewrite(r)
            n += len(chunk)
        return n

    def erase(self, keys: Iterable[bytes], txn: int) -> int:
        ds = self.ds
        erase = ds.erase
        n = 0
        if txn == 1:
            for k in keys:
                erase(k)
                n += 1
            return n
        for chunk in chunks(keys, txn):
            with ds.batch():
                for k in chunk:
                    erase(k)
            n += len(chunk)
        return n

    def cache_mix(self, ops: Sequence[tuple[bool, bytes]]) -> int:
        read = self.ds.read
        rewrite = self.ds.rewrite
        n = 0
        for w, x in ops:
            if w:
                rewrite(x)
            else:
                read(x)
            n += 1
        return n
