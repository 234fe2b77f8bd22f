"""The shared state of processes on one data set (PATH-shm, ksds.coherence): reads with no system call when nothing
changed, never a stale read of an acknowledged change, and the file's loss or a death inside a change survived."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import time

import pytest
from procs import PY, finish, script, start, wait_for

import ksds
from ksds.coherence import COUNTER_AT, shm_path

KEY = 8
RL = 40


def key(k: int) -> bytes:
    return b"%08d" % k


def rec(k: int, v: int = 0) -> bytes:
    return key(k) + b"%032d" % v


def define(path: str, n: int = 0, share: tuple[int, int] = (3, 3)) -> None:
    ksds.define(path, key_length=KEY, record_length=RL, ci_size=512, cis_per_ca=4, share_options=share)
    with ksds.open(path, "rw") as ds, ds.batch():
        for k in range(n):
            ds.write(rec(k))


def counter(path: str) -> int:
    with open(shm_path(path), "rb") as f:
        f.seek(COUNTER_AT)
        return int(struct.unpack("<Q", f.read(8))[0])


@pytest.fixture
def path(tmp_path) -> str:
    return str(tmp_path / "s.ksds")


@pytest.mark.parametrize("sharing", ["nonrls", "rls"])
def test_a_read_needs_no_system_call_when_nothing_changed(path: str, sharing: str, monkeypatch) -> None:
    define(path, 100)
    with ksds.open(path, "rw", sharing=sharing) as ds, ksds.open(path, "r", sharing=sharing) as other:
        for k in range(100):  # the first request reads the log under the latch; the pool fills
            assert ds.read(key(k)) == rec(k)
        calls = []
        import fcntl

        real_fcntl, real_pread = fcntl.fcntl, os.pread
        monkeypatch.setattr(fcntl, "fcntl", lambda *a: calls.append("fcntl") or real_fcntl(*a))
        monkeypatch.setattr(os, "pread", lambda *a: calls.append("pread") or real_pread(*a))
        for k in range(100):
            assert ds.read(key(k)) == rec(k)
        assert calls == []  # no latch, no log read, no CI read
        monkeypatch.setattr(fcntl, "fcntl", real_fcntl)
        monkeypatch.setattr(os, "pread", real_pread)
        assert other.read(key(1)) == rec(1)
        ds.write(rec(200))  # a change: the counter moves, the other open reads the log under the latch once
        assert other.read(key(200)) == rec(200)
        assert counter(path) % 2 == 0


def test_reads_see_every_acknowledged_write_of_another_process(path: str) -> None:
    """A writer acknowledges record i (writes i to a file after its write returned); a reader that has seen i in
    that file must find record i: the reader's no-latch path never serves a view older than an acknowledged
    change."""
    define(path, 10)
    acks = path + ".acks"
    writer = start(
        """
    ds = ksds.open(sys.argv[1], "rw")
    out = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    for i in range(1000, 1000 + int(sys.argv[3])):
        ds.write(b"%08d" % i + b"%032d" % 0)
        os.write(out, b"%d\\n" % i)
    ds.close()
    """,
        path,
        acks,
        "1500",
    )
    checked = 0
    with ksds.open(path, "r") as ds:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with open(acks, "rb") as f:
                    lines = f.read().split()
            except FileNotFoundError:
                continue
            if lines:
                last = int(lines[-1])
                assert ds.get(key(last)) == rec(last), f"acknowledged record {last} not seen"
                checked += 1
            if writer.poll() is not None:
                break
        finish(writer)
        assert len(ds) == 1510
    assert checked > 20


def test_a_writer_killed_inside_a_change_leaves_the_others_going(path: str) -> None:
    """A writer killed between its log write and the end of its change leaves the counter odd: the next request of
    another open reads the log under the latch (nothing acknowledged is lost, its last transaction is there) and
    ends the change, and reads go without the latch again."""
    define(path, 10)
    with ksds.open(path, "rw") as ds:
        assert ds.read(key(1)) == rec(1)
        env = dict(os.environ, KSDS_FAULTS="crash=40;point=log-written")
        child = subprocess.run(
            [
                PY,
                "-c",
                script(
                    """
    ds = ksds.open(sys.argv[1], "rw")
    for i in range(1000, 1100):
        ds.write(b"%08d" % i + b"%032d" % 0)
        print(i, flush=True)
    """
                ),
                path,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert child.returncode == -signal.SIGKILL, child.stderr
        acked = [int(x) for x in child.stdout.split()]
        assert len(acked) == 39
        assert counter(path) % 2 == 1  # it died inside its change
        for i in acked:
            assert ds.read(key(i)) == rec(i)
        assert ds.get(key(1039)) == rec(1039)  # committed (its frames and commit frame are in the log), not acked
        # the first read took the latch (the counter was odd), read the whole log and ended the dead change: a
        # reader without the latch elsewhere then catches up with record 1039 too, never reads around it
        assert counter(path) % 2 == 0
        with ksds.open(path, "r") as other:
            assert other.get(key(1039)) == rec(1039)
        ds.write(rec(5000))
        assert counter(path) % 2 == 0
        assert ds.read(key(5000)) == rec(5000)
    with ksds.open(path, "r") as ds:
        assert len(ds) == 10 + 40 + 1
    report = ksds.examine(path)
    assert report.sound, report


def test_a_deleted_shared_state_refuses_new_opens_while_others_use_it(path: str) -> None:
    define(path, 5)
    with ksds.open(path, "rw") as ds:
        ds.read(key(1))
        os.unlink(shm_path(path))
        with pytest.raises(ksds.DatasetInUseError, match="shared-state file"):
            ksds.open(path, "r")
        ds.write(rec(50))
    with ksds.open(path, "r") as ds:  # nobody has it open: a new one is made
        assert ds.read(key(50)) == rec(50)
    assert os.path.getsize(shm_path(path)) == 4096


@pytest.mark.parametrize("damage", ["garbage", "short", "other data set"])
def test_a_damaged_shared_state_is_rebuilt_at_open(path: str, damage: str) -> None:
    define(path, 5)
    with ksds.open(path, "rw") as ds:
        ds.write(rec(9))
    spath = shm_path(path)
    if damage == "garbage":
        with open(spath, "wb") as f:
            f.write(os.urandom(4096))
    elif damage == "short":
        os.truncate(spath, 100)
    else:
        with open(spath, "r+b") as f:
            f.seek(16)
            f.write(b"\x01" * 8)
    with ksds.open(path, "rw") as ds, ksds.open(path, "r") as other:
        ds.write(rec(10))
        assert other.read(key(10)) == rec(10)
        assert other.read(key(9)) == rec(9)
    assert os.path.getsize(spath) == 4096


def test_exclusive_opens_have_no_shared_state(path: str) -> None:
    define(path, 5, share=(1, 3))
    with ksds.open(path, "rw") as ds:
        ds.write(rec(9))
    assert not os.path.exists(shm_path(path))


def test_delete_removes_the_shared_state(path: str) -> None:
    define(path, 5)
    with ksds.open(path, "r") as ds:
        ds.read(key(1))
    assert os.path.exists(shm_path(path))
    removed = ksds.delete(path)
    assert shm_path(path) in removed
    assert not os.path.exists(shm_path(path))


def test_an_open_that_cannot_write_the_shared_state_is_refused_while_others_use_it(path: str) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes any file")
    define(path, 5)
    with ksds.open(path, "rw") as ds:
        ds.read(key(1))
        os.chmod(shm_path(path), 0o444)
        with pytest.raises(ksds.KsdsError, match="cannot write"):
            ksds.open(path, "rw")


def test_a_browse_in_shared_mode_sees_changes_of_another_process(path: str) -> None:
    define(path, 20)
    with ksds.open(path, "r") as ds:
        it = ds.browse()
        assert next(it) == rec(0)
        child = "ds = ksds.open(sys.argv[1], 'rw'); ds.rewrite(b'%08d' % 1 + b'%032d' % 7); ds.erase(b'%08d' % 2)"
        out = subprocess.run([PY, "-c", script(child + "; ds.close()"), path], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        assert next(it) == rec(1, 7)
        assert [r[:KEY] for r in it] == [key(k) for k in range(3, 20)]


@pytest.mark.parametrize("sharing", ["nonrls", "rls"])
def test_reads_without_the_latch_through_checkpoints_and_splits(path: str, sharing: str) -> None:
    """A writer checkpoints every few transactions (a tiny log) while it splits CIs and rewrites one record; a
    reader, which catches up with the log without the latch, never sees a value older than one acknowledged
    before its read began, never sees one go backwards, and never fails."""
    define(path, 50)
    acks = path + ".acks"
    writer = start(
        """
    import ksds.pager
    ksds.pager.CHECKPOINT_BYTES = 24 * 1024
    ds = ksds.open(sys.argv[1], "rw", sharing=sys.argv[3])
    out = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    for i in range(1, 1201):
        ds.rewrite(b"%08d" % 7 + b"%032d" % i)
        ds.write(b"%08d" % (100000 + i * 7919 % 100000) + b"%032d" % i)
        os.write(out, b"%d\\n" % i)
    ds.close()
    """,
        path,
        acks,
        sharing,
    )
    last = 0
    reads = 0
    with ksds.open(path, "r" if sharing == "nonrls" else "rw", sharing=sharing) as ds:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with open(acks, "rb") as f:
                    lines = f.read().split()
            except FileNotFoundError:
                lines = []
            acked = int(lines[-1]) if lines else 0
            v = int(ds.read(key(7))[KEY:])
            assert v >= acked, f"read {v} after {acked} was acknowledged"
            assert v >= last, f"went back from {last} to {v}"
            last = v
            if acked:
                k = 100000 + acked * 7919 % 100000
                assert ds.get(key(k)) == key(k) + b"%032d" % acked
            reads += 1
            if writer.poll() is not None:
                break
        finish(writer)
        assert int(ds.read(key(7))[KEY:]) == 1200
        assert len(ds) == 50 + 1200
    assert reads > 50
    assert ksds.examine(path).sound


def test_a_reader_catches_up_with_long_chains_of_record_operations(path: str) -> None:
    """Another process rewrites one record 3,000 times (each a frame of record operations on the same CI): a
    reader's catch-up keeps them as pending images and builds the CI once, when it reads it, without recursion;
    the other records of that CI and the checkpoint at close are right."""
    define(path, 20)
    with ksds.open(path, "r") as ds:
        assert ds.read(key(3)) == rec(3)
        child = (
            "ds = ksds.open(sys.argv[1], 'rw')\n"
            "for i in range(1, 3001):\n"
            "    ds.rewrite(b'%08d' % 3 + b'%032d' % i)\n"
            "ds.close()"
        )
        out = subprocess.run([PY, "-c", script(child), path], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert ds.read(key(3)) == rec(3, 3000)
        assert [ds.read(key(k)) for k in range(20)] == [rec(k, 3000 if k == 3 else 0) for k in range(20)]
    with ksds.open(path, "r") as ds:
        assert ds.read(key(3)) == rec(3, 3000)
    assert ksds.examine(path).sound


# --- found by an adversarial review of the reads without the latch --------------------------------------------


def test_a_reader_whose_view_predates_a_checkpoint_in_place_does_not_read_around_it(path: str) -> None:
    """A writer is killed after its checkpoint wrote the CIs in place but before its change ended (the change counter
    one above the reader's view, the in-place counter even again): the reader must not read its old view over the
    newer file (that gave a false "older image than its index expects" on almost every read)."""
    ksds.define(path, key_length=KEY, record_length=RL, ci_size=512, cis_per_ca=4, share_options=(3, 3))
    with ksds.open(path, "rw") as ds, ds.batch():
        for k in range(2000):
            ds.write(rec(k))
    writer = """
    import ksds.pager
    ds = ksds.open(sys.argv[1], "rw")
    for k in range(0, 2000, 97):
        ds.rewrite(b"%08d" % k + b"%032d" % 1)
    open(sys.argv[2], "w").close()
    while not os.path.exists(sys.argv[3]):
        time.sleep(0.005)
    ksds.pager.CHECKPOINT_BYTES = 0  # the next commit checkpoints, and dies after its writes in place
    for k in range(1, 2000, 2):
        ds.rewrite(b"%08d" % k + b"%032d" % 2)
    """
    with ksds.open(path, "r", buffer_space=4096) as rd:
        assert rd.read(key(5)) == rec(5)
        go, ready = path + ".go", path + ".ready"
        env = dict(os.environ, KSDS_FAULTS="crash=1;point=checkpoint-header")
        child = subprocess.Popen([PY, "-c", script(writer), path, go, ready], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        wait_for(go)
        assert rd.read(key(97)) == rec(97, 1)  # caught up: the view is current
        open(ready, "w").close()
        _, err = child.communicate(timeout=60)
        assert child.returncode == -signal.SIGKILL, err
        for k in range(2000):
            got = rd.get(key(k))  # raised DamagedCIError before the fix
            assert got in (rec(k, 0), rec(k, 1), rec(k, 2))
            assert got == rec(k, 1 if k % 97 == 0 else 0) or (k % 2 and got == rec(k, 2))
    assert ksds.examine(path).sound


def test_readers_agree_after_a_writer_dies_with_its_commit_in_the_log(path: str) -> None:
    """A writer killed after its commit frame reached the log: a reader behind takes the latch and reads that
    transaction; a reader whose view was current must then read it too, not the record before it."""
    define(path, 100)
    with ksds.open(path, "r") as a, ksds.open(path, "r") as b, ksds.open(path, "rw") as w:
        assert b.read(key(1)) == rec(1)
        w.write(rec(500))  # b is behind now
        assert a.read(key(1)) == rec(1)  # a is current
        env = dict(os.environ, KSDS_FAULTS="crash=1;point=log-written")
        child = "ds = ksds.open(sys.argv[1], 'rw'); ds.rewrite(b'%08d' % 7 + b'%032d' % 1)"
        r = subprocess.run([PY, "-c", script(child), path], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == -signal.SIGKILL, r.stderr
        assert b.read(key(7)) == rec(7, 1)
        assert a.read(key(7)) == rec(7, 1)


@pytest.mark.parametrize("durability", ["power", "process"])
def test_reads_never_fail_while_a_writer_checkpoints_often(path: str, durability: str) -> None:
    """A writer rewriting records with a checkpoint every 64 KiB of log (power mode adds a data sync after the
    writes in place, inside the change); a reader with a tiny pool reads at random, with pauses: no read fails and
    none misses its record."""
    ksds.define(path, key_length=KEY, record_length=RL, ci_size=512, cis_per_ca=4, share_options=(3, 3))
    n = 3000
    with ksds.open(path, "rw") as ds, ds.batch():
        for k in range(n):
            ds.write(rec(k))
    writer = start(
        """
    import ksds.pager
    ksds.pager.CHECKPOINT_BYTES = 64 << 10
    ds = ksds.open(sys.argv[1], "rw", durability=sys.argv[2])
    end = time.monotonic() + 4
    i = 0
    while time.monotonic() < end:
        i += 1
        ds.rewrite(b"%08d" % (i * 7919 % 3000) + b"%032d" % i)
    print(i)
    ds.close()
    """,
        path,
        durability,
    )
    rnd = __import__("random").Random(1)
    reads = 0
    with ksds.open(path, "r", buffer_space=8192) as rd:
        while writer.poll() is None:
            k = rnd.randrange(n)
            got = rd.get(key(k))
            assert got is not None and got[:KEY] == key(k)
            reads += 1
            if rnd.random() < 0.5:
                time.sleep(rnd.random() * 0.002)
        commits = int(finish(writer))
    assert reads > 100 and commits > 100
