"""The caching service's REST API, through real ``ksds serve`` processes: one contract, three storage modes.

Every test talks HTTP (httpx) to ``python -m ksds serve`` started on 127.0.0.1 (port 0: the server prints the
port it got). The contract (Zowe's status codes, bodies and messages; payload checks; callers and their
isolation; size limits; list maps; concurrency) runs against the memory, ksds and redis storage modes, the last
on a real redis-server. Then: two servers on one ksds data set (HA, SIGKILL of one), clean shutdown, and TLS with
client certificates generated here (the certificate's DN is the caller; a header naming another DN is 401).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from servers import API, Server, Servers, make_pki, redis_server, tls_client

from ksds.caching.tls import SubjectAttribute, java_dn, parse_dn, same_dn, subject_of

MODES = ("memory", "ksds", "redis")
DN = "X-Certificate-DistinguishedName"
SID = "X-CS-Service-ID"


# --- servers ------------------------------------------------------------------------------------------------------


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


def storage_args(mode: str, request: pytest.FixtureRequest, workdir: Path, name: str, db: int) -> list[str]:
    if mode == "memory":
        return ["--storage", "memory"]
    if mode == "ksds":
        return ["--storage", "ksds", "--dataset", str(workdir / f"{name}.ksds")]
    url: str = request.getfixturevalue("redis_url")
    return ["--storage", "redis", "--redis-url", url.rsplit("/", 1)[0] + f"/{db}"]


@pytest.fixture(scope="module", params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def server(mode: str, module_servers: Servers, request: pytest.FixtureRequest) -> Server:
    """The contract's server of this storage mode (default size 10000, reject)."""
    return module_servers.start(*storage_args(mode, request, module_servers.workdir, f"{mode}-main", 0),
                                name=f"{mode}-main")


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def caller(prefix: str = "CN=") -> str:
    """A DN of its own for each test (the contract's servers are shared by the tests of a mode)."""
    return f"{prefix}test-{uuid.uuid4().hex[:12]},OU=ksds,O=ACME"


def as_dn(dn: str) -> dict[str, str]:
    return {DN: dn}


def message(r: httpx.Response) -> dict[str, str]:
    assert r.headers["content-type"] == "application/json", r.headers
    body = r.json()
    assert list(body) == ["messages"] and len(body["messages"]) == 1, body
    m: dict[str, str] = body["messages"][0]
    assert set(m) <= {"messageType", "messageNumber", "messageContent", "messageReason", "messageAction",
                      "messageKey"}
    return m


def path_of(key: str) -> str:
    return "/cache/" + quote(key, safe="")


# --- the contract: every storage mode ----------------------------------------------------------------------------


def test_crud_status_codes_and_bodies(client: httpx.Client) -> None:
    h = as_dn(caller())
    r = client.post("/cache", json={"key": "k1", "value": "v1"}, headers=h)
    assert (r.status_code, r.content) == (201, b"")
    r = client.post("/cache", json={"key": "k1", "value": "other"}, headers=h)
    m = message(r)
    assert r.status_code == 409
    assert (m["messageNumber"], m["messageKey"], m["messageType"]) == (
        "ZWECS133E", "org.zowe.apiml.cache.keyCollision", "ERROR")
    assert m["messageContent"] == "Adding key 'k1' resulted in a collision in the cache."

    r = client.get("/cache/k1", headers=h)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == ["key", "value", "serviceId", "created"]  # Jackson's field order
    assert (body["key"], body["value"], body["serviceId"]) == ("k1", "v1", h[DN])
    assert re.fullmatch(r"[0-9]{13}", body["created"]) and abs(int(body["created"]) - time.time() * 1000) < 60_000

    r = client.put("/cache", json={"key": "k1", "value": "v2", "created": "1234"}, headers=h)
    assert (r.status_code, r.content) == (204, b"")
    assert client.get("/cache/k1", headers=h).json() == {"key": "k1", "value": "v2", "serviceId": h[DN],
                                                         "created": "1234"}
    r = client.put("/cache", json={"key": "nope", "value": "v"}, headers=h)
    m = message(r)
    assert r.status_code == 404 and m["messageNumber"] == "ZWECS131E"
    assert m["messageContent"] == f"Key 'nope' is not in the cache for service '{h[DN]}'"

    assert client.post("/cache", json={"key": "k2", "value": "v3"}, headers=h).status_code == 201
    r = client.get("/cache", headers=h)
    assert r.status_code == 200
    assert {k: v["value"] for k, v in r.json().items()} == {"k1": "v2", "k2": "v3"}
    assert r.json()["k2"]["key"] == "k2"

    r = client.delete("/cache/k1", headers=h)
    assert (r.status_code, r.content) == (204, b"")  # a 204 has no body on the wire
    r = client.get("/cache/k1", headers=h)
    assert r.status_code == 404 and message(r)["messageKey"] == "org.zowe.apiml.cache.keyNotInCache"
    r = client.delete("/cache/k1", headers=h)
    assert r.status_code == 404 and message(r)["messageNumber"] == "ZWECS131E"

    r = client.delete("/cache", headers=h)
    assert (r.status_code, r.content) == (200, b"")
    r = client.get("/cache", headers=h)
    assert (r.status_code, r.json()) == (200, {})
    assert client.get("/cache/k2", headers=h).status_code == 404


