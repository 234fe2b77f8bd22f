"""What a new user of the ``ksds`` command trips over: --version, DELETE of several names, text fields read as hex,
the keys each CA of ``ksds map`` covers, the CLI's own option names in messages, numeric options, keys shown as
text. Every command runs as a real subprocess (``python -m ksds ...``), as in test_cli.py.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import io
import json
import os
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import procs
import pytest

import ksds

KL, RL = 8, 80
ENV = {k: v for k, v in os.environ.items() if k not in ("KSDS_FAULTS", "COLUMNS")}
SVG = "{http://www.w3.org/2000/svg}"


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ksds", *args]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(*args), capture_output=True, text=True, env=ENV, timeout=120)


def run_all(*commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Several ``ksds`` commands at once (none of them writes a file another reads)."""
    return procs.run_all([command(*c) for c in commands], ENV)


def one_line(p: subprocess.CompletedProcess[str], verb: str, status: int) -> str:
    """A refusal: ``status``, one line on stderr (``ksds VERB: ...``), no traceback."""
    assert p.returncode == status, (p.args, p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ksds {verb}: "), (p.args, p.stderr)
    return lines[0]


def rec(i: int, text: str = "customer") -> bytes:
    return (b"%08d" % i) + f" {text} {i}".encode().ljust(RL - KL, b".")


def define(path: Path, records: list[bytes] = [], **kw: int) -> None:  # noqa: B006 - never changed
    ksds.define(str(path), key_length=KL, record_length=RL, ci_size=kw.pop("ci_size", 512), **kw)  # type: ignore[arg-type]
    if records:
        with ksds.open(str(path)) as ds, ds.batch():
            for r in records:
                ds.write(r)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- --version, DELETE of several names ------------------------------------------------------------------------------


def test_version_and_delete_of_several_names(tmp_path: Path) -> None:
    a, b, c = (tmp_path / f"{n}.ksds" for n in "abc")
    for p in (a, b, c):
        define(p, [rec(1)])
    d = ksds.open(str(b))
    d.write(rec(2))
    d._abandon()  # b has a log left behind
    notes = tmp_path / "notes.txt"
    notes.write_text("not a data set\n")
    version, mixed = run_all(
        ("--version",), ("delete", str(a), str(tmp_path / "missing.ksds"), str(b), str(notes))
    )
    assert version.returncode == 0 and version.stdout == f"ksds {importlib.metadata.version('ksds')}\n"
    assert version.stdout == f"ksds {ksds.__version__}\n"
    # each name deleted or reported; the highest condition code (8: not found, not a data set)
    assert mixed.returncode == 8, (mixed.stdout, mixed.stderr)
    assert not a.exists() and not b.exists() and not Path(str(b) + "-wal").exists() and notes.exists()
    assert f"deleted {a}" in mixed.stdout and f"deleted {b}" in mixed.stdout and "-wal" in mixed.stdout
    errs = mixed.stderr.strip().splitlines()
    assert len(errs) == 2 and all(e.startswith("ksds delete: ") for e in errs), mixed.stderr
    assert "missing.ksds" in errs[0] and "not a ksds data set" in errs[1]
    # all there: 0; one in use: 8, the other still deleted
    e = tmp_path / "e.ksds"
    define(e)
    with ksds.open(str(c), "r"):
        busy = run("delete", str(c), str(e))
    assert busy.returncode == 8 and "in use" in busy.stderr and c.exists() and not e.exists()
    define(e)
    assert run("delete", str(c), str(e)).returncode == 0 and not c.exists() and not e.exists()


# --- text fields read as hex -------------------------------------------------------------------------------------


def test_text_fields_without_fields_text_are_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    records = [rec(i) for i in range(3000)]
    texts = [r.decode() for r in records]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"key": t[:KL], "record": t}) + "\n" for t in texts))
    csv_in = tmp_path / "in.csv"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["key", "record"])
    writer.writerows([t[:KL], t] for t in texts)
    csv_in.write_text(buf.getvalue())
    ds, ds2 = tmp_path / "d.ksds", tmp_path / "d2.ksds"  # (one each: two loads into one data set at once collide)
    define(ds, [rec(99999)])
    define(ds2, [rec(99999)])
    before = digest(ds), digest(ds2)
    out = tmp_path / "out.bin"
    p_json, p_csv, p_flat = run_all(
        ("repro", str(jsonl), str(ds)), ("repro", str(csv_in), str(ds2)), ("repro", str(jsonl), str(out))
    )
    for p, name in ((p_json, jsonl), (p_csv, csv_in), (p_flat, jsonl)):
        line = one_line(p, "repro", 12)
        assert str(name) in line and "--fields text" in line and "not hex" in line and "nothing written" in line
        assert "records processed" not in p.stdout
    assert (digest(ds), digest(ds2)) == before and not out.exists()
    # with --fields text they load
    p = run("repro", str(jsonl), str(ds), "--fields", "text")
    assert p.returncode == 0 and "3000 records processed, 3000 written" in p.stdout, p.stderr
    # a hex file with one bad record is still a record error, not this refusal
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"record": rec(5).hex()[:-1]}) + "\n" + json.dumps({"record": rec(6).hex()}) + "\n")
    p = run("repro", str(bad), str(tmp_path / "o.jsonl"))
    assert p.returncode == 8 and "1 errors" in p.stdout and "--fields text" not in p.stderr


