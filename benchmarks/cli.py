"""``python -m benchmarks``: the command line (see ``benchmarks/README.md``)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from typing import Any

from . import aix, caching, sharing
from .report import (
    format_caching,
    format_scaling,
    format_sharing,
    format_table,
    plot_caching,
    plot_ratios,
    plot_rows,
    plot_scaling,
    plot_sharing,
    save_json,
)
from .runner import Suite, log
from .scaling import DEFAULT_SIZES, HUGE_SIZE, QUICK_SIZES, run_scaling
from .stores import STORES
from .workloads import BULK_TXN, ROW_NAMES, ROWS

QUICK_RECORDS = 2000


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _size(value: str) -> int:
    v = value.strip().lower().replace("_", "")
    mult = 1
    for suffix, m in (("k", 1000), ("m", 1_000_000), ("g", 1_000_000_000)):
        if v.endswith(suffix):
            v, mult = v[:-1], m
            break
    return int(float(v) * mult)


def _bytes(value: str) -> int:
    v = value.strip().lower()
    for suffix, m in (("kib", 1 << 10), ("mib", 1 << 20), ("gib", 1 << 30), ("k", 1 << 10), ("m", 1 << 20),
                      ("g", 1 << 30)):
        if v.endswith(suffix):
            return int(float(v[: -len(suffix)]) * m)
    return int(v)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark ksds against sqlite3, LMDB, Berkeley DB and diskcache on the same records.",
    )
    p.add_argument("--records", type=_size, default=None,
                   help="records in the data set (default 100000; --quick: 2000); accepts 10k, 1m")
    p.add_argument("--repeat", type=int, default=3, help="runs of each row per store; the median is reported "
                   "(default 3)")
    p.add_argument("--stores", type=_csv, default=list(STORES),
                   help=f"comma-separated stores (default all: {','.join(STORES)})")
    p.add_argument("--workloads", type=_csv, default=list(ROW_NAMES),
                   help="comma-separated rows (default all; see --list)")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results/<timestamp>/)")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run (seconds)")
    p.add_argument("--scaling", action="store_true",
                   help="also run the scaling run (10k, 100k, 1M records; --quick: 1k, 3k)")
    p.add_argument("--huge", action="store_true", help="with --scaling: add 10M records (implies --scaling)")
    p.add_argument("--sizes", type=lambda s: [_size(x) for x in _csv(s)], default=None,
                   help="scaling sizes instead of the defaults, e.g. 10k,100k")
    p.add_argument("--no-suite", action="store_true",
                   help="skip the workload rows (with --scaling, --sharing or --caching)")
    p.add_argument("--sharing", action="store_true",
                   help="also run the sharing section: ksds RLS and NONRLS with 1, 2 and 4 processes vs sqlite3 WAL, "
                   "and the sharing targets (about 2 min)")
    p.add_argument("--sharing-records", type=_size, default=None,
                   help=f"records of the sharing section's shared data set (default {sharing.DEFAULT_RECORDS}; "
                   f"--quick: {sharing.QUICK_RECORDS})")
    p.add_argument("--sharing-requests", type=_size, default=None,
                   help=f"requests per process per sharing run (default {sharing.DEFAULT_REQUESTS}; "
                   f"--quick: {sharing.QUICK_REQUESTS})")
    p.add_argument("--caching", action="store_true",
                   help="also run the caching section: ksds serve per storage mode through its REST API, and the "
                   "storages in process vs diskcache (about 1.5 min)")
    p.add_argument("--caching-requests", type=_size, default=None,
                   help=f"requests per operation per mode through the API (default {caching.DEFAULT_REQUESTS}; "
                   f"--quick: {caching.QUICK_REQUESTS})")
    p.add_argument("--caching-inproc", type=_size, default=None,
                   help=f"operations of each kind in process (default {caching.DEFAULT_INPROC}; "
                   f"--quick: {caching.QUICK_INPROC})")
    p.add_argument("--caching-budget", type=float, default=caching.DEFAULT_BUDGET,
                   help="seconds after which a phase of the API runs stops (default "
                   f"{caching.DEFAULT_BUDGET:g}; the table shows done/planned)")
    p.add_argument("--aix", action="store_true",
                   help="also run the alternate-index section: ksds alternate indexes vs sqlite3 secondary indexes "
                   "(reads by path, counts, writes with and without an AIX, BLDINDEX), and the AIX targets")
    p.add_argument("--aix-records", type=_size, default=None,
                   help=f"records of the alternate-index section (default {aix.DEFAULT_RECORDS:,}; --quick: "
                   f"{aix.QUICK_RECORDS:,}); 1m for the BLDINDEX of 1M records")
    p.add_argument("--buffer-space", type=_bytes, default=32 << 20,
                   help="ksds buffer pool, and the peers' cache sizes (default 32MiB, ksds's default)")
    p.add_argument("--bulk-txn", type=int, default=BULK_TXN,
                   help="requests per transaction in the bulk rows (load, random_insert, rewrite, erase), for "
                   f"every store (default {BULK_TXN}; 0: the whole row in one transaction)")
    p.add_argument("--ksds-freespace", type=lambda v: tuple(int(x) for x in _csv(v)), default=(20, 10),
                   metavar="CI,CA", help="FREESPACE of the ksds data sets (default 20,10, as a VSAM data set that "
                   "takes inserts is defined; 0,0 is ksds.define's default)")
    p.add_argument("--run-budget", type=float, default=10.0,
                   help="a store whose single timed run of a row takes longer than this many seconds gets no "
                   "more repeats of that row (flagged; keeps the suite bounded; default 10)")
    p.add_argument("--seed", type=int, default=20240611, help="seed of the records and request orders")
    p.add_argument("--profile", type=_csv, default=[],
                   help="rows to profile ksds on (cProfile, first repeat): writes profile-ksds-ROW.txt/.prof")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--list", action="store_true", help="list the rows and stores, then exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        for r in ROWS:
            print(f"{r.name:<20} {r.title}  [{r.txn}]" if r.txn else f"{r.name:<20} {r.title}")
        print("stores:", ", ".join(STORES))
        return 0
    unknown = [s for s in args.stores if s not in STORES]
    if unknown:
        print(f"unknown store(s): {', '.join(unknown)}; known: {', '.join(STORES)}", file=sys.stderr)
        return 2
    bad = [w for w in args.workloads if w not in ROW_NAMES]
    if bad:
        print(f"unknown workload(s): {', '.join(bad)}; known: {', '.join(ROW_NAMES)}", file=sys.stderr)
        return 2
    if args.repeat < 1:
        print("--repeat must be at least 1", file=sys.stderr)
        return 2
    for opt in ("sharing_records", "sharing_requests", "caching_requests", "caching_inproc", "aix_records"):
        if getattr(args, opt) is not None and getattr(args, opt) < 1:
            print(f"--{opt.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    if args.caching_budget <= 0:
        print("--caching-budget must be > 0", file=sys.stderr)
        return 2
    if args.huge:
        args.scaling = True
    records = args.records if args.records is not None else (QUICK_RECORDS if args.quick else 100_000)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any]
    if args.no_suite:
        results = {"meta": {"records": records, "repeat": args.repeat, "buffer_space": args.buffer_space},
                   "stores": {}, "skipped": {}, "rows": []}
    else:
        suite = Suite(records=records, repeat=args.repeat, stores=args.stores, rows=args.workloads, out=out,
                      quick=args.quick, buffer_space=args.buffer_space, seed=args.seed, profile=args.profile,
                      bulk_txn=args.bulk_txn, run_budget=args.run_budget,
                      options={"ksds_freespace": args.ksds_freespace})
        results = suite.run()
        print(format_table(results))
    if args.scaling:
        sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES + ([HUGE_SIZE] if args.huge else []))
        log(f"scaling run: sizes {', '.join(f'{s:,}' for s in sizes)}")
        scaling = run_scaling(stores=args.stores, sizes=sizes, out=out, repeat=args.repeat,
                              buffer_space=args.buffer_space, seed=args.seed, quick=args.quick, log=log,
                              options={"ksds_freespace": args.ksds_freespace})
        results["scaling"] = scaling
        print()
        print(format_scaling(scaling))
    if args.sharing:
        results["sharing"] = sharing.run_sharing(
            out=out,
            records=args.sharing_records or (sharing.QUICK_RECORDS if args.quick else sharing.DEFAULT_RECORDS),
            requests=args.sharing_requests or (sharing.QUICK_REQUESTS if args.quick else sharing.DEFAULT_REQUESTS),
            repeat=args.repeat, buffer_space=args.buffer_space, seed=args.seed, log=log,
        )
        print()
        print(format_sharing(results["sharing"]))
    if args.caching:
        results["caching"] = caching.run_caching(
            out=out,
            requests=args.caching_requests or (caching.QUICK_REQUESTS if args.quick else caching.DEFAULT_REQUESTS),
            inproc_requests=args.caching_inproc or (caching.QUICK_INPROC if args.quick else caching.DEFAULT_INPROC),
            repeat=args.repeat, budget=args.caching_budget, seed=args.seed, log=log,
        )
        print()
        print(format_caching(results["caching"]))
    if args.aix:
        results["aix"] = aix.run_aix(
            records=args.aix_records or (aix.QUICK_RECORDS if args.quick else aix.DEFAULT_RECORDS),
            repeat=args.repeat, work=os.path.join(out, "aix-work"), seed=args.seed, log=log,
        )
        shutil.rmtree(os.path.join(out, "aix-work"), ignore_errors=True)
        print()
        print(aix.format_aix(results["aix"]))
    results.setdefault("meta", {})["total_runtime_s"] = time.perf_counter() - started
    files = [save_json(results, out)]
    if not args.no_plots:
        if results["rows"]:
            files.append(plot_rows(results, out))
            files.append(plot_ratios(results, out))
        if args.scaling:
            files.append(plot_scaling(results["scaling"], out))
        if args.sharing:
            files.append(plot_sharing(results["sharing"], out))
        if args.caching:
            files.append(plot_caching(results["caching"], out))
    print()
    print(f"total runtime {time.perf_counter() - started:.1f} s; results in {out}: "
          + ", ".join(os.path.basename(f) for f in files))
    return 0
