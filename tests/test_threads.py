"""Threads sharing one open, the delete/open race, stale logs, and bad arguments to the Python API.

Each test here failed on the engine before these defects were fixed (issue 10, items 1, 3 and 9): threads
sharing one ``Dataset`` damaged the file; an open waiting for the latch while ``ksds.delete`` removed the data
set went on writing to the removed file; ``define`` removed a log that someone had just made; ``define(None)``
made a file named ``None``; ``list()`` of a browse of a closed data set returned ``[]``.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time
from pathlib import Path

import pytest

import ksds
import ksds.pager
from ksds.locks import OpenLocks

KEY = 8
RECLEN = 64
THREADS = 4
REQUESTS = 2000


def key_of(n: int, tid: int) -> bytes:
    # the threads' keys interleave in key order, so they share CIs and every split moves other threads' records
    return b"%06d%02d" % (n, tid)


def record(key: bytes, version: int) -> bytes:
    return key + b"%08d" % version + bytes(RECLEN - KEY - 8)


def worker(ds: ksds.Dataset, tid: int, seed: int, model: dict[bytes, bytes], errors: list[BaseException]) -> None:
    """2,000 mixed requests on this thread's own keys, checked against its own model as it goes."""
    rng = random.Random(seed)
    try:
        n = 0
        while n < REQUESTS:
            op = rng.random()
            k = key_of(rng.randrange(600), tid)
            if op < 0.35:
                r = record(k, rng.randrange(10**8))
                if k in model:
                    with pytest.raises(ksds.DuplicateKeyError):
                        ds.write(r)
                else:
                    ds.write(r)
                    model[k] = r
            elif op < 0.5:
                if k in model:
                    r = record(k, rng.randrange(10**8))
                    ds.rewrite(r)
                    model[k] = r
                else:
                    with pytest.raises(ksds.RecordNotFoundError):
                        ds.rewrite(record(k, 0))
            elif op < 0.65:
                if k in model:
                    ds.erase(k)
                    del model[k]
                else:
                    with pytest.raises(ksds.RecordNotFoundError):
                        ds.erase(k)
            elif op < 0.85:
                assert ds.get(k) == model.get(k)
            elif op < 0.93:
                with ds.batch():  # a batch of this thread: the other threads wait for it
                    for _ in range(5):
                        kk = key_of(rng.randrange(600), tid)
                        if kk not in model:
                            r = record(kk, 1)
                            ds.write(r)
                            model[kk] = r
                n += 4
            else:
                # a browse while the other threads write: keys strictly increasing, and exactly this thread's
                # records (nobody else changes them while this thread browses)
                lo = key_of(rng.randrange(600), 0)
                seen = []
                prev = b""
                for r in ds.browse(lo):
                    kk = r[:KEY]
                    assert kk > prev
                    prev = kk
                    if kk.endswith(b"%02d" % tid):
                        seen.append(r)
                    if len(seen) > 40:
                        break
                want = sorted(k2 for k2 in model if k2 >= lo)[: len(seen)]
                assert [r[:KEY] for r in seen] == want
                assert all(model[r[:KEY]] == r for r in seen)
            n += 1
    except BaseException as e:  # noqa: BLE001 - reported by the test
        errors.append(e)


