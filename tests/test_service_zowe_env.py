"""Item 8 of issue 13: Zowe's launcher variables (``ZWE_configs_*`` and the ``ZWE_*`` that the caching service's
``start.sh`` reads) for ``ksds serve``, translated as start.sh translates them; real ``ksds serve`` processes started
with nothing but those variables."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import API, free_port

from ksds.caching.zowe_env import ZoweEnvError, translate
from ksds.cli import build_parser
from ksds.cli._common import CliError
from ksds.cli.serve import storage_options

SID = {"X-CS-Service-ID": "gateway"}


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ZWE_ or CACHING_ variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZWE_", "CACHING_"))}
    env.update(extra)
    return env


# --- the translation ------------------------------------------------------------------------------------------------


def test_start_sh_mapping() -> None:
    launch = translate({
        "ZWE_configs_storage_mode": "VSAM",
        "ZWE_configs_storage_size": "250",
        "ZWE_configs_storage_evictionStrategy": "removeOldest",
        "ZWE_configs_storage_vsam_name": "ZWE.CACHE",
        "ZWE_configs_port": "7556",
        "ZWE_configs_zowe_network_server_listenAddresses_0": "10.1.1.1",
        "ZWE_zowe_network_server_listenAddresses_0": "10.2.2.2",
        "ZWE_haInstance_hostname": "zos1.example.com",
        "ZWE_DISCOVERY_SERVICES_LIST": "https://a:7553/eureka/, https://b:7553/eureka/",
        "ZWE_components_gateway_port": "7654",
        "PATH": "/bin",
    })
    env = launch.environ
    assert env["CACHING_STORAGE_MODE"] == "VSAM"
    assert env["CACHING_STORAGE_SIZE"] == "250"
    assert env["CACHING_STORAGE_EVICTIONSTRATEGY"] == "removeOldest"
    assert env["CACHING_STORAGE_VSAM_NAME"] == "//'ZWE.CACHE'"  # start.sh: VSAM_FILE_NAME=//\'${...}\'
    assert env["PATH"] == "/bin"
    assert (launch.port, launch.host, launch.hostname) == (7556, "10.1.1.1", "zos1.example.com")
    assert launch.discovery == ("https://a:7553/eureka/", "https://b:7553/eureka/")
    assert launch.gateway_port == 7654
    assert launch.notes == ()
    # the listen address of the whole of Zowe when the component has none
    assert translate({"ZWE_zowe_network_server_listenAddresses_0": "10.2.2.2"}).host == "10.2.2.2"


def test_zwe_configs_win_over_caching_variables_as_in_zowe() -> None:
    """start.sh passes ZWE_configs_* as -D system properties, which Spring ranks above environment variables."""
    launch = translate({"ZWE_configs_storage_mode": "redis", "CACHING_STORAGE_MODE": "VSAM",
                        "ZWE_configs_storage_size": "5", "CACHING_STORAGE_SIZE": "5",
                        "CACHING_STORAGE_EVICTIONSTRATEGY": "removeOldest"})
    assert launch.environ["CACHING_STORAGE_MODE"] == "redis"
    assert launch.environ["CACHING_STORAGE_EVICTIONSTRATEGY"] == "removeOldest"  # no ZWE_ variable: kept
    assert len(launch.notes) == 1 and launch.notes[0].startswith("ZWE_configs_storage_mode=redis wins over "
                                                                 "CACHING_STORAGE_MODE=VSAM")


def test_unset_and_empty_are_the_same() -> None:
    """start.sh's ${VAR:-default}: an empty variable is an unset one (ksds then passes nothing)."""
    launch = translate({"ZWE_configs_storage_mode": "", "ZWE_configs_port": " ", "CACHING_STORAGE_MODE": "inMemory"})
    assert launch.environ["CACHING_STORAGE_MODE"] == "inMemory"
    assert launch.port is None and launch.used == ()
    assert "CACHING_STORAGE_SIZE" not in translate({}).environ


@pytest.mark.parametrize(("name", "value", "says"), [
    ("ZWE_configs_storage_mode", "infinispan", "ksds does not provide the infinispan storage; it serves inMemory, "
                                               "VSAM (a ksds data set"),
    ("ZWE_configs_storage_mode", "hazelcast", "serves the storage modes inMemory, VSAM (a ksds data set) or redis"),
    ("ZWE_configs_storage_size", "lots", "a whole number of entries >= 0"),
    ("ZWE_configs_storage_size", "-1", "a whole number of entries >= 0"),
    ("ZWE_configs_storage_evictionStrategy", "lru", "the eviction strategies reject and removeOldest"),
    ("ZWE_configs_port", "70000", "a port number (0-65535)"),
    ("ZWE_components_gateway_port", "x", "a port number (1-65535)"),
    ("ZWE_DISCOVERY_SERVICES_LIST", "discovery:7553", "is not a discovery service URL"),
])
def test_values_ksds_cannot_honour(name: str, value: str, says: str) -> None:
    with pytest.raises(ZoweEnvError) as e:
        translate({name: value})
    assert str(e.value).startswith(f"{name}={value!r}: "), str(e.value)
    assert says in str(e.value)


