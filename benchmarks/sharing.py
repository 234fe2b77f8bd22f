"""The sharing section (``--sharing``): one data set shared by 1, 2 and 4 processes, ksds RLS (and NONRLS
SHAREOPTIONS(3) for reads) against sqlite3 WAL, and whether issue 12's targets are met.

Every system gets the same ``records`` records (512 bytes, 64-byte key, from :mod:`benchmarks.data`) whose 8 bytes
after the key are a counter (big-endian, 0 at the start). Workloads, each process doing ``requests`` of them on
random records of the whole shared set (a seeded order of its own per process and repeat):

* ``read``: read by key;
* ``update``: read for update, add 1 to the counter, write it back (ksds: ``read(key, update=True)`` +
  ``rewrite``; sqlite: ``BEGIN IMMEDIATE; SELECT; UPDATE; COMMIT``);
* ``mix``: 90% reads, 10% updates (a seeded draw per request);
* ``upd+read``: 2 processes, one doing only updates, the other only reads (ksds NONRLS SHAREOPTIONS(2): one
  updater and one reader is all it allows).

Systems: ``ksds-rls`` (``ksds.open(..., sharing="rls")``, read integrity NRI, durability "process"),
``ksds-shr3`` (a data set defined SHAREOPTIONS(3, 3), every process opening it "rw" NONRLS: reads only, as
SHAREOPTIONS(3) leaves the integrity of concurrent updates to the programs), ``sqlite`` (WAL,
``synchronous=NORMAL``, one connection per process, autocommit reads, busy timeout 30 s), ``ksds-shr2`` (a data
set defined SHAREOPTIONS(2, 3): the updater opens it "rw", the reader "r", both NONRLS) and, as a reference,
``ksds-excl`` (NONRLS SHAREOPTIONS(1): one process, no latch, no record locks).

Each run is one subprocess per process (``python -m benchmarks.sharing --worker CONFIG``). A worker opens the
store, builds its request list, reads every record once (warm), prints ``ready`` and waits for ``go`` on its
stdin; the parent sends ``go`` to every worker once all are ready (the barrier), and each worker reports its
start and end on ``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every process). Aggregate throughput is all
requests / (last end - first start); the per-request cost is each process's own elapsed time / its requests,
averaged over the processes. Runs are interleaved (for each repeat, for each workload, every system), and the
figures are medians over the repeats.

Checked: after every run that updates, the parent sums the counters of the data set: the sum must be exactly the
number of updates done so far on it (a lost update, or a rewrite of a stale record, would make it smaller), and
the record count must not have changed. In mixed and upd+read runs every read also checks that a record's counter
never goes backwards in the process that reads it (a read never returns a record older than one it saw before).

Targets (:data:`TARGETS`, issue 12 item 5): each is a ratio of two rows' medians (and of the same repeat's runs,
for the spread), printed with whether it is met; nothing asserts them.
"""

from __future__ import annotations

import gc
import json
import os
import random
import selectors
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from typing import Any

from .data import Records, RecordSpec

