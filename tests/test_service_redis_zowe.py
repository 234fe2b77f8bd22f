"""Redis as Zowe configures it, through real servers: Zowe's ``masterNodeUri`` (a bare password is the user
``default``'s) and its CACHING_STORAGE_REDIS_* variables, a command timeout, reconnecting after Redis restarts,
Redis Sentinel with a replica (and a failover), Redis with TLS and client certificates (PEM and PKCS#12 stores),
and the hashes as Zowe's Redis storage writes and reads them (``RedisOperator``, ``RedisEntry``: the KeyValue's
Jackson JSON without ``serviceId``, in the hash named by the caller's service id).

Every server listens on 127.0.0.1 on a free port: redis-server, redis-sentinel (``.ci/run`` installs both; missing,
the tests fail rather than skip) and ``ksds serve``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from servers import Servers, free_port, make_pki, redis_processes, redis_sentinel, redis_server, redis_tls_server

from ksds.caching import redis_config as rc
from ksds.caching.model import KeyValue, StorageError
from ksds.caching.redis_config import RedisConfig, RedisNode
from ksds.caching.redis_storage import RedisStorage

SID = "X-CS-Service-ID"
DN = "X-Certificate-DistinguishedName"
PASSWORD = "heslo-Zowe"
#: the fields of Zowe's KeyValue: its ObjectMapper refuses any other (FAIL_ON_UNKNOWN_PROPERTIES)
ZOWE_FIELDS = ("key", "value", "serviceId", "created")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(tmp_path)
    yield s
    s.stop_all()


def environ(**variables: str) -> dict[str, str]:
    """This process's environment without Zowe's variables, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CACHING_", "ZWE_"))}
    return env | variables


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def message(r: httpx.Response) -> dict[str, str]:
    m: dict[str, str] = r.json()["messages"][0]
    return m


def assert_503(r: httpx.Response, error: str) -> None:
    m = message(r)
    assert r.status_code == 503 and m["messageNumber"] == "ZWECS703W", r.text
    assert m["messageContent"].startswith(f"Cache is not available: Redis: {error}"), m["messageContent"]


def as_zowe_reads(raw: bytes) -> dict[str, str]:
    """An entry as Zowe's ``RedisEntry`` reads it (Jackson into ``KeyValue``): JSON with only KeyValue's fields."""
    obj = json.loads(raw.decode("utf-8"))
    assert isinstance(obj, dict) and set(obj) <= set(ZOWE_FIELDS), raw
    assert list(obj) == [f for f in ZOWE_FIELDS if f in obj], raw  # Jackson's order: the declaration's
    return obj


# --- masterNodeUri, the environment, and the hashes as Zowe keeps them ----------------------------------------------


def test_master_node_uri_in_zowes_form(tmp_path: Path) -> None:
    """A bare ``password@host:port`` is a password (redis-py's URL would read it as a user name); ``user:password``
    names an ACL user; a wrong password is 503 naming the authentication failure."""
    with redis_server("--requirepass", PASSWORD) as url:
        port = port_of(url)
        with redis.Redis(port=port, password=PASSWORD) as r:
            r.acl_setuser("zowe", enabled=True, passwords=["+zowe-secret"], keys=["*"], channels=["*"],
                          commands=["+@all"])
        for address in (f"{PASSWORD}@127.0.0.1:{port}", f"default:{PASSWORD}@127.0.0.1:{port}",
                        f"zowe:zowe-secret@127.0.0.1:{port}", f"redis://:{PASSWORD}@127.0.0.1:{port}/0"):
            s = RedisStorage(address, size=0)
            s.create("gw", KeyValue(address[:4], "v"))
            assert s.read("gw", address[:4]).value == "v"
            s.close()
        with redis.Redis.from_url(f"redis://{PASSWORD}@127.0.0.1:{port}/0") as wrong:  # the old reading of it
            with pytest.raises(redis.AuthenticationError):
                wrong.ping()
        s = RedisStorage(f"wrong@127.0.0.1:{port}")
        with pytest.raises(StorageError) as e:
            s.read("gw", "k")
        assert e.value.status == 503 and "AuthenticationError" in str(e.value.params[0])
        s.close()