def serve_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def test_storage_options_read_the_translation(tmp_path: Path) -> None:
    env = {"ZWE_configs_storage_mode": "VSAM", "ZWE_configs_storage_vsam_name": str(tmp_path / "c.ksds"),
           "ZWE_configs_storage_size": "7", "ZWE_configs_storage_evictionStrategy": "removeOldest"}
    opts = storage_options(serve_args(), env)
    assert opts == {"mode": "VSAM", "dataset": str(tmp_path / "c.ksds"), "size": 7, "eviction": "removeOldest"}
    # the command line wins over both
    opts = storage_options(serve_args("--storage", "memory", "--size", "3", "--eviction", "reject"),
                           env | {"CACHING_STORAGE_SIZE": "9"})
    assert opts == {"mode": "memory", "size": 3, "eviction": "reject"}
    with pytest.raises(CliError) as e:
        storage_options(serve_args(), {"ZWE_configs_storage_mode": "infinispan"})
    assert e.value.status == 2 and "ZWE_configs_storage_mode='infinispan'" in str(e.value)


# --- ksds serve started by Zowe's variables -------------------------------------------------------------------------


class Serve:
    """``python -m ksds serve ARGS`` with the environment ``env`` only (plus PATH and the like)."""

    def __init__(self, args: list[str], workdir: Path, env: dict[str, str]) -> None:
        self.out = workdir / "serve.out"
        self.err = workdir / "serve.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "ksds", "serve", *args], stdout=out, stderr=err,
                                         cwd=workdir, env=clean_env(**env))
        end = time.monotonic() + 30
        while not (m := re.search(r"at (https?)://([0-9.]+):(\d+)/", self.out.read_text())):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"ksds serve did not start: {self.logs()}")
            time.sleep(0.02)
        self.host, self.port = m.group(2), int(m.group(3))
        self.api = f"{m.group(1)}://127.0.0.1:{self.port}{API}"

    def logs(self) -> str:
        return f"exit {self.proc.poll()}; stdout {self.out.read_text()!r}; stderr {self.err.read_text()!r}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[list[Serve]]:
    running: list[Serve] = []
    yield running
    for s in running:
        if s.proc.poll() is None:
            s.stop()


def test_serve_from_zowe_variables_alone(tmp_path: Path, serve: list[Serve]) -> None:
    port = free_port()
    dataset = tmp_path / "zwe.cache"
    s = Serve([], tmp_path, {
        "ZWE_configs_port": str(port),
        "ZWE_configs_zowe_network_server_listenAddresses_0": "127.0.0.1",
        "ZWE_configs_storage_mode": "VSAM",
        "ZWE_configs_storage_vsam_name": str(dataset),
        "ZWE_configs_storage_size": "2",
        "ZWE_configs_storage_evictionStrategy": "removeOldest",
        "CACHING_STORAGE_MODE": "inMemory",  # zowe.environments: the ZWE_configs_ value wins, as in Zowe
    })
    serve.append(s)
    assert (s.host, s.port) == ("127.0.0.1", port), s.logs()
    assert f"on ksds data set {dataset} (size 2, eviction removeOldest)" in s.out.read_text()
    assert "ZWE_configs_storage_mode=VSAM wins over CACHING_STORAGE_MODE=inMemory" in s.err.read_text()
    with httpx.Client(base_url=s.api, headers=SID, timeout=10) as c:
        for i, created in enumerate(("1000", "2000", "3000")):
            r = c.post("/cache", json={"key": f"k{i}", "value": "v", "created": created})
            assert r.status_code == 201, r.text
        assert c.get("/cache/k0").status_code == 404  # the oldest, removed by removeOldest at size 2
        assert c.get("/cache/k2").json()["value"] == "v"
    assert dataset.exists()
    assert s.stop() == 0


def test_the_command_line_wins(tmp_path: Path, serve: list[Serve]) -> None:
    s = Serve(["--storage", "memory", "--host", "127.0.0.1", "--port", "0", "--size", "5"], tmp_path, {
        "ZWE_configs_port": "1", "ZWE_configs_storage_mode": "VSAM", "ZWE_configs_storage_size": "2",
    })
    serve.append(s)
    assert s.port != 1
    assert "on memory (size 5, eviction reject)" in s.out.read_text(), s.logs()
    assert s.stop() == 0


@pytest.mark.parametrize(("name", "value"), [("ZWE_configs_storage_mode", "infinispan"),
                                             ("ZWE_configs_storage_size", "ten")])
