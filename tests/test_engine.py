"""Focused tests of the engine: splits and their statistics, FREESPACE, space reuse, LISTCAT statistics, damaged
CIs, bad input and error codes, browses, the cost of opening, and exclusive use.

Layout checks look inside through ``ds._pager``: the sequence set is walked with ``ksds.btree.path_to`` and
``ksds.btree.next_data``, giving each data CI with its CA.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

import ksds
import ksds.pager
import ksds.space
from ksds import btree as index

# --- helpers ------------------------------------------------------------------------------------------------


def define(tmp_path: Path, name: str = "t.ksds", **kw: object) -> str:
    path = str(tmp_path / name)
    kw.setdefault("key_length", 4)
    kw.setdefault("record_length", 100)
    kw.setdefault("ci_size", 512)
    ksds.define(path, **kw)  # type: ignore[arg-type]
    return path


def k4(n: int) -> bytes:
    return n.to_bytes(4, "big")


def rec(key: bytes, length: int = 100, offset: int = 0, fill: int = 0x2E) -> bytes:
    return bytes([fill]) * offset + key + bytes([fill]) * (length - offset - len(key))


def layout(ds: ksds.Dataset) -> list[tuple[int, int, list[bytes]]]:
    """(first CI of the CA, data CI number, keys) for every data CI, in key order."""
    p = ds._pager
    assert p is not None
    path = index.path_to(p.base, bytes(ds.key_length))
    seq, i = path[-1]
    ci = index.get_data(p.base, seq.ptrs[i])
    out = []
    while ci is not None:
        out.append((path[-1][0].ca, ci.ci, list(ci.keys)))
        ci = index.next_data(p.base, path)
    return out


def by_ca(lay: list[tuple[int, int, list[bytes]]]) -> dict[int, list[tuple[int, list[bytes]]]]:
    cas: dict[int, list[tuple[int, list[bytes]]]] = {}
    for ca, ci, keys in lay:
        cas.setdefault(ca, []).append((ci, keys))
    return cas


def sound(path: str) -> ksds.ExamineReport:
    report = ksds.examine(path)
    assert report.sound, [str(f) for f in report.findings]
    return report


# --- splits and their statistics ------------------------------------------------------------------------------


def test_ci_split_on_direct_insert_moves_about_half(tmp_path: Path) -> None:
    path = define(tmp_path, cis_per_ca=8)  # 4 records of 100 bytes per 512-byte CI
    with ksds.open(path) as ds:
        for n in (10, 20, 30, 40):
            ds.write(rec(k4(n)))
        assert ds.stats()["SPLITS-CI"] == 0
        assert [keys for _, _, keys in layout(ds)] == [[k4(10), k4(20), k4(30), k4(40)]]
        ds.write(rec(k4(25)))  # a direct insert into a full CI
        s = ds.stats()
        assert (s["SPLITS-CI"], s["SPLITS-CA"], s["DATA-CIS"], s["REC-INSERTED"]) == (1, 0, 2, 1)
        sizes = [len(keys) for _, _, keys in layout(ds)]
        assert sorted(sizes) == [2, 3], sizes
        assert list(ds.browse()) == [rec(k4(n)) for n in (10, 20, 25, 30, 40)]
    sound(path)


def test_ci_splits_on_random_inserts(tmp_path: Path) -> None:
    path = define(tmp_path, cis_per_ca=16)
    keys = list(range(0, 2000, 50))
    random.Random(7).shuffle(keys)
    keys = keys[:22]
    with ksds.open(path) as ds:
        for n in keys:
            ds.write(rec(k4(n)))
        s = ds.stats()
        assert s["SPLITS-CI"] > 0
        assert s["SPLITS-CA"] == 0 and s["CAS"] == 1
        assert s["DATA-CIS"] == 1 + s["SPLITS-CI"]  # every direct split takes one free CI of the CA
        assert s["FREE-CIS"] == 16 - s["DATA-CIS"]
        assert s["REC-TOTAL"] == len(keys)
        assert list(ds.browse()) == [rec(k4(n)) for n in sorted(keys)]
        for _, _, ks in layout(ds):
            assert 2 <= len(ks) <= 4
    sound(path)


def test_ca_split_moves_about_half_the_cis(tmp_path: Path) -> None:
    path = define(tmp_path, cis_per_ca=4)
    with ksds.open(path) as ds:
        for n in range(0, 160, 10):  # 16 records: 4 full CIs, one full CA
            ds.write(rec(k4(n)))
        s = ds.stats()
        assert (s["CAS"], s["DATA-CIS"], s["FREE-CIS"], s["SPLITS-CI"], s["SPLITS-CA"]) == (1, 4, 0, 0, 0)
        before = by_ca(layout(ds))
        ds.write(rec(k4(55)))  # its CI is full and the CA has no free CI: a CA split, then a CI split
        s = ds.stats()
        assert (s["CAS"], s["SPLITS-CA"], s["SPLITS-CI"]) == (2, 1, 1)
        after = by_ca(layout(ds))
        assert len(after) == 2
        ((old_ca, old_cis),) = before.items()
        moved = [keys for ca, cis in after.items() if ca != old_ca for _, keys in cis]
        # whole CIs moved: about half of the CA's CIs, their records unchanged
        assert moved == [keys for _, keys in old_cis[2:]]
        assert s["HI-U-RBA"] > 0 and s["REC-TOTAL"] == 17
        assert list(ds.browse()) == [rec(k4(n)) for n in sorted([*range(0, 160, 10), 55])]
    sound(path)


def test_ca_splits_on_random_inserts(tmp_path: Path) -> None:
    path = define(tmp_path, cis_per_ca=2)
    keys = random.Random(3).sample(range(100000), 300)
    with ksds.open(path) as ds:
        for n in keys:
            ds.write(rec(k4(n)))
        s = ds.stats()
        assert s["SPLITS-CA"] > 0 and s["SPLITS-CI"] > 0
        assert s["CAS"] == 1 + s["SPLITS-CA"]
        assert s["LEVELS"] >= 2
        assert [ds.key_of(r) for r in ds.browse()] == [k4(n) for n in sorted(keys)]
    sound(path)


def test_sequential_load_appends_new_cis_and_cas_without_moving_records(tmp_path: Path) -> None:
    path = define(tmp_path, cis_per_ca=3)
    with ksds.open(path) as ds:
        for n in range(50):
            ds.write(rec(k4(n)))
        half = layout(ds)
        for n in range(50, 100):
            ds.write(rec(k4(n)))
        s = ds.stats()
        lay = layout(ds)
        # 25 CIs of 4 records, 3 CIs per CA: 9 CAs
        assert [len(keys) for _, _, keys in lay] == [4] * 25
        assert (s["DATA-CIS"], s["CAS"], s["REC-TOTAL"]) == (25, 9, 100)
        assert s["REC-INSERTED"] == 0  # appends at the end are not inserts
        assert s["SPLITS-CI"] == 0  # appending a new CI moves no record: not a CI split
        assert s["SPLITS-CA"] == s["CAS"] - 1  # reference 2.4: appends fill a CA and go on into a new one
        for ca, cis in by_ca(lay).items():
            # a CA is filled in CI order, from its first CI
            assert [ci for ci, _ in cis] == list(range(ca, ca + len(cis)))
        # the CIs already written kept their records (nothing moved); the last one may have been filled up
        final = {ci: keys for _, ci, keys in lay}
        for _, ci, keys in half[:-1]:
            assert final[ci] == keys
        assert final[half[-1][1]][: len(half[-1][2])] == half[-1][2]
    sound(path)


def test_sequential_insert_inside_a_full_ci_splits_at_the_insertion_point(tmp_path: Path) -> None:
    path = define(tmp_path, cis_per_ca=4)
    with ksds.open(path) as ds:
        ds.write(rec(k4(50)))
        for n in (10, 20, 30):  # ascending after 10: the sequential strategy
            ds.write(rec(k4(n)))
        assert [keys for _, _, keys in layout(ds)] == [[k4(10), k4(20), k4(30), k4(50)]]
        ds.write(rec(k4(40)))  # sequential, the CI is full: split at the insertion point, 50 moves to a new CI
        assert [keys for _, _, keys in layout(ds)] == [[k4(10), k4(20), k4(30), k4(40)], [k4(50)]]
        s = ds.stats()
        assert s["DATA-CIS"] == 2
        assert s["SPLITS-CI"] == 1, "a split that moved a record to a new CI is a CI split"
    sound(path)


def test_index_levels_grow_with_many_cas_and_shrink_after_erasing(tmp_path: Path) -> None:
    # key length 60 in 512-byte CIs: 7 entries per index CI, so every 7 CAs or index CIs add a level
    path = define(tmp_path, key_length=60, record_length=124, cis_per_ca=2)

    def key(n: int) -> bytes:
        return n.to_bytes(60, "big")

    levels = []
    with ksds.open(path) as ds:
        for n in range(600):
            ds.write(rec(key(n), 124))
            if n % 50 == 0:
                levels.append(ds.stats()["LEVELS"])
        s = ds.stats()
        assert s["LEVELS"] >= 4, s
        assert levels == sorted(levels) and levels[0] == 1
        assert s["CAS"] == 75
        full = s
        top = s["HI-LEVEL-RBA"]
    sound(path)
    with ksds.open(path) as ds:
        erase = list(range(3, 600))
        random.Random(5).shuffle(erase)
        seen = []
        for n in erase:
            ds.erase(key(n))
            seen.append(ds.stats()["LEVELS"])
        s = ds.stats()
        assert (s["LEVELS"], s["CAS"], s["DATA-CIS"], s["INDEX-CIS"], len(ds)) == (1, 1, 1, 1, 3), s
        assert s["HI-LEVEL-RBA"] != top
        assert seen == sorted(seen, reverse=True)  # erasing never adds a level
        assert seen[0] == full["LEVELS"]
        assert list(ds.browse()) == [rec(key(n), 124) for n in range(3)]
    sound(path)
    with ksds.open(path) as ds:
        for n in range(3, 600):  # the same load again reuses the freed CAs and index CIs
            ds.write(rec(key(n), 124))
        s = ds.stats()
        assert s["LEVELS"] == full["LEVELS"] and s["CAS"] == full["CAS"]
        assert s["HI-U-RBA"] <= full["HI-U-RBA"]
    sound(path)


# --- FREESPACE -------------------------------------------------------------------------------------------------


def test_freespace_honoured_at_load(tmp_path: Path) -> None:
    path = define(tmp_path, key_length=8, record_length=50, ci_size=1024, cis_per_ca=8, freespace=(20, 25))
    with ksds.open(path) as ds:
        d = ds.definition
        assert d.freespace == (20, 25)
        assert d.records_per_ci == 20
        assert d.load_records_per_ci == 16  # (1024 - 16 - ceil(1024 * 20%)) // 50
        assert d.load_cis_per_ca == 6  # 8 - ceil(8 * 25%)
        for n in range(0, 5000, 10):
            ds.write(rec(n.to_bytes(8, "big"), 50))
        s = ds.stats()
        assert (s["FREESPACE-%CI"], s["FREESPACE-%CA"]) == (20, 25)
        lay = layout(ds)
        for _, _, keys in lay[:-1]:
            assert len(keys) <= d.load_records_per_ci
            assert len(keys) == d.load_records_per_ci  # loading fills a CI up to the free space
        cas = by_ca(lay)
        assert len(cas) > 2
        for ca in list(cas)[:-1]:
            assert len(cas[ca]) <= d.load_cis_per_ca
            assert len(cas[ca]) == d.load_cis_per_ca
        assert s["REC-INSERTED"] == 0 and s["SPLITS-CI"] == 0
        # the free space takes later inserts without a split: one more record in every CI
        for _, _, keys in lay:
            ds.write(rec((int.from_bytes(keys[0], "big") + 1).to_bytes(8, "big"), 50))
        assert ds.stats()["SPLITS-CI"] == 0
        assert ds.stats()["REC-INSERTED"] == len(lay)
    sound(path)


def test_no_freespace_packs_cis_full(tmp_path: Path) -> None:
    path = define(tmp_path, key_length=8, record_length=50, ci_size=1024, cis_per_ca=8)
    with ksds.open(path) as ds:
        d = ds.definition
        assert d.load_records_per_ci == d.records_per_ci == 20 and d.load_cis_per_ca == 8
        for n in range(500):
            ds.write(rec(n.to_bytes(8, "big"), 50))
        lay = layout(ds)
        assert [len(keys) for _, _, keys in lay] == [20] * 25
        assert [len(cis) for cis in by_ca(lay).values()] == [8, 8, 8, 1]
        assert ds.stats()["FREE-CIS"] == 7
    sound(path)


# --- space reuse ------------------------------------------------------------------------------------------------


def test_erased_record_space_is_reused(tmp_path: Path) -> None:
    path = define(tmp_path, cis_per_ca=4)
    with ksds.open(path) as ds:
        for n in range(0, 160, 10):
            ds.write(rec(k4(n)))
        before = ds.stats()
        lay = layout(ds)
        _, ci, keys = lay[1]
        assert len(keys) == 4
        ds.erase(keys[1])
        new = k4(int.from_bytes(keys[1], "big") + 1)
        ds.write(rec(new))  # goes where the erased record was: no split, no new CI
        s = ds.stats()
        assert (s["SPLITS-CI"], s["SPLITS-CA"], s["DATA-CIS"], s["HI-U-RBA"]) == (
            before["SPLITS-CI"],
            before["SPLITS-CA"],
            before["DATA-CIS"],
            before["HI-U-RBA"],
        )
        assert dict((c, k) for _, c, k in layout(ds))[ci] == sorted([*keys[:1], new, *keys[2:]])
        assert ds.read(new) == rec(new)
    sound(path)


def test_emptied_ci_goes_back_to_its_ca_free_cis(tmp_path: Path) -> None:
    path = define(tmp_path, cis_per_ca=8)
    with ksds.open(path) as ds:
        for n in range(0, 200, 10):  # 20 records: 5 CIs of the first CA
            ds.write(rec(k4(n)))
        before = ds.stats()
        assert (before["DATA-CIS"], before["FREE-CIS"], before["CAS"]) == (5, 3, 1)
        _, ci, keys = layout(ds)[2]
        for key in keys:
            ds.erase(key)
        s = ds.stats()
        assert (s["DATA-CIS"], s["FREE-CIS"], s["CAS"]) == (4, 4, 1)
        assert ci not in [c for _, c, _ in layout(ds)]
        assert s["HI-U-RBA"] == before["HI-U-RBA"]
        sound_now = [ds.key_of(r) for r in ds.browse()]
        assert sound_now == [k4(n) for n in range(0, 200, 10) if k4(n) not in keys]
        # filling the range again splits into the freed CI (the CA's first free one): the file does not grow
        splits = s["SPLITS-CI"]
        for key in keys:
            ds.write(rec(key))
        s = ds.stats()
        assert s["SPLITS-CI"] > splits
        assert s["DATA-CIS"] > 4 and s["FREE-CIS"] == 8 - s["DATA-CIS"]
        assert s["CAS"] == 1 and s["HI-U-RBA"] == before["HI-U-RBA"]
        assert ci in [c for _, c, _ in layout(ds)]
    sound(path)


def test_emptied_ca_is_reclaimed_and_reused(tmp_path: Path) -> None:
    path = define(tmp_path, cis_per_ca=2)
    with ksds.open(path) as ds:
        for n in range(40):  # 5 CAs of 8 records
            ds.write(rec(k4(n)))
        s = ds.stats()
        assert s["CAS"] == 5
        hurba = s["HI-U-RBA"]
        for n in range(8, 24):  # empties the 2nd and 3rd CAs
            ds.erase(k4(n))
        s = ds.stats()
        assert s["CAS"] == 3 and s["DATA-CIS"] == 6
        for n in range(100, 116):  # two new CAs come from the freed ones
            ds.write(rec(k4(n)))
        s = ds.stats()
        assert s["CAS"] == 5 and s["HI-U-RBA"] == hurba
    sound(path)


# --- statistics -------------------------------------------------------------------------------------------------

PERSISTENT = [
    "REC-TOTAL",
    "REC-INSERTED",
    "REC-DELETED",
    "REC-UPDATED",
    "REC-RETRIEVED",
    "SPLITS-CI",
    "SPLITS-CA",
    "LEVELS",
    "HI-U-RBA",
    "CAS",
    "DATA-CIS",
    "INDEX-CIS",
    "FREE-CIS",
    "HI-LEVEL-RBA",
    "FREESPACE-%CI",
    "FREESPACE-%CA",
    "CISIZE",
    "CI/CA",
    "KEYLEN",
    "RKP",
    "MAXLRECL",
    "SHROPTNS",
]


def test_statistics_count_and_survive_reopen(tmp_path: Path) -> None:
    path = define(tmp_path, key_offset=3, cis_per_ca=2, freespace=(10, 0), share_options=(1, 4))

    def r(n: int, fill: int = 0x2E) -> bytes:
        return rec(k4(n), 100, 3, fill)

    with ksds.open(path) as ds:
        for n in range(0, 200, 10):
            ds.write(r(n))  # the load: appends
        s = ds.stats()
        assert (s["REC-TOTAL"], s["REC-INSERTED"], s["REC-UPDATED"], s["REC-DELETED"]) == (20, 0, 0, 0)
        for n in (5, 15, 105):
            ds.write(r(n))  # before the last record: inserts
        ds.write(r(500))  # after the last record: an append
        with pytest.raises(ksds.DuplicateKeyError):
            ds.write(r(10))
        s = ds.stats()
        assert (s["REC-TOTAL"], s["REC-INSERTED"]) == (24, 3)
        ds.rewrite(r(10, 0x41))
        ds.rewrite(r(500, 0x42))
        with pytest.raises(ksds.RecordNotFoundError):
            ds.rewrite(r(11))
        ds.erase(k4(20))
        with pytest.raises(ksds.RecordNotFoundError):
            ds.erase(k4(21))
        before = ds.stats()["REC-RETRIEVED"]
        ds.read(k4(10))
        ds.read(k4(11), gteq=True)
        ds.read(k4(0)[:3], generic=True)
        with pytest.raises(ksds.RecordNotFoundError):
            ds.read(k4(11))
        assert ds.stats()["REC-RETRIEVED"] == before + 3
        assert len(list(ds.browse())) == 23
        s = ds.stats()
        assert s["REC-RETRIEVED"] == before + 3 + 23
        assert (s["REC-TOTAL"], s["REC-INSERTED"], s["REC-UPDATED"], s["REC-DELETED"]) == (23, 3, 2, 1)
        assert (s["FREESPACE-%CI"], s["SHROPTNS"], s["RKP"], s["KEYLEN"]) == (10, (1, 4), 3, 4)
        with pytest.raises(RuntimeError):
            with ds.batch():
                ds.write(r(7))
                ds.erase(k4(30))
                raise RuntimeError("roll back")
        assert ds.stats()["REC-TOTAL"] == 23 and ds.stats()["REC-DELETED"] == 1  # rolled back: not counted
        assert ds.stats()["SPLITS-CI"] + ds.stats()["SPLITS-CA"] > 0
        saved = {k: v for k, v in ds.stats().items() if k in PERSISTENT}
    with ksds.open(path, "r") as ds:
        assert {k: v for k, v in ds.stats().items() if k in PERSISTENT} == saved
    with ksds.open(path) as ds:
        ds.write(r(1))
        ds._abandon()  # statistics of committed requests also survive a crash
    with ksds.open(path) as ds:
        s = ds.stats()
        assert (s["REC-TOTAL"], s["REC-INSERTED"]) == (24, 4)
    sound(path)


def test_rec_retrieved_counts_records_of_a_browse_ended_early(tmp_path: Path) -> None:
    path = define(tmp_path, cis_per_ca=4)
    with ksds.open(path) as ds:
        for n in range(12):
            ds.write(rec(k4(n)))
        before = ds.stats()["REC-RETRIEVED"]
        b = ds.browse()
        got = [next(b) for _ in range(3)]
        assert got == [rec(k4(n)) for n in range(3)]
        b.close()
        assert ds.stats()["REC-RETRIEVED"] == before + 3


# --- damage ------------------------------------------------------------------------------------------------------


def test_damaged_ci_is_named_and_the_rest_stays_readable(tmp_path: Path) -> None:
    path = define(tmp_path, key_length=8, record_length=64, cis_per_ca=4)  # 7 records per CI
    keys = [n.to_bytes(8, "big") for n in range(100)]
    with ksds.open(path) as ds:
        for key in keys:
            ds.write(rec(key, 64))
        lay = layout(ds)
    _, bad, bad_keys = lay[len(lay) // 2]
    with open(path, "r+b") as f:  # flip one bit inside a record of that CI
        f.seek(bad * 512 + 70)
        byte = f.read(1)[0]
        f.seek(bad * 512 + 70)
        f.write(bytes([byte ^ 0x08]))
    with ksds.open(path) as ds:
        with pytest.raises(ksds.DamagedCIError) as info:
            ds.read(bad_keys[0])
        assert info.value.ci == bad
        assert f"CI {bad}" in str(info.value)
        assert isinstance(info.value, ksds.CorruptionError) and isinstance(info.value, ksds.KsdsError)
        with pytest.raises(ksds.DamagedCIError):
            ds.read(bad_keys[-1])
        for key in keys:
            if key not in bad_keys:
                assert ds.read(key) == rec(key, 64)
    report = ksds.examine(path)
    assert not report.sound
    assert bad in [f.ci for f in report.errors]


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.fixture
def ds(tmp_path: Path):
    path = define(tmp_path, key_length=4, record_length=100, cis_per_ca=4)
    with ksds.open(path) as d:
        d.write(rec(k4(1)))
        yield d


def test_wrong_record_length(ds: ksds.Dataset) -> None:
    for bad in (b"x" * 99, b"x" * 101, b""):
        with pytest.raises(ksds.RecordLengthError, match=f"{len(bad)} bytes.*100"):
            ds.write(bad)
        with pytest.raises(ksds.RecordLengthError, match="100"):
            ds.rewrite(bad)
    e = ksds.RecordLengthError
    assert issubclass(e, ksds.InvalidRequestError) and (e.rpl_code, e.file_status, e.cics) == (108, "44", "LENGERR")
    assert len(ds) == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda d: d.read(b"abc"),
        lambda d: d.read(b"abcde"),
        lambda d: d.read(b"abcde", gteq=True),
        lambda d: d.read(b"", generic=True),
        lambda d: d.read(b"abcde", generic=True),
        lambda d: d.erase(b"ab"),
        lambda d: d.browse(b"abcde"),
        lambda d: d.browse(b"", generic=True),
        lambda d: d.read("abcd"),
        lambda d: d.read(1234),
        lambda d: d.read(None),
        lambda d: d.read(["a", "b", "c", "d"]),
        lambda d: d.erase("abcd"),
        lambda d: d.browse("abcd"),
        lambda d: d.get("abcd"),
        lambda d: d.write("x" * 100),
        lambda d: d.write(None),
        lambda d: d.rewrite("x" * 100),
        lambda d: d.write(list(b"x" * 100)),
    ],
    ids=[
        "short-key",
        "long-key",
        "long-key-gteq",
        "empty-prefix",
        "long-prefix",
        "erase-short-key",
        "browse-long-key",
        "browse-empty-prefix",
        "str-key",
        "int-key",
        "none-key",
        "list-key",
        "erase-str-key",
        "browse-str-key",
        "get-str-key",
        "str-record",
        "none-record",
        "rewrite-str-record",
        "list-record",
    ],
)
def test_bad_keys_and_records(ds: ksds.Dataset, call) -> None:
    with pytest.raises(ksds.InvalidRequestError) as info:
        call(ds)
    msg = str(info.value)
    assert "key" in msg or "record" in msg
    assert len(ds) == 1 and ds.read(k4(1)) == rec(k4(1))


def test_bytes_like_keys_and_records_are_accepted(ds: ksds.Dataset) -> None:
    ds.write(bytearray(rec(k4(2))))
    ds.rewrite(memoryview(rec(k4(2), fill=0x41)))
    assert ds.read(bytearray(k4(2))) == rec(k4(2), fill=0x41)
    ds.erase(memoryview(k4(2)))
    assert len(ds) == 1


def test_requests_on_a_closed_data_set(tmp_path: Path) -> None:
    path = define(tmp_path)
    ds = ksds.open(path)
    ds.write(rec(k4(1)))
    ds.write(rec(k4(2)))
    started = ds.browse()
    next(started)
    unstarted = ds.browse()
    ds.close()
    ds.close()  # a second close does nothing
    assert ds.closed
    calls = [
        lambda: ds.read(k4(1)),
        lambda: ds.read(k4(1), gteq=True),
        lambda: ds.get(k4(1)),
        lambda: k4(1) in ds,
        lambda: ds.write(rec(k4(3))),
        lambda: ds.rewrite(rec(k4(1))),
        lambda: ds.erase(k4(1)),
        lambda: ds.browse(),
        lambda: iter(ds),
        lambda: len(ds),
        lambda: ds.stats(),
        lambda: ds.sync(),
        lambda: ds.batch().__enter__(),
        lambda: next(started),
        lambda: next(unstarted),
    ]
    for call in calls:
        with pytest.raises(ksds.DatasetClosedError, match="closed"):
            call()
    assert ksds.DatasetClosedError.file_status == "42"


def test_browse_of_an_empty_data_set_after_close(tmp_path: Path) -> None:
    path = define(tmp_path)
    ds = ksds.open(path)
    b = ds.browse()
    ds.close()
    with pytest.raises(ksds.DatasetClosedError):
        next(b)


def test_updates_refused_in_read_mode(tmp_path: Path) -> None:
    path = define(tmp_path)
    with ksds.open(path) as ds:
        ds.write(rec(k4(1)))
    with ksds.open(path, "r") as ds:
        assert ds.read(k4(1)) == rec(k4(1))
        for call in (
            lambda: ds.write(rec(k4(2))),
            lambda: ds.rewrite(rec(k4(1))),
            lambda: ds.erase(k4(1)),
            lambda: ds.batch().__enter__(),
        ):
            with pytest.raises(ksds.ReadOnlyError, match="reading only"):
                call()
        assert len(ds) == 1
    assert ksds.ReadOnlyError.file_status == "49"


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(ksds.DatasetNotFoundError, match="missing.ksds"):
        ksds.open(str(tmp_path / "missing.ksds"))
    with pytest.raises(ksds.DatasetNotFoundError):
        ksds.open(str(tmp_path / "missing.ksds"), "r")
    with pytest.raises(ksds.DatasetNotFoundError):
        ksds.examine(str(tmp_path / "missing.ksds"))
    (tmp_path / "adir").mkdir()
    with pytest.raises(ksds.NotADatasetError, match="directory"):
        ksds.open(str(tmp_path / "adir"))
    text = tmp_path / "notes.txt"
    text.write_text("this is not a data set\n" * 500)
    with pytest.raises(ksds.NotADatasetError, match="not a ksds data set"):
        ksds.open(str(text))
    with pytest.raises(ksds.NotADatasetError):
        ksds.open(str(text), "r")
    empty = tmp_path / "empty.ksds"
    empty.write_bytes(b"")
    with pytest.raises(ksds.NotADatasetError):
        ksds.open(str(empty))
    path = define(tmp_path)
    for kwargs, word in (
        ({"mode": "w"}, "mode"),
        ({"mode": "a"}, "mode"),
        ({"durability": "disk"}, "durability"),
        ({"buffer_space": 0}, "buffer_space"),
        ({"buffer_space": "big"}, "buffer_space"),
    ):
        with pytest.raises(ksds.InvalidRequestError, match=word):
            ksds.open(path, **kwargs)
    assert ksds.DatasetNotFoundError.file_status == "35"


def test_define_on_existing_path(tmp_path: Path) -> None:
    path = define(tmp_path)
    with pytest.raises(ksds.DatasetExistsError, match="exists"):
        ksds.define(path, key_length=4, record_length=100)
    other = tmp_path / "other.txt"
    other.write_text("keep me")
    with pytest.raises(ksds.DatasetExistsError):
        ksds.define(str(other), key_length=4, record_length=100)
    assert other.read_text() == "keep me"
    (tmp_path / "adir").mkdir()
    with pytest.raises(ksds.DatasetExistsError):
        ksds.define(str(tmp_path / "adir"), key_length=4, record_length=100)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"key_length": 20, "record_length": 10}, "key_length"),
        ({"key_length": 8, "key_offset": 95, "record_length": 100}, "key_offset"),
        ({"key_length": 4, "record_length": 600, "ci_size": 512}, "record_length"),
        ({"key_length": 4, "record_length": 497, "ci_size": 512}, "ci_size"),
        ({"key_length": 0, "record_length": 100}, "key_length"),
        ({"key_length": 256, "record_length": 1000}, "key_length"),
        ({"key_length": -1, "record_length": 100}, "key_length"),
        ({"key_length": "4", "record_length": 100}, "key_length"),
        ({"key_length": 4.0, "record_length": 100}, "key_length"),
        ({"key_length": True, "record_length": 100}, "key_length"),
        ({"key_length": 4, "record_length": 0}, "record_length"),
        ({"key_length": 4, "record_length": 40000}, "record_length"),
        ({"key_length": 4, "record_length": 100, "key_offset": -1}, "key_offset"),
        ({"key_length": 4, "record_length": 100, "ci_size": 0}, "ci_size"),
        ({"key_length": 4, "record_length": 100, "ci_size": -512}, "ci_size"),
        ({"key_length": 4, "record_length": 100, "ci_size": 40000}, "ci_size"),
        ({"key_length": 4, "record_length": 100, "ci_size": "4096"}, "ci_size"),
        ({"key_length": 4, "record_length": 100, "ci_size": 4096.0}, "ci_size"),
        ({"key_length": 200, "record_length": 300, "ci_size": 512}, "ci_size"),  # an index CI of 2 entries
        ({"key_length": 4, "record_length": 100, "ci_size": 512, "cis_per_ca": 63}, "cis_per_ca"),
        ({"key_length": 4, "record_length": 100, "cis_per_ca": 1}, "cis_per_ca"),
        ({"key_length": 4, "record_length": 100, "cis_per_ca": 0}, "cis_per_ca"),
        ({"key_length": 4, "record_length": 100, "cis_per_ca": 2.5}, "cis_per_ca"),
        ({"key_length": 4, "record_length": 100, "freespace": (100, 0)}, "freespace"),
        ({"key_length": 4, "record_length": 100, "freespace": (-1, 0)}, "freespace"),
        ({"key_length": 4, "record_length": 100, "freespace": (0, 101)}, "freespace"),
        ({"key_length": 4, "record_length": 100, "freespace": (0, -5)}, "freespace"),
        ({"key_length": 4, "record_length": 100, "freespace": (10,)}, "freespace"),
        ({"key_length": 4, "record_length": 100, "freespace": 10}, "freespace"),
        ({"key_length": 4, "record_length": 100, "freespace": ("10", "10")}, "freespace"),
        ({"key_length": 4, "record_length": 100, "share_options": (0, 3)}, "share_options"),
        ({"key_length": 4, "record_length": 100, "share_options": (5, 3)}, "share_options"),
        ({"key_length": 4, "record_length": 100, "share_options": (1, 2)}, "share_options"),
        ({"key_length": 4, "record_length": 100, "share_options": (1, 5)}, "share_options"),
        ({"key_length": 4, "record_length": 100, "share_options": 1}, "share_options"),
    ],
)
def test_invalid_definitions(tmp_path: Path, kwargs: dict, word: str) -> None:
    path = tmp_path / "bad.ksds"
    with pytest.raises(ksds.DefinitionError, match=word) as info:
        ksds.define(str(path), **kwargs)
    assert isinstance(info.value, ksds.KsdsError)
    assert info.value.file_status == "39"
    assert not path.exists()


def test_largest_valid_definitions(tmp_path: Path) -> None:
    d = ksds.define(str(tmp_path / "a"), key_length=255, record_length=32752, ci_size=32768)
    assert (d.key_length, d.record_length, d.ci_size, d.records_per_ci) == (255, 32752, 32768, 1)
    # (512 - 16 - 4) // (4 + 8): a high key, a pointer and a stamp per entry, and the CI's own stamp
    d = ksds.define(str(tmp_path / "b"), key_length=4, record_length=100, ci_size=512, cis_per_ca=41)
    assert d.cis_per_ca == 41 == d.entries_per_index_ci
    d = ksds.define(str(tmp_path / "c"), key_length=1, record_length=1, freespace=(99, 100))
    assert d.freespace == (99, 100) and d.load_records_per_ci >= 1 and d.load_cis_per_ca >= 1
    with ksds.open(str(tmp_path / "a")) as ds:
        ds.write(b"k" * 32752)
        assert ds.read(b"k" * 255) == b"k" * 32752


@pytest.mark.parametrize(
    "given, rounded",
    [
        (1, 512),
        (512, 512),
        (513, 1024),
        (600, 1024),
        (2050, 2560),
        (4096, 4096),
        (8192, 8192),
        (8193, 10240),
        (9000, 10240),
        (10240, 10240),
        (30000, 30720),
        (32768, 32768),
    ],
)
def test_ci_size_rounding(tmp_path: Path, given: int, rounded: int) -> None:
    path = str(tmp_path / "r.ksds")
    d = ksds.define(path, key_length=4, record_length=10, ci_size=given)
    assert d.ci_size == rounded
    with ksds.open(path) as ds:
        assert ds.stats()["CISIZE"] == rounded
        assert ds.definition.ci_size == rounded


# --- error codes ------------------------------------------------------------------------------------------------


def test_error_codes(ds: ksds.Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ksds.DuplicateKeyError) as dup:
        ds.write(rec(k4(1)))
    assert (dup.value.rpl_code, dup.value.file_status, dup.value.cics) == (8, "22", "DUPREC")
    assert "00000001" in str(dup.value)
    with pytest.raises(ksds.RecordNotFoundError) as nf:
        ds.read(k4(2))
    assert (nf.value.rpl_code, nf.value.file_status, nf.value.cics) == (16, "23", "NOTFND")
    assert "00000002" in str(nf.value)
    for call in (lambda: ds.erase(k4(2)), lambda: ds.rewrite(rec(k4(2))), lambda: ds.browse(k4(2), gteq=False)):
        with pytest.raises(ksds.RecordNotFoundError) as nf:
            call()
        assert (nf.value.rpl_code, nf.value.file_status) == (16, "23")
    e = ksds.NoSpaceError
    assert (e.rpl_code, e.file_status, e.cics) == (28, "24", "NOSPACE")
    assert (ksds.DatasetInUseError.rpl_code, ksds.DatasetInUseError.file_status) == (20, "93")


def test_no_space_when_the_data_set_cannot_grow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = define(tmp_path, cis_per_ca=2)
    with ksds.open(path) as ds:
        hurba = ds.stats()["HI-U-RBA"] // 512
        monkeypatch.setattr(ksds.space, "MAX_CI", hurba + 3)  # room for one more CA and one index CI
        written = []
        with pytest.raises(ksds.NoSpaceError) as info:
            for n in range(100):
                ds.write(rec(k4(n)))
                written.append(n)
        assert (info.value.rpl_code, info.value.file_status) == (28, "24")
        assert str(info.value)
        # the request that failed changed nothing; the data set goes on working
        assert len(ds) == len(written) and len(written) >= 8
        assert [ds.key_of(r) for r in ds.browse()] == [k4(n) for n in written]
        with pytest.raises(ksds.RecordNotFoundError):
            ds.read(k4(len(written)))
        ds.erase(k4(0))
        ds.write(rec(k4(0), fill=0x41))
        assert ds.read(k4(0)) == rec(k4(0), fill=0x41)
    monkeypatch.undo()
    sound(path)
    with ksds.open(path) as ds:
        assert len(ds) == len(written)


# --- browses -----------------------------------------------------------------------------------------------------


@pytest.fixture
def loaded(tmp_path: Path):
    """40 records with keys 0, 10, ..., 390 in CIs of 4 and CAs of 2 CIs."""
    path = define(tmp_path, cis_per_ca=2)
    with ksds.open(path) as d:
        for n in range(0, 400, 10):
            d.write(rec(k4(n)))
        yield d


def keys_of(ds: ksds.Dataset, records) -> list[int]:
    return [int.from_bytes(ds.key_of(r), "big") for r in records]


def test_browse_starts(loaded: ksds.Dataset) -> None:
    ds = loaded
    every = list(range(0, 400, 10))
    assert keys_of(ds, ds.browse()) == every
    assert keys_of(ds, ds.browse(backward=True)) == every[::-1]
    assert keys_of(ds, ds.browse(k4(100), gteq=False)) == every[10:]
    assert keys_of(ds, ds.browse(k4(100), gteq=False, backward=True)) == every[:11][::-1]
    assert keys_of(ds, ds.browse(k4(105))) == every[11:]
    assert keys_of(ds, ds.browse(k4(105), backward=True)) == every[:11][::-1]  # key or the nearest before
    assert keys_of(ds, ds.browse(k4(5000))) == []
    assert keys_of(ds, ds.browse(k4(5000), backward=True)) == every[::-1]
    assert keys_of(ds, ds.browse(k4(0), backward=True)) == [0]
    # generic: from the first (last, backward) record with the prefix to the end of the data set
    assert keys_of(ds, ds.browse(k4(256)[:3], generic=True)) == every[26:]
    assert keys_of(ds, ds.browse(k4(256)[:3], generic=True, backward=True)) == every[:40][::-1]
    assert keys_of(ds, ds.browse(b"\x00\x00", generic=True, backward=True)) == every[::-1]
    with pytest.raises(ksds.RecordNotFoundError):
        ds.browse(k4(105), gteq=False)  # EQUAL start of a missing key fails at once
    with pytest.raises(ksds.RecordNotFoundError):
        ds.browse(k4(105), gteq=False, backward=True)
    with pytest.raises(ksds.RecordNotFoundError):
        ds.browse(b"\x00\x00\x09", generic=True, gteq=False)
    assert keys_of(ds, ds.browse(b"\x00\x00\x09", generic=True)) == []
    assert ds.stats()["REC-TOTAL"] == 40


def test_several_browses_at_once(loaded: ksds.Dataset) -> None:
    ds = loaded
    fwd = ds.browse()
    back = ds.browse(backward=True)
    mid = ds.browse(k4(200))
    got: dict[str, list[int]] = {"fwd": [], "back": [], "mid": []}
    for _ in range(15):
        for name, b in (("fwd", fwd), ("back", back), ("mid", mid)):
            got[name].append(int.from_bytes(ds.key_of(next(b)), "big"))
    assert got["fwd"] == list(range(0, 150, 10))
    assert got["back"] == list(range(390, 240, -10))
    assert got["mid"] == list(range(200, 350, 10))
    fwd.close()
    with pytest.raises(StopIteration):
        next(fwd)
    assert keys_of(ds, back) == list(range(240, -10, -10))
    assert keys_of(ds, mid) == list(range(350, 400, 10))


def test_reposition(loaded: ksds.Dataset) -> None:
    ds = loaded
    b = ds.browse()
    assert keys_of(ds, [next(b), next(b)]) == [0, 10]
    b.reposition(k4(300))
    assert keys_of(ds, [next(b), next(b)]) == [300, 310]
    b.reposition(k4(155), backward=True)
    assert b.backward
    assert keys_of(ds, [next(b), next(b)]) == [150, 140]
    b.reposition(k4(50), gteq=False)  # direction kept: backward
    assert keys_of(ds, [next(b)]) == [50]
    b.reposition(k4(0x100)[:3], generic=True, backward=False)
    assert keys_of(ds, [next(b)]) == [260]
    b.reposition()
    assert keys_of(ds, [next(b)]) == [0]
    with pytest.raises(ksds.RecordNotFoundError):
        b.reposition(k4(55), gteq=False)
    with b:
        pass
    with pytest.raises(StopIteration):
        next(b)


def test_browse_erasing_every_record_it_returns(loaded: ksds.Dataset) -> None:
    ds = loaded
    seen = []
    for r in ds.browse():
        seen.append(int.from_bytes(ds.key_of(r), "big"))
        ds.erase(ds.key_of(r))
    assert seen == list(range(0, 400, 10))
    assert len(ds) == 0 and list(ds.browse()) == []
    s = ds.stats()
    assert (s["LEVELS"], s["CAS"], s["DATA-CIS"]) == (1, 1, 1)
    for n in range(0, 400, 10):
        ds.write(rec(k4(n)))
    seen = []
    for r in ds.browse(backward=True):
        seen.append(int.from_bytes(ds.key_of(r), "big"))
        ds.erase(ds.key_of(r))
    assert seen == list(range(390, -10, -10))
    assert len(ds) == 0
    sound(ds.path)


def test_browse_while_inserting_ahead_and_behind(loaded: ksds.Dataset) -> None:
    ds = loaded
    seen = []
    for r in ds.browse():
        n = int.from_bytes(ds.key_of(r), "big")
        seen.append(n)
        if n % 10 == 0 and n < 390:
            ds.write(rec(k4(n + 5)))  # ahead: seen
            ds.write(rec(k4(n + 1000)))  # far ahead, in another CA: seen
        if n % 10 == 0 and n > 0:
            ds.write(rec(k4(n - 3)))  # behind: not seen
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert seen == sorted([*range(0, 400, 10), *range(5, 390, 10), *range(1000, 1390, 10)])
    seen = []
    for r in ds.browse(k4(500), backward=True):
        n = int.from_bytes(ds.key_of(r), "big")
        seen.append(n)
        if n % 10 == 0 and n > 100:
            ds.write(rec(k4(n - 4)))  # ahead of a backward browse: seen
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen))
    assert {n - 4 for n in range(110, 400, 10)} <= set(seen)
    sound(ds.path)


def test_browse_sees_changes_made_before_its_first_step(tmp_path: Path) -> None:
    path = define(tmp_path, cis_per_ca=4)
    with ksds.open(path) as ds:
        for n in (10, 20, 30, 40):
            ds.write(rec(k4(n)))
        b = ds.browse(k4(30))
        ds.write(rec(k4(15)))  # splits the CI the browse is positioned in
        assert keys_of(ds, b) == [30, 40]
        b = ds.browse(k4(30), backward=True)
        ds.write(rec(k4(25)))
        assert keys_of(ds, b) == [30, 25, 20, 15, 10]
        b = ds.browse(k4(20), gteq=False)
        ds.erase(k4(20))
        assert keys_of(ds, b) == [25, 30, 40]
        b = ds.browse(k4(40))
        ds.write(rec(k4(50)))
        assert keys_of(ds, b) == [40, 50]
        b = ds.browse(k4(60))  # past the end: nothing yet
        ds.write(rec(k4(70)))  # ahead of it
        assert keys_of(ds, b) == [70]
    path = define(tmp_path, "empty.ksds")
    with ksds.open(path) as ds:
        b = ds.browse()  # an empty data set
        ds.write(rec(k4(1)))
        assert keys_of(ds, b) == [1]


def test_browse_positioned_before_erases_goes_on_with_what_is_left(tmp_path: Path) -> None:
    path = define(tmp_path, cis_per_ca=2)
    with ksds.open(path) as ds:
        for n in range(40):
            ds.write(rec(k4(n)))
        back = ds.browse(backward=True)  # positioned at 39, no step yet
        fwd = ds.browse(k4(20))
        for n in range(4, 40):  # empties and frees the CIs and CAs both browses are positioned in
            ds.erase(k4(n))
        assert keys_of(ds, back) == [3, 2, 1, 0]
        assert keys_of(ds, fwd) == []


def test_browse_across_a_rolled_back_batch(loaded: ksds.Dataset) -> None:
    ds = loaded
    b = ds.browse()
    assert keys_of(ds, [next(b), next(b)]) == [0, 10]
    with pytest.raises(KeyError):
        with ds.batch():
            ds.write(rec(k4(15)))
            ds.erase(k4(20))
            assert keys_of(ds, [next(b)]) == [15]  # the batch's own changes are seen while it runs
            raise KeyError("roll back")
    assert keys_of(ds, b) == list(range(20, 400, 10))


def test_batch(loaded: ksds.Dataset) -> None:
    ds = loaded
    txn = ds.stats()["TXN"]
    with ds.batch():
        ds.write(rec(k4(5)))
        with pytest.raises(ksds.DuplicateKeyError):
            ds.write(rec(k4(10)))  # a request error changes nothing; the batch goes on
        ds.erase(k4(20))
        with ds.batch():  # nested: joins the outer one
            ds.rewrite(rec(k4(30), fill=0x41))
        assert ds.read(k4(5)) == rec(k4(5))
    assert ds.stats()["TXN"] == txn + 1  # one transaction
    assert len(ds) == 40
    assert ds.read(k4(30)) == rec(k4(30), fill=0x41)
    with pytest.raises(ksds.RecordNotFoundError):
        ds.read(k4(20))
    with pytest.raises(ZeroDivisionError):
        with ds.batch():
            ds.erase(k4(30))
            ds.write(rec(k4(31)))
            raise ZeroDivisionError("roll back")
    assert len(ds) == 40 and ds.read(k4(30)) == rec(k4(30), fill=0x41) and ds.get(k4(31)) is None
    sound(ds.path)


# --- opening ----------------------------------------------------------------------------------------------------


def test_open_of_a_large_data_set_reads_only_a_few_cis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = define(tmp_path, key_length=8, record_length=40, ci_size=4096)
    with ksds.open(path) as ds:
        with ds.batch():
            for n in range(50_000):
                ds.write(n.to_bytes(8, "big") + bytes(32))
        excps = ds.stats()["EXCPS"]
        assert ds.stats()["DATA-CIS"] > 400
    reads: list[int] = []
    real_pread = os.pread
    real_read = os.read

    def pread(fd: int, n: int, offset: int) -> bytes:
        reads.append(n)
        return real_pread(fd, n, offset)

    def read(fd: int, n: int) -> bytes:
        reads.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(os, "pread", pread)
    monkeypatch.setattr(os, "read", read)
    ds = ksds.open(path)
    monkeypatch.undo()
    try:
        opened = ds.stats()
        assert opened["REC-TOTAL"] == 50_000
        assert opened["EXCPS"] - excps < 10
        assert len(reads) < 10 and sum(reads) < 10 * 4096, reads
        # a keyed read then costs at most one CI per index level and the data CI
        assert ds.read((31_337).to_bytes(8, "big")) == (31_337).to_bytes(8, "big") + bytes(32)
        assert ds.stats()["EXCPS"] - opened["EXCPS"] <= opened["LEVELS"] + 1
    finally:
        ds.close()


def test_second_update_open_is_refused(tmp_path: Path) -> None:
    path = define(tmp_path)
    ds = ksds.open(path)
    try:
        ds.write(rec(k4(1)))
        with pytest.raises(ksds.DatasetInUseError, match="in use"):
            ksds.open(path, "rw")
        with pytest.raises(ksds.DatasetInUseError):
            ksds.open(path, "r")  # SHAREOPTIONS(1): one updater or many readers
        assert ds.read(k4(1)) == rec(k4(1))  # the refused opens did not disturb the open one
        ds.write(rec(k4(2)))
    finally:
        ds.close()
    with ksds.open(path, "r") as a, ksds.open(path, "r") as b:
        assert len(a) == len(b) == 2
        with pytest.raises(ksds.DatasetInUseError):
            ksds.open(path, "rw")
    with ksds.open(path) as ds:
        assert len(ds) == 2


def test_crash_recovery_keeps_acknowledged_requests(tmp_path: Path) -> None:
    path = define(tmp_path, cis_per_ca=2)
    with ksds.open(path) as ds:
        for n in range(100):
            ds.write(rec(k4(n)))
        for n in range(0, 100, 3):
            ds.erase(k4(n))
        ds.rewrite(rec(k4(1), fill=0x41))
        cm = ds.batch()
        cm.__enter__()
        ds.write(rec(k4(1000)))  # in a batch that never ends: not acknowledged
        ds._abandon()
    report = ksds.examine(path)
    assert report.sound and report.needs_recovery
    with ksds.open(path) as ds:
        assert ds.recovery is not None
        assert [ds.key_of(r) for r in ds.browse()] == [k4(n) for n in range(100) if n % 3]
        assert ds.read(k4(1)) == rec(k4(1), fill=0x41)
        assert ds.get(k4(1000)) is None
    sound(path)
