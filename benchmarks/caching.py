"""The caching section (``--caching``): the caching service's REST API per server mode, and the storages in process
against diskcache.

**Through the REST API.** For each mode of :data:`MODES` a real ``python -m ksds serve --storage STORAGE --port 0``
is started (its address is read from the line it prints once it serves), checked with its health endpoint, driven,
then stopped with SIGTERM (and waited for): ``memory``; ``memory-h11``, the same with ``KSDS_HTTP=h11`` (the
pure-Python HTTP path, h11 on asyncio's own loop, as where httptools and uvloop are missing: the fast path's
reference in the same run); ``ksds`` on a new data set in the results folder; ``ksds-w2``, the same with
``--workers 2`` (two server processes on one listening socket and one data set, RLS); ``ksds-2srv``, two separate
``ksds serve`` processes on one data set, each on a free loopback port of its own, the clients dealt out between
them (:data:`MULTI_SERVER`; only the pass with :data:`CLIENTS` clients, compared with ``ksds``'s by
:data:`SCALEOUT`); ``redis`` on a redis-server started here on a free loopback port with no persistence, as
``tests/servers.py`` does, and ``redis-w2`` (2 workers on it).

The client is light so that it measures the server: :class:`RawClient`, HTTP/1.1 written and parsed by hand over
one keep-alive socket with ``TCP_NODELAY`` (each request one ``sendall``; the response read by its
``Content-Length``), with Zowe's identity header ``X-CS-Service-ID``. Each client is a process of its own
(``python -m benchmarks.caching --client CONFIG``), so a pass with 4 clients is 4 processes beside the server's,
released together by a barrier (each says ``ready``, then the parent sends every one ``go OP``, phase by phase).
For 1 and then :data:`CLIENTS` clients: ``requests`` creates (``POST /cache``), then reads (``GET /cache/{key}``,
each body checked), updates (``PUT /cache``) and deletes (``DELETE /cache/{key}``) of those keys, the keys dealt out
between the clients and each client's taken in a seeded random order. Each request is timed alone
(``time.monotonic``, one clock for every process); a phase's req/s is all its requests / (last end - first
start), and p50/p99 are over every client's requests.

A phase stops early once it has run ``budget`` seconds (the row says how many requests it made), so a slow mode
cannot make the section unbounded. Values look like JWTs (base64url, 200 to 1000 characters, seeded); keys are
short ASCII. Every status is checked (201, 200, 204, 204), every read's value, and after each pass ``GET /cache``
must hold exactly the keys not deleted; then ``DELETE /cache`` clears them (untimed). Each server must exit 0 on
SIGTERM, and after the ksds servers have stopped, their data sets must open without recovery (closed cleanly).

**In process.** The storages themselves (``make_storage(mode, ...)``, no HTTP): ``create``, ``read`` (value
checked), ``update``, ``delete`` of ``inproc_requests`` entries, against ``diskcache.Cache`` in the same run
(``add`` for create, ``get``, ``set`` for update, ``delete``; key ``service/key``, the value as a str), median of
``repeat`` runs interleaved, microseconds per operation and the ratio storage/diskcache (> 1: slower).
"""

from __future__ import annotations

import base64
import gc
import json
import math
import os
import random
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: the server modes through the API: (name, storage, extra ``ksds serve`` arguments, extra environment)
SERVER_MODES: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "memory": ("memory", [], {}),
    "memory-h11": ("memory", [], {"KSDS_HTTP": "h11"}),
    "ksds": ("ksds", [], {}),
    "ksds-w2": ("ksds", ["--workers", "2"], {}),
    "ksds-2srv": ("ksds", [], {}),
    "redis": ("redis", [], {}),
    "redis-w2": ("redis", ["--workers", "2"], {}),
}
MODES = tuple(SERVER_MODES)
#: modes served by several separate ``ksds serve`` processes on one data set, each on a port of its own (not
#: ``--workers``): how many. The clients are dealt out between them (client j to server j mod N), and such a mode
#: runs only the pass with :data:`CLIENTS` clients.
MULTI_SERVER: dict[str, int] = {"ksds-2srv": 2}
OPS = ("create", "read", "update", "delete")
DEFAULT_REQUESTS = 2000
QUICK_REQUESTS = 40
DEFAULT_INPROC = 1000
QUICK_INPROC = 100
DEFAULT_BUDGET = 5.0
CLIENTS = 4
THREADS = CLIENTS  # (the name of earlier versions, where the clients were threads)
API = "/cachingservice/api/v1"
SERVICE_HEADER = "X-CS-Service-ID"
#: the storages' default size limit (Zowe's); a run needing more entries asks for no limit
DEFAULT_SIZE_LIMIT = 10_000
#: what item 11 of issue 13 asks of this section (4 clients, loopback, the project's 2-core machine):
#: (mode or modes, op, least req/s, most p99 ms or None)
TARGETS: tuple[tuple[tuple[str, ...], str, float, float | None], ...] = (
    (("memory",), "read", 4000.0, None),
    (("ksds", "ksds-w2"), "read", 3000.0, 10.0),
    (("ksds", "ksds-w2"), "create", 1500.0, 10.0),
)
#: issue 12's scale-out target: (mode, the mode it is compared with, op, least ratio of req/s or None for a figure
#: only), both with :data:`CLIENTS` clients
SCALEOUT: tuple[tuple[str, str, str, float | None], ...] = (
    ("ksds-2srv", "ksds", "create", 1.5),
    ("ksds-2srv", "ksds", "read", None),
)
_JWT_HEAD = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9"  # {"alg":"RS256","typ":"JWT"}