def test_a_database_written_by_zowe_is_served_and_back(servers: Servers) -> None:
    """ksds serve, configured by Zowe's variables, serves the hashes as Zowe's RedisOperator wrote them, and writes
    its own so that Zowe's RedisEntry reads them."""
    with redis_server("--requirepass", PASSWORD) as url:
        port = port_of(url)
        r = redis.Redis(port=port, password=PASSWORD)
        # what Zowe wrote: HSETNX serviceId key <Jackson's KeyValue without serviceId>
        zowe_dn = "CN=zowe-gateway,OU=API ML,O=Zowe\\, Inc."
        r.hsetnx("gateway", "k1", '{"key":"k1","value":"v1","created":"1700000000000"}')
        r.hsetnx("gateway", "lb.user:svc", '{"key":"lb.user:svc","value":"{\\"instanceId\\":\\"a:1\\"}",'
                 '"created":"1700000000001"}')
        r.hsetnx(zowe_dn, "salt", '{"key":"salt","value":"\\u0001\u00e9\ufffd","created":"1700000000002"}')
        r.hsetnx(f"{zowe_dn}, SERVICE=zaas", "k", '{"key":"k","value":"both"}')
        server = servers.start(name="zowe-env", env=environ(
            CACHING_STORAGE_MODE="redis", CACHING_STORAGE_REDIS_MASTERNODEURI=f"{PASSWORD}@127.0.0.1:{port}",
            CACHING_STORAGE_REDIS_TIMEOUT="5", CACHING_STORAGE_REDIS_SSL_ENABLED="false"))
        assert PASSWORD not in server.out.read_text() and f"redis://127.0.0.1:{port}" in server.out.read_text()
        gw, dn, both = {SID: "gateway"}, {DN: zowe_dn}, {DN: zowe_dn, SID: "zaas"}
        with server.client() as c:
            got = c.get("/cache/k1", headers=gw).json()
            assert (got["value"], got["created"]) == ("v1", "1700000000000")
            assert json.loads(c.get("/cache/lb.user:svc", headers=gw).json()["value"]) == {"instanceId": "a:1"}
            assert set(c.get("/cache", headers=gw).json()) == {"k1", "lb.user:svc"}
            assert c.get("/cache/salt", headers=dn).json()["value"] == "\u0001\u00e9\ufffd"
            assert c.get("/cache/k", headers=both).json()["value"] == "both"
            assert c.get("/cache/k1", headers={SID: "other"}).status_code == 404
            # and back: what ksds writes is what Zowe's RedisEntry reads
            assert c.post("/cache", json={"key": "k2", "value": "v2", "created": "1700000000003"},
                          headers=gw).status_code == 201
            assert r.hget("gateway", "k2") == b'{"key":"k2","value":"v2","created":"1700000000003"}'
            assert c.put("/cache", json={"key": "k1", "value": "new \u00e9\n"}, headers=gw).status_code == 204
            stored = as_zowe_reads(r.hget("gateway", "k1") or b"")
            assert stored["value"] == "new \u00e9\n" and "serviceId" not in stored
            assert c.post("/cache", json={"key": "e", "value": ""}, headers=dn).status_code == 201
            assert "value" not in as_zowe_reads(r.hget(zowe_dn, "e") or b"")  # NON_EMPTY, as Jackson writes it
            assert c.get("/cache/e", headers=dn).json()["value"] == ""
            for name in (b"gateway", zowe_dn.encode(), f"{zowe_dn}, SERVICE=zaas".encode()):
                for raw in r.hgetall(name).values():  # Zowe's HGETALL of readForService
                    as_zowe_reads(raw)
            # ksds's own keys (its count and expiry indexes) are apart from every service's hash
            extra = {k for k in r.keys("*") if k not in (b"gateway", zowe_dn.encode(),
                                                         f"{zowe_dn}, SERVICE=zaas".encode())}
            assert extra and all(k.startswith(b"\0ksds:") for k in extra), extra
            assert c.delete("/cache/k2", headers=gw).status_code == 204 and not r.hexists("gateway", "k2")
            assert c.delete("/cache", headers=gw).status_code == 200 and not r.exists("gateway")
        r.close()


# --- timeouts and restarts ------------------------------------------------------------------------------------------