DEFAULT_RECORDS = 10_000
DEFAULT_REQUESTS = 10_000
QUICK_RECORDS = 1000
QUICK_REQUESTS = 300
#: where the counter sits in a record: just after the 64-byte key
COUNTER = 64
MIX_UPDATES = 0.10
WORKLOADS = {
    "read": "random read by key",
    "update": "read for update + rewrite (counter + 1), one unit of work each",
    "mix": "90% read / 10% update",
    "upd+read": "1 process updating, 1 process reading, at once",
}
SYSTEMS = {
    "ksds-excl": "ksds NONRLS SHR(1), exclusive",
    "ksds-rls": "ksds RLS",
    "ksds-shr3": "ksds NONRLS SHR(3)",
    "ksds-shr2": "ksds NONRLS SHR(2)",
    "sqlite": "sqlite3 WAL",
}
#: the process counts of the shared rows
PROCS = (1, 2, 4)
#: (workload, system, processes) in the order they run inside a repeat, and are printed
PLAN: list[tuple[str, str, int]] = [
    ("read", "ksds-excl", 1),
    *(("read", "ksds-rls", n) for n in PROCS),
    *(("read", "ksds-shr3", n) for n in PROCS),
    *(("read", "sqlite", n) for n in PROCS),
    ("update", "ksds-excl", 1),
    *(("update", "ksds-rls", n) for n in PROCS),
    ("update", "ksds-shr2", 1),
    *(("update", "sqlite", n) for n in PROCS),
    ("mix", "ksds-excl", 1),
    *(("mix", "ksds-rls", n) for n in PROCS),
    *(("mix", "sqlite", n) for n in PROCS),
    ("upd+read", "ksds-rls", 2),
    ("upd+read", "ksds-shr2", 2),
    ("upd+read", "sqlite", 2),
]
#: issue 12's targets: (name, what, (workload, system, procs) of the numerator, of the denominator, measure,
#: bound, comparison). measure "us": us/req of the numerator / of the denominator (a time ratio: lower is better);
#: "rate": req/s of the numerator / of the denominator (higher is better). comparison "<=", ">=" or ">".
TARGETS: tuple[tuple[str, str, tuple[str, str, int], tuple[str, str, int], str, float, str], ...] = (
    ("read-rls", "a shared read (RLS NRI, nothing changed) costs at most 1.3x an exclusive open's",
     ("read", "ksds-rls", 1), ("read", "ksds-excl", 1), "us", 1.3, "<="),
    ("read-shr3", "a shared read (NONRLS SHR(3), nothing changed) costs at most 1.3x an exclusive open's",
     ("read", "ksds-shr3", 1), ("read", "ksds-excl", 1), "us", 1.3, "<="),
    ("update-2p", "read for update + rewrite: 2 RLS processes at least as fast as 1",
     ("update", "ksds-rls", 2), ("update", "ksds-rls", 1), "rate", 1.0, ">="),
    ("update-sqlite", "read for update + rewrite: 2 RLS processes at least sqlite3 WAL's 2-process rate",
     ("update", "ksds-rls", 2), ("update", "sqlite", 2), "rate", 1.0, ">="),
    ("mix-sqlite", "90/10 mix: 2 RLS processes ahead of sqlite3 WAL's 2",
     ("mix", "ksds-rls", 2), ("mix", "sqlite", 2), "rate", 1.0, ">"),
    ("upd+read-sqlite", "1 updater + 1 reader at once (RLS) ahead of sqlite3 WAL",
     ("upd+read", "ksds-rls", 2), ("upd+read", "sqlite", 2), "rate", 1.0, ">"),
)
WORKER_TIMEOUT = 300.0


def _project_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- the shared data sets ------------------------------------------------------------------------------------------


def _records(records: int, seed: int) -> Records:
    return Records(RecordSpec(records, seed=seed))


def _initial(rec: Records, i: int) -> bytes:
    r = rec.record(i)
    return r[:COUNTER] + bytes(8) + r[COUNTER + 8 :]


def _path(work: str, system: str) -> str:
    return os.path.join(work, "sqlite.db" if system == "sqlite" else f"{system}.ksds")


def build(system: str, path: str, rec: Records, buffer_space: int) -> None:
    """The shared data set of ``system``, loaded with every record (counters 0), closed."""
    n = rec.spec.count
    if system == "sqlite":
        con = sqlite3.connect(path, isolation_level=None)
        con.execute("PRAGMA page_size=4096")
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
        con.execute("BEGIN")
        for i in range(n):
            r = _initial(rec, i)
            con.execute("INSERT INTO kv VALUES (?, ?)", (r[:COUNTER], r))
        con.execute("COMMIT")
        con.close()
        return
    import ksds

    share = {"ksds-shr2": (2, 3), "ksds-shr3": (3, 3)}.get(system, (1, 3))
    ksds.define(path, key_length=rec.spec.key_length, record_length=rec.spec.record_length, ci_size=4096,
                share_options=share)
    with ksds.open(path, "rw", buffer_space=buffer_space) as ds, ds.batch():
        for i in range(n):
            ds.write(_initial(rec, i))