@pytest.mark.parametrize(
    "seed,ci_size,cis_per_ca,share",
    [(1, 512, 4, (1, 3)), (2, 1024, 3, (1, 3)), (3, 512, 2, (3, 3))],
)
def test_threads_share_one_open(
    tmp_path: Path, seed: int, ci_size: int, cis_per_ca: int, share: tuple[int, int]
) -> None:
    path = str(tmp_path / "t.ksds")
    ksds.define(path, key_length=KEY, record_length=RECLEN, ci_size=ci_size, cis_per_ca=cis_per_ca,
                share_options=share)
    models: list[dict[bytes, bytes]] = [{} for _ in range(THREADS)]
    errors: list[BaseException] = []
    with ksds.open(path, "rw") as ds:
        threads = [
            threading.Thread(target=worker, args=(ds, t, seed * 100 + t, models[t], errors)) for t in range(THREADS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        want = dict(kv for m in models for kv in m.items())
        assert list(ds) == [want[k] for k in sorted(want)]
        assert len(ds) == len(want)
        st = ds.stats()
        assert st["SPLITS-CI"] > 0 and st["SPLITS-CA"] > 0  # the threads really did split CIs and CAs
    report = ksds.examine(path)
    assert report.sound, report.findings
    with ksds.open(path, "r") as ds:
        assert list(ds) == [want[k] for k in sorted(want)]


def test_a_batch_holds_the_open_for_its_thread(tmp_path: Path) -> None:
    path = str(tmp_path / "t.ksds")
    ksds.define(path, key_length=KEY, record_length=RECLEN)
    with ksds.open(path, "rw", lock_timeout=0.3) as ds:
        inside = threading.Event()
        leave = threading.Event()

        def batch() -> None:
            with ds.batch():
                ds.write(record(key_of(1, 0), 1))
                inside.set()
                leave.wait(10)

        t = threading.Thread(target=batch)
        t.start()
        assert inside.wait(10)
        t0 = time.monotonic()
        with pytest.raises(ksds.LatchTimeoutError, match="another thread"):
            ds.read(key_of(1, 0))  # the batch is not over: its write is not acknowledged yet
        assert 0.25 < time.monotonic() - t0 < 3
        leave.set()
        t.join()
        assert ds.read(key_of(1, 0)) == record(key_of(1, 0), 1)


def test_browse_of_a_closed_data_set_always_raises(tmp_path: Path) -> None:
    path = str(tmp_path / "t.ksds")
    ksds.define(path, key_length=KEY, record_length=RECLEN)
    ds = ksds.open(path, "rw")
    for n in range(50):
        ds.write(record(key_of(n, 0), n))
    b = ds.browse()
    assert next(b)[:KEY] == key_of(0, 0)
    ds.close()
    with pytest.raises(ksds.DatasetClosedError):
        next(b)
    with pytest.raises(ksds.DatasetClosedError):
        list(b)  # not [] after the step that found it closed
    with pytest.raises(ksds.DatasetClosedError):
        next(b)
    b.close()  # ENDBR: ended on purpose
    assert list(b) == []


# --- paths and other arguments ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, 12345, 1.5, ["x"], object()])
def test_paths_that_are_not_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: object) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ksds.InvalidRequestError, match="path must be"):
        ksds.define(bad, key_length=4, record_length=10)  # type: ignore[arg-type]
    with pytest.raises(ksds.InvalidRequestError, match="path must be"):
        ksds.open(bad)  # type: ignore[arg-type]
    with pytest.raises(ksds.InvalidRequestError, match="path must be"):
        ksds.delete(bad)  # type: ignore[arg-type]
    with pytest.raises(ksds.InvalidRequestError, match="path must be"):
        ksds.examine(bad)  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []  # no file named "None" or "12345"


def test_paths_as_python_open_takes_them(tmp_path: Path) -> None:
    p = tmp_path / "p.ksds"
    ksds.define(p, key_length=4, record_length=10)  # os.PathLike
    with ksds.open(os.fsencode(str(p)), "rw") as ds:  # bytes
        assert ds.path == str(p)
        ds.write(b"abcd" + bytes(6))
    with ksds.open(str(p)) as ds:
        assert len(ds) == 1
    assert sorted(os.listdir(tmp_path)) == ["p.ksds"]
    assert ksds.delete(os.fsencode(str(p))) == [str(p)]
    for bad in ("", str(tmp_path / "a\0b"), os.fsencode(str(tmp_path / "a\0b"))):
        with pytest.raises(ksds.InvalidRequestError):
            ksds.define(bad, key_length=4, record_length=10)
        with pytest.raises(ksds.InvalidRequestError):
            ksds.open(bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, "5", True])
def test_lock_timeout_must_be_a_finite_number(tmp_path: Path, bad: object) -> None:
    p = str(tmp_path / "p.ksds")
    ksds.define(p, key_length=4, record_length=10)
    with pytest.raises(ksds.InvalidRequestError, match="lock_timeout"):
        ksds.open(p, lock_timeout=bad)  # type: ignore[arg-type]


