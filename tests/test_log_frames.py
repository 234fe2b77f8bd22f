"""Adversarial tests of record-level logging (log version 3): ops frames beside image frames.

A data CI already imaged in the log's generation logs its record operations (KIND_OPS) instead of its image; every
reader of the log (recovery, another process's scan, the read-only view) rebuilds the CI from its image and the
operations after it. These tests try to catch that going wrong:

* a mixed workload (inserts, erases, rewrites, upserts, batches with many changes to one CI, CI and CA splits,
  reclaim of emptied CIs and CAs, rolled-back batches) on several definitions (key offsets, 2 to 511 records a
  CI), exclusive, RLS and SHAREOPTIONS(4), crashed, recovers to exactly the model, and the log obeys the rules
  (every CI's first frame in a generation is an image; an ops frame's base is committed earlier in the generation;
  the images rebuilt from the log are the writer's own, byte for byte);
* a writer killed after its log write, inside a torn log write, or inside a checkpoint's torn in-place write,
  then its recovery killed too; power cuts replayed from a trace;
* the log cut at every frame boundary and inside its last frames (cut short, zeros or an older generation after
  it), bytes damaged anywhere, ops frames that check but do not rebuild: exactly a prefix of the committed
  transactions, or JournalCorruptError naming the damaged frame (VERIFY RECOVER keeps what is before it);
* two opens (RLS, SHAREOPTIONS(3) and (4)) changing the same CIs in turn, so that each applies the other's images;
  a SHAREOPTIONS(2) reader that closes last and writes the images it rebuilt; processes incrementing shared
  counters, one killed in the middle;
* readers of a data set being written, without opening it (``wal_view``'s live view, ``ksds print``, ``ksds
  listcat``, EXAMINE);
* checkpoints: the first change of a CI after one (its own or another open's) is a whole image, so a torn
  in-place write is repaired; a batch of more than ``max_ops`` operations on a CI logs its image.
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from procs import PY, finish, start, wait_for

import ksds
import ksds.ci
import ksds.pager
from ksds import faults, fileio
from ksds.format import HEADER_SIZE, crc32c, decode_header
from ksds.journal import FRAME_HEAD, KIND_COMMIT, KIND_IMAGE, KIND_OPS, OP, Journal, frame_length
from ksds.wal_view import View, records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
#: a RAM file system if there is one: recoveries and power-mode syncs stay cheap
TMP_ROOT = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


# --- definitions, records, a deterministic workload ---------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    name: str
    kl: int
    ko: int
    rl: int
    ci: int
    cpa: int
    freespace: tuple[int, int] = (0, 0)

    @property
    def max_ops(self) -> int:
        return max(1, (self.ci // 2) // (self.rl + 4))

    @property
    def per_ci(self) -> int:
        return (self.ci - 16) // self.rl

    def define(self, path: str, share: tuple[int, int] = (1, 3)) -> None:
        ksds.define(
            path, key_length=self.kl, key_offset=self.ko, record_length=self.rl, ci_size=self.ci,
            cis_per_ca=self.cpa, freespace=self.freespace, share_options=share,
        )

    def key(self, n: int) -> bytes:
        return n.to_bytes(self.kl, "big")

    def rec(self, key: bytes, v: int) -> bytes:
        rest = self.rl - self.ko - self.kl
        return bytes([v & 0xFF]) * self.ko + key + ((b"%d;" % v) * (rest // 2 + 1))[:rest]


LAYOUTS = [
    Layout("k8-rl100", 8, 0, 100, 512, 4),  # max_ops 2
    Layout("k4-off10-rl24", 4, 10, 24, 512, 2),  # 20 records a CI, max_ops 9: long ops frames
    Layout("k2-off3-rl240", 2, 3, 240, 512, 3),  # 2 records a CI, max_ops 1: splits and reclaim all the time
    Layout("k6-off1-rl60-ci1024-fs", 6, 1, 60, 1024, 3, (10, 20)),  # FREESPACE, a CI of two sectors
    Layout("k3-rl40-ci4096", 3, 0, 40, 4096, 2),  # 102 records a CI, max_ops 46: ops frames of up to 2 KiB
]
BY_NAME = {lay.name: lay for lay in LAYOUTS}


class Boom(Exception):
    """Raised inside a batch to roll it back."""


@dataclass
class Unit:
    """One request, or one batch: at most one transaction."""

    ops: list[tuple[str, bytes]]
    batch: bool = False
    rollback: bool = False


@dataclass
class Workload:
    """A deterministic stream of units that are valid against :attr:`model` (which each unit updates as it is
    made): the same seed gives the same units in any process, whatever the data set does."""

    lay: Layout
    seed: int
    model: dict[bytes, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rnd = random.Random(self.seed)
        self.v = 0
        self.space = min(3000, 256**self.lay.kl)
        self.seq_left = 0
        self.seq_next = 0
        self.erase_left = 0
        self.erase_from = b""

    def _rec(self, key: bytes) -> bytes:
        self.v += 1
        return self.lay.rec(key, self.v)

    def _absent(self, m: dict[bytes, bytes]) -> bytes | None:
        for _ in range(30):
            k = self.lay.key(self.rnd.randrange(self.space))
            if k not in m:
                return k
        return None

    def values(self) -> list[bytes]:
        m = self.model
        return [m[k] for k in sorted(m)]

    def next_unit(self) -> Unit:
        while True:
            unit = self._make()
            if unit is not None and unit.ops:
                return unit

    def _make(self) -> Unit | None:
        m = self.model
        rnd = self.rnd
        lay = self.lay
        if self.seq_left:  # a run of ascending inserts, one request each: appends, CA splits, new CAs
            self.seq_left -= 1
            while self.seq_next < self.space and lay.key(self.seq_next) in m:
                self.seq_next += 1
            if self.seq_next >= self.space:
                self.seq_left = 0
                return None
            k = lay.key(self.seq_next)
            m[k] = self._rec(k)
            return Unit([("w", m[k])])
        if self.erase_left:  # a run of erases of neighbouring records, one request each: CIs and CAs emptied
            self.erase_left -= 1
            after = [k for k in sorted(m) if k >= self.erase_from]
            if not after:
                self.erase_left = 0
                return None
            k = after[0]
            del m[k]
            return Unit([("e", k)])
        r = rnd.random()
        if r < 0.22 or len(m) < 12:
            k = self._absent(m)
            if k is None:
                return None
            m[k] = self._rec(k)
            return Unit([("w", m[k])])
        keys = sorted(m)
        if r < 0.27:
            self.seq_left = rnd.randint(5, 40)
            self.seq_next = rnd.randrange(self.space)
            return None
        if r < 0.45:
            k = rnd.choice(keys)
            m[k] = self._rec(k)
            return Unit([("r", m[k])])
        if r < 0.51:
            k = rnd.choice(keys) if rnd.random() < 0.5 else self._absent(m)
            if k is None:
                return None
            m[k] = self._rec(k)
            return Unit([("p", m[k])])
        if r < 0.61:
            k = rnd.choice(keys)
            del m[k]
            return Unit([("e", k)])
        if r < 0.64:
            self.erase_left = rnd.randint(5, 3 * lay.per_ci * lay.cpa)
            self.erase_from = rnd.choice(keys)
            return None
        if r < 0.82:
            return Unit(self._one_ci(m, keys), batch=True)
        if r < 0.86:  # many inserts in one transaction: CI and CA splits inside a batch
            ops = []
            for _ in range(rnd.randint(10, 50)):
                k = self._absent(m)
                if k is not None:
                    m[k] = self._rec(k)
                    ops.append(("w", m[k]))
            return Unit(ops, batch=True)
        if r < 0.875 and len(keys) > 40:  # a quarter of the records erased in one transaction: CA reclaim
            i = rnd.randrange(len(keys) - len(keys) // 4)
            ops = []
            for k in keys[i : i + len(keys) // 4]:
                del m[k]
                ops.append(("e", k))
            return Unit(ops, batch=True)
        if r < 0.92:  # a batch that rolls back: none of it happened
            return Unit(self._one_ci(dict(m), keys), batch=True, rollback=True)
        k = rnd.choice(keys)
        if rnd.random() < 0.5:
            return Unit([("dup", m[k])])  # WRITE of a key that exists: refused, no transaction
        k = self._absent(m)
        return None if k is None else Unit([("nf", self._rec(k))])  # REWRITE of a key that does not exist

    def _one_ci(self, m: dict[bytes, bytes], keys: list[bytes]) -> list[tuple[str, bytes]]:
        """Up to 2 * max_ops + 2 changes to the records around one key (most of them in one CI): rewrites (the
        same record several times too), erases, inserts between them, a refused duplicate."""
        rnd = self.rnd
        lay = self.lay
        i = rnd.randrange(len(keys))
        lo = max(0, i - lay.per_ci // 2)
        near = keys[lo : lo + lay.per_ci]
        ops: list[tuple[str, bytes]] = []
        for _ in range(rnd.randint(1, 2 * lay.max_ops + 2)):
            c = rnd.random()
            if near and c < 0.45:
                k = rnd.choice(near)
                m[k] = self._rec(k)
                ops.append(("r", m[k]))
            elif near and c < 0.6:
                k = near.pop(rnd.randrange(len(near)))
                del m[k]
                ops.append(("e", k))
            elif c < 0.85:
                if near:
                    a, b = int.from_bytes(near[0], "big"), int.from_bytes(near[-1], "big")
                    k = lay.key(rnd.randint(max(0, a - 1), min(256**lay.kl - 1, b + 1)))
                else:
                    k = self._absent(m) or lay.key(0)
                if k in m:
                    continue
                m[k] = self._rec(k)
                ops.append(("w", m[k]))
                near = sorted([*near, k])
            elif near and c < 0.92:
                ops.append(("dup", m[rnd.choice(near)]))
            elif near:
                k = near[0]
                for _ in range(rnd.randint(2, 4)):
                    m[k] = self._rec(k)
                    ops.append(("r", m[k]))
        return ops


def _do(ds: ksds.Dataset, kind: str, data: bytes) -> None:
    if kind == "w":
        ds.write(data)
    elif kind == "r":
        ds.rewrite(data)
    elif kind == "p":
        ds.put(data)
    elif kind == "e":
        ds.erase(data)
    elif kind == "dup":
        with pytest.raises(ksds.DuplicateKeyError):
            ds.write(data)
    else:
        with pytest.raises(ksds.RecordNotFoundError):
            ds.rewrite(data)


def run_unit(ds: ksds.Dataset, unit: Unit) -> None:
    if not unit.batch:
        _do(ds, *unit.ops[0])
        return
    try:
        with ds.batch():
            for op in unit.ops:
                _do(ds, *op)
            if unit.rollback:
                raise Boom
    except Boom:
        pass


# --- reading the log ------------------------------------------------------------------------------------------------


def journal_of(path: str) -> Journal:
    with open(path, "rb") as f:
        defn, created, _ = decode_header(f.read(HEADER_SIZE), path)
    return Journal(path + "-wal", defn.ci_size, created, {0: defn.layout})


def frame_table(path: str) -> list[tuple[int, int, int, int, int]]:
    """The valid frames of the log's current generation: (offset, end offset, ci, txn, kind)."""
    j = journal_of(path)
    assert j.join(False)
    try:
        out = []
        for pos, ci, txn, kind in j.frames():
            length = FRAME_HEAD.unpack(os.pread(j.fd, FRAME_HEAD.size, pos))[-1]
            out.append((pos, pos + frame_length(length), ci, txn, kind))
        return out
    finally:
        j.close(remove=False)


