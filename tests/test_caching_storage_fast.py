"""The ksds caching storage's fast paths keep their contracts: the counter's JSON (same bytes, other forms still read,
a missing counter rebuilt), the expiry check without an exception (its boundary), the path check of reads (at most
every PATH_CHECK_SECONDS; changes check every time), and the remembered partition digests (callers kept apart)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

import ksds
from ksds.caching import ksds_storage
from ksds.caching.ksds_storage import COUNTER, EXP_ENTRY, KsdsStorage, _json_load
from ksds.caching.model import Identity, KeyValue, StorageError


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def _counter_body(path: Path) -> bytes:
    with ksds.open(str(path), sharing="rls") as ds:
        kl = ds.key_length
        rec = ds.read(COUNTER.ljust(kl, b"\0"))
        (n,) = struct.unpack_from(">I", rec, kl)
        return rec[kl + 4 : kl + 4 + n]


def _put_counter(path: Path, body: bytes) -> None:
    with ksds.open(str(path), sharing="rls") as ds:
        kl, rl = ds.key_length, ds.record_length
        key = COUNTER.ljust(kl, b"\0")
        ds.rewrite(key + struct.pack(">I", len(body)) + body + bytes(rl - kl - 4 - len(body)))


@pytest.mark.parametrize("layout", ["native", "zowe"])
def test_the_counter_is_written_as_json_dumps_writes_it(tmp_path: Path, layout: str) -> None:
    path = tmp_path / "c.ksds"
    with KsdsStorage(path, layout=layout) as s:
        for i in range(3):
            s.create("svc", KeyValue(f"k{i}", "v"))
        s.delete("svc", "k1")
    want = json.dumps({"layout": layout, "count": 2, "seq": 3}, ensure_ascii=False, separators=(",", ":"))
    assert _counter_body(path) == want.encode()


def test_a_counter_in_another_json_form_is_read_and_written_back_in_the_usual_one(tmp_path: Path) -> None:
    path = tmp_path / "c.ksds"
    with KsdsStorage(path, size=3) as s:
        s.create("svc", KeyValue("a", "v"))
        s.create("svc", KeyValue("b", "v"))
    _put_counter(path, b' { "seq" : 2 , "count" : 2, "layout" : "native" } ')  # spaces, another order
    with KsdsStorage(path, size=3) as s:
        assert s.count() == 2
        s.create("svc", KeyValue("c", "v"))
        with pytest.raises(StorageError) as e:
            s.create("svc", KeyValue("d", "v"))
        assert e.value.status == 507
        assert s.audit() == {"entries": 3, "time_index": 3, "slots": 0, "map_items": 0, "counter": 3}
    assert _counter_body(path) == b'{"layout":"native","count":3,"seq":3}'


def test_a_counter_erased_by_hand_is_built_again(tmp_path: Path) -> None:
    path = tmp_path / "c.ksds"
    with KsdsStorage(path) as s:
        s.create("svc", KeyValue("a", "v"))
        s.create("svc", KeyValue("b", "v"))
        with ksds.open(str(path), sharing="rls") as ds:
            ds.erase(COUNTER.ljust(ds.key_length, b"\0"))
        s.create("svc", KeyValue("c", "v"))  # the counter is rebuilt (2 entries), then the create counted
        assert s.count() == 3
        assert s.audit() == {"entries": 3, "time_index": 3, "slots": 0, "map_items": 0, "counter": 3}


def test_json_load_is_json_loads() -> None:
    for text in ['{"a":1}', ' {"a":1} ', '{"a":1}\n', "[1,2]", '"x"', "1"]:
        assert _json_load(text.encode()) == json.loads(text)
    for bad in ['{"a":1} x', "", "{", '\ufeff{"a":1}', "[1]]"]:
        with pytest.raises(ValueError):
            _json_load(bad.encode())


@pytest.mark.parametrize("layout", ["native", "zowe"])
def test_expiry_boundary(tmp_path: Path, layout: str) -> None:
    """An entry expires at its expiry exactly (not a millisecond before); the purge on a change removes it then."""
    clock = Clock()
    with KsdsStorage(tmp_path / "x.ksds", layout=layout, clock=clock) as s:
        s.create("svc", KeyValue("k", "v", ttl_seconds=5))
        s.create("svc", KeyValue("keep", "v"))
        clock.t += 4.999
        s.create("svc", KeyValue("other", "v"))  # a change: the purge finds nothing expired yet
        assert s.read("svc", "k").value == "v"
        assert s.audit()["entries"] == 3
        clock.t += 0.001
        with pytest.raises(StorageError):
            s.read("svc", "k")
        s.create("svc", KeyValue("third", "v"))  # this change's purge removes k
        assert s.expired_entries == 1
        a = s.audit()
        assert a["entries"] == a["time_index"] == a["counter"] == 3
        assert "expiry_index" not in a
        assert s._expired_first(EXP_ENTRY, s.now_ms()) is None


def test_a_negative_clock_expires_nothing(tmp_path: Path) -> None:
    clock = Clock()
    with KsdsStorage(tmp_path / "x.ksds", clock=clock) as s:
        s.create("svc", KeyValue("k", "v", ttl_seconds=5))
        assert s._expired_first(EXP_ENTRY, -5) is None
        assert s._expired_first(EXP_ENTRY, s.now_ms() + 5000) is not None
        assert s._expired_first(EXP_ENTRY, s.now_ms() + 4999) is None


def _remove(tmp_path: Path, name: str) -> None:
    for p in tmp_path.iterdir():
        if p.name.startswith(name):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()


def test_reads_check_the_path_at_most_every_path_check_seconds(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Removed by hand: a read within the window may still answer from the removed data set; once the window has
    passed it notices, and opens what is at the path (a new data set, empty)."""
    monkeypatch.setattr(ksds_storage, "PATH_CHECK_SECONDS", 3600.0)
    path = tmp_path / "gone.ksds"
    with KsdsStorage(path) as s:
        s.create("svc", KeyValue("before", "v"))
        _remove(tmp_path, "gone.ksds")
        assert s.read("svc", "before").value == "v"  # within the window: the removed data set, as it was
        monkeypatch.setattr(ksds_storage, "PATH_CHECK_SECONDS", 0.0)
        with pytest.raises(StorageError) as e:
            s.read("svc", "before")  # noticed: the data set at the path now is a new one
        assert e.value.status == 404
        assert s.count() == 0