# --- delete racing an open; define and a live log -------------------------------------------------------------------


def test_open_waiting_while_the_data_set_is_deleted(tmp_path: Path) -> None:
    """An open that waits for the latch while the data set is deleted fails; nothing goes to the removed file."""
    path = str(tmp_path / "t.ksds")
    ksds.define(path, key_length=KEY, record_length=RECLEN)
    fd = os.open(path, os.O_RDWR)
    latch = OpenLocks(fd, path)
    latch.latch(True)  # what ksds.delete holds while it removes the files
    result: list[object] = []

    def opener() -> None:
        try:
            with ksds.open(path, "rw", durability="power") as ds:
                ds.write(record(key_of(1, 0), 1))
                ds.sync()
                result.append("acknowledged")
        except ksds.KsdsError as e:
            result.append(e)

    t = threading.Thread(target=opener)
    t.start()
    time.sleep(0.3)  # the opener now waits for the latch, holding a descriptor of the file
    os.unlink(path)
    latch.unlatch()
    os.close(fd)
    t.join(10)
    assert len(result) == 1 and isinstance(result[0], ksds.DatasetNotFoundError), result
    assert not os.path.exists(path) and not os.path.exists(path + "-wal")


def test_open_follows_a_data_set_deleted_and_defined_again(tmp_path: Path) -> None:
    path = str(tmp_path / "t.ksds")
    ksds.define(path, key_length=KEY, record_length=RECLEN)
    fd = os.open(path, os.O_RDWR)
    latch = OpenLocks(fd, path)
    latch.latch(True)
    result: list[object] = []

    def opener() -> None:
        with ksds.open(path, "rw") as ds:
            result.append(ds.definition.record_length)

    t = threading.Thread(target=opener)
    t.start()
    time.sleep(0.3)
    os.unlink(path)
    ksds.define(path, key_length=KEY, record_length=RECLEN * 2)  # a new data set at the same name
    latch.unlatch()
    os.close(fd)
    t.join(10)
    assert result == [RECLEN * 2]  # it opened the data set that is there now, not the removed one


def _delete_and_define(path: str, stop: float) -> int:
    n = 0
    while time.monotonic() < stop:
        try:
            ksds.delete(path)
        except (ksds.DatasetInUseError, ksds.DatasetNotFoundError):
            pass
        try:
            ksds.define(path, key_length=KEY, record_length=RECLEN)
            n += 1
        except ksds.DatasetExistsError:
            pass
    return n


def test_delete_and_open_race_in_a_loop(tmp_path: Path) -> None:
    """Another process deletes and defines the data set again and again; every write this process is told is done
    (power mode, synced) is in a data set that is at the path, with its log, while the open lasts."""
    path = str(tmp_path / "t.ksds")
    ksds.define(path, key_length=KEY, record_length=RECLEN)
    stop = time.monotonic() + 4
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        other = pool.apply_async(_delete_and_define, (path, stop))
        acknowledged = 0
        while time.monotonic() < stop:
            try:
                ds = ksds.open(path, "rw", durability="power")
            except (ksds.DatasetNotFoundError, ksds.DatasetInUseError, ksds.NotADatasetError):
                continue
            try:
                k = key_of(acknowledged % 1000, 1)
                ds.write(record(k, acknowledged))
                ds.sync()
                acknowledged += 1
                # acknowledged: the file at the path is ours, and so is the log that holds the write
                p = ds._pager
                assert p is not None
                assert ksds.pager.same_file(p.fd, path)
                assert ksds.pager.same_file(p.journal.fd, path + "-wal")
                assert ds.read(k) == record(k, acknowledged - 1)
            except ksds.DuplicateKeyError:
                pass
            finally:
                ds.close()
        defined = other.get(30)
    assert acknowledged > 10 and defined > 10  # the race really ran