def check_generation(table: list[tuple[int, int, int, int, int]]) -> set[int]:
    """The rules of a generation: each CI's first frame is a whole image; an ops frame's CI has a frame in an
    earlier (committed) transaction; frames follow in txn order, each transaction closed by its commit frame
    (but the last, perhaps). Returns the kinds seen."""
    committed: set[int] = set()
    pending: set[int] = set()
    kinds = set()
    txn = None
    for pos, _, ci, t, kind in table:
        kinds.add(kind)
        assert txn is None or t in (txn, txn + 1), f"frame at {pos}: txn {t} after {txn}"
        if kind == KIND_COMMIT:
            committed |= pending
            pending = set()
        elif kind == KIND_OPS:
            assert ci in committed, f"ops frame at {pos} for CI {ci}, which has no image committed before it"
            assert ci not in pending, f"CI {ci} has two frames in txn {t}"
            pending.add(ci)
        else:
            assert ci not in pending, f"CI {ci} has two frames in txn {t}"
            pending.add(ci)
        txn = t
    return kinds


def log_images(path: str) -> dict[int, bytes]:
    """Each CI's newest image as recovery would rebuild it from the log."""
    out: dict[int, bytes] = {}
    for _, images, _ in journal_of(path).read().transactions:
        out.update((ci, image) for ci, image in images if ci)
    return out


def check_images_match_log(ds: ksds.Dataset, path: str) -> None:
    """The images an open keeps for the CIs of the log are the images the log rebuilds, byte for byte."""
    p = ds._pager
    assert p is not None
    rebuilt = log_images(path)
    assert set(rebuilt) == set(p.images)
    for ci, image in rebuilt.items():
        got = p.committed_image(ci)  # a reader's catch-up may leave record operations not applied yet
        assert got == image, f"CI {ci}: the log rebuilds another image than the writer's"


def header_txn(path: str) -> int:
    with open(path, "rb") as f:
        return decode_header(f.read(HEADER_SIZE), path)[2].txn


@pytest.fixture
def work() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="ksds-frames-", dir=TMP_ROOT)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def contents(path: str) -> tuple[list[bytes], ksds.Recovery | None]:
    with ksds.open(path) as ds:
        got = list(ds)
        assert len(ds) == len(got)
        return got, ds.recovery


# --- a mixed workload, crashed ------------------------------------------------------------------------------------


MIXED = [(lay, "exclusive") for lay in LAYOUTS] + [(BY_NAME["k4-off10-rl24"], "rls"),
                                                    (BY_NAME["k2-off3-rl240"], "shareoptions4")]


