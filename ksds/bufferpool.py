"""The buffer pool: a bounded cache of decoded CIs with CLOCK (second-chance) replacement.

A hit costs one ``OrderedDict.get`` and one attribute store (the reference bit), so the hot path of a read stays
a few dictionary lookups. CIs changed by the transaction in progress are pinned: they are never evicted before
their commit writes them. The pool may exceed its capacity only by the pinned CIs of one large batch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container

from .ci import AnyCI


class BufferPool:
    """``capacity`` CIs at most (plus pinned ones). ``get`` is O(1); ``put`` is amortised O(1)."""

    def __init__(self, capacity: int, pinned: Container[int]) -> None:
        self.capacity = max(8, capacity)
        self.map: OrderedDict[int, AnyCI] = OrderedDict()
        self.get = self.map.get  # callers set ``obj.ref = True`` on a hit
        self._pinned = pinned
        self.misses = 0

    def put(self, obj: AnyCI) -> None:
        """Add (or replace) a CI; evict unreferenced, unpinned CIs while over capacity."""
        m = self.map
        m[obj.ci] = obj
        if len(m) > self.capacity:
            self._evict()

    def _evict(self) -> None:
        m = self.map
        pinned = self._pinned
        budget = 2 * len(m)
        while len(m) > self.capacity and budget > 0:
            budget -= 1
            ci, obj = m.popitem(last=False)
            if obj.ref or ci in pinned:
                obj.ref = False
                m[ci] = obj  # second chance: to the back

    def drop(self, ci: int) -> None:
        self.map.pop(ci, None)

    def clear(self) -> None:
        self.map.clear()

    def __len__(self) -> int:
        return len(self.map)