def test_payload_validation(client: httpx.Client) -> None:
    h = as_dn(caller())
    r = client.post("/cache", json={"key": "k", "value": None}, headers=h)
    m = message(r)
    assert r.status_code == 400 and (m["messageNumber"], m["messageKey"]) == (
        "ZWECS130E", "org.zowe.apiml.cache.invalidPayload")
    assert m["messageContent"].startswith("Payload 'KeyValue(key=k, value=null, serviceId=, created=")
    assert m["messageContent"].endswith("' is not valid: 'No value provided in the payload'.")
    r = client.post("/cache", json={"key": None, "value": "v"}, headers=h)
    assert r.status_code == 400
    assert message(r)["messageContent"].endswith("' is not valid: 'No key provided in the payload'.")
    for body in (b"", b"null", b"  \n"):
        r = client.post("/cache", content=body, headers={**h, "Content-Type": "application/json"})
        assert r.status_code == 400, body
        assert message(r)["messageContent"] == "Payload 'null' is not valid: 'No KeyValue provided in the payload'."
    for body in (b"{bad json", b"[1, 2]", b'"text"', b'{"key": "k", "value": {"a": 1}}', b"\xff\xfe",
                 b'{"key": "k", "value": NaN}'):
        r = client.post("/cache", content=body, headers=h)
        assert r.status_code == 400 and message(r)["messageNumber"] == "ZWECS130E", body
    for verb in ("put", "post"):
        r = client.request(verb, "/cache", json={"value": None}, headers=h)
        assert r.status_code == 400, verb
    r = client.post("/cache-list/m", json={"key": None, "value": "v"}, headers=h)
    assert r.status_code == 400 and message(r)["messageNumber"] == "ZWECS130E"
    r = client.post("/cache", content=b"x" * (2 << 20), headers=h)
    assert r.status_code == 413 and message(r)["messageNumber"] == "ZWECS130E"
    assert client.get("/cache", headers=h).json() == {}  # nothing was stored by the refused requests

    # a field left out is "" (and comes back as "": every value round-trips); numbers are taken as their text
    assert client.post("/cache", json={"key": "no-value"}, headers=h).status_code == 201
    got = client.get("/cache/no-value", headers=h).json()
    assert got["key"] == "no-value" and got["value"] == ""
    assert client.post("/cache", content=b'{"key": "num", "value": 12.50, "extra": [1]}', headers=h).status_code == 201
    assert client.get("/cache/num", headers=h).json()["value"] == "12.50"

    # any key: Zowe's test key, slashes, percent signs, unicode, spaces
    keys = ["key .%^&!@#", "a/b/../c", "100%", "ключ 鍵 🔑", " lead and trail ", "?x=1#frag", "Aa", "BB"]
    for key in keys:
        r = client.post("/cache", json={"key": key, "value": f"value of {key}"}, headers=h)
        assert r.status_code == 201, (key, r.text)
    for key in keys:
        r = client.get(path_of(key), headers=h)
        assert r.status_code == 200, (key, r.text)
        assert r.json()["value"] == f"value of {key}"
    assert set(keys) <= set(client.get("/cache", headers=h).json())
    assert client.delete(path_of("a/b/../c"), headers=h).status_code == 204
    assert client.get(path_of("a/b/../c"), headers=h).status_code == 404


def test_callers_are_identified_by_headers(client: httpx.Client, mode: str) -> None:
    r = client.get("/cache")
    m = message(r)
    assert r.status_code == 401
    assert (m["messageNumber"], m["messageKey"], m["messageType"]) == (
        "ZWECS702W", "org.zowe.apiml.cache.missingCertificate", "WARNING")
    assert m["messageContent"] == "Missing header with certificate."  # Zowe's template has no slot for "parameter"
    for verb, path in (("post", "/cache"), ("put", "/cache"), ("get", "/cache/k"), ("delete", "/cache/k"),
                       ("delete", "/cache"), ("get", "/cache-list"), ("get", "/cache-list/m"),
                       ("post", "/cache-list/m"), ("delete", "/cache-list/evict/rules/m"),
                       ("delete", "/cache-list/evict/tokens/m")):
        r = client.request(verb, path, json={"key": "k", "value": "v"}, headers={DN: "", SID: ""})
        assert r.status_code == 401 and message(r)["messageNumber"] == "ZWECS702W", (verb, path)

    dn, service = caller(), f"service-{uuid.uuid4().hex[:8]}"
    both = {DN: dn, SID: service}
    assert client.post("/cache", json={"key": "k", "value": "both"}, headers=both).status_code == 201
    assert client.get("/cache/k", headers=both).json()["serviceId"] == f"{dn}, SERVICE={service}"
    assert client.get("/cache/k", headers=as_dn(dn)).status_code == 404
    assert client.get("/cache/k", headers={SID: service}).status_code == 404
    # the DN and the service id are kept apart: a DN that spells Zowe's combined string is another caller, except
    # in Redis, which keeps Zowe's hash names (there, as in Zowe, a trusted DN header is trusted with its string)
    spelled = client.get("/cache/k", headers={DN: f"{dn}, SERVICE={service}"}).status_code
    assert spelled == (200 if mode == "redis" else 404)
    assert client.post("/cache", json={"key": "k", "value": "sid"}, headers={SID: service}).status_code == 201
    assert client.get("/cache/k", headers={SID: service}).json() == {
        "key": "k", "value": "sid", "serviceId": service, "created": client.get(
            "/cache/k", headers={SID: service}).json()["created"]}


