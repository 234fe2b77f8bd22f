"""The buffer pool: a bounded cache of CIs with CLOCK (second-chance) replacement.

A hit costs one ``OrderedDict.get`` and one attribute store (the reference bit), so the hot path of a read stays
a few dictionary lookups. CIs changed by the transaction in progress are pinned: they are never evicted before
their commit writes them. The pool may exceed its capacity only by the pinned CIs of one large batch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection

from .ci import AnyCI, IndexCI

#: memory a pooled data CI takes, as a multiple of its size on disk: its bytes plus a small object (tracemalloc:
#: 1.07x over a pool of 4 KiB CIs of 512-byte records with 64-byte keys), with a margin
DECODED_OVERHEAD = 1.1
#: how many data CIs' worth of memory a decoded index CI takes: its keys, pointers and stamps are Python objects
#: (tracemalloc: 6.4 KB for 4 KiB index CIs holding 40 keys of 64 bytes, 1.6x; about 2.3x when full)
INDEX_WEIGHT = 2


def capacity_for(buffer_space: int, ci_size: int) -> int:
    """How many data CIs fit in ``buffer_space`` bytes of memory (an index CI counts :data:`INDEX_WEIGHT`)."""
    return int(buffer_space / (ci_size * DECODED_OVERHEAD))


class BufferPool:
    """``capacity`` units of memory at most (plus pinned CIs): a data or free CI is one unit, a decoded index CI
    :data:`INDEX_WEIGHT` units. ``get`` is O(1); ``put`` is amortised O(1).

    :func:`capacity_for` turns a memory budget into units, so the budget counts what the pooled objects really
    take.
    """

    def __init__(self, capacity: int, pinned: Collection[int]) -> None:
        self.capacity = max(8, capacity)
        self.map: OrderedDict[int, AnyCI] = OrderedDict()
        self.get = self.map.get  # callers set ``obj.ref = True`` on a hit
        self._pinned = pinned
        self._extra = 0  # (INDEX_WEIGHT - 1) units for each index CI in the map
        self.misses = 0

    def put(self, obj: AnyCI) -> None:
        """Add (or replace) a CI; evict unreferenced, unpinned CIs while the unpinned ones are over capacity."""
        m = self.map
        old = m.get(obj.ci)
        if type(old) is IndexCI:
            self._extra -= INDEX_WEIGHT - 1
        if type(obj) is IndexCI:
            self._extra += INDEX_WEIGHT - 1
        m[obj.ci] = obj
        if len(m) + self._extra - len(self._pinned) > self.capacity:
            self._evict()

    def _evict(self) -> None:
        """CLOCK: the oldest CI goes unless it was used since the hand last passed (then it gets a second chance).

        Pinned CIs do not count against the capacity, so a batch that pins many CIs makes the pool grow by
        them instead of making every eviction walk past them. Amortised O(1) per put.
        """
        m = self.map
        pinned = self._pinned
        budget = 2 * len(m)
        while len(m) + self._extra - len(pinned) > self.capacity and budget > 0:
            budget -= 1
            ci, obj = m.popitem(last=False)
            if obj.ref or ci in pinned:
                obj.ref = False
                m[ci] = obj  # second chance: to the back
            elif type(obj) is IndexCI:
                self._extra -= INDEX_WEIGHT - 1

    def drop(self, ci: int) -> None:
        if type(self.map.pop(ci, None)) is IndexCI:
            self._extra -= INDEX_WEIGHT - 1

    def clear(self) -> None:
        self.map.clear()
        self._extra = 0

    def __len__(self) -> int:
        return len(self.map)

    @property
    def used(self) -> int:
        """Units in use (pinned CIs included)."""
        return len(self.map) + self._extra
