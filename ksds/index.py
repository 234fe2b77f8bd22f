"""The index component: a B+-tree of index CIs over the data CIs, kept on disk, never rebuilt at open.

* Level 1 is the **sequence set**: one index CI per CA, one entry per data CI of that CA (its high key and CI
  number). The CA's free CIs are the CIs of its range that no entry points at.
* Levels 2 and up are the **index set**: one entry per index CI of the level below.

Every entry holds the *highest key its subtree may hold*: entry ``i`` covers ``(keys[i-1], keys[i]]`` and the last
entry of each level is all X'FF', so every key has exactly one CI to go to, even one that is not stored yet
(VSAM's "highest possible key"). Levels grow when the top CI splits and shrink when it is left with one entry.

A *path* is the list of ``(IndexCI, entry)`` pairs from the top CI down to the sequence set: the cursor that
splits, erases and browses work with. Costs are in the functions' docstrings (L = index levels).
"""

from __future__ import annotations

from bisect import bisect_left

from .ci import DataCI, IndexCI
from .pager import Pager

Path = list[tuple[IndexCI, int]]


def get_index(pager: Pager, ci: int) -> IndexCI:
    """The index CI numbered ``ci`` (an error naming the CI if it is anything else). O(1) when pooled."""
    obj = pager.get(ci)
    if type(obj) is not IndexCI:
        raise pager.codec.damaged(ci, f"is a {type(obj).__name__} where the index expects an index CI")
    return obj


def get_data(pager: Pager, ci: int) -> DataCI:
    """The data CI numbered ``ci`` (an error naming the CI if it is anything else). O(1) when pooled."""
    obj = pager.get(ci)
    if type(obj) is not DataCI:
        raise pager.codec.damaged(ci, f"is a {type(obj).__name__} where the index expects a data CI")
    return obj


def path_to(pager: Pager, key: bytes) -> Path:
    """The path to the data CI that holds (or would hold) ``key``. O(L log n)."""
    node = get_index(pager, pager.state.root)
    path: Path = []
    while True:
        i = bisect_left(node.keys, key)
        path.append((node, i))
        if node.level == 1:
            return path
        node = get_index(pager, node.ptrs[i])


def locate(pager: Pager, key: bytes) -> tuple[IndexCI, int, DataCI]:
    """The sequence-set CI, its entry and the data CI for ``key``, without building a path. O(L log n).

    The hot path of every update: pool hits are inlined (a dict get and a reference bit per level).
    """
    get = pager.pool.map.get
    ptr = pager.state.root
    node = get(ptr)
    if type(node) is not IndexCI:
        node = get_index(pager, ptr)
    while True:
        node.ref = True
        i = bisect_left(node.keys, key)
        ptr = node.ptrs[i]
        nxt = get(ptr)
        if node.level == 1:
            if type(nxt) is not DataCI:
                nxt = get_data(pager, ptr)
            nxt.ref = True
            return node, i, nxt
        if type(nxt) is not IndexCI:
            nxt = get_index(pager, ptr)
        node = nxt


def _peek_data(pager: Pager, ci: int) -> DataCI:
    obj = pager.peek(ci)
    if type(obj) is not DataCI:
        raise pager.codec.damaged(ci, f"is a {type(obj).__name__} where the index expects a data CI")
    return obj


def next_data(pager: Pager, path: Path, cache: bool = True) -> DataCI | None:
    """Move ``path`` to the next data CI in key order and return it (None past the last). Amortised O(1).

    ``cache`` False (browses): a data CI read from disk is not added to the pool."""
    d = len(path) - 1
    while d >= 0:
        node, i = path[d]
        if i + 1 < len(node.ptrs):
            path[d] = (node, i + 1)
            break
        d -= 1
    else:
        return None
    node, i = path[d]
    for dd in range(d + 1, len(path)):
        node = get_index(pager, node.ptrs[i])
        i = 0
        path[dd] = (node, 0)
    return get_data(pager, node.ptrs[i]) if cache else _peek_data(pager, node.ptrs[i])


