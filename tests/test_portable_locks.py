"""The portable open-mode locks (flock lock files through portalocker, :mod:`ksds.portable_locks`), on Linux.

ksds uses them where there are no OFD locks (macOS, the BSDs); here ``KSDS_LOCKS=portable`` forces them in
worker processes, so CI runs the sharing rules with them: SHAREOPTIONS 1/2/3/4 refusals and sharing between
processes, the latch timeout, delete refusing while open, a killed process's locks, RLS refused, and the guard
against mixing them with OFD opens (this test process itself uses the OFD locks). The class is also used
directly, in this process, for what needs no second process (two opens of one process exclude each other).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import ksds
from ksds import locks as L
from ksds.portable_locks import PortableOpenLocks

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forces the portable locks on Linux")

WORKER = r"""
import json, os, sys
import ksds, ksds.locks
opens, batches = {}, {}
for line in sys.stdin:
    c = json.loads(line)
    op = c["op"]
    try:
        if op == "impl":
            out = {"impl": ksds.locks.IMPLEMENTATION, "cls": ksds.locks.OpenLocks.__name__, "pid": os.getpid()}
        elif op == "open":
            opens[c["name"]] = ksds.open(c["path"], **c.get("kw", {}))
            out = {}
        elif op == "close":
            opens.pop(c["name"]).close()
            out = {}
        elif op == "write":
            opens[c["name"]].write(bytes.fromhex(c["rec"]))
            out = {}
        elif op == "read":
            out = {"rec": opens[c["name"]].read(bytes.fromhex(c["key"])).hex()}
        elif op == "len":
            out = {"len": len(opens[c["name"]])}
        elif op == "batch":
            cm = opens[c["name"]].batch()
            cm.__enter__()
            batches[c["name"]] = cm
            out = {}
        elif op == "end":
            batches.pop(c["name"]).__exit__(None, None, None)
            out = {}
        elif op == "delete":
            out = {"removed": ksds.delete(c["path"])}
        else:
            raise ValueError(op)
        out["ok"] = True
    except Exception as e:
        out = {"ok": False, "err": type(e).__name__, "msg": str(e)}
    print(json.dumps(out), flush=True)
