"""Alternate indexes: definition and its errors, building over existing records, paths, UPGRADE and NOUPGRADE,
unique keys, space given back, the file format (version 2 until a data set has an AIX), processes sharing a data
set with an AIX, and the command's verbs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import ksds
from ksds.format import FORMAT_VERSION, FORMAT_VERSION_AIX

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rec(key: int, name: bytes, code: int) -> bytes:
    """key (8) + name (12) + code (6) + filler: 40 bytes."""
    return b"%08d" % key + name.ljust(12) + b"%06d" % code + b"." * 14


def make(tmp_path, n: int = 0, **kw) -> str:
    path = str(tmp_path / "cust.ksds")
    ksds.define(path, key_length=8, record_length=40, ci_size=kw.pop("ci_size", 1024), **kw)
    if n:
        with ksds.open(path, "rw") as ds, ds.batch():
            for i in range(n):
                ds.write(rec(i, b"NAME%03d" % (i % 50), i))
    return path


def version(path: str) -> int:
    with open(path, "rb") as f:
        return int.from_bytes(f.read(10)[8:10], "big")


def test_define_builds_over_existing_records_and_paths_read_them(tmp_path) -> None:
    path = make(tmp_path, 2000)
    info = ksds.define_aix(path, "BYNAME", key_length=12, key_offset=8)
    assert info["records"] == 2000 and info["current"] and info["levels"] >= 2
    ksds.define_aix(path, "BYCODE", key_length=6, key_offset=20, unique=True)
    with ksds.open(path, "r") as ds:
        assert set(ds.aixes()) == {"BYNAME", "BYCODE"}
        p = ds.aix("BYNAME")
        got = p.read(b"NAME007".ljust(12))
        assert got == rec(7, b"NAME007", 7)  # the lowest prime key of the 40 with that name
        assert p.status == "02"
        assert p.count(b"NAME007".ljust(12)) == 40
        assert [r[:8] for r in p.browse(b"NAME007".ljust(12), gteq=False)][:40] == [b"%08d" % (7 + 50 * i)
                                                                                    for i in range(40)]
        assert p.read(b"NAME04", generic=True)[8:14] == b"NAME04"
        assert p.read(b"NAME0485", gteq=True, generic=True)[8:15] == b"NAME049"
        every = list(p.browse())
        assert len(every) == 2000
        assert every == sorted(every, key=lambda r: (r[8:20], r[:8]))
        assert list(p.browse(backward=True)) == every[::-1]
        q = ds.aix("BYCODE")
        assert q.read(b"001234") == rec(1234, b"NAME%03d" % (1234 % 50), 1234)
        assert q.status == "00"
        with pytest.raises(ksds.RecordNotFoundError, match="BYCODE"):
            q.read(b"999999")
    assert version(path) == FORMAT_VERSION_AIX
    assert ksds.examine(path).sound


def test_upgrade_keeps_every_aix_in_step_and_unique_refuses_duplicates(tmp_path) -> None:
    path = make(tmp_path, 100)
    ksds.define_aix(path, "BYNAME", key_length=12, key_offset=8)
    ksds.define_aix(path, "BYCODE", key_length=6, key_offset=20, unique=True)
    with ksds.open(path, "rw") as ds:
        with pytest.raises(ksds.DuplicateKeyError, match="BYCODE"):
            ds.write(rec(500, b"NEW", 5))  # code 5 is taken
        assert ds.get(b"%08d" % 500) is None
        with pytest.raises(ksds.DuplicateKeyError, match="BYCODE"):
            ds.rewrite(rec(1, b"NAME001", 2))
        assert ds.read(b"%08d" % 1) == rec(1, b"NAME001", 1)
        ds.rewrite(rec(1, b"RENAMED", 1001))
        assert ds.aix("BYNAME").read(b"RENAMED".ljust(12)) == rec(1, b"RENAMED", 1001)
        assert ds.aix("BYNAME").count(b"NAME001".ljust(12)) == 1
        assert ds.aix("BYCODE").read(b"001001")[:8] == b"00000001"
        with pytest.raises(ksds.RecordNotFoundError):
            ds.aix("BYCODE").read(b"000001")
        ds.erase(b"%08d" % 51)
        assert ds.aix("BYNAME").count(b"NAME001".ljust(12)) == 0
        with ds.batch():
            ds.write(rec(600, b"BATCH", 600))
            with pytest.raises(ksds.DuplicateKeyError):
                ds.write(rec(601, b"BATCH", 600))  # a request error inside a batch changes nothing; it goes on
            ds.write(rec(602, b"BATCH", 602))
        assert ds.aix("BYNAME").count(b"BATCH".ljust(12)) == 2
        info = ds.aixes()
        assert info["BYNAME"]["records"] == info["BYCODE"]["records"] == len(ds) == 101
    report = ksds.examine(path)
    assert report.sound, [str(f) for f in report.findings]


def test_noupgrade_goes_stale_until_bldindex(tmp_path) -> None:
    path = make(tmp_path, 30)
    ksds.define_aix(path, "LAZY", key_length=12, key_offset=8, upgrade=False)
    with ksds.open(path, "rw") as ds:
        assert ds.aixes()["LAZY"]["current"]
        ds.rewrite(rec(3, b"MOVED", 3))
        ds.write(rec(99, b"NAME003", 99))
        assert not ds.aixes()["LAZY"]["current"]
        p = ds.aix("LAZY")
        # what the build saw, less what no longer matches: record 3 left NAME003, record 99 is not indexed yet
        assert p.count(b"NAME003".ljust(12)) == 0
        with pytest.raises(ksds.RecordNotFoundError):
            p.read(b"NAME003".ljust(12))
        with pytest.raises(ksds.RecordNotFoundError):
            next(iter(p.browse(b"NAME003".ljust(12), gteq=False)))
        with pytest.raises(ksds.RecordNotFoundError):
            p.read(b"MOVED".ljust(12))
    info = ksds.build_aix(path, "LAZY")
    assert info["current"] and info["records"] == 31
    with ksds.open(path, "r") as ds:
        p = ds.aix("LAZY")
        assert p.read(b"MOVED".ljust(12))[:8] == b"00000003"
        assert p.read(b"NAME003".ljust(12))[:8] == b"00000099"
    assert ksds.examine(path).sound


def test_define_errors_name_the_value_and_change_nothing(tmp_path) -> None:
    path = make(tmp_path, 10)
    with pytest.raises(ksds.DefinitionError, match="name"):
        ksds.define_aix(path, "bad name!", key_length=4, key_offset=8)
    with pytest.raises(ksds.DefinitionError, match="record_length 40"):
        ksds.define_aix(path, "X", key_length=12, key_offset=30)
    with pytest.raises(ksds.DefinitionError, match="key_length"):
        ksds.define_aix(path, "X", key_length=0, key_offset=8)
    ksds.define_aix(path, "X", key_length=4, key_offset=8)
    with pytest.raises(ksds.DefinitionError, match="exists"):
        ksds.define_aix(path, "X", key_length=4, key_offset=8)
    with ksds.open(path, "rw") as ds:
        ds.write(rec(50, b"NAME001", 1))  # code 1 twice
    with pytest.raises(ksds.DuplicateKeyError, match="000001"):
        ksds.define_aix(path, "U", key_length=6, key_offset=20, unique=True)
    with ksds.open(path, "r") as ds:
        assert set(ds.aixes()) == {"X"}
        with pytest.raises(ksds.InvalidRequestError, match="no alternate index named 'U'"):
            ds.aix("U")
        with pytest.raises(ksds.InvalidRequestError, match="4 bytes"):
            ds.aix("X").read(b"NAME")  # fine
            ds.aix("X").read(b"NAM")
    with pytest.raises(ksds.InvalidRequestError, match="no alternate index"):
        ksds.delete_aix(path, "U")
    assert ksds.examine(path).sound


def test_delete_gives_the_space_back_and_the_format_goes_back_to_version_2(tmp_path) -> None:
    path = make(tmp_path, 3000)
    size0 = os.path.getsize(path)
    assert version(path) == FORMAT_VERSION
    ksds.define_aix(path, "BYNAME", key_length=12, key_offset=8)
    size1 = os.path.getsize(path)
    assert size1 > size0
    ksds.delete_aix(path, "BYNAME")
    assert version(path) == FORMAT_VERSION
    ksds.define_aix(path, "BYNAME", key_length=12, key_offset=8)  # reuses the freed CAs and index CIs
    assert os.path.getsize(path) == size1
    with ksds.open(path, "r") as ds:
        assert ds.aixes()["BYNAME"]["records"] == 3000
    report = ksds.examine(path)
    assert report.sound, [str(f) for f in report.findings]


def test_a_crash_between_base_and_aix_is_impossible(tmp_path) -> None:
    """Every request is one transaction with its AIX changes: after a crash the two agree (EXAMINE checks)."""
    path = make(tmp_path, 200)
    ksds.define_aix(path, "BYNAME", key_length=12, key_offset=8)
    ds = ksds.open(path, "rw")
    for i in range(200, 400):
        ds.write(rec(i, b"CRASH%02d" % (i % 7), i))
    batch = ds.batch()
    batch.__enter__()  # kept: a context manager collected would end the batch
    for i in range(0, 100):
        ds.rewrite(rec(i, b"INBATCH", i))
    ds._abandon()  # a crash with a batch open: none of it survives, in the base or the AIX
    with pytest.raises(ksds.DatasetClosedError):
        batch.__exit__(None, None, None)  # the batch's generator ended in this thread
    report = ksds.examine(path)
    assert report.sound, [str(f) for f in report.findings]
    with ksds.open(path, "r") as ds:
        assert ds.recovery is not None
        assert ds.aix("BYNAME").count(b"INBATCH".ljust(12)) == 0
        assert ds.aix("BYNAME").count(b"CRASH03".ljust(12)) == len([i for i in range(200, 400) if i % 7 == 3])
        assert ds.aixes()["BYNAME"]["records"] == 400


WRITER = r"""
import sys, ksds
path, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with ksds.open(path, "rw", sharing="rls") as ds:
    for i in range(first, first + n):
        ds.write(b"%08d" % i + b"PROC".ljust(12) + b"%06d" % i + b"." * 14)
