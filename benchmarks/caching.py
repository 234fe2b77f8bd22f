"""The caching section (``--caching``): the caching service's REST API per storage mode, and the storages in process
against diskcache.

**Through the REST API.** For each storage mode (``ksds`` on a new data set in the results folder, ``memory``,
``redis`` on a redis-server started here on a free loopback port with no persistence, as ``tests/servers.py``
does), a real ``python -m ksds serve --storage MODE --port 0`` is started (its address is read from the line it
prints), checked with its health endpoint, driven, then stopped with SIGTERM (and waited for). The client is
httpx in this process, with Zowe's identity header ``X-CS-Service-ID`` and keep-alive connections, in two passes:

* one client (one ``httpx.Client``, requests one after another): ``requests`` creates (``POST /cache``), then
  reads (``GET /cache/{key}``, each body checked), updates (``PUT /cache``) and deletes (``DELETE /cache/{key}``)
  of those keys in a seeded random order; each request is timed alone, giving p50 and p99, and the phase's
  requests / its wall time;
* ``threads`` clients (one ``httpx.Client`` each, in threads of this process, started together by a barrier),
  the same four phases on other keys, the keys dealt out between the threads: requests / (last end - first
  start), and the latencies of every thread together.

A phase stops early once it has run ``budget`` seconds (the row says how many requests it made), so a slow mode
cannot make the section unbounded. Values look like JWTs (base64url, 200 to 1000 characters, seeded); keys are
short ASCII. Every status is checked (201, 200, 204, 204), every read's value, and after each pass ``GET /cache``
must hold exactly the keys not deleted; then ``DELETE /cache`` clears them (untimed). After the ksds server has
stopped, its data set must open without recovery (it was closed cleanly).

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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

MODES = ("ksds", "memory", "redis")
OPS = ("create", "read", "update", "delete")
DEFAULT_REQUESTS = 500
QUICK_REQUESTS = 40
DEFAULT_INPROC = 1000
QUICK_INPROC = 100
DEFAULT_BUDGET = 5.0
THREADS = 4
API = "/cachingservice/api/v1"
SERVICE_HEADER = "X-CS-Service-ID"
#: the storages' default size limit (Zowe's); a run needing more entries asks for no limit
DEFAULT_SIZE_LIMIT = 10_000
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
    """``python -m ksds serve`` on a free loopback port (``--port 0``; the address is read from its first line)."""

    def __init__(self, mode: str, work: str, redis_url: str | None, size: int | None) -> None:
        self.mode = mode
        self.dataset = os.path.join(work, f"serve-{mode}.ksds") if mode == "ksds" else None
        args = [sys.executable, "-m", "ksds", "serve", "--storage", mode, "--host", "127.0.0.1", "--port", "0"]
        if self.dataset:
            args += ["--dataset", self.dataset]
        if mode == "redis":
            assert redis_url
            args += ["--redis-url", redis_url]
        if size is not None:
            args += ["--size", str(size)]
        self.args = args
        self.errfile = os.path.join(work, f"serve-{mode}.stderr")
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.exit_code: int | None = None
        self.startup_s = 0.0

    def start(self, timeout: float = 60.0) -> str:
        t0 = time.perf_counter()
        with open(self.errfile, "w") as err:
            self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=err, text=True,
                                         cwd=_project_root())
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            ready = sel.select(timeout)
        finally:
            sel.close()
        line = self.proc.stdout.readline() if ready else ""
        if " at http" not in line:
            raise RuntimeError(f"ksds serve --storage {self.mode} did not start: {self.stderr_tail() or line}")
        self.url = line.split(" at ", 1)[1].split()[0]  # http://127.0.0.1:PORT/cachingservice/api/v1
        import httpx

        health = self.url[: -len(API)] + "/cachingservice/application/health"
        end = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(health, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > end or self.proc.poll() is not None:
                raise RuntimeError(f"ksds serve --storage {self.mode}: not healthy: {self.stderr_tail()}")
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


def _client(base: str, service: str) -> Any:
    import httpx

    return httpx.Client(base_url=base, timeout=30.0,
                        headers={SERVICE_HEADER: service, "Content-Type": "application/json"})


def _request_fn(client: Any, op: str) -> Callable[[str, bytes | None], Any]:
    post, get, put, delete = client.post, client.get, client.put, client.delete
    if op == "create":
        return lambda k, body: post("/cache", content=body)
    if op == "read":
        return lambda k, body: get(f"/cache/{k}")
    if op == "update":
        return lambda k, body: put("/cache", content=body)
    return lambda k, body: delete(f"/cache/{k}")


EXPECTED_STATUS = {"create": 201, "read": 200, "update": 204, "delete": 204}


def _drive(client: Any, op: str, items: list[tuple[str, bytes | None, str | None]],
           deadline: float) -> dict[str, Any]:
    """One client's share of a phase: (key, body, value a read must return) items, until done or ``deadline``."""
    call = _request_fn(client, op)
    want = EXPECTED_STATUS[op]
    lat: list[float] = []
    done: list[str] = []
    errors = 0
    first_error = ""
    clock = time.perf_counter
    start = clock()
    for k, body, value in items:
        if clock() > deadline:
            break
        t0 = clock()
        try:
            r = call(k, body)
            lat.append(clock() - t0)
            if r.status_code != want:
                raise ValueError(f"status {r.status_code} {r.text[:200]}")
            if value is not None and r.json().get("value") != value:
                raise ValueError("another value came back")
        except Exception as e:  # noqa: BLE001 - a failed request is counted, and the phase goes on
            errors += 1
            first_error = first_error or f"{op} {k}: {type(e).__name__}: {e}"
            continue
        done.append(k)
    return {"lat": lat, "start": start, "end": clock(), "errors": errors, "first_error": first_error, "done": done}