def test_isolation_between_callers(client: httpx.Client) -> None:
    base = caller()
    # "Aa" and "BB" have the same Java hashCode, so do base+"Aa" and base+"BB" (Zowe's VSAM keys collide)
    pairs = [(base + "-one", base + "-two"), (base + "Aa", base + "BB")]
    for a, b in pairs:
        ha, hb = as_dn(a), as_dn(b)
        assert client.post("/cache", json={"key": "shared", "value": "a"}, headers=ha).status_code == 201
        assert client.get("/cache/shared", headers=hb).status_code == 404
        assert client.get("/cache", headers=hb).json() == {}
        assert client.put("/cache", json={"key": "shared", "value": "x"}, headers=hb).status_code == 404
        assert client.delete("/cache/shared", headers=hb).status_code == 404
        assert client.post("/cache", json={"key": "shared", "value": "b"}, headers=hb).status_code == 201
        assert client.post("/cache", json={"key": "only-b", "value": "b"}, headers=hb).status_code == 201
        assert client.get("/cache/shared", headers=ha).json()["value"] == "a"
        assert client.get("/cache/shared", headers=hb).json()["value"] == "b"
        assert client.get("/cache/only-b", headers=ha).status_code == 404
        assert set(client.get("/cache", headers=ha).json()) == {"shared"}
        assert set(client.get("/cache", headers=hb).json()) == {"shared", "only-b"}
        assert client.delete("/cache", headers=ha).status_code == 200
        assert client.get("/cache", headers=ha).json() == {}
        assert set(client.get("/cache", headers=hb).json()) == {"shared", "only-b"}
        assert client.delete("/cache", headers=hb).status_code == 200
    # keys with equal hashCodes within one caller
    h = as_dn(caller())
    for key in ("Aa", "BB", "AaAa", "BBBB", "AaBB"):
        assert client.post("/cache", json={"key": key, "value": key.lower()}, headers=h).status_code == 201
    assert {k: v["value"] for k, v in client.get("/cache", headers=h).json().items()} == {
        "Aa": "aa", "BB": "bb", "AaAa": "aaaa", "BBBB": "bbbb", "AaBB": "aabb"}
    # X-CS-Service-ID with and without the DN: four partitions
    dn1, dn2 = caller(), caller()
    heads = [{DN: dn1, SID: "s1"}, {DN: dn1, SID: "s2"}, {DN: dn2, SID: "s1"}, {DN: dn1}]
    for i, hh in enumerate(heads):
        assert client.post("/cache", json={"key": "k", "value": str(i)}, headers=hh).status_code == 201
    for i, hh in enumerate(heads):
        assert client.get("/cache", headers=hh).json()["k"]["value"] == str(i)


def test_list_maps_and_evictions(client: httpx.Client) -> None:
    h, other = as_dn(caller()), as_dn(caller())
    now = datetime.datetime.now()
    past = json.dumps({"token": "t", "expiresAt": (now - datetime.timedelta(hours=1)).isoformat()})
    future = json.dumps({"token": "t", "expiresAt": (now + datetime.timedelta(hours=1)).isoformat()})
    for key, value in (("old", past), ("fresh", future), ("odd", "not json")):
        # a token already expired would expire on store (Zowe 3.6): "old" is kept by ttlSeconds for the eviction
        ttl = {"ttlSeconds": 3600} if key == "old" else {}
        r = client.post("/cache-list/invalidTokens", json={"key": key, "value": value, **ttl}, headers=h)
        assert (r.status_code, r.content) == (201, b"")
    # storing an item again replaces it (Zowe: a duplicate map key is 201 for both)
    assert client.post("/cache-list/invalidTokens", json={"key": "odd", "value": "odd"}, headers=h).status_code == 201
    ms = int(time.time() * 1000)
    stale, recent = str(ms - 91 * 24 * 3600 * 1000), str(ms - 3600 * 1000)
    for key, value in (("stale", stale), ("recent", recent)):
        assert client.post("/cache-list/invalidTokenRules/", json={"key": key, "value": value},
                           headers=h).status_code == 201
    assert client.post("/cache-list/invalidTokens", json={"key": "theirs", "value": "x"},
                       headers=other).status_code == 201

    r = client.get("/cache-list/invalidTokens", headers=h)
    assert r.status_code == 200 and r.json() == {"old": past, "fresh": future, "odd": "odd"}
    r = client.get("/cache-list", headers=h)
    assert r.status_code == 200 and r.json() == {
        "invalidTokens": {"old": past, "fresh": future, "odd": "odd"},
        "invalidTokenRules": {"stale": stale, "recent": recent},
    }
    assert client.get("/cache-list/", headers=other).json() == {"invalidTokens": {"theirs": "x"}}
    assert client.get("/cache-list/none", headers=h).json() == {}

    r = client.delete("/cache-list/evict/tokens/invalidTokens", headers=h)
    assert (r.status_code, r.content) == (204, b"")
    assert client.get("/cache-list/invalidTokens", headers=h).json() == {"fresh": future, "odd": "odd"}
    r = client.delete("/cache-list/evict/rules/invalidTokenRules/", headers=h)
    assert (r.status_code, r.content) == (204, b"")
    assert client.get("/cache-list/invalidTokenRules", headers=h).json() == {"recent": recent}
    assert client.get("/cache-list", headers=other).json() == {"invalidTokens": {"theirs": "x"}}
    # the maps are not entries
    assert client.get("/cache", headers=h).json() == {}


