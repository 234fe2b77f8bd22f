"""The endpoints as ZAAS and the gateway call them (Zowe's ``CachingServiceClient``, ``ApimlAccessTokenProvider``),
through real ``ksds serve`` processes: the trailing-slash paths (``GET /cache-list/`` on every token check),
``/cache-list-legacy`` (Zowe 3.6), and the health endpoint, which needs a client certificate by default as Zowe's
does (``apiml.health.protected: true``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import Server, Servers, make_pki, tls_client

DN = "X-Certificate-DistinguishedName"
ZAAS = {DN: "CN=zaas,OU=Zowe,O=ACME,C=US"}  # the gateway adds it from ZAAS's certificate; no X-CS-Service-ID
HEALTH = "/cachingservice/application/health"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    s = Servers(tmp_path_factory.mktemp("servers"))
    try:
        yield s
    finally:
        s.stop_all()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module", params=["memory", "ksds"])
def server(request: pytest.FixtureRequest, servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Server:
    if request.param == "memory":
        return servers.start("--storage", "memory", name="memory")
    return servers.start("--dataset", str(tmp_path_factory.mktemp("ds") / "cache.ksds"), name="ksds")


def number(r: httpx.Response) -> str:
    return str(r.json()["messages"][0]["messageNumber"])


def test_the_paths_zaas_calls(server: Server) -> None:
    """A personal access token's life as ZAAS drives it: the salt, a revocation, the reachability probe, the
    ``/cache-query`` probe and lookup, the whole-map read with its trailing slash, the legacy read, evictions."""
    with server.client() as c:
        assert c.get("/cache/salt", headers=ZAAS).status_code == 404
        assert c.post("/cache", json={"key": "salt", "value": "\x00\x7f\ufffd"}, headers=ZAAS).status_code == 201
        assert c.get("/cache/salt", headers=ZAAS).json()["value"] == "\x00\x7f\ufffd"
        token = {"key": "a" * 128, "value": '{"expiresAt":[2099,1,1,0,0,0]}'}
        assert c.post("/cache-list/invalidTokens", json=token, headers=ZAAS).status_code == 201
        now = str(int(time.time() * 1000))  # a rule lives 90 days from its time
        assert c.post("/cache-list/invalidUsers", json={"key": "u", "value": now}, headers=ZAAS).status_code == 201
        assert c.get("/cache-list/apimlReachabilityProbe", headers=ZAAS).json() == {}
        for path in ("/cache-query", "/cache-query/"):
            assert c.post(path, json={}, headers=ZAAS).json() == {}
            assert c.post(path, json={"invalidTokens": ["a" * 128, "b"], "invalidUsers": ["x"]},
                          headers=ZAAS).json() == {"invalidTokens": {"a" * 128: token["value"]}}
        everything = {"invalidTokens": {"a" * 128: token["value"]}, "invalidUsers": {"u": now}}
        for path in ("/cache-list/", "/cache-list"):  # ZAAS reads "/cache-list/" (its list.apiPath)
            r = c.get(path, headers=ZAAS)
            assert (r.status_code, r.json()) == (200, everything), path
        # /cache-list-legacy: Zowe's whole-map layout of before 3.6, which ksds never had: nothing is in it
        # (the items written before are all found by /cache-query)
        for path in ("/cache-list-legacy", "/cache-list-legacy/"):
            r = c.get(path, headers=ZAAS)
            assert (r.status_code, r.json(), r.headers["content-type"]) == (200, {}, "application/json"), path
            r = c.get(path)  # an identity is needed, as on every endpoint
            assert (r.status_code, number(r)) == (401, "ZWECS702W")
        r = c.post("/cache-list-legacy", json={}, headers=ZAAS)
        assert (r.status_code, number(r), r.headers["allow"]) == (405, "ZWEAO405E", "GET")
        assert c.get("/cache-list-legacy/invalidTokens", headers=ZAAS).status_code == 404
        assert c.delete("/cache-list/evict/tokens/invalidTokens", headers=ZAAS).status_code == 204
        assert c.delete("/cache-list/evict/rules/invalidUsers", headers=ZAAS).status_code == 204
        assert c.get("/cache-list/", headers=ZAAS).json()["invalidTokens"] == everything["invalidTokens"]
        assert c.delete("/cache/salt", headers=ZAAS).status_code == 204


def test_the_legacy_read_is_503_while_the_storage_is_not_available(servers: Servers, tmp_path: Path) -> None:
    broken = tmp_path / "broken.ksds"
    broken.write_bytes(b"not a data set" * 1000)
    s = servers.start("--dataset", str(broken), name="broken")
    with s.client() as c:
        for path in ("/cache-list-legacy", "/cache-list/"):
            r = c.get(path, headers=ZAAS)
            assert (r.status_code, number(r)) == (503, "ZWECS703W"), path


def test_the_trailing_slash_forms_of_zowes_mappings(server: Server) -> None:
    """Zowe maps ``/cache`` and ``/cache/`` (GET, POST, PUT, DELETE), ``/cache-list/``, ``/cache-query/`` and
    ``/cache-list-legacy/``; the gateway's sticky load balancing POSTs, PUTs, GETs and DELETEs ``/cache``."""
    h = {DN: "CN=gateway,OU=Zowe,O=ACME,C=US"}
    with server.client() as c:
        assert c.post("/cache/", json={"key": "lb.user:svc", "value": "{}"}, headers=h).status_code == 201
        assert c.post("/cache", json={"key": "lb.user:svc", "value": "{}"}, headers=h).status_code == 409
        assert c.put("/cache/", json={"key": "lb.user:svc", "value": '{"instanceId":"i1"}'},
                     headers=h).status_code == 204
        assert c.get("/cache/", headers=h).json()["lb.user:svc"]["value"] == '{"instanceId":"i1"}'
        assert c.get("/cache/lb.user:svc", headers=h).json()["value"] == '{"instanceId":"i1"}'
        assert c.delete("/cache/", headers=h).status_code == 200
        assert c.get("/cache", headers=h).json() == {}
        r = c.post("/cache-list/", json={"key": "k", "value": "v"}, headers=h)  # a map key is needed
        assert (r.status_code, number(r)) == (405, "ZWEAO405E")