def test_command_timeout_and_reconnect_after_redis_restarts(servers: Servers) -> None:
    """A command that takes longer than ``--redis-timeout`` answers 503 after that long; while Redis is down every
    request is 503 at once; the first request after Redis is back succeeds (no retry by the client, no restart of
    ksds serve), after a clean stop and after SIGKILL."""
    with redis_processes() as (workdir, procs):
        from servers import RedisProcess

        redis_proc = RedisProcess("restarts", free_port(), [], workdir).start()
        procs.append(redis_proc)
        server = servers.start("--storage", "redis", "--redis-url", f"127.0.0.1:{redis_proc.port}",
                               "--redis-timeout", "0.5", name="restarts")
        h = {SID: "gw"}
        with server.client() as c, redis.Redis(port=redis_proc.port) as r:
            assert c.post("/cache", json={"key": "k", "value": "v"}, headers=h).status_code == 201
            r.client_pause(1500, all=True)
            paused = time.monotonic()
            t = time.monotonic()
            assert_503(c.get("/cache/k", headers=h), "TimeoutError")
            assert 0.4 < time.monotonic() - t < 1.4
            time.sleep(max(0.0, paused + 1.6 - time.monotonic()))
            assert c.get("/cache/k", headers=h).json()["value"] == "v"
            for n, stop in enumerate((redis_proc.stop, redis_proc.kill)):
                stop()
                for _ in range(2):
                    t = time.monotonic()
                    assert_503(c.get("/cache/k", headers=h), "ConnectionError")
                    assert time.monotonic() - t < 1.0
                redis_proc.start()  # empty again: no persistence
                assert c.post("/cache", json={"key": f"after{n}", "value": "v"}, headers=h).status_code == 201
                assert c.get(f"/cache/after{n}", headers=h).status_code == 200
            health = httpx.get(server.base + "/cachingservice/application/health", timeout=10)
            assert health.status_code == 200


# --- Sentinel -------------------------------------------------------------------------------------------------------


def test_sentinel_with_a_replica_and_a_failover(servers: Servers) -> None:
    """Zowe's Sentinel variables: the master found through the Sentinel (the first node listed is down), the
    data nodes' password from masterNodeUri (whose host and port Sentinel mode does not use), the Sentinel's own
    from its node; after the master dies and the Sentinel promotes the replica, requests reach the new master."""
    with redis_sentinel(password=PASSWORD, sentinel_password="sentinel-pw") as setup:
        server = servers.start(name="sentinel", env=environ(
            CACHING_STORAGE_MODE="redis",
            CACHING_STORAGE_REDIS_MASTERNODEURI=f"{PASSWORD}@127.0.0.1:{free_port()}",
            CACHING_STORAGE_REDIS_SENTINEL_ENABLED="true",
            CACHING_STORAGE_REDIS_SENTINEL_MASTERINSTANCE=setup.NAME,
            CACHING_STORAGE_REDIS_SENTINEL_NODES=f"127.0.0.1:{free_port()}, sentinel-pw@127.0.0.1:"
                                                 f"{setup.sentinel.port}",
            CACHING_STORAGE_REDIS_TIMEOUT="2"))
        assert "Sentinel master 'mymaster' via 127.0.0.1:" in server.out.read_text()
        h = {SID: "gw"}
        with server.client() as c:
            assert c.post("/cache", json={"key": "before", "value": "v"}, headers=h).status_code == 201
            with setup.data(setup.master) as m:
                assert as_zowe_reads(m.hget("gw", "before") or b"")["value"] == "v"
                assert m.wait(1, 5000) == 1  # on the replica too
            setup.master.kill()
            end = time.monotonic() + 30
            while (r := c.post("/cache", json={"key": "after", "value": "v"}, headers=h)).status_code != 201:
                assert_503(r, "")
                assert time.monotonic() < end, "no failover in 30 s"
                time.sleep(0.2)
            assert setup.master_port() == setup.replica.port
            with setup.data(setup.replica) as new_master:
                assert new_master.info("replication")["role"] == "master"
                assert set(new_master.hkeys("gw")) == {b"before", b"after"}
            assert c.get("/cache/before", headers=h).json()["value"] == "v"


# --- TLS ------------------------------------------------------------------------------------------------------------