def test_given_multiple_concurrent_calls_correct_response_in_the_end(server: Server) -> None:
    """Zowe's CachingStorageTest.givenMultipleConcurrentCalls_correctResponseInTheEnd, then more of it."""
    h = as_dn(caller())
    keys = ["20", "21", "22"]

    def call(verb: str, key: str) -> int:
        with server.client() as c:
            if verb == "post":
                return c.post("/cache", json={"key": key, "value": "value"}, headers=h).status_code
            return c.delete(path_of(key), headers=h).status_code

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(lambda k: call("post", k), keys)) == [201, 201, 201]
        with server.client() as c:
            assert set(keys) <= set(c.get("/cache", headers=h).json())
        assert list(pool.map(lambda k: call("delete", k), keys)) == [204, 204, 204]
        with server.client() as c:
            assert not set(keys) & set(c.get("/cache", headers=h).json())

    # 8 threads, each creating, racing on shared keys, reading and deleting
    def worker(n: int) -> list[str]:
        problems = []
        with server.client() as c:
            for i in range(15):
                key = f"w{n}-{i}"
                if (s := c.post("/cache", json={"key": key, "value": key}, headers=h).status_code) != 201:
                    problems.append(f"create {key}: {s}")
                r = c.post("/cache", json={"key": f"race-{i}", "value": str(n)}, headers=h)
                if r.status_code not in (201, 409):
                    problems.append(f"race {i}: {r.status_code}")
                if c.get(path_of(key), headers=h).json().get("value") != key:
                    problems.append(f"read {key}")
                if i % 3 == 0 and (s := c.delete(path_of(key), headers=h).status_code) != 204:
                    problems.append(f"delete {key}: {s}")
        return problems

    with ThreadPoolExecutor(8) as pool:
        assert [p for ps in pool.map(worker, range(8)) for p in ps] == []
    with server.client() as c:
        got = c.get("/cache", headers=h).json()
    expected = {f"w{n}-{i}" for n in range(8) for i in range(15) if i % 3} | {f"race-{i}" for i in range(15)}
    assert set(got) == expected


