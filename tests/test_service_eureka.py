"""Item 9 of issue 13: ``ksds serve --eureka`` registers with a discovery service as Zowe's caching service does, and
``ksds static-definition`` writes the API ML static definition.

The discovery service is a small Eureka server in this process (a thread serving 127.0.0.1) that checks what it is
sent as Eureka's REST contract does: ``POST /eureka/apps/{APP}`` with a JSON instance document (400 "Missing
instanceId", "Missing hostname", "Missing ip address", "Missing appName", "Mismatched appName", "Missing
dataCenterInfo", ... as Eureka's ``ApplicationResource.addInstance``; 204), ``PUT /eureka/apps/{APP}/{id}`` (200, or
404 for an instance it does not know), ``DELETE`` (200 or 404). The servers under test are real ``ksds serve``
processes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from servers import API, free_port

from ksds.caching.eureka import AUTH_HEADERS, static_definition_data

SID = {"X-CS-Service-ID": "gateway"}


# --- a discovery service ----------------------------------------------------------------------------------------------


def _validate(app: str, body: Any) -> str | None:
    """What Eureka answers 400 to (``ApplicationResource.addInstance`` and its JSON codec), else None."""
    if not isinstance(body, dict) or not isinstance(body.get("instance"), dict):
        return "not an instance document"
    info = body["instance"]
    for field, message in (("instanceId", "Missing instanceId"), ("hostName", "Missing hostname"),
                           ("ipAddr", "Missing ip address"), ("app", "Missing appName")):
        if not isinstance(info.get(field), str) or not info[field]:
            return message
    if info["app"].upper() != app:
        return f"Mismatched appName, expecting {app} but was {info['app']}"
    dc = info.get("dataCenterInfo")
    if not isinstance(dc, dict):
        return "Missing dataCenterInfo"
    if not isinstance(dc.get("name"), str) or not isinstance(dc.get("@class"), str):
        return "Missing dataCenterInfo Name"
    for port in ("port", "securePort"):  # Eureka's JSON: {"$": 7555, "@enabled": "true"}
        p = info.get(port)
        if not (isinstance(p, dict) and isinstance(p.get("$"), int) and p.get("@enabled") in ("true", "false")):
            return f"bad {port}"
    if info.get("status") not in ("UP", "DOWN", "STARTING", "OUT_OF_SERVICE", "UNKNOWN"):
        return "bad status"
    lease = info.get("leaseInfo")
    if not (isinstance(lease, dict) and isinstance(lease.get("renewalIntervalInSecs"), int)):
        return "bad leaseInfo"
    md = info.get("metadata")
    if not (isinstance(md, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in md.items())):
        return "metadata must map strings to strings"
    return None


class Eureka:
    """A discovery service on 127.0.0.1 (``port``: that one; None: a free one), started at once unless ``start``
    is False. Its registry, and every call it was made (method, path, status)."""

    def __init__(self, port: int | None = None, start: bool = True, tls: ssl.SSLContext | None = None) -> None:
        self.port = port or free_port()
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/eureka/"
        self.peers: list[str] = []  # the client certificates' subjects (https)
        self.instances: dict[str, dict[str, Any]] = {}  # instance id -> its document
        self.calls: list[tuple[str, str, int]] = []
        self.rejected: list[str] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        if start:
            self.start()

    def start(self) -> None:
        eureka = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, text: str = "") -> None:
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                with eureka.lock:
                    eureka.calls.append((self.command, self.path, status))

            def _parts(self) -> list[str]:
                path = urlsplit(self.path).path
                if not path.startswith("/eureka/apps/"):
                    return []
                return [unquote(p) for p in path[len("/eureka/apps/"):].split("/")]

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if eureka.tls is not None:
                    peer = self.connection.getpeercert()  # type: ignore[attr-defined]
                    with eureka.lock:
                        eureka.peers.append(str(dict(x[0] for x in peer["subject"]).get("commonName")))
                parts = self._parts()
                if len(parts) != 1:
                    return self._answer(404)
                if not self.headers.get("Content-Type", "").startswith("application/json"):
                    return self._answer(415)
                try:
                    doc = json.loads(body)
                except ValueError:
                    return self._answer(400, "not JSON")
                problem = _validate(parts[0], doc)
                if problem:
                    with eureka.lock:
                        eureka.rejected.append(problem)
                    return self._answer(400, problem)
                with eureka.lock:
                    eureka.instances[doc["instance"]["instanceId"]] = doc["instance"]
                self._answer(204)

            def do_PUT(self) -> None:
                parts = self._parts()
                query = parse_qs(urlsplit(self.path).query)
                with eureka.lock:
                    info = eureka.instances.get(parts[1]) if len(parts) == 2 else None
                    known = info is not None and info["app"] == parts[0]
                    # Eureka's InstanceResource.validateDirtyTimestamp: a client whose lastDirtyTimestamp is newer
                    # than the registered one has information the server lacks: 404, register again
                    dirty = query.get("lastDirtyTimestamp", [""])[0]
                    if known and info is not None and dirty.isdigit() and int(dirty) > int(info["lastDirtyTimestamp"]):
                        known = False
                self._answer(200 if known else 404)

            def do_DELETE(self) -> None:
                parts = self._parts()
                with eureka.lock:
                    known = len(parts) == 2 and eureka.instances.pop(parts[1], None) is not None
                self._answer(200 if known else 404)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def forget(self) -> None:
        """Drop every registration (a discovery service restarted, or a lease that expired)."""
        with self.lock:
            self.instances.clear()

    def count(self, method: str, status: int | None = None) -> int:
        with self.lock:
            return sum(1 for m, _, s in self.calls if m == method and (status is None or s == status))


@pytest.fixture
def eureka() -> Iterator[Eureka]:
    e = Eureka()
    yield e
    e.stop()


def wait_for(what: Callable[[], Any], timeout: float = 15.0, why: str = "") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = what()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {why}")


# --- ksds serve ------------------------------------------------------------------------------------------------------


class Serve:
    """``python -m ksds serve ARGS`` with environment ``env`` (stdout, stderr in files); waits until it serves."""

    def __init__(self, args: list[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.out = workdir / f"serve{id(self)}.out"
        self.err = workdir / f"serve{id(self)}.err"
        full = {k: v for k, v in os.environ.items() if not k.startswith(("ZWE_", "CACHING_"))}
        full.update(env or {})
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "ksds", "serve", *args], stdout=out, stderr=err,
                                         cwd=workdir, env=full)
        end = time.monotonic() + 30
        while not (m := re.search(r"at (https?)://127\.0\.0\.1:(\d+)/", self.out.read_text())):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"ksds serve did not start: {self.logs()}")
            time.sleep(0.02)
        self.port = int(m.group(2))
        self.base = f"http://127.0.0.1:{self.port}"

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
def started(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    running: list[Serve] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Serve:
        s = Serve(list(args), tmp_path, env)
        running.append(s)
        return s

    yield start
    for s in running:
        if s.proc.poll() is None:
            s.stop()


# --- registration ----------------------------------------------------------------------------------------------------


def test_registers_renews_and_cancels_on_sigterm(eureka: Eureka, started: Callable[..., Serve]) -> None:
    s = started("--storage", "memory", "--host", "127.0.0.1", "--port", "0", "--eureka", eureka.url,
                "--eureka-renewal", "0.3")
    instance_id = f"127.0.0.1:cachingservice:{s.port}"
    wait_for(lambda: instance_id in eureka.instances, why=f"registration of {instance_id}: {s.logs()}")
    assert eureka.rejected == []
    info = eureka.instances[instance_id]
    assert (info["app"], info["hostName"], info["vipAddress"], info["status"]) == (
        "CACHINGSERVICE", "127.0.0.1", "cachingservice", "UP")
    assert info["port"] == {"$": s.port, "@enabled": "true"} and info["securePort"]["@enabled"] == "false"
    md = info["metadata"]
    assert md["apiml.routes.api-v1.gatewayUrl"] == "api/v1"
    assert md["apiml.routes.api-v1.serviceUrl"] == "/cachingservice/api/v1"
    assert md["apiml.authentication.scheme"] == "x509"
    assert md["apiml.authentication.headers"] == AUTH_HEADERS
    assert md["apiml.enableUrlEncodedCharacters"] == "true"
    assert md["apiml.apiInfo.api-v1.apiId"] == "zowe.apiml.cachingservice"
    assert md["apiml.catalog.tile.id"] == "zowe" and md["apiml.gatewayPort"] == "7554"
    # every URL the gateway and the catalog are given answers
    for url in (info["healthCheckUrl"], info["statusPageUrl"], md["apiml.apiInfo.api-v1.swaggerUrl"]):
        assert httpx.get(url, timeout=10).status_code == 200, url
    assert httpx.get(info["homePageUrl"] + "/api/v1/cache", headers=SID, timeout=10).status_code == 200
    # heartbeats every 0.3 s, on the instance registered
    wait_for(lambda: eureka.count("PUT", 200) >= 3, why="three renewals")
    assert eureka.count("POST") == 1 and eureka.count("PUT", 404) == 0  # renewals Eureka accepts as they are
    assert all(p.startswith(f"/eureka/apps/CACHINGSERVICE/{instance_id}?status=UP")
               for m, p, _ in eureka.calls if m == "PUT")
    assert s.stop() == 0
    assert eureka.count("DELETE", 200) == 1 and eureka.instances == {}, (eureka.calls, s.logs())
    assert "cancelled the registration" in s.out.read_text()


def test_registers_again_after_a_404(eureka: Eureka, started: Callable[..., Serve]) -> None:
    s = started("--storage", "memory", "--host", "127.0.0.1", "--port", "0", "--eureka", eureka.url,
                "--eureka-renewal", "0.3")
    wait_for(lambda: eureka.count("POST", 204) == 1 and eureka.instances, why="registration")
    eureka.forget()  # the discovery service restarted: it answers the next renewal with 404
    wait_for(lambda: eureka.count("POST", 204) == 2 and eureka.instances, why=f"registering again: {s.logs()}")
    assert eureka.count("PUT", 404) >= 1
    assert "(404): registering again" in s.out.read_text()
    assert s.stop() == 0
    assert eureka.instances == {}


def test_discovery_down_at_start_then_up(tmp_path: Path, started: Callable[..., Serve]) -> None:
    down = Eureka(start=False)  # nothing listens there yet
    s = started("--storage", "memory", "--host", "127.0.0.1", "--port", "0", "--eureka", down.url,
                "--eureka-renewal", "1")
    try:
        # the caching service serves while the discovery service is down, at full speed
        with httpx.Client(base_url=s.base + API, headers=SID, timeout=10) as c:
            t0 = time.monotonic()
            for i in range(20):
                assert c.post("/cache", json={"key": f"k{i}", "value": "v"}).status_code == 201
            assert time.monotonic() - t0 < 5
        wait_for(lambda: "the discovery service fails" in s.out.read_text(), why="the failure reported")
        down.start()
        wait_for(lambda: down.instances, timeout=10, why=f"registration once it is up: {s.logs()}")
        # the server says so once the discovery service has answered: the line may follow the registration
        wait_for(lambda: f"registered with the discovery service {down.url}" in s.out.read_text(), timeout=10,
                 why=f"the registration reported: {s.logs()}")
        assert s.stop() == 0
        assert down.instances == {} and down.count("DELETE", 200) == 1
    finally:
        down.stop()


def test_moves_to_the_next_discovery_service(eureka: Eureka, started: Callable[..., Serve]) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/eureka/"
    s = started("--storage", "memory", "--host", "127.0.0.1", "--port", "0", "--eureka", f"{nowhere},{eureka.url}",
                "--eureka-renewal", "0.5")
    wait_for(lambda: eureka.instances, why=f"registration with the second one: {s.logs()}")
    assert s.stop() == 0
    assert eureka.instances == {}


def _pki(d: Path) -> Path:
    """A CA and one certificate for 127.0.0.1 good for both ends of TLS (serverAuth and clientAuth), as Zowe's
    certificates are: the service serves with it and shows it to the discovery service."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Zowe test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ksds-cs")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    (d / "cs.pem").write_bytes(leaf.public_bytes(pem))
    (d / "cs.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    return d


def test_registers_over_tls_with_its_certificate(tmp_path: Path, started: Callable[..., Serve]) -> None:
    """Zowe's discovery service: https, and the service's client certificate required."""
    pki = _pki(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "cs.pem", pki / "cs.key")
    ctx.load_verify_locations(pki / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    eureka = Eureka(tls=ctx)
    try:
        s = started("--storage", "memory", "--host", "127.0.0.1", "--port", "0", "--eureka", eureka.url,
                    "--eureka-renewal", "0.5", "--tls-cert", str(pki / "cs.pem"), "--tls-key", str(pki / "cs.key"),
                    "--tls-ca", str(pki / "ca.pem"))
        info = wait_for(lambda: next(iter(eureka.instances.values()), None), why=f"registration: {s.logs()}")
        assert eureka.peers == ["ksds-cs"]
        assert info["securePort"] == {"$": s.port, "@enabled": "true"} and info["port"]["@enabled"] == "false"
        assert info["secureHealthCheckUrl"] == f"https://127.0.0.1:{s.port}/cachingservice/application/health"
        assert "healthCheckUrl" not in info
        assert info["metadata"]["apiml.apiInfo.api-v1.swaggerUrl"].startswith("https://127.0.0.1:")
        wait_for(lambda: eureka.count("PUT", 200) >= 1, why="a renewal over TLS")
        assert s.stop() == 0
        assert eureka.instances == {}
    finally:
        eureka.stop()


def test_zowe_launcher_variables_register(eureka: Eureka, started: Callable[..., Serve]) -> None:
    """ZWE_DISCOVERY_SERVICES_LIST, ZWE_haInstance_hostname and ZWE_components_gateway_port, as start.sh maps them."""
    s = started("--storage", "memory", "--host", "127.0.0.1", "--port", "0", "--eureka-renewal", "0.5",
                env={"ZWE_DISCOVERY_SERVICES_LIST": eureka.url, "ZWE_haInstance_hostname": "localhost",
                     "ZWE_components_gateway_port": "7654"})
    instance_id = f"localhost:cachingservice:{s.port}"
    info = wait_for(lambda: eureka.instances.get(instance_id), why=f"registration: {eureka.instances} {s.logs()}")
    assert info["hostName"] == "localhost" and info["ipAddr"] in ("127.0.0.1", "::1")
    assert info["metadata"]["apiml.gatewayPort"] == "7654"
    assert info["healthCheckUrl"] == f"http://localhost:{s.port}/cachingservice/application/health"
    assert s.stop() == 0


def test_a_bad_discovery_url_is_refused(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "ksds", "serve", "--storage", "memory", "--port", "0",
                        "--eureka", "ftp://x/eureka/"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2, r
    assert r.stderr.startswith("ksds serve: --eureka: 'ftp://x/eureka/' is not a discovery service URL"), r.stderr


def test_the_fake_discovery_service_checks_like_eureka(eureka: Eureka) -> None:
    """The checks the registration tests rely on: a document Eureka refuses is refused here too."""
    from ksds.caching.eureka import Instance, instance_document

    good = instance_document(Instance("https", "h.example.com", 7555, "10.1.2.3"))
    with httpx.Client(base_url=eureka.url, timeout=10) as c:
        assert c.post("apps/CACHINGSERVICE", json=good).status_code == 204
        assert c.put("apps/CACHINGSERVICE/h.example.com:cachingservice:7555").status_code == 200
        for field in ("instanceId", "hostName", "ipAddr", "dataCenterInfo"):
            bad = json.loads(json.dumps(good))
            del bad["instance"][field]
            assert c.post("apps/CACHINGSERVICE", json=bad).status_code == 400, field
        assert c.post("apps/OTHER", json=good).status_code == 400
        assert c.put("apps/CACHINGSERVICE/nobody").status_code == 404
        assert c.delete("apps/CACHINGSERVICE/h.example.com:cachingservice:7555").status_code == 200
        assert c.delete("apps/CACHINGSERVICE/h.example.com:cachingservice:7555").status_code == 404
    assert eureka.rejected[0] == "Missing instanceId" and "Mismatched appName" in eureka.rejected[-1]


# --- the static definition -------------------------------------------------------------------------------------------


def _strict_parse(text: str) -> dict[str, Any]:
    """The YAML ksds writes (block mappings and sequences, double-quoted strings, true/false, integers), parsed
    strictly: anything else fails."""
    lines = [(len(raw) - len(raw.lstrip(" ")), raw.strip()) for raw in text.splitlines()
             if raw.strip() and not raw.lstrip().startswith("#")]

    def block(i: int, indent: int) -> tuple[Any, int]:
        if lines[i][1].startswith("- "):
            items: list[Any] = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                rest = lines[i][1][2:]
                if re.match(r"[A-Za-z][A-Za-z0-9_]*:", rest):
                    lines[i] = (indent + 2, rest)  # "- key: value": a mapping that starts on this line
                    value, i = block(i, indent + 2)
                else:
                    value, i = _scalar(rest), i + 1
                items.append(value)
            return items, i
        mapping: dict[str, Any] = {}
        while i < len(lines) and lines[i][0] == indent:
            m = re.fullmatch(r"([A-Za-z][A-Za-z0-9_]*):(?: (.+))?", lines[i][1])
            assert m and m.group(1) not in mapping, lines[i]
            if m.group(2) is not None:
                mapping[m.group(1)], i = _scalar(m.group(2)), i + 1
            else:
                assert i + 1 < len(lines) and lines[i + 1][0] > indent, lines[i]
                mapping[m.group(1)], i = block(i + 1, lines[i + 1][0])
        return mapping, i

    root, end = block(0, 0)
    assert end == len(lines) and isinstance(root, dict), lines[end:]
    return root


def _scalar(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    assert text.startswith('"') and text.endswith('"'), text
    return json.loads(text)


def test_static_definition(tmp_path: Path) -> None:
    out = tmp_path / "cachingservice.yml"
    r = subprocess.run([sys.executable, "-m", "ksds", "static-definition", "--url", "https://cs1.example.com:7555",
                        "--url", "https://cs2.example.com:7556/", "--gateway-port", "7654", "--output", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    text = out.read_text()
    strict = _strict_parse(text)
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        parsed = strict
    else:
        parsed = yaml.safe_load(text)
        assert parsed == strict
    assert parsed == static_definition_data(["https://cs1.example.com:7555", "https://cs2.example.com:7556"], 7654)
    svc = parsed["services"][0]
    # the fields of Zowe's discovery-service staticdef.Service, as Zowe's caching service registers them
    assert set(svc) == {"serviceId", "title", "description", "catalogUiTileId", "instanceBaseUrls",
                        "homePageRelativeUrl", "statusPageRelativeUrl", "healthCheckRelativeUrl", "routes",
                        "apiInfo", "authentication", "customMetadata"}
    assert svc["serviceId"] == "cachingservice"
    assert svc["instanceBaseUrls"] == ["https://cs1.example.com:7555", "https://cs2.example.com:7556"]
    assert svc["routes"] == [{"gatewayUrl": "api/v1", "serviceRelativeUrl": "/cachingservice/api/v1"}]
    assert svc["authentication"] == {"scheme": "x509", "headers": AUTH_HEADERS}
    assert svc["healthCheckRelativeUrl"] == "/cachingservice/application/health"
    assert svc["apiInfo"][0]["swaggerUrl"] == "https://cs1.example.com:7555/cachingservice/v3/api-docs"
    assert svc["customMetadata"]["apiml"]["enableUrlEncodedCharacters"] is True
    assert svc["customMetadata"]["apiml"]["gatewayPort"] == 7654
    assert parsed["catalogUiTiles"]["zowe"]["title"] == "Zowe Applications"
    assert svc["catalogUiTileId"] in parsed["catalogUiTiles"]


def test_static_definition_from_zowe_variables(tmp_path: Path) -> None:
    env = {**os.environ, "ZWE_haInstance_hostname": "zos1.example.com", "ZWE_configs_port": "7557"}
    r = subprocess.run([sys.executable, "-m", "ksds", "static-definition"], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 0, r
    assert _strict_parse(r.stdout)["services"][0]["instanceBaseUrls"] == ["https://zos1.example.com:7557"]
    bad = subprocess.run([sys.executable, "-m", "ksds", "static-definition", "--url", "https://host/path"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--url https://host/path" in bad.stderr, bad


def test_the_strict_parser_is_strict() -> None:
    with pytest.raises(AssertionError):
        _strict_parse("services:\n  - serviceId: cachingservice\n")  # a plain scalar
    with pytest.raises(AssertionError):
        _strict_parse("a: {b: 1}\n")