# --- ksds map: the keys of each CA ---------------------------------------------------------------------------------


def test_map_shows_the_keys_of_each_ca(tmp_path: Path) -> None:
    small = tmp_path / "s.ksds"
    define(small, [rec(i) for i in range(0, 300, 3)], cis_per_ca=4)
    wide = tmp_path / "w.ksds"  # 40 CIs a CA: wider than --width 40
    ebcdic = [f"CUST{i:04d}".encode("cp037") + bytes(RL - KL) for i in range(200)]
    define(wide, ebcdic, ci_size=1024, cis_per_ca=40)
    svg = tmp_path / "s.svg"
    text, wrapped, drawn = run_all(
        ("map", str(small)), ("map", str(wide), "--width", "40"), ("map", str(small), "-o", str(svg))
    )
    # the text form: each CA row starts with its number and its first and last key
    rows = [line for line in text.stdout.splitlines() if line.startswith("CA ")]
    assert rows and rows[0].startswith("CA 0") and re.search(r"^CA 0 +00000000\.\.\d{8} +CI ", rows[0]), rows[0]
    assert re.search(r"\.\.00000297 .*records$", rows[-1]), rows[-1]
    # a wide CA wraps at the width, under a line with its number, keys (EBCDIC shown as text) and records
    lines = wrapped.stdout.splitlines()
    body = lines[lines.index("") + 1 : lines.index("", lines.index("") + 1)]  # between the title and the legend
    assert body and max(len(line) for line in body) <= 40, wrapped.stdout
    first = next(i for i, line in enumerate(lines) if line.startswith("CA 0"))
    assert re.match(r"CA 0 CUST0000\.\.CUST0199  200 records$", lines[first]), lines[first]
    assert lines[first + 1].startswith("    CI ") and lines[first + 2].startswith("    CI ")
    # the SVG: a label with each CA's keys, and a <title> on each CA row and on each data CI with its keys
    assert drawn.returncode == 0, drawn.stderr
    root = ET.parse(svg).getroot()
    labels = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert "00000000..00000009" in labels[labels.index("CA 0") :][:4] or any(
        re.fullmatch(r"00000000\.\.\d{8}", s) for s in labels
    ), labels
    titles = [r.findtext(f"{SVG}title") or "" for r in root.iter(f"{SVG}rect")]
    assert any(re.fullmatch(r"CA 0: keys 00000000\.\.\d{8}, \d+ records", t) for t in titles), titles[:20]
    assert sum(t.startswith("CA ") for t in titles) == len(rows)
    assert any(re.fullmatch(r"CI \d+: data, \d+/\d+ records, keys 00000000\.\.\d{8}", t) for t in titles)
    pytest.importorskip("matplotlib")
    png = tmp_path / "w.png"
    p = run("map", str(wide), "-o", str(png))
    assert p.returncode == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    w, _ = struct.unpack(">II", png.read_bytes()[16:24])
    assert w >= 600


# --- the CLI's own option names, numeric options, keys as text ------------------------------------------------------

