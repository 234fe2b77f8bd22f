"""Sharing across processes: SHAREOPTIONS (NONRLS) and RLS record locks, with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from procs import PY, finish, script, start, wait_for

import ksds


@pytest.fixture
def ds_path(tmp_path: object) -> str:
    return os.path.join(str(tmp_path), "s.ksds")


def define(path: str, share: tuple[int, int] = (3, 3), **kw: object) -> None:
    args: dict[str, object] = dict(key_length=8, record_length=40, ci_size=512, cis_per_ca=4)
    args.update(kw)
    ksds.define(path, share_options=share, **args)  # type: ignore[arg-type]


def rec(k: int, v: int = 0) -> bytes:
    return b"%08d" % k + b"%032d" % v


# --- RLS -----------------------------------------------------------------------------------------------------------


def test_lost_update_rls(ds_path: str) -> None:
    """N processes x 500 x (read for update, increment, rewrite) on 3 shared counters: the sum is exact."""
    define(ds_path)
    with ksds.open(ds_path) as ds:
        for c in range(3):
            ds.write(rec(c))
    body = """
    ds = ksds.open(sys.argv[1], sharing="rls", lock_timeout=120)
    for i in range(500):
        k = b"%08d" % (i % 3)
        r = ds.read(k, update=True)
        ds.rewrite(k + b"%032d" % (int(r[8:]) + 1))
    ds.close()
    """
    procs = [start(body, ds_path) for _ in range(3)]
    for p in procs:
        finish(p)
    with ksds.open(ds_path, sharing="rls") as ds:
        total = sum(int(ds.read(b"%08d" % c)[8:]) for c in range(3))
    assert total == 1500
    assert ksds.examine(ds_path).sound


@pytest.mark.parametrize("sharing,share", [("rls", (1, 3)), ("nonrls", (3, 3))])
def test_two_processes_update_different_records_of_one_ci(ds_path: str, sharing: str, share: tuple[int, int]) -> None:
    define(ds_path, share=share)
    with ksds.open(ds_path) as ds:
        for k in range(10):  # all in the first CI (12 records of 40 bytes fit in 512)
            ds.write(rec(k))
        assert ds.stats()["DATA-CIS"] == 1
    go = ds_path + ".go"
    body = """
    ds = ksds.open(sys.argv[1], sharing=sys.argv[2], lock_timeout=60)
    mine = int(sys.argv[3])
    while not os.path.exists(sys.argv[4]):
        time.sleep(0.001)
    for i in range(200):
        k = b"%08d" % mine
        r = ds.read(k, update=True)
        ds.rewrite(k + b"%032d" % (int(r[8:]) + 1))
    ds.close()
    """
    procs = [start(body, ds_path, sharing, str(k), go) for k in (2, 7)]
    time.sleep(0.5)
    open(go, "w").close()
    for p in procs:
        finish(p)
    with ksds.open(ds_path, sharing=sharing) as ds:
        assert int(ds.read(b"%08d" % 2)[8:]) == 200
        assert int(ds.read(b"%08d" % 7)[8:]) == 200
        assert [int(ds.key_of(r)) for r in ds] == list(range(10))


def test_reader_sees_every_record_through_concurrent_splits(ds_path: str) -> None:
    """A writer inserts in random order (many CI and CA splits); a reader browsing at the same time never misses
    a record committed before its browse started, never sees one twice, and always sees key order."""
    define(ds_path)
    progress = ds_path + ".progress"
    writer = """
    import random
    keys = list(range(3000)); random.Random(7).shuffle(keys)
    ds = ksds.open(sys.argv[1], sharing="rls")
    while not os.path.exists(sys.argv[2] + ".ready"):
        time.sleep(0.005)
    fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    for n, k in enumerate(keys, 1):
        ds.write(b"%08d" % k + b"w" * 32)
        os.write(fd, b"%d\\n" % n)
    ds.close()
    """
    reader = """
    import random
    keys = list(range(3000)); random.Random(7).shuffle(keys)
    ds = ksds.open(sys.argv[1], sharing="rls")
    open(sys.argv[2] + ".ready", "w").close()
    browses = 0  # browses that began while the writer was still writing
    while True:
        try:
            done = int(open(sys.argv[2]).read().split()[-1])
        except (FileNotFoundError, IndexError):
            done = 0
        got = [int(ds.key_of(r)) for r in ds.browse()]
        assert got == sorted(set(got)), "browse out of order or repeated"
        missing = set(keys[:done]) - set(got)
        assert not missing, f"missed {sorted(missing)[:5]} (committed before the browse)"
        if done == 3000:
            break
        browses += 1
    back = [int(ds.key_of(r)) for r in ds.browse(backward=True)]
    assert back == list(range(2999, -1, -1))
    print(browses)
    """
    w = start(writer, ds_path, progress)
    r = start(reader, ds_path, progress)
    finish(w)
    browses = int(finish(r).split()[-1])
    assert browses >= 1  # at least one browse ran through the writer's splits
    with ksds.open(ds_path, "r") as ds:
        assert ds.stats()["SPLITS-CA"] > 0 and ds.stats()["SPLITS-CI"] > 0
    assert ksds.examine(ds_path).sound


def test_lock_timeout(ds_path: str) -> None:
    define(ds_path)
    with ksds.open(ds_path) as ds:
        ds.write(rec(1))
    ready = ds_path + ".ready"
    holder = start(
        """
    ds = ksds.open(sys.argv[1], sharing="rls")
    ds.read(b"%08d" % 1, update=True)
    open(sys.argv[2], "w").close()
    time.sleep(3)
    ds.close()
    """,
        ds_path,
        ready,
    )
    wait_for(ready)
    with ksds.open(ds_path, sharing="rls", lock_timeout=0.5) as ds:
        t0 = time.monotonic()
        with pytest.raises(ksds.RecordLockedError) as e:
            ds.read(b"%08d" % 1, update=True)
        assert 0.4 < time.monotonic() - t0 < 2.5
        assert e.value.rpl_code == 22
        assert ds.read(b"%08d" % 1)  # NRI: no lock, no wait
        with pytest.raises(ksds.RecordLockedError):
            ds.read(b"%08d" % 1, integrity="cr")  # CR waits for the updater
    finish(holder)


def test_deadlock_detected(ds_path: str) -> None:
    define(ds_path)
    with ksds.open(ds_path) as ds:
        ds.write(rec(1))
        ds.write(rec(2))
    body = """
    ds = ksds.open(sys.argv[1], sharing="rls", lock_timeout=20)
    first, second = int(sys.argv[2]), int(sys.argv[3])
    ds.read(b"%08d" % first, update=True)
    open(sys.argv[4], "w").close()
    while not os.path.exists(sys.argv[5]):
        time.sleep(0.005)
    try:
        r = ds.read(b"%08d" % second, update=True)
        ds.rewrite(r)
        print("proceeded")
    except ksds.DeadlockError as e:
        print("deadlock", e.rpl_code)
    ds.close()
    """
    a = start(body, ds_path, "1", "2", ds_path + ".a", ds_path + ".b")
    b = start(body, ds_path, "2", "1", ds_path + ".b", ds_path + ".a")
    t0 = time.monotonic()
    outs = sorted(finish(p).strip() for p in (a, b))
    assert outs == ["deadlock 21", "proceeded"], outs
    assert time.monotonic() - t0 < 15  # detected, not a timeout


def test_lock_released_when_holder_is_killed(ds_path: str) -> None:
    define(ds_path)
    with ksds.open(ds_path) as ds:
        ds.write(rec(1))
    ready = ds_path + ".ready"
    holder = start(
        """
    ds = ksds.open(sys.argv[1], sharing="rls")
    ds.read(b"%08d" % 1, update=True)
    open(sys.argv[2], "w").close()
    time.sleep(60)
    """,
        ds_path,
        ready,
    )
    wait_for(ready)
    with ksds.open(ds_path, sharing="rls", lock_timeout=10) as ds:
        with pytest.raises(ksds.RecordLockedError):
            _try_nowait(ds)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        t0 = time.monotonic()
        r = ds.read(b"%08d" % 1, update=True)
        assert time.monotonic() - t0 < 2
        ds.rewrite(r[:8] + b"%032d" % 5)
    with ksds.open(ds_path) as ds:
        assert int(ds.read(b"%08d" % 1)[8:]) == 5


def _try_nowait(ds: ksds.Dataset) -> None:
    with ds.batch():  # inside a batch a lock held elsewhere fails at once
        ds.rewrite(rec(1, 9))


def test_writer_killed_mid_request_leaves_nothing_half_done(ds_path: str) -> None:
    """A process killed right after a request's log write: others see that request whole (its commit frame is
    in the log) and never half of one, and go on updating."""
    define(ds_path)
    with ksds.open(ds_path) as ds:
        for k in range(50):
            ds.write(rec(k))
    other = ksds.open(ds_path, sharing="rls")
    for n in (1, 3, 7):
        env = dict(os.environ, KSDS_FAULTS=f"point=log-written;crash={n}")
        p = subprocess.run(
            [PY, "-c", script("""
            ds = ksds.open(sys.argv[1], sharing="rls")
            base = int(sys.argv[2])
            for k in range(base, base + 100):
                ds.write(b"%08d" % k + b"%032d" % 0)
            """), ds_path, str(10000 * n)],
            env=env, capture_output=True, text=True,
        )
        assert p.returncode == -signal.SIGKILL, p.stderr
        keys = [int(other.key_of(r)) for r in other]
        assert keys == sorted(keys)
        # the killed request's frames are in the log, committed: it is there whole
        assert len([k for k in keys if 10000 * n <= k < 10000 * n + 100]) == n
        other.write(rec(5000 + n))  # the data set goes on being updated
    other.close()
    assert ksds.examine(ds_path).sound
    with ksds.open(ds_path) as ds:
        assert len(ds) == 50 + 1 + 3 + 7 + 3


# --- NONRLS share options ---------------------------------------------------------------------------------------------


def test_shareoptions_1_refusals(ds_path: str) -> None:
    define(ds_path, share=(1, 3))
    holder = ksds.open(ds_path, "rw")
    p = subprocess.run([PY, "-c", script("""
    try:
        ksds.open(sys.argv[1], "r")
    except ksds.DatasetInUseError as e:
        print("refused", e.file_status)
    """), ds_path], capture_output=True, text=True)
    assert p.stdout.strip() == "refused 93", p.stderr
    holder.close()
    r1 = ksds.open(ds_path, "r")
    r2 = ksds.open(ds_path, "r")  # many readers
    with pytest.raises(ksds.DatasetInUseError, match="in use"):
        ksds.open(ds_path, "rw")
    r1.close()
    r2.close()


def test_shareoptions_2_one_updater_many_readers(ds_path: str) -> None:
    define(ds_path, share=(2, 3))
    w = ksds.open(ds_path, "rw")
    with pytest.raises(ksds.DatasetInUseError, match="one updater"):
        ksds.open(ds_path, "rw")
    reader = start("""
    ds = ksds.open(sys.argv[1], "r")
    seen = 0
    deadline = time.time() + 60
    while seen < 200 and time.time() < deadline:
        got = [int(ds.key_of(r)) for r in ds]
        assert got == sorted(got)
        seen = len(got)
        time.sleep(0.01)
    print(seen, ds.read(b"%08d" % 199)[8:].decode())
    """, ds_path)
    for k in range(200):
        w.write(rec(k, k))  # the reader sees each as soon as it is committed
    assert finish(reader).split() == ["200", f"{199:032d}"]
    w.close()


def test_rls_and_nonrls_update_exclude_each_other(ds_path: str) -> None:
    define(ds_path, share=(2, 3))
    rls = ksds.open(ds_path, sharing="rls")
    with pytest.raises(ksds.DatasetInUseError, match="RLS"):
        ksds.open(ds_path, "rw")  # no non-RLS update while RLS users are there
    r = ksds.open(ds_path, "r")  # SHAREOPTIONS(2): a non-RLS reader may join
    r.close()
    rls.close()
    w = ksds.open(ds_path, "rw")
    with pytest.raises(ksds.DatasetInUseError, match="without RLS"):
        ksds.open(ds_path, sharing="rls")
    w.close()


def test_shareoptions_3_many_updaters_no_corruption(ds_path: str) -> None:
    define(ds_path, share=(3, 3))
    body = """
    ds = ksds.open(sys.argv[1], "rw")
    base = int(sys.argv[2])
    for k in range(base, base + 400):
        ds.write(b"%08d" % k + b"%032d" % k)
    for k in range(base, base + 400, 3):
        ds.erase(b"%08d" % k)
    ds.close()
    """
    procs = [start(body, ds_path, str(b)) for b in (0, 100000, 200000)]
    for p in procs:
        finish(p)
    with ksds.open(ds_path, "r") as ds:
        keys = [int(ds.key_of(r)) for r in ds]
    want = sorted(k for b in (0, 100000, 200000) for k in range(b, b + 400) if (k - b) % 3)
    assert keys == want
    assert ksds.examine(ds_path).sound


def test_invalid_sharing_options(ds_path: str) -> None:
    define(ds_path)
    with pytest.raises(ksds.InvalidRequestError, match="sharing"):
        ksds.open(ds_path, sharing="yes")
    with pytest.raises(ksds.InvalidRequestError, match="read_integrity"):
        ksds.open(ds_path, sharing="rls", read_integrity="dirty")
    with pytest.raises(ksds.InvalidRequestError, match="lock_timeout"):
        ksds.open(ds_path, sharing="rls", lock_timeout=-1)