def audit(system: str, path: str) -> tuple[int, int]:
    """(records, sum of the counters) of a shared data set (no worker has it open)."""
    total = count = 0
    if system == "sqlite":
        con = sqlite3.connect(path, isolation_level=None)
        for (v,) in con.execute("SELECT v FROM kv"):
            total += int.from_bytes(v[COUNTER : COUNTER + 8], "big")
            count += 1
        con.close()
        return count, total
    import ksds

    with ksds.open(path, "r") as ds:
        for r in ds.browse():
            total += int.from_bytes(r[COUNTER : COUNTER + 8], "big")
            count += 1
    return count, total


# --- the worker (one process of a run) ---------------------------------------------------------------------------


def _schedstat() -> tuple[int, int]:
    """(CPU time, time spent runnable but waiting for a CPU) of this process so far, in ns (Linux; else 0, 0)."""
    try:
        with open("/proc/self/schedstat") as f:
            cpu, wait = f.read().split()[:2]
        return int(cpu), int(wait)
    except (OSError, ValueError):
        return 0, 0


class _Ksds:
    def __init__(self, path: str, system: str, role: str, buffer_space: int) -> None:
        import ksds

        self.errors = (ksds.RecordLockedError, ksds.DeadlockError)
        if system == "ksds-rls":
            self.ds = ksds.open(path, "rw", sharing="rls", lock_timeout=30.0, buffer_space=buffer_space)
        else:  # NONRLS: SHR(1) exclusive, SHR(2) with one updater ("rw") and readers ("r"), SHR(3) all "rw"
            self.ds = ksds.open(path, "r" if role == "reader" else "rw", buffer_space=buffer_space)
        self.read = self.ds.read

    def warm(self) -> None:
        for _ in self.ds.browse():
            pass

    def update_fn(self, stats: dict[str, int]) -> Any:
        read, rewrite, unlock, errors = self.ds.read, self.ds.rewrite, self.ds.unlock, self.errors

        def update(key: bytes) -> bytes:
            while True:
                try:
                    r = read(key, update=True)
                    c = int.from_bytes(r[COUNTER : COUNTER + 8], "big") + 1
                    new = r[:COUNTER] + c.to_bytes(8, "big") + r[COUNTER + 8 :]
                    rewrite(new)
                    return new
                except errors:  # lock timeout or deadlock: release and do the unit of work again
                    stats["retries"] += 1
                    unlock()

        return update

    def close(self) -> None:
        self.ds.close()


class _Sqlite:
    def __init__(self, path: str, system: str, role: str, buffer_space: int) -> None:
        self.con = con = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute(f"PRAGMA cache_size=-{max(1, buffer_space >> 10)}")
        con.execute("PRAGMA busy_timeout=30000")
        self.cur = con.cursor()
        ex = self.cur.execute

        def read(key: bytes) -> bytes:
            row = ex("SELECT v FROM kv WHERE k=?", (key,)).fetchone()
            if row is None:
                raise KeyError(key)
            v: bytes = row[0]
            return v

        self.read = read

    def warm(self) -> None:
        for _ in self.con.execute("SELECT k, v FROM kv ORDER BY k"):
            pass

    def update_fn(self, stats: dict[str, int]) -> Any:
        con = self.con
        ex = self.cur.execute

        def update(key: bytes) -> bytes:
            while True:
                try:
                    ex("BEGIN IMMEDIATE")
                    row = ex("SELECT v FROM kv WHERE k=?", (key,)).fetchone()
                    if row is None:
                        raise KeyError(key)
                    r: bytes = row[0]
                    c = int.from_bytes(r[COUNTER : COUNTER + 8], "big") + 1
                    new = r[:COUNTER] + c.to_bytes(8, "big") + r[COUNTER + 8 :]
                    ex("UPDATE kv SET v=? WHERE k=?", (new, key))
                    ex("COMMIT")
                    return new
                except sqlite3.OperationalError:  # busy past the timeout: roll back and do it again
                    stats["retries"] += 1
                    if con.in_transaction:
                        ex("ROLLBACK")

        return update

    def close(self) -> None:
        self.con.close()