#: (verb and arguments, the option the message must name first)
BAD_NUMBERS = [
    (("define", "{new}", "--keys", "8", "0", "--recordsize", "80", "--cisize", "0"), "--cisize"),
    (("define", "{new}", "--keys", "8", "0", "--recordsize", "80", "--cisize", "4k"), "--cisize"),
    (("define", "{new}", "--keys", "8", "0", "--recordsize", "0"), "--recordsize"),
    (("define", "{new}", "--keys", "x", "0", "--recordsize", "80"), "--keys"),
    (("define", "{new}", "--keys", "8", "0", "--recordsize", "80", "--shareoptions", "0", "3"), "--shareoptions"),
    (("define", "{new}", "--keys", "8", "0", "--recordsize", "80", "--cis-per-ca", "1"), "--cis-per-ca"),
    (("alter", "{ds}", "--freespace", "ten", "0"), "--freespace"),
    (("print", "{ds}", "--skip", "-1"), "--skip"),
    (("print", "{ds}", "--count", "x"), "--count"),
    (("map", "{ds}", "--width", "0"), "--width"),
    (("repro", "{ds}", "{out}", "--rdw", "--rdw-adjust", "x"), "--rdw-adjust"),
    # engine checks, in the CLI's option names
    (("define", "{new}", "--keys", "8", "75", "--recordsize", "80"), "the key (--keys OFFSET 75 + --keys LENGTH 8"),
    (("define", "{new}", "--keys", "8", "0", "--recordsize", "4090", "--cisize", "512"), "--recordsize 4090"),
    (
        ("define", "{new}", "--keys", "8", "0", "--recordsize", "80", "--cisize", "512", "--cis-per-ca", "99"),
        "--cis-per-ca 99",
    ),
    (("define", "{new}", "--keys", "8", "0", "--recordsize", "80", "--freespace", "100", "0"), "--freespace CI"),
    (("define", "{new}", "--keys", "8", "0", "--recordsize", "80", "--shareoptions", "2", "1"), "--shareoptions S"),
    (("alter", "{ds}", "--freespace", "10", "101"), "--freespace"),
]
ENGINE_NAMES = ("ci_size", "record_length", "key_length", "key_offset", "cis_per_ca", "freespace ci", "share_options")


def test_numeric_options_and_engine_checks_are_one_line_in_the_clis_names(tmp_path: Path) -> None:
    ds = tmp_path / "d.ksds"
    define(ds, [rec(1)])
    before = digest(ds)
    cases = []
    for n, (args, named) in enumerate(BAD_NUMBERS):
        fill = {"{new}": str(tmp_path / f"new{n}.ksds"), "{ds}": str(ds), "{out}": str(tmp_path / f"out{n}.jsonl")}
        cases.append((tuple(fill.get(a, a) for a in args), named))
    results = run_all(*(args for args, _ in cases))
    for (args, named), p in zip(cases, results, strict=True):
        line = one_line(p, args[0], 12)
        assert line.startswith(f"ksds {args[0]}: {named}"), (args, line)
        assert not any(name in line for name in ENGINE_NAMES), (args, line)
    assert digest(ds) == before
    assert not any(tmp_path.glob("new*.ksds")) and not any(tmp_path.glob("out*.jsonl"))


def test_keys_in_messages_are_hex_and_text(tmp_path: Path) -> None:
    ascii_ds = tmp_path / "a.ksds"
    define(ascii_ds, [rec(1)])
    ebcdic_ds = tmp_path / "e.ksds"
    ebcdic = [f"CUST{i:04d}".encode("cp037") + f" NAME {i}".encode("cp037").ljust(RL - KL, b"\x40") for i in range(5)]
    define(ebcdic_ds, ebcdic)
    dup = tmp_path / "dup.bin"
    dup.write_bytes(ebcdic[2])
    p_long, p_long_e = run_all(
        ("print", str(ascii_ds), "--fromkey", "123456789"),
        ("print", str(ebcdic_ds), "--fromkey", "CUST00001", "--encoding", "cp037"),
    )
    p_dup = run("repro", str(dup), str(ebcdic_ds))
    assert "--fromkey X'313233343536373839' ('123456789') has 9 bytes" in one_line(p_long, "print", 2)
    assert p_dup.returncode == 8, p_dup.stderr
    assert "duplicate key X'C3E4E2E3F0F0F0F2' ('CUST0002' in cp037)" in p_dup.stderr
    assert "X'C3E4E2E3F0F0F0F0F1' ('CUST00001' in cp037) has 9 bytes" in one_line(p_long_e, "print", 2)