def test_paths_methods_and_documents(client: httpx.Client, server: Server) -> None:
    h = as_dn(caller())
    assert client.post("/cache/", json={"key": "k", "value": "v"}, headers=h).status_code == 201
    assert client.get("/cache/k/", headers=h).json()["value"] == "v"
    assert set(client.get("/cache/", headers=h).json()) == {"k"}
    assert client.put("/cache/k", json={"value": "v2"}, headers=h).status_code == 204  # Zowe's docs' PUT
    assert client.get("/cache/k", headers=h).json()["value"] == "v2"
    assert client.put("/cache/k", json={"key": "other", "value": "v"}, headers=h).status_code == 400
    r = client.get("/cache//", headers=h)  # an empty key
    assert r.status_code == 400 and message(r)["messageNumber"] == "ZWECS132E"
    r = client.get("/nothing/here", headers=h)
    assert r.status_code == 404 and message(r)["messageNumber"] == "ZWEAO404E"
    r = httpx.get(server.base + "/", timeout=10)
    assert r.status_code == 404 and message(r)["messageKey"] == "org.zowe.apiml.common.notFound"
    r = client.patch("/cache", headers=h)
    assert r.status_code == 405 and message(r)["messageNumber"] == "ZWEAO405E"
    assert "GET" in r.headers["allow"] and "PUT" in r.headers["allow"]
    assert client.post("/cache-list", headers=h).status_code == 405
    assert client.get("/cache-list/evict/rules/m", headers=h).status_code == 405

    docs = [httpx.get(server.base + p, timeout=10) for p in ("/cachingservice/v3/api-docs",
                                                              "/cachingservice/api-doc/")]
    for r in docs:
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = docs[0].json()
    assert doc == docs[1].json() and doc["openapi"].startswith("3.")
    assert set(doc["paths"]) >= {API + p for p in (
        "/cache", "/cache/{key}", "/cache-list", "/cache-list/{mapKey}", "/cache-list/evict/rules/{mapKey}",
        "/cache-list/evict/tokens/{mapKey}")}
    assert set(doc["paths"][API + "/cache"]) == {"get", "post", "put", "delete"}
    assert {"201", "400", "401", "409", "500", "507"} <= set(doc["paths"][API + "/cache"]["post"]["responses"])
    r = httpx.get(server.base + "/cachingservice/application/health", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "UP"
    assert r.json()["components"]["storage"]["details"]["entries"] >= 1
    r = httpx.get(server.base + "/cachingservice/application/info", timeout=10)
    assert r.status_code == 200 and r.json()["build"]["name"] == "caching-service"


@pytest.fixture(scope="module")
def small_servers(mode: str, module_servers: Servers, request: pytest.FixtureRequest) -> dict[str, Server]:
    """Two servers of this mode holding 3 entries at most: one rejecting, one removing the oldest."""
    out = {}
    for db, eviction in ((1, "reject"), (2, "removeOldest")):
        name = f"{mode}-{eviction}"
        args = storage_args(mode, request, module_servers.workdir, name, db)
        out[eviction] = module_servers.start(*args, "--size", "3", "--eviction", eviction, name=name)
    return out


def test_size_limit_reject(small_servers: dict[str, Server]) -> None:
    a, b = as_dn(caller()), as_dn(caller())
    with small_servers["reject"].client() as c:
        for key, h in (("k1", a), ("k2", a), ("k3", b)):
            assert c.post("/cache", json={"key": key, "value": "v"}, headers=h).status_code == 201
        r = c.post("/cache", json={"key": "k4", "value": "v"}, headers=b)  # the limit is across callers
        m = message(r)
        assert r.status_code == 507
        assert (m["messageNumber"], m["messageKey"], m["messageContent"]) == (
            "ZWECS134E", "org.zowe.apiml.cache.insufficientStorage", "Insufficient storage space limit.")
        assert c.post("/cache", json={"key": "k1", "value": "v"}, headers=a).status_code == 409  # full or not
        assert c.put("/cache", json={"key": "k1", "value": "new"}, headers=a).status_code == 204
        assert c.post("/cache-list/m", json={"key": "i", "value": "v"}, headers=a).status_code == 201
        assert c.get("/cache/k4", headers=b).status_code == 404
        assert c.delete("/cache/k2", headers=a).status_code == 204
        assert c.post("/cache", json={"key": "k4", "value": "v"}, headers=b).status_code == 201
        assert c.post("/cache", json={"key": "k5", "value": "v"}, headers=b).status_code == 507
        health = httpx.get(small_servers["reject"].base + "/cachingservice/application/health", timeout=10).json()
        assert health["components"]["storage"]["details"] == {
            "mode": health["components"]["storage"]["details"]["mode"], "entries": 3, "size": 3,
            "eviction": "reject"}
        for h in (a, b):
            assert c.delete("/cache", headers=h).status_code == 200


def test_size_limit_remove_oldest(small_servers: dict[str, Server]) -> None:
    a, b = as_dn(caller()), as_dn(caller())
    with small_servers["removeOldest"].client() as c:
        # created (a client may send it) decides; k0 and k1 are the oldest, of two different callers
        order = [("k2", a, "1000"), ("k0", b, "10"), ("k3", a, "2000"), ("k1", a, "20"), ("k4", b, "3000")]
        for key, h, created in order:
            r = c.post("/cache", json={"key": key, "value": key, "created": created}, headers=h)
            assert r.status_code == 201, r.text
        # 5 creates into 3 places: the two smallest created went (k0 at the 4th create, k1 at the 5th)
        assert c.get("/cache/k0", headers=b).status_code == 404
        assert c.get("/cache/k1", headers=a).status_code == 404
        assert set(c.get("/cache", headers=a).json()) == {"k2", "k3"}
        assert set(c.get("/cache", headers=b).json()) == {"k4"}
        # an update resets created (Zowe replaces the whole entry): k2 becomes the newest
        assert c.put("/cache", json={"key": "k2", "value": "new", "created": "9000"}, headers=a).status_code == 204
        assert c.post("/cache", json={"key": "k5", "value": "v", "created": "9500"}, headers=b).status_code == 201
        assert c.get("/cache/k3", headers=a).status_code == 404
        assert set(c.get("/cache", headers=a).json()) == {"k2"}
        assert set(c.get("/cache", headers=b).json()) == {"k4", "k5"}
        for h in (a, b):
            assert c.delete("/cache", headers=h).status_code == 200


# --- failures of the storage --------------------------------------------------------------------------------------


def test_storage_failure_is_503_and_service_recovers(servers: Servers) -> None:
    """A storage that fails (its Redis server gone) is 503 ZWECS703W (Zowe's "Cache is not available"); a client's
    mistake is still 4xx; health is DOWN (503); the service answers again once the storage is back."""
    with redis_server() as url:
        server = servers.start("--storage", "redis", "--redis-url", url, name="redis-gone")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        h = as_dn(caller())
        with server.client() as c:
            assert c.post("/cache", json={"key": "k", "value": "v"}, headers=h).status_code == 201
    # the redis server is stopped now
    with server.client() as c:
        r = c.get("/cache/k", headers=h)
        m = message(r)
        assert r.status_code == 503 and (m["messageNumber"], m["messageKey"]) == (
            "ZWECS703W", "org.zowe.apiml.cache.notAvailable")
        assert m["messageContent"].startswith("Cache is not available: Redis: ConnectionError")
        assert c.post("/cache", json={"key": None, "value": "v"}, headers=h).status_code == 400
        assert c.get("/cache").status_code == 401
        r = httpx.get(server.base + "/cachingservice/application/health", timeout=10)
        assert r.status_code == 503 and r.json()["status"] == "DOWN"
        exe = shutil.which("redis-server")
        assert exe is not None
        workdir = servers.workdir / "redis-again"
        workdir.mkdir()
        again = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                  "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            end = time.monotonic() + 20
            while (s := c.post("/cache", json={"key": "k", "value": "v"}, headers=h).status_code) == 503:
                assert time.monotonic() < end
                time.sleep(0.1)
            assert s == 201
        finally:
            again.terminate()
            again.wait(10)


# --- HA: several servers on one ksds data set -----------------------------------------------------------------------


def test_two_servers_share_one_data_set(servers: Servers, tmp_path: Path) -> None:
    ds = str(tmp_path / "shared.ksds")
    a = servers.start("--dataset", ds, name="ha-a")
    b = servers.start("--dataset", ds, name="ha-b")
    h = as_dn(caller())
    with a.client() as ca, b.client() as cb:
        assert ca.post("/cache", json={"key": "k", "value": "from a"}, headers=h).status_code == 201
        assert cb.get("/cache/k", headers=h).json()["value"] == "from a"
        assert cb.post("/cache", json={"key": "k", "value": "from b"}, headers=h).status_code == 409
        assert cb.put("/cache", json={"key": "k", "value": "from b"}, headers=h).status_code == 204
        assert ca.get("/cache/k", headers=h).json()["value"] == "from b"
        assert cb.post("/cache-list/m", json={"key": "i", "value": "v"}, headers=h).status_code == 201
        assert ca.get("/cache-list", headers=h).json() == {"m": {"i": "v"}}
        assert ca.delete("/cache/k", headers=h).status_code == 204
        assert cb.get("/cache/k", headers=h).status_code == 404

        # concurrent creates through both servers, racing on the same keys: each key is created once
        def race(c: httpx.Client) -> list[int]:
            return [c.post("/cache", json={"key": f"r{i}", "value": "v"}, headers=h).status_code for i in range(30)]

        with ThreadPoolExecutor(2) as pool:
            ra, rb = pool.map(race, (ca, cb))
        assert all(sorted((x, y)) == [201, 409] for x, y in zip(ra, rb, strict=True)), (ra, rb)
        assert set(ca.get("/cache", headers=h).json()) == {f"r{i}" for i in range(30)}


def test_sigkill_of_one_server_loses_nothing_acknowledged(servers: Servers, tmp_path: Path) -> None:
    ds = str(tmp_path / "ha.ksds")
    a = servers.start("--dataset", ds, name="victim")
    b = servers.start("--dataset", ds, name="survivor")
    h = as_dn(caller())
    acked: list[str] = []
    odd: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n: int) -> None:
        with a.client() as c:
            i = 0
            while not stop.is_set():
                key = f"w{n}-{i}"
                i += 1
                try:
                    r = c.post("/cache", json={"key": key, "value": "x" * 100}, headers=h)
                except httpx.TransportError:
                    return  # the server died under this request: not acknowledged
                with lock:
                    (acked if r.status_code == 201 else odd).append(key if r.status_code == 201 else r.text)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    end = time.monotonic() + 10
    while len(acked) < 150 and time.monotonic() < end:
        time.sleep(0.01)
    a.kill()  # SIGKILL, with requests in flight
    stop.set()
    for t in threads:
        t.join(30)
    assert not odd and len(acked) >= 50, (len(acked), odd[:3])
    print(f"{len(acked)} creates acknowledged before the kill")

    with b.client() as c:
        stored = c.get("/cache", headers=h).json()
        missing = set(acked) - set(stored)
        assert not missing, f"{len(missing)} acknowledged creates lost: {sorted(missing)[:5]}"
        assert set(stored) - set(acked) <= {f"w{n}-{i}" for n in range(4) for i in range(10_000)}
        # the survivor goes on: the dead server's locks and unfinished request are gone
        assert c.post("/cache", json={"key": "after", "value": "v"}, headers=h).status_code == 201
        assert c.delete(path_of(acked[0]), headers=h).status_code == 204
        assert c.put("/cache", json={"key": acked[1], "value": "new"}, headers=h).status_code == 204
        health = httpx.get(b.base + "/cachingservice/application/health", timeout=10).json()
        assert health["components"]["storage"]["details"]["entries"] == len(stored)  # the count is exact
    # a server started afterwards sees the same
    c2 = servers.start("--dataset", ds, name="after-kill")
    with c2.client() as c:
        assert set(c.get("/cache", headers=h).json()) == (set(stored) - {acked[0]}) | {"after"}