"""


def test_processes_share_a_data_set_and_its_aixes(tmp_path) -> None:
    path = make(tmp_path, 0, share_options=(3, 3))
    ksds.define_aix(path, "BYNAME", key_length=12, key_offset=8)
    ksds.define_aix(path, "BYCODE", key_length=6, key_offset=20, unique=True)
    env = dict(os.environ, PYTHONPATH=ROOT)
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, path, str(1000 * k), "300"], env=env) for k in range(2)
    ]
    with ksds.open(path, "r", sharing="rls") as ds:
        seen = 0
        while any(p.poll() is None for p in procs):
            n = ds.aix("BYNAME").count(b"PROC".ljust(12))
            assert n >= seen  # a reader never sees the AIX go backwards
            seen = n
        assert all(p.wait() == 0 for p in procs)
        assert ds.aix("BYNAME").count(b"PROC".ljust(12)) == 600
        assert ds.aix("BYCODE").read(b"001299")[:8] == b"00001299"
    report = ksds.examine(path)
    assert report.sound, [str(f) for f in report.findings]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ksds", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)


def test_the_verbs(tmp_path) -> None:
    path = make(tmp_path, 120)
    r = cli("define-aix", path, "--name", "BYNAME", "--keys", "12", "8")
    assert r.returncode == 0, r.stderr
    assert "120 records" in r.stdout
    r = cli("define-aix", path, "--name", "BYCODE", "--keys", "6", "20", "--unique", "--noupgrade")
    assert r.returncode == 0, r.stderr
    r = cli("define-aix", path, "--name", "BYNAME", "--keys", "12", "8")
    assert r.returncode == 12 and "exists" in r.stderr and "Traceback" not in r.stderr
    r = cli("listcat", path)
    assert r.returncode == 0 and "BYNAME" in r.stdout and "BYCODE" in r.stdout, r.stdout
    r = cli("print", path, "--path", "BYNAME", "--count", "3", "--character")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("NAME000") == 3, r.stdout
    out = str(tmp_path / "by-name.jsonl")
    r = cli("repro", path, out, "--path", "BYNAME", "--fromkey", "NAME001", "--count", "4")
    assert r.returncode == 0, r.stderr
    with open(out) as f:
        keys = [bytes.fromhex(json.loads(line)["key"]) for line in f]
    assert keys == [b"%08d" % i for i in (1, 51, 101, 2)], keys  # NAME001's records in prime-key order, then NAME002
    r = cli("repro", path, str(tmp_path / "none.jsonl"), "--path", "NOPE")
    assert r.returncode == 12 and "no alternate index named 'NOPE'" in r.stderr
    r = cli("map", path)
    assert r.returncode == 0 and "alternate index BYNAME" in r.stdout and "BYNAME CA 0" in r.stdout, r.stdout
    r = cli("bldindex", path, "--name", "BYCODE")
    assert r.returncode == 0 and "120 records" in r.stdout, r.stderr
    r = cli("examine", path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("delete-aix", path, "--name", "BYCODE")
    assert r.returncode == 0, r.stderr
    r = cli("delete-aix", path, "--name", "BYCODE")
    assert r.returncode == 12 and "no alternate index" in r.stderr


def test_examine_finds_an_aix_out_of_step(tmp_path) -> None:
    """EXAMINE compares every current UPGRADE alternate index with its base: a record taken out of the AIX behind
    the engine's back (through the tree module) is reported, naming the AIX and the record."""
    from ksds import btree

    path = make(tmp_path, 300)
    ksds.define_aix(path, "BYNAME", key_length=12, key_offset=8)
    assert ksds.examine(path).sound
    with ksds.open(path, "rw") as ds:
        p = ds._pager
        a = p.state.aixes[0]
        with ds.batch():
            tree = p.tree_of(a)
            btree.delete(tree, b"NAME007".ljust(12) + b"%08d" % 57)
            a.rec_total -= 1
            p.state_dirty = True
    report = ksds.examine(path)
    assert not report.sound
    text = "\n".join(str(f) for f in report.findings)
    assert "BYNAME is out of step" in text and "1 base records not in it" in text, text
    assert ksds.build_aix(path, "BYNAME")["records"] == 300
    assert ksds.examine(path).sound


