"""The suite: every selected row on every selected store, in one process, repeated; results as a dict.

Order: for each row, for each repeat, for each store. Stores are interleaved inside a repeat, so a burst of noise
on this shared machine hits all stores of that repeat alike; the ratio ksds/peer is also computed per repeat
(the spread of those is reported next to the ratio of the medians).

Before each timed run: the state is built (untimed), ``gc.collect()`` runs, and the store's cache is warmed
(``Store.warm``) where the row starts from a freshly opened store. The clock is ``time.perf_counter``.
"""

from __future__ import annotations

import cProfile
import gc
import io
import os
import pstats
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from .data import Records, RecordSpec
from .reference import disk_of, drop_from_page_cache, sync_cost
from .stores import STORES, Store, load_store_class
from .workloads import BULK_TXN, ROWS, PerRepeat, Plan, Row


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Suite:
    def __init__(
        self,
        *,
        records: int,
        repeat: int,
        stores: list[str],
        rows: list[str],
        out: str,
        quick: bool = False,
        buffer_space: int = 32 << 20,
        seed: int = 20240611,
        profile: list[str] | None = None,
        bulk_txn: int = BULK_TXN,
        run_budget: float = 10.0,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.run_budget = run_budget
        self.options = options or {}
        self.spec = RecordSpec(records, seed=seed)
        self.plan = Plan.for_records(records, quick, bulk_txn)
        self.repeat = repeat
        self.rows = [r for r in ROWS if r.name in rows]
        self.out = out
        self.work = os.path.join(out, "work")
        self.buffer_space = buffer_space
        self.profile = profile or []
        self.classes: dict[str, type[Store]] = {}
        self.skipped: dict[str, str] = {}
        for name in sorted(dict.fromkeys(stores), key=list(STORES).index):  # ksds first, then the peers
            cls, why = load_store_class(name)
            if cls is None:
                self.skipped[name] = why or "not available"
                log(f"skipping store {name}: not installed ({why})")
            else:
                self.classes[name] = cls
        self.golden: dict[str, str] = {}
        self.half: dict[str, str] = {}
        self.base: dict[str, Store] = {}
        self.describe: dict[str, dict[str, Any]] = {}
        self._serial = 0

    # --- stores and their directories ------------------------------------------------------------------------

    def _new_dir(self, name: str, tag: str) -> str:
        self._serial += 1
        d = os.path.join(self.work, f"{name}-{tag}-{self._serial}")
        os.makedirs(d)
        return d

    def _store(self, name: str, directory: str) -> Store:
        return self.classes[name](
            directory,
            key_length=self.spec.key_length,
            record_length=self.spec.record_length,
            buffer_space=self.buffer_space,
            max_records=self.spec.count + 4 * self.plan.updates + self.plan.batches * self.plan.batch_size,
            options=self.options,
        )

    def _copy_golden(self, name: str, tag: str, source: str | None = None, sync: bool = False) -> Store:
        """A private copy of the loaded data set (or of ``source``), closed; ``sync``: its files written back
        (so a durable row's first sync does not pay for writing the whole copy)."""
        origin = source or self.golden[name]
        src = self._store(name, origin)
        dst = self._new_dir(name, tag)
        for f in src.files():
            rel = os.path.relpath(f, origin)
            target = os.path.join(dst, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(f, target)
        store = self._store(name, dst)
        # the copy's pages are dirty in the page cache: write them back now, not during a timed sync
        fsync_files(store.files())
        return store

    @staticmethod
    def _remove(store: Store) -> None:
        shutil.rmtree(store.directory, ignore_errors=True)

    def _build_golden(self, name: str, records: list[bytes] | None) -> None:
        """The loaded data set every base/copy/cold row starts from (made untimed if ``load`` is not run)."""
        store = self._store(name, self._new_dir(name, "golden"))
        store.open(create=True)
        if records is None:
            records = [self.records.record(i) for i in range(self.plan.records)]
        store.insert(records, self.plan.bulk_txn)
        store.close()
        self._make_golden(name, store)

    def _make_golden(self, name: str, store: Store) -> None:
        fsync_files(store.files())
        self.golden[name] = store.directory

    # --- timing ------------------------------------------------------------------------------------------------

    def _timed(self, fn: Callable[[], int], profile: cProfile.Profile | None = None) -> tuple[float, int]:
        gc.collect()
        if profile is not None:
            t0 = time.perf_counter()
            count = profile.runcall(fn)
            return time.perf_counter() - t0, count
        t0 = time.perf_counter()
        count = fn()
        return time.perf_counter() - t0, count

    def _one(self, row: Row, name: str, inputs: Any, rep: int) -> tuple[float, int]:
        """Build the row's state for one store, time the row, tear the state down."""
        if isinstance(inputs, PerRepeat):
            inputs = inputs.for_repeat(rep)
        prof = cProfile.Profile() if (name == "ksds" and row.name in self.profile and rep == 0) else None
        if row.state == "half":
            if name not in self.half:
                half = self._store(name, self._new_dir(name, "half"))
                half.open(create=True)
                if row.setup is not None:
                    row.setup(half, inputs, self.plan)
                half.close()
                self.half[name] = half.directory
            store = self._copy_golden(name, row.name, self.half[name])
            store.open()
            try:
                store.warm()
                result = self._timed(lambda: row.run(store, inputs, self.plan), prof)
            finally:
                store.close()
                self._remove(store)
        elif row.state == "fresh":
            store = self._store(name, self._new_dir(name, row.name))
            store.open(create=True)
            try:
                result = self._timed(lambda: row.run(store, inputs, self.plan), prof)
            finally:
                store.close()
            if row.name == "load":  # the latest load is the loaded data set the later rows start from
                old = self.golden.pop(name, None)
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
                self._make_golden(name, store)
            else:
                self._remove(store)
        elif row.state == "base":
            store = self._base(name)
            result = self._timed(lambda: row.run(store, inputs, self.plan), prof)
        elif row.state == "copy":
            store = self._copy_golden(name, row.name, sync=row.durable)
            store.open(durable=row.durable)
            try:
                store.warm()
                result = self._timed(lambda: row.run(store, inputs, self.plan), prof)
            finally:
                store.close()
                self._remove(store)
        elif row.state == "cold":
            store = self._store(name, self.golden[name])
            store.drop_caches()
            if row.name == "cold_start_disk":
                drop_from_page_cache(store.files())
            try:
                result = self._timed(lambda: row.run(store, inputs, self.plan), prof)
            finally:
                store.close()
        else:
            raise ValueError(row.state)
        if prof is not None:
            self._save_profile(row, prof)
        return result

    def _base(self, name: str) -> Store:
        store = self.base.get(name)
        if store is None:
            store = self._copy_golden(name, "base")
            store.open()
            store.warm()
            self.base[name] = store
        return store

    def _close_bases(self) -> None:
        for store in self.base.values():
            store.close()
            self._remove(store)
        self.base.clear()

    def _save_profile(self, row: Row, prof: cProfile.Profile) -> None:
        path = os.path.join(self.out, f"profile-ksds-{row.name}.txt")
        buf = io.StringIO()
        for key in ("cumulative", "tottime"):
            buf.write(f"=== ksds {row.name}: top 30 by {key} ===\n")
            pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(30)
        with open(path, "w") as f:
            f.write(buf.getvalue())
        prof.dump_stats(os.path.join(self.out, f"profile-ksds-{row.name}.prof"))
        log(f"  profile of ksds {row.name} -> {path}")

    # --- the run -----------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        os.makedirs(self.work, exist_ok=True)
        self.records = Records(self.spec)
        log(f"{self.spec.count:,} records of {self.spec.record_length} B (keys {self.spec.key_length} B), "
            f"stores: {', '.join(self.classes) or 'none'}; repeat {self.repeat}")
        names = list(self.classes)
        for name in names:  # versions and configuration (describe() needs no open store)
            self.describe[name] = self._store(name, self.work).describe()
        results: list[dict[str, Any]] = []
        all_records: list[bytes] | None = None
        try:
            for row in self.rows:
                rt = time.perf_counter()
                inputs = row.prepare(self.records, self.plan)
                if row.name == "load":
                    all_records = inputs
                if row.state in ("base", "copy", "cold"):  # the loaded data set, made once per store
                    for name in names:
                        if name not in self.golden:
                            self._build_golden(name, all_records)
                if row.state != "base" and self.base:
                    self._close_bases()
                results.append(self._run_row(row, names, inputs))
                log(f"  {row.name:<20} {time.perf_counter() - rt:6.1f} s")
            if not self.rows:
                log("no rows selected")
        finally:
            self._close_bases()
            shutil.rmtree(self.work, ignore_errors=True)
        del all_records
        return {
            "meta": self._meta(time.perf_counter() - started),
            "stores": {n: self.describe.get(n, {}) for n in names},
            "skipped": self.skipped,
            "rows": results,
        }

    def _run_row(self, row: Row, names: list[str], inputs: Any) -> dict[str, Any]:
        ops = row.ops(inputs)
        rpo = row.rec_per_op(self.plan)
        entry: dict[str, Any] = {
            "name": row.name,
            "title": row.title,
            "unit": row.unit,
            "state": row.state,
            "durable": row.durable,
            "transactions": row.txn,
            "ops": ops,
            "records_per_op": rpo,
            "results": {},
        }
        if row.state == "raw":
            times = []
            kind = row.name[: -len("_4k")]
            for _ in range(self.repeat):
                gc.collect()
                times.append(sync_cost(self.out, ops, kind))
            entry["results"]["os"] = self._figures(times, ops, rpo, None)
            entry["disk"] = disk_of(self.out)
            return entry
        todo = [n for n in names if row.needs in self.classes[n].capabilities]
        times_by: dict[str, list[float]] = {n: [] for n in todo}
        errors: dict[str, str] = {}
        expected = row.expect(inputs)
        errors_skip: set[str] = set()
        for rep in range(self.repeat):
            for name in todo:
                if name in errors or name in errors_skip:
                    continue
                try:
                    dt, count = self._one(row, name, inputs, rep)
                except Exception as e:  # a store that fails a row is reported, not fatal
                    errors[name] = f"{type(e).__name__}: {e}"
                    log(f"  {row.name}: {name} failed: {errors[name]}")
                    continue
                if count != expected:
                    errors[name] = f"returned {count}, expected {expected}"
                    log(f"  {row.name}: {name} {errors[name]}")
                    continue
                times_by[name].append(dt)
                if dt > self.run_budget and rep < self.repeat - 1:
                    # keep the whole suite bounded: a store this slow on a row gets no more repeats of it
                    errors_skip.add(name)
                    log(f"  {row.name}: {name} took {dt:.1f} s > --run-budget {self.run_budget:g} s: "
                        "no more repeats of this row for it")
        for name in todo:
            if name in errors:
                entry["results"][name] = {"error": errors[name]}
            else:
                entry["results"][name] = self._figures(times_by[name], ops, rpo, None)
                if name in errors_skip:
                    entry["results"][name]["cut_short"] = True
        entry["ratios"] = ratios(entry["results"], ops)
        return entry

    @staticmethod
    def _figures(times: list[float], ops: int, rpo: int, extra: dict[str, Any] | None) -> dict[str, Any]:
        med = statistics.median(times)
        fig = {
            "times_s": times,
            "median_s": med,
            "us_per_op": med / ops * 1e6 if ops else None,
            "ops_per_s": ops / med if med > 0 else None,
            "records_per_s": ops * rpo / med if med > 0 else None,
        }
        if extra:
            fig.update(extra)
        return fig

    def _meta(self, total: float) -> dict[str, Any]:
        import platform

        return {
            "records": self.spec.count,
            "key_length": self.spec.key_length,
            "record_length": self.spec.record_length,
            "seed": self.spec.seed,
            "repeat": self.repeat,
            "buffer_space": self.buffer_space,
            "bulk_txn": self.plan.bulk_txn,
            "run_budget_s": self.run_budget,
            "options": self.options,
            "plan": self.plan.__dict__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "disk": disk_of(self.out),
            "runtime_s": total,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "all_stores": list(STORES),
        }


def fsync_files(paths: list[str]) -> None:
    for f in paths:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ratios(results: dict[str, dict[str, Any]], ops: int) -> dict[str, dict[str, float]]:
    """ksds/peer for each peer: the ratio of the medians, and the spread of the per-repeat ratios."""
    k = results.get("ksds")
    if not k or "error" in k:
        return {}
    out = {}
    for name, r in results.items():
        if name == "ksds" or "error" in r:
            continue
        per = [a / b for a, b in zip(k["times_s"], r["times_s"], strict=False) if b > 0]
        if not per or not r["median_s"]:
            continue
        out[name] = {"ratio": k["median_s"] / r["median_s"], "min": min(per), "max": max(per)}
    return out
