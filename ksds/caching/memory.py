"""The ``memory`` storage mode: entries in this process (Zowe's ``inMemory``), lost when it ends.

Thread-safe (one lock: the REST server calls it from a thread pool). The size limit and removeOldest need no
scan: a running count, and a sorted list of ``(created order, sequence, service id, key)`` whose first item is
the oldest entry (ties: the one stored or updated first). Unlike Zowe's inMemory storage it supports the list
maps. Callers are kept apart by :func:`~ksds.caching.model.partition_key` (a service id never reaches the entries
of a DN). Expiries (``ttlSeconds``) are a second sorted list, ``(expires, sequence, kind, partition, map key,
key)``: every call first removes what has expired from its front (no scan), under the lock, so nothing expired
is ever returned.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sortedcontainers import SortedList  # type: ignore[import-untyped]

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
    DEFAULT_EVICTION,
    DEFAULT_SIZE,
    DUPLICATE_KEY,
    INSUFFICIENT_STORAGE,
    KEY_NOT_IN_CACHE,
    KeyValue,
    Storage,
    StorageError,
    partition_key,
)

#: an expiry index item: (expires ms, seq, kind "E" entry / "M" map item, partition, map key ("" for E), key)
_Exp = tuple[int, int, str, str, str, str]


def _nbytes(text: str) -> int:
    """The UTF-8 length of ``text``."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


@dataclass
class _Slot:
    kv: KeyValue
    order: tuple[int, int, str, str]
    expiry: _Exp | None = None


@dataclass
class _Item:
    value: str
    expiry: _Exp | None = None