def test_clean_shutdown_closes_the_data_set(servers: Servers, tmp_path: Path) -> None:
    ds = tmp_path / "clean.ksds"
    s = servers.start("--dataset", str(ds), "--keylength", "64", "--recordlength", "1024", name="clean")
    h = as_dn(caller())
    with s.client() as c:
        assert c.post("/cache", json={"key": "k", "value": "v"}, headers=h).status_code == 201
        r = c.post("/cache", json={"key": "big", "value": "v" * 2000}, headers=h)
        assert r.status_code == 400 and message(r)["messageNumber"] == "ZWECS137E"  # does not fit the record
    assert os.path.exists(f"{ds}-wal")
    assert s.stop(signal.SIGTERM) == 0
    assert "stopped" in s.out.read_text() and s.err.read_text() == ""
    assert not os.path.exists(f"{ds}-wal")  # closed cleanly: the log was checkpointed and removed
    s2 = servers.start("--dataset", str(ds), name="clean-again")
    with s2.client() as c:
        assert c.get("/cache/k", headers=h).json()["value"] == "v"
    assert s2.stop(signal.SIGINT) == 0


def test_command_line_errors_are_one_line(tmp_path: Path) -> None:
    def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ksds", "serve", *args], capture_output=True, text=True,
                              timeout=60, cwd=tmp_path, env=env)

    cases = [
        ((), "needs --dataset"),
        (("--storage", "redis"), "needs --redis-url"),
        (("--storage", "infinispan"), "storage mode must be one of"),
        (("--storage", "memory", "--tls-key", "k.pem"), "--tls-key needs --tls-cert"),
        (("--storage", "memory", "--tls-cert", "missing.pem"), "missing.pem"),
        (("--storage", "memory", "--layout", "zowe"), "only for the ksds storage mode"),
        (("--dataset", "x.ksds", "--keylength", "10"), "key_length 10 is too short"),
        (("--storage", "memory", "--size", "-1"), "is not >= 0"),
    ]
    for args, text in cases:
        r = serve(*args)
        assert r.returncode != 0 and text in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, (args, r.stderr)
    blocker = Server(["--storage", "memory"], tmp_path, "blocker")
    try:
        r = serve("--storage", "memory", "--port", str(blocker.port))
        assert r.returncode == 12 and "cannot listen on" in r.stderr and len(r.stderr.splitlines()) == 1
    finally:
        blocker.stop()
    env = dict(os.environ, CACHING_STORAGE_MODE="inMemory", CACHING_STORAGE_SIZE="abc")
    r = serve(env=env)
    assert r.returncode == 2 and "CACHING_STORAGE_SIZE must be a whole number" in r.stderr


