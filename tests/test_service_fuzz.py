"""Property-based tests of the caching service's REST API through real ``ksds serve`` processes (memory and ksds
storages, 127.0.0.1, a free port): no client input gets a 5xx.

* schemathesis reads the OpenAPI document the server serves (``/cachingservice/v3/api-docs``) and generates
  requests for every operation, valid ones and invalid ones (wrong types, missing fields, odd headers);
* hand-written hypothesis tests throw arbitrary text at the endpoints (lone surrogates, control characters,
  U+FFFD, empty strings, astral characters) in keys, values, map keys and path segments, and arbitrary bytes in
  the identity headers: text that is Unicode round-trips exactly, text that is not is 400 ZWECS130E, and
  nothing is a 5xx.

Bounded: a fixed number of examples per operation (the whole module takes well under a minute on 2 cores).
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from servers import Server, Servers

SID = "X-CS-Service-ID"
DN = "X-Certificate-DistinguishedName"
#: examples per operation and generation mode (schemathesis), and per hand-written property
SCHEMA_EXAMPLES = 25
EXAMPLES = 120
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def module_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    servers = Servers(tmp_path_factory.mktemp("fuzz"))
    yield servers
    servers.stop_all()  # SIGTERM, and a clean exit (0) is checked


@pytest.fixture(scope="module", params=["memory", "ksds"])
def server(request: pytest.FixtureRequest, module_servers: Servers) -> Server:
    mode = str(request.param)
    args = ["--storage", "memory"] if mode == "memory" else ["--dataset", str(module_servers.workdir / "fuzz.ksds")]
    # a small record (a long value is a 400 that says so) and no size limit (the fuzzing creates many entries)
    extra = ["--keylength", "64", "--recordlength", "1024"] if mode == "ksds" else []
    return module_servers.start(*args, *extra, "--size", "0", name=mode)


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def _no_5xx(r: httpx.Response | requests.Response, what: object) -> None:
    assert r.status_code < 500, (what, r.status_code, r.text[:500])


# --- schemathesis, on the served OpenAPI document -------------------------------------------------------------------


def test_no_5xx_for_any_request_the_openapi_document_allows_or_forbids(server: Server) -> None:
    doc = httpx.get(server.base + "/cachingservice/v3/api-docs", timeout=10).json()
    schema = schemathesis.openapi.from_dict(doc)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [f"{op.method} {op.path}" for op in operations]
    session = requests.Session()
    callers = st.sampled_from([None, {SID: "fuzz"}, {DN: "CN=fuzz,O=ksds"}, {DN: "CN=fuzz", SID: "fuzz"}])
    for op in operations:
        cases = st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))

        @settings(max_examples=2 * SCHEMA_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=cases, caller=callers)
        def check(case: Any, caller: dict[str, str] | None) -> None:
            headers = dict(case.headers or {})
            if caller is not None and not ({SID, DN} & set(headers)):
                headers.update(caller)  # most requests name a caller, so they reach the storage
            try:
                r = case.call(base_url=server.base, session=session, headers=headers, timeout=30)
            except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError, ValueError):
                return  # the client could not send it (a header value requests refuses, ...)
            _no_5xx(r, case.as_curl_command())

        check()
    session.close()


# --- hand-written: arbitrary text -----------------------------------------------------------------------------------

#: any code point, lone surrogates included, with the awkward ones often
TEXT = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=0, max_codepoint=0x10FFFF),  # surrogates (Cs) included
        st.sampled_from(["\x00", "\x01", "\x1f", "\x7f", "\ufffd", "\ud800", "\udfff", "\u2028", "\U0001f600", '"',
                         "\\", "/", "%", "?", "#", " "]),
    ),
    max_size=40,
)


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _body(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=True).encode()  # a lone surrogate travels as its JSON escape


def _as_sent(text: str) -> str:
    """``text`` as the server reads it from :func:`_body` (two lone surrogates side by side are a pair there)."""
    return str(json.loads(json.dumps(text)))


def _segment(text: str) -> str:
    """A path segment naming ``text`` exactly (dots too: a client removes ``.`` and ``..`` segments)."""
    return quote(text, safe="", errors="surrogatepass").replace(".", "%2E")


@FUZZ
@given(key=TEXT, value=TEXT)
def test_entries_of_any_text_round_trip_or_are_refused(client: httpx.Client, key: str, value: str) -> None:
    h = {SID: f"t-{uuid.uuid4().hex}"}
    r = client.post("/cache", content=_body({"key": key, "value": value}), headers=h)
    _no_5xx(r, (key, value))
    key, value = _as_sent(key), _as_sent(value)
    if not (_is_unicode(key) and _is_unicode(value)):
        assert r.status_code == 400 and r.json()["messages"][0]["messageNumber"] == "ZWECS130E", r.text
        assert client.get("/cache", headers=h).json() == {}
        return
    if r.status_code == 400:  # too long for the record (ksds): says so
        assert r.json()["messages"][0]["messageNumber"] == "ZWECS137E", r.text
        return
    assert r.status_code == 201, r.text
    got = client.get("/cache", headers=h).json()
    assert list(got) == [key] and got[key]["value"] == value and got[key]["key"] == key
    if key:
        one = client.get("/cache/" + _segment(key), headers=h)
        assert one.status_code == 200 and one.json()["value"] == value
    r = client.put("/cache", content=_body({"key": key, "value": value + "\x00"}), headers=h)
    _no_5xx(r, (key, value))
    r = client.request("PUT", "/cache/" + _segment(key), content=_body({"key": key, "value": value}), headers=h)
    _no_5xx(r, (key, value))
    assert client.get("/cache", headers=h).json()[key]["value"] == value or r.status_code == 400
    assert client.delete("/cache", headers=h).status_code == 200


@FUZZ
@given(map_key=TEXT, key=TEXT, value=TEXT)
def test_map_items_of_any_text_round_trip_or_are_refused(client: httpx.Client, map_key: str, key: str,
                                                         value: str) -> None:
    h = {SID: f"m-{uuid.uuid4().hex}"}
    path = "/cache-list/" + _segment(map_key)
    r = client.post(path, content=_body({"key": key, "value": value}), headers=h)
    _no_5xx(r, (map_key, key, value))
    key, value = _as_sent(key), _as_sent(value)
    for p in (path, "/cache-list"):
        _no_5xx(client.get(p, headers=h), p)
    if not map_key:  # POST /cache-list/ is POST /cache-list: 405
        assert r.status_code == 405, r.text
    elif not (_is_unicode(key) and _is_unicode(value)):
        assert r.status_code == 400, r.text
    elif r.status_code == 201:
        # the path is read as UTF-8 (bytes that are not, as U+FFFD), so the map key may not be map_key itself
        maps = client.get("/cache-list", headers=h).json()
        assert len(maps) == 1 and list(maps.values())[0] == {key: value}, maps
    else:  # too long for the record (ksds): says so
        assert r.status_code == 400 and r.json()["messages"][0]["messageNumber"] == "ZWECS137E", r.text
    for kind in ("rules", "tokens"):
        p = f"/cache-list/evict/{kind}/{_segment(map_key)}"
        _no_5xx(client.delete(p, headers=h), p)


@FUZZ
@given(key=TEXT, raw=st.binary(max_size=30))
def test_any_path_segment_and_json_shape(client: httpx.Client, key: str, raw: bytes) -> None:
    h = {SID: "paths"}
    seg = _segment(key) + quote(raw, safe="")
    for method in ("GET", "DELETE", "PUT"):
        _no_5xx(client.request(method, "/cache/" + seg, content=raw, headers=h), (method, seg))
    _no_5xx(client.post("/cache", content=raw, headers=h), raw)
    shapes = [{"key": key}, {"value": key}, {"key": key, "value": [key]}, {"key": key, "value": key, "created": key}]
    for shape in shapes:
        _no_5xx(client.post("/cache", content=_body(shape), headers=h), shape)
    assert client.delete("/cache", headers=h).status_code == 200


def _raw_request(server: Server, head: bytes) -> int:
    """Send ``head`` (a request without a body) on a fresh connection; the status of the answer (0: none)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(head)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                return 0
            data += chunk
    return int(data.split(b" ", 2)[1])


HEADER_BYTES = st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b)


@FUZZ
@given(service=HEADER_BYTES, dn=st.one_of(st.none(), HEADER_BYTES), path=st.sampled_from(
    ["/cache", "/cache/k", "/cache-list", "/cache-list/m", "/cache-list/evict/tokens/m"]))
def test_any_identity_header_bytes(server: Server, service: bytes, dn: bytes | None, path: str) -> None:
    head = b"GET /cachingservice/api/v1" + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nX-CS-Service-ID: "
    head += service + b"\r\n"
    if dn is not None:
        head += b"X-Certificate-DistinguishedName: " + dn + b"\r\n"
    status = _raw_request(server, head + b"Connection: close\r\n\r\n")
    assert 200 <= status < 500, (service, dn, path, status)
