"""Crash safety: the kill/power-cut harness, and each kind of on-disk damage detected, repaired or refused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import ksds
from ksds.format import HEADER_SIZE, decode_header
from ksds.journal import Journal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KL, RL = 8, 100


def rec(k: int, v: int = 0) -> bytes:
    return (b"%08d" % k) + (b"value-%d" % v).ljust(RL - KL, b".")


def load(path: str, keys: range, *, abandon: bool, durability: str = "process") -> None:
    ds = ksds.open(path, durability=durability)
    for k in keys:
        ds.write(rec(k))
    if abandon:
        ds._abandon()
    else:
        ds.close()


@pytest.fixture
def path(tmp_path: object) -> str:
    p = os.path.join(str(tmp_path), "c.ksds")
    ksds.define(p, key_length=KL, record_length=RL, ci_size=512, cis_per_ca=4)
    return p


def keys_in(path: str) -> list[int]:
    with ksds.open(path, "r") as ds:
        return [int(ds.key_of(r)) for r in ds]


def test_harness_kills_and_power_cuts() -> None:
    """At least 200 kill points and 100 power cuts, none losing an acknowledged request."""
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "crashtest.py"), "--kills", "200", "--power-cuts", "100",
         "--seed", "20261125"],
        capture_output=True, text=True, timeout=900,
    )
    summary = out.stdout.strip().splitlines()[-1]
    print(summary)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "200 kills and 100 power cuts" in summary
    assert "0 lost acknowledged requests, 0 integrity errors" in summary


def test_recovery_after_kill_is_reported(path: str) -> None:
    load(path, range(300), abandon=True)
    with ksds.open(path) as ds:
        assert ds.recovery is not None and ds.recovery.transactions == 300
        assert len(ds) == 300
    with ksds.open(path) as ds:
        assert ds.recovery is None  # closed cleanly this time
    assert ksds.examine(path).sound


def test_torn_ci_write_repaired_from_log(path: str) -> None:
    ds = ksds.open(path)
    for k in range(200):
        ds.write(rec(k))
    assert ds._pager is not None
    seq, i = ksds.btree.path_to(ds._pager.base, b"%08d" % 100)[-1]
    ci = seq.ptrs[i]
    ds._abandon()
    # tear a data CI in place: its second half is garbage, as a torn write would leave it
    with open(path, "r+b") as f:
        f.seek(ci * 512 + 256)
        f.write(os.urandom(256))
    with ksds.open(path) as ds:
        assert ds.recovery is not None
        assert [int(ds.key_of(r)) for r in ds] == list(range(200))
    assert ksds.examine(path).sound


def test_torn_ci_without_log_is_named(path: str) -> None:
    load(path, range(200), abandon=False)  # clean close: the log is gone, nothing to repair from
    with ksds.open(path, "r") as probe:
        seq, i = ksds.btree.path_to(probe._pager.base, b"%08d" % 100)[-1]
        ci = seq.ptrs[i]
    with open(path, "r+b") as f:
        f.seek(ci * 512 + 300)
        f.write(b"\x00" * 100 + b"\xff" * 100)
    with ksds.open(path) as ds:
        with pytest.raises(ksds.DamagedCIError) as e:
            ds.read(b"%08d" % 100)
        assert e.value.ci == ci and f"CI {ci}" in str(e.value)
        assert ds.read(b"%08d" % 0)[:KL] == b"%08d" % 0  # the other CIs are fine
    report = ksds.examine(path)
    assert not report.sound and any(f.ci == ci for f in report.errors)


def test_truncated_file_refused(path: str) -> None:
    load(path, range(500), abandon=False)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 3 * 512)
    with pytest.raises(ksds.CorruptionError, match="truncated"):
        ksds.open(path)
    report = ksds.examine(path)
    assert not report.sound and any("truncated" in f.message for f in report.errors)


def test_truncated_file_with_log_still_refused(path: str) -> None:
    load(path, range(100), abandon=False)
    load(path, range(100, 200), abandon=True)
    with open(path, "r+b") as f:
        f.truncate(5 * 512)
    with pytest.raises(ksds.CorruptionError, match="truncated"):
        ksds.open(path)


def test_log_cut_in_the_middle_of_a_frame(path: str) -> None:
    load(path, range(50), abandon=True)
    log = path + "-wal"
    size = os.path.getsize(log)
    with open(log, "r+b") as f:
        f.truncate(size - 100)  # the last request's frame is cut
    with ksds.open(path) as ds:
        assert ds.recovery is not None
        assert ds.recovery.transactions == 49
        assert ds.recovery.discarded_bytes > 0
        assert [int(ds.key_of(r)) for r in ds] == list(range(49))
    assert ksds.examine(path).sound


def test_flipped_bit_in_last_log_frame_is_a_torn_tail(path: str) -> None:
    load(path, range(50), abandon=True)
    log = path + "-wal"
    size = os.path.getsize(log)
    with open(log, "r+b") as f:
        f.seek(size - 200)
        b = f.read(1)
        f.seek(size - 200)
        f.write(bytes([b[0] ^ 0x10]))
    with ksds.open(path) as ds:
        assert ds.recovery is not None
        assert ds.recovery.damaged_at is not None
        assert "torn frame" in str(ds.recovery)
        assert [int(ds.key_of(r)) for r in ds] == list(range(49))


def test_flipped_bit_in_the_middle_of_the_log_is_refused(path: str) -> None:
    load(path, range(50), abandon=True)
    log = path + "-wal"
    with open(log, "rb") as f:
        data = f.read()
    with open(path, "rb") as f:
        defn, created, _ = decode_header(f.read(HEADER_SIZE), path)
    journal = Journal(log, defn.ci_size, created, {0: defn.layout})
    assert journal.join(False)
    frames = journal.frames()
    journal.close(remove=False)
    at = frames[20][0]  # the 21st frame: about ten transactions (a CI frame and a commit each) come before it
    off = at + 77
    with open(log, "r+b") as f:
        f.seek(off)
        f.write(bytes([data[off] ^ 0x01]))
    with pytest.raises(ksds.JournalCorruptError, match=f"offset {at}"):
        ksds.open(path)
    report = ksds.examine(path)
    assert not report.sound
    # VERIFY RECOVER keeps what came before the damage, and says what it gave up
    result = ksds.verify(path, recover=True)
    assert result.log_bytes_discarded == len(data) - at
    got = keys_in(path)
    assert got == list(range(len(got))) and 5 <= len(got) < 50
    assert ksds.examine(path).sound


def test_damaged_header_is_named(path: str) -> None:
    load(path, range(10), abandon=False)
    with open(path, "r+b") as f:
        f.seek(60)
        b = f.read(1)
        f.seek(60)
        f.write(bytes([b[0] ^ 0x80]))
    with pytest.raises(ksds.CorruptionError, match="header"):
        ksds.open(path)


def test_stale_log_of_an_earlier_data_set_is_ignored(tmp_path: object) -> None:
    p = os.path.join(str(tmp_path), "s.ksds")
    ksds.define(p, key_length=KL, record_length=RL, ci_size=512)
    load(p, range(20), abandon=True)
    log = p + "-wal"
    with open(log, "rb") as f:
        stale = f.read()
    os.unlink(p)
    os.unlink(log)
    ksds.define(p, key_length=KL, record_length=RL, ci_size=512)
    with open(log, "wb") as f:
        f.write(stale)  # a log left behind by the deleted data set
    with ksds.open(p) as ds:
        assert ds.recovery is None and len(ds) == 0


def test_power_mode_batch_and_sync(path: str) -> None:
    with ksds.open(path, durability="power") as ds:
        with ds.batch():
            for k in range(100):
                ds.write(rec(k))
        ds.sync()
        assert len(ds) == 100
    with ksds.open(path) as ds:
        with pytest.raises(RuntimeError):
            with ds.batch():
                ds.write(rec(1000))
                raise RuntimeError("block fails")
        assert ds.get(b"%08d" % 1000) is None and len(ds) == 100


def test_power_mode_log_survives_a_kill(path: str) -> None:
    """Power mode preallocates its log: the header must still be there for recovery (a regression)."""
    load(path, range(50), abandon=True, durability="power")
    with ksds.open(path) as ds:
        assert ds.recovery is not None and ds.recovery.transactions == 50
        assert len(ds) == 50


def test_torn_log_header_falls_back_to_the_previous_generation(path: str) -> None:
    """A crash while a checkpoint writes the new log header (before any frame of the new generation): the
    previous generation's header slot and its frames still serve, and replay them to the same state."""
    ds = ksds.open(path)
    for k in range(30):
        ds.write(rec(k))
    ds.checkpoint()  # the CIs are in place and synced; the new generation's header goes to the other slot
    ds._abandon()
    with open(path + "-wal", "r+b") as f:
        f.seek(0)
        f.write(b"\xff" * 100)  # that header write torn
    with ksds.open(path) as ds:
        assert ds.recovery is not None
        assert [int(ds.key_of(r)) for r in ds] == list(range(30))
    assert ksds.examine(path).sound