class MemoryStorage(Storage):
    """Entries in a dict per service id, with a count and a sorted time index for the size limit."""

    #: safe to call from several threads at once (the REST server need not serialise the calls)
    thread_safe = True
    #: its calls take microseconds and never wait: the REST server makes them on its event loop (no thread hop)
    inline_calls = True

    def __init__(
        self, size: int = DEFAULT_SIZE, eviction: str = DEFAULT_EVICTION, *, clock: Callable[[], float] | None = None
    ) -> None:
        super().__init__(size, eviction, clock=clock)
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, _Slot]] = {}
        self._oldest = SortedList()  # (created order, seq, partition, key)
        self._expiry = SortedList()  # _Exp
        self._seq = itertools.count(1)
        self._count = 0
        self._maps: dict[str, dict[str, dict[str, _Item]]] = {}
        self._closed = False
        #: figures for the service's metrics: entries removed by removeOldest, entries and map items removed
        #: because they expired, and the UTF-8 bytes of the keys and values held (entries and map items)
        self.evictions = 0
        self.expired_entries = 0
        self.expired_items = 0
        self.stored_bytes = 0

    # --- expiry ---------------------------------------------------------------------------------------------

    def _now(self) -> int:
        """Now, with what has expired by then removed (call holding the lock)."""
        now = self.now_ms()
        while self._expiry and self._expiry[0][0] <= now:
            exp: _Exp = self._expiry[0]
            _, _, kind, part, map_key, key = exp
            if kind == "E":
                slot = self._entries.get(part, {}).get(key)
                if slot is not None and slot.expiry == exp:
                    self._remove(part, key)
                    self._count -= 1
                    self.expired_entries += 1
            else:
                item = self._maps.get(part, {}).get(map_key, {}).get(key)
                if item is not None and item.expiry == exp:
                    self._drop_item(part, map_key, key)
                    self.expired_items += 1
            if self._expiry and self._expiry[0] == exp:  # pointed nowhere (cannot happen; never loop on it)
                self._expiry.remove(exp)
        return now

    def _expire_at(self, kind: str, part: str, map_key: str, key: str, expires: int | None) -> _Exp | None:
        if expires is None:
            return None
        exp = (expires, next(self._seq), kind, part, map_key, key)
        self._expiry.add(exp)
        return exp

    # --- entries ----------------------------------------------------------------------------------------------

    def _add(self, part: str, kv: KeyValue, expires: int | None) -> None:
        order = (created_order(kv.created), next(self._seq), part, kv.key)
        self._entries.setdefault(part, {})[kv.key] = _Slot(kv, order, self._expire_at("E", part, "", kv.key, expires))
        self._oldest.add(order)
        self.stored_bytes += _nbytes(kv.key) + _nbytes(kv.value)

    def _remove(self, part: str, key: str) -> KeyValue:
        entries = self._entries[part]
        slot = entries.pop(key)
        if not entries:
            del self._entries[part]
        self._oldest.remove(slot.order)
        if slot.expiry is not None:
            self._expiry.remove(slot.expiry)
        self.stored_bytes -= _nbytes(key) + _nbytes(slot.kv.value)
        return slot.kv

    def create(self, service_id: str, kv: KeyValue) -> KeyValue:
        stored = with_service(service_id, kv)
        part = partition_key(service_id)
        with self._lock:
            now = self._now()
            if kv.key in self._entries.get(part, {}):
                raise StorageError(DUPLICATE_KEY, kv.key)
            expires = entry_expiry(kv, now)
            if expired(expires, now):  # ttlSeconds <= 0: nothing to store
                return with_service(service_id, stored)
            if self.size and self._count >= self.size:
                if self.eviction == "reject":
                    raise StorageError(INSUFFICIENT_STORAGE)
                while self._count >= self.size and self._oldest:
                    _, _, sid, key = self._oldest[0]
                    self._remove(sid, key)
                    self._count -= 1
                    self.evictions += 1
            self._add(part, stored, expires)
            self._count += 1
        return with_service(service_id, stored)

    def read(self, service_id: str, key: str) -> KeyValue:
        with self._lock:
            self._now()
            slot = self._entries.get(partition_key(service_id), {}).get(key)
            if slot is None:
                raise StorageError(KEY_NOT_IN_CACHE, key, service_id)
            return with_service(service_id, slot.kv)

    def update(self, service_id: str, kv: KeyValue) -> KeyValue:
        stored = with_service(service_id, kv)
        part = partition_key(service_id)
        with self._lock:
            now = self._now()
            if kv.key not in self._entries.get(part, {}):
                raise StorageError(KEY_NOT_IN_CACHE, kv.key, service_id)
            self._remove(part, kv.key)
            expires = entry_expiry(kv, now)
            if expired(expires, now):  # ttlSeconds <= 0: the entry is removed
                self._count -= 1
            else:
                self._add(part, stored, expires)
        return with_service(service_id, stored)

    def delete(self, service_id: str, key: str) -> KeyValue:
        part = partition_key(service_id)
        with self._lock:
            self._now()
            if key not in self._entries.get(part, {}):
                raise StorageError(KEY_NOT_IN_CACHE, key, service_id)
            kv = self._remove(part, key)
            self._count -= 1
            return with_service(service_id, kv)

    def read_for_service(self, service_id: str) -> dict[str, KeyValue]:
        part = partition_key(service_id)
        with self._lock:
            self._now()
            return {k: with_service(service_id, s.kv) for k, s in self._entries.get(part, {}).items()}

    def delete_for_service(self, service_id: str) -> None:
        with self._lock:
            self._now()
            entries = self._entries.pop(partition_key(service_id), {})
            for key, slot in entries.items():
                self._oldest.remove(slot.order)
                if slot.expiry is not None:
                    self._expiry.remove(slot.expiry)
                self.stored_bytes -= _nbytes(key) + _nbytes(slot.kv.value)
            self._count -= len(entries)

    def count(self) -> int:
        with self._lock:
            self._now()
            return self._count

    # --- list maps --------------------------------------------------------------------------------------------

    def _drop_item(self, part: str, map_key: str, key: str) -> None:
        """Remove a map item if it is there (and its map, once empty: a map is there while it has items)."""
        maps = self._maps.get(part, {})
        items = maps.get(map_key, {})
        item = items.pop(key, None)
        if item is None:
            return
        if item.expiry is not None:
            self._expiry.remove(item.expiry)
        self.stored_bytes -= _nbytes(key) + _nbytes(item.value)
        if not items:
            del maps[map_key]
            if not maps:
                del self._maps[part]

    def store_map_item(self, service_id: str, map_key: str, kv: KeyValue) -> KeyValue:
        part = partition_key(service_id)
        with self._lock:
            now = self._now()
            self._drop_item(part, map_key, kv.key)
            expires = item_expiry(map_key, kv, now)
            if not expired(expires, now):  # else: removed instead of stored (Zowe: ttlSeconds <= 0)
                exp = self._expire_at("M", part, map_key, kv.key, expires)
                self._maps.setdefault(part, {}).setdefault(map_key, {})[kv.key] = _Item(kv.value, exp)
                self.stored_bytes += _nbytes(kv.key) + _nbytes(kv.value)
        return with_service(service_id, kv)

    def get_all_map_items(self, service_id: str, map_key: str) -> dict[str, str]:
        with self._lock:
            self._now()
            return {k: i.value for k, i in self._maps.get(partition_key(service_id), {}).get(map_key, {}).items()}

    def get_all_maps(self, service_id: str) -> dict[str, dict[str, str]]:
        with self._lock:
            self._now()
            return {m: {k: i.value for k, i in items.items()}
                    for m, items in self._maps.get(partition_key(service_id), {}).items()}

    def get_map_items(self, service_id: str, query: Mapping[str, Sequence[str | None]]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        with self._lock:
            self._now()
            maps = self._maps.get(partition_key(service_id), {})
            for map_key, keys in query.items():
                items = maps.get(map_key)
                if not items:
                    continue
                found = {k: items[k].value for k in keys if k is not None and k in items}
                if found:
                    out[map_key] = found
        return out

    def _evict_items(self, service_id: str, map_key: str, stale: bool) -> None:
        part = partition_key(service_id)
        with self._lock:
            now = self._now()
            items = self._maps.get(part, {}).get(map_key)
            if not items:
                return
            for k, item in list(items.items()):
                if rule_is_stale(item.value, now) if stale else token_is_expired(item.value, now / 1000):
                    self._drop_item(part, map_key, k)

    def remove_non_relevant_rules(self, service_id: str, map_key: str) -> None:
        self._evict_items(service_id, map_key, True)

    def remove_non_relevant_tokens(self, service_id: str, map_key: str) -> None:
        self._evict_items(service_id, map_key, False)

    def close(self) -> None:
        self._closed = True