def test_recovery_after_a_tree_id_is_reused_with_another_layout(tmp_path) -> None:
    """DELETE AIX, then DEFINE AIX of another key length (it takes the freed tree id), then changes, then a crash
    before any checkpoint: recovery applies each record operation of the log with the layout the catalog gave
    that tree id at that point of the log."""
    path = make(tmp_path, 50)
    ksds.define_aix(path, "OLD", key_length=12, key_offset=8)
    ds = ksds.open(path, "rw")
    p = ds._pager
    p.checkpoint()
    ds._delete_aix("OLD")
    ds._define_aix("NEW", 6, 20, True, True, (0, 0), None)
    assert p.state.aixes[0].tid == 1 and p.state.aixes[0].name == "NEW"
    for i in range(50, 120):
        ds.write(rec(i, b"AFTER", 1000 + i))
    for i in range(0, 20):
        ds.rewrite(rec(i, b"CHANGED", 5000 + i))  # record operations on the NEW tree's CIs
    ds._abandon()
    report = ksds.examine(path)
    assert report.sound, [str(f) for f in report.findings]
    with ksds.open(path, "r") as ds:
        assert ds.recovery is not None
        assert set(ds.aixes()) == {"NEW"}
        assert ds.aix("NEW").read(b"005003")[:8] == b"00000003"
        assert ds.aix("NEW").read(b"001100")[:8] == b"00000100"
        assert ds.aixes()["NEW"]["records"] == 120