def _project_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- data -----------------------------------------------------------------------------------------------------------


def jwt_like(rng: random.Random, length: int) -> str:
    """A string shaped like a JWT (header.payload.signature, base64url) of exactly ``length`` characters."""
    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(rng.randbytes(n)).rstrip(b"=").decode()[:n]

    sig = b64(43)
    body = b64(max(1, length - len(_JWT_HEAD) - len(sig) - 2))
    return f"{_JWT_HEAD}.{body}.{sig}"


def entries(seed: int, tag: str, n: int) -> tuple[list[str], list[str], list[str]]:
    """``n`` keys, their first values and their updated values (200-1000 characters each)."""
    rng = random.Random(f"{seed}:caching:{tag}")
    keys = [f"bench-{tag}-{i:06d}-{rng.getrandbits(32):08x}" for i in range(n)]
    first = [jwt_like(rng, rng.randint(200, 1000)) for _ in range(n)]
    second = [jwt_like(rng, rng.randint(200, 1000)) for _ in range(n)]
    return keys, first, second


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


# --- the client -----------------------------------------------------------------------------------------------------


class RawClient:
    """An HTTP/1.1 client of one keep-alive connection, as light as a client can be in Python: a request is one
    ``sendall`` of bytes built by hand, a response is read up to its headers and then by its ``Content-Length``
    (``ksds serve`` sends one with every response). ``TCP_NODELAY`` is set, so no request waits for an ACK."""

    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fixed = {"Host": f"{host}:{port}", **(headers or {})}
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode()
        self._buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body) of one request; OSError or ValueError if the connection fails or the response is not
        what HTTP/1.1 with a Content-Length looks like."""
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._fixed
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            self.sock.sendall(head + body)
        else:
            self.sock.sendall(head + b"\r\n")
        buf, recv = self._buf, self.sock.recv
        while (end := buf.find(b"\r\n\r\n")) < 0:
            chunk = recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            buf += chunk
        lines = bytes(buf[:end]).split(b"\r\n")
        del buf[: end + 4]
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise ValueError(f"a response with Transfer-Encoding {value.strip().decode()!r}")
        while len(buf) < length:
            chunk = recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection in a response")
            buf += chunk
        data = bytes(buf[:length])
        del buf[:length]
        return status, data


EXPECTED_STATUS = {"create": 201, "read": 200, "update": 204, "delete": 204}


def _phase_items(op: str, keys: list[str], first: dict[str, str], second: dict[str, str]
                 ) -> list[tuple[str, str, bytes | None, str | None]]:
    """(method, path, body, value a read must return) of each request of a phase."""
    if op == "create":
        return [("POST", f"{API}/cache", json.dumps({"key": k, "value": first[k]}).encode(), None) for k in keys]
    if op == "read":
        return [("GET", f"{API}/cache/{k}", None, first[k]) for k in keys]
    if op == "update":
        return [("PUT", f"{API}/cache", json.dumps({"key": k, "value": second[k]}).encode(), None) for k in keys]
    return [("DELETE", f"{API}/cache/{k}", None, None) for k in keys]


def client_main(cfg: dict[str, Any]) -> None:
    """One client process: its share of the keys, each phase when the parent says ``go OP``, a JSON report per
    phase on stdout (latencies in seconds, start and end on ``time.monotonic()``, errors, the keys done)."""
    keys, first, second = entries(cfg["seed"], cfg["tag"], cfg["requests"])
    mine = keys[cfg["index"]::cfg["clients"]]
    first_of = dict(zip(keys, first, strict=True))
    second_of = dict(zip(keys, second, strict=True))
    client = RawClient(cfg["host"], cfg["port"], {SERVICE_HEADER: cfg["service"]})
    client.request("GET", f"{API}/cache/warm-up-key-that-is-not-there")  # the connection, before any clock
    created: list[str] = []
    print("ready", flush=True)
    clock = time.monotonic
    for line in sys.stdin:
        word, _, op = line.strip().partition(" ")
        if word != "go":
            break
        if op == "create":
            order = mine
        else:
            order = list(created)
            random.Random(f"{cfg['seed']}:caching:{cfg['tag']}:{cfg['index']}:{op}").shuffle(order)
        items = _phase_items(op, order, first_of, second_of)
        want = EXPECTED_STATUS[op]
        deadline = clock() + cfg["budget"]
        lat: list[float] = []
        done: list[str] = []
        errors = 0
        first_error = ""
        request = client.request
        gc.collect()
        gc.disable()
        start = clock()
        for k, (method, path, body, value) in zip(order, items, strict=True):
            if clock() > deadline:
                break
            t0 = clock()
            try:
                status, data = request(method, path, body)
                lat.append(clock() - t0)
                if status != want:
                    raise ValueError(f"status {status} {data[:200]!r}")
                if value is not None and json.loads(data).get("value") != value:
                    raise ValueError("another value came back")
            except (OSError, ValueError) as e:
                errors += 1
                first_error = first_error or f"{op} {k}: {type(e).__name__}: {e}"
                if isinstance(e, OSError):  # the connection is gone: a new one for the rest
                    client.close()
                    client = RawClient(cfg["host"], cfg["port"], {SERVICE_HEADER: cfg["service"]})
                    request = client.request
                continue
            done.append(k)
        end = clock()
        gc.enable()
        if op == "create":
            created = done
        print(json.dumps({"lat": lat, "start": start, "end": end, "errors": errors, "first_error": first_error,
                          "done": done, "planned": len(items)}), flush=True)
    client.close()


# --- servers --------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def _stop(proc: subprocess.Popen[Any], timeout: float = 20.0) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


@contextmanager
def redis_server() -> Iterator[str | None]:
    """A fresh redis-server on 127.0.0.1 (no persistence): its URL, or None if redis-server is not installed."""
    exe = shutil.which("redis-server")
    if exe is None:
        yield None
        return
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="ksds-bench-redis-")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc, 10)
        shutil.rmtree(workdir, ignore_errors=True)


class Server:
    """``python -m ksds serve`` of a mode (:data:`SERVER_MODES`) on a free loopback port (``--port 0``; the address
    is read from the line it prints). ``command``/``env``/``cwd``: another server to run the same way (e.g. an
    older checkout, for a before/after comparison)."""

    def __init__(self, mode: str, work: str, redis_url: str | None, size: int | None,
                 command: list[str] | None = None, env: dict[str, str] | None = None, cwd: str | None = None,
                 index: int = 0) -> None:
        storage, extra, mode_env = SERVER_MODES[mode]
        self.index = index  # the how-manieth server of a mode with several (MULTI_SERVER); they share the data set
        self.mode = mode
        self.dataset = os.path.join(work, f"serve-{mode}.ksds") if storage == "ksds" else None
        args = [*(command or [sys.executable, "-m", "ksds"]), "serve", "--storage", storage, "--host", "127.0.0.1",
                "--port", "0", *extra]
        if self.dataset:
            args += ["--dataset", self.dataset]
        if storage == "redis":
            assert redis_url
            args += ["--redis-url", redis_url]
        if size is not None:
            args += ["--size", str(size)]
        self.args = args
        self.env = {**os.environ, **mode_env, **(env or {})}
        if not mode_env.get("KSDS_HTTP") and "KSDS_HTTP" not in (env or {}):
            self.env.pop("KSDS_HTTP", None)
        self.cwd = cwd or _project_root()
        self.errfile = os.path.join(work, f"serve-{mode}" + (f"-{index}" if index else "") + ".stderr")
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.host = "127.0.0.1"
        self.port = 0
        self.line = ""
        self.exit_code: int | None = None
        self.startup_s = 0.0

    def start(self, timeout: float = 60.0) -> str:
        t0 = time.perf_counter()
        with open(self.errfile, "w") as err:
            self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=err, text=True, cwd=self.cwd,
                                         env=self.env)
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            ready = sel.select(timeout)
        finally:
            sel.close()
        line = self.proc.stdout.readline() if ready else ""
        if " at http" not in line:
            raise RuntimeError(f"ksds serve ({self.mode}) did not start: {self.stderr_tail() or line}")
        self.line = line.strip()
        self.url = line.split(" at ", 1)[1].split()[0]  # http://127.0.0.1:PORT/cachingservice/api/v1
        self.port = int(self.url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        end = time.monotonic() + timeout
        while True:
            try:
                c = RawClient(self.host, self.port, timeout=5)
                try:
                    status, _ = c.request("GET", "/cachingservice/application/health")
                finally:
                    c.close()
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > end or self.proc.poll() is not None:
                raise RuntimeError(f"ksds serve ({self.mode}): not healthy: {self.stderr_tail()}")
            time.sleep(0.05)
        self.startup_s = time.perf_counter() - t0
        return self.url

    def stderr_tail(self) -> str:
        try:
            with open(self.errfile) as f:
                lines = [x for x in f.read().splitlines() if x.strip()]
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        self.exit_code = _stop(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


# --- driving the API ------------------------------------------------------------------------------------------------


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise TimeoutError(f"no answer from client process {proc.pid} in {timeout:g} s")
    finally:
        sel.close()
    return proc.stdout.readline()


def _summary(parts: list[dict[str, Any]]) -> dict[str, Any]:
    lat = sorted(x for p in parts for x in p["lat"])
    span = max(p["end"] for p in parts) - min(p["start"] for p in parts)
    planned = sum(p["planned"] for p in parts)
    errors = sum(p["errors"] for p in parts)
    out: dict[str, Any] = {
        "requests": len(lat),
        "planned": planned,
        "seconds": span,
        "rps": len(lat) / span if span > 0 else 0.0,
        "p50_ms": percentile(lat, 0.50) * 1e3,
        "p99_ms": percentile(lat, 0.99) * 1e3,
        "mean_ms": statistics.mean(lat) * 1e3 if lat else 0.0,
        "max_ms": lat[-1] * 1e3 if lat else 0.0,
        "errors": errors,
        "cut_short": len(lat) < planned,
        "_done": [k for p in parts for k in p["done"]],
    }
    if errors:
        out["first_error"] = next(p["first_error"] for p in parts if p["first_error"])
    return out


def http_pass(server: Server | list[Server], mode: str, clients: int, requests: int, budget: float, seed: int
              ) -> dict[str, Any]:
    """The four phases through the API with ``clients`` client processes; checks; clean-up. With several servers
    (on one data set), client j talks to server j mod N, and every server must then list the same entries."""
    servers = server if isinstance(server, list) else [server]
    tag = f"{mode}-c{clients}"
    service = f"benchmark-{tag}"
    cfg = {"service": service, "seed": seed, "tag": tag, "requests": requests, "clients": clients, "budget": budget}
    procs: list[subprocess.Popen[str]] = []
    phases: dict[str, Any] = {}
    try:
        for j in range(clients):
            srv = servers[j % len(servers)]
            where = {"host": srv.host, "port": srv.port}
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "benchmarks.caching", "--client",
                 json.dumps({**cfg, **where, "index": j})],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                cwd=_project_root(),
            ))
        for p in procs:
            if _readline(p, 60).strip() != "ready":
                raise RuntimeError(_client_failure(p))
        for op in OPS:
            for p in procs:  # the barrier: every client has its connection and waits
                assert p.stdin is not None
                p.stdin.write(f"go {op}\n")
                p.stdin.flush()
            parts = []
            for p in procs:
                line = _readline(p, budget + 60)
                if not line.strip():
                    raise RuntimeError(_client_failure(p))
                parts.append(json.loads(line))
            phases[op] = _summary(parts)
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
        for p in procs:
            p.wait(30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            for f in (p.stdin, p.stdout, p.stderr):
                if f is not None:
                    f.close()
    created = phases["create"].pop("_done")
    gone = set(phases["delete"].pop("_done"))
    for ph in phases.values():
        ph.pop("_done", None)
    expected_left = set(created) - gone
    found: list[set[str] | None] = []
    for srv in servers:  # each server of the data set must list the same entries
        c = RawClient(srv.host, srv.port, {SERVICE_HEADER: service})
        try:
            status, data = c.request("GET", f"{API}/cache")
            found.append(set(json.loads(data)) if status == 200 else None)
        finally:
            c.close()
    c = RawClient(servers[0].host, servers[0].port, {SERVICE_HEADER: service})
    try:
        c.request("DELETE", f"{API}/cache")
    finally:
        c.close()
    found_left = found[0]
    check: dict[str, Any] = {
        "left_expected": len(expected_left), "left_found": None if found_left is None else len(found_left),
        "ok": all(f == expected_left for f in found) and not any(p["errors"] for p in phases.values())}
    if len(servers) > 1:
        check["left_found_per_server"] = [None if f is None else len(f) for f in found]
    return {"clients": clients, "threads": clients, "servers": len(servers), "service": service, "phases": phases,
            "check": check}


def _client_failure(p: subprocess.Popen[str]) -> str:
    if p.poll() is None:
        p.kill()
    p.wait()
    err = p.stderr.read() if p.stderr is not None else ""
    lines = [x for x in err.splitlines() if x.strip()]
    return f"client process {p.pid} failed (exit {p.returncode}): {lines[-1] if lines else 'no message'}"


def run_http(mode: str, work: str, redis_url: str | None, requests: int, clients: int, budget: float,
             seed: int, log: Any, server: Server | None = None, servers: list[Server] | None = None
             ) -> dict[str, Any]:
    """One mode through the API: its server (or, for :data:`MULTI_SERVER` modes, its servers, started one after
    another on the same data set, each on a free port of its own), the passes (1 and ``clients`` clients; only
    ``clients`` with several servers), the stop and the checks."""
    size = None if requests <= DEFAULT_SIZE_LIMIT else 0  # the default limit, unless a pass needs more
    if servers is None:
        n = MULTI_SERVER.get(mode, 1)
        servers = [server] if server is not None else [Server(mode, work, redis_url, size, index=i)
                                                       for i in range(n)]
    first = servers[0]
    storage, extra, env = SERVER_MODES[mode]
    out: dict[str, Any] = {"mode": mode, "storage": storage, "workers": int(extra[1]) if extra else 1,
                           "servers": len(servers), "env": env, "command": " ".join(["python", *first.args[1:]]),
                           "passes": []}
    try:
        for srv in servers:
            srv.start()
        out["startup_s"] = first.startup_s
        out["server_line"] = first.line
        if len(servers) > 1:
            out["server_lines"] = [srv.line for srv in servers]
            out["ports"] = [srv.port for srv in servers]
        for c in ((1, clients) if len(servers) == 1 else (clients,)):
            p = http_pass(servers if len(servers) > 1 else first, mode, c, requests, budget, seed)
            out["passes"].append(p)
            log(f"  caching http {mode:<11}{c} client{'s' if c > 1 else ' '}: " + ", ".join(
                f"{op} {ph['rps']:,.0f}/s p50 {ph['p50_ms']:.2f} p99 {ph['p99_ms']:.2f} ms"
                + (f" [{ph['requests']}/{ph['planned']}]" if ph["cut_short"] else "")
                for op, ph in p["phases"].items()))
    except Exception as e:  # a mode that fails is reported, not fatal
        out["error"] = f"{type(e).__name__}: {e}"
        log(f"  caching http {mode}: {out['error']}")
    finally:
        for srv in servers:
            srv.stop()
        codes = [srv.exit_code for srv in servers]
        out["exit_code"] = next((c for c in codes if c != 0), 0)
        out["server_stderr"] = "; ".join(t for t in (srv.stderr_tail() for srv in servers) if t)
        if len(servers) > 1:
            out["exit_codes"] = codes
    server = first
    if server.dataset and os.path.exists(server.dataset):
        import ksds

        try:
            with ksds.open(server.dataset, "r") as ds:
                out["closed_cleanly"] = ds.recovery is None
        except Exception as e:  # noqa: BLE001
            out["closed_cleanly"] = False
            out["dataset_error"] = f"{type(e).__name__}: {e}"
    return out


def scaleout(http: list[dict[str, Any]], clients: int) -> list[dict[str, Any]]:
    """Each of :data:`SCALEOUT` against this run: req/s of the mode / of the one it is compared with (``clients``
    clients), and whether it is met (None: a figure only, or a mode did not run)."""
    def rps(mode: str, op: str) -> float | None:
        for m in http:
            if m["mode"] == mode:
                for p in m["passes"]:
                    ph = p["phases"].get(op)
                    if p["clients"] == clients and ph is not None and not ph["errors"] and ph["rps"]:
                        v: float = ph["rps"]
                        return v
        return None

    out = []
    for mode, base, op, least in SCALEOUT:
        a, b = rps(mode, op), rps(base, op)
        ratio = a / b if a is not None and b is not None else None
        out.append({"mode": mode, "vs": base, "op": op, "clients": clients, "least_ratio": least, "rps": a,
                    "vs_rps": b, "ratio": ratio,
                    "met": None if least is None else (ratio is not None and ratio >= least)})
    return out


def targets(http: list[dict[str, Any]], clients: int) -> list[dict[str, Any]]:
    """Each of :data:`TARGETS` against this run: the best of the modes it names, with ``clients`` clients."""
    out = []
    for modes, op, least_rps, most_p99 in TARGETS:
        best: tuple[float, float, str] | None = None
        for m in http:
            if m["mode"] not in modes:
                continue
            for p in m["passes"]:
                ph = p["phases"].get(op)
                if p["clients"] == clients and ph is not None and not ph["errors"]:
                    cand = (ph["rps"], ph["p99_ms"], m["mode"])
                    if best is None or cand[0] > best[0]:
                        best = cand
        met = best is not None and best[0] >= least_rps and (most_p99 is None or best[1] < most_p99)
        out.append({"modes": list(modes), "op": op, "clients": clients, "least_rps": least_rps,
                    "most_p99_ms": most_p99, "rps": best[0] if best else None, "p99_ms": best[1] if best else None,
                    "best_mode": best[2] if best else None, "met": met})
    return out


# --- in process -----------------------------------------------------------------------------------------------------


class _DiskcacheAdapter:
    """diskcache.Cache with the storages' four operations (create = add, read = get, update = set, delete)."""

    def __init__(self, directory: str) -> None:
        import diskcache

        self.cache = diskcache.Cache(directory)
        self.version = diskcache.__version__

    def close(self) -> None:
        self.cache.close()


