"""Zowe's Redis configuration as ksds reads it (:mod:`ksds.caching.redis_config`): ``masterNodeUri`` as Zowe's
``RedisConfig`` parses it, Sentinel nodes, Spring's booleans and lists, the CACHING_STORAGE_REDIS_* variables
against the command line, and the key and trust stores (PEM, PKCS#12 as keytool writes it, and the stores ksds
cannot read). No servers here; tests/test_service_redis_zowe.py uses all of it against real Redis servers."""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from servers import make_pki

from ksds.caching import redis_config as rc
from ksds.caching.redis_config import RedisConfig, RedisConfigError, RedisNode, Store
from ksds.cli._common import ArgumentParser, UsageError

SECRET = "s3cr3t-Pa55"


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="ksds serve")
    rc.add_arguments(p)
    return p


def config(*argv: str, env: dict[str, str] | None = None, **extra: object) -> RedisConfig:
    args = parser().parse_args(list(argv))
    for k, v in extra.items():
        setattr(args, k, v)
    return rc.from_sources(args, env or {})


def error(*argv: str, env: dict[str, str] | None = None, **extra: object) -> str:
    with pytest.raises(RedisConfigError) as e:
        config(*argv, env=env, **extra)
    return str(e.value)


# --- masterNodeUri and Sentinel nodes -------------------------------------------------------------------------------


@pytest.mark.parametrize("text, want", [
    # Zowe's forms (RedisConfig.parseCredentialsFromUri, parseHostFromUri, parsePortFromUri)
    (f"{SECRET}@redis.example.com:6380", RedisNode("redis.example.com", 6380, "default", SECRET)),
    (f"zowe:{SECRET}@10.1.2.3", RedisNode("10.1.2.3", 6379, "zowe", SECRET)),
    ("localhost", RedisNode("localhost", 6379, "default", None)),
    ("localhost:7000", RedisNode("localhost", 7000, "default", None)),
    ("default:heslo@localhost:6379", RedisNode("localhost", 6379, "default", "heslo")),  # Zowe's application.yml
    ("default:pa:ss@h:1", RedisNode("h", 1, "default", "pa:ss")),  # the first ':' ends the user, as in Zowe
    (":pw@h", RedisNode("h", 6379, "default", "pw")),
    ("@h", RedisNode("h", 6379, "default", None)),
    # ksds's additions: a password holding '@' (Zowe cuts at the first '@'), an IPv6 host
    ("u:p@ss@h:2", RedisNode("h", 2, "u", "p@ss")),
    (f"{SECRET}@[::1]:6380", RedisNode("::1", 6380, "default", SECRET)),
    ("  h:3  ", RedisNode("h", 3)),
])
def test_master_node_uri_as_zowe_parses_it(text: str, want: RedisNode) -> None:
    got = rc.parse_node(text, "masterNodeUri")
    assert (got, got.password) == (want, want.password)
    c = RedisConfig(node=got)
    assert c.credentials()[0] == (None if want.username == "default" else want.username)
    assert c.credentials()[1] == want.password
    if want.password:
        assert want.password not in str(c) and want.password not in repr(c)


@pytest.mark.parametrize("text, says", [
    ("", "is empty"),
    (f"{SECRET}@", "names no host"),
    (f"{SECRET}@host:abc", "the port 'abc' is not a port number"),
    (f"{SECRET}@host:0", "the port '0' is not a port number"),
    (f"{SECRET}@host:65536", "the port '65536' is not a port number"),
    (f"{SECRET}@[::1:6379", "an IPv6 host is written [address]:port"),
    ("host/0", "names no host"),
])
def test_master_node_uri_errors_name_the_value_without_its_password(text: str, says: str) -> None:
    with pytest.raises(RedisConfigError) as e:
        rc.parse_node(text, rc.ENV_MASTER_NODE_URI)
    assert says in str(e.value) and rc.ENV_MASTER_NODE_URI in str(e.value)
    assert SECRET not in str(e.value)
    if "@" in text:
        assert "***@" in str(e.value)


def test_sentinel_nodes() -> None:
    nodes = rc.parse_nodes("sentinelpassword@localhost:26379, sentinelpassword@localhost:26380,other", "nodes")
    assert [(n.host, n.port, n.password) for n in nodes] == [
        ("localhost", 26379, "sentinelpassword"), ("localhost", 26380, "sentinelpassword"), ("other", 6379, None)]
    assert "empty node" in pytest.raises(RedisConfigError, rc.parse_nodes, "a:1,,b:2", "nodes").value.args[0]
    assert "is empty" in pytest.raises(RedisConfigError, rc.parse_nodes, " , ", "nodes").value.args[0]
    assert "nodes node 2" in pytest.raises(RedisConfigError, rc.parse_nodes, "a:1,b:x", "nodes").value.args[0]