def prev_data(pager: Pager, path: Path, cache: bool = True) -> DataCI | None:
    """Move ``path`` to the previous data CI in key order and return it (None before the first)."""
    d = len(path) - 1
    while d >= 0:
        node, i = path[d]
        if i > 0:
            path[d] = (node, i - 1)
            break
        d -= 1
    else:
        return None
    node, i = path[d]
    for dd in range(d + 1, len(path)):
        node = get_index(pager, node.ptrs[i])
        i = len(node.ptrs) - 1
        path[dd] = (node, i)
    return get_data(pager, node.ptrs[i]) if cache else _peek_data(pager, node.ptrs[i])


def add_sibling(pager: Pager, path: Path, depth: int, left_high: bytes, right: IndexCI) -> None:
    """The index CI at ``path[depth]`` was split: it now ends at ``left_high`` and ``right`` follows it.

    Adds ``right`` to the parent (splitting it if full), or makes a new top CI if ``depth`` is the top.
    """
    st = pager.state
    if depth == 0:
        node = path[0][0]
        top = IndexCI(pager.alloc_index_ci(), node.level + 1, 0, [left_high, right.keys[-1]], [node.ci, right.ci])
        pager.dirty_ci(top)
        st.root = top.ci
        st.levels += 1
        return
    insert_after(pager, path, depth - 1, left_high, right.keys[-1], right.ci)


def insert_after(pager: Pager, path: Path, depth: int, left_high: bytes, high: bytes, ptr: int) -> None:
    """In the index CI at ``path[depth]``, end entry ``i`` at ``left_high`` and insert ``(high, ptr)`` after it.

    An index-set CI that overflows splits in two, and the split goes up the path. O(L) CIs changed at most.
    """
    node, i = path[depth]
    node.keys[i] = left_high
    node.keys.insert(i + 1, high)
    node.ptrs.insert(i + 1, ptr)
    pager.dirty_ci(node)
    if len(node.keys) <= pager.codec.index_cap:
        return
    assert node.level > 1, "a sequence-set CI never holds more entries than its CA has CIs"
    m = len(node.keys) // 2
    right = IndexCI(pager.alloc_index_ci(), node.level, 0, node.keys[m:], node.ptrs[m:])
    del node.keys[m:]
    del node.ptrs[m:]
    pager.dirty_ci(right)
    add_sibling(pager, path, depth, node.keys[-1], right)


def remove_entry(pager: Pager, path: Path, depth: int) -> None:
    """Remove entry ``path[depth]`` (its CI was emptied). Its key range goes to a neighbour.

    An index CI left with no entry is freed (with its CA, for a sequence-set CI) and removed from its parent in
    turn; then the top shrinks while it has a single entry.
    """
    node, i = path[depth]
    if len(node.keys) == 1:
        assert depth > 0, "the last data CI of a data set is never removed"
        if node.level == 1:
            pager.free_ca(node.ca)
        pager.free_index_ci(node.ci)
        remove_entry(pager, path, depth - 1)
        return
    pager.dirty_ci(node)  # before any change: a failure below must let rollback drop it
    if i == len(node.keys) - 1:
        # the previous entry takes over up to this entry's high key, and so does its subtree's right edge
        high = node.keys[i]
        node.keys[i - 1] = high
        if node.level > 1:
            _widen_right_edge(pager, node.ptrs[i - 1], high)
    del node.keys[i]
    del node.ptrs[i]
    pager.dirty_ci(node)
    if depth == 0:
        shrink(pager)


def _widen_right_edge(pager: Pager, ci: int, high: bytes) -> None:
    """Set the last high key of index CI ``ci`` and of the last CI under it, down to the sequence set. O(L)."""
    while True:
        node = get_index(pager, ci)
        node.keys[-1] = high
        pager.dirty_ci(node)
        if node.level == 1:
            return
        ci = node.ptrs[-1]


def shrink(pager: Pager) -> None:
    """Remove top levels that have a single entry (the index loses a level each time)."""
    st = pager.state
    while st.levels > 1:
        top = get_index(pager, st.root)
        if len(top.keys) > 1:
            return
        st.root = top.ptrs[0]
        st.levels -= 1
        pager.free_index_ci(top.ci)