def _inproc_run(name: str, store: Any, sid: str, keys: list[str], first: list[str], second: list[str]
                ) -> dict[str, float | int]:
    """One run of the four operations; seconds per phase and how many went wrong."""
    clock = time.perf_counter
    out: dict[str, float | int] = {}
    bad = 0
    if name == "diskcache":
        cache = store.cache
        add, get, set_, delete = cache.add, cache.get, cache.set, cache.delete
        ck = [f"{sid}/{k}" for k in keys]
        gc.collect()
        t = clock()
        for k, v in zip(ck, first, strict=True):
            bad += not add(k, v)
        out["create"] = clock() - t
        t = clock()
        for k, v in zip(ck, first, strict=True):
            bad += get(k) != v
        out["read"] = clock() - t
        t = clock()
        for k, v in zip(ck, second, strict=True):
            set_(k, v)
        out["update"] = clock() - t
        t = clock()
        for k in ck:
            bad += not delete(k)
        out["delete"] = clock() - t
        bad += len(cache) != 0
    else:
        from ksds.caching.model import KeyValue, StorageError

        created = [KeyValue(k, v, sid) for k, v in zip(keys, first, strict=True)]
        updated = [KeyValue(k, v, sid) for k, v in zip(keys, second, strict=True)]
        create, read, update, delete = store.create, store.read, store.update, store.delete
        gc.collect()
        try:
            t = clock()
            for kv in created:
                create(sid, kv)
            out["create"] = clock() - t
            t = clock()
            for k, v in zip(keys, first, strict=True):
                bad += read(sid, k).value != v
            out["read"] = clock() - t
            t = clock()
            for kv in updated:
                update(sid, kv)
            out["update"] = clock() - t
            t = clock()
            for k in keys:
                delete(sid, k)
            out["delete"] = clock() - t
        except StorageError:
            store.delete_for_service(sid)
            raise
        bad += store.count() != 0
    out["wrong"] = bad
    return out