def test_a_change_checks_the_path_whatever_the_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ksds_storage, "PATH_CHECK_SECONDS", 3600.0)
    path = tmp_path / "gone.ksds"
    with KsdsStorage(path) as s:
        s.create("svc", KeyValue("before", "v"))
        s.read("svc", "before")
        _remove(tmp_path, "gone.ksds")
        s.store_map_item("svc", "m", KeyValue("i", "v"))  # a change: noticed at once, into the new data set
        s.create("svc", KeyValue("after", "v"))
        with KsdsStorage(path) as s2:
            assert s2.read("svc", "after").value == "v"
            assert s2.get_all_map_items("svc", "m") == {"i": "v"}
            assert s2.count() == 1


def test_remembered_partitions_keep_callers_apart(tmp_path: Path) -> None:
    """A plain service id, a DN alone, a DN with a service id and a service id that spells that DN's string are
    four callers, also once their digests are remembered and after the memo was emptied (more callers than it
    keeps); a service id as an Identity without a DN is the plain service id."""
    callers = ["CN=x", Identity("CN=x", None), Identity("CN=x", "gw"), "CN=x, SERVICE=gw"]
    same = {0: Identity(None, "CN=x"), 3: Identity(None, "CN=x, SERVICE=gw")}
    with KsdsStorage(tmp_path / "p.ksds", size=0) as s:
        for n, who in enumerate(callers):
            s.create(who, KeyValue("k", f"v{n}"))
            s.store_map_item(who, "m", KeyValue("i", f"v{n}"))
        for _ in range(2):
            for n, who in [*enumerate(callers), *same.items()]:
                assert s.read(who, "k").value == f"v{n}"
                assert s.get_all_map_items(who, "m") == {"i": f"v{n}"}
                assert set(s.read_for_service(who)) == {"k"}
            for i in range(5000):  # more callers than the memo keeps: it is emptied and filled again
                s._partition_digest(f"svc{i}", 16)
            assert len(s._partitions) <= 4096
        with pytest.raises(StorageError) as e:
            s.create(same[0], KeyValue("k", "again"))
        assert e.value.status == 409
        assert s.count() == len(callers)
