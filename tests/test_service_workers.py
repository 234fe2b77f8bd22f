"""``ksds serve --workers N`` and the HTTP path: real server processes on free loopback ports.

Which worker takes a connection is the kernel's choice; the tests make it theirs by stopping the other worker
(SIGSTOP): a worker that is stopped accepts nothing, so every new connection goes to the one left running.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import Server, Servers, make_pki, redis_server, tls_client

import ksds

SID = "X-CS-Service-ID"
DN = "X-Certificate-DistinguishedName"
CLIENT_A = "CN=client-a,OU=Zowe,O=ACME\\, Inc.,C=US"  # Java's X500Principal.getName() of client-a's subject


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(tmp_path)
    yield s
    s.stop_all()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


def worker_pids(server: Server) -> list[int]:
    m = re.search(r"(\d+) workers \(pids ([\d, ]+)\)", server.out.read_text())
    assert m, server.logs()
    pids = [int(p) for p in m.group(2).split(", ")]
    assert len(pids) == int(m.group(1))
    return pids


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(what: str, check: object, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > end:
            raise AssertionError(f"not {what} after {timeout:g} s")
        time.sleep(0.05)


def only(server: Server, pid: int, pids: list[int]) -> httpx.Client:
    """A new client (a new connection) while every worker but ``pid`` is stopped: ``pid`` serves it. The caller
    resumes the others (:func:`resume`)."""
    for p in pids:
        os.kill(p, signal.SIGCONT if p == pid else signal.SIGSTOP)
    return server.client(headers={SID: "workers"})


def resume(pids: list[int]) -> None:
    for p in pids:
        os.kill(p, signal.SIGCONT)


def test_two_workers_share_a_ksds_data_set_and_stop_cleanly(servers: Servers, tmp_path: Path) -> None:
    ds = tmp_path / "shared.ksds"
    s = servers.start("--dataset", str(ds), "--workers", "2", name="two")
    line = s.out.read_text()
    assert "2 workers" in line and f"pid {s.proc.pid}" in line
    pids = worker_pids(s)
    assert all(alive(p) for p in pids) and s.proc.pid not in pids
    try:
        with only(s, pids[0], pids) as first:  # the first worker alone takes the connection and the request
            assert first.post("/cache", json={"key": "k1", "value": "from the first"}).status_code == 201
        with only(s, pids[1], pids) as second:  # the second one sees it, in the data set they share
            assert second.get("/cache/k1").json()["value"] == "from the first"
            assert second.post("/cache", json={"key": "k2", "value": "from the second"}).status_code == 201
            assert second.post("/cache", json={"key": "k1", "value": "again"}).status_code == 409
        with only(s, pids[0], pids) as first:
            assert set(first.get("/cache").json()) == {"k1", "k2"}
    finally:
        resume(pids)
    # SIGTERM to the server stops every worker; each closes the data set, then the server exits 0
    assert s.stop() == 0, s.logs()
    assert not any(alive(p) for p in pids)
    assert s.out.read_text().rstrip().endswith("ksds serve: stopped")
    assert s.err.read_text() == ""
    assert not Path(f"{ds}-wal").exists()  # the last close removes the log
    with ksds.open(ds, "r") as d:
        assert d.recovery is None  # closed cleanly: nothing to replay


def test_sigint_stops_the_workers_too(servers: Servers, tmp_path: Path) -> None:
    ds = tmp_path / "int.ksds"
    s = servers.start("--dataset", str(ds), "--workers", "2", name="int")
    pids = worker_pids(s)
    with s.client(headers={SID: "w"}) as c:
        assert c.post("/cache", json={"key": "k", "value": "v"}).status_code == 201
    assert s.stop(signal.SIGINT) == 0, s.logs()
    assert not any(alive(p) for p in pids)
    with ksds.open(ds, "r") as d:
        assert d.recovery is None


def test_a_worker_that_dies_is_reported_and_started_again(servers: Servers, tmp_path: Path) -> None:
    ds = tmp_path / "restart.ksds"
    s = servers.start("--dataset", str(ds), "--workers", "2", name="restart")
    pids = worker_pids(s)
    with s.client(headers={SID: "workers"}) as c:
        assert c.post("/cache", json={"key": "k", "value": "before"}).status_code == 201
    os.kill(pids[0], signal.SIGKILL)
    pattern = rf"worker 1 \(pid {pids[0]}\) was killed by SIGKILL; started it again \(pid (\d+)\)"
    wait_until("restarted", lambda: re.search(pattern, s.err.read_text()))
    m = re.search(pattern, s.err.read_text())
    assert m
    new = int(m.group(1))
    assert new not in pids and alive(new) and alive(pids[1]) and s.proc.poll() is None
    # the new worker serves what the data set holds (a connection waits in the socket's queue until it serves)
    try:
        with only(s, new, [new, pids[1]]) as c:
            r = c.get("/cache/k")
    finally:
        resume([new, pids[1]])
    assert r.status_code == 200 and r.json()["value"] == "before"
    assert s.stop() == 0, s.logs()
    assert not alive(new) and not alive(pids[1])
    with ksds.open(ds, "r") as d:
        assert len(d) > 0


def test_workers_stop_when_their_server_process_is_killed(servers: Servers, tmp_path: Path) -> None:
    ds = tmp_path / "orphans.ksds"
    s = servers.start("--dataset", str(ds), "--workers", "2", name="orphans")
    pids = worker_pids(s)
    s.kill()  # SIGKILL: the server process cannot stop its workers
    wait_until("the workers stopped", lambda: not any(alive(p) for p in pids))
    assert "is gone; stopping" in s.err.read_text()
    with ksds.open(ds, "r") as d:
        assert d.recovery is None  # each worker closed the data set


def test_workers_with_redis(servers: Servers) -> None:
    with redis_server() as url:
        s = servers.start("--storage", "redis", "--redis-url", url, "--workers", "2", name="redis")
        pids = worker_pids(s)
        try:
            with only(s, pids[0], pids) as first:
                assert first.post("/cache", json={"key": "k", "value": "shared"}).status_code == 201
            with only(s, pids[1], pids) as second:
                assert second.get("/cache/k").json()["value"] == "shared"
        finally:
            resume(pids)
        assert s.stop() == 0, s.logs()


def test_the_memory_storage_refuses_several_workers(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "ksds", "serve", "--storage", "memory", "--port", "0", "--workers",
                        "2"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2, r
    assert r.stdout == ""
    assert r.stderr.startswith("ksds serve: --workers 2: the memory storage lives in each server process")
    assert len(r.stderr.splitlines()) == 1


def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path) -> None:
    """A configuration every worker refuses (a key too short for the caching layout): status 12, and why."""
    r = subprocess.run([sys.executable, "-m", "ksds", "serve", "--dataset", str(tmp_path / "short.ksds"),
                        "--keylength", "8", "--host", "127.0.0.1", "--port", "0", "--workers", "2"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 12, r
    assert "at http" not in r.stdout
    assert re.search(r"worker \d: .*key", r.stderr), r.stderr
    assert re.search(r"worker \d \(pid \d+\) exited with status 12 before it served; stopping", r.stderr), r.stderr


def test_a_bad_http_choice_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "KSDS_HTTP": "fast"}
    r = subprocess.run([sys.executable, "-m", "ksds", "serve", "--storage", "memory", "--port", "0"], env=env,
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2, r
    assert r.stderr.strip() == "ksds serve: KSDS_HTTP must be auto, httptools or h11, not 'fast'"


# --- the client certificate through each HTTP path ------------------------------------------------------------------


def check_certificate_identity(server: Server, pki: Path) -> None:
    with tls_client(server, pki, "client-a") as a, tls_client(server, pki, "client-b") as b:
        assert a.post("/cache", json={"key": "k", "value": "a"}).status_code == 201
        assert a.get("/cache/k").json()["serviceId"] == CLIENT_A
        assert b.get("/cache/k").status_code == 404  # another certificate, another caller
        assert b.get("/cache/k", headers={DN: CLIENT_A}).status_code == 401  # a header cannot claim a's DN
        r = a.get("/cache/k", headers={SID: "svc"})
        assert r.status_code == 404
        assert a.post("/cache", json={"key": "k", "value": "s"}, headers={SID: "svc"}).status_code == 201
        assert a.get("/cache/k", headers={SID: "svc"}).json()["serviceId"] == f"{CLIENT_A}, SERVICE=svc"
    with tls_client(server, pki, None) as anonymous:
        assert anonymous.get("/cache/k", headers={DN: CLIENT_A}).status_code == 403  # required by default


def tls_args(pki: Path) -> list[str]:
    return ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"), "--tls-ca",
            str(pki / "ca.pem")]


def test_the_certificate_identifies_the_caller_on_the_fast_path(servers: Servers, pki: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KSDS_HTTP", raising=False)  # the default: httptools, which the service extra installs
    one = servers.start("--storage", "memory", *tls_args(pki), name="fast")
    assert "; HTTP httptools on " in one.out.read_text(), one.logs()
    check_certificate_identity(one, pki)
    two = servers.start("--dataset", str(tmp_path / "tls.ksds"), "--workers", "2", *tls_args(pki), name="fast2")
    assert "; HTTP httptools on " in two.out.read_text(), two.logs()
    pids = worker_pids(two)
    try:
        for pid in pids:  # each worker, alone, checks the certificate
            for p in pids:
                os.kill(p, signal.SIGCONT if p == pid else signal.SIGSTOP)
            with tls_client(two, pki, "client-a") as a:
                assert a.post("/cache", json={"key": f"w{pid}", "value": "a"}).status_code == 201
                assert a.get(f"/cache/w{pid}").json()["serviceId"] == CLIENT_A
            with tls_client(two, pki, "client-b") as b:
                assert b.get(f"/cache/w{pid}").status_code == 404
                assert b.get(f"/cache/w{pid}", headers={DN: CLIENT_A}).status_code == 401
    finally:
        resume(pids)
    check_certificate_identity(two, pki)


def test_the_pure_python_path_still_works(servers: Servers, pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KSDS_HTTP=h11: uvicorn's h11 protocol on asyncio's own loop, as where httptools and uvloop are missing."""
    monkeypatch.setenv("KSDS_HTTP", "h11")
    s = servers.start("--storage", "memory", *tls_args(pki), name="h11")
    assert "; HTTP h11 on asyncio; " in s.out.read_text(), s.logs()
    check_certificate_identity(s, pki)
    plain = servers.start("--storage", "memory", name="h11-plain")
    with plain.client(headers={SID: "p"}) as c:
        assert c.post("/cache", json={"key": "k", "value": "v"}).status_code == 201
        assert c.get("/cache/k").json()["value"] == "v"


