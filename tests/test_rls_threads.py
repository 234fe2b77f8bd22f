"""Every open is its own lock owner: RLS record locks and the latch between threads of one process (each with its
own open) and between such threads and other processes; deadlock detection among them; bounded latch waits."""

from __future__ import annotations

import fcntl
import functools
import os
import threading
import time
from collections.abc import Callable

import pytest
from procs import finish, script, start, wait_for

import ksds
from ksds import locks as L


@pytest.fixture
def ds_path(tmp_path: object) -> str:
    return os.path.join(str(tmp_path), "t.ksds")


def define(path: str, n: int = 3, share: tuple[int, int] = (3, 3)) -> None:
    ksds.define(path, key_length=8, record_length=40, ci_size=512, cis_per_ca=4, share_options=share)
    with ksds.open(path) as ds:
        for k in range(n):
            ds.write(rec(k))


def key(k: int) -> bytes:
    return b"%08d" % k


def rec(k: int, v: int = 0) -> bytes:
    return key(k) + b"%032d" % v


def run_threads(*targets: object) -> list[BaseException | None]:
    """Run each callable in its own thread; what each raised (None if it returned)."""
    out: list[BaseException | None] = [None] * len(targets)

    def wrap(i: int, fn: object) -> None:
        try:
            fn()  # type: ignore[operator]
        except BaseException as e:  # noqa: B036 - reported to the test
            out[i] = e

    ts = [threading.Thread(target=wrap, args=(i, fn)) for i, fn in enumerate(targets)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
        assert not t.is_alive(), "a thread hangs"
    return out


# --- lost updates ------------------------------------------------------------------------------------------------


def _increment(path: str, n: int, barrier: threading.Barrier, k: int = 0) -> None:
    ds = ksds.open(path, "rw", sharing="rls", lock_timeout=60)
    try:
        barrier.wait()  # both opens exist before either starts
        for _ in range(n):
            r = ds.read(key(k), update=True)
            ds.rewrite(rec(k, int(r[8:]) + 1))
    finally:
        ds.close()


def test_lost_update_two_threads_two_opens_exact(ds_path: str) -> None:
    define(ds_path, 1)
    b = threading.Barrier(2)
    errors = run_threads(lambda: _increment(ds_path, 3000, b), lambda: _increment(ds_path, 3000, b))
    assert errors == [None, None]
    with ksds.open(ds_path, sharing="rls") as ds:
        assert int(ds.read(key(0))[8:]) == 6000
    assert ksds.examine(ds_path).sound


def test_lost_update_two_processes_two_threads_each_exact(ds_path: str) -> None:
    define(ds_path, 1)
    body = """
    b = threading.Barrier(3)
    def work():
        ds = ksds.open(sys.argv[1], "rw", sharing="rls", lock_timeout=60)
        b.wait()
        while not os.path.exists(sys.argv[2]):
            time.sleep(0.001)
        for _ in range(500):
            r = ds.read(b"%08d" % 0, update=True)
            ds.rewrite(r[:8] + b"%032d" % (int(r[8:]) + 1))
        ds.close()
    ts = [threading.Thread(target=work) for _ in range(2)]
    for t in ts:
        t.start()
    b.wait()
    open(sys.argv[3], "w").close()
    for t in ts:
        t.join()
    """
    go = ds_path + ".go"
    procs = [start(body, ds_path, go, f"{ds_path}.ready{i}") for i in range(2)]
    for i in range(2):
        wait_for(f"{ds_path}.ready{i}")  # all four opens exist
    open(go, "w").close()
    for p in procs:
        finish(p)
    with ksds.open(ds_path, sharing="rls") as ds:
        assert int(ds.read(key(0))[8:]) == 2000
    assert ksds.examine(ds_path).sound


# --- deadlocks -----------------------------------------------------------------------------------------------------


def _cross(path: str, first: int, second: int, barrier: threading.Barrier, out: list[str]) -> None:
    ds = ksds.open(path, "rw", sharing="rls", lock_timeout=20)
    try:
        ds.read(key(first), update=True)
        barrier.wait()
        try:
            r = ds.read(key(second), update=True)
            ds.rewrite(r)
            out.append("proceeded")
        except ksds.DeadlockError as e:
            assert e.rpl_code == 21
            out.append("deadlock")
    finally:
        ds.close()


def test_deadlock_between_two_threads_of_one_process(ds_path: str) -> None:
    define(ds_path)
    out: list[str] = []
    b = threading.Barrier(2)
    t0 = time.monotonic()
    errors = run_threads(lambda: _cross(ds_path, 1, 2, b, out), lambda: _cross(ds_path, 2, 1, b, out))
    assert errors == [None, None]
    assert sorted(out) == ["deadlock", "proceeded"]
    assert time.monotonic() - t0 < 10  # detected, not a timeout


def test_deadlock_among_three_threads(ds_path: str) -> None:
    define(ds_path)
    out: list[str] = []
    b = threading.Barrier(3)
    t0 = time.monotonic()
    errors = run_threads(*(lambda i=i: _cross(ds_path, i, (i + 1) % 3, b, out) for i in range(3)))
    assert errors == [None, None, None]
    assert sorted(out) == ["deadlock", "proceeded", "proceeded"]
    assert time.monotonic() - t0 < 10


def test_deadlock_upgrading_shared_locks(ds_path: str) -> None:
    """Two opens hold one record shared (CRE) and both ask for it exclusively: one is chosen, the other goes on."""
    define(ds_path)
    out: list[str] = []
    b = threading.Barrier(2)

    def work() -> None:
        ds = ksds.open(ds_path, "rw", sharing="rls", read_integrity="cre", lock_timeout=20)
        try:
            ds.read(key(1))
            b.wait()
            try:
                ds.rewrite(ds.read(key(1), update=True))
                out.append("proceeded")
            except ksds.DeadlockError:
                out.append("deadlock")
        finally:
            ds.close()

    t0 = time.monotonic()
    assert run_threads(work, work) == [None, None]
    assert sorted(out) == ["deadlock", "proceeded"]
    assert time.monotonic() - t0 < 10


def test_deadlock_between_a_thread_and_another_process(ds_path: str) -> None:
    define(ds_path)
    a, b = ds_path + ".a", ds_path + ".b"
    other = start(
        """
    ds = ksds.open(sys.argv[1], sharing="rls", lock_timeout=20)
    ds.read(b"%08d" % 2, update=True)
    open(sys.argv[2], "w").close()
    while not os.path.exists(sys.argv[3]):
        time.sleep(0.002)
    try:
        ds.rewrite(ds.read(b"%08d" % 1, update=True))
        print("proceeded")
    except ksds.DeadlockError as e:
        print("deadlock", e.rpl_code)
    ds.close()
    """,
        ds_path,
        b,
        a,
    )
    out: list[str] = []

    def here() -> None:
        ds = ksds.open(ds_path, sharing="rls", lock_timeout=20)
        try:
            ds.read(key(1), update=True)
            open(a, "w").close()
            wait_for(b)
            try:
                ds.rewrite(ds.read(key(2), update=True))
                out.append("proceeded")
            except ksds.DeadlockError as e:
                out.append(f"deadlock {e.rpl_code}")
        finally:
            ds.close()

    t0 = time.monotonic()
    assert run_threads(here) == [None]
    out.append(finish(other).strip())
    assert sorted(out) == ["deadlock 21", "proceeded"], out
    assert time.monotonic() - t0 < 10


def test_no_false_deadlock_from_a_dead_owners_entry(ds_path: str) -> None:
    """A registry entry whose slot is not live (its owner died) is never part of a cycle; the same entry in a
    live slot is. A waits for nothing, holds k1; B holds k2 and waits for k1; the planted entry "holds k1 and
    waits for k2", with the lowest owner id."""
    define(ds_path)
    a, b = L.RecordLocks(ds_path), L.RecordLocks(ds_path)
    try:
        a.lock(key(1), True, 1)
        b.lock(key(2), True, 1)
        slot = 7
        fake = L._entry(1, 999999, 1, L.key_byte(key(2)), True, {L.key_byte(key(1)): True})
        os.pwrite(b.fd, fake, L.ENTRY_SIZE * slot)
        t0 = time.monotonic()
        with pytest.raises(ksds.RecordLockedError, match="this process"):
            b.lock(key(1), True, 0.5)
        assert 0.4 < time.monotonic() - t0 < 2.5  # a timeout, not a deadlock
        # the same entry, its slot live (someone holds its two slot bytes): a real cycle through it
        fd = os.open(ds_path + ".lck", os.O_RDWR)
        try:
            for byte in (L.SLOT_BASE + 2 * slot, L.SLOT_BASE + 2 * slot + 1):
                fcntl.fcntl(fd, fcntl.F_OFD_SETLK, L._flock(fcntl.F_WRLCK, byte))
            with pytest.raises(ksds.DeadlockError, match="process 999999"):
                b.lock(key(1), True, 5)
        finally:
            os.close(fd)
    finally:
        a.close()
        b.close()


def test_deadlock_with_an_overflowed_waiter(ds_path: str) -> None:
    """A waiter holding more locks than an entry lists (partial) lists those that other waiters wait for: the
    deadlock is still found, though the lock that closes the cycle comes after MAX_HELD others."""
    define(ds_path)
    a = L.RecordLocks(ds_path)
    b = L.RecordLocks(ds_path)  # b has the higher owner id: it is the one that must find the cycle
    assert b.owner > a.owner
    many = [b"x%07d" % i for i in range(L.MAX_HELD + 5)]
    for k in many:
        a.lock(k, False, 1)
    a.lock(key(1), True, 1)  # beyond the first MAX_HELD
    b.lock(key(2), True, 1)
    barrier = threading.Barrier(2)
    out: dict[str, str] = {}

    def take(name: str, rl: L.RecordLocks, k: bytes) -> None:
        barrier.wait()
        try:
            rl.lock(k, True, 10)
            out[name] = "proceeded"
        except ksds.DeadlockError:
            out[name] = "deadlock"
        rl.unlock_all()

    try:
        t0 = time.monotonic()
        assert run_threads(lambda: take("a", a, key(2)), lambda: take("b", b, key(1))) == [None, None]
        assert out == {"a": "proceeded", "b": "deadlock"}
        assert time.monotonic() - t0 < 5
    finally:
        a.close()
        b.close()


# --- lock timeouts and no-wait between opens of one process ---------------------------------------------------------


def test_lock_timeout_between_two_opens_of_one_process(ds_path: str) -> None:
    define(ds_path)
    holder = ksds.open(ds_path, sharing="rls")
    waiter = ksds.open(ds_path, sharing="rls", lock_timeout=0.5)
    try:
        holder.read(key(1), update=True)
        t0 = time.monotonic()
        with pytest.raises(ksds.RecordLockedError, match=r"this process \(another open\)") as e:
            waiter.read(key(1), update=True)
        assert 0.4 < time.monotonic() - t0 < 2.5
        assert e.value.rpl_code == 22
        assert waiter.read(key(1))  # NRI: no lock
        with pytest.raises(ksds.RecordLockedError):
            with waiter.batch():  # no wait inside a batch
                waiter.rewrite(rec(1, 9))
        waiter.rewrite(waiter.read(key(2), update=True))  # another record: free
        holder.close()  # releases its locks
        waiter.rewrite(rec(1, 7))
    finally:
        holder.close()
        waiter.close()
    with ksds.open(ds_path) as ds:
        assert int(ds.read(key(1))[8:]) == 7


def test_slots_are_reused_and_start_clean(ds_path: str) -> None:
    define(ds_path)
    with open(ds_path + ".lck", "wb") as f:  # an idle lock file with old data far out (as an older version left)
        f.seek(1 << 20)
        f.write(b"\x01" * 64)
    opens = [L.RecordLocks(ds_path) for _ in range(3)]
    assert os.path.getsize(ds_path + ".lck") <= 3 * L.ENTRY_SIZE  # the first open emptied the registry
    assert [o.slot for o in opens] == [0, 1, 2]
    opens[1].lock(key(1), True, 1)
    opens[1].close()
    again = L.RecordLocks(ds_path)
    try:
        assert again.slot == 1
        assert again.owner != opens[1].owner
        head = L.ENTRY_HEAD.unpack(os.pread(again.fd, L.ENTRY_HEAD.size, L.ENTRY_SIZE))
        assert head[0] == again.owner and head[3] == 0  # our id, waiting for nothing
        again.lock(key(1), True, 1)  # the closed open's lock is gone
    finally:
        again.close()
        for o in opens:
            o.close()


# --- the latch -----------------------------------------------------------------------------------------------------


def test_latch_timeout_unit(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "latch")
    open(path, "wb").close()
    fd1, fd2 = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        one, two = L.OpenLocks(fd1, path), L.OpenLocks(fd2, path)
        one.latch(True, 0.3)  # free: at once
        t0 = time.monotonic()
        with pytest.raises(ksds.LatchTimeoutError, match=r"held by this process \(another open\)") as e:
            two.latch(True, timeout=0.3)
        assert 0.25 < time.monotonic() - t0 < 1.0
        assert isinstance(e.value, ksds.KsdsError) and e.value.file_status == "93"
        assert "lock_timeout" in str(e.value) and path in str(e.value)
        one.unlatch()
        one.latch(False)
        two.latch(False, 0.3)  # shared with shared: at once
        with pytest.raises(ksds.LatchTimeoutError):
            two.latch(True, 0.2)  # exclusive while another holds it shared
        two.unlatch()
        # timeout 0: wait as long as it takes
        threading.Timer(0.3, one.unlatch).start()
        t0 = time.monotonic()
        two.latch(True, 0)
        assert 0.2 < time.monotonic() - t0 < 5
        two.unlatch()
    finally:
        os.close(fd1)
        os.close(fd2)


def test_latch_timeout_names_the_holding_process(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "latch")
    open(path, "wb").close()
    ready = path + ".ready"
    holder = start(
        """
    from ksds.locks import OpenLocks
    fd = os.open(sys.argv[1], os.O_RDWR)
    OpenLocks(fd, sys.argv[1]).latch(True)
    open(sys.argv[2], "w").close()
    time.sleep(3)
    """,
        path,
        ready,
    )
    wait_for(ready)
    fd = os.open(path, os.O_RDWR)
    try:
        t0 = time.monotonic()
        with pytest.raises(ksds.LatchTimeoutError, match=f"held by process {holder.pid} "):
            L.OpenLocks(fd, path).latch(False, timeout=0.3)
        assert 0.25 < time.monotonic() - t0 < 1.5
    finally:
        os.close(fd)
        holder.kill()
        holder.communicate()


@pytest.mark.parametrize("sharing", ["nonrls", "rls"])
def test_latch_timeout_while_another_process_holds_a_batch(ds_path: str, sharing: str) -> None:
    define(ds_path)
    go, inside = ds_path + ".go", ds_path + ".inside"
    holder = start(
        """
    ds = ksds.open(sys.argv[1], "rw", sharing=sys.argv[2])
    while not os.path.exists(sys.argv[3]):
        time.sleep(0.002)
    with ds.batch():
        ds.write(b"%08d" % 50 + b"%032d" % 0)
        open(sys.argv[4], "w").close()
        time.sleep(3)
    ds.close()
    """,
        ds_path,
        sharing,
        go,
        inside,
    )
    ds = ksds.open(ds_path, "rw", sharing=sharing, lock_timeout=0.5)  # opened before the batch starts
    try:
        open(go, "w").close()
        wait_for(inside)
        # a read does not wait: it sees what is committed (through the shared state, without the latch), not the
        # batch's record
        t0 = time.monotonic()
        assert ds.read(key(1)) == rec(1)
        assert ds.get(key(50)) is None
        assert time.monotonic() - t0 < 0.3
        t0 = time.monotonic()
        with pytest.raises(ksds.LatchTimeoutError, match=f"process {holder.pid}") as e:
            ds.write(rec(60))
        assert 0.4 < time.monotonic() - t0 < 1.5
        assert "batch" in str(e.value)
        finish(holder)
        assert ds.read(key(50))  # the batch committed; the latch is free again
    finally:
        ds.close()


# --- registry: waiters holding many locks, slot numbers ------------------------------------------------------------


def _waiting_for(lck: str, byte: int) -> bool:
    """Whether some registry entry of ``lck`` says that its owner waits for ``byte``."""
    with open(lck, "rb") as f:
        data = f.read()
    return any(
        L.ENTRY_HEAD.unpack_from(data, at)[3] == byte
        for at in range(0, len(data) - L.ENTRY_HEAD.size + 1, L.ENTRY_SIZE)
    )


def _until(cond: Callable[[], bool], timeout: float = 10) -> bool:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.002)
    return True


