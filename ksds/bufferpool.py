"""The buffer pool: a bounded cache of CIs with CLOCK (second-chance) replacement.

A hit costs one ``OrderedDict.get`` and one attribute store (the reference bit), so the hot path of a read stays
a few dictionary lookups. CIs changed by the transaction in progress are pinned: they are never evicted before
their commit writes them. The pool may exceed its capacity only by the pinned CIs of one large batch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection

from .ci import AnyCI

#: memory a pooled CI takes, as a multiple of its size on disk: a data CI is its bytes plus a small object; index
#: CIs are decoded into lists and take more (tracemalloc: 1.07x over a pool of 4 KiB CIs of 512-byte records with
#: 64-byte keys, index CIs included), with a margin
DECODED_OVERHEAD = 1.1


def capacity_for(buffer_space: int, ci_size: int) -> int:
    """How many decoded CIs fit in ``buffer_space`` bytes of memory."""
    return int(buffer_space / (ci_size * DECODED_OVERHEAD))


class BufferPool:
    """``capacity`` CIs at most (plus pinned ones). ``get`` is O(1); ``put`` is amortised O(1).

    :func:`capacity_for` turns a memory budget into a number of CIs: a data CI takes its bytes and a small object,
    an index CI its decoded lists, so the pool counts a margin over the CI size.
    """

    def __init__(self, capacity: int, pinned: Collection[int]) -> None:
        self.capacity = max(8, capacity)
        self.map: OrderedDict[int, AnyCI] = OrderedDict()
        self.get = self.map.get  # callers set ``obj.ref = True`` on a hit
        self._pinned = pinned
        self.misses = 0

    def put(self, obj: AnyCI) -> None:
        """Add (or replace) a CI; evict unreferenced, unpinned CIs while the unpinned ones are over capacity."""
        m = self.map
        m[obj.ci] = obj
        if len(m) - len(self._pinned) > self.capacity:
            self._evict()

    def _evict(self) -> None:
        """CLOCK: the oldest CI goes unless it was used since the hand last passed (then it gets a second chance).

        Pinned CIs do not count against the capacity, so a batch that pins many CIs makes the pool grow by
        them instead of making every eviction walk past them. Amortised O(1) per put.
        """
        m = self.map
        pinned = self._pinned
        budget = 2 * len(m)
        while len(m) - len(pinned) > self.capacity and budget > 0:
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