def test_count_and_browse_of_a_key_many_cis_long(tmp_path) -> None:
    """One alternate key carried by 3,000 records: its AIX records span many CIs (and CAs); count and browses
    cross them, both ways, in prime-key order."""
    path = str(tmp_path / "many.ksds")
    ksds.define(path, key_length=8, record_length=40, ci_size=512, cis_per_ca=4)
    with ksds.open(path, "rw") as ds, ds.batch():
        for i in range(4000):
            ds.write(rec(i, b"SAME" if i % 4 else b"OTHER%d" % (i % 3), i))
    ksds.define_aix(path, "BYNAME", key_length=12, key_offset=8)
    with ksds.open(path, "rw") as ds:
        p = ds.aix("BYNAME")
        same = b"SAME".ljust(12)
        assert p.count(same) == 3000
        got = [r[:8] for r in p.browse(same, gteq=False)]
        assert got[:3000] == [b"%08d" % i for i in range(4000) if i % 4]
        back = [r[:8] for r in p.browse(same, backward=True)]
        assert back[:3000] == got[:3000][::-1]
        assert p.count(b"OTHER1".ljust(12)) == len([i for i in range(4000) if i % 4 == 0 and i % 3 == 1])
        assert p.count(b"NONE".ljust(12)) == 0
        for i in range(1, 4000, 8):
            ds.erase(b"%08d" % i)
        assert p.count(same) == 2500
        assert ds.aixes()["BYNAME"]["levels"] >= 2
    assert ksds.examine(path).sound