def _phase(clients: list[Any], op: str, items: list[tuple[str, bytes | None, str | None]],
           budget: float) -> dict[str, Any]:
    if len(clients) == 1:
        gc.collect()
        parts = [_drive(clients[0], op, items, time.perf_counter() + budget)]
    else:
        n = len(clients)
        parts = [{}] * n
        barrier = threading.Barrier(n + 1)
        deadline = [0.0]

        def run(j: int) -> None:
            barrier.wait()
            parts[j] = _drive(clients[j], op, items[j::n], deadline[0])

        threads = [threading.Thread(target=run, args=(j,), daemon=True) for j in range(n)]
        for t in threads:
            t.start()
        gc.collect()
        deadline[0] = time.perf_counter() + budget
        barrier.wait()
        for t in threads:
            t.join()
    lat = sorted(x for p in parts for x in p["lat"])
    span = max(p["end"] for p in parts) - min(p["start"] for p in parts)
    done = [k for p in parts for k in p["done"]]
    errors = sum(p["errors"] for p in parts)
    out: dict[str, Any] = {
        "requests": len(lat),
        "planned": len(items),
        "seconds": span,
        "rps": len(lat) / span if span > 0 else 0.0,
        "p50_ms": percentile(lat, 0.50) * 1e3,
        "p99_ms": percentile(lat, 0.99) * 1e3,
        "mean_ms": statistics.mean(lat) * 1e3 if lat else 0.0,
        "max_ms": lat[-1] * 1e3 if lat else 0.0,
        "errors": errors,
        "cut_short": len(lat) < len(items),
        "_done": done,
    }
    if errors:
        out["first_error"] = next(p["first_error"] for p in parts if p["first_error"])
    return out


