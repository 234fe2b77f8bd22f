"""Real servers for the tests: ``ksds serve`` processes and a redis-server on free loopback ports, started and
stopped by the tests, and the certificates (a CA, a server, clients) for the TLS tests."""

from __future__ import annotations

import datetime
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

API = "/cachingservice/api/v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _redis_exe(name: str = "redis-server") -> str:
    """The path of redis-server (or redis-sentinel). Fails if it is missing: ``.ci/run`` installs both, so the
    Redis tests are never skipped in CI."""
    exe = shutil.which(name)
    if exe is None:
        raise RuntimeError(f"{name} is not installed (apt-get install -y {name})")
    return exe


class RedisProcess:
    """A redis-server (``redis-sentinel`` with ``sentinel=True``) on 127.0.0.1:``port`` with ``args``, its files
    in ``workdir`` (its log: ``NAME.log``); :meth:`start` again after :meth:`stop` or :meth:`kill` restarts it on
    the same port."""

    def __init__(self, name: str, port: int, args: list[str], workdir: Path, sentinel: bool = False) -> None:
        self.name, self.port, self.args, self.workdir, self.sentinel = name, port, args, workdir, sentinel
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisProcess:
        if self.sentinel:
            conf = self.workdir / f"{self.name}.conf"  # Sentinel rewrites its configuration file
            conf.write_text("\n".join(self.args) + "\n")
            cmd = [_redis_exe("redis-sentinel"), str(conf), "--logfile", str(self.log)]
        else:
            cmd = [_redis_exe(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                   "no", "--dir", str(self.workdir), "--logfile", str(self.log), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.workdir)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.kill()
            raise RuntimeError(f"{self.name} did not start: {self.logs()}") from None
        return self

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def redis_processes() -> Iterator[tuple[Path, list[RedisProcess]]]:
    """A work directory and a list to put :class:`RedisProcess` es in: all stopped, and the directory removed, at
    the end."""
    workdir = Path(tempfile.mkdtemp(prefix="ksds-redis-"))
    procs: list[RedisProcess] = []
    try:
        yield workdir, procs
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def redis_server(*args: str) -> Iterator[str]:
    """A fresh redis-server on 127.0.0.1 (no persistence), with ``args`` (e.g. ``--requirepass``); yields its URL
    (without credentials)."""
    with redis_processes() as (workdir, procs):
        procs.append(RedisProcess("redis", free_port(), list(args), workdir).start())
        yield f"redis://127.0.0.1:{procs[0].port}/0"


@contextmanager
def redis_tls_server(pki: Path, auth_clients: str = "yes") -> Iterator[RedisProcess]:
    """A redis-server that speaks TLS only (``--port 0``), with ``pki``'s server certificate (for 127.0.0.1),
    verifying client certificates against ``pki``'s CA (``--tls-auth-clients`` yes, optional or no)."""
    with redis_processes() as (workdir, procs):
        port = free_port()
        tls = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(pki / "server.pem"), "--tls-key-file",
               str(pki / "server.key"), "--tls-ca-cert-file", str(pki / "ca.pem"), "--tls-auth-clients", auth_clients]
        procs.append(RedisProcess("redis-tls", port, tls, workdir).start())  # --port 0 wins: the last one does
        yield procs[0]


class SentinelSetup:
    """A master, a replica of it and a Sentinel watching them (quorum 1, down after 1 s), all with passwords: the
    data nodes ``password`` (user ``default``), the Sentinel its own ``sentinel_password``."""

    NAME = "mymaster"

    def __init__(self, master: RedisProcess, replica: RedisProcess, sentinel: RedisProcess, password: str,
                 sentinel_password: str) -> None:
        self.master, self.replica, self.sentinel = master, replica, sentinel
        self.password, self.sentinel_password = password, sentinel_password

    def ask_sentinel(self) -> Any:
        """A redis-py client of the Sentinel (close it)."""
        import redis

        return redis.Redis(port=self.sentinel.port, password=self.sentinel_password, socket_timeout=5)

    def master_port(self) -> int:
        """The master's port, as the Sentinel says now."""
        with self.ask_sentinel() as r:
            return int(r.sentinel_get_master_addr_by_name(self.NAME)[1])

    def data(self, node: RedisProcess) -> Any:
        """A redis-py client of ``node`` (close it)."""
        import redis

        return redis.Redis(port=node.port, password=self.password, socket_timeout=5)


@contextmanager
def redis_sentinel(password: str = "heslo", sentinel_password: str = "sentinel-secret") -> Iterator[SentinelSetup]:
    """A :class:`SentinelSetup`, ready: the replica in sync with the master, and known to the Sentinel."""
    with redis_processes() as (workdir, procs):
        auth = ["--requirepass", password, "--masterauth", password, "--repl-diskless-sync-delay", "0"]
        master = RedisProcess("master", free_port(), auth, workdir)
        procs.append(master.start())
        replica = RedisProcess("replica", free_port(), [*auth, "--replicaof", "127.0.0.1", str(master.port)], workdir)
        procs.append(replica.start())
        setup = SentinelSetup(master, replica, RedisProcess("sentinel", free_port(), [], workdir, sentinel=True),
                              password, sentinel_password)
        end = time.monotonic() + 20
        with setup.data(replica) as r:
            while r.info("replication").get("master_link_status") != "up":
                if time.monotonic() > end:
                    raise RuntimeError(f"the replica does not sync: {replica.logs()}")
                time.sleep(0.05)
        setup.sentinel.args = [
            f"port {setup.sentinel.port}", "bind 127.0.0.1", f"dir {workdir}", f"requirepass {sentinel_password}",
            f"sentinel monitor {setup.NAME} 127.0.0.1 {master.port} 1", f"sentinel auth-pass {setup.NAME} {password}",
            f"sentinel down-after-milliseconds {setup.NAME} 1000", f"sentinel failover-timeout {setup.NAME} 10000",
        ]
        procs.append(setup.sentinel.start())
        with setup.ask_sentinel() as s:
            while not any(r["port"] == replica.port and not {"s_down", "disconnected"} & set(r["flags"].split(","))
                          for r in s.sentinel_slaves(setup.NAME)):
                if time.monotonic() > end:
                    raise RuntimeError(f"the Sentinel does not see the replica: {setup.sentinel.logs()}")
                time.sleep(0.1)
        yield setup