def run_inprocess(work: str, redis_url: str | None, requests: int, repeat: int, seed: int,
                  log: Any) -> dict[str, Any]:
    from ksds.caching.storage_factory import make_storage

    size = DEFAULT_SIZE_LIMIT if requests <= DEFAULT_SIZE_LIMIT else 0
    stores: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    errors: dict[str, str] = {}
    stores["ksds"] = make_storage("ksds", dataset=os.path.join(work, "inproc.ksds"), size=size)
    stores["memory"] = make_storage("memory", size=size)
    if redis_url:
        stores["redis"] = make_storage("redis", redis_url=redis_url, size=size)
    else:
        skipped["redis"] = "redis-server is not installed"
    try:
        stores["diskcache"] = _DiskcacheAdapter(os.path.join(work, "inproc-diskcache"))
    except ImportError as e:
        skipped["diskcache"] = f"not installed ({e})"
    keys, first, second = entries(seed, "inproc", requests)
    sid = "benchmark-inproc"
    times: dict[str, dict[str, list[float]]] = {n: {op: [] for op in OPS} for n in stores}
    wrong: dict[str, int] = dict.fromkeys(stores, 0)
    try:
        for _ in range(repeat):
            for name, store in stores.items():
                if name in errors:
                    continue
                try:
                    r = _inproc_run(name, store, sid, keys, first, second)
                except Exception as e:  # noqa: BLE001
                    errors[name] = f"{type(e).__name__}: {e}"
                    log(f"  caching in-process {name}: {errors[name]}")
                    continue
                for op in OPS:
                    times[name][op].append(float(r[op]))
                wrong[name] += int(r["wrong"])
    finally:
        for store in stores.values():
            store.close()
    results: dict[str, Any] = {}
    for name in stores:
        if name in errors:
            results[name] = {"error": errors[name]}
            continue
        results[name] = {op: {"times_s": times[name][op], "us_per_op": statistics.median(times[name][op])
                              / requests * 1e6} for op in OPS}
        results[name]["wrong"] = wrong[name]
    dc = results.get("diskcache")
    for name, r in results.items():
        if name == "diskcache" or "error" in r or not dc or "error" in dc:
            continue
        for op in OPS:
            per = [a / b for a, b in zip(r[op]["times_s"], dc[op]["times_s"], strict=False) if b > 0]
            r[op]["vs_diskcache"] = {"ratio": r[op]["us_per_op"] / dc[op]["us_per_op"], "min": min(per),
                                     "max": max(per)}
    if results:
        log("  caching in-process: " + "; ".join(
            f"{n} " + "/".join(f"{r[op]['us_per_op']:.1f}" for op in OPS) for n, r in results.items()
            if "error" not in r) + " us (create/read/update/delete)")
    return {"requests": requests, "repeat": repeat, "size_limit": size, "stores": results, "skipped": skipped}