_BLOCKING = """
import runpy, sys
from importlib.abc import MetaPathFinder
BLOCKED = set(sys.argv[1].split(","))

class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Block())
sys.argv = ["ksds", *sys.argv[2:]]
runpy.run_module("ksds", run_name="__main__")
"""


@pytest.mark.parametrize("blocked,path", [("httptools,uvloop", "h11 on asyncio"), ("uvloop", "httptools on asyncio"),
                                          ("httptools", "h11 on uvloop")])
def test_without_httptools_or_uvloop_it_falls_back(tmp_path: Path, blocked: str, path: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the fast parser or loop is not installed, each falls back on its own and the server works."""
    monkeypatch.delenv("KSDS_HTTP", raising=False)
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([sys.executable, "-c", _BLOCKING, blocked, "serve", "--storage", "memory", "--host",
                                 "127.0.0.1", "--port", "0"], stdout=o, stderr=e, cwd=tmp_path)
    try:
        wait_until("serving", lambda: " at http" in out.read_text() or proc.poll() is not None, 60)
        m = re.search(r"at (http://127\.0\.0\.1:\d+)/", out.read_text())
        assert m, (out.read_text(), err.read_text())
        assert f"; HTTP {path}; " in out.read_text()
        with httpx.Client(base_url=m.group(1) + "/cachingservice/api/v1", headers={SID: "s"}, timeout=30) as c:
            assert c.post("/cache", json={"key": "k", "value": "v"}).status_code == 201
            assert c.get("/cache/k").json()["value"] == "v"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, err.read_text()
    assert err.read_text() == ""
