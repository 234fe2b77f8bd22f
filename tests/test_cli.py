"""The ``ksds`` command: every verb run as a real subprocess (``python -m ksds ...``)."""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import ksds
from ksds import zowe
from ksds.cli import main
from ksds.cli._common import Progress, parse_key
from ksds.cli.map import build

KL, RL = 8, 80
ENV = {k: v for k, v in os.environ.items() if k != "KSDS_FAULTS"}


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ksds", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env or ENV,
        timeout=120,
    )


def run_all(*commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Several commands at once (they do not touch the same files)."""
    procs = [
        (
            c,
            subprocess.Popen(
                [sys.executable, "-m", "ksds", *c], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
            ),
        )
        for c in commands
    ]
    done = []
    for c, p in procs:
        out, err = p.communicate(timeout=120)
        done.append(subprocess.CompletedProcess([sys.executable, "-m", "ksds", *c], p.returncode, out, err))
    return done


def ok(*args: str, status: int = 0) -> str:
    p = run(*args)
    assert p.returncode == status, (args, p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    assert "Traceback" not in p.stderr
    return p.stdout


def one_line_error(p: subprocess.CompletedProcess[str], verb: str) -> str:
    """A failure: non-zero status, one line on stderr naming the verb, no traceback."""
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(f"ksds {verb}: " if verb else "ksds: "), lines[0]
    return lines[0]


def rec(i: int) -> bytes:
    return (b"%08d" % i) + (b" customer %d" % i).ljust(RL - KL, b"_")


def make_dataset(path: Path, n: int, *, ci_size: int = 512, cis_per_ca: int = 4) -> list[bytes]:
    """A data set with CI and CA splits: half the records loaded in key order, the other half inserted at random."""
    ksds.define(str(path), key_length=KL, record_length=RL, ci_size=ci_size, cis_per_ca=cis_per_ca, freespace=(20, 10))
    records = [rec(i) for i in range(n)]
    odd = records[1::2]
    random.Random(7).shuffle(odd)
    with ksds.open(str(path)) as ds, ds.batch():
        for r in records[0::2] + odd:
            ds.write(r)
    return records


def data_cis(path: Path) -> list[int]:
    """The data CIs (with records) the index points at."""
    m = build(str(path))
    return [c.ci for r in m.rows if r.kind == "ca" for c in r.cells if c.kind == "data" and c.records]


# --- a round trip ------------------------------------------------------------------------------------------------


def test_round_trip_define_repro_listcat_print_examine(tmp_path: Path) -> None:
    ds = tmp_path / "cust.ksds"
    n = 2000
    records = [rec(i) for i in range(n)]
    even, odd = records[0::2], records[1::2]
    rnd = random.Random(1)
    rnd.shuffle(even)
    rnd.shuffle(odd)
    (tmp_path / "even.jsonl").write_text(
        "".join(json.dumps({"key": r[:KL].hex(), "record": r.hex()}) + "\n" for r in even)
    )
    (tmp_path / "odd.bin").write_bytes(b"".join(odd))

    out = ok(
        "define",
        str(ds),
        "--keys",
        "8",
        "0",
        "--recordsize",
        "80",
        "--cisize",
        "512",
        "--cis-per-ca",
        "4",
        "--freespace",
        "20",
        "10",
    )
    assert "CISIZE(512)" in out and "CI/CA(4)" in out
    # into the empty data set: sorted, loaded in key order
    out = ok("repro", str(tmp_path / "even.jsonl"), str(ds))
    assert "1000 records processed, 1000 written, 0 replaced, 0 errors" in out and "sorted" in out
    # into a data set with records: merged in the order they come (CI and CA splits)
    out = ok("repro", str(tmp_path / "odd.bin"), str(ds))
    assert "1000 records processed, 1000 written, 0 replaced, 0 errors" in out

    # the verbs that only read run side by side (a data set may be open for reading by many)
    d = str(ds)
    results = run_all(
        ("listcat", d, "--json"),
        ("listcat", d),
        ("print", d, "--character", "--count", "2"),
        ("print", d, "--hex", "--fromkey", "00000100", "--count", "1"),
        ("print", d, "--fromkey", "0000199", "--tokey", "X'3030303031393935'"),  # generic start and end
        ("print", d, "--character", "--skip", "1998"),
        ("repro", d, str(tmp_path / "out.jsonl")),
        ("repro", d, str(tmp_path / "out.bin")),
        ("repro", d, str(tmp_path / "out.csv"), "--fields", "base64", "--fromkey", "00001000", "--count", "10"),
        ("examine", d),
        ("examine", d, "--indextest"),
    )
    for p in results:
        assert p.returncode == 0 and "Traceback" not in p.stderr, (p.args, p.stderr)
    listcat_json, listcat, print1, print2, print3, print4, _, _, _, examine1, _ = (p.stdout for p in results)

    doc = json.loads(listcat_json)
    assert doc["definition"]["ci_size"] == 512 and doc["definition"]["cis_per_ca"] == 4
    assert doc["STATISTICS"]["REC-TOTAL"] == n
    assert doc["STATISTICS"]["SPLITS-CI"] > 0 and doc["STATISTICS"]["SPLITS-CA"] > 0
    assert doc["ALLOCATION"]["CAS"] > 10 and doc["INDEX"]["LEVELS"] >= 2
    assert doc["ATTRIBUTES"]["SHROPTNS"] == [1, 3]
    for group in ("ATTRIBUTES", "STATISTICS", "ALLOCATION", "INDEX"):
        assert f"\n  {group}\n" in listcat
    assert re.search(r"REC-TOTAL-+2000\b", listcat)

    # PRINT: CHARACTER, HEX, DUMP, ranges
    assert print1.splitlines()[:2] == [f"KEY OF RECORD - {records[0][:KL].hex().upper()}", records[0].decode()]
    assert "NUMBER OF RECORDS PROCESSED WAS 2" in print1
    assert print2.splitlines()[1] == records[100][:60].hex().upper()
    assert print3.count("KEY OF RECORD") == 6 and "*00001990 customer 1990" in print3
    assert re.fullmatch(r"0000  ([0-9A-F]{8} ){7}[0-9A-F]{8}  \*.{32}\*", print3.splitlines()[1])
    assert print4.count("KEY OF RECORD") == 2

    # REPRO out: JSON Lines, binary, CSV (base64): exactly the records loaded
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [bytes.fromhex(json.loads(x)["record"]) for x in lines] == records
    assert json.loads(lines[5])["key"] == records[5][:KL].hex().upper()
    assert (tmp_path / "out.bin").read_bytes() == b"".join(records)
    csv_lines = (tmp_path / "out.csv").read_text().splitlines()
    assert csv_lines[0] == "key,record" and len(csv_lines) == 11
    assert "0 errors, 0 warnings: sound" in examine1 and "CONDITION CODE WAS 0" in examine1

    # and into another data set
    copy = tmp_path / "copy.ksds"
    ok("define", str(copy), "--keys", "8", "0", "--recordsize", "80", "80", "--cisize", "512", "--cis-per-ca", "4")
    ok("repro", str(tmp_path / "out.csv"), str(copy), "--fields", "base64")
    out = ok("repro", str(ds), str(copy), status=8)  # the 10 already there are duplicates: counted, not written
    assert "2000 records processed, 1990 written, 0 replaced, 10 errors" in out
    p = run("repro", str(ds), str(copy), "--count", "50")
    assert p.returncode == 8 and "50 records processed, 0 written, 0 replaced, 50 errors" in p.stdout
    assert "duplicate key X'3030303030303030'" in p.stderr and "NOREPLACE" in p.stderr
    assert len(p.stderr.splitlines()) == 21  # 20 shown, then one line saying the rest are only counted
    out = ok("repro", str(ds), str(copy), "--replace", "--count", "50")
    assert "50 records processed, 0 written, 50 replaced, 0 errors" in out
    ok("repro", str(copy), str(tmp_path / "copy.bin"))
    assert (tmp_path / "copy.bin").read_bytes() == b"".join(records)


def test_repro_text_formats_and_stdout(tmp_path: Path) -> None:
    ds = tmp_path / "t.ksds"
    records = make_dataset(ds, 200)
    out = ok("repro", str(ds), "-", "--outformat", "jsonl", "--fields", "text", "--count", "3")
    lines = out.splitlines()
    assert [json.loads(x) for x in lines] == [{"key": r[:KL].decode(), "record": r.decode()} for r in records[:3]]
    ok("repro", str(ds), str(tmp_path / "t.txt"), "--tokey", "00000009")
    assert (tmp_path / "t.txt").read_text().splitlines() == [r.decode() for r in records[:10]]
    ok("define", str(tmp_path / "u.ksds"), "--keys", "8", "0", "--recordsize", "80")
    out = ok("repro", str(tmp_path / "t.txt"), str(tmp_path / "u.ksds"))
    assert "10 records processed, 10 written" in out


# --- damage: told apart by examine, handled by verify ------------------------------------------------------------


def test_examine_and_verify_tell_damage_apart(tmp_path: Path) -> None:
    base = tmp_path / "base.ksds"
    records = make_dataset(base, 1500)
    flipped, truncated, killed = (tmp_path / f"{n}.ksds" for n in ("flipped", "truncated", "killed"))
    for p in (flipped, truncated, killed):
        shutil.copy(base, p)
    # a flipped bit in a data CI in use
    victim = data_cis(flipped)[len(data_cis(flipped)) // 2]
    with open(flipped, "r+b") as f:
        f.seek(victim * 512 + 40)
        b = f.read(1)[0]
        f.seek(victim * 512 + 40)
        f.write(bytes([b ^ 0x04]))
    # the last 10 CIs cut off
    os.truncate(truncated, os.path.getsize(truncated) - 10 * 512)
    # a process killed (SIGKILL) in the middle of its writes: the fault plan kills it at its 400th write
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import ksds\n"
            f"ds = ksds.open({str(killed)!r})\n"
            "for i in range(100000):\n"
            "    ds.write(b'9%07d' % i + b'x' * 72)\n",
        ],
        env={**ENV, "KSDS_FAULTS": "crash=400"},
        capture_output=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL
    assert os.path.exists(str(killed) + "-wal")

    p_flip, p_trunc, p_kill = run_all(*(("examine", str(p)) for p in (flipped, truncated, killed)))
    assert (p_flip.returncode, p_trunc.returncode, p_kill.returncode) == (8, 8, 4)
    assert f"IDC11701I ERROR CI {victim}: " in p_flip.stdout and "CRC32C" in p_flip.stdout
    assert "IDC11727I ERROR" in p_trunc.stdout and "truncated" in p_trunc.stdout
    assert "IDC11768I WARNING" in p_kill.stdout and "not closed cleanly" in p_kill.stdout
    assert "ERROR" not in p_kill.stdout
    codes = [set(re.findall(r"^(IDC\d+I \w+)", p.stdout, re.M)) for p in (p_flip, p_trunc, p_kill)]
    assert codes[0] != codes[1] and codes[1] != codes[2] and codes[0] != codes[2]

    # verify: the killed one is recovered; the others are reported clearly
    out = ok("verify", str(killed))
    assert re.search(r"replayed \d+ transactions", out) and "0 errors, 0 warnings: sound" in out
    assert not os.path.exists(str(killed) + "-wal")
    assert ok("examine", str(killed)).count("ERROR") == 0
    with ksds.open(str(killed), "r") as ds:
        got = list(ds)
    assert got[: len(records)] == records and len(got) > len(records)
    assert all(r.startswith(b"9") for r in got[len(records) :])

    p = run("verify", str(flipped))
    assert p.returncode == 8 and "nothing to recover" in p.stdout and "NOT SOUND" in p.stdout
    assert f"CI {victim}" in p.stdout
    line = one_line_error(run("verify", str(truncated)), "verify")
    assert "truncated" in line and "backup" in line

    # and the map shows the damage
    assert "X" in ok("map", str(flipped), "--text").split("\n\nlegend")[0]
    assert "the file is truncated" in ok("map", str(truncated))


def test_map_of_a_data_set_not_closed_cleanly(tmp_path: Path) -> None:
    ds = tmp_path / "open.ksds"
    make_dataset(ds, 300)
    d = ksds.open(str(ds))
    for i in range(50):
        d.write(b"7%07d" % i + b"y" * 72)
    d._abandon()
    out = ok("map", str(ds))
    assert "not closed cleanly" in out and "350 records" in out
    assert run("examine", str(ds)).returncode == 4


# --- EBCDIC with RDWs ---------------------------------------------------------------------------------------------


def test_ebcdic_rdw_file_loads_and_prints_as_text(tmp_path: Path) -> None:
    texts = [f"CUST{i:04d} {'ACME [CORP] ' if i % 2 else 'Smith & Sons'} No.{i}".ljust(40) for i in range(120)]
    unload = b"".join(struct.pack(">HH", len(t) + 4, 0) + t.encode("cp037") for t in texts)
    (tmp_path / "unload.bin").write_bytes(unload)
    ds = tmp_path / "e.ksds"
    ok("define", str(ds), "--keys", "8", "0", "--recordsize", "40", "--cisize", "512", "--cis-per-ca", "4")
    out = ok("repro", str(tmp_path / "unload.bin"), str(ds), "--rdw")
    assert "120 records processed, 120 written" in out
    out = ok("print", str(ds), "--character", "--encoding", "cp037", "--fromkey", "CUST0010", "--count", "3")
    lines = out.splitlines()
    assert lines[0] == "KEY OF RECORD - " + "CUST0010".encode("cp037").hex().upper()
    assert [lines[1], lines[4], lines[7]] == texts[10:13]
    # the same bytes in latin-1 are not this text
    assert texts[10] not in ok("print", str(ds), "--character", "--count", "11")
    # cp1047 places the brackets elsewhere: cp037's '[' (X'BA') reads as 'Ý' in cp1047
    assert "ACME ÝCORP¨" in ok("print", str(ds), "--character", "--encoding", "cp1047", "--count", "2")
    # the DUMP shows EBCDIC characters beside the hex
    assert "*CUST0000 Smith & Sons No.0" in ok("print", str(ds), "--encoding", "cp037", "--count", "1")
    # and back out with RDWs: the same file
    ok("repro", str(ds), str(tmp_path / "back.bin"), "--rdw")
    assert (tmp_path / "back.bin").read_bytes() == unload
    # text out and in through the code page
    ok("repro", str(ds), str(tmp_path / "e.txt"), "--encoding", "cp037", "--count", "5")
    assert (tmp_path / "e.txt").read_text().splitlines() == texts[:5]
    # a file that does not have RDWs is refused clearly
    (tmp_path / "norwd.bin").write_bytes(b"".join(t.encode("cp037") for t in texts))
    p = run("repro", str(tmp_path / "norwd.bin"), str(ds), "--rdw")
    assert p.returncode == 8 and "is not an RDW" in p.stderr and "Traceback" not in p.stderr


# --- the picture --------------------------------------------------------------------------------------------------


def test_map_png_svg_and_text(tmp_path: Path) -> None:
    ds = tmp_path / "m.ksds"
    make_dataset(ds, 1200)
    out = ok("map", str(ds), "--text")
    rows = [x for x in out.splitlines() if x.startswith("CA ")]
    assert len(rows) > 10 and all(re.search(r" S [#0-9_.]{4}  \d+ records$", x) for x in rows)
    assert "legend:" in out and "1200 records" in out and out.startswith(str(ds))
    assert re.search(r"^index L2 ", out, re.M)

    svg_out = ok("map", str(ds), "--output", str(tmp_path / "m.svg"))
    w, h = map(int, re.search(r"\((\d+) x (\d+) pixels", svg_out).groups())  # type: ignore[union-attr]
    root = ET.parse(tmp_path / "m.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert (int(root.get("width", 0)), int(root.get("height", 0))) == (w, h)
    rects = root.findall("{http://www.w3.org/2000/svg}rect")
    assert len(rects) >= len(rows) * 5
    assert any((r.findtext("{http://www.w3.org/2000/svg}title") or "").startswith("CI ") for r in rects)

    pytest.importorskip("matplotlib")
    png_out = ok("map", str(ds), "-o", str(tmp_path / "m.png"))
    assert f"({w} x {h} pixels" in png_out
    data = (tmp_path / "m.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (w, h)
    assert 600 <= w <= 8000 and 200 <= h <= 3000


# --- ALTER, DELETE, the Zowe layout --------------------------------------------------------------------------------


def test_alter_and_delete(tmp_path: Path) -> None:
    ds = tmp_path / "a.ksds"
    make_dataset(ds, 20)
    out = ok("alter", str(ds), "--freespace", "30", "5", "--shareoptions", "2", "3")
    assert "FREESPACE(30 5) SHAREOPTIONS(2 3)" in out
    doc = json.loads(ok("listcat", str(ds), "--json"))
    assert doc["definition"]["freespace"] == [30, 5] and doc["STATISTICS"]["FREESPACE-%CI"] == 30
    line = one_line_error(run("alter", str(ds), "--freespace", "30", "200"), "alter")
    assert "--freespace" in line and "'200'" in line
    one_line_error(run("alter", str(ds)), "alter")

    with ksds.open(str(ds), "r"):  # open here: another process may not delete it
        assert "in use" in one_line_error(run("delete", str(ds)), "delete")
    assert ds.exists()
    d = ksds.open(str(ds))
    d.write(rec(999))
    d._abandon()  # leaves its log behind
    assert os.path.exists(str(ds) + "-wal")
    out = ok("delete", str(ds))
    assert "deleted" in out and "-wal" in out
    assert not os.path.exists(ds) and not os.path.exists(str(ds) + "-wal")
    one_line_error(run("delete", str(ds)), "delete")
    other = tmp_path / "notes.txt"
    other.write_text("not a data set\n")
    assert "not a ksds data set" in one_line_error(run("delete", str(other)), "delete")
    assert other.exists()


def test_zowe_records(tmp_path: Path) -> None:
    ds = tmp_path / "cache.ksds"
    ok("define", str(ds), "--keys", "128", "0", "--recordsize", "4096", "--cisize", "8192")
    entries = [("gateway", f"token{i}", f"value {i}", str(1700000000000 + i)) for i in range(5)]
    with ksds.open(str(ds)) as d:
        for sid, key, value, created in entries:
            d.write(zowe.encode_record(sid, zowe.KeyValue(key, value, sid, created)))
    doc = json.loads(ok("zowe-records", str(ds), "--json"))
    assert sorted((r["service"], r["key"], r["value"], r["created"]) for r in doc) == sorted(entries)
    assert all(r["consistent"] for r in doc)
    assert doc[0]["created_iso"].startswith("2023-11-14T22:13:20")
    text = ok("zowe-records", str(ds))
    assert "gateway" in text and "token3" in text and "5 records decoded" in text
    with ksds.open(str(ds)) as d:
        d.write(("1:2".ljust(128) + "{not json").ljust(4096).encode("cp1047"))
    p = run("zowe-records", str(ds))
    assert p.returncode == 8 and "not JSON" in p.stderr
    one_line_error(run("zowe-records", str(tmp_path / "nope.ksds")), "zowe-records")


# --- bad input ------------------------------------------------------------------------------------------------------


def test_bad_input_is_one_line_and_non_zero(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.ksds")
    assert "missing.ksds" in one_line_error(run("print", missing), "print")
    assert "--keys" in one_line_error(run("define", str(tmp_path / "x.ksds"), "--recordsize", "80"), "define")
    assert run("frobnicate").returncode == 2
    one_line_error(run("frobnicate"), "")


def test_bad_input_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same checks through main() in this process (faster): any exception escaping main fails the test."""

    def error(verb: str, *args: str, status: int | None = None) -> str:
        code = main([verb, *args] if verb else list(args))
        out, err = capsys.readouterr()
        assert code != 0 and (status is None or code == status), (verb, args, code, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"ksds {verb}: " if verb else "ksds: "), err
        return lines[0]

    missing = str(tmp_path / "missing.ksds")
    for verb in ("listcat", "print", "examine", "verify", "map", "delete", "zowe-records", "alter"):
        extra = ("--freespace", "1", "1") if verb == "alter" else ()
        # DELETE of a name that is not there is condition code 8, as IDCAMS's is
        assert "missing.ksds" in error(verb, missing, *extra, status=8 if verb == "delete" else 12)
    assert error("repro", missing, str(tmp_path / "x.jsonl"))
    assert error("define", str(tmp_path / "x.ksds"), "--keys", "8", "--recordsize", "80", status=2)
    assert "--keys LENGTH" in error("define", str(tmp_path / "x.ksds"), "--keys", "0", "0", "--recordsize", "80")
    assert "fixed-length" in error("define", str(tmp_path / "x.ksds"), "--keys", "8", "0", "--recordsize", "80", "90")
    assert not (tmp_path / "x.ksds").exists()
    error("")
    error("print", "--bogus")
    text = tmp_path / "plain.txt"
    text.write_text("hello\n")
    assert "not a ksds data set" in error("print", str(text))
    ds = tmp_path / "d.ksds"
    make_dataset(ds, 10)
    assert "already exists" in error("define", str(ds), "--keys", "8", "0", "--recordsize", "80")
    assert "define it first" in error("repro", str(ds), str(tmp_path / "new.ksds"))
    assert "same file" in error("repro", str(ds), str(ds))
    assert "hex" in error("print", str(ds), "--fromkey", "X'ABC'", status=2)
    assert "9 bytes" in error("print", str(ds), "--fromkey", "123456789")
    assert "code page" in error("print", str(ds), "--encoding", "klingon")
    assert ".png or .svg" in error("map", str(ds), "-o", str(tmp_path / "x.gif"))
    assert "--outformat" in error("repro", str(ds), str(tmp_path / "out.xyz"))
    (tmp_path / "a.bin").write_bytes(b"x" * 80)
    (tmp_path / "a.jsonl").write_text("")
    assert "--lrecl" in error("repro", str(tmp_path / "a.bin"), str(tmp_path / "b.jsonl"))
    assert "--keys" in error("repro", str(tmp_path / "a.jsonl"), str(tmp_path / "b.bin"), "--fromkey", "a")
    assert main(["repro", str(text), str(ds), "--informat", "jsonl"]) == 8
    assert "line 1" in capsys.readouterr().err
    assert main(["repro", str(text), str(ds), "--informat", "jsonl", "--errorlimit", "1"]) == 12
    assert "ERRORLIMIT 1" in capsys.readouterr().err


def test_every_verb_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    for verb in ("define", "listcat", "print", "repro", "examine", "verify", "alter", "delete", "map", "zowe-records"):
        assert main([verb, "--help"]) == 0
        out = capsys.readouterr().out
        assert "examples:" in out and f"ksds {verb}" in out, verb
    p = run("--help")
    assert p.returncode == 0 and "define" in p.stdout and "Exit statuses" in p.stdout


# --- in-process helpers ---------------------------------------------------------------------------------------------


def test_progress_draws_only_on_a_terminal() -> None:
    s = io.StringIO()
    with Progress("ksds repro", stream=s, enabled=True) as bar:
        bar.update(50, 100, "50 records")
    assert "[###############---------------]  50%" in s.getvalue() and s.getvalue().endswith("\x1b[K")
    quiet = io.StringIO()
    with Progress("ksds repro", stream=quiet) as bar:  # a StringIO is not a terminal
        bar.update(50, 100)
    assert quiet.getvalue() == ""


def test_keys_on_the_command_line() -> None:
    assert parse_key("X'C1C2'", "latin-1") == b"\xc1\xc2"
    assert parse_key("x'c1 c2'", "latin-1") == b"\xc1\xc2"
    assert parse_key("0xF0F1", "latin-1") == b"\xf0\xf1"
    assert parse_key("AB", "cp037") == b"\xc1\xc2"
    assert parse_key("[x]", "cp1047") == b"\xad\xa7\xbd"
    assert parse_key("0xyz", "ascii") == b"0xyz"