# --- the section ----------------------------------------------------------------------------------------------------


def run_caching(*, out: str, requests: int, inproc_requests: int, repeat: int, budget: float, seed: int,
                log: Any, threads: int = CLIENTS, modes: tuple[str, ...] = MODES) -> dict[str, Any]:
    started = time.perf_counter()
    work = os.path.join(out, "caching-work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    http: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    clients = threads
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    log(f"caching: {requests:,} requests per operation per mode through the API (1 and {clients} client "
        f"processes, {budget:g} s at most per phase); {inproc_requests:,} per operation in process, repeat {repeat}")
    try:
        with redis_server() as redis_url:
            for mode in modes:
                if SERVER_MODES[mode][0] == "redis" and redis_url is None:
                    skipped[mode] = "redis-server is not installed (apt-get install -y redis-server)"
                    log(f"  caching: skipping {mode}: {skipped[mode]}")
                    continue
                http.append(run_http(mode, work, redis_url, requests, clients, budget, seed, log))
            inproc = run_inprocess(work, redis_url, inproc_requests, repeat, seed, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "requests": requests,
        "clients": clients,
        "threads": clients,
        "budget_s": budget,
        "value_chars": [200, 1000],
        "client": "RawClient (HTTP/1.1 over a keep-alive socket, TCP_NODELAY), one process per client",
        "cpus": os.cpu_count(),
        "load_before": load,
        "http": http,
        "targets": targets(http, clients),
        "scaleout": scaleout(http, clients),
        "skipped": skipped,
        "inprocess": inproc,
        "runtime_s": time.perf_counter() - started,
    }


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--client":
        client_main(json.loads(argv[1]))
        return 0
    print("usage: python -m benchmarks.caching --client CONFIG_JSON (use python -m benchmarks --caching)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