# --- the health endpoint ------------------------------------------------------------------------------------------


def _tls(pki: Path) -> list[str]:
    return ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
            "--tls-ca", str(pki / "ca.pem")]


def test_health_needs_a_client_certificate_by_default(pki: Path, servers: Servers) -> None:
    """As Zowe's (``apiml.health.protected`` true by default): over TLS with client certificates verified, the
    health endpoint answers 403 ZWECS801E to a caller without one, also where ``--tls-client-auth optional``
    lets such callers use the API; info and the API document stay public."""
    required = servers.start("--storage", "memory", *_tls(pki), name="health-default")
    optional = servers.start("--storage", "memory", *_tls(pki), "--tls-client-auth", "optional",
                             name="health-optional")
    for s in (required, optional):
        with tls_client(s, pki, None) as anonymous, tls_client(s, pki, "client-a") as a:
            r = anonymous.get(s.base + HEALTH)
            assert (r.status_code, number(r)) == (403, "ZWECS801E"), s.name
            assert "health endpoint is protected" in r.json()["messages"][0]["messageContent"]
            assert anonymous.head(s.base + HEALTH).status_code == 403
            r = a.get(s.base + HEALTH)
            assert (r.status_code, r.json()["status"]) == (200, "UP")
            assert r.json()["components"]["storage"]["details"]["mode"] == "memory"
            for path in ("/cachingservice/application/info", "/cachingservice/v3/api-docs"):
                assert anonymous.get(s.base + path).status_code == 200, path
    with tls_client(optional, pki, None) as anonymous:  # the API itself is open to it there
        assert anonymous.get("/cache", headers={DN: "CN=x"}).status_code == 200


def test_health_can_be_public(pki: Path, servers: Servers, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--health-auth none``, or Zowe's ``ZWE_configs_apiml_health_protected=false``, opens it; the command line
    wins over the variable; without TLS there is no certificate to ask for, so it is open."""
    monkeypatch.setenv("ZWE_configs_apiml_health_protected", "false")
    from_env = servers.start("--storage", "memory", *_tls(pki), name="health-env-false")
    flag_wins = servers.start("--storage", "memory", *_tls(pki), "--health-auth", "certificate",
                              name="health-env-false-flag")
    monkeypatch.setenv("ZWE_configs_apiml_health_protected", "true")
    flag = servers.start("--storage", "memory", *_tls(pki), "--health-auth", "none", name="health-none")
    monkeypatch.delenv("ZWE_configs_apiml_health_protected")
    http = servers.start("--storage", "memory", name="health-http")
    for s, status in ((from_env, 200), (flag_wins, 403), (flag, 200)):
        with tls_client(s, pki, None) as anonymous:
            assert anonymous.get(s.base + HEALTH).status_code == status, s.name
            assert anonymous.get("/cache", headers={DN: "CN=x"}).status_code == 403  # the API still needs one
    assert httpx.get(http.base + HEALTH, timeout=10).json()["status"] == "UP"


def test_a_wrong_health_auth_is_one_line(tmp_path: Path) -> None:
    for args, env, text in (
        (["--health-auth", "open"], {}, "'open' is not certificate or none"),
        ([], {"ZWE_configs_apiml_health_protected": "maybe"}, "'maybe' is not certificate or none"),
    ):
        environ = {k: v for k, v in os.environ.items() if k != "ZWE_configs_apiml_health_protected"} | env
        r = subprocess.run([sys.executable, "-m", "ksds", "serve", "--storage", "memory", *args],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path, env=environ)
        assert r.returncode == 2 and text in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