def test_serve_refuses_what_it_cannot_honour(tmp_path: Path, name: str, value: str) -> None:
    r = subprocess.run([sys.executable, "-m", "ksds", "serve", "--port", "0"], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path, env=clean_env(**{name: value}))
    assert r.returncode == 2, r
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ksds serve: {name}={value!r}: ksds "), r.stderr


# --- Zowe's key store and trust store ---------------------------------------------------------------------------------


def _stores(pki: Path) -> tuple[Path, Path]:
    """Zowe's PKCS#12 key store (the server's key and certificate, alias localhost) and trust store (the CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    key = serialization.load_pem_private_key((pki / "server.key").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((pki / "server.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    enc = serialization.BestAvailableEncryption(b"password")
    ks, ts = pki / "localhost.keystore.p12", pki / "localhost.truststore.p12"
    ks.write_bytes(pkcs12.serialize_key_and_certificates(b"localhost", key, cert, None, enc))  # type: ignore[arg-type]
    ts.write_bytes(pkcs12.serialize_key_and_certificates(None, None, None, [ca], enc))
    return ks, ts


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from servers import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


def zowe_certificates(pki: Path, **extra: str) -> dict[str, str]:
    ks, ts = _stores(pki)
    return {"ZWE_zowe_certificate_keystore_file": str(ks), "ZWE_zowe_certificate_keystore_password": "password",
            "ZWE_zowe_certificate_keystore_alias": "localhost", "ZWE_zowe_certificate_keystore_type": "PKCS12",
            "ZWE_zowe_certificate_truststore_file": str(ts), "ZWE_zowe_certificate_truststore_password": "password",
            **extra}


def test_zowe_tls_from_the_stores(pki: Path, tmp_path: Path) -> None:
    import shutil

    from ksds.caching.zowe_env import zowe_tls

    assert zowe_tls({}) is None
    tls = zowe_tls(zowe_certificates(pki))
    assert tls is not None
    try:
        assert tls.client_auth == "required"  # Zowe's default verifyCertificates: STRICT
        assert Path(tls.key).stat().st_mode & 0o077 == 0 and Path(tls.directory).stat().st_mode & 0o077 == 0
        assert Path(tls.ca or "").read_bytes() == (pki / "ca.pem").read_bytes()
        assert Path(tls.cert).read_bytes() == (pki / "server.pem").read_bytes()
    finally:
        shutil.rmtree(tls.directory)
    relaxed = zowe_tls(zowe_certificates(pki, ZWE_zowe_verifyCertificates="DISABLED"))
    assert relaxed is not None and relaxed.client_auth == "optional"
    shutil.rmtree(relaxed.directory)
    # the component's own variables win over Zowe's; server.ssl.enabled false or AT-TLS: no TLS
    assert zowe_tls(zowe_certificates(pki, ZWE_configs_server_ssl_enabled="false")) is None
    assert zowe_tls(zowe_certificates(pki, ZWE_zowe_network_server_tls_attls="true")) is None
    for extra, says in (
        ({"ZWE_configs_certificate_keystore_type": "JCERACFKS"}, "ZWE_configs_certificate_keystore_type='JCERACFKS': "
                                                                 "ksds reads PKCS12 key stores only"),
        ({"ZWE_configs_certificate_keystore_password": "wrong"}, "ZWE_zowe_certificate_keystore_file="),
        ({"ZWE_zowe_certificate_keystore_alias": "other"}, "holds the key 'localhost', not that one"),
        ({"ZWE_configs_certificate_keystore_file": str(tmp_path / "none.p12")}, "cannot read it"),
    ):
        with pytest.raises(ZoweEnvError) as e:
            zowe_tls(zowe_certificates(pki, **extra))
        assert says in str(e.value), (extra, str(e.value))


def test_serve_with_zowe_certificates(pki: Path, tmp_path: Path, serve: list[Serve]) -> None:
    from servers import tls_client

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    s = Serve([], tmp_path, zowe_certificates(
        pki, ZWE_configs_port=str(port), ZWE_configs_zowe_network_server_listenAddresses_0="127.0.0.1",
        ZWE_configs_storage_mode="inMemory", TMPDIR=str(tmp)))
    serve.append(s)
    assert f"at https://127.0.0.1:{port}/" in s.out.read_text(), s.logs()
    with tls_client(s, pki, None) as anonymous:  # type: ignore[arg-type]
        r = anonymous.get("/cache", headers=SID)
        assert r.status_code == 403 and r.json()["messages"][0]["messageNumber"] == "ZWECS801E"
    with tls_client(s, pki, "client-a") as c:  # type: ignore[arg-type]
        assert c.post("/cache", json={"key": "k", "value": "v"}).status_code == 201
        assert c.get("/cache/k").json()["serviceId"].startswith("CN=client-a")
    assert list(tmp.iterdir()) != []  # the PEM files, while it serves
    assert s.stop() == 0
    assert list(tmp.iterdir()) == []  # removed when it stopped