def test_the_fault_plan_runs_the_production_io_path(tmp_path, monkeypatch) -> None:
    """With faults on, a multi-CI commit is still one pwritev of all its pieces and a power-mode sync is still one
    fdatasync: the plan counts and traces events, then calls the production FileIO methods."""
    from ksds import faults, fileio

    calls = {"pwritev": 0, "fdatasync": 0, "fsync": 0, "pwrite": 0}
    real = {name: getattr(os, name) for name in calls}

    def counting(name):
        def call(*args):
            calls[name] += 1
            return real[name](*args)

        return call

    plan = faults.Plan(f"trace={tmp_path / 'trace'}")
    monkeypatch.setattr(fileio, "IO", plan)
    path = str(tmp_path / "p.ksds")
    ksds.define(path, key_length=8, record_length=100, ci_size=512, cis_per_ca=4)
    with ksds.open(path, durability="power") as ds:
        for name in calls:
            monkeypatch.setattr(os, name, counting(name))
        with ds.batch():
            for n in range(40):  # several CIs, CI and CA splits: one transaction of many frames
                ds.write(b"%08d" % (n * 7919 % 1000) + bytes(92))
        assert calls["pwritev"] == 1 and calls["fdatasync"] == 1 and calls["fsync"] == 0, calls
        monkeypatch.undo()
    assert plan.counts["io"] >= 2  # the plan saw the write and the sync as events
    assert os.path.getsize(tmp_path / "trace") > 0