def worker(cfg: dict[str, Any]) -> dict[str, Any]:
    system, role, n = cfg["system"], cfg["role"], cfg["requests"]
    rec = _records(cfg["records"], cfg["seed"])
    keys = [rec.key(i) for i in range(cfg["records"])]
    rng = random.Random(f"{cfg['seed']}:sharing:{cfg['workload']}:{system}:{cfg['proc']}:{cfg['rep']}")
    idx = [rng.randrange(len(keys)) for _ in range(n)]
    kind = role  # "read", "update", "mix", or for upd+read: "update" / "reader"
    writes = [rng.random() < MIX_UPDATES for _ in range(n)] if kind == "mix" else None
    cls = _Sqlite if system == "sqlite" else _Ksds
    store = cls(cfg["path"], system, role, cfg["buffer_space"])
    stats = {"updates": 0, "retries": 0, "backwards": 0}
    store.warm()
    read = store.read
    update = store.update_fn(stats)
    seen: dict[int, int] = {}
    gc.collect()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise RuntimeError("no go from the parent")
    c0, w0 = _schedstat()
    t0 = time.monotonic()
    if kind == "read":
        for i in idx:
            read(keys[i])
    elif kind == "update":
        for i in idx:
            update(keys[i])
        stats["updates"] = n
    elif kind == "mix":
        assert writes is not None
        ups = 0
        for i, w in zip(idx, writes, strict=True):
            r = update(keys[i]) if w else read(keys[i])
            ups += w
            c = int.from_bytes(r[COUNTER : COUNTER + 8], "big")
            if c < seen.get(i, 0):
                stats["backwards"] += 1
            seen[i] = c
        stats["updates"] = ups
    elif kind == "reader":
        for i in idx:
            c = int.from_bytes(read(keys[i])[COUNTER : COUNTER + 8], "big")
            if c < seen.get(i, 0):
                stats["backwards"] += 1
            seen[i] = c
    else:
        raise ValueError(kind)
    t1 = time.monotonic()
    c1, w1 = _schedstat()
    store.close()
    return {"role": role, "requests": n, "start": t0, "end": t1, "elapsed_s": t1 - t0, "cpu_s": (c1 - c0) / 1e9,
            "runq_s": (w1 - w0) / 1e9, **stats}


# --- the parent ----------------------------------------------------------------------------------------------------


def _roles(workload: str, procs: int) -> list[str]:
    if workload == "upd+read":
        return ["update", "reader"]
    return [workload] * procs


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise TimeoutError(f"no answer from worker {proc.pid} in {timeout:g} s")
    finally:
        sel.close()
    return proc.stdout.readline()


def run_once(cfgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Start one worker per config, release them together, return their reports (in order)."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for cfg in cfgs:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "benchmarks.sharing", "--worker", json.dumps(cfg)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                cwd=_project_root(),
            ))
        for p in procs:
            if _readline(p, 120).strip() != "ready":
                raise RuntimeError(_failure(p))
        for p in procs:  # the barrier: every worker is ready, warm and waiting
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        out = []
        for p in procs:
            line = _readline(p, WORKER_TIMEOUT)
            if not line.strip():
                raise RuntimeError(_failure(p))
            out.append(json.loads(line))
        for p in procs:
            p.wait(timeout=60)
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            for f in (p.stdin, p.stdout, p.stderr):
                if f is not None:
                    f.close()


def _failure(p: subprocess.Popen[str]) -> str:
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    err = p.stderr.read() if p.stderr is not None else ""
    lines = [x for x in err.strip().splitlines() if x.strip()]
    return f"worker {p.pid} failed (exit {p.returncode}): {lines[-1] if lines else 'no message'}"


