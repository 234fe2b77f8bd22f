"""``ksds repro`` with binary and text input whose records do not fit OUT, and bad numbers given to its options.

Every command runs as a real subprocess (``python -m ksds ...``), as in test_cli.py. A refused load changes
nothing: the data set's bytes and the absence of a flat OUT are checked after each one.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import procs
import pytest

import ksds

KL = 8
ENV = {k: v for k, v in os.environ.items() if k != "KSDS_FAULTS"}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ksds", *args]


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(command(*args), input=stdin, capture_output=True, env=ENV, timeout=120)
    return subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode(), p.stderr.decode())


def run_all(*commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Several ``ksds`` commands at once (none of them writes a file another reads)."""
    return procs.run_all([command(*c) for c in commands], ENV)


def refused(p: subprocess.CompletedProcess[str], status: int = 12) -> str:
    """Refused: ``status``, no summary line, one line on stderr (``ksds repro: ...``), no traceback."""
    assert p.returncode == status, (p.args, p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and "records processed" not in p.stdout, (p.args, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ksds repro: "), (p.args, p.stderr)
    return lines[0]


def rec(i: int, length: int) -> bytes:
    return (b"%08d" % i) + (b" customer %d " % i).ljust(length - KL, b"x")


def define(path: Path, record_length: int, records: list[bytes] = []) -> str:  # noqa: B006 - never changed
    """A data set (with ``records`` in it); returns the digest of its bytes."""
    ksds.define(str(path), key_length=KL, record_length=record_length, ci_size=4096)
    if records:
        with ksds.open(str(path)) as ds, ds.batch():
            for r in records:
                ds.write(r)
    return digest(path)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def contents(path: Path) -> list[bytes]:
    with ksds.open(str(path), "r") as ds:
        return list(ds)


# --- fixed-length binary files ------------------------------------------------------------------------------------


def test_80_byte_records_into_a_100_byte_data_set_are_refused(tmp_path: Path) -> None:
    """The reported case: 4000 records of 80 bytes are 3200 of 100; re-cut at 100 they were loaded as garbage."""
    f80 = tmp_path / "f80.bin"
    f80.write_bytes(b"".join(rec(i, 80) for i in range(4000)))
    empty, loaded = tmp_path / "empty.ksds", tmp_path / "loaded.ksds"
    before = {empty: define(empty, 100), loaded: define(loaded, 100, [rec(i, 100) for i in range(5000, 5010)])}
    for ds in (empty, loaded):
        # without --lrecl: cut at the data set's 100 bytes, the "records" repeat keys; nothing is written
        line = refused(run("repro", str(f80), str(ds)))
        assert str(f80) in line and "100-byte records" in line and "--lrecl 100" in line, line
        assert "nothing written" in line
        # --lrecl 80 is the file's record length: honoured, and 80 is not the data set's 100
        line = refused(run("repro", str(f80), str(ds), "--lrecl", "80"))
        assert str(f80) in line and "80-byte records (--lrecl 80)" in line and "are 100 bytes" in line, line
        assert "--recordsize 80" in line  # no option converts them: where they do fit
        assert digest(ds) == before[ds]
    assert contents(empty) == [] and len(contents(loaded)) == 10

    # the same file into a data set of 80-byte records loads, with or without --lrecl
    ds80 = tmp_path / "d80.ksds"
    define(ds80, 80)
    p = run("repro", str(f80), str(ds80), "--lrecl", "80")
    assert p.returncode == 0 and "4000 records processed, 4000 written, 0 replaced, 0 errors" in p.stdout, p.stderr
    assert contents(ds80) == [rec(i, 80) for i in range(4000)]


def test_a_file_that_is_not_a_whole_number_of_records_is_refused(tmp_path: Path) -> None:
    short = tmp_path / "short.bin"
    short.write_bytes(b"".join(rec(i, 100) for i in range(20)) + rec(20, 100)[:37])
    ds = tmp_path / "d.ksds"
    before = define(ds, 100, [rec(i, 100) for i in range(100, 103)])
    out = tmp_path / "out.jsonl"
    p_ds, p_file, p_lrecl = run_all(
        ("repro", str(short), str(ds)),
        ("repro", str(short), str(out), "--lrecl", "100"),
        ("repro", str(short), str(tmp_path / "out2.jsonl"), "--lrecl", "30"),
    )
    line = refused(p_ds)
    assert str(short) in line and "2037 bytes" in line and "100-byte records" in line and "37 bytes over" in line
    assert "d.ksds" in line and "nothing written" in line
    assert digest(ds) == before
    line = refused(p_file)
    assert str(short) in line and "(--lrecl 100)" in line and "37 bytes over" in line
    assert "(--lrecl 30)" in refused(p_lrecl)
    assert not out.exists() and not (tmp_path / "out2.jsonl").exists()


def test_a_repeated_key_at_the_assumed_length_needs_an_explicit_lrecl(tmp_path: Path) -> None:
    """Cut at OUT's record length because no --lrecl was given, a key that comes twice is refused; --lrecl says
    the length is right, and the duplicate is then the usual record error."""
    records = [rec(i, 100) for i in range(10)]
    dup = tmp_path / "dup.bin"
    dup.write_bytes(b"".join(records + [records[3]]))
    ds = tmp_path / "d.ksds"
    before = define(ds, 100)
    line = refused(run("repro", str(dup), str(ds)))
    assert "records 4 and 11 have the same key X'3030303030303033'" in line and "--lrecl 100" in line, line
    assert digest(ds) == before
    p = run("repro", str(dup), str(ds), "--lrecl", "100")
    assert p.returncode == 8 and "11 records processed, 10 written, 0 replaced, 1 errors" in p.stdout
    assert "duplicate key X'3030303030303033'" in p.stderr
    assert contents(ds) == records


def test_standard_input_is_checked_before_anything_is_written(tmp_path: Path) -> None:
    ds = tmp_path / "d.ksds"
    before = define(ds, 100, [rec(1, 100)])
    data = b"".join(rec(i, 80) for i in range(100, 150))
    line = refused(run("repro", "-", str(ds), "--informat", "bin", "--lrecl", "80", stdin=data))
    assert "standard input" in line and "--lrecl 80" in line and "100 bytes" in line
    line = refused(run("repro", "-", str(ds), "--informat", "bin", stdin=data + b"x"))
    assert "standard input" in line and "4001 bytes" in line and "100-byte records" in line
    assert digest(ds) == before
    ds80 = tmp_path / "d80.ksds"
    define(ds80, 80)
    p = run("repro", "-", str(ds80), "--informat", "bin", stdin=data)
    assert p.returncode == 0 and "50 records processed, 50 written" in p.stdout, p.stderr
    assert contents(ds80) == [rec(i, 80) for i in range(100, 150)]


def test_lrecl_on_text_input_is_honoured(tmp_path: Path) -> None:
    """txt lines are padded to --lrecl; into a data set of another record length that is refused (leaving out
    --lrecl pads them to the data set's length, the conversion there is)."""
    txt = tmp_path / "in.txt"
    txt.write_text("".join(f"{i:08d} line {i}\n" for i in range(20)))
    ds = tmp_path / "d.ksds"
    before = define(ds, 100)
    line = refused(run("repro", str(txt), str(ds), "--lrecl", "80"))
    assert str(txt) in line and "padded to 80 bytes (--lrecl 80)" in line and "are 100 bytes" in line, line
    assert "leave out --lrecl to pad the lines to 100" in line
    assert digest(ds) == before
    out = tmp_path / "out.bin"
    p_pad, p_out = run_all(("repro", str(txt), str(ds)), ("repro", str(txt), str(out), "--lrecl", "40"))
    assert p_pad.returncode == 0 and "20 records processed, 20 written" in p_pad.stdout, p_pad.stderr
    assert contents(ds)[3] == b"00000003 line 3".ljust(100)
    assert p_out.returncode == 0, p_out.stderr
    assert out.read_bytes() == b"".join(f"{i:08d} line {i}".ljust(40).encode() for i in range(20))


# --- variable-length records (RDWs) ---------------------------------------------------------------------------------


def rdw(records: list[bytes]) -> bytes:
    return b"".join((len(r) + 4).to_bytes(2, "big") + b"\0\0" + r for r in records)


def test_an_rdw_record_of_another_length_is_refused(tmp_path: Path) -> None:
    records = [rec(i, 40) for i in range(10)]
    odd = tmp_path / "odd.bin"
    odd.write_bytes(rdw(records[:7] + [rec(7, 36)] + records[8:]))
    empty, loaded = tmp_path / "empty.ksds", tmp_path / "loaded.ksds"
    before = {empty: define(empty, 40), loaded: define(loaded, 40, [rec(i, 40) for i in range(50, 55)])}
    for ds in (empty, loaded):
        line = refused(run("repro", str(odd), str(ds), "--rdw"))
        assert str(odd) in line and "record 8 (byte 308) is 36 bytes" in line and "are 40 bytes" in line, line
        assert "nothing written" in line
        assert digest(ds) == before[ds]
    # a flat OUT takes records of any length
    p = run("repro", str(odd), str(tmp_path / "out.jsonl"), "--rdw")
    assert p.returncode == 0 and "10 records processed, 10 written" in p.stdout, p.stderr


def test_a_broken_rdw_file_writes_nothing(tmp_path: Path) -> None:
    """A file that ends inside a record is found before the records before it are written (a record error, as a
    file without RDWs is in test_cli.py)."""
    cut = tmp_path / "cut.bin"
    cut.write_bytes(rdw([rec(i, 40) for i in range(10)])[:-5])
    ds = tmp_path / "d.ksds"
    before = define(ds, 40, [rec(99, 40)])
    p = run("repro", str(cut), str(ds), "--rdw")
    assert p.returncode == 8 and "0 records processed, 0 written, 0 replaced, 1 errors" in p.stdout, p.stdout
    assert "record 10 (byte 396): the file ends 35 bytes into a record of 40" in p.stderr
    assert digest(ds) == before


# --- bad numbers and options that would be ignored -----------------------------------------------------------------

#: (option, its values, the value named in the message)
BAD_NUMBERS = [
    ("--lrecl", "0", "'0'"),
    ("--lrecl", "-5", "'-5'"),
    ("--lrecl", "eighty", "'eighty'"),
    ("--lrecl", "40000", "'40000'"),
    ("--errorlimit", "0", "'0'"),
    ("--errorlimit", "-1", "'-1'"),
    ("--errorlimit", "ten", "'ten'"),
    ("--skip", "-1", "'-1'"),
    ("--skip", "1.5", "'1.5'"),
    ("--count", "-1", "'-1'"),
    ("--count", "many", "'many'"),
    ("--keys", "0 0", "not 0"),
    ("--keys", "-8 0", "'-8'"),
    ("--keys", "8 -1", "'-1'"),
    ("--keys", "8 x", "'x'"),
]


def test_bad_numbers_are_one_line_naming_the_option(tmp_path: Path) -> None:
    f80 = tmp_path / "f80.bin"
    f80.write_bytes(b"".join(rec(i, 80) for i in range(10)))
    cases = [(opt, values, named, tmp_path / f"out{n}.jsonl") for n, (opt, values, named) in enumerate(BAD_NUMBERS)]
    results = run_all(
        *(
            ("repro", str(f80), str(out), *(("--lrecl", "80") if opt != "--lrecl" else ()), opt, *values.split())
            for opt, values, _, out in cases
        )
    )
    for (opt, values, named, out), p in zip(cases, results, strict=True):
        line = refused(p)
        assert line.startswith(f"ksds repro: {opt} ") and named in line, (opt, values, line)
        assert not out.exists(), (opt, values)


def test_options_that_would_be_ignored_are_refused(tmp_path: Path) -> None:
    records = [rec(i, 80) for i in range(10)]
    (tmp_path / "f80.bin").write_bytes(b"".join(records))
    (tmp_path / "in.jsonl").write_text("".join(f'{{"record": "{r.hex()}"}}\n' for r in records))
    ds = tmp_path / "d.ksds"
    before = define(ds, 80, records[:2])
    f80, jsonl = str(tmp_path / "f80.bin"), str(tmp_path / "in.jsonl")
    outs = [tmp_path / f"out{n}.bin" for n in range(4)]
    p_json, p_ds, p_rdw, p_keys, p_far = run_all(
        ("repro", jsonl, str(outs[0]), "--lrecl", "80"),
        ("repro", str(ds), str(outs[1]), "--lrecl", "100"),
        ("repro", f80, str(outs[2]), "--rdw", "--lrecl", "80"),
        ("repro", f80, str(ds), "--keys", "8", "2"),
        ("repro", f80, str(outs[3]), "--lrecl", "80", "--keys", "8", "75"),
    )
    assert "--lrecl" in refused(p_json, 2) and "jsonl" in p_json.stderr
    assert "--lrecl" in refused(p_ds, 2) and "a data set" in p_ds.stderr
    assert "--lrecl and --rdw" in refused(p_rdw, 2)
    assert "--keys 8 2 is not the key of" in refused(p_keys) and "KEYS(8 0)" in p_keys.stderr
    assert "--keys 8 75 ends at byte 83" in refused(p_far) and "80-byte records" in p_far.stderr
    assert not any(out.exists() for out in outs)
    assert digest(ds) == before


@pytest.mark.parametrize("empty", [True, False], ids=["empty", "with records"])
def test_an_empty_data_set_in_still_has_its_keys(tmp_path: Path, empty: bool) -> None:
    """IN's key goes to a jsonl OUT even when IN has no records (an empty data set is falsy)."""
    ds = tmp_path / "d.ksds"
    define(ds, 80, [] if empty else [rec(1, 80)])
    p = run("repro", str(ds), str(tmp_path / "out.csv"))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out.csv").read_text().splitlines()[0] == "key,record"


# --- real unloads: EBCDIC fixed-length, --pad, --rdw-adjust -------------------------------------------------------


def ebcdic(i: int, length: int) -> bytes:
    """An EBCDIC record: a key CUSTnnnn, then text of a length that varies with ``i``, no longer than ``length``."""
    text = f"CUST{i:04d} {'ACME CORP' if i % 2 else 'SMITH & SONS'} {'X' * (i % 23)}"
    return text[:length].encode("cp037")


def test_an_ebcdic_fixed_length_file_loads_and_unloads_byte_for_byte(tmp_path: Path) -> None:
    fixed = tmp_path / "fixed.bin"
    fixed.write_bytes(b"".join(ebcdic(i, 60).ljust(60, b"\x40") for i in range(200)))
    ds = tmp_path / "d.ksds"
    define(ds, 60)
    p = run("repro", str(fixed), str(ds))
    assert p.returncode == 0 and "200 records processed, 200 written" in p.stdout, p.stderr
    out = tmp_path / "out.bin"
    p = run("repro", str(ds), str(out))
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == fixed.read_bytes()
    # a shorter fixed-length file goes in with --pad (EBCDIC spaces), and out the same as the 60-byte one
    short = tmp_path / "short.bin"
    short.write_bytes(b"".join(ebcdic(i, 50).ljust(50, b"\x40") for i in range(200)))
    ds2 = tmp_path / "d2.ksds"
    before = define(ds2, 60)
    line = refused(run("repro", str(short), str(ds2), "--lrecl", "50"))
    assert "50-byte records (--lrecl 50)" in line and "--pad X'40'" in line and "pads them to 60 bytes" in line
    assert digest(ds2) == before
    p = run("repro", str(short), str(ds2), "--lrecl", "50", "--pad", "X'40'")
    assert p.returncode == 0 and "200 records processed, 200 written" in p.stdout, p.stderr
    assert contents(ds2) == [ebcdic(i, 50).ljust(60, b"\x40") for i in range(200)]


def test_variable_length_records_with_pad_and_rdws_that_leave_out_their_header(tmp_path: Path) -> None:
    records = [ebcdic(i, 60) for i in range(120)]
    ibm = tmp_path / "ibm.bin"  # RDW lengths count the 4-byte RDW (IBM's)
    ibm.write_bytes(rdw(records))
    tool = tmp_path / "tool.bin"  # RDW lengths that leave the RDW out, as several transfer tools write them
    tool.write_bytes(b"".join(len(r).to_bytes(2, "big") + b"\0\0" + r for r in records))
    long = tmp_path / "long.bin"
    long.write_bytes(rdw(records[:5] + [ebcdic(5, 60).ljust(80, b"\x40")] + records[6:]))
    empty, short_ds = tmp_path / "empty.ksds", tmp_path / "short.ksds"
    others = [tmp_path / f"empty{n}.ksds" for n in range(2)]  # (two loads at once into one data set: in use)
    before = {empty: define(empty, 60), short_ds: define(short_ds, 20), **{d: define(d, 60) for d in others}}
    p_plain, p_tool, p_tool_flat, p_long, p_bad_pad, p_adjust_alone = run_all(
        ("repro", str(ibm), str(empty), "--rdw"),
        ("repro", str(tool), str(others[0]), "--rdw", "--pad", "40"),
        ("repro", str(tool), str(tmp_path / "t.jsonl"), "--rdw"),
        ("repro", str(long), str(others[1]), "--rdw", "--pad", "40"),
        ("repro", str(ibm), str(empty), "--rdw", "--pad", "X'4'"),
        ("repro", str(ibm), str(empty), "--rdw-adjust", "4"),
    )
    # records shorter than the data set's: refused before anything is written, naming --pad
    n = len(records[0])
    line = refused(p_plain)
    assert f"record 1 (byte 0) is {n} bytes (its RDW says {n + 4})" in line and "--pad X'40'" in line, line
    # RDWs without the header: the chain breaks at the second record; the message names --rdw-adjust 4
    assert p_tool.returncode == 8 and "0 written" in p_tool.stdout, p_tool.stdout
    assert "record 2 " in p_tool.stderr and "is not an RDW" in p_tool.stderr and "--rdw-adjust 4" in p_tool.stderr
    assert "--rdw-adjust 4" in p_tool_flat.stderr and not (tmp_path / "t.jsonl").read_text()
    # a record longer than the data set's is refused, naming it and both lengths
    line = refused(p_long)
    assert "record 6 (byte " in line and "is 80 bytes" in line and "are 60 bytes" in line and "not cut" in line
    assert "--pad takes one byte in hex" in refused(p_bad_pad)
    assert "--rdw-adjust" in refused(p_adjust_alone, 2)
    assert all(digest(d) == before[d] for d in (empty, *others))

    # --rdw-adjust 4 reads them; --pad X'40' pads them; out again with the same RDWs, byte for byte
    p = run("repro", str(tool), str(empty), "--rdw", "--rdw-adjust", "4", "--pad", "X'40'")
    assert p.returncode == 0 and "120 records processed, 120 written" in p.stdout, p.stderr
    assert contents(empty) == [r.ljust(60, b"\x40") for r in records]
    p = run("repro", str(empty), str(tmp_path / "back.bin"), "--rdw", "--rdw-adjust", "4")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "back.bin").read_bytes() == b"".join(b"\0\x3c\0\0" + r.ljust(60, b"\x40") for r in records)
    # too long for a data set of 20-byte records even with --pad: nothing written
    line = refused(run("repro", str(ibm), str(short_ds), "--rdw", "--pad", "40"))
    assert f"record 1 (byte 0) is {n} bytes" in line and "are 20 bytes" in line
    assert digest(short_ds) == before[short_ds]