@pytest.mark.parametrize("lay,mode", MIXED, ids=[f"{lay.name}-{mode}" for lay, mode in MIXED])
def test_mixed_workload_crash_recovers_exactly(work: str, lay: Layout, mode: str) -> None:
    """The workload, crashed three times (once just after a checkpoint's new generation began): each time the log
    follows the rules, rebuilds the writer's own images, the read-only view of the crashed data set is the model,
    and recovery gives exactly the model. Exclusive, RLS, and SHAREOPTIONS(4) (buffers refreshed every request)."""
    path = os.path.join(work, "m.ksds")
    lay.define(path, share=(4, 3) if mode == "shareoptions4" else (1, 3))
    w = Workload(lay, 1000 + LAYOUTS.index(lay))
    buffer = 6 * lay.ci  # a small pool: CIs are evicted and taken back from the open's images
    kw = {"sharing": "rls"} if mode == "rls" else {}

    def reopen() -> ksds.Dataset:
        return ksds.open(path, buffer_space=buffer, **kw)  # type: ignore[arg-type]

    ds = reopen()
    most_cas = most_cis = 0
    reclaimed_ca = reclaimed_ci = False
    for round_ in range(6):
        for n in range(100):
            if round_ == 1 and n == 50:
                ds.checkpoint()  # the crash after it has only the new generation to replay
            run_unit(ds, w.next_unit())
            st = ds._pager.state
            reclaimed_ca |= st.ca_count < most_cas
            reclaimed_ci |= st.data_cis < most_cis
            most_cas, most_cis = max(most_cas, st.ca_count), max(most_cis, st.data_cis)
            if n % 10 == 0:
                assert list(ds) == w.values()
        table = frame_table(path)
        kinds = check_generation(table)
        assert {KIND_IMAGE, KIND_OPS, KIND_COMMIT} <= kinds, kinds
        check_images_match_log(ds, path)
        commits = sum(1 for f in table if f[4] == KIND_COMMIT)
        if round_ == 5:
            ds.close()
            break
        ds._abandon()
        with View(path) as view:  # the file with the log's images (rebuilt from its frames) laid over it
            assert list(records(view)) == w.values()
        report = ksds.examine(path)
        assert report.sound, [str(f) for f in report.findings]
        assert report.needs_recovery and report.records == len(w.model)
        ds = reopen()
        assert ds.recovery is not None and ds.recovery.transactions == commits
        assert ds.recovery.discarded_frames == 0 and ds.recovery.damaged_at is None
        assert list(ds) == w.values()
        assert list(ds.browse(backward=True)) == w.values()[::-1]
        assert len(ds) == len(w.model)
    got, rec = contents(path)
    assert rec is None and got == w.values()
    report = ksds.examine(path)
    assert report.sound and report.records == len(w.model)
    with ksds.open(path, "r") as ds:
        st = ds.stats()
    assert st["SPLITS-CI"] > 0 and st["SPLITS-CA"] > 0
    assert reclaimed_ca and reclaimed_ci


def _calibrate(lay: Layout, seed: int, units: int, work: str, checkpoint: int, log: bool) -> int:
    """The number of the fault event (as ``KSDS_FAULTS`` counts them: writes, syncs and crash points) that is, after
    unit 40 of this workload, the first multi-frame log write of 2 KiB or more (``log``), or the first write of a CI
    in place by a checkpoint that changes both its halves (else): the workload run in this process through a
    recording fault plan."""
    path = os.path.join(work, "calibrate.ksds")
    lay.define(path)

    class Recorder(faults.Plan):
        def __init__(self) -> None:
            super().__init__("")
            self.hits: list[int] = []
            self.unit = 0

        def pwritev(self, fd: int, file: int, parts: list[bytes], offset: int) -> int:
            n = super().pwritev(fd, file, parts, offset)  # counts the event first
            if log and file == fileio.LOG and n >= 2048 and self.unit > 40:
                self.hits.append(self.events)
            return n

        def pwrite(self, fd: int, file: int, data: bytes | bytearray | memoryview, offset: int) -> None:
            was = os.pread(fd, len(data), offset)
            super().pwrite(fd, file, data, offset)
            if not log and file == fileio.DATA and offset > 0 and len(data) >= 1024 and self.unit > 40:
                half = len(data) // 2
                if was[:half] != data[:half] and was[half:] != data[half:]:  # torn, it is neither image
                    self.hits.append(self.events)

    plan = Recorder()
    mp = pytest.MonkeyPatch()
    mp.setattr(fileio, "IO", plan)
    mp.setattr(faults, "ACTIVE", plan)
    mp.setattr(ksds.pager, "CHECKPOINT_BYTES", checkpoint)
    try:
        w = Workload(lay, seed)
        ds = ksds.open(path, buffer_space=6 * lay.ci)
        for n in range(1, units + 1):
            plan.unit = n
            run_unit(ds, w.next_unit())
        ds._abandon()
    finally:
        mp.undo()
    assert plan.hits, "no write of that kind to tear"
    return plan.hits[0]


CHILD = """
sys.path.insert(0, sys.argv[1])
import ksds.pager
import test_log_frames as t
ksds.pager.CHECKPOINT_BYTES = int(sys.argv[7])
lay = t.BY_NAME[sys.argv[2]]
w = t.Workload(lay, int(sys.argv[3]))
ds = ksds.open(sys.argv[4], buffer_space=6 * lay.ci)
fd = os.open(sys.argv[5], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
for n in range(1, int(sys.argv[6]) + 1):
    t.run_unit(ds, w.next_unit())
    os.write(fd, b"%d\\n" % n)
ds.close()
"""
RECOVER = "ds = ksds.open(sys.argv[1])\nds.close()\n"