def test_zowe_environment_variables(servers: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHING_STORAGE_MODE", "VSAM")
    monkeypatch.setenv("CACHING_STORAGE_VSAM_NAME", f"//'{tmp_path / 'env.ksds'}'")
    monkeypatch.setenv("CACHING_STORAGE_SIZE", "1")
    monkeypatch.setenv("CACHING_STORAGE_EVICTIONSTRATEGY", "removeOldest")
    monkeypatch.setenv("CACHING_STORAGE_VSAM_KEYLENGTH", "64")
    monkeypatch.setenv("CACHING_STORAGE_VSAM_RECORDLENGTH", "512")
    s = servers.start(name="env")
    h = as_dn(caller())
    with s.client() as c:
        assert c.post("/cache", json={"key": "a", "value": "v"}, headers=h).status_code == 201
        assert c.post("/cache", json={"key": "b", "value": "v"}, headers=h).status_code == 201
        assert set(c.get("/cache", headers=h).json()) == {"b"}
        assert c.post("/cache", json={"key": "c", "value": "v" * 600}, headers=h).status_code == 400
    details = httpx.get(s.base + "/cachingservice/application/health", timeout=10).json()["components"]["storage"]
    assert (details["details"]["mode"], details["details"]["size"]) == ("vsam", 1)
    assert (tmp_path / "env.ksds").exists()


# --- TLS and client certificates ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


CLIENT_A = "CN=client-a,OU=Zowe,O=ACME\\, Inc.,C=US"  # Java's X500Principal.getName()
CLIENT_A_SUBJECT_DN = 'CN=client-a, OU=Zowe, O="ACME, Inc.", C=US'  # Java's getSubjectDN().getName(), the gateway's
CLIENT_B = "CN=client-b,OU=Zowe,O=ACME\\, Inc.,C=US"


@pytest.fixture(scope="module")
def tls_server(pki: Path, module_servers: Servers) -> Server:
    return module_servers.start(
        "--storage", "memory", "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
        "--tls-ca", str(pki / "ca.pem"), name="tls",
    )


def test_tls_client_certificate_is_the_identity(tls_server: Server, pki: Path) -> None:
    assert tls_server.base.startswith("https://")
    with tls_client(tls_server, pki, "client-a") as a, tls_client(tls_server, pki, "client-b") as b:
        assert a.post("/cache", json={"key": "k", "value": "a"}).status_code == 201  # no header needed
        assert a.get("/cache/k").json()["serviceId"] == CLIENT_A
        assert b.get("/cache/k").status_code == 404
        # the header may name the certificate's DN, as Java writes it either way, in any case and spacing
        for header in (CLIENT_A, CLIENT_A_SUBJECT_DN, "cn=CLIENT-A,  ou=zowe, o=acme\\, inc., c=us"):
            r = a.get("/cache/k", headers={DN: header})
            assert r.status_code == 200 and r.json()["serviceId"] == CLIENT_A, header
        # a header naming another DN is refused (Zowe issue 4423), whatever the service-id header says
        for headers in ({DN: CLIENT_B}, {DN: CLIENT_B, SID: "svc"}, {DN: "CN=client-a"}, {DN: "garbage"}):
            r = a.get("/cache/k", headers=headers)
            m = message(r)
            assert r.status_code == 401 and m["messageNumber"] == "ZWECS800E", headers
            assert m["messageKey"] == "org.zowe.apiml.cache.identityNotProven"
        assert b.post("/cache", json={"key": "k", "value": "b"}, headers={DN: CLIENT_A}).status_code == 401
        assert a.get("/cache/k").json()["value"] == "a"
        # the certificate's DN with X-CS-Service-ID
        assert a.post("/cache", json={"key": "k", "value": "svc"}, headers={SID: "svc"}).status_code == 201
        assert a.get("/cache/k", headers={SID: "svc"}).json()["serviceId"] == f"{CLIENT_A}, SERVICE=svc"
        assert a.get("/cache/k").json()["value"] == "a"


def test_tls_without_a_client_certificate(tls_server: Server, pki: Path) -> None:
    with tls_client(tls_server, pki, None) as anonymous:
        r = anonymous.get("/cache", headers={DN: CLIENT_A})
        m = message(r)
        assert r.status_code == 403 and m["messageNumber"] == "ZWECS801E"
        assert anonymous.get("/cache", headers={SID: "svc"}).status_code == 403
        # public: info, the API document; health needs a certificate, as Zowe's (tests/test_service_endpoints.py)
        for path in ("/application/info", "/v3/api-docs"):
            assert anonymous.get(tls_server.base + "/cachingservice" + path).status_code == 200, path
        assert anonymous.get(tls_server.base + "/cachingservice/application/health").status_code == 403
    with tls_client(tls_server, pki, "client-evil") as evil, pytest.raises(httpx.TransportError):
        evil.get("/cache")  # a certificate from an untrusted CA: the handshake fails
    with pytest.raises(httpx.TransportError):  # plain HTTP on the HTTPS port
        httpx.get(f"http://127.0.0.1:{tls_server.port}{API}/cache", headers={DN: CLIENT_A}, timeout=10)


def test_tls_optional_client_certificates_and_untrusted_header(pki: Path, servers: Servers) -> None:
    tls = ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"), "--tls-ca", str(pki / "ca.pem")]
    optional = servers.start("--storage", "memory", *tls, "--tls-client-auth", "optional", name="tls-optional")
    with tls_client(optional, pki, None) as anonymous, tls_client(optional, pki, "client-a") as a:
        assert anonymous.post("/cache", json={"key": "k", "value": "header"}, headers={DN: CLIENT_A}).status_code == 201
        assert a.get("/cache/k").json()["value"] == "header"  # the same partition
        assert a.get("/cache/k", headers={DN: CLIENT_B}).status_code == 401
        assert anonymous.get("/cache").status_code == 401
    strict = servers.start("--storage", "memory", "--no-trust-dn-header", name="no-dn-header")
    with strict.client() as c:
        r = c.get("/cache", headers={DN: CLIENT_A})
        assert r.status_code == 401 and message(r)["messageNumber"] == "ZWECS800E"
        assert c.post("/cache", json={"key": "k", "value": "v"}, headers={SID: "svc"}).status_code == 201


def test_java_dn_format(pki: Path) -> None:
    der = ssl.PEM_cert_to_DER_cert((pki / "client-a.pem").read_text())
    subject = subject_of(der)
    assert java_dn(subject) == CLIENT_A
    assert same_dn(CLIENT_A_SUBJECT_DN, subject) and not same_dn(CLIENT_B, subject)
    assert not same_dn("CN=client-a,OU=Zowe,C=US", subject)  # an RDN missing
    assert not same_dn("C=US,O=ACME\\, Inc.,OU=Zowe,CN=client-a", subject)  # the reverse order
    # hex values, OIDs, escapes (Java's RFC 2253 output)
    email = parse_dn("EMAILADDRESS=a@b.c")
    assert email[0][0].oid == "1.2.840.113549.1.9.1" and email[0][0].text == "a@b.c"
    hexed = parse_dn("1.2.840.113549.1.9.1=#16056140622e63")[0][0]
    assert (hexed.oid, hexed.text) == ("1.2.840.113549.1.9.1", "a@b.c")
    assert java_dn([[SubjectAttribute("2.5.4.3", " a+b=c#d ", None)]]) == "CN=\\ a\\+b\\=c\\#d\\ "
    email_der = bytes.fromhex("16056140622e63")
    assert java_dn([[SubjectAttribute("1.2.840.113549.1.9.1", "a@b.c", email_der)],
                    [SubjectAttribute("2.5.4.3", "x", None), SubjectAttribute("2.5.4.11", "y", None)]]) == (
        "CN=x+OU=y,1.2.840.113549.1.9.1=#16056140622e63")


def test_zowe_layout_through_the_api(servers: Servers, tmp_path: Path) -> None:
    """``--layout zowe`` (Zowe's VSAM records byte for byte) serves the same API. It keeps Zowe's hash keys, so
    services (or keys) with equal Java hashCodes share record keys: the second create is 409 (ksds_storage)."""
    s = servers.start("--dataset", str(tmp_path / "zowe.ksds"), "--layout", "zowe", name="zowe")
    a, b = as_dn(caller()), as_dn(caller())
    with s.client() as c:
        assert c.post("/cache", json={"key": "key .%^&!@#", "value": "v"}, headers=a).status_code == 201
        assert c.get(path_of("key .%^&!@#"), headers=a).json()["value"] == "v"
        assert c.get(path_of("key .%^&!@#"), headers=b).status_code == 404
        assert c.post("/cache", json={"key": "key .%^&!@#", "value": "w"}, headers=b).status_code == 201
        assert c.put("/cache", json={"key": "key .%^&!@#", "value": "v2"}, headers=a).status_code == 204
        assert c.get("/cache", headers=b).json()["key .%^&!@#"]["value"] == "w"
        assert c.delete(path_of("key .%^&!@#"), headers=a).status_code == 204
        assert c.get("/cache", headers=a).json() == {}
        # Zowe's defect 11.1, kept by this layout: "Aa" and "BB" hash alike
        assert c.post("/cache", json={"key": "Aa", "value": "1"}, headers=a).status_code == 201
        assert c.post("/cache", json={"key": "BB", "value": "2"}, headers=a).status_code == 409
        assert c.get("/cache/BB", headers=a).status_code == 404  # but never the other key's entry


def test_calls_to_a_storage_that_is_not_thread_safe_are_serialised() -> None:
    """In process: the service runs storage calls in a thread pool, one at a time unless the storage is
    thread-safe (``thread_safe = True``), and closes the storage after the call in flight."""
    import asyncio

    from ksds.caching.memory import MemoryStorage
    from ksds.caching.service import make_app

    class Unsafe(MemoryStorage):
        thread_safe = False
        inline_calls = False  # its calls sleep: they go to the thread pool

        def __init__(self) -> None:
            super().__init__()
            self.inside = 0
            self.most = 0
            self.guard = threading.Lock()

        def read_for_service(self, service_id: str) -> dict[str, Any]:
            with self.guard:
                self.inside += 1
                self.most = max(self.most, self.inside)
            time.sleep(0.01)
            with self.guard:
                self.inside -= 1
            return super().read_for_service(service_id)

    async def run(storage: Unsafe) -> list[int]:
        app = make_app(storage)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test" + API) as c:
            rs = await asyncio.gather(*(c.get("/cache", headers={SID: "s"}) for _ in range(20)))
        return [r.status_code for r in rs]

    unsafe = Unsafe()
    assert asyncio.run(run(unsafe)) == [200] * 20
    assert unsafe.most == 1
    safe = Unsafe()
    safe.thread_safe = True
    assert asyncio.run(run(safe)) == [200] * 20
    assert safe.most > 1
