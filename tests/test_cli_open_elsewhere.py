"""LISTCAT, PRINT and REPRO of a data set that another process has open for update, and EXAMINE of a file that is
not a data set. Every ``ksds`` command runs as a real subprocess, as in test_cli.py.

The other process (the *holder*) opens the data set for update, writes records (committed in its log, not yet
written in place) and waits. The commands read the file plus the committed transactions of its log without
opening the data set, so SHAREOPTIONS(1), where a second open is refused, works too, and say once that what they
show is as of that moment.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import procs
import pytest

import ksds

KL, RL = 8, 40
ENV = {k: v for k, v in os.environ.items() if k != "KSDS_FAULTS"}

#: opens argv[1] for update, writes argv[2] records from key argv[3] (one committed transaction each), then
#: with argv[4] == "torn" writes a batch of argv[2] more whose commit frame is left out: frames of a transaction that
#: has no commit frame (what a process that dies in the middle of a request leaves). Says "ready", waits for a
#: line on stdin, then closes the data set ("close") or dies without closing it ("die").
HOLDER = r"""
import os, sys
import ksds, ksds.journal
path, n, first, torn = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "torn"
d = ksds.open(path)
for i in range(first, first + n):
    d.write(b"%08d" % i + b"h" * 32)
if torn:  # from here on, each transaction's frames reach the log but its commit frame never does
    J = ksds.journal.Journal
    append = J.append
    def no_commit(self, changes, txn, state):
        append(self, changes, txn, state)
        n = ksds.journal.frame_length(ksds.journal.STATE_SIZE)
        self.offset -= n
        os.pwrite(self.fd, bytes(n), self.offset)
    J.append = no_commit
    with d.batch():
        for i in range(first + n, first + 2 * n):
            d.write(b"%08d" % i + b"t" * 32)
print("ready", flush=True)
if sys.stdin.readline().strip() == "die":
    os._exit(0)
d.close()
"""


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ksds", *args]


def run_all(*commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Several ``ksds`` commands at once (none of them writes a file another reads)."""
    return procs.run_all([command(*c) for c in commands], ENV)


def rec(i: int, fill: bytes = b"b") -> bytes:
    return b"%08d" % i + fill * (RL - KL)


def define(path: Path, n: int, share: tuple[int, int]) -> None:
    ksds.define(str(path), key_length=KL, record_length=RL, ci_size=512, cis_per_ca=4, share_options=share)
    with ksds.open(str(path)) as ds, ds.batch():
        for i in range(n):
            ds.write(rec(2 * i))  # even keys: the holder's odd ones go between them (CI and CA splits)


class Holder:
    def __init__(self, path: Path, n: int, first: int, torn: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), str(n), str(first), "torn" if torn else "no"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", (line, self.proc.stderr.read() if self.proc.stderr else "")

    def end(self, how: str = "close") -> None:
        out, err = self.proc.communicate(how + "\n", timeout=60)
        assert self.proc.returncode == 0, err


def digest(*paths: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else "-" for p in paths]


