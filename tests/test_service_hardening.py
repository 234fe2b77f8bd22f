"""The caching service against hostile or unusual input, through real ``ksds serve`` processes (issue 10, items 5,
6, 7, 8 and 11):

* text that is not Unicode (lone surrogates) and JSON nested too deeply are refused at the door (400 ZWECS130E),
  and whatever is already stored (by an older version, or written into the storage by something else) reads
  back without a 500;
* every value round-trips exactly: the empty string, control characters, U+FFFD (Zowe's ZAAS keeps a salt of 16
  random bytes as a string);
* a service id can never reach the partition of a DN that a client certificate proved;
* SIGTERM stops a server within a few seconds whatever its clients do (an idle keep-alive connection over TLS,
  a request that never ends), and the data set is closed cleanly;
* ``ksds serve`` without the service extra says which package to install, in one line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import redis
from servers import Server, Servers, make_pki, redis_server, tls_client

import ksds
from ksds.caching.ksds_storage import KsdsStorage
from ksds.caching.memory import MemoryStorage
from ksds.caching.model import KeyValue, Storage, StorageError
from ksds.caching.redis_storage import RedisStorage

DN = "X-Certificate-DistinguishedName"
SID = "X-CS-Service-ID"
CLIENT_A = "CN=client-a,OU=Zowe,O=ACME\\, Inc.,C=US"  # Java's X500Principal.getName() of client-a's certificate
MODES = ("memory", "ksds", "ksds-zowe", "redis")


@pytest.fixture(scope="module")
def module_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    servers = Servers(tmp_path_factory.mktemp("servers"))
    yield servers
    servers.stop_all()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(tmp_path)
    yield s
    s.stop_all()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


def storage_args(mode: str, workdir: Path, name: str, request: pytest.FixtureRequest, db: int = 1) -> list[str]:
    if mode == "memory":
        return ["--storage", "memory"]
    if mode == "redis":
        url: str = request.getfixturevalue("redis_url")
        return ["--storage", "redis", "--redis-url", url.rsplit("/", 1)[0] + f"/{db}"]
    layout = ["--layout", "zowe"] if mode == "ksds-zowe" else []
    return ["--storage", "ksds", "--dataset", str(workdir / f"{name}.ksds"), *layout]


@pytest.fixture(scope="module", params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def server(mode: str, module_servers: Servers, request: pytest.FixtureRequest) -> Server:
    return module_servers.start(*storage_args(mode, module_servers.workdir, mode, request), name=mode)


def number(r: httpx.Response) -> str:
    assert r.headers["content-type"] == "application/json", (r.status_code, r.text)
    body = r.json()
    return str(body["messages"][0]["messageNumber"])


def path_of(key: str) -> str:
    return "/cache/" + quote(key, safe="", errors="surrogatepass")  # the server reads such bytes as U+FFFD


def assert_reads_are_clean(c: httpx.Client, h: dict[str, str], keys: tuple[str, ...] | list[str] = ()) -> None:
    """Every read endpoint of the caller answers 200 (or 404 for a missing key), never 500."""
    for path in ["/cache", "/cache-list", "/cache-list/m", *(path_of(k) for k in keys)]:
        r = c.get(path, headers=h)
        assert r.status_code in (200, 404), (path, r.status_code, r.text)
        r.json()


# --- 5: input that is not Unicode, JSON nested too deeply ----------------------------------------------------------


def test_lone_surrogates_and_deep_nesting_are_refused_at_the_door(server: Server, mode: str) -> None:
    h = {SID: "surrogates"}
    bad = [
        ("post", "/cache", '{"key": "\\ud800", "value": "v"}'),
        ("post", "/cache", '{"key": "k", "value": "x\\udfffy"}'),
        ("post", "/cache", '{"key": "k", "value": "v", "created": "\\udbff"}'),
        ("put", "/cache", '{"key": "\\ud800", "value": "v"}'),
        ("put", "/cache/k", '{"key": "\\ud800", "value": "v"}'),  # the message names the body's key: was a 500
        ("put", "/cache/k", '{"value": "\\ud800"}'),
        ("post", "/cache-list/m", '{"key": "\\ud800", "value": "v"}'),
        ("post", "/cache-list/m", '{"key": "k", "value": "\\ud800"}'),
        ("post", "/cache", "[" * 100_000),  # was a 500 (RecursionError)
        ("post", "/cache", '{"key": "k", "value": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        ("post", "/cache-list/m", '{"key": "k", "value": "v", "x": ' + "{\"a\":" * 50_000 + "1" + "}" * 50_000 + "}"),
    ]
    with server.client() as c:
        assert c.post("/cache", json={"key": "k", "value": "v"}, headers=h).status_code == 201
        for verb, path, body in bad:
            r = c.request(verb, path, content=body.encode(), headers=h)
            assert r.status_code == 400 and number(r) == "ZWECS130E", (verb, path, body[:60], r.status_code, r.text)
        assert_reads_are_clean(c, h, ["k", "\ufffd"])
        assert c.get("/cache", headers=h).json()["k"]["value"] == "v"  # nothing was changed by the refused ones
        assert c.get("/cache-list", headers=h).json() == {}
        # a surrogate pair is a character (which IBM-1047 has no code for: the zowe layout refuses it)
        r = c.post("/cache", content=b'{"key": "pair", "value": "\\ud83d\\ude00"}', headers=h)
        if mode == "ksds-zowe":
            assert r.status_code == 400 and "IBM-1047" in r.text
        else:
            assert r.status_code == 201
            assert c.get("/cache/pair", headers=h).json()["value"] == "\U0001f600"


def _old_version_wrote(st: Storage) -> list[str]:
    """Store through the Python API (which does not check) what an older version let in through REST."""
    st.create("old", KeyValue("sur\ud800", "v\udfff", created="1"))
    st.create("old", KeyValue("plain", "x\ud800y", created="2"))
    st.store_map_item("old", "m", KeyValue("i\udc00", "w\ud800"))
    return ["sur\ud800", "plain"]


def _corrupt_native_value(path: str) -> None:
    """Write bytes that are not UTF-8 into the value of entry "bytes" of service "old", in the data set itself."""
    with ksds.open(path) as ds:
        for rec in ds.browse():
            i = rec.find(b'"value":"AAAA')
            if i >= 0:
                j = i + len(b'"value":"')
                ds.rewrite(rec[:j] + b"\xff\xfe\x80\xc0" + rec[j + 4 :])
                return
    raise AssertionError("the entry to corrupt is not there")


@pytest.mark.parametrize("layout", ["native", "zowe"])
def test_stored_data_that_is_not_unicode_reads_back(servers: Servers, tmp_path: Path, layout: str) -> None:
    """Data an older version stored (lone surrogates), or bytes written into the data set that are not UTF-8,
    read back (as JSON escapes, or U+FFFD) on every read endpoint, also after a restart; no 500."""
    path = str(tmp_path / f"old-{layout}.ksds")
    st = KsdsStorage(path, layout=layout)
    try:
        if layout == "native":
            keys = _old_version_wrote(st)
            st.create("old", KeyValue("bytes", "AAAA", created="3"))
        else:
            st.create("old", KeyValue("esc", "VVVVVV", created="1"))
            keys = ["esc"]
    finally:
        st.close()
    if layout == "native":
        _corrupt_native_value(path)
    else:  # Zowe's records are IBM-1047 JSON: a lone surrogate's JSON escape written into one
        with ksds.open(path) as ds:
            rec = next(r for r in ds.browse() if "VVVVVV".encode("cp1047") in r)
            ds.rewrite(rec.replace("VVVVVV".encode("cp1047"), "\\ud800".encode("cp1047")))
    args = ["--dataset", path] + (["--layout", "zowe"] if layout == "zowe" else [])
    for attempt in ("first", "restarted"):
        s = servers.start(*args, name=f"{layout}-{attempt}")
        h = {SID: "old"}
        with s.client() as c:
            assert_reads_are_clean(c, h, keys)
            entries = c.get("/cache", headers=h).json()
            if layout == "native":
                assert entries["sur\ud800"]["value"] == "v\udfff"  # sent as "\ud800" escapes, read back exactly
                assert entries["plain"]["value"] == "x\ud800y"
                assert c.get("/cache/plain", headers=h).json()["value"] == "x\ud800y"
                assert entries["bytes"]["value"] == "\ufffd" * 4  # bytes that are not UTF-8: U+FFFD each
                assert c.get("/cache-list/m", headers=h).json() == {"i\udc00": "w\ud800"}
                assert c.get("/cache-list", headers=h).json() == {"m": {"i\udc00": "w\ud800"}}
                if attempt == "restarted":  # and they can be deleted
                    assert c.delete(path_of("plain"), headers=h).status_code == 204
                    assert c.post("/cache", json={"key": "plain", "value": "fresh"}, headers=h).status_code == 201
            else:
                assert entries["esc"]["value"] == "\ud800"
                assert c.get("/cache/esc", headers=h).json()["value"] == "\ud800"
        assert s.stop() == 0


def test_redis_data_written_by_something_else_reads_back(servers: Servers, redis_url: str) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/5"
    r = redis.Redis.from_url(url)
    r.flushdb()
    r.hset("old", b"bytes", b'{"key":"bytes","value":"\xff\xfe","serviceId":"old"}')
    r.hset("old", b"notjson", b"\xff plain text")
    r.hset("old", b"escaped", b'{"key":"escaped","value":"\\ud800","serviceId":"old"}')
    r.hset("old", b"deep", b"[" * 5000)
    r.hset("old", b"\xffkey", b'{"value":"v"}')
    r.close()
    s = servers.start("--storage", "redis", "--redis-url", url, name="redis-old")
    h = {SID: "old"}
    with s.client() as c:
        assert_reads_are_clean(c, h, ["bytes", "notjson", "escaped", "deep"])
        entries = c.get("/cache", headers=h).json()
        assert entries["bytes"]["value"] == "\ufffd\ufffd"
        assert entries["notjson"]["value"] == "\ufffd plain text"
        assert entries["escaped"]["value"] == "\ud800"
        assert entries["\ufffdkey"]["value"] == "v"
        assert c.get("/cache/deep", headers=h).json()["value"] == "[" * 5000
        assert c.delete("/cache/notjson", headers=h).status_code == 204


# --- 6: every value round-trips -----------------------------------------------------------------------------------


def zaas_salt(seed: int) -> str:
    """What ZAAS keeps: 16 random bytes as a Java String (``new String(bytes)``, UTF-8): control characters,
    U+FFFD for every byte that is not UTF-8, and whatever else the bytes spell."""
    import random

    return random.Random(seed).randbytes(16).decode("utf-8", "replace")


VALUES = ["", "\x00", "\x01\x02\x1f\x7f", "\t\n\r\x0b\x0c", " ", "  lead and trail  ", '"\\', "\ufffd",
          "\x00\ufffd\x10\ufffd\x7f", zaas_salt(1), zaas_salt(2), "日本 🙂"]
#: IBM-1047 has no code for these: the zowe layout refuses them (400, as documented) instead of storing "?"
NOT_IN_IBM1047 = {v for v in VALUES if any(c not in "".join(map(chr, range(256))) for c in v)}


def test_every_value_round_trips(server: Server, mode: str) -> None:
    h = {SID: "values"}
    with server.client() as c:
        stored: dict[str, str] = {}
        for i, v in enumerate(VALUES):
            key = f"k{i}"
            r = c.post("/cache", json={"key": key, "value": v}, headers=h)
            if mode == "ksds-zowe" and v in NOT_IN_IBM1047:
                assert r.status_code == 400 and number(r) == "ZWECS130E", v
                continue
            assert r.status_code == 201, (v, r.text)
            stored[key] = v
            assert c.post("/cache-list/m", json={"key": key, "value": v}, headers=h).status_code == 201
        assert len(stored) >= (6 if mode == "ksds-zowe" else len(VALUES))
        for key, v in stored.items():
            got = c.get(path_of(key), headers=h).json()
            assert got["value"] == v and got["key"] == key, (key, v, got)  # the empty value was left out
        listed = c.get("/cache", headers=h).json()
        assert {k: e["value"] for k, e in listed.items()} == stored
        assert c.get("/cache-list/m", headers=h).json() == stored
        # PUT to an empty value, and an empty key
        assert c.put("/cache", json={"key": "k0", "value": "x"}, headers=h).status_code == 204
        assert c.put("/cache", json={"key": "k0", "value": ""}, headers=h).status_code == 204
        assert c.get("/cache/k0", headers=h).json()["value"] == ""
        assert c.post("/cache", json={"key": "", "value": ""}, headers=h).status_code == 201
        got = c.get("/cache", headers=h).json()[""]
        assert (got["key"], got["value"], got["serviceId"]) == ("", "", "values")


def test_keys_with_line_breaks_are_reachable_by_path(server: Server) -> None:
    """Found by the fuzzing: Starlette's catch-all route stopped at a newline, so ``/cache/a%0Ab`` was 404 ZWEAO404
    (no such endpoint) and such a key could not be read, replaced or deleted by its path."""
    h = {SID: "newlines"}
    with server.client() as c:
        for key in ("a\nb", "\n", "a\r\nb", "x\ty\x0bz"):
            assert c.post("/cache", json={"key": key, "value": "v"}, headers=h).status_code == 201
            assert c.get(path_of(key), headers=h).json()["value"] == "v", key
            assert c.put(path_of(key), json={"value": "w"}, headers=h).status_code == 204, key
            assert c.delete(path_of(key), headers=h).status_code == 204, key
            r = c.get(path_of(key), headers=h)
            assert r.status_code == 404 and number(r) == "ZWECS131E", key
        assert c.post("/cache-list/m%0An", json={"key": "k", "value": "v"}, headers=h).status_code == 201
        assert c.get("/cache-list/m%0An", headers=h).json() == {"k": "v"}


@pytest.mark.parametrize("kind", ["memory", "ksds", "ksds-zowe", "redis"])
def test_values_round_trip_in_the_storages(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The storages themselves, reopened where they persist."""

    def make() -> Storage:
        if kind == "memory":
            return memory
        if kind == "redis":
            return RedisStorage(request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/6")
        return KsdsStorage(str(tmp_path / "v.ksds"), layout="zowe" if kind == "ksds-zowe" else "native")

    memory = MemoryStorage()
    st = make()
    if kind == "redis":
        st._r.flushdb()  # type: ignore[attr-defined]
    values = [v for v in VALUES if not (kind == "ksds-zowe" and v in NOT_IN_IBM1047)]
    for i, v in enumerate(values):
        st.create("svc", KeyValue(f"k{i}", v, created=str(i)))
        st.store_map_item("svc", "m", KeyValue(f"k{i}", v))
    st.close()
    st = make()
    try:
        for i, v in enumerate(values):
            assert st.read("svc", f"k{i}") == KeyValue(f"k{i}", v, "svc", str(i))
        assert {k: e.value for k, e in st.read_for_service("svc").items()} == {f"k{i}": v for i, v in enumerate(values)}
        assert st.get_all_map_items("svc", "m") == {f"k{i}": v for i, v in enumerate(values)}
    finally:
        st.close()


# --- 7: a service id cannot reach a DN's partition ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "ksds", "ksds-zowe", "redis"])
def test_a_service_id_cannot_forge_a_certificate_dn(kind: str, pki: Path, servers: Servers,
                                                    request: pytest.FixtureRequest) -> None:
    """``--tls-client-auth optional --no-trust-dn-header``: the holder of client-a's certificate stores entries and
    map items (alone, and with service ``gw``); a client without a certificate that names client-a's DN as its
    service id (``CN=...`` or ``CN=..., SERVICE=gw``) neither sees nor deletes them: in the native layouts it is
    a partition of its own, in the zowe layout (Zowe's partition strings) it is refused with 401 ZWECS800E."""
    tls = ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"), "--tls-ca", str(pki / "ca.pem"),
           "--tls-client-auth", "optional", "--no-trust-dn-header"]
    s = servers.start(*storage_args(kind, servers.workdir, f"forge-{kind}", request, db=7), *tls, name=kind)
    if kind == "redis":
        redis.Redis.from_url(request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/7").flushdb()
    forged = [{SID: f"{CLIENT_A}, SERVICE=gw"}, {SID: CLIENT_A}, {SID: "CN=client-a, OU=Zowe, O=ACME\\, Inc., C=US"}]
    with tls_client(s, pki, "client-a") as victim, tls_client(s, pki, None) as anonymous:
        for h in ({SID: "gw"}, {}):
            assert victim.post("/cache", json={"key": "secret", "value": "v"}, headers=h).status_code == 201
            assert victim.post("/cache-list/tokens", json={"key": "t", "value": "1"}, headers=h).status_code == 201
        assert victim.get("/cache/secret", headers={SID: "gw"}).json()["serviceId"] == f"{CLIENT_A}, SERVICE=gw"
        for h in forged:
            if kind == "ksds-zowe":
                for verb, path in (("get", "/cache"), ("get", "/cache/secret"), ("delete", "/cache"),
                                   ("delete", "/cache/secret"), ("get", "/cache-list"),
                                   ("delete", "/cache-list/evict/tokens/tokens")):
                    r = anonymous.request(verb, path, headers=h)
                    assert r.status_code == 401 and number(r) == "ZWECS800E", (h, verb, path, r.text)
                r = anonymous.post("/cache", json={"key": "secret", "value": "forged"}, headers=h)
                assert r.status_code == 401
                continue
            assert anonymous.get("/cache", headers=h).json() == {}, h
            assert anonymous.get("/cache/secret", headers=h).status_code == 404, h
            assert anonymous.get("/cache-list", headers=h).json() == {}, h
            assert anonymous.delete("/cache/secret", headers=h).status_code == 404, h
            assert anonymous.delete("/cache", headers=h).status_code == 200
            # its own partition: what it writes stays there
            assert anonymous.post("/cache", json={"key": "secret", "value": "forged"}, headers=h).status_code == 201
            assert anonymous.get("/cache/secret", headers=h).json()["value"] == "forged"
            assert anonymous.delete("/cache", headers=h).status_code == 200
        for h in ({SID: "gw"}, {}):  # the certificate holder's entries are untouched
            assert victim.get("/cache/secret", headers=h).json()["value"] == "v", h
            assert victim.get("/cache-list", headers=h).json() == {"tokens": {"t": "1"}}, h
        # the DN header without the certificate is refused (the operator does not trust it), as before
        assert anonymous.get("/cache", headers={DN: CLIENT_A}).status_code == 401
        # a plain service id still works without a certificate
        assert anonymous.post("/cache", json={"key": "k", "value": "v"}, headers={SID: "gw"}).status_code == 201
        assert anonymous.get("/cache/k", headers={SID: "gw"}).json()["serviceId"] == "gw"
        assert victim.get("/cache/k", headers={SID: "gw"}).status_code == 404


@pytest.mark.parametrize("kind", ["memory", "ksds", "redis"])
def test_identities_are_structured_in_the_native_storages(kind: str, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    """(DN, service id) pairs are partitions of their own, also when Zowe's strings of them are equal."""
    from ksds.caching.model import Identity

    st: Storage
    if kind == "memory":
        st = MemoryStorage()
    elif kind == "redis":
        st = RedisStorage(request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/8")
        st._r.flushdb()  # type: ignore[attr-defined]
    else:
        st = KsdsStorage(str(tmp_path / "ids.ksds"))
    callers: list[str] = [
        Identity("CN=x", "gw"), Identity(None, "CN=x, SERVICE=gw"), Identity("CN=x", None), Identity(None, "CN=x"),
        Identity("CN=x, SERVICE=gw", None), Identity("CN=x", ""), "\0ksds:order", "\0D4:CN=x", "\0\0D4:CN=x",
    ]
    if kind == "redis":
        # Redis keeps Zowe's hash names: two proven DNs with the same Zowe string share a hash there, as in Zowe
        # (a DN that spells "<DN>, SERVICE=<id>" comes only from a certificate or a trusted DN header)
        callers = [c for c in callers if repr(c) not in (repr(Identity("CN=x, SERVICE=gw", None)),
                                                         repr(Identity("CN=x", "")))]
    try:
        for i, who in enumerate(callers):
            st.create(who, KeyValue("k", f"v{i}"))
            st.store_map_item(who, "m", KeyValue("i", f"v{i}"))
        for i, who in enumerate(callers):
            assert st.read(who, "k").value == f"v{i}", repr(who)
            assert st.read(who, "k").service_id == str(who)
            assert set(st.read_for_service(who)) == {"k"}
            assert st.get_all_maps(who) == {"m": {"i": f"v{i}"}}
        assert st.read("CN=x", "k").value == "v3"  # a plain str is a service id alone
        assert st.count() == len(callers)
        st.delete_for_service(Identity(None, "CN=x, SERVICE=gw"))
        assert st.read(Identity("CN=x", "gw"), "k").value == "v0"
        assert st.count() == len(callers) - 1
    except StorageError as e:
        raise AssertionError(e) from None
    finally:
        st.close()


# --- 8: SIGTERM stops the server within seconds ---------------------------------------------------------------------


def _stop_within(s: Server, seconds: float) -> float:
    start = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    try:
        status = s.proc.wait(seconds)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {seconds} s after SIGTERM") from None
    took = time.monotonic() - start
    assert status == 0, s.logs()
    assert "stopped" in s.out.read_text()
    return took


def _closed_cleanly(path: Path) -> None:
    assert not os.path.exists(f"{path}-wal"), "the log is still there"
    with ksds.open(str(path)) as ds:
        assert ds.recovery is None, ds.recovery  # nothing to recover: it was closed cleanly
        assert ds.get(b"\0C".ljust(ds.definition.key_length, b"\0")) is not None


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_sigterm_with_an_idle_keep_alive_connection(servers: Servers, tmp_path: Path, pki: Path, scheme: str) -> None:
    ds = tmp_path / "keepalive.ksds"
    tls = ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")] if scheme == "https" else []
    s = servers.start("--dataset", str(ds), *tls, name=f"keepalive-{scheme}")
    client = tls_client(s, pki, None) if scheme == "https" else s.client()
    with client:
        assert client.post("/cache", json={"key": "k", "value": "v"}, headers={SID: "s"}).status_code == 201
        assert client.get("/cache/k", headers={SID: "s"}).status_code == 200  # the same connection, kept alive
        took = _stop_within(s, 8)  # the client holds the connection idle, and never answers a TLS close_notify
    assert took < 5, took
    _closed_cleanly(ds)


def test_sigterm_with_a_request_that_never_ends(servers: Servers, tmp_path: Path, pki: Path) -> None:
    """A client sends a request's headers and half its body, then nothing: the server still stops in seconds."""
    ds = tmp_path / "stuck.ksds"
    s = servers.start("--dataset", str(ds), "--tls-cert", str(pki / "server.pem"), "--tls-key",
                      str(pki / "server.key"), name="stuck")
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    raw = socket.create_connection(("127.0.0.1", s.port))
    idle = socket.create_connection(("127.0.0.1", s.port))  # and one that never even does the TLS handshake
    with raw, idle, ctx.wrap_socket(raw, server_hostname="127.0.0.1") as t:
        t.sendall(b"POST /cachingservice/api/v1/cache HTTP/1.1\r\nHost: x\r\nX-CS-Service-ID: s\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"key\": \"k\",")
        time.sleep(0.3)
        took = _stop_within(s, 12)
        assert idle.fileno() >= 0
    assert took < 9, took
    _closed_cleanly(ds)


# --- 11: ksds serve without the service extra ---------------------------------------------------------------------

_BLOCKING = textwrap.dedent("""
    import runpy, sys
    from importlib.abc import MetaPathFinder

    BLOCKED = set(sys.argv[1].split(","))

    class Block(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    for name in list(sys.modules):
        if name.partition(".")[0] in BLOCKED:
            del sys.modules[name]
    sys.meta_path.insert(0, Block())
    sys.argv = ["ksds", *sys.argv[2:]]
    runpy.run_module("ksds", run_name="__main__")
""")


@pytest.mark.parametrize("blocked,args,extra", [
    ("uvicorn,starlette", ["--storage", "memory"], "service"),
    ("starlette", ["--storage", "memory"], "service"),
    ("uvicorn", ["--dataset", "never.ksds"], "service"),
    ("redis", ["--storage", "redis", "--redis-url", "redis://127.0.0.1:1/0"], "redis"),
])
def test_serve_without_the_extra_says_what_to_install(tmp_path: Path, blocked: str, args: list[str],
                                                      extra: str) -> None:
    r = subprocess.run([sys.executable, "-c", _BLOCKING, blocked, "serve", "--port", "0", *args], capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 12, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"pip install 'ksds[{extra}]'" in lines[0] and lines[0].startswith("ksds serve: "), lines
    assert r.stdout == ""
    assert not (tmp_path / "never.ksds").exists()  # nothing was done
    # the rest of the command works without the extras
    r = subprocess.run([sys.executable, "-c", _BLOCKING, blocked, "define", "x.ksds", "--keys", "8", "0",
                        "--recordsize", "80"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_json_of_every_response_is_utf8() -> None:
    """The fallback for text UTF-8 cannot hold is JSON's escapes (ASCII), and valid JSON."""
    from ksds.caching.service import json_response

    body = bytes(json_response(200, {"k\ud800": "v\udfff"}).body)
    assert body == b'{"k\\ud800":"v\\udfff"}' and json.loads(body) == {"k\ud800": "v\udfff"}
    assert bytes(json_response(200, {"k": "é"}).body) == '{"k":"é"}'.encode()