def test_no_deadlock_error_through_a_waiter_holding_many_locks(ds_path: str) -> None:
    """A (the lowest owner id) holds more record locks than an entry lists inline and waits for X, held by B; B
    waits for Z, held by C, which waits for nothing and lets Z go a little later. There is no cycle: B gets Z (no
    DeadlockError, which would name A as the holder of Z), then A gets X."""
    define(ds_path)
    a, b, c = (L.RecordLocks(ds_path) for _ in range(3))
    assert a.owner < b.owner < c.owner
    x, z = key(1), key(2)
    lck = ds_path + ".lck"
    try:
        for i in range(L.MAX_HELD + 5):
            a.lock(b"m%07d" % i, True, 1)
        b.lock(x, True, 1)
        c.lock(z, True, 1)

        def wait_a() -> None:
            try:
                a.lock(x, True, 10)
            finally:
                a.unlock_all()

        def wait_b() -> None:
            _until(lambda: _waiting_for(lck, L.key_byte(x)))
            try:
                b.lock(z, True, 10)
            finally:
                b.unlock_all()

        def run_c() -> None:
            _until(lambda: _waiting_for(lck, L.key_byte(z)), 5)
            time.sleep(0.3)  # several polls of A and B meanwhile
            c.unlock_all()

        t0 = time.monotonic()
        assert run_threads(wait_a, wait_b, run_c) == [None, None, None]
        assert time.monotonic() - t0 < 5
    finally:
        for o in (a, b, c):
            o.close()


