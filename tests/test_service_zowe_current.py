"""The caching service as current Zowe (3.6) speaks it: ``POST /cache-query``, ``ttlSeconds``, 503 ZWECS703W when
the storage is not available, and Zowe's message texts, order and escaping.

Through real ``ksds serve`` processes on 127.0.0.1, one per storage mode (memory, ksds, ksds with the zowe layout,
redis on a real redis-server), and at the storage level with an injected clock (no long sleeps).
Zowe's semantics read from zowe/api-layer: ``CachingController`` (``checkQueryPayload``), ``InfinispanStorage``
(``getMapItems``, ``resolveTtlSeconds``), ``PatRevocationStore`` (66 keys), ``Messages`` and
``caching-log-messages.yml``, and Zowe's published message catalogue (ZWECS703W, ZWEAO404E, ZWEAO405E).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis as redis_lib
from servers import Server, Servers, free_port, redis_server

from ksds.caching.ksds_storage import KsdsStorage
from ksds.caching.memory import MemoryStorage
from ksds.caching.model import KeyValue, Storage, StorageError
from ksds.caching.redis_storage import RedisStorage

DN = "X-Certificate-DistinguishedName"
MODES = ("memory", "ksds", "ksds-zowe", "redis")
DAY_MS = 24 * 3600 * 1000


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(scope="module")
def module_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    s = Servers(tmp_path_factory.mktemp("zowe-current"))
    yield s
    s.stop_all()


@pytest.fixture(scope="module", params=MODES)
def server(request: pytest.FixtureRequest, module_servers: Servers) -> Server:
    mode = str(request.param)
    if mode == "memory":
        args = ["--storage", "memory"]
    elif mode.startswith("ksds"):
        args = ["--dataset", str(module_servers.workdir / f"{mode}.ksds")]
        if mode == "ksds-zowe":
            args += ["--layout", "zowe"]
    else:
        args = ["--storage", "redis", "--redis-url", request.getfixturevalue("redis_url")]
    return module_servers.start(*args, name=mode)


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def caller() -> dict[str, str]:
    return {DN: f"CN=current-{uuid.uuid4().hex[:10]},O=ACME"}


def message(r: httpx.Response) -> dict[str, str]:
    assert r.headers["content-type"] == "application/json", r.headers
    body = r.json()
    assert list(body) == ["messages"] and len(body["messages"]) == 1, body
    m: dict[str, str] = body["messages"][0]
    return m


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- 1. POST /cache-query ----------------------------------------------------------------------------------------


def test_cache_query(client: httpx.Client) -> None:
    a, b = caller(), caller()
    for m, k, v in (("invalidTokens", "t1", "x1"), ("invalidTokens", "t2", "x2"), ("invalidUsers", "u1", str(now_ms())),
                    ("other", "k", "v")):
        assert client.post(f"/cache-list/{m}", json={"key": k, "value": v}, headers=a).status_code == 201
    assert client.post("/cache-list/invalidTokens", json={"key": "t1", "value": "b's"}, headers=b).status_code == 201
    q = {"invalidTokens": ["t1", "missing", None, "t2"], "invalidUsers": ["nobody"], "none": ["x"], "empty": None}
    r = client.post("/cache-query", json=q, headers=a)
    assert (r.status_code, r.headers["content-type"]) == (200, "application/json")
    assert r.json() == {"invalidTokens": {"t1": "x1", "t2": "x2"}}  # only what exists; maps with none left out
    assert client.post("/cache-query/", json={"invalidTokens": ["t1"]}, headers=b).json() == {
        "invalidTokens": {"t1": "b's"}}
    assert client.post("/cache-query", json={}, headers=a).json() == {}  # ZAAS's probe
    assert client.post("/cache-query", json={"other": ["k"], "invalidUsers": ["u1"]}, headers=a).json() == {
        "other": {"k": "v"}, "invalidUsers": {"u1": client.get("/cache-list/invalidUsers", headers=a).json()["u1"]}}
    # 66 keys in all pass, 67 do not (Zowe's caching.storage.maxQueryKeys: 64 scopes + 2); nulls count
    ok = {"invalidTokens": [f"h{i}" for i in range(60)], "invalidScopes": [None] * 6}
    assert client.post("/cache-query", json=ok, headers=a).status_code == 200
    r = client.post("/cache-query", json={**ok, "invalidUsers": ["one more"]}, headers=a)
    m = message(r)
    assert r.status_code == 400 and (m["messageNumber"], m["messageKey"]) == (
        "ZWECS130E", "org.zowe.apiml.cache.invalidPayload")
    assert m["messageContent"] == "Payload '67' is not valid: 'Too many keys requested at once, the limit is 66'."
    for body in (b"", b"null"):
        r = client.post("/cache-query", content=body, headers=a)
        assert r.status_code == 400, body
        assert message(r)["messageContent"] == "Payload 'null' is not valid: 'No map keys provided in the payload'."
    for body in (b"[1]", b'{"m": "k"}', b'{"m": [{"a": 1}]}', b"{bad", b'{"m": ["\\ud800"]}'):
        r = client.post("/cache-query", content=body, headers=a)
        assert r.status_code == 400 and message(r)["messageNumber"] == "ZWECS130E", body
    assert client.post("/cache-query", json={"m": [1, True]}, headers=a).json() == {}  # numbers are keys' text
    r = client.post("/cache-query", json={})
    assert r.status_code == 401 and message(r)["messageNumber"] == "ZWECS702W"
    r = client.get("/cache-query", headers=a)
    assert r.status_code == 405 and message(r)["messageNumber"] == "ZWEAO405E" and r.headers["allow"] == "POST"


def test_cache_query_in_the_api_document(server: Server) -> None:
    doc = httpx.get(server.base + "/cachingservice/v3/api-docs", timeout=10).json()
    op = doc["paths"]["/cachingservice/api/v1/cache-query"]["post"]
    assert {"200", "400", "401", "503"} <= set(op["responses"])
    assert "ttlSeconds" in doc["components"]["schemas"]["KeyValue"]["properties"]


# --- 2. ttlSeconds -------------------------------------------------------------------------------------------------


def test_ttl_seconds_through_the_api(client: httpx.Client) -> None:
    h = caller()

    def post(m: str, key: str, value: str, **extra: object) -> int:
        return client.post(f"/cache-list/{m}", json={"key": key, "value": value, **extra}, headers=h).status_code

    # zero or negative removes the item instead of storing it (still 201)
    assert post("m", "gone", "v") == 201 and post("m", "gone", "v", ttlSeconds=0) == 201
    assert post("m", "never", "v", ttlSeconds=-5) == 201
    # Zowe's defaults: an invalidated token until its expiresAt, a rule until its time + 90 days
    past = json.dumps({"expiresAt": (datetime.now() - timedelta(minutes=1)).isoformat()})
    assert post("invalidTokens", "expired-token", past) == 201
    assert post("invalidUsers", "old-rule", str(now_ms() - 91 * DAY_MS)) == 201
    assert post("invalidScopes", "recent-rule", str(now_ms() - 89 * DAY_MS)) == 201
    soon = json.dumps({"expiresAt": (datetime.now() + timedelta(seconds=1.2)).isoformat()})
    assert post("invalidTokens", "token", soon) == 201
    assert post("m", "short", "v", ttlSeconds=1) == 201 and post("m", "capped", "v", ttlSeconds=10**12) == 201
    assert post("m", "string-ttl", "v", ttlSeconds="1") == 201 and post("m", "kept", "v") == 201
    for bad in ("abc", True, [1], {"a": 1}, 1e30, "1.5"):
        r = client.post("/cache-list/m", json={"key": "bad", "value": "v", "ttlSeconds": bad}, headers=h)
        assert r.status_code == 400 and message(r)["messageNumber"] == "ZWECS130E", bad
    # entries take ttlSeconds too (ksds), zero removes on PUT
    assert client.post("/cache", json={"key": "e1", "value": "v", "ttlSeconds": 1}, headers=h).status_code == 201
    assert client.post("/cache", json={"key": "e2", "value": "v"}, headers=h).status_code == 201
    assert client.post("/cache", json={"key": "e3", "value": "v", "ttlSeconds": 0}, headers=h).status_code == 201
    assert client.post("/cache", json={"key": "e4", "value": "v"}, headers=h).status_code == 201
    assert client.put("/cache", json={"key": "e4", "value": "v", "ttlSeconds": -1}, headers=h).status_code == 204

    every = client.get("/cache-list", headers=h).json()
    assert set(every) == {"m", "invalidTokens", "invalidScopes"}
    assert set(every["m"]) == {"short", "capped", "string-ttl", "kept"}
    assert set(every["invalidTokens"]) == {"token"} and set(every["invalidScopes"]) == {"recent-rule"}
    assert set(client.get("/cache", headers=h).json()) == {"e1", "e2"}
    assert client.get("/cache/e1", headers=h).json()["value"] == "v"
    assert "ttlSeconds" not in client.get("/cache/e1", headers=h).json()

    time.sleep(1.3)  # the 1-second items and entries expire: never answered again, by any endpoint
    assert client.get("/cache-list", headers=h).json() == {
        "m": {"capped": "v", "kept": "v"}, "invalidScopes": {"recent-rule": every["invalidScopes"]["recent-rule"]}}
    assert client.get("/cache-list/m", headers=h).json() == {"capped": "v", "kept": "v"}
    assert client.get("/cache-list/invalidTokens", headers=h).json() == {}
    q = {"m": ["short", "string-ttl", "kept"], "invalidTokens": ["token"]}
    assert client.post("/cache-query", json=q, headers=h).json() == {"m": {"kept": "v"}}
    assert client.get("/cache/e1", headers=h).status_code == 404
    assert set(client.get("/cache", headers=h).json()) == {"e2"}
    assert client.post("/cache", json={"key": "e1", "value": "again"}, headers=h).status_code == 201  # gone: no 409
    assert client.get("/cache/e1", headers=h).json()["value"] == "again"


# --- 4. messages ------------------------------------------------------------------------------------------------


def test_messages_as_zowe_writes_them(client: httpx.Client, server: Server) -> None:
    r = client.get("/cache")
    assert r.status_code == 401
    assert r.json() == {"messages": [{
        "messageType": "WARNING", "messageNumber": "ZWECS702W", "messageContent": "Missing header with certificate.",
        "messageAction": "Verify ssl context in client application.",
        "messageReason": "Call executed without valid client certificate.",
        "messageKey": "org.zowe.apiml.cache.missingCertificate"}]}
    assert list(r.json()["messages"][0]) == [  # Jackson's order of ApiMessage's fields
        "messageType", "messageNumber", "messageContent", "messageAction", "messageReason", "messageKey"]
    h = {DN: "CN=<&>\"'"}
    r = client.get("/cache/k%C3%A9y%CE%A9", headers=h)
    m = message(r)
    assert r.status_code == 404 and m["messageReason"] == "Cache does not contain the provided key."
    # the whole text escaped as commons-text escapeHtml4 does: Latin-1 and HTML 4 entities, not ' nor Cyrillic
    assert m["messageContent"] == (
        "Key 'k&eacute;y&Omega;' is not in the cache for service 'CN=&lt;&amp;&gt;&quot;''")
    r = client.get("/cache/ключ", headers={DN: "CN=x"})
    assert message(r)["messageContent"] == "Key 'ключ' is not in the cache for service 'CN=x'"
    r = client.post("/cache", content=b"{", headers=h)
    assert message(r)["messageAction"] == "Provide a payload in JSON format."
    r = httpx.get(server.base + "/cachingservice/nothing", timeout=10)
    assert r.status_code == 404 and r.json() == {"messages": [{
        "messageType": "ERROR", "messageNumber": "ZWEAO404E",
        "messageContent": "The service cannot find the requested resource.",
        "messageAction": "Verify that the request URI is correct and that the target service exposes the requested "
                         "endpoint.",
        "messageReason": "The requested resource URI was not found on the target service.",
        "messageKey": "org.zowe.apiml.common.notFound"}]}
    r = client.patch("/cache", headers=h)
    m = message(r)
    assert r.status_code == 405 and m["messageNumber"] == "ZWEAO405E" and m["messageType"] == "ERROR"
    assert m["messageContent"] == "The request method has been disabled and cannot be used for the requested resource."


# --- 3. 503 when the storage is not available ------------------------------------------------------------------------

ENDPOINTS = [("get", "/cache"), ("delete", "/cache"), ("post", "/cache"), ("put", "/cache"), ("get", "/cache/k"),
             ("delete", "/cache/k"), ("get", "/cache-list"), ("get", "/cache-list/m"), ("post", "/cache-list/m"),
             ("post", "/cache-query"), ("delete", "/cache-list/evict/rules/m"),
             ("delete", "/cache-list/evict/tokens/m")]


def assert_every_endpoint_503(c: httpx.Client, why: str) -> None:
    for verb, path in ENDPOINTS:
        body = {"m": ["k"]} if path == "/cache-query" else {"key": "k", "value": "v"}
        r = c.request(verb, path, json=body, headers={DN: "CN=x"})
        assert r.status_code == 503, (verb, path, r.text)
        m = message(r)
        assert (m["messageType"], m["messageNumber"], m["messageKey"]) == (
            "WARNING", "ZWECS703W", "org.zowe.apiml.cache.notAvailable"), (verb, path)
        assert m["messageContent"].startswith("Cache is not available: ") and why in m["messageContent"], m
        assert m["messageReason"] == "Cache is not ready to write at the moment."
        assert m["messageAction"] == ("Wait till initialization of cache is done. In case it is done verify the "
                                      "instance configuration or connectivity between multiple instances.")


def test_503_when_redis_is_down(tmp_path: Path) -> None:
    servers = Servers(tmp_path)
    try:
        nothing = servers.start("--storage", "redis", "--redis-url", f"redis://127.0.0.1:{free_port()}/0",
                                name="no-redis")
        with nothing.client() as c:
            assert_every_endpoint_503(c, "Redis: ConnectionError")
        r = httpx.get(nothing.base + "/cachingservice/application/health", timeout=10)
        assert r.status_code == 503 and r.json()["status"] == "DOWN"
        with redis_server() as url:  # a Redis that goes away while the server runs
            s = servers.start("--storage", "redis", "--redis-url", url, name="redis-goes")
            with s.client() as c:
                assert c.post("/cache", json={"key": "k", "value": "v"}, headers={DN: "CN=x"}).status_code == 201
        with s.client() as c:
            assert_every_endpoint_503(c, "Redis: ConnectionError")
    finally:
        servers.stop_all()


def test_503_when_the_data_set_cannot_be_opened(tmp_path: Path) -> None:
    ds = tmp_path / "broken.ksds"
    ds.write_bytes(b"not a data set" * 1000)
    servers = Servers(tmp_path)
    try:
        s = servers.start("--dataset", str(ds), name="broken")  # starts all the same, and says 503 until it opens
        with s.client() as c:
            assert_every_endpoint_503(c, "NotADatasetError")
            os.unlink(ds)  # repaired: a new data set is defined on the next try (at most one a second)
            time.sleep(1.1)
            deadline = time.monotonic() + 10
            while (r := c.get("/cache", headers={DN: "CN=x"})).status_code == 503 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert (r.status_code, r.json()) == (200, {})
            assert c.post("/cache", json={"key": "k", "value": "v"}, headers={DN: "CN=x"}).status_code == 201
    finally:
        servers.stop_all()


# --- storage level: expiry with an injected clock ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=MODES)
def clocked(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Storage, Clock]]:
    clock = Clock()
    mode = str(request.param)
    s: Storage
    if mode == "memory":
        s = MemoryStorage(clock=clock)
    elif mode.startswith("ksds"):
        s = KsdsStorage(tmp_path / "c.ksds", layout="zowe" if mode == "ksds-zowe" else "native", clock=clock)
    else:
        url = request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/5"
        redis_lib.Redis.from_url(url).flushdb()
        s = RedisStorage(url, clock=clock)
    yield s, clock
    s.close()


def test_expiry_with_a_clock(clocked: tuple[Storage, Clock]) -> None:
    s, clock = clocked
    s.create("svc", KeyValue("short", "v", ttl_seconds=10))
    s.create("svc", KeyValue("long", "v", ttl_seconds=100))
    s.create("svc", KeyValue("forever", "v"))
    s.store_map_item("svc", "m", KeyValue("i-short", "v", ttl_seconds=10))
    s.store_map_item("svc", "m", KeyValue("i-forever", "v"))
    token = json.dumps({"expiresAt": datetime.fromtimestamp(clock.t + 50).isoformat()})
    s.store_map_item("svc", "invalidTokens", KeyValue("tok", token))
    s.store_map_item("svc", "invalidUsers", KeyValue("rule", str(int(clock.t * 1000) - 90 * DAY_MS + 30_000)))
    assert s.count() == 3
    clock.t += 10.001
    with pytest.raises(StorageError) as e:
        s.read("svc", "short")
    assert e.value.status == 404
    assert set(s.read_for_service("svc")) == {"long", "forever"}
    assert s.get_all_map_items("svc", "m") == {"i-forever": "v"}
    assert s.get_map_items("svc", {"m": ["i-short", "i-forever"], "invalidUsers": ["rule"]}) == {
        "m": {"i-forever": "v"}, "invalidUsers": {"rule": s.get_all_map_items("svc", "invalidUsers")["rule"]}}
    s.create("svc", KeyValue("short", "new"))  # the expired one is gone (removed by this change): no 409
    assert s.count() == 3
    clock.t += 40  # the rule (its time + 90 days) and the token (its expiresAt) expire
    assert s.get_all_maps("svc") == {"m": {"i-forever": "v"}}
    s.update("svc", KeyValue("forever", "v2", ttl_seconds=5))  # an update sets a new expiry
    s.update("svc", KeyValue("long", "v2"))  # ... or none
    clock.t += 100
    s.store_map_item("svc", "m", KeyValue("x", "y"))
    assert set(s.read_for_service("svc")) == {"short", "long"}
    assert s.count() == 2
    if isinstance(s, KsdsStorage):  # the expired entries were removed through the expiry index, all of it
        audit = s.audit()
        assert audit["entries"] == audit["counter"] == audit["time_index"] == 2
        assert audit.get("expiry_index", 0) == 0
        s.rebuild()
        assert s.count() == 2


def test_expiry_caps_and_removals(clocked: tuple[Storage, Clock]) -> None:
    s, clock = clocked
    s.store_map_item("svc", "m", KeyValue("k", "v"))
    s.store_map_item("svc", "m", KeyValue("k", "v", ttl_seconds=0))
    assert s.get_all_maps("svc") == {}
    s.store_map_item("svc", "m", KeyValue("capped", "v", ttl_seconds=10**15))
    s.create("svc", KeyValue("capped", "v", ttl_seconds=10**15))
    s.create("svc", KeyValue("nothing", "v", ttl_seconds=-1))
    assert set(s.read_for_service("svc")) == {"capped"}
    clock.t += 90 * 24 * 3600 - 1
    assert s.get_map_items("svc", {"m": ["capped"]}) == {"m": {"capped": "v"}}
    clock.t += 1  # 90 days at most
    assert s.get_map_items("svc", {"m": ["capped"]}) == {} and s.read_for_service("svc") == {}


def test_ksds_expiry_survives_reopen(tmp_path: Path) -> None:
    clock = Clock()
    for layout in ("native", "zowe"):
        path = tmp_path / f"{layout}.ksds"
        s = KsdsStorage(path, layout=layout, clock=clock)
        s.create("svc", KeyValue("e", "v", ttl_seconds=10))
        s.store_map_item("svc", "m", KeyValue("i", "v", ttl_seconds=10))
        s.close()
        s = KsdsStorage(path, layout=layout, clock=clock)
        s.rebuild()  # a rebuild keeps the expiries (zowe: they are only in the slot records)
        assert s.read("svc", "e").value == "v"
        clock.t += 11
        assert s.read_for_service("svc") == {} and s.get_all_maps("svc") == {}
        s.delete_for_service("svc")  # removes the expired entry (a change of entries)
        s.remove_non_relevant_rules("svc", "m")  # and the expired item (a change of map items)
        audit = s.audit()
        assert s.count() == 0 and "expiry_index" not in audit and audit["map_items"] == 0
        s.close()
        clock.t -= 11


def test_ksds_unavailable_is_503(tmp_path: Path) -> None:
    path = tmp_path / "x.ksds"
    path.write_bytes(b"garbage" * 500)
    s = KsdsStorage(path, lazy_open=True)
    calls: list[Callable[[], object]] = [lambda: s.read("svc", "k"), lambda: s.count(),
                                         lambda: s.get_map_items("svc", {"m": ["k"]})]
    for fn in calls:
        with pytest.raises(StorageError) as e:
            fn()
        assert (e.value.status, e.value.message.number) == (503, "ZWECS703W")
    s.close()
    with pytest.raises(Exception):  # noqa: B017 - without lazy_open, the constructor says so
        KsdsStorage(path)


# --- found by review: odd expiry values, a poisoned token, an expired key created again -------------------------------


def test_odd_expiry_values_are_never_a_500(client: httpx.Client) -> None:
    who = caller()
    for value in (
        {"expiresAt": 10**400},
        {"expiresAt": -(10**400)},
        {"expiresAt": [1, 1, 1, 0, 0, 0, 0]},
        {"expiresAt": "0001-01-01T00:00:00"},
        {"expiresAt": [9999, 12, 31, 23, 59, 59, 0]},
    ):
        for map_key in ("invalidTokens", "tok"):
            r = client.post(f"/cache-list/{map_key}", json={"key": uuid.uuid4().hex, "value": json.dumps(value)},
                            headers=who)
            assert r.status_code == 201, (value, r.status_code, r.text)
        assert client.delete("/cache-list/evict/tokens/tok", headers=who).status_code < 500
    # a token that expired long ago is expired, not kept for 90 days
    items = client.get("/cache-list/invalidTokens", headers=who).json()
    assert all(json.loads(v)["expiresAt"] not in ("0001-01-01T00:00:00", -(10**400)) for v in items.values())


def test_a_poisoned_token_does_not_break_eviction(client: httpx.Client) -> None:
    who = caller()
    r = client.post("/cache-list/invalidTokens", json={"key": "deep", "value": "[" * 1500 + "]" * 1500}, headers=who)
    assert r.status_code == 201
    for _ in range(3):
        assert client.delete("/cache-list/evict/tokens/invalidTokens", headers=who).status_code == 204


def test_an_expired_key_can_be_created_again_at_once(clocked: tuple[Storage, Clock]) -> None:
    """More expired entries than one purge takes: a create of one of them is not a 409 (it is gone)."""
    s, clock = clocked
    for n in range(1200):
        s.create("svc", KeyValue(f"k{n}", "v", ttl_seconds=5))
        clock.t += 0.001  # each expires after the one before: k1199 is the last a purge would reach
    clock.t += 6
    s.create("svc", KeyValue("k1199", "again"))  # no DuplicateKey: the entry expired
    assert s.read("svc", "k1199").value == "again"
    assert s.count() == 1


def test_a_data_set_removed_under_a_running_storage(tmp_path: Path) -> None:
    """Removed by hand while open: the storage notices at the next call and opens what is at the path now (defining
    it if missing, as at start), instead of acknowledging writes into the removed file."""
    path = tmp_path / "gone.ksds"
    s = KsdsStorage(path)
    try:
        s.create("svc", KeyValue("before", "v"))
        for p in tmp_path.iterdir():
            if p.name.startswith("gone.ksds"):
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        s.create("svc", KeyValue("after", "v"))
        s2 = KsdsStorage(path)  # another server on the same path sees what this one acknowledged
        try:
            assert s2.read("svc", "after").value == "v"
        finally:
            s2.close()
    finally:
        s.close()