def test_urls_and_masking() -> None:
    c = RedisConfig.from_address("redis://gw:pw%40x@h:7/3")
    assert c.credentials() == ("gw", "pw@x", 3) and not c.tls and str(c) == "redis://gw:***@h:7/3"
    assert RedisConfig.from_address("rediss://h:7").tls
    assert RedisConfig.from_address(f"{SECRET}@h").node == RedisNode("h", 6379, "default", SECRET)
    with pytest.raises(RedisConfigError, match="a Redis URL starts with redis://, rediss://, unix://"):
        RedisConfig.from_address("http://h:7")
    with pytest.raises(RedisConfigError, match="tls must agree"):
        RedisConfig(url="rediss://h", tls=False)
    with pytest.raises(RedisConfigError, match="seconds > 0"):
        RedisConfig(node=RedisNode("h"), timeout=0)
    assert rc.mask(f"u:{SECRET}@h") == "u:***@h" and rc.mask(f"{SECRET}@h") == "***@h" and rc.mask("h:1") == "h:1"


# --- the environment and the command line --------------------------------------------------------------------------

ZOWE_ENV = {
    rc.ENV_MASTER_NODE_URI: f"{SECRET}@redis1:6380",
    rc.ENV_TIMEOUT: "30",
    rc.ENV_SENTINEL_ENABLED: "true",
    rc.ENV_SENTINEL_MASTER: "redismaster",
    rc.ENV_SENTINEL_NODES: "sp@s1:26379,sp@s2:26380",
    rc.ENV_SSL_ENABLED: "false",
}


def test_zowe_environment_variables() -> None:
    c = config(env=ZOWE_ENV)
    assert c.timeout == 30 and not c.tls
    assert c.sentinel is not None and c.sentinel.master == "redismaster"
    assert [(str(n), n.password) for n in c.sentinel.nodes] == [("s1:26379", "sp"), ("s2:26380", "sp")]
    assert c.credentials() == (None, SECRET, 0)  # Sentinel mode: the masterNodeUri's credentials only
    assert str(c) == "Sentinel master 'redismaster' via s1:26379,s2:26380" and SECRET not in repr(c)
    # Spring's indexed list variables, and its booleans
    env = {k: v for k, v in ZOWE_ENV.items() if k != rc.ENV_SENTINEL_NODES}
    env |= {f"{rc.ENV_SENTINEL_NODES}_1": "s2:2", f"{rc.ENV_SENTINEL_NODES}_0_": "s1:1",
            rc.ENV_SENTINEL_ENABLED: " YES "}
    c = config(env=env)
    assert c.sentinel is not None and [str(n) for n in c.sentinel.nodes] == ["s1:1", "s2:2"]
    assert "are both set" in error(env=ZOWE_ENV | {f"{rc.ENV_SENTINEL_NODES}_0": "x:1"})
    # Sentinel off (as in Zowe's application.yml): its master and nodes in the environment are ignored, as Zowe
    # ignores them; so are key and trust stores without TLS (Zowe's yml always names the server's)
    c = config(env=ZOWE_ENV | {rc.ENV_SENTINEL_ENABLED: "off", rc.ENV_KEYSTORE: "/nowhere.p12"})
    assert c.sentinel is None and c.node == RedisNode("redis1", 6380, "default", SECRET) and c.keystore is None
    # no timeout: Zowe's 60 s per command; connects take at most 10 s
    c = config(env={rc.ENV_MASTER_NODE_URI: "h"})
    assert (c.timeout, c.connect_timeout) == (60.0, 10.0)
    assert config("--redis-timeout", "0.25", env={rc.ENV_MASTER_NODE_URI: "h"}).connect_timeout == 0.25


def test_the_command_line_wins() -> None:
    c = config("--redis-url", "other:7", "--redis-timeout", "2.5", "--no-redis-sentinel", env=ZOWE_ENV)
    assert c.node == RedisNode("other", 7) and c.timeout == 2.5 and c.sentinel is None
    c = config("--redis-sentinel-master", "m2", "--redis-sentinel-nodes", "x:1", env=ZOWE_ENV)
    assert c.sentinel == rc.SentinelConfig("m2", (RedisNode("x", 1),))
    c = config("--redis-url", "rediss://h:1", env={rc.ENV_SSL_ENABLED: "true"})
    assert c.tls and c.url == "rediss://h:1"
    c = config("--redis-tls", env={rc.ENV_MASTER_NODE_URI: "h", rc.ENV_SSL_ENABLED: "false"})
    assert c.tls and str(c) == "rediss://h:6379"
    assert rc.options_given(parser().parse_args(["--redis-timeout", "1", "--no-redis-tls"])) == [
        "--redis-timeout", "--redis-tls"]