def http_pass(url: str, mode: str, threads: int, requests: int, budget: float, seed: int) -> dict[str, Any]:
    """The four phases through the API with ``threads`` clients; checks; clean-up."""
    tag = f"{mode}-t{threads}"
    service = f"benchmark-{tag}"
    keys, first, second = entries(seed, tag, requests)
    value_of = dict(zip(keys, first, strict=True))
    new_of = dict(zip(keys, second, strict=True))
    clients = [_client(url, service) for _ in range(threads)]
    phases: dict[str, Any] = {}
    check: dict[str, Any] = {}
    try:
        for c in clients:  # open each keep-alive connection before timing
            c.get("/cache/warm-up-key-that-is-not-there")
        created: list[str] = []
        gone: set[str] = set()
        for op in OPS:
            items: list[tuple[str, bytes | None, str | None]]
            if op == "create":
                items = [(k, json.dumps({"key": k, "value": value_of[k]}).encode(), None) for k in keys]
            else:
                order = list(created)
                random.Random(f"{seed}:caching:{tag}:{op}").shuffle(order)
                if op == "read":
                    items = [(k, None, value_of[k]) for k in order]
                elif op == "update":
                    items = [(k, json.dumps({"key": k, "value": new_of[k]}).encode(), None) for k in order]
                else:
                    items = [(k, None, None) for k in order]
            ph = _phase(clients, op, items, budget)
            if op == "create":
                created = ph["_done"]
            elif op == "delete":
                gone = set(ph["_done"])
            del ph["_done"]
            phases[op] = ph
        left = clients[0].get("/cache")
        expected_left = set(created) - gone
        found_left = set(left.json()) if left.status_code == 200 else None
        check = {"left_expected": len(expected_left), "left_found": None if found_left is None else len(found_left),
                 "ok": found_left == expected_left and not any(p["errors"] for p in phases.values())}
        clients[0].delete("/cache")
    finally:
        for c in clients:
            c.close()
    return {"threads": threads, "service": service, "phases": phases, "check": check}


def run_http(mode: str, work: str, redis_url: str | None, requests: int, threads: int, budget: float,
             seed: int, log: Any) -> dict[str, Any]:
    size = None if requests <= DEFAULT_SIZE_LIMIT else 0  # the default limit, unless a pass needs more
    server = Server(mode, work, redis_url, size)
    out: dict[str, Any] = {"mode": mode, "command": " ".join(["python", *server.args[1:]]), "passes": []}
    try:
        server.start()
        out["startup_s"] = server.startup_s
        for t in (1, threads):
            p = http_pass(server.url, mode, t, requests, budget, seed)
            out["passes"].append(p)
            log("  caching http " + f"{mode:<7}{t} client{'s' if t > 1 else ' '}: " + ", ".join(
                f"{op} {ph['rps']:,.0f}/s p50 {ph['p50_ms']:.2f} ms"
                + (f" [{ph['requests']}/{ph['planned']}]" if ph["cut_short"] else "")
                for op, ph in p["phases"].items()))
    except Exception as e:  # a mode that fails is reported, not fatal
        out["error"] = f"{type(e).__name__}: {e}"
        log(f"  caching http {mode}: {out['error']}")
    finally:
        server.stop()
        out["exit_code"] = server.exit_code
        out["server_stderr"] = server.stderr_tail()
    if server.dataset and os.path.exists(server.dataset):
        import ksds

        try:
            with ksds.open(server.dataset, "r") as ds:
                out["closed_cleanly"] = ds.recovery is None
        except Exception as e:  # noqa: BLE001
            out["closed_cleanly"] = False
            out["dataset_error"] = f"{type(e).__name__}: {e}"
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
                log: Any, threads: int = THREADS, modes: tuple[str, ...] = MODES) -> dict[str, Any]:
    started = time.perf_counter()
    work = os.path.join(out, "caching-work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    http: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    log(f"caching: {requests:,} requests per operation per mode through the API (1 and {threads} clients, "
        f"{budget:g} s at most per phase); {inproc_requests:,} per operation in process, repeat {repeat}")
    try:
        with redis_server() as redis_url:
            for mode in modes:
                if mode == "redis" and redis_url is None:
                    skipped["redis"] = "redis-server is not installed (apt-get install -y redis-server)"
                    log(f"  caching: skipping redis: {skipped['redis']}")
                    continue
                http.append(run_http(mode, work, redis_url, requests, threads, budget, seed, log))
            inproc = run_inprocess(work, redis_url, inproc_requests, repeat, seed, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:
        import httpx

        client_version = f"httpx {httpx.__version__}"
    except ImportError:  # pragma: no cover - the section needs it
        client_version = "httpx ?"
    return {
        "requests": requests,
        "threads": threads,
        "budget_s": budget,
        "value_chars": [200, 1000],
        "client": client_version,
        "http": http,
        "skipped": skipped,
        "inprocess": inproc,
        "runtime_s": time.perf_counter() - started,
    }
