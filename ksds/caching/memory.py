"""The ``memory`` storage mode: entries in this process (Zowe's ``inMemory``), lost when it ends.

Thread-safe (one lock: the REST server calls it from a thread pool). The size limit and removeOldest need no
scan: a running count, and a sorted list of ``(created order, sequence, service id, key)`` whose first item is
the oldest entry (ties: the one stored or updated first). Unlike Zowe's inMemory storage it supports the list
maps. Callers are kept apart by :func:`~ksds.caching.model.partition_key` (a service id never reaches the entries
of a DN).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from .common import created_order, rule_is_stale, token_is_expired, with_service
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


@dataclass
class _Slot:
    kv: KeyValue
    order: tuple[int, int, str, str]


class MemoryStorage(Storage):
    """Entries in a dict per service id, with a count and a sorted time index for the size limit."""

    #: safe to call from several threads at once (the REST server need not serialise the calls)
    thread_safe = True

    def __init__(self, size: int = DEFAULT_SIZE, eviction: str = DEFAULT_EVICTION) -> None:
        super().__init__(size, eviction)
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, _Slot]] = {}
        self._oldest = SortedList()  # (created order, seq, partition, key)
        self._seq = itertools.count(1)
        self._count = 0
        self._maps: dict[str, dict[str, dict[str, str]]] = {}
        self._closed = False

    # --- entries ----------------------------------------------------------------------------------------------

    def _add(self, part: str, kv: KeyValue) -> None:
        order = (created_order(kv.created), next(self._seq), part, kv.key)
        self._entries.setdefault(part, {})[kv.key] = _Slot(kv, order)
        self._oldest.add(order)

    def _remove(self, part: str, key: str) -> KeyValue:
        entries = self._entries[part]
        slot = entries.pop(key)
        if not entries:
            del self._entries[part]
        self._oldest.remove(slot.order)
        return slot.kv

    def create(self, service_id: str, kv: KeyValue) -> KeyValue:
        stored = with_service(service_id, kv)
        part = partition_key(service_id)
        with self._lock:
            if kv.key in self._entries.get(part, {}):
                raise StorageError(DUPLICATE_KEY, kv.key)
            if self.size and self._count >= self.size:
                if self.eviction == "reject":
                    raise StorageError(INSUFFICIENT_STORAGE)
                while self._count >= self.size and self._oldest:
                    _, _, sid, key = self._oldest[0]
                    self._remove(sid, key)
                    self._count -= 1
            self._add(part, stored)
            self._count += 1
        return with_service(service_id, stored)

    def read(self, service_id: str, key: str) -> KeyValue:
        with self._lock:
            slot = self._entries.get(partition_key(service_id), {}).get(key)
            if slot is None:
                raise StorageError(KEY_NOT_IN_CACHE, key, service_id)
            return with_service(service_id, slot.kv)

    def update(self, service_id: str, kv: KeyValue) -> KeyValue:
        stored = with_service(service_id, kv)
        part = partition_key(service_id)
        with self._lock:
            if kv.key not in self._entries.get(part, {}):
                raise StorageError(KEY_NOT_IN_CACHE, kv.key, service_id)
            self._remove(part, kv.key)
            self._add(part, stored)
        return with_service(service_id, stored)

    def delete(self, service_id: str, key: str) -> KeyValue:
        part = partition_key(service_id)
        with self._lock:
            if key not in self._entries.get(part, {}):
                raise StorageError(KEY_NOT_IN_CACHE, key, service_id)
            kv = self._remove(part, key)
            self._count -= 1
            return with_service(service_id, kv)

    def read_for_service(self, service_id: str) -> dict[str, KeyValue]:
        part = partition_key(service_id)
        with self._lock:
            return {k: with_service(service_id, s.kv) for k, s in self._entries.get(part, {}).items()}

    def delete_for_service(self, service_id: str) -> None:
        with self._lock:
            entries = self._entries.pop(partition_key(service_id), {})
            for slot in entries.values():
                self._oldest.remove(slot.order)
            self._count -= len(entries)

    def count(self) -> int:
        with self._lock:
            return self._count

    # --- list maps --------------------------------------------------------------------------------------------

    def store_map_item(self, service_id: str, map_key: str, kv: KeyValue) -> KeyValue:
        with self._lock:
            self._maps.setdefault(partition_key(service_id), {}).setdefault(map_key, {})[kv.key] = kv.value
        return with_service(service_id, kv)

    def get_all_map_items(self, service_id: str, map_key: str) -> dict[str, str]:
        with self._lock:
            return dict(self._maps.get(partition_key(service_id), {}).get(map_key, {}))

    def get_all_maps(self, service_id: str) -> dict[str, dict[str, str]]:
        with self._lock:
            return {m: dict(items) for m, items in self._maps.get(partition_key(service_id), {}).items()}

    def _evict_items(self, service_id: str, map_key: str, stale: bool) -> None:
        part = partition_key(service_id)
        with self._lock:
            items = self._maps.get(part, {}).get(map_key)
            if not items:
                return
            for k, v in list(items.items()):
                if rule_is_stale(v) if stale else token_is_expired(v):
                    del items[k]
            if not items:  # a map is there while it has items (as in the other storages)
                maps = self._maps[part]
                del maps[map_key]
                if not maps:
                    del self._maps[part]

    def remove_non_relevant_rules(self, service_id: str, map_key: str) -> None:
        self._evict_items(service_id, map_key, True)

    def remove_non_relevant_tokens(self, service_id: str, map_key: str) -> None:
        self._evict_items(service_id, map_key, False)

    def close(self) -> None:
        self._closed = True