@pytest.mark.parametrize("argv, env, says", [
    ((), {}, "the redis storage needs --redis-url ADDRESS (or CACHING_STORAGE_REDIS_MASTERNODEURI)"),
    ((), {rc.ENV_MASTER_NODE_URI: "h", rc.ENV_TIMEOUT: "abc"}, "CACHING_STORAGE_REDIS_TIMEOUT must be a number of "
     "seconds > 0 (Zowe's default is 60), not 'abc'"),
    ((), {rc.ENV_MASTER_NODE_URI: "h", rc.ENV_TIMEOUT: "-1"}, "CACHING_STORAGE_REDIS_TIMEOUT must be a number"),
    ((), {rc.ENV_MASTER_NODE_URI: "h", rc.ENV_SSL_ENABLED: "maybe"},
     "CACHING_STORAGE_REDIS_SSL_ENABLED must be true or false, not 'maybe'"),
    (("--redis-sentinel",), {}, "Redis Sentinel needs the master's name: --redis-sentinel-master NAME (or "
     "CACHING_STORAGE_REDIS_SENTINEL_MASTERINSTANCE)"),
    (("--redis-sentinel", "--redis-sentinel-master", "m"), {}, "Redis Sentinel needs its nodes"),
    (("--redis-url", "h", "--redis-sentinel-nodes", "s:1"), {}, "--redis-sentinel-nodes is for Redis Sentinel: add "
     "--redis-sentinel (or CACHING_STORAGE_REDIS_SENTINEL_ENABLED=true)"),
    (("--redis-url", "h", "--redis-keystore", "k.p12"), {}, "--redis-keystore is for TLS: add --redis-tls"),
    (("--redis-url", "redis://h", "--redis-tls"), {}, "'redis://h' says TLS off by its scheme, --redis-tls says on"),
    ((), {rc.ENV_MASTER_NODE_URI: "rediss://h", rc.ENV_SSL_ENABLED: "false"},
     "CACHING_STORAGE_REDIS_SSL_ENABLED says off"),
    (("--redis-url", "unix:///tmp/r.sock", "--redis-tls"), {}, "says TLS off"),
    (("--redis-url", "mongodb://h"), {}, "a Redis URL starts with redis://, rediss://, unix://"),
    (("--redis-url", f"{SECRET}@h:x"), {}, "--redis-url '***@h:x': the port 'x' is not a port number"),
])
def test_configuration_errors(argv: tuple[str, ...], env: dict[str, str], says: str) -> None:
    message = error(*argv, env=env)
    assert says in message and SECRET not in message


def test_a_bad_timeout_on_the_command_line_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"--redis-timeout must be a number of seconds > 0"):
        parser().parse_args(["--redis-timeout", "0"])


# --- key and trust stores ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("redis-pki"))


