"""Item 10 of issue 13: Prometheus metrics at ``/metrics``, scraped from real ``ksds serve`` processes and parsed with
prometheus_client's own parser: the counters move as requests are made (creates, 404s, evictions with --size and
removeOldest, expirations with ttlSeconds), and /metrics needs a client certificate where the API does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from servers import Server, Servers, make_pki, tls_client

SID = {"X-CS-Service-ID": "gateway"}
CACHE = "/cachingservice/api/v1/cache"
KEY = "/cachingservice/api/v1/cache/{key}"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base: str, client: httpx.Client | None = None) -> tuple[Samples, set[str]]:
    """Every sample of one scrape (name and labels -> value), and the families' types as ``name:type``."""
    r = (client.get(base + "/metrics") if client else httpx.get(base + "/metrics", timeout=10))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    kinds = set()
    for family in text_string_to_metric_families(r.text):
        kinds.add(f"{family.name}:{family.type}")
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, kinds


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample ``name`` whose labels include ``labels`` (0 if there is none)."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    s = Servers(tmp_path_factory.mktemp("metrics"))
    yield s
    s.stop_all()


@pytest.mark.parametrize("mode", ["memory", "ksds"])
def test_counters_move_with_the_requests(servers: Servers, mode: str) -> None:
    storage = ["--storage", "memory"] if mode == "memory" else ["--dataset", str(servers.workdir / "m.ksds")]
    server: Server = servers.start(*storage, "--size", "2", "--eviction", "removeOldest", name=mode)
    before, kinds = scrape(server.base)
    assert "ksds_http_requests:counter" in kinds and "ksds_http_request_duration_seconds:histogram" in kinds
    assert value(before, "ksds_cache_entries", storage=mode) == 0
    assert value(before, "ksds_cache_up", storage=mode) == 1
    assert value(before, "ksds_cache_size_limit", storage=mode) == 2
    with server.client(headers=SID) as c:
        for i, created in enumerate(("1000", "2000", "3000")):
            assert c.post("/cache", json={"key": f"k{i}", "value": "v" * 10, "created": created}).status_code == 201
        assert c.post("/cache", json={"key": "k1", "value": "again"}).status_code == 409
        for key in ("k0", "never", "nor-this"):  # k0 went to make room for k2
            assert c.get(f"/cache/{key}").status_code == 404
        assert c.get("/cache/k2").status_code == 200
        # an entry and a map item that live 1 s
        assert c.post("/cache", json={"key": "t", "value": "v", "created": "4000", "ttlSeconds": 1}).status_code == 201
        assert c.post("/cache-list/m", json={"key": "i", "value": "x", "ttlSeconds": 1}).status_code == 201
        during, _ = scrape(server.base)
        assert value(during, "ksds_cache_entries", storage=mode) == 2
        time.sleep(1.2)
        assert c.post("/cache-list/m", json={"key": "j", "value": "y"}).status_code == 201  # removes what expired
        assert c.get("/nowhere").status_code == 404
    after, _ = scrape(server.base)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("ksds_http_requests_total", endpoint=CACHE, method="POST", status="201") == 4
    assert delta("ksds_http_requests_total", endpoint=CACHE, method="POST", status="409") == 1
    assert delta("ksds_http_requests_total", endpoint=KEY, method="GET", status="404") == 3  # one label, 3 keys
    assert delta("ksds_http_requests_total", endpoint=KEY, method="GET", status="200") == 1
    assert delta("ksds_http_requests_total", endpoint="/cachingservice/api/v1/cache-list/{mapKey}", method="POST",
                 status="201") == 2
    assert delta("ksds_http_requests_total", endpoint="/metrics", method="GET", status="200") == 2
    assert value(after, "ksds_http_requests_total", endpoint="other", status="404") >= 1  # /cachingservice/nowhere
    assert delta("ksds_http_request_duration_seconds_count", endpoint=CACHE, method="POST") == 5
    assert value(after, "ksds_http_request_duration_seconds_bucket", endpoint=CACHE, method="POST", le="+Inf") == \
        value(after, "ksds_http_request_duration_seconds_count", endpoint=CACHE, method="POST")
    assert 0 < value(after, "ksds_http_request_duration_seconds_sum", endpoint=CACHE, method="POST") < 30
    # k0 and k1 removed by removeOldest; t and i expired
    assert delta("ksds_cache_evictions_total", storage=mode) == 2
    assert delta("ksds_cache_expirations_total", storage=mode, kind="entry") == 1
    assert delta("ksds_cache_expirations_total", storage=mode, kind="item") == 1
    assert value(after, "ksds_cache_entries", storage=mode) == 1
    assert value(after, "ksds_cache_bytes", storage=mode) > 0
    assert value(after, "ksds_caching_service_info", storage=mode) == 1
    assert value(after, "process_resident_memory_bytes") > 0
    if mode == "ksds":
        assert value(after, "ksds_dataset_records") > value(before, "ksds_dataset_records")
        assert delta("ksds_dataset_transactions_total") >= 6  # the 4 creates and 2 map items, at least
        assert delta("ksds_dataset_record_operations_total", operation="inserted") > 0
        assert delta("ksds_dataset_record_operations_total", operation="deleted") > 0
        assert value(after, "ksds_dataset_bytes", kind="allocated") >= value(after, "ksds_dataset_bytes", kind="used")
        assert value(after, "ksds_dataset_index_levels") >= 1
        assert value(after, "ksds_dataset_cis", kind="data") >= 1
        assert value(after, "ksds_log_bytes") > value(before, "ksds_log_bytes")
        assert value(after, "ksds_log_checkpoint_bytes") > 0
        assert delta("ksds_record_lock_wait_seconds_total") >= 0
        assert ("ksds_record_lock_timeouts_total", frozenset({("storage", "ksds"), ("dataset", str(
            servers.workdir / "m.ksds"))})) in after
    r = httpx.post(server.base + "/metrics", timeout=10)
    assert r.status_code == 405 and r.json()["messages"][0]["messageNumber"] == "ZWEAO405E"


def test_metrics_need_a_client_certificate_where_the_api_does(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    servers = Servers(tmp_path)
    try:
        server = servers.start("--storage", "memory", "--tls-cert", str(pki / "server.pem"), "--tls-key",
                               str(pki / "server.key"), "--tls-ca", str(pki / "ca.pem"))
        with tls_client(server, pki, None) as anonymous:
            r = anonymous.get(server.base + "/metrics")
            assert r.status_code == 403 and r.json()["messages"][0]["messageNumber"] == "ZWECS801E", r.text
        with tls_client(server, pki, "client-a") as c:
            samples, _ = scrape(server.base, c)
        assert value(samples, "ksds_http_requests_total", endpoint="/metrics", status="403") == 1
        # optional client certificates: open to anyone, as the API is
        optional = servers.start("--storage", "memory", "--tls-cert", str(pki / "server.pem"), "--tls-key",
                                 str(pki / "server.key"), "--tls-ca", str(pki / "ca.pem"),
                                 "--tls-client-auth", "optional")
        with tls_client(optional, pki, None) as anonymous:
            scrape(optional.base, anonymous)
    finally:
        servers.stop_all()
