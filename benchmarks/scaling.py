"""The scaling run: random read and random insert cost vs record count, and each store's peak memory.

Each (store, size) runs in a subprocess of its own (``python -m benchmarks.scaling --worker CONFIG``) so that
the memory it reports is that store's alone: the peak resident set size (VmHWM from /proc/self/status), which
counts the pages of files the store maps (ksds and LMDB map their data file: those pages are the OS page cache,
shared and reclaimable), and the peak private memory (RssAnon, sampled every 10 ms by a thread), which is what
the store itself allocates. ksds's budget rule is checked on the private memory. The worker never
holds all records: it loads them in key order from a generator (records are a function of their index, see
:mod:`benchmarks.data`), in transactions of ``batch`` records (a whole-load transaction would keep every changed
CI of ksds in memory, above its buffer pool budget, by design). Then, after one warming scan:

* ``repeat`` rounds of ``reads`` random reads (a fresh sample each round), the median per read;
* ``repeat`` rounds of ``inserts`` new records in random key order, one transaction per insert, not synced
  (as the ``write_request`` row); the median per insert.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from .data import Records, RecordSpec
from .stores import load_store_class
from .stores.base import ORDERED

DEFAULT_SIZES = [10_000, 100_000, 1_000_000]
HUGE_SIZE = 10_000_000
QUICK_SIZES = [1000, 3000]
#: ksds's memory bound checked by the scaling run: baseline + BUDGET_FACTOR * buffer_space + FIXED_OVERHEAD
#: (a decoded CI is Python objects, somewhat larger than its 4 KiB on disk; a batch pins its changed CIs)
BUDGET_FACTOR = 1.5
FIXED_OVERHEAD = 32 << 20


def _status(field: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM); 0 where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _peak_rss() -> int:
    hwm = _status("VmHWM")
    if hwm:
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _AnonSampler:
    """The peak of RssAnon (private memory, without mapped files), sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.01) -> None:
        self.peak = _status("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.peak = max(self.peak, _status("RssAnon"))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status("RssAnon"))
        return self.peak


def worker(cfg: dict[str, Any]) -> dict[str, Any]:
    cls, why = load_store_class(cfg["store"])
    if cls is None:
        raise RuntimeError(why)
    size = cfg["size"]
    reads, inserts, repeat, batch = cfg["reads"], cfg["inserts"], cfg["repeat"], cfg["batch"]
    rec = Records(RecordSpec(size, seed=cfg["seed"]))
    read_keys = [[rec.key(i) for i in rec.sample(f"scaling-read-{k}", min(reads, size))] for k in range(repeat)]
    extra = rec.sample("scaling-insert", inserts * repeat)
    insert_recs = [[rec.extra_record(i) for i in extra[k * inserts : (k + 1) * inserts]] for k in range(repeat)]
    gc.collect()
    base_rss = _peak_rss()
    base_anon = _status("RssAnon")
    sampler = _AnonSampler()
    store = cls(
        cfg["dir"],
        key_length=rec.spec.key_length,
        record_length=rec.spec.record_length,
        buffer_space=cfg["buffer_space"],
        max_records=size + inserts * repeat,
        options=cfg.get("options"),
    )
    store.open(create=True)
    t0 = time.perf_counter()
    loaded = store.insert((rec.record(i) for i in range(size)), batch)
    load_s = time.perf_counter() - t0
    if loaded != size:
        raise RuntimeError(f"loaded {loaded} records, expected {size}")
    if ORDERED in store.capabilities:
        store.warm()
    read_t, insert_t = [], []
    for keys in read_keys:
        gc.collect()
        t0 = time.perf_counter()
        n = store.read_hits(keys)
        read_t.append((time.perf_counter() - t0) / len(keys))
        if n != len(keys):
            raise RuntimeError(f"found {n} of {len(keys)} keys")
    for recs in insert_recs:
        gc.collect()
        t0 = time.perf_counter()
        store.insert(recs, 1)
        insert_t.append((time.perf_counter() - t0) / len(recs))
    info: dict[str, Any] = {}
    if cfg["store"] == "ksds":
        st = store.stats()  # type: ignore[attr-defined]
        info = {k: st[k] for k in ("LEVELS", "DATA-CIS", "INDEX-CIS", "EXCPS", "SPLITS-CI", "SPLITS-CA")}
    peak_before_close = _peak_rss()
    store.close()
    peak_anon = sampler.stop()
    return {
        "store": cfg["store"],
        "size": size,
        "load_us": load_s / size * 1e6,
        "read_us": statistics.median(read_t) * 1e6,
        "insert_us": statistics.median(insert_t) * 1e6,
        "read_us_all": [t * 1e6 for t in read_t],
        "insert_us_all": [t * 1e6 for t in insert_t],
        "base_rss": base_rss,
        "peak_rss": max(peak_before_close, _peak_rss()),
        "base_anon": base_anon,
        "peak_anon": peak_anon,
        "buffer_space": cfg["buffer_space"],
        "info": info,
    }


def run_scaling(
    *,
    stores: list[str],
    sizes: list[int],
    out: str,
    repeat: int,
    buffer_space: int,
    seed: int,
    quick: bool,
    log: Any,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    reads, inserts, batch = (500, 200, 100) if quick else (20_000, 2_000, 1000)
    work = os.path.join(out, "scaling-work")
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    for size in sizes:
        for name in stores:
            cls, why = load_store_class(name)
            if cls is None:
                if size == sizes[0]:
                    log(f"  scaling: skipping store {name}: not installed ({why})")
                continue
            d = os.path.join(work, f"{name}-{size}")
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            cfg = {"store": name, "size": size, "dir": d, "reads": reads, "inserts": inserts, "repeat": repeat,
                   "batch": batch, "buffer_space": buffer_space, "seed": seed, "options": options or {}}
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.scaling", "--worker", json.dumps(cfg)],
                capture_output=True, text=True, cwd=_project_root(),
            )
            shutil.rmtree(d, ignore_errors=True)
            if proc.returncode != 0 or not proc.stdout.strip():
                err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                runs.append({"store": name, "size": size, "error": err})
                log(f"  scaling {name} {size:,}: failed: {err}")
                continue
            run = json.loads(proc.stdout.strip().splitlines()[-1])
            runs.append(run)
            log(f"  scaling {name:<10} {size:>11,}: read {run['read_us']:.2f} us, insert {run['insert_us']:.2f} us, "
                f"peak RSS {run['peak_rss'] / 2**20:.0f} MiB, private {run['peak_anon'] / 2**20:.0f} MiB "
                f"({time.perf_counter() - t0:.0f} s)")
    shutil.rmtree(work, ignore_errors=True)
    budget = []
    for run in runs:
        if run["store"] == "ksds" and "error" not in run:
            bound = int(BUDGET_FACTOR * run["buffer_space"]) + FIXED_OVERHEAD
            above = run["peak_anon"] - run["base_anon"]
            budget.append({"size": run["size"], "peak_rss": run["peak_rss"], "base_rss": run["base_rss"],
                           "peak_anon": run["peak_anon"], "base_anon": run["base_anon"],
                           "above_base": above, "buffer_space": run["buffer_space"], "bound": bound,
                           "within_budget": above <= bound})
    return {
        "sizes": sizes,
        "reads": reads,
        "inserts": inserts,
        "batch": batch,
        "repeat": repeat,
        "buffer_space": buffer_space,
        "budget_rule": f"peak private memory (RssAnon) - baseline <= {BUDGET_FACTOR} x buffer_space + "
                       f"{FIXED_OVERHEAD >> 20} MiB (the mapped data file's pages are the page cache: not counted)",
        "runs": runs,
        "ksds_budget": budget,
        "runtime_s": time.perf_counter() - started,
    }


def _project_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--worker":
        print(json.dumps(worker(json.loads(argv[1]))))
        return 0
    print("usage: python -m benchmarks.scaling --worker CONFIG_JSON (use python -m benchmarks --scaling)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
