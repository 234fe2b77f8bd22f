"""Smoke test of the benchmark harness: ``python -m benchmarks --quick`` end to end at a tiny size.

Checks that the run finishes and leaves well-formed JSON and PNG files; never checks timings.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _png_ok(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(24)
    # signature, then the IHDR chunk (length 13) first
    return head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR" and os.path.getsize(path) > 1000


def test_quick_run_writes_json_and_plots(tmp_path: object) -> None:
    out = os.path.join(str(tmp_path), "results")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--repeat", "1", "--scaling", "--sizes", "500,1000",
         "--aix", "--out", out] + ([] if HAVE_MATPLOTLIB else ["--no-plots"]),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ksds/peer" in proc.stdout and "total runtime" in proc.stdout

    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    meta = results["meta"]
    assert meta["records"] == 2000 and meta["repeat"] == 1
    rows = {r["name"]: r for r in results["rows"]}
    for name in ("load", "random_insert", "read_hit", "read_miss", "prefix_read", "scan_forward",
                 "scan_backward", "range_scan", "rewrite", "erase", "cache_mix", "write_request",
                 "fsync_4k", "durable_write", "batched_durable", "cold_start"):
        assert name in rows, name
    for name, row in rows.items():
        assert row["ops"] > 0, name
        for store, fig in row["results"].items():
            assert "error" not in fig, (name, store, fig.get("error"))
            assert len(fig["times_s"]) == 1
            assert fig["us_per_op"] > 0 and fig["records_per_s"] > 0
    assert set(rows["read_hit"]["results"]) >= {"ksds", "sqlite"}
    assert "os" in rows["fsync_4k"]["results"]
    # a peer that is installed has a ratio wherever ksds ran
    assert "sqlite" in rows["read_hit"]["ratios"]

    scaling = results["scaling"]
    assert scaling["sizes"] == [500, 1000]
    ksds_runs = [r for r in scaling["runs"] if r["store"] == "ksds"]
    assert [r["size"] for r in ksds_runs] == [500, 1000]
    for r in ksds_runs:
        assert "error" not in r, r
        assert r["peak_rss"] >= r["base_rss"] > 0
    assert len(scaling["ksds_budget"]) == 2

    aix = results["aix"]
    assert aix["records"] == 2000
    assert set(aix["rows"]) == {"build (s)", "base read", "path read", "group count", "write", "write + 1 AIX"}
    for row in aix["rows"].values():
        assert row["ksds"] > 0 and row["sqlite"] > 0
    assert len(aix["targets"]) == 2 and "AIX targets" in proc.stdout

    if not HAVE_MATPLOTLIB:
        pytest.skip("matplotlib is not installed: JSON checked, plots not made")
    for png in ("rows.png", "ratios.png", "scaling.png"):
        assert _png_ok(os.path.join(out, png)), png


def test_quick_sharing_and_caching_sections(tmp_path: object) -> None:
    """``--sharing --caching`` at --quick sizes: every row ran, every correctness check passed, servers stopped."""
    out = os.path.join(str(tmp_path), "results")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--repeat", "1", "--no-suite", "--sharing", "--caching",
         "--out", out] + ([] if HAVE_MATPLOTLIB else ["--no-plots"]),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Sharing:" in proc.stdout and "Caching service through the REST API" in proc.stdout
    assert "In process" in proc.stdout and "total runtime" in proc.stdout

    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert results["rows"] == []

    from benchmarks.sharing import PLAN, TARGETS

    sh = results["sharing"]
    assert sh["repeat"] == 1 and not sh["failed"]
    rows = {(r["workload"], r["system"], r["procs"]): r for r in sh["rows"]}
    assert set(rows) == set(PLAN)
    for key, row in rows.items():
        assert "error" not in row, (key, row.get("error"))
        assert len(row["runs"]) == 1
        run = row["runs"][0]
        assert len(run["per_process"]) == row["procs"]
        assert run["requests"] == row["procs"] * sh["requests"]
        assert row["rate"] > 0 and row["us_per_req"] > 0
        assert run["backwards"] == 0
        if key[0] == "read":
            assert run["updates"] == 0
        else:  # every run that updates is audited: counters sum to the updates done, no record lost
            assert run["updates"] > 0 and row["checked"], key
            assert run["check"]["ok"] and run["check"]["records"] == sh["records"], run["check"]
    for n in (1, 2, 4):  # RLS and SHAREOPTIONS(3) reads, RLS updates and mixes, next to sqlite, for 1, 2, 4
        for key in (("read", "ksds-rls", n), ("read", "ksds-shr3", n), ("update", "ksds-rls", n),
                    ("mix", "ksds-rls", n), ("read", "sqlite", n), ("update", "sqlite", n), ("mix", "sqlite", n)):
            assert key in rows, key
            assert "vs_sqlite" in rows[key] or key[1] == "sqlite", key
            assert "scale" in rows[key] or n == 1, key
    assert rows[("update", "ksds-rls", 2)]["runs"][0]["updates"] == 2 * sh["requests"]
    assert rows[("update", "ksds-rls", 4)]["runs"][0]["updates"] == 4 * sh["requests"]
    assert set(rows[("upd+read", "ksds-shr2", 2)]["role_rates"]) == {"update", "reader"}
    # every target of issue 12 is evaluated and printed (met or not: timings are never checked)
    assert [t["name"] for t in sh["targets"]] == [t[0] for t in TARGETS]
    for t in sh["targets"]:
        assert t["ratio"] is not None and t["ratio"] > 0 and isinstance(t["met"], bool), t
    assert "Sharing targets" in proc.stdout and f"of {len(TARGETS)} targets met" in proc.stdout

    ca = results["caching"]
    modes = {m["mode"]: m for m in ca["http"]}
    redis = {"redis", "redis-w2"}
    want = {"ksds", "ksds-w2", "ksds-2srv", "memory", "memory-h11"} | (
        redis if shutil.which("redis-server") else set())
    assert set(modes) == want and set(ca["skipped"]) == redis - want
    for mode, m in modes.items():
        assert "error" not in m, (mode, m.get("error"), m.get("server_stderr"))
        assert m["exit_code"] == 0, (mode, m.get("server_stderr"))
        if mode == "ksds-2srv":  # two servers, the clients split between them: only the pass with every client
            assert [p["threads"] for p in m["passes"]] == [ca["threads"]]
        else:
            assert [p["threads"] for p in m["passes"]] == [1, ca["threads"]]
        for p in m["passes"]:
            assert p["check"]["ok"], (mode, p["threads"], p["check"])
            assert list(p["phases"]) == ["create", "read", "update", "delete"]
            for op, ph in p["phases"].items():
                assert ph["errors"] == 0, (mode, op, ph.get("first_error"))
                assert 0 < ph["requests"] <= ph["planned"] and ph["rps"] > 0
                assert 0 < ph["p50_ms"] <= ph["p99_ms"]
    assert modes["ksds"]["closed_cleanly"] is True and modes["ksds-w2"]["closed_cleanly"] is True
    two = modes["ksds-2srv"]
    assert two["closed_cleanly"] is True and two["servers"] == 2 and two["exit_codes"] == [0, 0]
    assert len(set(two["ports"])) == 2 and all("127.0.0.1" in line for line in two["server_lines"])
    assert two["passes"][0]["check"]["left_found_per_server"] == [two["passes"][0]["check"]["left_expected"]] * 2
    scale = {t["op"]: t for t in ca["scaleout"]}
    assert scale["create"]["ratio"] > 0 and isinstance(scale["create"]["met"], bool) and scale["read"]["ratio"] > 0
    assert "ksds-2srv / ksds (one server) creates/s" in proc.stdout
    assert modes["ksds-w2"]["workers"] == 2 and "2 workers" in modes["ksds-w2"]["server_line"]
    assert "HTTP h11 on asyncio" in modes["memory-h11"]["server_line"]
    assert [t["op"] for t in ca["targets"]] == ["read", "read", "create"]
    stores = ca["inprocess"]["stores"]
    assert {"ksds", "memory"} <= set(stores)
    for name, r in stores.items():
        assert "error" not in r and r["wrong"] == 0, (name, r)
        for op in ("create", "read", "update", "delete"):
            assert r[op]["us_per_op"] > 0
    if "diskcache" in stores:
        assert "vs_diskcache" in stores["ksds"]["read"]

    if not HAVE_MATPLOTLIB:
        pytest.skip("matplotlib is not installed: JSON checked, plots not made")
    for png in ("sharing.png", "caching.png"):
        assert _png_ok(os.path.join(out, png)), png


def test_main_function_lists_rows(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import main

    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert "read_hit" in listed and "durable_write" in listed and "stores:" in listed