@pytest.mark.parametrize("share", [(1, 3), (2, 3)], ids=["so1", "so2"])
def test_listcat_print_repro_while_another_process_updates(tmp_path: Path, share: tuple[int, int]) -> None:
    ds = tmp_path / "d.ksds"
    define(ds, 100, share)
    holder = Holder(ds, 60, 1001)  # keys 1001..1060, committed in its log
    try:
        wal = Path(str(ds) + "-wal")
        before = digest(ds, wal)
        out = tmp_path / "out.jsonl"
        listing, as_json, printed, copied = run_all(
            ("listcat", str(ds)),
            ("listcat", str(ds), "--json"),
            ("print", str(ds), "--character", "--fromkey", "00001050"),
            ("repro", str(ds), str(out)),
        )
        assert digest(ds, wal) == before  # nothing written: no recovery, no checkpoint
    finally:
        holder.end()
    for p in (listing, as_json, printed, copied):
        assert p.returncode == 0 and "Traceback" not in p.stderr, (p.args, p.stderr)
    # LISTCAT: the figures as of the holder's last commit, and a line saying why they are only that
    assert "REC-TOTAL" in listing.stdout and "160" in listing.stdout.split("REC-TOTAL")[1].split()[0]
    note = [line for line in listing.stdout.splitlines() if "NOTE:" in line]
    assert len(note) == 1 and "open in another process" in note[0] and "as of" in note[0], listing.stdout
    doc = json.loads(as_json.stdout)
    assert doc["STATISTICS"]["REC-TOTAL"] == 160 and "open in another process" in doc["note"]
    assert doc["definition"]["share_options"] == list(share)
    # PRINT: the holder's records, and one line on stderr
    assert printed.stdout.count("KEY OF RECORD") == 11
    assert "IDC0005I NUMBER OF RECORDS PROCESSED WAS 11" in printed.stdout
    assert (b"00001060" + b"h" * 32).decode() in printed.stdout
    assert printed.stderr.count("\n") == 1 and "open in another process" in printed.stderr
    # REPRO: every record, in key order
    assert "160 records processed, 160 written" in copied.stdout, copied.stderr
    keys = [json.loads(line)["key"] for line in out.read_text().splitlines()]
    want = sorted([b"%08d" % (2 * i) for i in range(100)] + [b"%08d" % i for i in range(1001, 1061)])
    assert keys == [k.hex().upper() for k in want]
    assert "open in another process" in copied.stderr
    # once nobody has it open: the same figures, and no note
    p = run_all(("listcat", str(ds)))[0]
    assert p.returncode == 0 and "NOTE" not in p.stdout and p.stderr == "", p.stderr


def test_a_transaction_without_its_commit_frame_is_never_seen(tmp_path: Path) -> None:
    """The holder's last batch is in its log without a commit frame; readers see the records before it only."""
    ds = tmp_path / "d.ksds"
    define(ds, 100, (1, 3))
    holder = Holder(ds, 40, 2001, torn=True)  # 2001..2040 committed, 2041..2080 not
    try:
        listing, printed, examined = run_all(  # (map: examined without opening it)
            ("listcat", str(ds), "--json"), ("print", str(ds), "--hex"), ("map", str(ds))
        )
    finally:
        holder.end("die")
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout)["STATISTICS"]["REC-TOTAL"] == 140
    assert "IDC0005I NUMBER OF RECORDS PROCESSED WAS 140" in printed.stdout, printed.stderr
    assert (b"00002040").hex().upper() in printed.stdout and (b"00002041").hex().upper() not in printed.stdout
    assert examined.returncode == 0 and "140 records" in examined.stdout, examined.stderr
    assert "open in another process" in examined.stdout
    # not open anywhere now: LISTCAT opens it (recovery drops the batch that has no commit frame)
    after = run_all(("listcat", str(ds), "--json"))[0]
    assert json.loads(after.stdout)["STATISTICS"]["REC-TOTAL"] == 140


def test_examine_of_a_file_that_is_not_a_data_set(tmp_path: Path) -> None:
    """A text file, an empty file, a directory, a PNG: one line saying it is not a data set, no advice to restore
    it from a backup."""
    (tmp_path / "x.txt").write_text("customer records\n")
    (tmp_path / "x.empty").write_bytes(b"")
    (tmp_path / "x.dir").mkdir()
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    paths = [tmp_path / n for n in ("x.txt", "x.empty", "x.dir", "x.png")]
    for path, p in zip(paths, run_all(*(("examine", str(path)) for path in paths)), strict=True):
        assert p.returncode not in (0, 4) and "Traceback" not in p.stderr, (path, p.stderr)
        assert p.stdout == "", (path, p.stdout)
        line = p.stderr.strip()
        assert "\n" not in line and line.startswith("ksds examine: ") and str(path) in line, (path, line)
        assert "not a ksds data set" in line and "backup" not in line.lower(), (path, line)
