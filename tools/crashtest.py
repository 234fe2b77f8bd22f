"""Crash tests: kill a writer process at random moments and at named points, and cut its power, then check.

Each *kill* runs a writer process (this file with ``--writer``) that applies a deterministic random mix of
requests (writes, rewrites, erases, batches, with many CI and CA splits and frequent checkpoints) to a fresh data
set and records each acknowledged request; it is killed with SIGKILL

* at the N-th I/O event (a write or a sync), optionally leaving that write torn (half written);
* at the N-th hit of a named crash point inside the engine (after the log write, between the CIs of a split, ...);
* or from outside, at a random time.

The data set has two alternate indexes, kept in step by every request in the same transaction (``LAST2``,
non-unique: two digits of the record's version, so long runs of duplicates; ``VERSION``, unique: the whole
version). Then the data set is reopened (recovery runs) and must equal the model after a prefix of the requests
that holds every acknowledged one (the request in flight may or may not be there, but never half), each
alternate index must give exactly the model's records in its order (both directions), and ``ksds.examine``
must find it sound (it also checks each alternate index against the base).

Each *power cut* replays a traced power-mode writer run into a copy of the files, keeping only the writes that a
sync made durable before the cut point, plus a random subset (some torn) of the writes not yet synced, and checks
the same: every request acknowledged before the cut is there.

    python tools/crashtest.py --kills 200 --power-cuts 100       # the CI run (a minute or two)
    python tools/crashtest.py --kills 1000 --power-cuts 500      # the long run

Exit status 0 when every check passed; the last line is a summary like ``crashtest: 200 kills ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ksds  # noqa: E402
from ksds import faults  # noqa: E402

KEY_LEN = 6
REC_LEN = 60
DEFINE = dict(key_length=KEY_LEN, record_length=REC_LEN, ci_size=512, cis_per_ca=4, freespace=(10, 20))
CHECKPOINT_BYTES = 40 * 650  # about 40 frames: checkpoints often, so that crashes land in them too
POINTS = [p for p in faults.POINTS]
#: the alternate indexes of the data set: (name, key length, key offset, unique); a record is the key, "v", the
#: 8-digit version (unique across a run), "-", then dots
AIXES = [("LAST2", 2, 13, False), ("VERSION", 8, 7, True)]

Op = tuple[str, bytes]  # ("w"|"r"|"e", record or key)


def make_units(seed: int, count: int) -> list[list[Op]]:
    """A deterministic list of units (a request, or a batch of requests) that are all valid."""
    rnd = random.Random(seed)
    keys: set[int] = set()
    units: list[list[Op]] = []
    space = 4000
    seq_next = rnd.randrange(space)
    version = 0

    def rec(k: int) -> bytes:
        nonlocal version
        version += 1
        return (b"%06d" % k) + (b"v%08d-" % version).ljust(REC_LEN - KEY_LEN, b".")

    def one(batch: bool) -> Op | None:
        nonlocal seq_next
        r = rnd.random()
        if r < 0.30 or not keys:
            k = rnd.randrange(space)
            if k in keys:
                return None
            keys.add(k)
            return ("w", rec(k))
        if r < 0.55:  # sequential runs: loads and mass inserts
            while seq_next in keys:
                seq_next = (seq_next + 1) % space
            keys.add(seq_next)
            return ("w", rec(seq_next))
        k = rnd.choice(sorted(keys)) if len(keys) < 50 else rnd.choice(tuple(keys))
        if r < 0.70:
            return ("r", rec(k))
        keys.discard(k)
        return ("e", b"%06d" % k)

    while len(units) < count:
        if rnd.random() < 0.08:
            unit = [op for op in (one(True) for _ in range(rnd.randint(2, 12))) if op is not None]
        else:
            op = one(False)
            unit = [op] if op is not None else []
        if rnd.random() < 0.01:
            seq_next = rnd.randrange(space)
        if unit:
            units.append(unit)
    return units


def apply(model: dict[bytes, bytes], unit: list[Op]) -> None:
    for kind, data in unit:
        if kind == "e":
            del model[data]
        else:
            model[data[:KEY_LEN]] = data


# --- the writer process -------------------------------------------------------------------------------------


def writer(path: str, seed: int, count: int, durability: str, ackfile: str) -> None:
    import ksds.pager

    ksds.pager.CHECKPOINT_BYTES = CHECKPOINT_BYTES
    units = make_units(seed, count)
    ackfd = os.open(ackfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    ds = ksds.open(path, "rw", durability=durability, buffer_space=64 * 512)
    for n, unit in enumerate(units, 1):
        if len(unit) == 1:
            kind, data = unit[0]
            _do(ds, kind, data)
        else:
            with ds.batch():
                for kind, data in unit:
                    _do(ds, kind, data)
        faults.ack(n)
        os.write(ackfd, struct.pack(">I", n))
    ds.close()
    if faults.ACTIVE is not None:
        print(json.dumps(faults.ACTIVE.counts))


def _do(ds: ksds.Dataset, kind: str, data: bytes) -> None:
    if kind == "w":
        ds.write(data)
    elif kind == "r":
        ds.rewrite(data)
    else:
        ds.erase(data)


# --- checking -------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    kills: int = 0
    power_cuts: int = 0
    recovered: int = 0  # runs where recovery replayed something
    lost: int = 0  # acknowledged requests missing after recovery
    integrity: int = 0  # examine errors or mismatches that are not a lost request
    by_kind: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def check(path: str, units: list[list[Op]], acked: int, tally: Tally, label: str) -> None:
    """The data set at ``path`` must equal the model after ``acked`` units, or ``acked + 1``."""
    try:
        with ksds.open(path, "r") as ds:
            if ds.recovery is not None:
                tally.recovered += 1
            got = {ds.key_of(r): r for r in ds}
            if len(got) != len(ds):
                raise AssertionError(f"browse found {len(got)} records, REC-TOTAL is {len(ds)}")
    except Exception as e:  # noqa: BLE001 - every failure is a finding
        tally.integrity += 1
        tally.failures.append(f"{label}: reopen failed: {type(e).__name__}: {e}")
        return
    model: dict[bytes, bytes] = {}
    for unit in units[:acked]:
        apply(model, unit)
    ok = got == model
    if not ok and acked < len(units):
        apply(model, units[acked])
        ok = got == model
    if not ok:
        tally.lost += 1
        tally.failures.append(f"{label}: data set is not the state after {acked} (or {acked + 1}) requests")
        return
    try:
        with ksds.open(path, "r") as ds:
            for name, length, offset, _ in AIXES:
                want = sorted(model.values(), key=lambda r: (r[offset : offset + length], r[:KEY_LEN]))
                p = ds.aix(name)
                if list(p.browse()) != want or list(p.browse(backward=True)) != want[::-1]:
                    raise AssertionError(f"alternate index {name} does not give the base's records in its order")
    except Exception as e:  # noqa: BLE001 - every failure is a finding
        tally.integrity += 1
        tally.failures.append(f"{label}: {type(e).__name__}: {e}")
        return
    report = ksds.examine(path)
    if not report.sound or report.needs_recovery:
        tally.integrity += 1
        tally.failures.append(f"{label}: examine: {[str(f) for f in report.findings][:3]}")


def read_acks(ackfile: str) -> int:
    try:
        with open(ackfile, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return 0
    n = len(data) // 4
    return struct.unpack_from(">I", data, (n - 1) * 4)[0] if n else 0


def fresh(workdir: str) -> str:
    """Define a fresh data set in ``workdir`` (removing what an earlier run left)."""
    path = os.path.join(workdir, "ds.ksds")
    for f in (path, path + "-wal", os.path.join(workdir, "acks")):
        if os.path.exists(f):
            os.unlink(f)
    ksds.define(path, **DEFINE)  # type: ignore[arg-type]
    for name, length, offset, unique in AIXES:
        ksds.define_aix(path, name, key_length=length, key_offset=offset, unique=unique)
    return path


def run_writer(
    workdir: str, seed: int, count: int, durability: str, spec: str, kill_after: float | None = None,
    define: bool = True,
) -> tuple[str, str, int, str]:
    """Run a writer on a fresh data set (or the one there); return (path, ackfile, returncode, stdout)."""
    path = fresh(workdir) if define else os.path.join(workdir, "ds.ksds")
    ackfile = os.path.join(workdir, "acks")
    env = dict(os.environ)
    env.pop("KSDS_FAULTS", None)
    if spec:
        env["KSDS_FAULTS"] = spec
    cmd = [sys.executable, os.path.abspath(__file__), "--writer", path, "--seed", str(seed),
           "--units", str(count), "--durability", durability, "--ackfile", ackfile]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if kill_after is not None:
        try:
            out, err = proc.communicate(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate()
    else:
        out, err = proc.communicate(timeout=300)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise RuntimeError(f"writer failed ({proc.returncode}): {err.decode()[-2000:]}")
    return path, ackfile, proc.returncode, out.decode()


def calibrate(workdir: str, seed: int, count: int, durability: str) -> dict[str, int]:
    _, _, rc, out = run_writer(workdir, seed, count, durability, "crash=0")
    return json.loads(out.strip().splitlines()[-1]) if rc == 0 else {}


def kills(n: int, seed: int, count: int, workdir: str, tally: Tally, verbose: bool) -> None:
    rnd = random.Random(seed)
    durabilities = ["process", "power"]
    counts = {d: calibrate(workdir, seed, count, d) for d in durabilities}
    i = -1
    while tally.kills < n:
        i += 1
        durability = durabilities[i % 2]
        c = counts[durability]
        mode = i % 4
        if mode == 0:
            spec = f"crash={rnd.randint(1, max(1, c.get('io', 1)))}"
            kind = "io"
        elif mode == 1:
            spec = f"crash={rnd.randint(1, max(1, c.get('io', 1)))};torn=1"
            kind = "torn-io"
        elif mode == 2:
            points = [p for p in POINTS if c.get(p)]
            point = points[(i // 4) % len(points)]
            spec = f"point={point};crash={rnd.randint(1, c[point])}"
            kind = point
        else:
            spec = ""
            kind = "sigkill"
        wait = rnd.uniform(0.05, 0.35) if kind == "sigkill" else None
        path, ackfile, rc, _ = run_writer(workdir, seed, count, durability, spec, kill_after=wait)
        if rc != -signal.SIGKILL:
            tally.by_kind["completed"] = tally.by_kind.get("completed", 0) + 1
            continue  # the writer finished before its kill point: not a kill
        tally.kills += 1
        tally.by_kind[kind] = tally.by_kind.get(kind, 0) + 1
        acked = read_acks(ackfile)
        check(path, make_units(seed, count), acked, tally, f"kill {i} ({durability}, {kind}, {spec or 'timer'})")
        if verbose:
            print(f"kill {i}: {durability} {kind} rc={rc} acked={acked}", file=sys.stderr)


# --- power cuts -------------------------------------------------------------------------------------------------


def power_cuts(n: int, seed: int, count: int, workdir: str, tally: Tally, verbose: bool) -> None:
    """Replay a traced power-mode run up to ``n`` random cut points, dropping or tearing unsynced writes."""
    rnd = random.Random(seed ^ 0x5EED)
    runs = max(1, n // 50)
    per_run = -(-n // runs)
    for r in range(runs):
        run_seed = seed + 1000 + r
        tracefile = os.path.join(workdir, "trace")
        if os.path.exists(tracefile):
            os.unlink(tracefile)
        # the initial file (define fsyncs it) is the durable starting point
        path = fresh(workdir)
        with open(path, "rb") as f:
            initial = f.read()
        run_writer(workdir, run_seed, count, "power", f"trace={tracefile}", define=False)
        entries = parse_trace(tracefile)
        units = make_units(run_seed, count)
        cuts = sorted(rnd.randrange(len(entries) + 1) for _ in range(per_run))
        for c in cuts:
            if tally.power_cuts >= n:
                break
            files, acked = replay_trace(initial, entries, c, rnd)
            cutdir = os.path.join(workdir, "cut")
            shutil.rmtree(cutdir, ignore_errors=True)
            os.makedirs(cutdir)
            cpath = os.path.join(cutdir, "ds.ksds")
            with open(cpath, "wb") as f:
                f.write(files[faults.FILE_DATA])
            if files[faults.FILE_LOG] is not None:
                with open(cpath + "-wal", "wb") as f:
                    f.write(files[faults.FILE_LOG])
            tally.power_cuts += 1
            tally.by_kind["power-cut"] = tally.by_kind.get("power-cut", 0) + 1
            check(cpath, units, acked, tally, f"power cut {tally.power_cuts} (run {r}, entry {c}/{len(entries)})")
            if verbose:
                print(f"power cut at {c}/{len(entries)}: acked={acked}", file=sys.stderr)


Entry = tuple[int, int, int, bytes]


def parse_trace(tracefile: str) -> list[Entry]:
    with open(tracefile, "rb") as f:
        data = f.read()
    out: list[Entry] = []
    off = 0
    size = faults.ENTRY.size
    while off + size <= len(data):
        op, file, offset, length = faults.ENTRY.unpack_from(data, off)
        off += size
        payload = b""
        if op == faults.OP_WRITE:
            payload = data[off : off + length]
            off += length
        out.append((op, file, offset, payload))
    return out


def replay_trace(initial: bytes, entries: list[Entry], cut: int, rnd: random.Random) -> tuple[list[bytes | None], int]:
    """The files as a power cut after ``entries[:cut]`` may leave them, and the last request acknowledged."""
    durable: list[bytearray | None] = [bytearray(initial), None]
    pending: list[list[Entry]] = [[], []]
    acked = 0

    def put(buf: bytearray, offset: int, data: bytes) -> None:
        if len(buf) < offset:
            buf.extend(bytes(offset - len(buf)))
        buf[offset : offset + len(data)] = data

    def settle(file: int, entries_: list[Entry], chance: bool) -> None:
        for op, _, offset, data in entries_:
            buf = durable[file]
            if op == faults.OP_TRUNCATE:
                if buf is not None and (not chance or rnd.random() < 0.5):
                    if len(buf) < offset:
                        buf.extend(bytes(offset - len(buf)))
                    else:
                        del buf[offset:]
                continue
            if buf is None:
                buf = durable[file] = bytearray()
            if not chance:
                put(buf, offset, data)
                continue
            r = rnd.random()
            if r < 0.4:
                put(buf, offset, data)
            elif r < 0.6 and len(data) > 512:
                # a torn write: some 512-byte sectors made it, others did not
                for s in range(0, len(data), 512):
                    if rnd.random() < 0.5:
                        put(buf, offset + s, data[s : s + 512])

    for op, file, offset, data in entries[:cut]:
        if op == faults.OP_ACK:
            acked = offset
        elif op in (faults.OP_WRITE, faults.OP_TRUNCATE):
            pending[file].append((op, file, offset, data))
        elif op == faults.OP_SYNC:
            settle(file, pending[file], False)
            pending[file] = []
        elif op == faults.OP_UNLINK:
            # close removes the log only after the data file is synced: model the unlink as done
            settle(file, pending[file], True)
            pending[file] = []
            durable[file] = None
    for file in (0, 1):
        settle(file, pending[file], True)
    return [bytes(b) if b is not None else None for b in durable], acked


# --- main -------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=200, help="writer processes to kill (default 200)")
    ap.add_argument("--power-cuts", type=int, default=100, help="power cuts to simulate (default 100)")
    ap.add_argument("--units", type=int, default=300, help="requests (or batches) per writer run")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    ap.add_argument("--workdir", default=None, help="where to put the data sets (default: a temp dir)")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--writer", metavar="PATH", help=argparse.SUPPRESS)
    ap.add_argument("--durability", default="process", help=argparse.SUPPRESS)
    ap.add_argument("--ackfile", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time())
    if args.writer:
        writer(args.writer, seed, args.units, args.durability, args.ackfile)
        return 0
    logging.getLogger("ksds").setLevel(logging.ERROR)  # recoveries are expected here
    workdir = args.workdir or tempfile.mkdtemp(prefix="ksds-crash-")
    os.makedirs(workdir, exist_ok=True)
    tally = Tally()
    start = time.monotonic()
    try:
        if args.kills:
            kills(args.kills, seed, args.units, workdir, tally, args.verbose)
        if args.power_cuts:
            power_cuts(args.power_cuts, seed, args.units, workdir, tally, args.verbose)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    for f in tally.failures[:20]:
        print("FAIL", f)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(tally.by_kind.items()))
    print(
        f"crashtest: seed {seed}: {tally.kills} kills and {tally.power_cuts} power cuts in "
        f"{time.monotonic() - start:.0f}s ({kinds}); recovery ran {tally.recovered} times; "
        f"{tally.lost} lost acknowledged requests, {tally.integrity} integrity errors"
    )
    return 0 if not tally.failures else 1


if __name__ == "__main__":
    sys.exit(main())
