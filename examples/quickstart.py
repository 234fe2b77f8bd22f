"""A tour of ksds on a real data set: define, load 100,000 records, keyed reads, browses, a crash, LISTCAT.

    python examples/quickstart.py [DIRECTORY]

Without DIRECTORY it works in a temporary directory (about 60 MB) that it removes at the end, even after an
error; with one, the data set ``DIRECTORY/customers.ksds`` is left there for you to look at (``ksds listcat``,
``ksds map``) and replaced by the next run.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time

import ksds


def main() -> None:
    if len(sys.argv) > 1:
        tour(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory(prefix="ksds-quickstart-") as where:  # removed at the end, even on error
            tour(where)


def tour(where: str) -> None:
    path = os.path.join(where, "customers.ksds")
    if os.path.exists(path):
        ksds.delete(path)  # the data set of an earlier run, with its log and lock files
    # DEFINE CLUSTER INDEXED KEYS(10 0) RECORDSIZE(200 200) FREESPACE(20 10)
    ksds.define(path, key_length=10, record_length=200, freespace=(20, 10))
    print(f"defined {path}")

    def record(n: int, city: str) -> bytes:
        return (b"C%09d" % n) + f"customer {n:<10} {city:<20}".encode().ljust(190, b" ")

    t0 = time.perf_counter()
    with ksds.open(path) as ds:
        with ds.batch():  # one transaction: a REPRO-style load in key order
            for n in range(0, 200_000, 2):
                ds.write(record(n, "LOADED"))
        keys = list(range(1, 200_000, 2))
        random.Random(1).shuffle(keys)
        for n in keys[:20_000]:  # random inserts: CI and CA splits
            ds.write(record(n, "INSERTED"))
    print(f"loaded 100,000 and inserted 20,000 records in {time.perf_counter() - t0:.1f}s")

    with ksds.open(path) as ds:
        print("READ EQUAL  ", ds.read(b"C000004242")[:40])
        print("READ GTEQ   ", ds.read(b"C000004243", gteq=True)[:40])
        print("READ GENERIC", ds.read(b"C00001", generic=True)[:40])
        print("browse from C000100000:")
        for i, rec in enumerate(ds.browse(b"C000100000")):
            print("   ", rec[:40])
            if i == 2:
                break
        print("browse backward from the last record:", ds.browse(backward=True).__next__()[:20])
        try:
            ds.write(record(4242, "DUPLICATE"))
        except ksds.DuplicateKeyError as e:
            print(f"WRITE duplicate -> {type(e).__name__}: RPL {e.rpl_code}, COBOL status {e.file_status}")

    # a process killed in the middle of its writes: the next open recovers every acknowledged request
    code = (
        f"import ksds, os, signal; ds = ksds.open({path!r})\n"
        "for n in range(1, 2001, 2): ds.write(b'C%09d' % (n + 300000) + b' ' * 190)\n"
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    subprocess.run([sys.executable, "-c", code])
    with ksds.open(path) as ds:
        print(f"after kill -9: {ds.recovery}; {len(ds)} records")
        st = ds.stats()
        print("LISTCAT:", {k: st[k] for k in ("REC-TOTAL", "REC-INSERTED", "SPLITS-CI", "SPLITS-CA", "LEVELS",
                                              "HI-U-RBA", "FREESPACE-%CI", "FREESPACE-%CA")})
    report = ksds.examine(path)
    print(f"EXAMINE: {'sound' if report.sound else 'NOT SOUND'}, {report.records} records, "
          f"{report.data_cis} data CIs, {report.index_cis} index CIs, {report.levels} index levels")


if __name__ == "__main__":
    main()