"""


class Worker:
    """A process with ``KSDS_LOCKS=portable`` that runs ksds requests sent as JSON lines."""

    def __init__(self) -> None:
        env = dict(os.environ, KSDS_LOCKS="portable")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.pid = self.proc.pid

    def __call__(self, op: str, **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"worker {self.pid} died"
        out: dict[str, Any] = json.loads(line)
        return out

    def ok(self, op: str, **kw: Any) -> dict[str, Any]:
        out = self(op, **kw)
        assert out["ok"], out
        return out

    def refused(self, op: str, err: str, **kw: Any) -> str:
        out = self(op, **kw)
        assert not out["ok"] and out["err"] == err, out
        return str(out["msg"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def workers() -> Iterator[tuple[Worker, Worker]]:
    a, b = Worker(), Worker()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def rec(n: int) -> str:
    return (b"%08d" % n + bytes(24)).hex()


def key(n: int) -> str:
    return (b"%08d" % n).hex()


def dataset(tmp_path: Any, share: int) -> str:
    path = str(tmp_path / f"so{share}.ksds")
    ksds.define(path, key_length=8, record_length=32, share_options=(share, 3))
    return path


def test_the_workers_use_the_portable_locks(workers: tuple[Worker, Worker], tmp_path: Any) -> None:
    a, _ = workers
    out = a.ok("impl")
    assert (out["impl"], out["cls"]) == ("portable", "PortableOpenLocks")
    assert L.IMPLEMENTATION == "ofd" and L.OpenLocks is L.OFDOpenLocks  # this process: the Linux default
    path = dataset(tmp_path, 1)
    a.ok("open", name="x", path=path)
    assert sorted(os.listdir(path + ".locks")) == ["latch", "open", "slot.0"]
    a.ok("close", name="x")


def test_shareoptions_1_one_updater_or_many_readers(workers: tuple[Worker, Worker], tmp_path: Any) -> None:
    a, b = workers
    path = dataset(tmp_path, 1)
    a.ok("open", name="u", path=path)
    assert "SHAREOPTIONS(1)" in b.refused("open", "DatasetInUseError", name="r", path=path, kw={"mode": "r"})
    b.refused("open", "DatasetInUseError", name="u", path=path)
    a.refused("open", "DatasetInUseError", name="r", path=path, kw={"mode": "r"})  # a second open of one process
    a.ok("write", name="u", rec=rec(1))
    a.ok("close", name="u")
    b.ok("open", name="r", path=path, kw={"mode": "r"})
    a.ok("open", name="r", path=path, kw={"mode": "r"})  # many readers
    assert b.ok("read", name="r", key=key(1))["rec"] == rec(1)
    a.refused("open", "DatasetInUseError", name="u", path=path)
    a.ok("close", name="r")
    b.ok("close", name="r")
    b.ok("open", name="u", path=path)
    b.ok("close", name="u")


def test_shareoptions_2_one_updater_many_readers(workers: tuple[Worker, Worker], tmp_path: Any) -> None:
    a, b = workers
    path = dataset(tmp_path, 2)
    a.ok("open", name="u", path=path)
    assert "SHAREOPTIONS(2)" in b.refused("open", "DatasetInUseError", name="u", path=path)
    b.ok("open", name="r", path=path, kw={"mode": "r"})
    for n in range(50):
        a.ok("write", name="u", rec=rec(n))
    assert b.ok("len", name="r")["len"] == 50  # the reader sees the updater's requests through the latch
    assert b.ok("read", name="r", key=key(49))["rec"] == rec(49)
    a.ok("close", name="u")
    b.ok("open", name="u", path=path)  # the updater is gone: another may open
    b.ok("close", name="u")
    b.ok("close", name="r")


@pytest.mark.parametrize("share", [3, 4])
def test_shareoptions_3_and_4_many_updaters(workers: tuple[Worker, Worker], tmp_path: Any, share: int) -> None:
    a, b = workers
    path = dataset(tmp_path, share)
    a.ok("open", name="u", path=path, kw={"durability": "power"})
    b.ok("open", name="u", path=path)
    for n in range(0, 200, 2):
        a.ok("write", name="u", rec=rec(n))
        b.ok("write", name="u", rec=rec(n + 1))
    assert a.ok("len", name="u")["len"] == b.ok("len", name="u")["len"] == 200
    assert b.ok("read", name="u", key=key(198))["rec"] == rec(198)
    a.ok("close", name="u")
    b.ok("close", name="u")
    assert not os.path.exists(path + "-wal")  # the last closer checkpointed and removed the log
    with ksds.open(path, mode="r") as ds:  # this process (OFD locks), now that no portable open is left
        assert len(ds) == 200 and ds.recovery is None


def test_latch_timeout_names_the_holder(workers: tuple[Worker, Worker], tmp_path: Any) -> None:
    a, b = workers
    path = dataset(tmp_path, 3)
    a.ok("open", name="u", path=path)
    b.ok("open", name="u", path=path, kw={"lock_timeout": 0.3})
    a.ok("batch", name="u")  # holds the latch until it ends
    t = time.monotonic()
    msg = b.refused("write", "LatchTimeoutError", name="u", rec=rec(7))
    assert 0.25 < time.monotonic() - t < 5
    assert f"process {a.pid}" in msg, msg  # Linux: /proc/PID/fdinfo lists flock locks too
    a.ok("end", name="u")
    b.ok("write", name="u", rec=rec(7))
    a.ok("close", name="u")
    b.ok("close", name="u")


def test_delete_refuses_while_open_then_removes_every_file(workers: tuple[Worker, Worker], tmp_path: Any) -> None:
    a, b = workers
    path = dataset(tmp_path, 2)
    a.ok("open", name="r", path=path, kw={"mode": "r"})
    assert "in use" in b.refused("delete", "DatasetInUseError", path=path)
    a.ok("close", name="r")
    removed = b.ok("delete", path=path)["removed"]
    assert path in removed and path + ".locks" in removed and path + ".locks/latch" in removed
    assert not [f for f in os.listdir(tmp_path) if f.startswith("so2.ksds")]


def test_a_killed_process_leaves_no_lock(workers: tuple[Worker, Worker], tmp_path: Any) -> None:
    _, b = workers
    path = dataset(tmp_path, 1)
    c = Worker()
    try:
        c.ok("open", name="u", path=path)
        c.ok("write", name="u", rec=rec(3))
        b.refused("open", "DatasetInUseError", name="u", path=path)
        os.kill(c.pid, signal.SIGKILL)
        c.proc.wait()
    finally:
        c.stop()
    b.ok("open", name="u", path=path)  # the kernel dropped its flock locks; this open recovers its log
    assert b.ok("read", name="u", key=key(3))["rec"] == rec(3)
    b.ok("close", name="u")


def test_rls_is_refused_with_the_reason(workers: tuple[Worker, Worker], tmp_path: Any) -> None:
    a, _ = workers
    path = dataset(tmp_path, 2)
    msg = a.refused("open", "KsdsError", name="x", path=path, kw={"sharing": "rls"})
    assert "sharing='rls' is not available" in msg and "KSDS_LOCKS=portable" in msg and "F_OFD_SETLK" in msg
    a.ok("open", name="x", path=path)  # nothing was left held
    a.ok("close", name="x")


def test_portable_and_ofd_opens_refuse_each_other(workers: tuple[Worker, Worker], tmp_path: Any) -> None:
    a, _ = workers
    path = dataset(tmp_path, 3)
    with ksds.open(path):  # OFD locks
        assert "OFD locks" in a.refused("open", "DatasetInUseError", name="u", path=path)
    a.ok("open", name="u", path=path)
    with pytest.raises(ksds.DatasetInUseError, match="portable locks"):
        ksds.open(path)
    with pytest.raises(ksds.DatasetInUseError):
        ksds.delete(path)  # the OFD alone() test sees the portable open (its byte 2**40 + 7)
    a.ok("close", name="u")
    with ksds.open(path):
        pass
    assert path + ".locks" in ksds.delete(path)  # an OFD delete removes the portable lock files too


# --- the class itself, two opens in this process -------------------------------------------------------------


def _fds(path: str) -> tuple[int, int]:
    return os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)


def test_two_opens_of_one_process_exclude_each_other(tmp_path: Any) -> None:
    path = dataset(tmp_path, 1)
    f1, f2 = _fds(path)
    one, two = PortableOpenLocks(f1, path), PortableOpenLocks(f2, path)
    try:
        one.latch(True)
        assert one.acquire(writable=True, rls=False, share_region=1)  # alone
        with pytest.raises(ksds.LatchTimeoutError, match=r"this process \(another open\)"):
            two.latch(False, timeout=0.1)
        one.unlatch()
        two.latch(True)
        with pytest.raises(ksds.DatasetInUseError):
            two.acquire(writable=False, rls=False, share_region=1)
        two.unlatch()
        assert one.alone() and not one.power_users()
        one.close()
        two.close()
        one, two = PortableOpenLocks(f1, path), PortableOpenLocks(f2, path)
        for locks in (one, two):
            locks.latch(True)
            locks.acquire(writable=True, rls=False, share_region=3)
            locks.unlatch()
        assert not one.alone() and not two.alone()
        two.latch(True)
        two.announce_power()
        two.unlatch()
        assert one.power_users() and two.power_users()
        two.close()
        assert one.alone() and not one.power_users()
        assert sorted(n for n in os.listdir(path + ".locks") if n.startswith("slot.")) == ["slot.0", "slot.1"]
    finally:
        one.close()
        two.close()
        os.close(f1)
        os.close(f2)


def test_a_latch_got_on_a_deleted_latch_file_is_taken_again(tmp_path: Any) -> None:
    path = dataset(tmp_path, 3)
    f1, f2 = _fds(path)
    holder, waiter = PortableOpenLocks(f1, path), PortableOpenLocks(f2, path)
    done: list[BaseException | None] = []

    def wait() -> None:
        try:
            waiter.latch(True, timeout=5.0)
            done.append(None)
        except BaseException as e:  # pragma: no cover - reported below
            done.append(e)

    try:
        holder.latch(True)
        old = os.stat(path + ".locks/latch").st_ino
        t = threading.Thread(target=wait)
        t.start()
        time.sleep(0.2)  # the waiter has opened the old latch file and waits for it
        assert L.remove_lock_dir(path)[-1] == path + ".locks"  # as ksds.delete does, holding the latch
        holder.unlatch()  # the waiter now gets the latch of a deleted file: it must open the path again
        t.join(5)
        assert done == [None]
        new = os.stat(path + ".locks/latch").st_ino
        assert new != old and os.fstat(waiter._latch).st_ino == new
        with pytest.raises(ksds.LatchTimeoutError):
            PortableOpenLocks(f1, path).latch(False, timeout=0.05)  # the waiter holds the current latch
    finally:
        holder.close()
        waiter.close()
        os.close(f1)
        os.close(f2)
