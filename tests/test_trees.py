"""More than one B+-tree in one data set file (:mod:`ksds.tree`): a second tree, tree id 1, with its own record
layout (key 12 bytes at offset 0, records of 12 bytes; the base cluster has keys of 8 in records of 40), made
through the state's catalog (as the entry of a NOUPGRADE alternate index, so that the base's requests leave it
alone) in the pager of an open data set, and changed directly through :mod:`ksds.btree` in the same transactions
as the base cluster: CI splits, CA splits and index levels, deletes down to empty, exact reads, positioning both
ways; commits, checkpoints (each tree restamped from its own root), reads from the pool, the file's map and the
log; rollback of a transaction that changed both trees. (:mod:`tests.test_aix` and :mod:`tests.test_model_aix`
test alternate indexes through the API, across reopens, crashes and processes.)
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterator

import pytest

import ksds
from ksds import btree
from ksds.ci import Codec, DataCI, IndexCI, codec_for
from ksds.errors import DamagedCIError, JournalCorruptError
from ksds.format import CI_DATA, FLAGS_AT, TRAILER_SIZE, AixMeta, crc32c
from ksds.journal import LOG_HEADER_SIZE, Journal
from ksds.pager import Pager
from ksds.tree import Tree

KL0, RL0 = 8, 40  # the base cluster
KL1, RL1 = 12, 12  # tree 1
CISZ = 512
CPA = 4  # few CIs per CA: CA splits come soon


def key0(i: int) -> bytes:
    return b"%08d" % i


def rec0(i: int) -> bytes:
    return key0(i) + b"%032d" % (i * 3)


def key1(i: int) -> bytes:
    return b"K%011d" % i


@pytest.fixture
def ds(tmp_path: os.PathLike[str]) -> Iterator[ksds.Dataset]:
    path = os.path.join(tmp_path, "two.ksds")
    ksds.define(path, key_length=KL0, record_length=RL0, ci_size=CISZ, cis_per_ca=CPA, freespace=(10, 0))
    with ksds.open(path, "rw", buffer_space=1 << 20) as d:
        yield d


def pager_of(ds: ksds.Dataset) -> Pager:
    p = ds._pager
    assert p is not None
    return p


def new_tree(p: Pager, tid: int) -> Tree:
    """A tree of records of KL1 bytes (an alternate index of a 4-byte alternate key: 4 + the base's 8), in the
    catalog as a NOUPGRADE alternate index that is not current (so the base's requests leave it alone)."""
    a = AixMeta(tid, f"T{tid}", KL1 - KL0, 0, unique=False, upgrade=False, current=False)
    p.state.aixes.append(a)
    p.state_dirty = True
    tree = p.tree_of(a)
    btree.plant(tree)
    return tree


def make_tree1(ds: ksds.Dataset) -> Tree:
    p = pager_of(ds)
    with ds.batch():
        tree = new_tree(p, 1)
    assert p.trees[1] is tree and p.codecs[1] is tree.codec
    assert tree.records_per_ci == (CISZ - TRAILER_SIZE) // RL1
    return tree


def records_of(tree: Tree, backward: bool = False) -> list[bytes]:
    """Every record of ``tree`` in key order (or reversed), by positioning at an end and stepping CI by CI."""
    kl = tree.key_length
    pos = btree.seek_le(tree, b"\xff" * kl) if backward else btree.seek_ge(tree, bytes(kl))
    if pos is None:
        return []
    path, ci, j = pos
    out: list[bytes] = []
    if backward:
        out += reversed(ci.records(0, j + 1))
        while (recs := btree.prev_records(tree, path)) is not None:
            out += recs
    else:
        out += ci.records(j)
        while (recs := btree.next_records(tree, path)) is not None:
            out += recs
    return out


def index_cis(tree: Tree) -> tuple[list[int], list[int]]:
    """(index CIs, data CIs) of ``tree``, walked from its root."""
    index: list[int] = []
    data: list[int] = []

    def walk(node: IndexCI) -> None:
        index.append(node.ci)
        for ptr, stamp in zip(node.ptrs, node.stamps, strict=True):
            if node.level == 1:
                data.append(ptr)
            else:
                walk(btree.get_index(tree, ptr, stamp))

    walk(btree.root(tree))
    return index, data


def check_tree(tree: Tree, want: dict[bytes, bytes]) -> None:
    """The tree holds exactly ``want``: reads, positioning, both browse directions and its meta's counts."""
    keys = sorted(want)
    assert records_of(tree) == [want[k] for k in keys]
    assert records_of(tree, backward=True) == [want[k] for k in reversed(keys)]
    for k in keys[:: max(1, len(keys) // 50)]:
        assert btree.find(tree, k) == want[k]
        assert btree.first_ge(tree, k) == want[k]
        nk = k[:-1] + bytes([k[-1] + 1])
        if nk not in want:
            assert btree.find(tree, nk) is None
    index, data = index_cis(tree)
    meta = tree.meta
    assert len(index) == meta.index_cis
    assert len(data) == meta.data_cis
    assert btree.root(tree).level == meta.levels


def test_two_trees_grow_shrink_checkpoint(ds: ksds.Dataset) -> None:
    p = pager_of(ds)
    t1 = make_tree1(ds)
    t0 = p.base
    assert t0.meta is p.state and t1.meta is not p.state
    rng = random.Random(7)
    want0: dict[bytes, bytes] = {}
    want1: dict[bytes, bytes] = {}
    order = list(range(6000))
    rng.shuffle(order)
    # random inserts (direct: CI splits in the middle, CA splits), a batch of both trees at a time
    for chunk in range(0, len(order), 500):
        with ds.batch():
            for i in order[chunk : chunk + 500]:
                r = key1(i)
                btree.insert(t1, r, r, None)
                want1[r] = r
                if i % 3 == 0:
                    ds.write(rec0(i))
                    want0[key0(i)] = rec0(i)
    # then appends in key order (sequential: new CIs and new CAs)
    with ds.batch():
        last = None
        for i in range(10_000, 12_000):
            r = key1(i)
            btree.insert(t1, r, r, last)
            last = r
            want1[r] = r
            ds.write(rec0(i))
            want0[key0(i)] = rec0(i)
    m1 = t1.meta
    assert m1.levels >= 3 and m1.splits_ci > 0 and m1.splits_ca > 0
    check_tree(t1, want1)
    assert list(ds) == [want0[k] for k in sorted(want0)]
    # the log holds tree 1's CIs, with tree id 1 in their descriptors
    logged_from_log(p, t1)
    p.checkpoint()
    assert not p.walmap
    assert m1.root_stamp != 0  # restamped from its own root
    in_file(p, t1)
    # from the file (the map, first touches with pread), every stamp checked against the restamped entries
    p.pool.clear()
    check_tree(t1, want1)
    p.pool.clear()
    assert [ds.read(k) for k in sorted(want0)[::97]] == [want0[k] for k in sorted(want0)[::97]]
    # and with a full pool: index CIs of tree 1 searched in place (Pager.index_entry), data CIs read in place
    p.pool.clear()
    capacity = p.pool.capacity
    p.pool.capacity = 4
    for k in sorted(want1)[::37]:
        assert btree.find(t1, k) == want1[k]
        assert btree.first_ge(t1, k) == want1[k]
    p.pool.capacity = capacity
    # rewrites of tree 1 (in place in their CI)
    with ds.batch():
        for k in sorted(want1)[::11]:
            at = btree.replace(t1, k)
            assert at is not None
            ci, j = at
            new = k[:-1] + k[-1:]  # same key: a record of this layout is its key
            ci.replace(j, new)
    # deletes down to empty, in random order, with base changes in the same transactions
    gone = list(want1)
    rng.shuffle(gone)
    base_keys = sorted(want0)
    for chunk in range(0, len(gone), 700):
        with ds.batch():
            for k in gone[chunk : chunk + 700]:
                btree.delete(t1, k)
                del want1[k]
            for k in base_keys[chunk // 7 : chunk // 7 + 50]:
                if k in want0:
                    ds.erase(k)
                    del want0[k]
        if chunk == 2100:
            p.checkpoint()
    assert not want1
    assert m1.levels == 1 and m1.data_cis == 1 and m1.index_cis == 1
    check_tree(t1, want1)
    assert btree.seek_ge(t1, bytes(KL1)) is None and btree.seek_le(t1, b"\xff" * KL1) is None
    p.checkpoint()
    p.pool.clear()
    check_tree(t1, want1)
    assert list(ds) == [want0[k] for k in sorted(want0)]
    # tree 1 grows again from empty
    with ds.batch():
        for i in range(300):
            btree.insert(t1, key1(i), key1(i), None)
            want1[key1(i)] = key1(i)
    check_tree(t1, want1)


def logged_from_log(p: Pager, t1: Tree) -> None:
    """Tree 1's CIs in the log (as the pager's images and as the log file rebuilds them, record operations applied
    with tree 1's layout) carry tree id 1 and decode with tree 1's codec."""
    index, data = index_cis(t1)
    t = CISZ - TRAILER_SIZE
    logged = [ci for ci in index + data if ci in p.walmap]
    assert logged
    journal = Journal(p.journal.path, CISZ, p.created, p.layouts)
    replay = journal.read()
    rebuilt: dict[int, bytes] = {}
    for _, images, _ in replay.transactions:
        rebuilt.update(images)
    ops = {ci for _, ci, _, kind in p.journal.frames() if kind == 2}
    assert ops & set(data) and ops - set(data)  # record operations of both trees' data CIs
    for ci in logged:
        image = p.committed_image(ci)
        assert rebuilt[ci] == image
        assert image[t + FLAGS_AT] >> 4 == 1
        obj = codec_for(p.codecs, image, ci).decode(image, ci)
        assert obj.tid == 1
        if ci in data:
            assert type(obj) is DataCI and obj.kl == KL1 and image[t] == CI_DATA
        else:
            assert type(obj) is IndexCI and image[t + FLAGS_AT] & 15 == obj.level
    # the lazy catch-up (a reader of others' transactions) builds the same images
    txns, _ = p.journal.scan(LOG_HEADER_SIZE, p.journal.salt, replay.transactions[0][0] - 1, {}, lazy=True)
    lazy: dict[int, object] = {}
    for _, frames, _ in txns:
        lazy.update(frames)
    for ci in logged:
        image = lazy[ci]
        got = image if isinstance(image, bytes) else image.image()  # type: ignore[attr-defined]
        assert got == p.committed_image(ci)
    # without tree 1's layout, its record operations do not apply (the log reads as damaged from there)
    no_tree1 = Journal(p.journal.path, CISZ, p.created, {0: p.layouts[0]})
    try:
        assert no_tree1.read().damaged_at is not None
    except JournalCorruptError:
        pass


def in_file(p: Pager, t1: Tree) -> None:
    """After a checkpoint tree 1's CIs are in the file, with tree id 1, decoded with its codec; the base's with 0."""
    index, data = index_cis(t1)
    t = CISZ - TRAILER_SIZE
    for ci in index + data:
        image = os.pread(p.fd, CISZ, ci * CISZ)
        assert image[t + FLAGS_AT] >> 4 == 1
        obj = codec_for(p.codecs, image, ci).decode(image, ci)
        assert obj.tid == 1 and (type(obj) is DataCI) == (ci in data)
        with pytest.raises(DamagedCIError, match=f"CI {ci} .*belongs to tree 1 where tree 0"):
            p.codec.decode(image, ci)
    index0, data0 = index_cis(p.base)
    assert not set(index0 + data0) & set(index + data)
    for ci in index0 + data0:
        image = os.pread(p.fd, CISZ, ci * CISZ)
        assert image[t + FLAGS_AT] >> 4 == 0


def test_rollback_of_both_trees(ds: ksds.Dataset) -> None:
    p = pager_of(ds)
    t1 = make_tree1(ds)
    with ds.batch():
        for i in range(0, 3000, 2):
            btree.insert(t1, key1(i), key1(i), None)
            if i % 6 == 0:
                ds.write(rec0(i))
    p.checkpoint()
    before1 = records_of(t1)
    before0 = list(ds)
    meta1 = dataclasses.asdict(t1.meta)
    fields = ("txn", "root", "root_stamp", "levels", "hurba", "ca_count", "free_ca", "free_index", "index_cis",
              "data_cis", "rec_total", "splits_ci", "splits_ca")
    state = [getattr(p.state, f) for f in fields]
    with pytest.raises(RuntimeError, match="undo"):
        with ds.batch():
            for i in range(1, 3000, 2):  # enough for CI and CA splits and a level
                btree.insert(t1, key1(i), key1(i), None)
                ds.write(rec0(i))
            for i in range(0, 1000, 2):
                btree.delete(t1, key1(i))
            assert dataclasses.asdict(t1.meta) != meta1
            raise RuntimeError("undo")
    assert dataclasses.asdict(t1.meta) == meta1
    assert [getattr(p.state, f) for f in fields] == state
    assert p.base.meta is p.state  # the rollback replaced the state: tree 0's meta followed
    assert records_of(t1) == before1
    assert list(ds) == before0
    check_tree(t1, {r: r for r in before1})
    # a rolled-back tree creation forgets the tree
    with pytest.raises(RuntimeError):
        with ds.batch():
            new_tree(p, 2)
            raise RuntimeError("undo")
    assert 2 not in p.trees and p.codecs[2] is None and 2 not in p.layouts
    # both trees still take changes, and commit
    with ds.batch():
        btree.insert(t1, key1(1), key1(1), None)
        ds.write(rec0(1))
    assert btree.find(t1, key1(1)) == key1(1) and ds.read(key0(1)) == rec0(1)


def test_tree_zero_meta_follows_the_state(ds: ksds.Dataset) -> None:
    """The pager replaces its state object (rollback, another process's commit, recovery): tree 0's meta is the
    current one each time."""
    p = pager_of(ds)
    ds.write(rec0(1))
    old = p.state
    p.rollback()
    assert p.state is not old and p.base.meta is p.state
    ds.alter(freespace=(50, 0))
    assert p.base.load_records_per_ci == p.defn.load_records_per_ci < p.defn.records_per_ci


def test_unknown_tree_id_is_damage(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "bad.ksds")
    defn = ksds.define(path, key_length=KL0, record_length=RL0, ci_size=CISZ, cis_per_ca=CPA)
    with ksds.open(path, "rw") as d:
        for i in range(5):
            d.write(rec0(i))
    # CI 2 (the first data CI) rewritten as a data CI of tree 5, checksum and stamp right
    with open(path, "r+b") as f:
        f.seek(2 * CISZ)
        image = f.read(CISZ)
        stamp = int.from_bytes(image[CISZ - 8 : CISZ - 4], "big")
        obj = Codec(defn, path).decode(image, 2)
        assert type(obj) is DataCI
        five = Codec(defn, path, tid=5)
        bad = five.seal_data(five.new_data(2, obj.body(), obj.n), stamp)
        assert bad[CISZ - TRAILER_SIZE + FLAGS_AT] == 5 << 4
        f.seek(2 * CISZ)
        f.write(bad)
    codecs: list[Codec | None] = [Codec(defn, path)] + [None] * 15
    with pytest.raises(DamagedCIError, match="CI 2 .*names tree 5"):
        codec_for(codecs, bad, 2)
    with ksds.open(path, "r") as d:
        with pytest.raises(DamagedCIError, match="CI 2 ") as e:
            d.read(key0(1))
        assert e.value.ci == 2
    report = ksds.examine(path)
    assert any(f.ci == 2 and "names tree 5" in f.message for f in report.errors)
    # a damaged CI is reported as damaged (its checksum) before its tree id is looked at
    torn = bytearray(bad)
    torn[0] ^= 1
    with pytest.raises(DamagedCIError, match="CRC32C"):
        codec_for(codecs, bytes(torn), 2)


def test_level_nibble_checked(tmp_path: os.PathLike[str]) -> None:
    """An index CI's level (the flags byte's low nibble) must match its type; the tree id is the high nibble."""
    path = os.path.join(tmp_path, "lv.ksds")
    defn = ksds.define(path, key_length=KL0, record_length=RL0, ci_size=CISZ, cis_per_ca=CPA)
    codec = Codec(defn, path)
    seq = IndexCI(1, 1, 2, [b"\xff" * KL0], [2], [1])
    image = codec.encode(seq, 1)
    assert image[CISZ - TRAILER_SIZE + FLAGS_AT] == 1  # tree 0: as before the tree id existed
    assert type(codec.decode(image, 1)) is IndexCI
    one = Codec(defn, path, tid=1)
    image1 = one.encode(IndexCI(1, 1, 2, [b"\xff" * KL0], [2], [1], tid=1), 1)
    assert image1[CISZ - TRAILER_SIZE + FLAGS_AT] == 0x11
    assert one.decode(image1, 1).tid == 1
    top = one.encode(IndexCI(1, 3, 0, [b"\xff" * KL0], [5], [1], tid=1), 1)
    assert top[CISZ - TRAILER_SIZE + FLAGS_AT] == 0x13
    for level in (0, 1):  # an index-set CI of level 0 or 1
        forged = bytearray(top)
        forged[CISZ - TRAILER_SIZE + FLAGS_AT] = 0x10 | level
        crc = crc32c(bytes(forged[: CISZ - 4]))
        forged[CISZ - 4 :] = crc.to_bytes(4, "big")
        with pytest.raises(DamagedCIError, match="level .* does not match its type"):
            one.decode(bytes(forged), 1)


def test_most_levels(ds: ksds.Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tree has at most 15 index levels (the flags byte's low nibble): the insert that would add one more is a
    NoSpaceError, and its transaction is rolled back (here with the limit lowered to 2 levels)."""
    p = pager_of(ds)
    t1 = make_tree1(ds)
    monkeypatch.setattr(btree, "MAX_LEVELS", 2)
    want: dict[bytes, bytes] = {}
    with pytest.raises(ksds.NoSpaceError, match="tree 1 has reached its most levels"):
        for i in range(100_000):
            meta = dataclasses.asdict(t1.meta)
            with ds.batch():
                btree.insert(t1, key1(i), key1(i), None)
            want[key1(i)] = key1(i)
    assert t1.meta.levels == 2 and dataclasses.asdict(t1.meta) == meta
    check_tree(t1, want)
    assert p.base.meta.levels == 1