# --- ksds serve -----------------------------------------------------------------------------------------------


class Server:
    """``python -m ksds serve ARGS --host 127.0.0.1 --port 0`` (stdout and stderr in files under ``workdir``), in
    the environment ``env`` (None: this process's)."""

    def __init__(self, args: list[str], workdir: Path, name: str, timeout: float = 30.0,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.out = workdir / f"{name}.out"
        self.err = workdir / f"{name}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ksds", "serve", "--host", "127.0.0.1", "--port", "0", *args],
                stdout=out, stderr=err, cwd=workdir, env=env,
            )
        end = time.monotonic() + timeout
        while True:
            m = re.search(r"at (https?)://127\.0\.0\.1:(\d+)/", self.out.read_text())
            if m:
                break
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"ksds serve {' '.join(args)} did not start: {self.logs()}")
            time.sleep(0.02)
        self.port = int(m.group(2))
        self.base = f"{m.group(1)}://127.0.0.1:{self.port}"
        self.api = self.base + API

    def logs(self) -> str:
        return f"exit {self.proc.poll()}; stdout {self.out.read_text()!r}; stderr {self.err.read_text()!r}"

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.api, timeout=30, **kw)

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` (None: it was sent) and wait for the exit status."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


class Servers:
    """Servers started by a test or module, stopped at its end; a clean stop (SIGTERM -> exit 0) is checked."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Server] = []

    def start(self, *args: str, name: str | None = None, env: dict[str, str] | None = None) -> Server:
        server = Server(list(args), self.workdir, name or f"server{len(self.started)}", env=env)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        running = [s for s in self.started if s.proc.poll() is None]
        for s in running:
            s.proc.send_signal(signal.SIGTERM)
        problems = [f"{s.name}: {s.logs()}" for s in running if s.stop(sig=None) != 0]
        assert not problems, problems


def tls_client(server: Server, pki: Path, who: str | None) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if who is not None:
        ctx.load_cert_chain(str(pki / f"{who}.pem"), str(pki / f"{who}.key"))
    return httpx.Client(base_url=server.api, verify=ctx, timeout=30)


# --- certificates -------------------------------------------------------------------------------------------------


def _make_pki_cryptography(d: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(*parts: tuple[Any, str]) -> x509.Name:
        return x509.Name([x509.NameAttribute(oid, value) for oid, value in parts])

    def save(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        (d / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (d / f"{stem}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    def ca(stem: str, cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = name((NameOID.COMMON_NAME, cn))
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        save(stem, cert, key)
        return cert, key

    def leaf(stem: str, subject: x509.Name, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
             server: bool = False) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer[0].subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        if server:
            import ipaddress

            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        save(stem, b.sign(issuer[1], hashes.SHA256()), key)

    trusted = ca("ca", "ksds test CA")
    untrusted = ca("evil-ca", "someone else's CA")
    leaf("server", name((NameOID.COMMON_NAME, "127.0.0.1")), trusted, server=True)
    o, ou, cn, c = (NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.COMMON_NAME,
                    NameOID.COUNTRY_NAME)
    leaf("client-a", name((c, "US"), (o, "ACME, Inc."), (ou, "Zowe"), (cn, "client-a")), trusted)
    leaf("client-b", name((c, "US"), (o, "ACME, Inc."), (ou, "Zowe"), (cn, "client-b")), trusted)
    leaf("client-evil", name((c, "US"), (o, "ACME, Inc."), (ou, "Zowe"), (cn, "client-a")), untrusted)


def _make_pki_openssl(d: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    for stem, cn in (("ca", "ksds test CA"), ("evil-ca", "someone else's CA")):
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            f"{stem}.key", "-out", f"{stem}.pem", "-subj", f"/CN={cn}", "-days", "2",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    leaves = (("server", "/CN=127.0.0.1", "ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
              ("client-a", "/C=US/O=ACME\\, Inc./OU=Zowe/CN=client-a", "ca", "extendedKeyUsage=clientAuth"),
              ("client-b", "/C=US/O=ACME\\, Inc./OU=Zowe/CN=client-b", "ca", "extendedKeyUsage=clientAuth"),
              ("client-evil", "/C=US/O=ACME\\, Inc./OU=Zowe/CN=client-a", "evil-ca", "extendedKeyUsage=clientAuth"))
    for stem, subj, issuer, ext in leaves:
        (d / f"{stem}.ext").write_text(ext + "\nbasicConstraints=critical,CA:FALSE\n")
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{stem}.key",
            "-out", f"{stem}.csr", "-subj", subj)
        run("x509", "-req", "-in", f"{stem}.csr", "-CA", f"{issuer}.pem", "-CAkey", f"{issuer}.key",
            "-CAcreateserial", "-out", f"{stem}.pem", "-days", "2", "-extfile", f"{stem}.ext")


def make_pki(d: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1, clients a and b, and client-evil (client-a's DN from another CA),
    in ``d``. With the ``cryptography`` package, else with the ``openssl`` command."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        _make_pki_openssl(d)
    else:
        _make_pki_cryptography(d)
    return d