def run_sharing(
    *,
    out: str,
    records: int,
    requests: int,
    repeat: int,
    buffer_space: int,
    seed: int,
    log: Any,
) -> dict[str, Any]:
    started = time.perf_counter()
    work = os.path.join(out, "sharing-work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    rec = _records(records, seed)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    systems = sorted({s for _, s, _ in PLAN}, key=list(SYSTEMS).index)
    paths = {s: _path(work, s) for s in systems}
    expected = dict.fromkeys(systems, 0)  # updates done so far on each data set
    failed: dict[str, str] = {}
    runs: dict[tuple[str, str, int], list[dict[str, Any]]] = {k: [] for k in PLAN}
    errors: dict[tuple[str, str, int], str] = {}
    try:
        for s in systems:
            build(s, paths[s], rec, buffer_space)
        log(f"sharing: {records:,} shared records, {requests:,} requests per process per run, repeat {repeat}")
        for rep in range(repeat):
            for key in PLAN:
                workload, system, procs = key
                if key in errors or system in failed:
                    continue
                cfgs = [{"system": system, "path": paths[system], "workload": workload, "role": role,
                         "proc": j, "rep": rep, "requests": requests, "records": records, "seed": seed,
                         "buffer_space": buffer_space} for j, role in enumerate(_roles(workload, procs))]
                try:
                    reports = run_once(cfgs)
                except Exception as e:  # a failing run is reported, not fatal
                    errors[key] = f"{type(e).__name__}: {e}"
                    log(f"  sharing {workload} {system} x{procs}: {errors[key]}")
                    continue
                run = _summarise(reports)
                if run["updates"]:
                    expected[system] += run["updates"]
                    count, total = audit(system, paths[system])
                    run["check"] = {"records": count, "counter_sum": total, "expected_sum": expected[system],
                                    "ok": count == records and total == expected[system]}
                    if not run["check"]["ok"]:
                        failed[system] = (f"after {workload} x{procs}: {count} records (expected {records}), "
                                          f"counters sum {total} (expected {expected[system]})")
                        errors[key] = "WRONG RESULT " + failed[system]
                        log(f"  sharing {system}: {errors[key]}")
                if run["backwards"]:
                    errors[key] = f"WRONG RESULT: {run['backwards']} reads saw a counter go backwards"
                runs[key].append(run)
                log(f"  sharing {workload:<8} {system:<10} x{procs}: {run['rate']:>10,.0f} req/s, "
                    f"{run['us_per_req']:7.1f} us/req per process" + (f", {run['retries']} retries"
                                                                       if run["retries"] else ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for key in PLAN:
        workload, system, procs = key
        row: dict[str, Any] = {"workload": workload, "system": system, "label": SYSTEMS[system], "procs": procs,
                               "roles": _roles(workload, procs), "runs": runs[key]}
        if key in errors:
            row["error"] = errors[key]
        if runs[key]:
            rates = [r["rate"] for r in runs[key]]
            row["rate"] = statistics.median(rates)
            row["us_per_req"] = statistics.median(r["us_per_req"] for r in runs[key])
            row["retries"] = sum(r["retries"] for r in runs[key])
            row["cpu_share"] = statistics.median(r["cpu_share"] for r in runs[key])
            row["runq_share"] = statistics.median(r["runq_share"] for r in runs[key])
            checks = [r["check"] for r in runs[key] if "check" in r]
            row["checked"] = bool(checks) and all(c["ok"] for c in checks)
            if workload == "upd+read":
                row["role_rates"] = {role: statistics.median(r["role_rates"][role] for r in runs[key])
                                     for role in runs[key][0]["role_rates"]}
        rows.append(row)
    _relate(rows)
    return {
        "records": records,
        "record_length": rec.spec.record_length,
        "key_length": rec.spec.key_length,
        "requests": requests,
        "repeat": repeat,
        "mix_updates": MIX_UPDATES,
        "workloads": WORKLOADS,
        "buffer_space": buffer_space,
        "systems": SYSTEMS,
        "failed": failed,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "rows": rows,
        "targets": targets(rows),
        "procs": list(PROCS),
        "runtime_s": time.perf_counter() - started,
    }


def _summarise(reports: list[dict[str, Any]]) -> dict[str, Any]:
    span = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    total = sum(r["requests"] for r in reports)
    role_rates: dict[str, float] = {}
    for r in reports:
        role_rates[r["role"]] = r["requests"] / r["elapsed_s"] if r["elapsed_s"] > 0 else 0.0
    return {
        "span_s": span,
        "requests": total,
        "rate": total / span if span > 0 else 0.0,
        "us_per_req": statistics.mean(r["elapsed_s"] / r["requests"] * 1e6 for r in reports),
        "updates": sum(r["updates"] for r in reports),
        "retries": sum(r["retries"] for r in reports),
        "backwards": sum(r["backwards"] for r in reports),
        "role_rates": role_rates,
        # share of the processes' time spent running, and runnable but waiting for a CPU (another process had it)
        "cpu_share": sum(r["cpu_s"] for r in reports) / sum(r["elapsed_s"] for r in reports),
        "runq_share": sum(r["runq_s"] for r in reports) / sum(r["elapsed_s"] for r in reports),
        "per_process": reports,
    }


def _relate(rows: list[dict[str, Any]]) -> None:
    """N processes / 1 process (same system and workload) and ksds/sqlite (time ratio: sqlite's rate / ksds's,
    with the spread of the per-repeat ratios) on aggregate throughput."""
    by = {(r["workload"], r["system"], r["procs"]): r for r in rows}
    for r in rows:
        if "rate" not in r:
            continue
        one = by.get((r["workload"], r["system"], 1))
        if r["procs"] > 1 and one is not None and one.get("rate"):
            r["scale"] = r["rate"] / one["rate"]
        peer = by.get((r["workload"], "sqlite", r["procs"]))
        if r["system"].startswith("ksds") and peer is not None and peer.get("rate") and r["rate"]:
            per = [p["rate"] / k["rate"] for k, p in zip(r["runs"], peer["runs"], strict=False) if k["rate"]]
            r["vs_sqlite"] = {"ratio": peer["rate"] / r["rate"], "min": min(per), "max": max(per)}


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each of :data:`TARGETS` against this run: the ratio of the two rows' medians, the spread of the per-repeat
    ratios (runs of the same repeat), and whether it is met (``met`` None when a row did not run)."""
    by = {(r["workload"], r["system"], r["procs"]): r for r in rows}
    out = []
    for name, what, num, den, measure, bound, cmp in TARGETS:
        t: dict[str, Any] = {"name": name, "what": what, "num": list(num), "den": list(den), "measure": measure,
                             "bound": bound, "cmp": cmp, "ratio": None, "min": None, "max": None, "met": None}
        a, b = by.get(num), by.get(den)
        field = "us_per_req" if measure == "us" else "rate"
        if a and b and a.get(field) and b.get(field):
            t["num_value"], t["den_value"] = a[field], b[field]
            t["ratio"] = ratio = a[field] / b[field]
            per = [x[field] / y[field] for x, y in zip(a["runs"], b["runs"], strict=False) if y[field]]
            if per:
                t["min"], t["max"] = min(per), max(per)
            t["met"] = ratio <= bound if cmp == "<=" else ratio >= bound if cmp == ">=" else ratio > bound
            wrong = a.get("error") or b.get("error")
            if wrong:  # a row that failed a check meets nothing
                t["met"], t["error"] = False, wrong
        out.append(t)
    return out


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--worker":
        print(json.dumps(worker(json.loads(argv[1]))), flush=True)
        return 0
    print("usage: python -m benchmarks.sharing --worker CONFIG_JSON (use python -m benchmarks --sharing)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