def test_define_never_removes_a_live_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process opens the new data set (making its log) the moment define links it into place."""
    path = str(tmp_path / "t.ksds")
    # a log left by an earlier data set of this name (not closed, then its file removed by hand)
    ksds.define(path, key_length=KEY, record_length=RECLEN)
    old = ksds.open(path, "rw")
    old.write(record(key_of(9, 9), 9))
    old._abandon()
    os.unlink(path)
    assert os.path.exists(path + "-wal")

    real_link = os.link
    opened: list[ksds.Dataset] = []

    def link_then_open(src: str, dst: str) -> None:
        real_link(src, dst)
        if dst == path and not opened:
            ds = ksds.open(path, "rw")  # the stale log is replaced by this open's own log
            ds.write(record(key_of(1, 1), 1))
            opened.append(ds)

    monkeypatch.setattr(os, "link", link_then_open)
    ksds.define(path, key_length=KEY, record_length=RECLEN)
    monkeypatch.setattr(os, "link", real_link)
    ds = opened[0]
    p = ds._pager
    assert p is not None
    assert ksds.pager.same_file(p.journal.fd, path + "-wal")  # the opener's log is still the one at the path
    ds.write(record(key_of(2, 1), 2))
    ds._abandon()  # a crash: only the log has the two writes
    with ksds.open(path, "rw") as ds2:
        assert ds2.recovery is not None
        assert [r[:KEY] for r in ds2] == [key_of(1, 1), key_of(2, 1)]  # not the earlier data set's record


def test_stale_log_kept_by_a_reader_is_replaced_by_an_updater(tmp_path: Path) -> None:
    path = str(tmp_path / "t.ksds")
    ksds.define(path, key_length=KEY, record_length=RECLEN)
    old = ksds.open(path, "rw")
    old.write(record(key_of(9, 9), 9))
    old._abandon()
    os.unlink(path)
    ksds.define(path, key_length=KEY, record_length=RECLEN, share_options=(2, 3))
    with ksds.open(path, "r") as reader:  # cannot remove the stale log; ignores it
        assert list(reader) == []
        with ksds.open(path, "rw") as writer:  # replaces it
            writer.write(record(key_of(1, 1), 1))
            assert [r[:KEY] for r in reader] == [key_of(1, 1)]  # the reader follows the new log
        assert [r[:KEY] for r in reader] == [key_of(1, 1)]
    assert ksds.examine(path).sound


# --- found by review: close inside a batch, nested batches, a record wait that held the open -------------------------


def test_close_inside_a_batch_rolls_it_back_and_never_touches_another_open(tmp_path: Path) -> None:
    path = str(tmp_path / "t.ksds")
    ksds.define(path, key_length=KEY, record_length=RECLEN, share_options=(3, 3))
    keep = ksds.open(path, lock_timeout=2)  # keeps the log shared
    ds = ksds.open(path, lock_timeout=2)
    cm = ds.batch()
    cm.__enter__()
    ds.write(record(key_of(1, 0), 1))
    ds.close()  # the batch is rolled back
    ds2 = ksds.open(path, lock_timeout=2)  # likely gets the same descriptor number
    with ds2.batch():
        ds2.write(record(key_of(2, 0), 2))
        with pytest.raises(ksds.DatasetClosedError, match="closed inside the batch"):
            cm.__exit__(None, None, None)  # must not unlatch ds2's descriptor
        result: list[object] = []

        def other() -> None:
            try:
                with ksds.open(path, lock_timeout=0.5) as ds3:
                    ds3.write(record(key_of(3, 0), 3))
                result.append("wrote while ds2's batch held the latch")
            except ksds.LatchTimeoutError:
                result.append("waited")

        t = threading.Thread(target=other)
        t.start()
        t.join(10)
        assert result == ["waited"]
    ds2.close()
    keep.close()
    with ksds.open(path) as d:
        assert [r[:KEY] for r in d] == [key_of(2, 0)]
    assert ksds.examine(path).sound


def test_an_inner_batch_that_raises_undoes_the_outer_one(tmp_path: Path) -> None:
    path = str(tmp_path / "t.ksds")
    ksds.define(path, key_length=KEY, record_length=RECLEN)
    with ksds.open(path) as ds:
        with pytest.raises(ksds.KsdsError, match="rolled back"):
            with ds.batch():
                ds.write(record(key_of(1, 0), 1))
                try:
                    with ds.batch():
                        ds.write(record(key_of(2, 0), 2))
                        raise RuntimeError("inner")
                except RuntimeError:
                    pass  # caught: the outer batch still must not commit half of it
        assert len(ds) == 0
        ds.write(record(key_of(3, 0), 3))  # the open goes on
        assert len(ds) == 1


def test_a_record_wait_does_not_hold_the_open(tmp_path: Path) -> None:
    """T1 waits (through open A) for a record that open B holds; T2 must be able to use A meanwhile, to finish the
    unit of work that releases the record. Before, T1 held A while it waited and both timed out."""
    path = str(tmp_path / "t.ksds")
    ksds.define(path, key_length=KEY, record_length=RECLEN)
    with ksds.open(path) as ds:
        for n in range(5):
            ds.write(record(key_of(n, 0), n))
    a = ksds.open(path, sharing="rls", lock_timeout=5)
    b = ksds.open(path, sharing="rls", lock_timeout=5)
    b.read(key_of(2, 0), update=True)
    took: dict[str, float] = {}

    def t1() -> None:
        t0 = time.monotonic()
        a.read(key_of(2, 0), update=True)
        took["t1"] = time.monotonic() - t0
        a.unlock()

    def t2() -> None:
        time.sleep(0.2)
        t0 = time.monotonic()
        a.read(key_of(3, 0))  # through A, while T1 waits in A
        took["t2"] = time.monotonic() - t0
        b.unlock()

    threads = [threading.Thread(target=t1), threading.Thread(target=t2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    a.close()
    b.close()
    assert took["t2"] < 1 and took["t1"] < 2, took


def test_ending_a_browse_never_waits_for_the_open(tmp_path: Path) -> None:
    path = str(tmp_path / "t.ksds")
    ksds.define(path, key_length=KEY, record_length=RECLEN, ci_size=512)
    with ksds.open(path, lock_timeout=0.5) as ds:
        for n in range(100):
            ds.write(record(key_of(n, 0), n))
        b = ds.browse()
        for _ in range(3):
            next(b)
        inside, leave = threading.Event(), threading.Event()

        def batch() -> None:
            with ds.batch():
                inside.set()
                leave.wait(10)

        t = threading.Thread(target=batch)
        t.start()
        assert inside.wait(10)
        t0 = time.monotonic()
        b.close()  # ENDBR while another thread's batch has the open
        assert time.monotonic() - t0 < 0.2
        leave.set()
        t.join()
        assert ds.stats()["REC-RETRIEVED"] >= 3  # the records it returned are still counted


def test_timeouts_beyond_what_threads_can_wait_are_refused(tmp_path: Path) -> None:
    p = str(tmp_path / "p.ksds")
    ksds.define(p, key_length=4, record_length=10)
    with pytest.raises(ksds.InvalidRequestError, match="lock_timeout"):
        ksds.open(p, lock_timeout=threading.TIMEOUT_MAX * 2)

    class BadPath:
        def __fspath__(self) -> int:
            return 3

    with pytest.raises(ksds.InvalidRequestError):
        ksds.open(BadPath())  # type: ignore[arg-type]


def test_close_while_another_thread_waits_for_a_record(tmp_path: Path) -> None:
    """The waiter ends with DatasetClosedError at its next poll; the lock file is closed only after it left (never
    under its feet, where the descriptor number could already be another file's)."""
    path = str(tmp_path / "t.ksds")
    ksds.define(path, key_length=KEY, record_length=RECLEN)
    with ksds.open(path) as ds:
        ds.write(record(key_of(1, 0), 1))
    holder = ksds.open(path, sharing="rls", lock_timeout=10)
    holder.read(key_of(1, 0), update=True)
    a = ksds.open(path, sharing="rls", lock_timeout=10)
    got: list[BaseException] = []

    def waiter() -> None:
        try:
            a.read(key_of(1, 0), update=True)
        except BaseException as e:  # noqa: BLE001 - checked below
            got.append(e)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)  # the waiter polls for the record
    t0 = time.monotonic()
    a.close()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - t0 < 2
    assert len(got) == 1 and isinstance(got[0], ksds.DatasetClosedError), got
    holder.close()