def _as_version_2(path: str) -> None:
    """Rewrite the log of ``path`` (left by a crash) as ksds before record-level logging wrote it: log version 2,
    fixed-size frames of whole images, the commit flag and the state on each transaction's last frame."""
    from ksds.format import STATE_SIZE, crc32c
    from ksds.journal import FLAG_COMMIT_V2, FRAME_HEADER_V2, LOG_HEADER, LOG_MAGIC, LOG_SLOT

    with open(path, "rb") as f:
        defn, created, _ = decode_header(f.read(HEADER_SIZE), path)
    log = path + "-wal"
    journal = Journal(log, defn.ci_size, created, {0: defn.layout})
    replay = journal.read()
    assert replay.transactions and replay.version == 3
    head = LOG_HEADER.pack(LOG_MAGIC, 2, defn.ci_size, journal.salt, created, journal.generation, replay.durable_cis)
    head += crc32c(head).to_bytes(4, "big")
    out = bytearray(2 * LOG_SLOT)
    slot = (journal.generation % 2) * LOG_SLOT
    out[slot : slot + len(head)] = head
    for txn, images, state in replay.transactions:
        frames = images or [(0, bytes(defn.ci_size))]
        for i, (ci, image) in enumerate(frames):
            last = i == len(frames) - 1
            fh = FRAME_HEADER_V2.pack(journal.salt, ci, txn, i, FLAG_COMMIT_V2 if last else 0,
                                      state if last else bytes(STATE_SIZE))
            out += fh + image + crc32c(image, crc32c(fh)).to_bytes(4, "big")
    with open(log, "wb") as f:
        f.write(out)


def test_a_version_2_log_is_recovered_and_converted(path: str) -> None:
    """A data set left unclosed by a ksds that wrote log version 2 is recovered by this one: the log is rewritten
    in this version (one transaction of whole images, synced, renamed over it) before recovery appends to it."""
    load(path, range(40), abandon=True)
    with ksds.open(path) as ds:  # a reference: the same records, recovered from the log as written
        ds.checkpoint()
    want = keys_in(path)
    load(path, range(40, 90), abandon=True)
    _as_version_2(path)
    with ksds.open(path) as ds:
        assert ds.recovery is not None and ds.recovery.transactions == 50
        assert [int(ds.key_of(r)) for r in ds] == want + list(range(40, 90))
    assert not os.path.exists(path + "-wal") and not os.path.exists(path + "-wal.convert")
    assert ksds.examine(path).sound