def keystore_p12(pki: Path, who: str, password: str | None) -> bytes:
    cert = x509.load_pem_x509_certificate((pki / f"{who}.pem").read_bytes())
    key = serialization.load_pem_private_key((pki / f"{who}.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    enc = serialization.NoEncryption() if password is None else serialization.BestAvailableEncryption(password.encode())
    return pkcs12.serialize_key_and_certificates(who.encode(), key, cert, [ca], enc)  # type: ignore[arg-type]


def truststore_p12(pki: Path, password: str, *cas: str) -> bytes:
    """A PKCS#12 trust store as Java's keytool writes one (trusted certificate entries, no key)."""
    certs = [pkcs12.PKCS12Certificate(x509.load_pem_x509_certificate((pki / f"{ca}.pem").read_bytes()), ca.encode())
             for ca in cas]
    return pkcs12.serialize_java_truststore(certs, serialization.BestAvailableEncryption(password.encode()))


def test_pem_stores(pki: Path, tmp_path: Path) -> None:
    both = tmp_path / "client.pem"
    both.write_bytes((pki / "client-a.pem").read_bytes() + (pki / "client-a.key").read_bytes())
    cert = rc.client_certificate(Store(str(both)))
    assert (cert.certfile, cert.keyfile, cert.password) == (str(both), None, None)
    cert.cleanup()
    assert both.exists()  # a PEM store is used where it is
    # the server's certificate and key in two files (Zowe's default key store is the server's)
    cert = rc.client_certificate(Store(str(pki / "server.pem"), key_path=str(pki / "server.key"), origin="--tls-cert"))
    assert cert.keyfile == str(pki / "server.key")
    assert "no private key in it" in pytest.raises(
        RedisConfigError, rc.client_certificate, Store(str(pki / "client-a.pem"), origin="--redis-keystore")
    ).value.args[0]
    # an encrypted key: the key store password opens it
    key = serialization.load_pem_private_key((pki / "client-a.key").read_bytes(), None)
    locked = tmp_path / "locked.pem"
    locked.write_bytes((pki / "client-a.pem").read_bytes() + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(SECRET.encode())))
    assert rc.client_certificate(Store(str(locked), SECRET)).password == SECRET
    m = pytest.raises(RedisConfigError, rc.client_certificate, Store(str(locked), origin=rc.ENV_KEYSTORE)).value
    assert f"{rc.ENV_KEYSTORE} {locked}: its key is encrypted; give the password: --redis-keystore-password or " \
           f"{rc.ENV_KEYSTORE_PASSWORD}" == str(m)
    m = pytest.raises(RedisConfigError, rc.client_certificate, Store(str(locked), "wrong")).value
    assert "a wrong password?" in str(m)
    # trust stores
    assert "BEGIN CERTIFICATE" in rc.trusted_pem(Store(str(pki / "ca.pem")))
    with pytest.raises(RedisConfigError, match="a PEM file with no certificate"):
        rc.trusted_pem(Store(str(pki / "ca.key"), origin="--redis-truststore"))


def test_pkcs12_stores(pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # TMPDIR is read again
    p12 = tmp_path / "client.p12"
    p12.write_bytes(keystore_p12(pki, "client-a", SECRET))
    cert = rc.client_certificate(Store(str(p12), SECRET, origin=rc.ENV_KEYSTORE))
    made = Path(cert.certfile)
    assert made.parent == tmp_path / "tmp" and stat.S_IMODE(made.stat().st_mode) == 0o600
    text = made.read_text()
    assert "ENCRYPTED PRIVATE KEY" in text and text.count("BEGIN CERTIFICATE") == 2  # the key locked; the chain
    assert cert.password and cert.password != SECRET  # a random password, in memory only
    cert.cleanup()
    assert not made.exists()
    # a store without a password opens without one
    open_p12 = tmp_path / "open.p12"
    open_p12.write_bytes(keystore_p12(pki, "client-a", None))
    rc.client_certificate(Store(str(open_p12))).cleanup()
    m = str(pytest.raises(RedisConfigError, rc.client_certificate, Store(str(p12), "wrong", origin=rc.ENV_KEYSTORE))
            .value)
    assert m == (f"{rc.ENV_KEYSTORE} {p12}: the password does not open it, or it is not a PKCS#12 file (check "
                 f"--redis-keystore-password or {rc.ENV_KEYSTORE_PASSWORD})")
    m = str(pytest.raises(RedisConfigError, rc.client_certificate, Store(str(p12))).value)
    assert "not a PKCS#12 file that opens without a password (give its password" in m
    # a Java trust store (keytool's PKCS#12): its certificates, as PEM
    trust = tmp_path / "trust.p12"
    trust.write_bytes(truststore_p12(pki, "changeit", "ca", "evil-ca"))
    pem = rc.trusted_pem(Store(str(trust), "changeit", origin=rc.ENV_TRUSTSTORE))
    want = {x509.load_pem_x509_certificate((pki / f"{c}.pem").read_bytes()) for c in ("ca", "evil-ca")}
    assert set(x509.load_pem_x509_certificates(pem.encode())) == want
    m = str(pytest.raises(RedisConfigError, rc.trusted_pem, Store(str(trust), "x", origin=rc.ENV_TRUSTSTORE)).value)
    assert f"check --redis-truststore-password or {rc.ENV_TRUSTSTORE_PASSWORD}" in m
    # a trust store is no key store
    m = str(pytest.raises(RedisConfigError, rc.client_certificate, Store(str(trust), "changeit")).value)
    assert "holds no private key with its certificate (a trust store?)" in m
    assert os.listdir(tmp_path / "tmp") == []


def test_stores_ksds_cannot_read(tmp_path: Path) -> None:
    jks = tmp_path / "keystore.jks"
    jks.write_bytes(b"\xfe\xed\xfe\xed" + bytes(60))
    m = str(pytest.raises(RedisConfigError, rc.client_certificate, Store(str(jks), origin=rc.ENV_KEYSTORE)).value)
    assert m == (f"{rc.ENV_KEYSTORE} {jks}: a Java JKS key store, which ksds cannot read; convert it to PKCS#12: "
                 f"keytool -importkeystore -srckeystore {jks} -destkeystore {jks}.p12 -deststoretype PKCS12")
    m = str(pytest.raises(RedisConfigError, rc.trusted_pem, Store("safkeyring://ZWESVUSR/ZoweKeyring")).value)
    assert "a z/OS key ring exists only on z/OS" in m
    missing = Store(str(tmp_path / "none.pem"), origin="--redis-truststore")
    m = str(pytest.raises(RedisConfigError, rc.trusted_pem, missing).value)
    assert m == f"--redis-truststore {tmp_path / 'none.pem'}: No such file or directory"


def test_tls_stores_and_zowes_defaults(pki: Path, tmp_path: Path) -> None:
    p12 = tmp_path / "client.p12"
    p12.write_bytes(keystore_p12(pki, "client-a", SECRET))
    env = {rc.ENV_MASTER_NODE_URI: "127.0.0.1:6390", rc.ENV_SSL_ENABLED: "true", rc.ENV_KEYSTORE: str(p12),
           rc.ENV_KEYSTORE_PASSWORD: SECRET, rc.ENV_TRUSTSTORE: str(pki / "ca.pem")}
    c = config(env=env)
    assert c.tls and c.keystore == Store(str(p12), SECRET, origin=rc.ENV_KEYSTORE)
    assert c.truststore == Store(str(pki / "ca.pem"), origin=rc.ENV_TRUSTSTORE) and SECRET not in repr(c)
    # the stores are read when the configuration is made: a wrong password is an error at start
    assert "the password does not open it" in error(env=env | {rc.ENV_KEYSTORE_PASSWORD: "wrong"})
    # the command line wins, store by store
    both = tmp_path / "both.pem"
    both.write_bytes((pki / "client-b.pem").read_bytes() + (pki / "client-b.key").read_bytes())
    c = config("--redis-keystore", str(both), "--redis-keystore-password", "unused", env=env)
    assert c.keystore == Store(str(both), "unused", origin="--redis-keystore")
    # no stores given: Zowe's defaults, the server's certificate, key and CAs (--tls-cert, --tls-key, --tls-ca)
    c = config("--redis-url", "127.0.0.1", "--redis-tls", tls_cert=str(pki / "server.pem"),
               tls_key=str(pki / "server.key"), tls_ca=str(pki / "ca.pem"))
    assert c.keystore == Store(str(pki / "server.pem"), key_path=str(pki / "server.key"), origin="--tls-cert")
    assert c.truststore == Store(str(pki / "ca.pem"), origin="--tls-ca")
    # not for a redis-py URL, ksds's own form (its query may name ssl_certfile, ssl_ca_certs)
    c = config("--redis-url", "rediss://127.0.0.1", tls_cert=str(pki / "server.pem"), tls_ca=str(pki / "ca.pem"))
    assert c.tls and c.keystore is None and c.truststore is None
    # and none at all: the system's CAs, no client certificate
    c = config("--redis-url", "127.0.0.1", "--redis-tls")
    assert c.keystore is None and c.truststore is None


def test_serve_reports_redis_errors_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CACHING_", "ZWE_"))}
    cases = [
        (("--storage", "redis"), {}, "needs --redis-url"),
        (("--storage", "redis", "--redis-url", f"{SECRET}@h:x"), {}, "the port 'x' is not a port number"),
        (("--storage", "memory", "--redis-timeout", "5"), {}, "--redis-timeout: only for the redis storage"),
        (("--storage", "redis", "--redis-timeout", "0"), {}, "--redis-timeout must be a number of seconds > 0"),
        (("--storage", "redis", "--redis-url", "h", "--redis-tls", "--redis-keystore", "missing.p12"), {},
         "--redis-keystore missing.p12: No such file or directory"),
        ((), {"CACHING_STORAGE_MODE": "redis", rc.ENV_MASTER_NODE_URI: "h", rc.ENV_SENTINEL_ENABLED: "true"},
         "Redis Sentinel needs the master's name"),
    ]
    for argv, extra, says in cases:
        r = subprocess.run([sys.executable, "-m", "ksds", "serve", *argv], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path, env=env | extra)
        assert r.returncode == 2 and says in r.stderr, (argv, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and SECRET not in r.stderr, (argv, r.stderr)