_RING = """
from ksds import locks as L
def participant(path, i, n, extra, ready, go):
    rl = L.RecordLocks(path)
    try:
        rl.lock(b"%08d" % i, True, 5)
        for e in range(extra):
            rl.lock(b"e%03d%04d" % (i, e), True, 5)
        open(ready, "w").close()
        end = time.monotonic() + 30
        while not os.path.exists(go) and time.monotonic() < end:
            time.sleep(0.002)
        try:
            rl.lock(b"%08d" % ((i + 1) % n), True, 20)
            return "proceeded"
        except ksds.DeadlockError:
            return "deadlock"
        except ksds.RecordLockedError:
            return "timeout"
    finally:
        rl.close()
"""


@pytest.mark.parametrize(("extra", "staged"), [(0, True), (L.MAX_HELD + 5, True), (L.MAX_HELD + 5, False)])
def test_deadlock_ring_of_threads_and_processes_one_victim(ds_path: str, extra: int, staged: bool) -> None:
    """A ring of four opens (two threads here, two other processes), each holding ``extra`` more record locks
    than the ring's own: open i holds record i and waits for record i+1. Staged: the waits start one by one,
    the ring closing last: nobody may be chosen before it closes (a chain is no deadlock). Then exactly one
    victim, and the three others get their record."""
    define(ds_path)
    n = 4
    ns: dict[str, Callable[..., str]] = {}
    exec(script(_RING), ns)  # the same participant in threads here and in the processes
    participant = ns["participant"]
    ready = [f"{ds_path}.ready{i}" for i in range(n)]
    go = [f"{ds_path}.go{i}" for i in range(n)]
    results: dict[int, str] = {}

    def here(i: int) -> None:
        results[i] = participant(ds_path, i, n, extra, ready[i], go[i])

    ts = [threading.Thread(target=here, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    body = _RING + "print(participant(sys.argv[1], int(sys.argv[2]), 4, int(sys.argv[3]), sys.argv[4], sys.argv[5]))\n"
    procs = {i: start(body, ds_path, str(i), str(extra), ready[i], go[i]) for i in range(2, n)}
    try:
        for r in ready:
            wait_for(r)
        t0 = time.monotonic()
        early: list[int] = []
        for i in range(n - 1 if staged else 0):
            open(go[i], "w").close()
            byte = L.key_byte(key(i + 1))
            assert _until(functools.partial(_waiting_for, ds_path + ".lck", byte)), f"open {i} is not waiting"
        if staged:
            time.sleep(0.05)  # several polls of each waiter
            early = [i for i in range(n) if i in results or (i in procs and procs[i].poll() is not None)]
        for g in go:
            open(g, "w").close()
        for t in ts:
            t.join(30)
            assert not t.is_alive()
        for i, p in procs.items():
            results[i] = finish(p, 30).strip()
        assert early == [], f"chosen before the ring closed: {results}"
        assert sorted(results.values()) == ["deadlock"] + ["proceeded"] * (n - 1), results
        assert time.monotonic() - t0 < 10
    finally:
        for p in procs.values():
            p.kill()
            p.communicate()


def test_registry_shrinks_when_the_top_slots_close(ds_path: str) -> None:
    define(ds_path)
    lck = ds_path + ".lck"
    opens = [L.RecordLocks(ds_path) for _ in range(5)]
    try:
        assert [o.slot for o in opens] == [0, 1, 2, 3, 4]
        opens[1].close()
        opens[2].close()  # holes below the top
        opens[4].close()
        assert os.path.getsize(lck) <= 4 * L.ENTRY_SIZE  # slot 3 is the highest live one
        opens[3].close()
        assert os.path.getsize(lck) <= L.ENTRY_SIZE  # only slot 0 is left: the holes went too
        again = L.RecordLocks(ds_path)
        assert again.slot == 1
        again.close()
    finally:
        for o in opens:
            o.close()


def test_slot_numbers_stay_small_under_concurrent_opens(ds_path: str) -> None:
    """Four processes open and close RLS opens as fast as they can for two seconds (each open is sometimes alone,
    sometimes not): at most four opens at a time, so the slots used stay below four (a small margin allowed), and
    so does the registry that every lock wait reads; once they are all closed, the registry is empty."""
    define(ds_path)
    lck = ds_path + ".lck"
    body = """
    from ksds import locks as L
    end = time.monotonic() + 2
    top = size = count = 0
    while time.monotonic() < end:
        rl = L.RecordLocks(sys.argv[1])
        top = max(top, rl.slot)
        size = max(size, os.path.getsize(sys.argv[1] + ".lck"))
        rl.close()
        count += 1
    print(top, size, count)
    """
    procs = [start(body, ds_path) for _ in range(4)]
    outs = [[int(v) for v in finish(p, 60).split()] for p in procs]
    assert sum(o[2] for o in outs) > 200  # they did race
    assert max(o[0] for o in outs) <= 5, outs
    assert max(o[1] for o in outs) <= 6 * L.ENTRY_SIZE, outs
    assert os.path.getsize(lck) == 0  # the last close emptied it