def _damaged_cis(path: str) -> list[int]:
    """The CIs of the data file that fail their check (a torn in-place write)."""
    with open(path, "rb") as f:
        data = f.read()
    defn = decode_header(data[:HEADER_SIZE], path)[0]
    codec = ksds.ci.Codec(defn, path)
    bad = []
    for ci in range(1, len(data) // defn.ci_size):  # (CIs made since the last checkpoint are past its HI-U-RBA)
        try:
            codec.check(data[ci * defn.ci_size : (ci + 1) * defn.ci_size], ci)
        except ksds.DamagedCIError:
            bad.append(ci)
    return bad


@pytest.mark.parametrize("how", ["after-log-write", "torn-log-write", "torn-checkpoint-write"])
def test_killed_writer_recovers_exactly(work: str, how: str) -> None:
    """A writer process SIGKILLed right after a transaction's log write (committed, not acknowledged: recovery
    keeps it), in the middle of a multi-frame log write torn in half (recovery drops that transaction, never half
    of it), or in the middle of a checkpoint's in-place write of a 1 KiB CI torn in half (the log, its images and
    ops frames, repairs it). Then the recovery itself is killed in the middle of writing the CIs in place; the
    recovery after it gives the same data set."""
    seed, units = 77, 160
    checkpoint = 8 << 20
    if how == "after-log-write":
        lay = BY_NAME["k8-rl100"]
        spec = "point=log-written;crash=110"
    elif how == "torn-log-write":
        lay = BY_NAME["k4-off10-rl24"]
        spec = f"crash={_calibrate(lay, seed, units, work, checkpoint, log=True)};torn=1"
    else:
        lay = BY_NAME["k6-off1-rl60-ci1024-fs"]
        checkpoint = 8192
        spec = f"crash={_calibrate(lay, seed, units, work, checkpoint, log=False)};torn=1"
    path = os.path.join(work, "k.ksds")
    acks = os.path.join(work, "acks")
    lay.define(path)
    env = dict(os.environ, KSDS_FAULTS=spec)
    p = subprocess.run(
        [PY, "-c", "import ksds, os, sys\n" + CHILD, TESTS, lay.name, str(seed), path, acks, str(units),
         str(checkpoint)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    with open(acks) as f:
        acked = int(f.read().split()[-1])
    kinds = check_generation(frame_table(path))
    assert KIND_OPS in kinds and KIND_IMAGE in kinds
    replay = journal_of(path).read()
    if how == "torn-log-write":
        assert replay.discarded_frames or replay.discarded_bytes or replay.damaged_at is not None
    if how == "torn-checkpoint-write":
        assert _damaged_cis(path)
    w = Workload(lay, seed)
    for _ in range(acked + (0 if how == "torn-log-write" else 1)):  # the unit in flight committed, or not
        w.next_unit()
    env = dict(os.environ, KSDS_FAULTS="point=ci-written;crash=2")
    p = subprocess.run([PY, "-c", "import ksds, os, sys\n" + RECOVER, path], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    got, rec = contents(path)
    assert rec is not None
    assert got == w.values()
    assert not _damaged_cis(path)
    assert ksds.examine(path).sound


# --- power cuts ---------------------------------------------------------------------------------------------------


def _crashtest():
    spec = importlib.util.spec_from_file_location("ksds_crashtest", os.path.join(ROOT, "tools", "crashtest.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # (its dataclasses look their module up)
    spec.loader.exec_module(mod)
    return mod


def test_power_cuts_recover_a_prefix_holding_every_acknowledged_unit(work: str, monkeypatch) -> None:
    """A traced power-mode run (checkpoints every few KiB, so generations begin and in-place writes of 1 KiB CIs
    may be torn) cut at random points, unsynced writes dropped or torn: recovery gives exactly the model after a
    prefix of the units that holds every acknowledged one, with no exception."""
    crashtest = _crashtest()
    lay = BY_NAME["k6-off1-rl60-ci1024-fs"]
    path = os.path.join(work, "p.ksds")
    lay.define(path)
    with open(path, "rb") as f:
        initial = f.read()
    trace = os.path.join(work, "trace")
    plan = faults.Plan(f"trace={trace}")
    monkeypatch.setattr(fileio, "IO", plan)
    monkeypatch.setattr(ksds.pager, "CHECKPOINT_BYTES", 24 * 1024)
    w = Workload(lay, 4242)
    snaps = [tuple(w.values())]
    ds = ksds.open(path, durability="power", buffer_space=8 * lay.ci)
    kinds: set[int] = set()
    generations = set()
    for n in range(1, 241):
        run_unit(ds, w.next_unit())
        plan.ack(n)
        snaps.append(tuple(w.values()))
        kinds |= check_generation(frame_table(path))
        generations.add(ds.log_stats()["LOG-GENERATION"])
    ds.close()
    os.close(plan.trace_fd)
    monkeypatch.undo()
    assert KIND_OPS in kinds and len(generations) >= 3
    entries = crashtest.parse_trace(trace)
    rnd = random.Random(99)
    cuts = {rnd.randrange(len(entries) + 1) for _ in range(60)}
    # and cuts inside checkpoints: after some CIs are written in place, before the data file's sync
    windows, begun = [], None
    for i, (op, file, offset, _) in enumerate(entries):
        if op == faults.OP_WRITE and file == faults.FILE_DATA and offset > 0 and begun is None:
            begun = i
        elif op == faults.OP_SYNC and file == faults.FILE_DATA and begun is not None:
            windows.append((begun, i))
            begun = None
    assert len(windows) >= 3
    cuts |= {rnd.randint(a + 1, b) for a, b in windows for _ in range(4)}
    cuts = sorted(cuts)
    index = {s: i for i, s in enumerate(snaps)}  # the first unit count after which the model was that
    torn = 0  # cuts that left a CI torn in place (a checkpoint's write not synced yet)
    for c in cuts:
        files, acked = crashtest.replay_trace(initial, entries, c, rnd)
        d = os.path.join(work, "cut")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        cpath = os.path.join(d, "p.ksds")
        with open(cpath, "wb") as f:
            f.write(files[faults.FILE_DATA])
        if files[faults.FILE_LOG] is not None:
            with open(cpath + "-wal", "wb") as f:
                f.write(files[faults.FILE_LOG])
        torn += bool(_damaged_cis(cpath))
        got, _ = contents(cpath)
        matches = [i for i, s in enumerate(snaps) if s == tuple(got)]
        assert matches and max(matches) >= acked, (
            f"cut {c}/{len(entries)}: not the state after a prefix of >= {acked} units "
            f"(first match: {index.get(tuple(got))})"
        )
        report = ksds.examine(cpath)
        assert report.sound, (c, [str(f) for f in report.findings][:3])
    assert torn >= 3, torn


# --- the log cut short or damaged ---------------------------------------------------------------------------------


@dataclass
class Crashed:
    """A data set left by a crash, its log, and the model after each transaction of it."""

    data: bytes
    log: bytes
    snaps: dict[int, list[bytes]]
    table: list[tuple[int, int, int, int, int]]
    old: bytes

    def expected(self, txn: int) -> list[bytes]:
        """The model after the last unit whose transaction is ``txn`` or earlier."""
        return self.snaps[max(t for t in self.snaps if t <= txn)]

    def last_commit_before(self, pos: int) -> int:
        """The txn of the last commit frame that ends at or before ``pos`` (the header's txn if none)."""
        done = [t for _, end, _, t, kind in self.table if kind == KIND_COMMIT and end <= pos]
        return max(done, default=min(self.snaps))

    def recover(self, work: str, log: bytes) -> tuple[str, list[bytes], ksds.Recovery | None]:
        d = os.path.join(work, "trial")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        path = os.path.join(d, "t.ksds")
        with open(path, "wb") as f:
            f.write(self.data)
        with open(path + "-wal", "wb") as f:
            f.write(log)
        got, rec = contents(path)
        return path, got, rec


def _crashed(work: str, lay: Layout, seed: int, units: int, rewrite_last: bool = False) -> Crashed:
    """A data set with some records closed cleanly, then ``units`` units, a checkpoint, and a third as many units
    again (a second generation written over the first: its frames end where the first's are still there, with
    another salt), then (``rewrite_last``) the lowest key rewritten twice, so that the last transaction is one ops
    frame and its commit; then a crash."""
    path = os.path.join(work, "src.ksds")
    lay.define(path)
    w = Workload(lay, seed)
    with ksds.open(path) as ds:  # some records, closed cleanly: the log starts empty at the next open
        for _ in range(40):
            run_unit(ds, w.next_unit())
    ds = ksds.open(path)
    for _ in range(units):
        run_unit(ds, w.next_unit())
    ds.checkpoint()
    snaps = {ds._pager.state.txn: w.values()}
    with open(path + "-wal", "rb") as f:
        old = f.read()  # the first generation's frames under the second's header
    for _ in range(units // 3):
        run_unit(ds, w.next_unit())
        snaps[ds._pager.state.txn] = w.values()
    if rewrite_last:
        key = min(w.model)
        for v in (998, 999):
            w.model[key] = lay.rec(key, v)
            ds.rewrite(w.model[key])
            snaps[ds._pager.state.txn] = w.values()
    ds._abandon()
    with open(path, "rb") as f:
        data = f.read()
    with open(path + "-wal", "rb") as f:
        log = f.read()
    table = frame_table(path)
    kinds = check_generation(table)
    assert KIND_OPS in kinds and KIND_IMAGE in kinds
    assert table[-1][4] == KIND_COMMIT and table[-1][1] < len(log) == len(old)
    return Crashed(data, log, snaps, table, old)


def test_log_cut_at_every_frame_boundary_and_inside_the_last_frames(work: str) -> None:
    """The log ends (cut short, zeros after, or the older generation's bytes after, as a reused or preallocated
    log whose last writes did not reach the disk leaves it) at every frame boundary and at random offsets inside
    the last frames: recovery gives exactly the transactions committed before that point, never an exception."""
    c = _crashed(work, BY_NAME["k4-off10-rl24"], 31, 90)
    end = c.table[-1][1]
    cuts = [512] + [e for _, e, _, _, _ in c.table]
    rnd = random.Random(3)
    cuts += [rnd.randrange(c.table[-6][0], end) for _ in range(25)]
    starts = {pos for pos, _, _, _, _ in c.table} | {end}
    for cut in cuts:
        want = c.expected(c.last_commit_before(cut))
        committed = sum(1 for _, e, _, _, kind in c.table if kind == KIND_COMMIT and e <= cut)
        variants = {
            "cut": c.log[:cut],
            "zeros": c.log[:cut] + bytes(end - cut + 4096),
            "older generation": c.log[:cut] + c.old[cut:],
        }
        for name, log in variants.items():
            _, got, rec = c.recover(work, log)
            assert got == want, f"log {name} at {cut}"
            assert rec is not None and rec.transactions == committed, (name, cut, rec)
            if name == "cut" and cut not in starts:
                assert rec.discarded_bytes > 0, (cut, rec)  # a partial frame, named as one


def _damage(log: bytes, at: int) -> bytes:
    b = bytearray(log)
    b[at] ^= 1 << (at % 8)
    return bytes(b)


def test_damaged_byte_anywhere_in_the_log(work: str) -> None:
    """One damaged byte in a frame's header, payload or CRC (not its padding): in the last transaction a torn tail
    (that transaction dropped); before it, JournalCorruptError naming the frame's offset, and VERIFY RECOVER keeps
    exactly the transactions before the damaged frame's."""
    c = _crashed(work, BY_NAME["k8-rl100"], 32, 90, rewrite_last=True)
    rnd = random.Random(8)
    last_txn = c.table[-1][3]
    ops = [f for f in c.table if f[4] == KIND_OPS]
    targets = [ops[len(ops) // 2], ops[-1] if ops[-1][3] == last_txn else ops[-2]]
    targets += rnd.sample(c.table, 30)
    for pos, _, _, txn, _ in targets:
        length = FRAME_HEAD.unpack_from(c.log, pos)[-1]
        for at in (pos + FRAME_HEAD.size + rnd.randrange(length), pos + rnd.randrange(FRAME_HEAD.size),
                   pos + FRAME_HEAD.size + length + rnd.randrange(4)):
            log = _damage(c.log, at)
            if txn == last_txn:
                _, got, rec = c.recover(work, log)
                assert got == c.expected(txn - 1), f"damage at {at} (frame {pos}, the last txn)"
                assert rec is not None
                continue
            with pytest.raises(ksds.JournalCorruptError, match=f"offset {pos}\\b"):
                c.recover(work, log)
            path = os.path.join(work, "trial", "t.ksds")
            report = ksds.examine(path)
            assert not report.sound
            result = ksds.verify(path, recover=True)
            assert result.log_bytes_discarded == len(log) - pos
            got, _ = contents(path)
            assert got == c.expected(txn - 1), f"damage at {at} (frame {pos}, txn {txn}): verify --recover"
            assert ksds.examine(path).sound


def _forge(log: bytes, pos: int, edit) -> bytes:
    """The log with the payload of the frame at ``pos`` edited by ``edit(bytearray)`` and its CRC made right
    again: a frame that checks but whose operations do not rebuild its CI."""
    b = bytearray(log)
    length = FRAME_HEAD.unpack_from(b, pos)[-1]
    hs = FRAME_HEAD.size
    payload = bytearray(b[pos + hs : pos + hs + length])
    edit(payload)
    assert len(payload) == length
    b[pos + hs : pos + hs + length] = payload
    b[pos + hs + length : pos + hs + length + 4] = crc32c(bytes(b[pos : pos + hs + length])).to_bytes(4, "big")
    return bytes(b)


def _flip_record_byte(payload: bytearray) -> None:
    op = OP.unpack_from(payload, 16)
    assert op[0] in (1, 3)  # an insert or a replace: a record follows
    payload[16 + OP.size + 5] ^= 0x40


def _bad_slot(payload: bytearray) -> None:
    OP.pack_into(payload, 16, *OP.unpack_from(payload, 16)[:2], 60000)


@pytest.mark.parametrize("edit", [_flip_record_byte, _bad_slot], ids=["record", "slot"])
def test_ops_frame_that_checks_but_does_not_rebuild(work: str, edit) -> None:
    """An ops frame whose CRC is right but whose operations do not rebuild its CI (another writer's bug, or damage
    that the frame CRC misses): the frame cannot be applied. Before the last transaction: refused naming its
    offset, VERIFY RECOVER keeps exactly the transactions before it; in the last: a damaged tail, dropped."""
    c = _crashed(work, BY_NAME["k8-rl100"], 33, 90, rewrite_last=True)
    last_txn = c.table[-1][3]
    assert c.table[-2][4] == KIND_OPS and c.table[-2][3] == last_txn
    # in the last transaction
    pos = c.table[-2][0]
    _, got, rec = c.recover(work, _forge(c.log, pos, edit))
    assert got == c.expected(last_txn - 1)
    assert rec is not None and rec.damaged_at == pos
    # in the middle
    hs = FRAME_HEAD.size
    middle = [f for f in c.table if f[4] == KIND_OPS and f[3] < last_txn - 5 and c.log[f[0] + hs + 16] in (1, 3)]
    pos, _, _, txn, _ = middle[len(middle) // 2]  # its first operation an insert or a replace
    log = _forge(c.log, pos, edit)
    with pytest.raises(ksds.JournalCorruptError, match=f"offset {pos}\\b"):
        c.recover(work, log)
    path = os.path.join(work, "trial", "t.ksds")
    result = ksds.verify(path, recover=True)
    assert result.log_bytes_discarded == len(log) - pos
    got, _ = contents(path)
    assert got == c.expected(txn - 1)
    assert ksds.examine(path).sound


# --- max_ops and checkpoints ---------------------------------------------------------------------------------------


def _last_frames(path: str) -> list[tuple[int, int]]:
    """(ci, kind) of the last transaction's frames, without its commit frame."""
    table = frame_table(path)
    txn = table[-1][3]
    assert table[-1][4] == KIND_COMMIT
    return [(ci, kind) for _, _, ci, t, kind in table if t == txn and kind != KIND_COMMIT]


def _r40(k: int, v: int) -> bytes:
    return b"%08d" % k + b"%032d" % v


def test_max_ops_boundary(work: str) -> None:
    """A batch of exactly max_ops operations on one CI logs them; one more and the CI's image is logged."""
    path = os.path.join(work, "o.ksds")
    ksds.define(path, key_length=8, record_length=40, ci_size=512, cis_per_ca=4)
    model = {k: _r40(k, 0) for k in range(10)}
    ds = ksds.open(path)
    for k in range(10):
        ds.write(model[k])
    assert ds.stats()["DATA-CIS"] == 1
    mx = ds._pager.max_ops
    assert mx == (512 // 2) // 44 == 5
    (ci, _), = _last_frames(path)

    def batch(changes: list[tuple[str, int, int]]) -> list[tuple[int, int]]:
        with ds.batch():
            for kind, k, v in changes:
                if kind == "r":
                    ds.rewrite(_r40(k, v))
                    model[k] = _r40(k, v)
                elif kind == "w":
                    ds.write(_r40(k, v))
                    model[k] = _r40(k, v)
                else:
                    ds.erase(b"%08d" % k)
                    del model[k]
        return _last_frames(path)

    assert batch([("r", k, 1) for k in range(mx)]) == [(ci, KIND_OPS)]
    assert batch([("r", k, 2) for k in range(mx + 1)]) == [(ci, KIND_IMAGE)]
    assert batch([("r", 3, v) for v in range(10, 10 + mx)]) == [(ci, KIND_OPS)]  # one record, mx times
    assert batch([("r", 3, v) for v in range(20, 21 + mx)]) == [(ci, KIND_IMAGE)]
    assert batch([("e", 1, 0), ("w", 1, 5), ("r", 2, 5), ("e", 9, 0), ("w", 11, 5)]) == [(ci, KIND_OPS)]
    assert batch([("e", 0, 0), ("e", 1, 0), ("e", 2, 0), ("w", 0, 6), ("w", 1, 6), ("w", 2, 6)]) == [(ci, KIND_IMAGE)]
    ds.rewrite(_r40(4, 7))
    model[4] = _r40(4, 7)
    table = frame_table(path)
    pos, end, fci, _, kind = table[-2]
    assert (fci, kind) == (ci, KIND_OPS) and end - pos == frame_length(16 + OP.size + 40)
    check_images_match_log(ds, path)
    ds._abandon()
    got, rec = contents(path)
    assert rec is not None and got == [model[k] for k in sorted(model)]
    assert ksds.examine(path).sound


def _tear(path: str, ci: int, ci_size: int) -> None:
    """The second half of CI ``ci`` in the file is garbage, as a torn in-place write leaves it."""
    with open(path, "r+b") as f:
        f.seek(ci * ci_size + ci_size // 2)
        f.write(os.urandom(ci_size // 2))


def _ci_of(ds: ksds.Dataset, key: bytes) -> int:
    seq, i = ksds.btree.path_to(ds._pager.base, key)[-1]
    return seq.ptrs[i]


def test_first_change_after_a_checkpoint_is_an_image(work: str) -> None:
    path = os.path.join(work, "c.ksds")
    ksds.define(path, key_length=8, record_length=40, ci_size=512, cis_per_ca=4)
    model = {k: _r40(k, 0) for k in range(0, 60, 2)}
    ds = ksds.open(path)
    for k in sorted(model):
        ds.write(model[k])
    ci5, ci40 = _ci_of(ds, b"%08d" % 4), _ci_of(ds, b"%08d" % 40)
    assert ci5 != ci40
    ds.rewrite(_r40(4, 1))
    assert _last_frames(path) == [(ci5, KIND_OPS)]
    ds.checkpoint()
    assert frame_table(path) == []
    for v, want in ((2, KIND_IMAGE), (3, KIND_OPS), (4, KIND_OPS)):
        ds.rewrite(_r40(4, v))
        model[4] = _r40(4, v)
        assert _last_frames(path) == [(ci5, want)]
    ds.erase(b"%08d" % 40)
    del model[40]
    assert _last_frames(path) == [(ci40, KIND_IMAGE)]
    ds.write(_r40(41, 1))
    model[41] = _r40(41, 1)
    assert _last_frames(path) == [(ci40, KIND_OPS)]
    ds._abandon()
    # both CIs torn in place (as the next checkpoint's writes could be): their images are in this generation
    _tear(path, ci5, 512)
    _tear(path, ci40, 512)
    got, rec = contents(path)
    assert rec is not None and got == [model[k] for k in sorted(model)]
    assert ksds.examine(path).sound


def test_automatic_checkpoints_image_each_ci_again(work: str, monkeypatch) -> None:
    """Checkpoints inside commits (a small CHECKPOINT_BYTES): in every generation each CI's first frame is its
    image, so a CI torn in place after many generations is still repaired."""
    monkeypatch.setattr(ksds.pager, "CHECKPOINT_BYTES", 4096)
    path = os.path.join(work, "a.ksds")
    ksds.define(path, key_length=8, record_length=40, ci_size=512, cis_per_ca=4)
    model = {k: _r40(k, 0) for k in range(30)}
    ds = ksds.open(path)
    for k in range(30):
        ds.write(model[k])
    gens = set()
    seen: set[int] = set()
    for i in range(150):
        k = (i * 7) % 30
        if i % 10 == 9:
            with ds.batch():
                for kk in (k, (k + 1) % 30):
                    model[kk] = _r40(kk, i + 1)
                    ds.rewrite(model[kk])
        else:
            model[k] = _r40(k, i + 1)
            ds.rewrite(model[k])
        seen |= check_generation(frame_table(path))
        gens.add(ds.log_stats()["LOG-GENERATION"])
    assert len(gens) >= 8 and KIND_OPS in seen
    ds._abandon()
    logged = {ci for _, _, ci, _, kind in frame_table(path) if kind != KIND_COMMIT}
    assert logged
    for ci in logged:
        _tear(path, ci, 512)  # every CI of the current generation torn in place: the log repairs them
    got, rec = contents(path)
    assert rec is not None and got == [model[k] for k in sorted(model)]
    assert ksds.examine(path).sound


# --- sharing --------------------------------------------------------------------------------------------------------

SHARING = [("rls", (1, 3)), ("nonrls", (3, 3))]


@pytest.mark.parametrize("sharing,share", [*SHARING, ("nonrls", (4, 3))], ids=["rls", "shareoptions3", "shareoptions4"])
def test_two_opens_change_the_same_cis_in_turn(work: str, sharing: str, share: tuple[int, int]) -> None:
    """Two opens of one data set take turns changing records of the same CIs: each one's ops frames apply to
    images the other logged. Each sees the other's changes exactly (a counter read is the value last written),
    both keep the images the log rebuilds, and a crash of both recovers to the model."""
    path = os.path.join(work, "s.ksds")
    ksds.define(path, key_length=8, record_length=40, ci_size=512, cis_per_ca=4, share_options=share)
    a = ksds.open(path, sharing=sharing, lock_timeout=10)
    b = ksds.open(path, sharing=sharing, lock_timeout=10)
    model = {k: _r40(k, 0) for k in range(0, 80, 2)}
    for k in sorted(model):
        a.write(model[k])
    rnd = random.Random(12)
    #: CI -> the open that wrote its newest frame in this generation
    owner = {ci: "a" for _, _, ci, _, kind in frame_table(path) if kind != KIND_COMMIT}
    cross = 0
    names = {id(a): "a", id(b): "b"}
    for step in range(130):
        who, other = (a, b) if step % 2 == 0 else (b, a)
        before = frame_table(path)
        if step == 70:
            who.checkpoint()
            owner.clear()
            continue
        r = rnd.random()
        keys = sorted(model)
        if r < 0.5:  # increment a counter: the value read must be the one the other open wrote last
            k = rnd.choice(keys)
            got = who.read(b"%08d" % k)
            assert got == model[k], f"step {step}: a lost update"
            model[k] = _r40(k, int(got[8:]) + 1)
            who.rewrite(model[k])
        elif r < 0.65:
            k = rnd.randrange(0, 80)
            if k in model:
                continue
            model[k] = _r40(k, step)
            who.write(model[k])
        elif r < 0.75 and len(model) > 20:
            k = rnd.choice(keys)
            who.erase(b"%08d" % k)
            del model[k]
        else:  # a batch of increments of neighbouring counters (one CI, mostly)
            i = rnd.randrange(len(keys))
            with who.batch():
                for k in keys[i : i + rnd.randint(2, 4)]:
                    got = who.read(b"%08d" % k)
                    assert got == model[k], f"step {step}: a lost update in a batch"
                    model[k] = _r40(k, int(got[8:]) + 1)
                    who.rewrite(model[k])
        after = frame_table(path)
        assert after[: len(before)] == before
        for _, _, ci, _, kind in after[len(before) :]:
            if kind == KIND_COMMIT:
                continue
            if ci not in owner:
                assert kind == KIND_IMAGE, f"step {step}: CI {ci}'s first frame in the generation is not an image"
            elif kind == KIND_OPS and owner[ci] != names[id(who)]:
                cross += 1
            owner[ci] = names[id(who)]
        assert list(other) == [model[k] for k in sorted(model)], f"step {step}"
        if step % 13 == 0:
            list(who)  # both views caught up
            check_images_match_log(a, path)
            check_images_match_log(b, path)
    assert cross >= 15, cross
    a._abandon()  # one dies; the other goes on with its frames in the log
    for step in range(10):
        k = sorted(model)[step]
        model[k] = _r40(k, 500 + step)
        b.rewrite(model[k])
    b._abandon()
    got, rec = contents(path)
    assert rec is not None and got == [model[k] for k in sorted(model)]
    assert ksds.examine(path).sound


def test_checkpoint_by_another_open_makes_the_next_change_an_image(work: str) -> None:
    path = os.path.join(work, "x.ksds")
    ksds.define(path, key_length=8, record_length=40, ci_size=512, cis_per_ca=4, share_options=(3, 3))
    a = ksds.open(path, sharing="rls")
    b = ksds.open(path, sharing="rls")
    for k in range(10):
        a.write(_r40(k, 0))
    ci = _ci_of(a, b"%08d" % 3)
    b.rewrite(_r40(3, 1))
    assert _last_frames(path) == [(ci, KIND_OPS)]  # on a's image
    a.checkpoint()
    b.rewrite(_r40(3, 2))  # b's first change after a's checkpoint
    assert _last_frames(path) == [(ci, KIND_IMAGE)]
    a.rewrite(_r40(3, 3))
    assert _last_frames(path) == [(ci, KIND_OPS)]  # on b's image
    assert b.read(b"%08d" % 3) == _r40(3, 3)
    a._abandon()
    b._abandon()
    _tear(path, ci, 512)
    got, rec = contents(path)
    assert rec is not None and got == [_r40(k, 3 if k == 3 else 0) for k in range(10)]


@pytest.mark.parametrize("name", ["k4-off10-rl24", "k3-rl40-ci4096"])
def test_a_reader_that_closes_last_writes_in_place_the_images_it_rebuilt(work: str, name: str) -> None:
    """SHAREOPTIONS(2): one updater, one reader. The reader rebuilds the updater's CIs from the frames it scans
    (ops frames on images; with 4 KiB CIs, scans of more than the 32 KiB the reader reads at a time); when the
    updater closes first, the reader is the last opener and writes those images in place and removes the log: the
    data set is then exactly the model, with no log to fall back on."""
    lay = BY_NAME[name]
    path = os.path.join(work, "r.ksds")
    lay.define(path, share=(2, 3))
    w = Workload(lay, 55)
    writer = ksds.open(path)
    reader = ksds.open(path, "r")
    for n in range(200):
        run_unit(writer, w.next_unit())
        if n % 4 == 0:
            assert list(reader) == w.values(), n
        if n == 120:
            writer.checkpoint()
    list(reader)
    check_images_match_log(reader, path)
    assert KIND_OPS in check_generation(frame_table(path))
    writer.close()
    assert os.path.exists(path + "-wal")  # not the last opener: the log stays
    reader.close()
    assert not os.path.exists(path + "-wal")
    got, rec = contents(path)
    assert rec is None and got == w.values()
    assert ksds.examine(path).sound


INCREMENTER = """
ds = ksds.open(sys.argv[1], sharing=sys.argv[2], lock_timeout=60)
counters = int(sys.argv[3])
ack = os.open(sys.argv[4], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
open(sys.argv[5] + ".ready", "w").close()
while not os.path.exists(sys.argv[5]):
    time.sleep(0.001)
for i in range(int(sys.argv[6])):
    with ds.batch():
        for c in (i % counters, (i + counters // 2) % counters):
            k = b"%08d" % c
            ds.rewrite(k + b"%032d" % (int(ds.read(k)[8:]) + 1))
    os.write(ack, b"%d\\n" % (i + 1))
ds.close()
"""


def _increment(ds: ksds.Dataset, i: int, counters: int) -> None:
    with ds.batch():
        for c in (i % counters, (i + counters // 2) % counters):
            k = b"%08d" % c
            ds.rewrite(k + b"%032d" % (int(ds.read(k)[8:]) + 1))


@pytest.mark.parametrize("sharing,share", SHARING, ids=["rls", "shareoptions3"])
def test_processes_increment_shared_counters_one_is_killed(work: str, sharing: str, share: tuple[int, int]) -> None:
    """This process and a child increment counters of one CI (two a transaction, read and rewritten in a batch) at
    the same time; the child is killed right after the log write of its 120th transaction (committed, never
    acknowledged). The survivor's counters count every transaction of both, the killed one included, and so does
    a recovery after the survivor crashes too."""
    path = os.path.join(work, "i.ksds")
    counters = 8
    ksds.define(path, key_length=8, record_length=40, ci_size=512, cis_per_ca=4, share_options=share)
    ds = ksds.open(path, sharing=sharing, lock_timeout=60)
    for c in range(counters):
        ds.write(b"%08d" % c + b"%032d" % 0)
    for c in range(20, 24):
        ds.write(b"%08d" % c + b"%032d" % 0)
    acks, go = os.path.join(work, "acks"), os.path.join(work, "go")
    env = dict(os.environ, KSDS_FAULTS="point=log-written;crash=120")
    child = subprocess.Popen(
        [PY, "-c", "import ksds, os, sys, time\n" + INCREMENTER, path, sharing, str(counters), acks, go, "400"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for(go + ".ready")
    open(go, "w").close()
    mine = 0
    for i in range(150):
        _increment(ds, i * 3 + 1, counters)
        mine += 1
    _, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, err[-3000:]
    with open(acks) as f:
        acked = int(f.read().split()[-1])
    assert acked == 119
    for i in range(30):
        _increment(ds, i, counters)
        mine += 1
    want = 2 * (mine + acked + 1)
    assert sum(int(ds.read(b"%08d" % c)[8:]) for c in range(counters)) == want
    kinds = check_generation(frame_table(path))
    assert KIND_OPS in kinds
    check_images_match_log(ds, path)
    ds._abandon()
    with ksds.open(path, sharing=sharing) as again:
        assert again.recovery is not None
        assert sum(int(again.read(b"%08d" % c)[8:]) for c in range(counters)) == want
        assert [int(again.key_of(r)) for r in again] == [*range(counters), *range(20, 24)]
    assert ksds.examine(path).sound


# --- a reader of a data set being written ---------------------------------------------------------------------------

#: rewrites the 12 counters (keys divisible by 4, three in each of 4 CIs: ops frames) to the batch's number, and
#: moves the tail record (insert 1000 + i, erase 1000 + i - 1: ops); bursts of 15 batches, one each time the file
#: ``argv[2].N`` appears (``argv[3]`` bursts; ``argv[2].done.N`` says burst N is committed), or, with ``argv[3]`` 0,
#: batches without a pause until ``argv[2]`` is there; checkpoints every ``argv[4]`` bytes of log
WRITER = """
import ksds.pager
ksds.pager.CHECKPOINT_BYTES = int(sys.argv[4])
ds = ksds.open(sys.argv[1])
bursts = int(sys.argv[3])
i = 0
for burst in range(bursts or 100000):
    if bursts:
        while not os.path.exists(sys.argv[2] + ".%d" % burst):
            time.sleep(0.0005)
    elif os.path.exists(sys.argv[2]):
        break
    for _ in range(15):
        i += 1
        with ds.batch():
            for k in range(0, 48, 4):
                ds.rewrite(b"%08d" % k + b"%032d" % i)
            ds.write(b"%08d" % (1000 + i) + b"%032d" % i)
            ds.erase(b"%08d" % (1000 + i - 1))
    if bursts:
        open(sys.argv[2] + ".done.%d" % burst, "w").close()
    if not bursts and burst == 2:
        open(sys.argv[2] + ".ready", "w").close()
ds.close()
print(i)
"""


def _live_data_set(work: str) -> str:
    path = os.path.join(work, "l.ksds")
    ksds.define(path, key_length=8, record_length=40, ci_size=512, cis_per_ca=4)
    with ksds.open(path) as ds:
        for k in range(48):
            ds.write(b"%08d" % k + b"%032d" % 0)
        ds.write(b"%08d" % 1000 + b"%032d" % 0)
    return path


def _check_walk(recs: list[bytes], consistent: bool, updated: int | None = None) -> int | None:
    """The records of one walk of the data set that WRITER changes. Every walk: the 48 records of keys 0..47 once
    each, in order, the counters (keys divisible by 4) never going down in key order, the others unchanged. A
    consistent walk (one committed state): every counter the same value v, the one tail record 1000 + v, and
    (``updated``: the state's REC-UPDATED, 12 for each batch) the state of that same transaction. Returns v for a
    consistent walk."""
    keys = [int(r[:8]) for r in recs]
    assert keys == sorted(set(keys))
    body = [r for r in recs if int(r[:8]) < 1000]
    assert [int(r[:8]) for r in body] == list(range(48))
    values = [int(r[8:]) for r in body if int(r[:8]) % 4 == 0]
    assert values == sorted(values), values
    assert all(int(r[8:]) == 0 for r in body if int(r[:8]) % 4)
    if not consistent:
        return None
    tail = [r for r in recs if int(r[:8]) >= 1000]
    assert len(set(values)) == 1, f"counters of different transactions in one state: {values}"
    v = values[0]
    assert [int(r[:8]) for r in tail] == [1000 + v] and int(tail[0][8:]) == v
    if updated is not None:
        assert updated == 12 * v, f"the records are of batch {v}, the state of batch {updated / 12}"
    return v


def test_live_reader_sees_committed_states_while_ops_frames_arrive(work: str) -> None:
    """A writer process changes the counters of four CIs in each batch (three rewrites a CI: ops frames) and moves
    a tail record (an insert and an erase: ops), checkpointing every 32 KiB, in bursts that begin as the reader
    starts reading. Read without opening it (the live view of ``wal_view``, ``ksds print``, ``ksds listcat``),
    the data set is always a committed state: a walk that the view saw no change during holds one transaction's
    counters; a walk through changes (the view takes in the transactions, rebuilding their ops frames) never loses
    or repeats a record, and its counters never go down."""
    path = _live_data_set(work)
    token = os.path.join(work, "token")
    bursts = 40
    writer = start(WRITER, path, token, str(bursts), str(32 << 10))
    seen: set[int] = set()
    walks = through = 0
    try:
        for it in range(bursts):
            if it:
                wait_for(f"{token}.done.{it - 1}", 60)  # bursts before this one are committed: the view has them
            open(f"{token}.{it}", "w").close()  # the writer's next burst begins now
            if it % 13 == 0:
                out = subprocess.run([PY, "-m", "ksds", "print", path, "--hex"], capture_output=True, text=True,
                                     timeout=60)
                assert out.returncode == 0, out.stderr
                lines = out.stdout.splitlines()
                recs = [bytes.fromhex(lines[i + 1]) for i, line in enumerate(lines) if line.startswith("KEY OF")]
                _check_walk(recs, False)
                out = subprocess.run([PY, "-m", "ksds", "listcat", path], capture_output=True, text=True, timeout=60)
                assert out.returncode == 0, out.stderr
                assert re.search(r"REC-TOTAL-+49\b", out.stdout), out.stdout
                continue
            with View(path, live=True) as view:
                for _ in range(20):
                    version = view.version
                    recs = list(records(view))
                    _check_walk(recs, False)
                    if view.version == version:
                        v = _check_walk(recs, True, view.state.rec_updated)
                        assert v is not None and v >= 15 * it, f"a stale view: batch {v} after {15 * it}"
                        seen.add(v)
                        walks += 1
                    else:
                        through += 1
    finally:
        for it in range(bursts):
            open(f"{token}.{it}", "w").close()
        last = int(finish(writer).split()[-1])
    assert last == 15 * bursts
    assert walks >= 20 and len(seen) >= 10 and through >= 1, (walks, len(seen), through)
    with ksds.open(path, "r") as ds:
        assert _check_walk(list(ds), True) == last
    assert ksds.examine(path).sound


def test_live_reader_is_not_starved_by_a_busy_writer(work: str) -> None:
    """A writer that commits without a pause (a batch every fraction of a millisecond, a checkpoint every MiB of
    log) must not keep a live reader (LISTCAT, PRINT, ``ksds map`` of a data set open elsewhere) from reading: the
    view should take in the transactions committed while it read the log (the same generation), as it does once
    it has been made, instead of starting over each time one arrives."""
    path = _live_data_set(work)
    stop = os.path.join(work, "stop")
    writer = start(WRITER, path, stop, "0", str(1 << 20))
    try:
        wait_for(stop + ".ready", 60)
        for _ in range(5):
            with View(path, live=True) as view:
                _check_walk(list(records(view)), False)
    finally:
        open(stop, "w").close()
        finish(writer)


def test_examine_of_a_data_set_being_written_is_sound(work: str) -> None:
    """EXAMINE of a data set that a writer process has open and changes (ops frames, a checkpoint every 32 KiB)
    reads it without opening it, as the other readers do. It never calls the data set damaged while the writer is
    at work (``ksds examine`` would say "NOT SOUND: restore it from a backup"): each report is a whole walk of one
    state (all 49 records), or, when the data set changed during each of its walks, says so in a warning."""
    path = _live_data_set(work)
    stop = os.path.join(work, "stop")
    writer = start(WRITER, path, stop, "0", str(32 << 10))
    unsound = []
    whole = 0
    try:
        wait_for(stop + ".ready", 60)
        for _ in range(200):
            report = ksds.examine(path)
            moved = any("changed during each" in str(f) for f in report.findings)
            whole += report.records == 49
            if not report.sound or (report.records != 49 and not moved):
                unsound.append(f"{report.records} records: {[str(f) for f in report.errors][:1]}")
    finally:
        open(stop, "w").close()
        finish(writer)
    assert not unsound, f"{len(unsound)} of 200 runs: {unsound[:2]}"
    assert whole > 0  # some walks saw one state whole
    assert ksds.examine(path).sound