def write_stores(pki: Path, d: Path) -> dict[str, Path]:
    """client-a's key store as PEM (certificate and key in one file) and as PKCS#12, and the CA as a Java trust
    store (PKCS#12 as keytool writes it)."""
    cert = x509.load_pem_x509_certificate((pki / "client-a.pem").read_bytes())
    key: Any = serialization.load_pem_private_key((pki / "client-a.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    out = {"pem": d / "client-a.keystore.pem", "p12": d / "client-a.p12", "trust": d / "truststore.p12"}
    out["pem"].write_bytes((pki / "client-a.pem").read_bytes() + (pki / "client-a.key").read_bytes())
    out["p12"].write_bytes(pkcs12.serialize_key_and_certificates(
        b"client-a", key, cert, [ca], serialization.BestAvailableEncryption(b"ks-password")))
    out["trust"].write_bytes(pkcs12.serialize_java_truststore(
        [pkcs12.PKCS12Certificate(ca, b"ca")], serialization.BestAvailableEncryption(b"ts-password")))
    return out


def test_tls_with_pem_and_pkcs12_stores(servers: Servers, tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    stores = write_stores(pki, tmp_path)
    with redis_tls_server(pki, auth_clients="yes") as tls:
        # PEM stores on the command line
        pem = servers.start("--storage", "redis", "--redis-url", f"127.0.0.1:{tls.port}", "--redis-tls",
                            "--redis-keystore", str(stores["pem"]), "--redis-truststore", str(pki / "ca.pem"),
                            name="tls-pem")
        assert f"rediss://127.0.0.1:{tls.port}" in pem.out.read_text()
        h = {SID: "gw"}
        with pem.client() as c:
            assert c.post("/cache", json={"key": "k", "value": "over TLS"}, headers=h).status_code == 201
        # PKCS#12 stores through Zowe's variables (the key file ksds makes from the PKCS#12 goes with the server)
        tmp = tmp_path / "tmp"
        tmp.mkdir()
        p12 = servers.start(name="tls-p12", env=environ(
            TMPDIR=str(tmp), CACHING_STORAGE_MODE="redis", CACHING_STORAGE_REDIS_MASTERNODEURI=f"127.0.0.1:{tls.port}",
            CACHING_STORAGE_REDIS_SSL_ENABLED="true", CACHING_STORAGE_REDIS_SSL_KEYSTORE=str(stores["p12"]),
            CACHING_STORAGE_REDIS_SSL_KEYSTOREPASSWORD="ks-password",
            CACHING_STORAGE_REDIS_SSL_TRUSTSTORE=str(stores["trust"]),
            CACHING_STORAGE_REDIS_SSL_TRUSTSTOREPASSWORD="ts-password"))
        with p12.client() as c:
            assert c.get("/cache/k", headers=h).json()["value"] == "over TLS"
        assert p12.stop() == 0
        assert os.listdir(tmp) == []
        # what must fail does: the server's certificate from an untrusted CA, no client certificate, no TLS
        node = RedisNode("127.0.0.1", tls.port)
        cases = [
            (RedisConfig(node=node, tls=True, keystore=rc.Store(str(stores["pem"])),
                         truststore=rc.Store(str(pki / "evil-ca.pem"))), "CERTIFICATE_VERIFY_FAILED"),
            (RedisConfig(node=node, tls=True, truststore=rc.Store(str(pki / "ca.pem"))), ""),
            (RedisConfig(node=node, timeout=1), ""),
        ]
        for config, says in cases:
            s = RedisStorage(config)
            with pytest.raises(StorageError) as e:
                s.read("gw", "k")
            assert e.value.status == 503 and says in str(e.value.params[0]), (config, e.value.params)
            s.close()
        # Zowe's default stores: the server's own certificate, key and CAs (here client-a's, which Redis trusts)
        import argparse

        args = argparse.Namespace(redis_url=f"127.0.0.1:{tls.port}", redis_tls=True, tls_cert=str(pki / "client-a.pem"),
                                  tls_key=str(pki / "client-a.key"), tls_ca=str(pki / "ca.pem"))
        s = RedisStorage(rc.from_sources(args, {}))
        assert s.read("gw", "k").value == "over TLS"
        s.close()
