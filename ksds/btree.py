"""The B+-tree of a data set: the index CIs over the data CIs, and every change to its shape.

The whole tree lives here, and nothing else changes its shape: finding a key (:func:`locate`, :func:`path_to`),
positioning a cursor (:func:`seek_ge`, :func:`seek_le`, :func:`next_data`, :func:`prev_data`), and the changes
(:func:`insert` with its CI split, CA split and new CA; :func:`delete` with CI and CA reclaim; :func:`replace`).
:class:`~ksds.Dataset` validates requests and keeps the record statistics; :mod:`ksds.browse` steps a cursor.

* Level 1 is the **sequence set**: one index CI per CA, one entry per data CI of that CA (its high key and CI
  number). The CA's free CIs are the CIs of its range that no entry points at.
* Levels 2 and up are the **index set**: one entry per index CI of the level below.

Every entry holds the *highest key its subtree may hold*: entry ``i`` covers ``(keys[i-1], keys[i]]`` and the last
entry of each level is all X'FF', so every key has exactly one CI to go to, even one that is not stored yet
(VSAM's "highest possible key"). Levels grow when the top CI splits and shrink when it is left with one entry.

Inserts follow VSAM's two strategies, chosen per request (the caller says whether the key follows its previous
WRITE): *direct* inserts split a full CI at its middle; *sequential* ones fill a CI up to FREESPACE ci% and then
split at the insertion point, and an append past a CI's last record starts a new CI (past the end of a CA filled up
to FREESPACE ca%, a new CA) without moving records. A CI split with no free CI in its CA first moves about half the
CA's CIs to a new CA (a CA split).

A *path* is the list of ``(IndexCI, entry)`` pairs from the top CI down to the sequence set; a *position* (the
cursor) is a path, a data CI and a slot in it. Costs are in the functions' docstrings (L = index levels, n =
records in a CI).

Space (index CIs, CAs, free CIs of a CA) comes from :mod:`ksds.space`. Every change marks each CI it is about to
change dirty *before* changing it (:meth:`Pager.dirty_ci`), so that a failure part way lets the pager's rollback
drop them all.

A data set file holds several trees (:mod:`ksds.tree`: the base cluster's, tree 0, and alternate indexes'), in one
space and one pager: every function here works on the :class:`~ksds.tree.Tree` it is given -- its root, levels and
statistics (its meta), its codec and sizing -- and reaches the file through ``tree.pager``. Only
:func:`restamp`, which prepares a checkpoint of the whole file, takes the pager (and walks each of its trees).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from . import space
from .ci import DataCI, IndexCI, describe, stamp_of
from .errors import DuplicateKeyError, NoSpaceError, RecordNotFoundError, show_key
from .faults import crashpoint
from .format import CI_DATA, FLAGS_AT, LEVEL_MASK, MAX_LEVELS, TID_SHIFT, TRAILER, TRAILER_SIZE
from .pager import Pager
from .tree import Tree

Path = list[tuple[IndexCI, int]]
#: a cursor: the path to a data CI, the CI, and a slot in it
Position = tuple[Path, DataCI, int]


def get_index(tree: Tree[Pager], ci: int, expect: int = 0) -> IndexCI:
    """The index CI numbered ``ci`` (an error naming the CI if it is anything else, or if read from the file it does
    not carry the stamp ``expect`` its parent's entry keeps, or belongs to another tree). O(1) when pooled."""
    obj = tree.pager.get(ci, expect)
    if type(obj) is not IndexCI or obj.tid != tree.tid:
        raise tree.codec.damaged(ci, f"is {describe(obj)} where the index of tree {tree.tid} expects an index CI")
    return obj


def get_data(tree: Tree[Pager], ci: int, expect: int = 0) -> DataCI:
    """The data CI numbered ``ci`` (an error naming the CI if it is anything else, or a stale image: see
    :func:`get_index`). O(1) when pooled."""
    obj = tree.pager.get(ci, expect)
    if type(obj) is not DataCI or obj.tid != tree.tid:
        raise tree.codec.damaged(ci, f"is {describe(obj)} where the index of tree {tree.tid} expects a data CI")
    return obj


def path_to(tree: Tree[Pager], key: bytes) -> Path:
    """The path to the data CI that holds (or would hold) ``key``. O(L log n)."""
    node = root(tree)
    path: Path = []
    while True:
        i = bisect_left(node.keys, key)
        path.append((node, i))
        if node.level == 1:
            return path
        node = get_index(tree, node.ptrs[i], node.stamps[i])


def root(tree: Tree[Pager]) -> IndexCI:
    """The top index CI (its stamp is kept in the tree's meta). O(1) when pooled."""
    meta = tree.meta
    return get_index(tree, meta.root, meta.root_stamp)


def locate(tree: Tree[Pager], key: bytes) -> tuple[IndexCI, int, DataCI]:
    """The sequence-set CI, its entry and the data CI for ``key``, without building a path. O(L log n).

    The hot path of every update: pool hits are inlined (a dict get and a reference bit per level).
    """
    get = tree.pager.pool.map.get
    node = get(tree.meta.root)
    if type(node) is not IndexCI:
        node = root(tree)
    while True:
        node.ref = True
        i = bisect_left(node.keys, key)
        ptr = node.ptrs[i]
        nxt = get(ptr)
        if node.level == 1:
            if type(nxt) is not DataCI:
                nxt = get_data(tree, ptr, node.stamps[i])
            nxt.ref = True
            return node, i, nxt
        if type(nxt) is not IndexCI:
            nxt = get_index(tree, ptr, node.stamps[i])
        node = nxt


def records_for(tree: Tree[Pager], key: bytes) -> tuple[Any, int, int]:
    """Where the records of the data CI a search for ``key`` ends at lie: ``(buffer, offset, count)``, the pooled
    CI's bytes or its image in place (:meth:`Pager.view`), not pooled. An index CI that is not pooled is decoded and
    pooled while the pool has room (index CIs are few and hot: one read in place first would be read twice), and
    searched in place once the pool is full (:meth:`Pager.index_entry`: a full pool is not churned). The general
    descent of keyed reads (:func:`find` is the fast one); pool hits are inlined (a dict get and a reference bit
    per level). O(L log n)."""
    pager = tree.pager
    tid = tree.tid
    pool = pager.pool
    get = pool.map.get
    node: Any = get(tree.meta.root)
    if node is None:
        node = root(tree)
    while True:
        node.ref = True
        i = bisect_left(node.keys, key)
        ptr = node.ptrs[i]
        stamp = node.stamps[i]
        level = node.level  # of the CI whose entry ``ptr`` is
        child = get(ptr)
        while level > 1 and child is None and pool.used >= pool.capacity:
            entry = pager.index_entry(ptr, stamp, key, tid)
            if entry is None:
                break
            level, ptr, stamp = entry
            child = get(ptr)
        if level == 1:
            if type(child) is DataCI:
                child.ref = True
                return child.buf, 0, child.n
            return pager.view(ptr, stamp, tid)
        node = child if type(child) is IndexCI else get_index(tree, ptr, stamp)


def find(tree: Tree[Pager], key: bytes) -> bytes | None:
    """The record with key ``key`` (a copy), or None: READ EQUAL, the hot path of every keyed read.

    :func:`records_at` (the descent and the data CI's records in place), then the search: a small CI's keys
    unpacked by one C call and searched by ``bisect_left`` (:meth:`~ksds.ci.Codec.record_keys`), a large one's
    by :meth:`~ksds.ci.Codec.bisect` (every 16th key, then one block of 16). O(L log n)."""
    buf, base, n = records_at(tree, key)
    codec = tree.codec
    rl = codec.rl
    keys = codec.record_keys(n)
    if keys is not None:
        ks = keys.unpack_from(buf, base)
        j = bisect_left(ks, key)
        if j == n or ks[j] != key:
            return None
    else:
        j = codec.bisect(buf, base, n, key)
        o = base + j * rl + codec.ko
        if j == n or buf[o : o + codec.kl] != key:
            return None
    o = base + j * rl
    rec = buf[o : o + rl]
    return rec if type(rec) is bytes else bytes(rec)


def records_at(tree: Tree[Pager], key: bytes) -> tuple[Any, int, int]:
    """Where the records of the data CI a search for ``key`` ends at lie, ``(buffer, offset, count)``, the fast
    way: the descent through pooled index CIs (a dict get and a reference bit per level), the data CI pooled, or
    through the file's map when its image there is checked and newest (its descriptor and stamp checked as
    :meth:`Pager.view` does). Anything else (an index CI not pooled, a CI read for the first time) goes the
    general way (:func:`records_for`). O(L log n).

    Compared with a function of the pager alone, a tree costs one attribute load (``tree.pager``) and a compare
    of the descriptor's flags byte (the tree id) on the in-place path."""
    pager = tree.pager
    get = pager.pool.map.get
    node: Any = get(tree.meta.root)
    if type(node) is not IndexCI:
        return records_for(tree, key)
    while True:
        node.ref = True
        i = bisect_left(node.keys, key)
        ptr = node.ptrs[i]
        child = get(ptr)
        if node.level == 1:
            break
        if type(child) is not IndexCI:
            return records_for(tree, key)
        node = child
    if type(child) is DataCI:
        child.ref = True
        return child.buf, 0, child.n
    stamp = node.stamps[i]
    fmap = pager.fmap
    if child is None and ptr < fmap.mapped and fmap.checked[ptr >> 3] >> (ptr & 7) & 1 and ptr not in pager.images:
        codec = tree.codec
        buf: Any = fmap.mm
        base = ptr * codec.ci_size
        kind, flags, n, number, got, _ = TRAILER.unpack_from(buf, base + codec.trailer_off)
        if kind == CI_DATA and number == ptr and flags == codec.data_flags and (not stamp or got == stamp):
            return buf, base, n
    return pager.view(ptr, stamp, tree.tid)  # names what is wrong, if anything is


def first_ge(tree: Tree[Pager], key: bytes) -> bytes | None:
    """The first record with a key >= ``key`` (a copy), or None: READ GTEQ / GENERIC. The data CI is searched in
    place, as an exact read does (:func:`records_for`). O(L log n)."""
    buf, base, n = records_for(tree, key)
    codec = tree.codec
    rl = codec.rl
    j = codec.bisect(buf, base, n, key)
    if j < n:
        o = base + j * rl
        return bytes(buf[o : o + rl])
    pos = seek_ge(tree, key)  # every key of this CI is lower: the record is in a following CI
    return None if pos is None else pos[1].record(pos[2])


def _peek_data(tree: Tree[Pager], ci: int, expect: int) -> DataCI:
    obj = tree.pager.peek(ci, expect)
    if type(obj) is not DataCI or obj.tid != tree.tid:
        raise tree.codec.damaged(ci, f"is {describe(obj)} where the index of tree {tree.tid} expects a data CI")
    return obj


def _step_next(tree: Tree[Pager], path: Path) -> tuple[int, int] | None:
    """Move ``path`` to the next data CI in key order: its (CI number, stamp), or None past the last."""
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
        node = get_index(tree, node.ptrs[i], node.stamps[i])
        i = 0
        path[dd] = (node, 0)
    return node.ptrs[i], node.stamps[i]


def _step_prev(tree: Tree[Pager], path: Path) -> tuple[int, int] | None:
    """Move ``path`` to the previous data CI in key order: its (CI number, stamp), or None before the first."""
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
        node = get_index(tree, node.ptrs[i], node.stamps[i])
        i = len(node.ptrs) - 1
        path[dd] = (node, i)
    return node.ptrs[i], node.stamps[i]


def next_data(tree: Tree[Pager], path: Path, cache: bool = True) -> DataCI | None:
    """Move ``path`` to the next data CI in key order and return it (None past the last). Amortised O(1).

    ``cache`` False (browses): a data CI read from disk is not added to the pool."""
    step = _step_next(tree, path)
    if step is None:
        return None
    return get_data(tree, *step) if cache else _peek_data(tree, *step)


def prev_data(tree: Tree[Pager], path: Path, cache: bool = True) -> DataCI | None:
    """Move ``path`` to the previous data CI in key order and return it (None before the first)."""
    step = _step_prev(tree, path)
    if step is None:
        return None
    return get_data(tree, *step) if cache else _peek_data(tree, *step)


def next_records(tree: Tree[Pager], path: Path) -> list[bytes] | None:
    """Move ``path`` to the next data CI in key order and return its records as new ``bytes`` (None past the
    last), read in place (:meth:`Pager.view`): no CI object, nothing pooled. Amortised O(records of the CI)."""
    step = _step_next(tree, path)
    return None if step is None else _records(tree, step, False)


def prev_records(tree: Tree[Pager], path: Path) -> list[bytes] | None:
    """Move ``path`` to the previous data CI and return its records, last first (see :func:`next_records`)."""
    step = _step_prev(tree, path)
    return None if step is None else _records(tree, step, True)


def _records(tree: Tree[Pager], step: tuple[int, int], backward: bool) -> list[bytes]:
    buf: Any
    buf, base, n = tree.pager.view(step[0], step[1], tree.tid)
    rl = tree.codec.rl
    if type(buf) is bytearray:  # being changed: one copy, then slices of it
        buf = bytes(buf[base : base + n * rl])
        base = 0
    if backward:
        return [buf[o : o + rl] for o in range(base + (n - 1) * rl, base - 1, -rl)]
    return [buf[o : o + rl] for o in range(base, base + n * rl, rl)]


def add_sibling(tree: Tree[Pager], path: Path, depth: int, left_high: bytes, right: IndexCI) -> None:
    """The index CI at ``path[depth]`` was split: it now ends at ``left_high`` and ``right`` follows it.

    Adds ``right`` to the parent (splitting it if full), or makes a new top CI if ``depth`` is the top (a
    :class:`~ksds.NoSpaceError` past :data:`~ksds.format.MAX_LEVELS` levels: the level is a nibble of the CI
    descriptor).
    """
    if depth == 0:
        pager = tree.pager
        meta = tree.meta
        node = path[0][0]
        if node.level >= MAX_LEVELS:
            raise NoSpaceError(
                f"{pager.path}: the index of tree {tree.tid} has reached its most levels ({MAX_LEVELS})"
            )
        ci = space.alloc_index_ci(pager, meta)
        top = IndexCI(ci, node.level + 1, 0, [left_high, right.keys[-1]], [node.ci, right.ci], None, tree.tid)
        pager.dirty_ci(top)
        meta.root = top.ci
        meta.root_stamp = 0  # a new CI: in the log until the checkpoint stamps it
        meta.levels += 1
        return
    insert_after(tree, path, depth - 1, left_high, right.keys[-1], right.ci)


def insert_after(tree: Tree[Pager], path: Path, depth: int, left_high: bytes, high: bytes, ptr: int) -> None:
    """In the index CI at ``path[depth]``, end entry ``i`` at ``left_high`` and insert ``(high, ptr)`` after it.

    An index-set CI that overflows splits in two, and the split goes up the path. O(L) CIs changed at most.
    """
    pager = tree.pager
    node, i = path[depth]
    pager.dirty_ci(node)
    node.keys[i] = left_high
    node.keys.insert(i + 1, high)
    node.ptrs.insert(i + 1, ptr)
    node.stamps.insert(i + 1, 0)  # a new CI: in the log until the checkpoint stamps it
    if len(node.keys) <= tree.codec.index_cap:
        return
    assert node.level > 1, "a sequence-set CI never holds more entries than its CA has CIs"
    m = len(node.keys) // 2
    ci = space.alloc_index_ci(pager, tree.meta)
    right = IndexCI(ci, node.level, 0, node.keys[m:], node.ptrs[m:], node.stamps[m:], tree.tid)
    del node.keys[m:]
    del node.ptrs[m:]
    del node.stamps[m:]
    pager.dirty_ci(right)
    add_sibling(tree, path, depth, node.keys[-1], right)


def remove_entry(tree: Tree[Pager], path: Path, depth: int) -> None:
    """Remove entry ``path[depth]`` (its CI was emptied). Its key range goes to a neighbour.

    An index CI left with no entry is freed (with its CA, for a sequence-set CI) and removed from its parent in
    turn; then the top shrinks while it has a single entry.
    """
    pager = tree.pager
    node, i = path[depth]
    if len(node.keys) == 1:
        assert depth > 0, "the last data CI of a tree is never removed"
        if node.level == 1:
            space.free_ca(pager, node.ca, tree.meta)
        space.free_index_ci(pager, node.ci, tree.meta)
        remove_entry(tree, path, depth - 1)
        return
    pager.dirty_ci(node)  # before any change: a failure below must let rollback drop it
    if i == len(node.keys) - 1:
        # the previous entry takes over up to this entry's high key, and so does its subtree's right edge
        high = node.keys[i]
        node.keys[i - 1] = high
        if node.level > 1:
            _widen_right_edge(tree, node.ptrs[i - 1], node.stamps[i - 1], high)
    del node.keys[i]
    del node.ptrs[i]
    del node.stamps[i]
    if depth == 0:
        shrink(tree)


def _widen_right_edge(tree: Tree[Pager], ci: int, stamp: int, high: bytes) -> None:
    """Set the last high key of index CI ``ci`` and of the last CI under it, down to the sequence set. O(L)."""
    while True:
        node = get_index(tree, ci, stamp)
        tree.pager.dirty_ci(node)
        node.keys[-1] = high
        if node.level == 1:
            return
        ci, stamp = node.ptrs[-1], node.stamps[-1]


def shrink(tree: Tree[Pager]) -> None:
    """Remove top levels that have a single entry (the index loses a level each time)."""
    meta = tree.meta
    while meta.levels > 1:
        top = root(tree)
        if len(top.keys) > 1:
            return
        meta.root = top.ptrs[0]
        meta.root_stamp = top.stamps[0]
        meta.levels -= 1
        space.free_index_ci(tree.pager, top.ci, meta)



# --- positioning --------------------------------------------------------------------------------------------------


def seek_ge(tree: Tree[Pager], key: bytes, strict: bool = False, cache: bool = True) -> Position | None:
    """The first record with a key >= ``key`` (> ``key`` if ``strict``), or None. O(L log n).

    ``cache`` False (browses that read many CIs once): a data CI read from disk is not added to the pool."""
    path = path_to(tree, key)
    seq, i = path[-1]
    ci = get_data(tree, seq.ptrs[i], seq.stamps[i]) if cache else _peek_data(tree, seq.ptrs[i], seq.stamps[i])
    j = ci.find_after(key) if strict else ci.find(key)
    if j < ci.n:
        return path, ci, j
    nxt = next_data(tree, path, cache)
    return None if nxt is None else (path, nxt, 0)


def seek_le(tree: Tree[Pager], key: bytes, strict: bool = False, cache: bool = True) -> Position | None:
    """The last record with a key <= ``key`` (< ``key`` if ``strict``), or None. O(L log n). ``cache``: as
    :func:`seek_ge`."""
    path = path_to(tree, key)
    seq, i = path[-1]
    ci = get_data(tree, seq.ptrs[i], seq.stamps[i]) if cache else _peek_data(tree, seq.ptrs[i], seq.stamps[i])
    j = (ci.find(key) if strict else ci.find_after(key)) - 1
    if j >= 0:
        return path, ci, j
    prv = prev_data(tree, path, cache)
    return None if prv is None else (path, prv, prv.n - 1)


# --- changes ------------------------------------------------------------------------------------------------------


def pred(key: bytes) -> bytes:
    """The key just below ``key`` (same length; ``key`` is not all zeros)."""
    return (int.from_bytes(key, "big") - 1).to_bytes(len(key), "big")


def replace(tree: Tree[Pager], key: bytes) -> tuple[DataCI, int] | None:
    """Where the record with key ``key`` is (its data CI, marked dirty, and slot), for a caller about to replace
    it; None if there is none (nothing is marked). O(L log n)."""
    _, _, ci = locate(tree, key)
    j = ci.find(key)
    if j == ci.n or ci.key_at(j) != key:
        return None
    tree.pager.dirty_ci(ci)
    return ci, j


def insert(tree: Tree[Pager], key: bytes, record: bytes, after: bytes | None) -> bool:
    """Put a new record in its CI, splitting as needed; :class:`~ksds.DuplicateKeyError` if the key exists.

    ``after``: the key of the previous WRITE (the insert is sequential if the new key follows it in its CI).
    Returns whether the record went after every other record (an append). O(L log n), plus O(n) for a CI split
    or O(CIs of a CA) for a CA split.
    """
    seq, i, ci = locate(tree, key)
    pos = ci.find(key)
    n = ci.n
    if pos < n and ci.key_at(pos) == key:
        raise DuplicateKeyError(f"{tree.pager.path}: a record with key {show_key(key)} exists")
    at_end = pos == n and seq.keys[i] == b"\xff" * len(key)
    sequential = after is not None and pos > 0 and ci.key_at(pos - 1) == after
    limit = tree.load_records_per_ci if sequential and pos == n else tree.records_per_ci
    if n < limit:
        tree.pager.dirty_ci(ci)
        ci.insert(pos, record)
        return at_end
    _split_ci(tree, path_to(tree, key), ci, pos, key, record, sequential, after)
    return at_end


def _split_ci(
    tree: Tree[Pager], path: Path, ci: DataCI, pos: int, key: bytes, record: bytes, sequential: bool,
    after: bytes | None,
) -> None:
    pager = tree.pager
    seq, i = path[-1]
    n = ci.n
    meta = tree.meta
    free = space.free_ci(seq, tree.cis_per_ca)
    if sequential and pos == n and i == len(seq.keys) - 1:
        # appending past the last record of the last CI of a CA
        if free is None or len(seq.keys) >= tree.load_cis_per_ca:
            _new_ca(tree, path, key, record)
            return
    if free is None:
        _split_ca(tree, path, i if sequential else None)
        insert(tree, key, record, after)
        return
    if sequential:
        s = pos + 1 if pos < n else n  # at the insertion point; appending: a new CI, no record moves
    else:
        s = (n + 1) // 2
    # the n + 1 records laid end to end, cut at s: the first s stay, the rest go to the free CI
    rl = tree.record_length
    body = ci.body()
    o = pos * rl
    body = body[:o] + record + body[o:]
    pager.dirty_ci(ci)
    ci.assign(body[: s * rl], s)
    new = tree.codec.new_data(free, body[s * rl :], n + 1 - s)
    pager.dirty_ci(new)
    insert_after(tree, path, len(path) - 1, pred(new.key_at(0)), seq.keys[i], free)
    meta.data_cis += 1
    if pos < n or not sequential:
        meta.splits_ci += 1  # an append that starts a new CI moves no record: VSAM does not count it
    crashpoint("split-ci")


def _new_ca(tree: Tree[Pager], path: Path, key: bytes, record: bytes) -> None:
    """Sequential insert past the end of a full CA: the record starts a new CA (nothing moves)."""
    pager = tree.pager
    seq, i = path[-1]
    meta = tree.meta
    base = space.alloc_ca(pager, meta)
    high = seq.keys[i]
    nseq = IndexCI(space.alloc_index_ci(pager, meta), 1, base, [high], [base], None, tree.tid)
    pager.dirty_ci(tree.codec.new_data(base, record, 1))
    pager.dirty_ci(nseq)
    left_high = pred(key)
    pager.dirty_ci(seq)
    seq.keys[i] = left_high
    add_sibling(tree, path, len(path) - 1, left_high, nseq)
    meta.data_cis += 1
    meta.splits_ca += 1
    crashpoint("split-ca")


def _split_ca(tree: Tree[Pager], path: Path, at: int | None) -> None:
    """Move the CIs from entry ``at`` on (about half, if None) of a full CA into a new CA."""
    pager = tree.pager
    seq, _ = path[-1]
    n = len(seq.keys)
    s = n // 2 if at is None else min(max(at, 1), n - 1)
    base = space.alloc_ca(pager, tree.meta)
    ptrs = []
    for j, (old, stamp) in enumerate(zip(seq.ptrs[s:], seq.stamps[s:], strict=True)):
        src = get_data(tree, old, stamp)
        pager.forget(old)
        pager.dirty_ci(tree.codec.new_data(base + j, src.body(), src.n))
        ptrs.append(base + j)
    nseq = IndexCI(space.alloc_index_ci(pager, tree.meta), 1, base, seq.keys[s:], ptrs, None, tree.tid)
    pager.dirty_ci(seq)
    del seq.keys[s:]
    del seq.ptrs[s:]
    del seq.stamps[s:]
    pager.dirty_ci(nseq)
    add_sibling(tree, path, len(path) - 1, seq.keys[-1], nseq)
    tree.meta.splits_ca += 1
    crashpoint("split-ca")


def delete(tree: Tree[Pager], key: bytes) -> None:
    """Remove the record with key ``key`` (:class:`~ksds.RecordNotFoundError` if there is none).

    A CI left empty goes back to its CA's free CIs and leaves the index; a CA left empty is freed (CA reclaim);
    the index shrinks. O(L log n) plus O(n) to close the gap.
    """
    pager = tree.pager
    _, _, ci = locate(tree, key)
    j = ci.find(key)
    if j == ci.n or ci.key_at(j) != key:
        raise RecordNotFoundError(f"{pager.path}: no record with key {show_key(key)} to erase")
    meta = tree.meta
    pager.dirty_ci(ci)
    ci.delete(j)
    if ci.n == 0 and meta.data_cis > 1:
        pager.forget(ci.ci)
        meta.data_cis -= 1
        path = path_to(tree, key)
        remove_entry(tree, path, len(path) - 1)


# --- a new tree -----------------------------------------------------------------------------------------------


def plant(tree: Tree[Pager]) -> None:
    """Give an empty tree (an alternate index being built) its first CA, in the transaction in progress, as
    :func:`ksds.pager.create` lays out the base cluster's: a sequence-set CI (one entry, high key all X'FF') over a
    new CA whose first CI is an empty data CI. O(1)."""
    pager = tree.pager
    meta = tree.meta
    base = space.alloc_ca(pager, meta)
    seq = IndexCI(space.alloc_index_ci(pager, meta), 1, base, [b"\xff" * tree.key_length], [base], None, tree.tid)
    pager.dirty_ci(tree.codec.new_data(base, b"", 0))
    pager.dirty_ci(seq)
    meta.root = seq.ci
    meta.root_stamp = 0  # a new CI: in the log until the checkpoint stamps it
    meta.levels = 1
    meta.data_cis = 1
    pager.state_dirty = True


def uproot(tree: Tree[Pager]) -> None:
    """Give every CA and index CI of a tree back to the free lists, in the transaction in progress: the tree is
    left with no root and no records (:func:`plant` makes it again). O(CIs of its index)."""
    pager = tree.pager
    meta = tree.meta
    todo = [(meta.root, meta.root_stamp)]
    while todo:
        ci, stamp = todo.pop()
        node = get_index(tree, ci, stamp)
        if node.level == 1:
            for data in node.ptrs:
                pager.forget(data)
            space.free_ca(pager, node.ca, meta)
        else:
            todo.extend(zip(node.ptrs, node.stamps, strict=True))
        pager.forget(ci)
        space.free_index_ci(pager, ci, meta)
    meta.root = meta.root_stamp = meta.data_cis = meta.rec_total = 0
    meta.levels = 1
    pager.state_dirty = True


# --- stamps (lost writes) -----------------------------------------------------------------------------------------


def _entry_above(tree: Tree[Pager], key: bytes, level: int) -> tuple[IndexCI, int] | None:
    """The index CI at ``level`` on the way to ``key`` and the entry it follows (None if the tree is lower)."""
    node = root(tree)
    while True:
        i = bisect_left(node.keys, key)
        if node.level == level:
            return node, i
        if node.level < level:
            return None
        node = get_index(tree, node.ptrs[i], node.stamps[i])


def _second(item: tuple[int, bytes]) -> bytes:
    return item[1]


def restamp(pager: Pager) -> None:
    """Before a checkpoint writes the log's CIs in place: make each index entry pointing at one of them (and the
    tree's meta, for a top CI) keep the stamp of the image it will have in the file, in every tree of the file.

    A CI's stamp is the transaction that last changed it; a CI read from the file that does not carry the stamp
    its parent keeps is a lost or misdirected write, or an older copy of the file (:meth:`Pager.load`). The index
    CIs this changes are changed by the caller's next transaction, so their own stamps become its number and
    their parents' entries follow, level by level up to the top. The log's CIs are grouped by the tree their
    descriptor names, and each tree is walked from its own root with its own key layout (a CI of a tree this open
    does not know -- an alternate index not made known -- is left as it is: no index of a known tree points at
    it). Call it with no transaction in progress; the caller commits. O(W log W + P L log n) for W CIs in the
    log under P parents."""
    new = stamp_of(pager.state.txn + 1)  # the stamp of the index CIs changed here (they commit in the next txn)
    kind_at = pager.ci_size - TRAILER_SIZE
    flags_at = kind_at + FLAGS_AT
    stamp = pager.codec.stamp  # where a CI's stamp is does not depend on its tree's layout
    trees = pager.trees
    #: tree id -> (CI -> its stamp, CI -> its image)
    logged: dict[int, tuple[dict[int, int], dict[int, bytes]]] = {}
    for ci in pager.walmap:
        image = pager.committed_image(ci)
        s = stamp(image)
        if s < 0:
            continue  # a free CI: no entry points at it
        tid = image[flags_at] >> TID_SHIFT
        if tid not in trees:
            continue
        group = logged.get(tid)
        if group is None:
            group = logged[tid] = ({}, {})
        group[0][ci] = s
        group[1][ci] = image
    for tid, (stamps, images) in logged.items():
        _restamp_tree(trees[tid], stamps, images, kind_at, new)


def _restamp_tree(tree: Tree[Pager], stamps: dict[int, int], images: dict[int, bytes], kind_at: int, new: int) -> None:
    """:func:`restamp` for one tree: ``stamps`` and ``images`` are the stamps and images of its CIs in the log."""
    pager = tree.pager
    meta = tree.meta
    codec = tree.codec
    ko, kl = codec.ko, codec.kl
    zero = bytes(kl)
    #: level -> {CI: its first key (where to look for its index entry)}, in the order found
    by_level: dict[int, dict[int, bytes]] = {}
    for ci, image in images.items():
        if image[kind_at] == CI_DATA:  # the first key, straight from the image: no CI object
            level = 0
            key = image[ko : ko + kl] if image[kind_at + 2 : kind_at + 4] != b"\0\0" else zero
        else:
            level = image[kind_at + 1] & LEVEL_MASK
            key = image[:kl]
        by_level.setdefault(level, {})[ci] = key
    root_ci = meta.root
    for level in range(meta.levels):
        todo = by_level.get(level)
        if not todo:
            continue
        up = by_level.setdefault(level + 1, {})
        # in key order, so that CIs under one parent find it with one descent: a key no higher than the last
        # parent's last high key, and no lower than the key that led there, is under that parent too
        parent: IndexCI | None = None
        for ci, key in sorted(todo.items(), key=_second):
            if ci == root_ci:
                continue
            if parent is not None and key <= parent.keys[-1]:
                node, i = parent, bisect_left(parent.keys, key)
            else:
                entry = _entry_above(tree, key, level + 1)
                if entry is None:
                    continue
                node, i = entry
                parent = node
            if node.ptrs[i] != ci or node.stamps[i] == stamps[ci]:
                continue  # no longer in the tree (moved by a CA split, freed), or its entry already knows it
            pager.dirty_ci(node)
            node.stamps[i] = stamps[ci]
            if stamps.get(node.ci) != new:
                stamps[node.ci] = new
                if node.ci not in up:
                    up[node.ci] = node.keys[0]
    top = stamps.get(root_ci)
    if top is not None and top != meta.root_stamp:
        meta.root_stamp = top
        pager.state_dirty = True
