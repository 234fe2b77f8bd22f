"""What a sqlite3, LMDB or dict user reaches for: ``ds[key]``, ``in``, ``keys()``/``items()``, ``put``, browses that
stop, ``define(exist_ok=True)``, and keys shown as ``X'...'`` in messages. (The model test drives these requests
too, against its model; these are the focused cases.)"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

import ksds


def make(tmp_path: Path, **kw: object) -> str:
    path = str(tmp_path / "a.ksds")
    ksds.define(path, key_length=4, record_length=12, **kw)  # type: ignore[arg-type]
    return path


def rec(key: bytes, fill: bytes = b".") -> bytes:
    return key + fill * 8


def test_dict_like_access(tmp_path: Path) -> None:
    with ksds.open(make(tmp_path)) as ds:
        for k in (b"BBBB", b"AAAA", b"CCCC"):
            ds.write(rec(k))
        assert ds[b"AAAA"] == rec(b"AAAA")
        with pytest.raises(KeyError):
            ds[b"ZZZZ"]
        with pytest.raises(ksds.RecordNotFoundError):
            ds[b"ZZZZ"]
        assert b"BBBB" in ds and b"ZZZZ" not in ds
        keys = ds.keys()
        assert next(keys) == b"AAAA"  # lazy: a browse under it
        assert list(keys) == [b"BBBB", b"CCCC"]
        assert list(ds.items()) == [(k, rec(k)) for k in (b"AAAA", b"BBBB", b"CCCC")]


def test_put_is_an_upsert(tmp_path: Path) -> None:
    with ksds.open(make(tmp_path)) as ds:
        assert ds.put(rec(b"AAAA")) is True
        assert ds.put(rec(b"AAAA", b"x")) is False
        assert ds[b"AAAA"] == rec(b"AAAA", b"x")
        st = ds.stats()
        assert (st["REC-TOTAL"], st["REC-UPDATED"]) == (1, 1)
        with pytest.raises(ksds.RecordLengthError):
            ds.put(b"short")


def _put_many(path: str, n: int, tag: bytes) -> None:
    with ksds.open(path, "rw", sharing="rls") as ds:
        for i in range(n):
            ds.put(b"%04d" % (i % 50) + tag * 8)


def test_put_under_rls_from_two_processes(tmp_path: Path) -> None:
    path = make(tmp_path)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_put_many, args=(path, 300, t)) for t in (b"a", b"b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with ksds.open(path) as ds:
        assert len(ds) == 50
        assert all(r[4:] in (b"a" * 8, b"b" * 8) for r in ds)
    assert ksds.examine(path).sound


def test_browse_stop_and_prefix_only(tmp_path: Path) -> None:
    with ksds.open(make(tmp_path, ci_size=512)) as ds:
        with ds.batch():
            for a in b"ABC":
                for n in range(100):
                    ds.write(rec(bytes([a]) + b"%03d" % n))
        keys = [k for k, _ in ds.items()]
        assert [ds.key_of(r) for r in ds.browse(b"A050", stop=b"B010")] == [k for k in keys if b"A050" <= k < b"B010"]
        back = [ds.key_of(r) for r in ds.browse(b"B010", backward=True, stop=b"A050")]
        assert back == [k for k in reversed(keys) if b"A050" < k <= b"B010"]
        assert [ds.key_of(r) for r in ds.browse(b"B", generic=True, prefix_only=True)] == keys[100:200]
        assert [ds.key_of(r) for r in ds.browse(b"B", generic=True, prefix_only=True, backward=True)] == keys[
            199:99:-1
        ]
        assert list(ds.browse(stop=b"A000")) == []
        with pytest.raises(ksds.InvalidRequestError):
            ds.browse(b"B", prefix_only=True)  # not generic
        with pytest.raises(ksds.InvalidRequestError):
            ds.browse(stop=b"AB")  # a stop key is a whole key


def test_prefix_only_at_the_ends_of_the_key_space(tmp_path: Path) -> None:
    with ksds.open(make(tmp_path)) as ds:
        for k in (b"\x00\x00\x00\x00", b"\x00\x00\x00\x01", b"\xff\xff\xff\xfe", b"\xff\xff\xff\xff"):
            ds.write(rec(k))
        assert len(list(ds.browse(b"\xff\xff", generic=True, prefix_only=True))) == 2
        assert len(list(ds.browse(b"\x00", generic=True, prefix_only=True, backward=True))) == 2


def test_define_exist_ok(tmp_path: Path) -> None:
    path = str(tmp_path / "e.ksds")
    d1 = ksds.define(path, key_length=4, record_length=12, exist_ok=True)
    with ksds.open(path) as ds:
        ds.write(rec(b"AAAA"))
    assert ksds.define(path, key_length=4, record_length=12, exist_ok=True) == d1
    with ksds.open(path) as ds:
        assert len(ds) == 1  # left as it was
    with pytest.raises(ksds.DatasetExistsError, match=r"record_length is 12, not 13"):
        ksds.define(path, key_length=4, record_length=13, exist_ok=True)
    with pytest.raises(ksds.DatasetExistsError, match="freespace"):
        ksds.define(path, key_length=4, record_length=12, freespace=(10, 10), exist_ok=True)
    with pytest.raises(ksds.DatasetExistsError):
        ksds.define(path, key_length=4, record_length=12)


def test_keys_shown_as_x_and_text(tmp_path: Path) -> None:
    with ksds.open(make(tmp_path)) as ds:
        with pytest.raises(ksds.RecordNotFoundError, match=r"X'41424344' \('ABCD'\)"):
            ds.read(b"ABCD")
        with pytest.raises(ksds.RecordNotFoundError) as e:
            ds.read(b"\x00\x01\xc1\xff")
        assert "X'0001C1FF'" in str(e.value) and "(" not in str(e.value).split("X'0001C1FF'")[1]
        ds.write(rec(b"ABCD"))
        with pytest.raises(ksds.DuplicateKeyError, match=r"X'41424344' \('ABCD'\)"):
            ds.write(rec(b"ABCD"))
    assert ksds.errors.show_key(b"") == "X''"
