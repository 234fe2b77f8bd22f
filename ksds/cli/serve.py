"""ksds serve: run the caching service (Zowe API ML's caching service REST API) on a storage mode.

One server process, or with ``--workers N`` a supervisor and N worker processes on its one listening socket
(:func:`_supervise`: each worker opens the storage itself, so the ksds data set is shared with RLS, or the Redis
database; the memory storage refuses more than one). For high availability run several ``ksds serve --storage
ksds`` on one data set (record-level sharing: each sees what the others acknowledged) behind the gateways' load
balancing. HTTP is uvicorn's httptools protocol on uvloop where they are installed (the service extra), else its
pure-Python h11 protocol on asyncio's loop (:func:`http_path`; ``KSDS_HTTP=h11`` forces that), the client
certificate's DN passed to the application on either (:class:`~ksds.caching.tls.Connections`).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import logging
import os
import pickle
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..caching import redis_config
from ..caching.zowe_env import Launch, ZoweEnvError, translate, zowe_tls
from ._common import FAILED, USAGE, CliError, Subparsers, add_verb, one_line

if TYPE_CHECKING:
    import uvicorn

    from ..caching.eureka import EurekaClient
    from ..caching.tls import Connections

EXAMPLES = """
  ksds serve --dataset cache.ksds                          (the ksds storage; defines cache.ksds if missing)
  ksds serve --storage memory --port 10016
  ksds serve --storage redis --redis-url redis://127.0.0.1:6379/0
  ksds serve --dataset cache.ksds --size 100 --eviction removeOldest
  ksds serve --dataset /shared/cache.ksds --port 7555 &    (two servers on one data set: HA)
  ksds serve --dataset /shared/cache.ksds --port 7556 &
  ksds serve --dataset cache.ksds --tls-cert server.pem --tls-key server.key --tls-ca clients-ca.pem
  ksds serve --dataset cache.ksds --workers 2              (two processes on one port, sharing the data set)
  ksds serve --dataset cache.ksds --eureka https://zowe.example.com:7553/eureka/ --service-hostname cs.example.com
Zowe's launcher variables as Zowe's start.sh maps them (they win over CACHING_*; the command line wins over both):
ZWE_configs_port, ZWE_configs_storage_mode, ZWE_configs_storage_size, ZWE_configs_storage_evictionStrategy,
ZWE_configs_storage_vsam_name, ZWE_configs_zowe_network_server_listenAddresses_0, ZWE_haInstance_hostname,
ZWE_DISCOVERY_SERVICES_LIST (registers with Eureka), ZWE_components_gateway_port, and without --tls-*:
ZWE_configs_certificate_* / ZWE_zowe_certificate_* (PKCS12 key and trust stores), ZWE_zowe_verifyCertificates,
ZWE_configs_server_ssl_enabled
environment (Zowe's names; the command line wins): CACHING_STORAGE_MODE (inMemory|VSAM|redis, or ksds|memory),
CACHING_STORAGE_SIZE, CACHING_STORAGE_EVICTIONSTRATEGY, CACHING_STORAGE_VSAM_NAME (the data set),
CACHING_STORAGE_VSAM_KEYLENGTH, CACHING_STORAGE_VSAM_RECORDLENGTH, CACHING_STORAGE_REDIS_* (the redis options above)
the API: http://HOST:PORT/cachingservice/api/v1/cache (GET/POST/PUT/DELETE), .../cache-list, OpenAPI document at
/cachingservice/v3/api-docs, health at /cachingservice/application/health, Prometheus metrics at /metrics
(a client certificate needed where the API needs one); 'ksds static-definition' writes the API ML static definition
exit status: 0 stopped by SIGTERM or SIGINT; 12 it could not start (one line on stderr says why), or with --workers
a worker could not start, did not stop cleanly, or workers kept dying (each death is reported, and the worker
started again, unless more than 5 died within 60 s); 2 wrong arguments
"""

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7555
ENV_MODE = "CACHING_STORAGE_MODE"
ENV_SIZE = "CACHING_STORAGE_SIZE"
ENV_EVICTION = "CACHING_STORAGE_EVICTIONSTRATEGY"
ENV_DATASET = "CACHING_STORAGE_VSAM_NAME"
#: on SIGTERM: seconds a connection that is idle (or whose response is sent) gets to close politely (a TLS
#: close_notify that a client holding it idle never answers) before it is cut; and seconds the requests in flight
#: get to finish. Together they bound the time from SIGTERM to the data set's close, whatever clients do.
CLOSE_GRACE = 1.0
REQUEST_GRACE = 5


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not > 0")
    return n


def _size(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text} is not >= 0")
    return n


def _seconds(text: str) -> float:
    try:
        n = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.05 <= n <= 3600:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds from 0.05 to 3600")
    return n


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (0-65535)")
    return n


def register(sub: Subparsers) -> None:
    p = add_verb(
        sub,
        "serve",
        "run the caching service (Zowe API ML caching service REST API)",
        "Serve Zowe API ML's caching service API (/cachingservice/api/v1) on a storage: a ksds data set (defined "
        "if missing; several servers may share it), memory, or Redis. Callers are identified by "
        "X-Certificate-DistinguishedName and/or X-CS-Service-ID, or by their TLS client certificate (whose DN "
        "wins over the header). SIGTERM or SIGINT stops it cleanly (the data set is closed).",
        EXAMPLES,
    )
    p.add_argument("--storage", metavar="MODE", help="ksds (default), memory or redis [CACHING_STORAGE_MODE]")
    p.add_argument("--dataset", metavar="PATH", help="the ksds data set [CACHING_STORAGE_VSAM_NAME]")
    p.add_argument("--host", help=f"address to listen on (default {DEFAULT_HOST}) "
                   "[ZWE_configs_zowe_network_server_listenAddresses_0]")
    p.add_argument("--port", type=_port, help=f"port (default {DEFAULT_PORT}; 0: any free) [ZWE_configs_port]")
    p.add_argument("--size", type=_size, help="most entries across all callers, 0: no limit (default 10000) "
                   "[CACHING_STORAGE_SIZE]")
    p.add_argument("--eviction", choices=("reject", "removeOldest"),
                   help="at the size limit: refuse with 507 (reject, the default) or remove the oldest entry "
                   "[CACHING_STORAGE_EVICTIONSTRATEGY]")
    p.add_argument("--layout", choices=("native", "zowe"), help="ksds: the records' layout (default native; zowe: "
                   "Zowe's VSAM records byte for byte)")
    p.add_argument("--keylength", type=_positive, metavar="N", help="ksds: key length of a new data set (default "
                   "128) [CACHING_STORAGE_VSAM_KEYLENGTH]")
    p.add_argument("--recordlength", type=_positive, metavar="N", help="ksds: record length of a new data set "
                   "(default 4096) [CACHING_STORAGE_VSAM_RECORDLENGTH]")
    p.add_argument("--durability", choices=("process", "power"),
                   help="ksds: an acknowledged request survives kill -9 (process, the default) or power loss")
    p.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate (PEM; may hold the key)")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    p.add_argument("--tls-ca", metavar="FILE", help="verify client certificates against these CAs (PEM): a "
                   "verified certificate's DN is the caller's DN")
    p.add_argument("--tls-client-auth", choices=("required", "optional"), default="required",
                   help="with --tls-ca: a request of the API without a client certificate is refused with 403 "
                   "(required, the default, as Zowe does) or identified by its headers (optional)")
    p.add_argument("--no-trust-dn-header", dest="trust_dn_header", action="store_false",
                   help="refuse (401) X-Certificate-DistinguishedName from a caller without a client certificate")
    p.add_argument("--access-log", action="store_true", help="log every request on stdout")

    def dn_format(text: str) -> str:
        if text not in ("rfc2253", "legacy"):
            raise argparse.ArgumentTypeError(f"{text!r} is not rfc2253 or legacy (--dn-format or KSDS_DN_FORMAT)")
        return text

    def health_auth(text: str) -> str:
        if text not in ("certificate", "none"):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not certificate or none (--health-auth; ZWE_configs_apiml_health_protected is true "
                "or false)")
        return text

    p.add_argument("--dn-format", type=dn_format, metavar="rfc2253|legacy",
                   default=os.environ.get("KSDS_DN_FORMAT", "").strip() or "rfc2253",
                   help="the form a verified client certificate's DN is written in, which names the caller's "
                   "partition: the one the Zowe in use writes X-Certificate-DistinguishedName in, so that a "
                   "partition stays the same when callers move from the header to TLS. rfc2253 (the default): "
                   "Java's getSubjectX500Principal().getName(), CN=x,O=a\\, b (newer gateways); legacy: "
                   "getSubjectDN().getName(), CN=x, O=\"a, b\" (the gateway of Zowe 3.0) [KSDS_DN_FORMAT]")
    protected = os.environ.get("ZWE_configs_apiml_health_protected", "").strip()
    zowe_health = {"true": "certificate", "false": "none", "": "certificate"}
    p.add_argument("--health-auth", type=health_auth, metavar="certificate|none",
                   default=zowe_health.get(protected.lower(), protected),
                   help="with --tls-ca, /cachingservice/application/health answers only callers with a verified "
                   "client certificate (certificate, the default, as Zowe's apiml.health.protected: true), or "
                   "anyone (none); without --tls-ca it is open [ZWE_configs_apiml_health_protected: true|false]")
    p.add_argument("--eureka", metavar="URL", action="append", help="register as cachingservice with the discovery "
                   "service (Eureka) at URL, e.g. https://host:7553/eureka/; several (the option again, or a "
                   "comma-separated list) as Zowe's discovery services [ZWE_DISCOVERY_SERVICES_LIST]")
    p.add_argument("--service-hostname", metavar="NAME", help="the host name gateways reach this server by, as "
                   "registered (default: --host, or this machine's name when listening on every address) "
                   "[ZWE_haInstance_hostname]")
    p.add_argument("--eureka-renewal", type=_seconds, default=30.0, metavar="SECONDS",
                   help="seconds between the renewals of the registration (Eureka's heartbeat; default 30)")
    p.add_argument("--workers", type=_positive, default=1, metavar="N",
                   help="N server processes on the one listening socket (default 1; ksds and redis storages: "
                   "they share the data set or the Redis database)")
    redis_config.add_arguments(p)  # --redis-url, --redis-timeout, --redis-sentinel*, --redis-tls, the stores
    p.set_defaults(func=run)


# --- configuration ------------------------------------------------------------------------------------------------


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        raise CliError(f"{name} must be a whole number, not {raw!r}", USAGE) from None
    if n < 0:
        raise CliError(f"{name} must be >= 0, not {raw!r}", USAGE)
    return n


def _dataset_from_env(raw: str) -> str:
    """Zowe names the data set ``//'HLQ.CACHE'``; here it is a path (the quotes are dropped)."""
    raw = raw.strip()
    if raw.startswith("//'") and raw.endswith("'") and len(raw) > 4:
        return raw[3:-1]
    return raw


def storage_options(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> dict[str, object]:
    """The keyword arguments of :func:`~ksds.caching.storage_factory.make_storage` from the command line and
    Zowe's environment variables (the command line wins)."""
    env = zowe_launch(os.environ if env is None else env).environ  # Zowe's ZWE_configs_* win over CACHING_*
    mode = args.storage or env.get(ENV_MODE, "").strip() or "ksds"
    size = args.size if args.size is not None else _env_int(env, ENV_SIZE)
    eviction = args.eviction or env.get(ENV_EVICTION, "").strip() or None
    dataset = args.dataset or (_dataset_from_env(env[ENV_DATASET]) if env.get(ENV_DATASET, "").strip() else None)
    opts: dict[str, object] = {"mode": mode}
    if size is not None:
        opts["size"] = size
    if eviction is not None:
        opts["eviction"] = eviction
    lowered = mode.lower()
    if lowered in ("ksds", "vsam"):
        if not dataset:
            raise CliError("the ksds storage needs --dataset PATH (or CACHING_STORAGE_VSAM_NAME)", USAGE)
        opts["dataset"] = dataset
    elif args.dataset:
        opts["dataset"] = args.dataset  # the factory says it is for ksds only
    if lowered == "redis":
        try:
            opts["redis_url"] = redis_config.from_sources(args, env)  # a RedisConfig (Sentinel, TLS, timeout)
        except redis_config.RedisConfigError as e:
            raise CliError(str(e), USAGE) from None
    elif redis_config.options_given(args):
        raise CliError(f"{', '.join(redis_config.options_given(args))}: only for the redis storage (--storage redis)",
                       USAGE)
    for name, value in (("layout", args.layout), ("key_length", args.keylength),
                        ("record_length", args.recordlength), ("durability", args.durability)):
        if value is not None:
            opts[name] = value
    return opts


def zowe_launch(env: Mapping[str, str]) -> Launch:
    """Zowe's launcher variables (``ZWE_*``) as Zowe's start.sh maps them (:mod:`ksds.caching.zowe_env`)."""
    try:
        return translate(env)
    except ZoweEnvError as e:
        raise CliError(str(e), USAGE) from None


def _eureka(
    args: argparse.Namespace, launch: Launch, sock: socket.socket, serving: Callable[[], bool]
) -> EurekaClient | None:
    """The registration with Eureka that ``--eureka`` (or ``ZWE_DISCOVERY_SERVICES_LIST``) asks for, not started."""
    from ..caching.eureka import DEFAULT_GATEWAY_PORT, EurekaClient, Instance

    urls = [u.strip() for given in (args.eureka or ()) for u in given.split(",") if u.strip()]
    if not urls:
        urls = list(launch.discovery)
    if not urls:
        return None
    host, port = sock.getsockname()[:2]
    hostname = args.service_hostname or launch.hostname
    if not hostname:
        hostname = socket.getfqdn() if str(host) in ("0.0.0.0", "::", "") else str(host)
    ctx = None
    if any(u.startswith("https:") for u in urls):
        ctx = ssl.create_default_context(cafile=args.tls_ca) if args.tls_ca else ssl.create_default_context()
        if args.tls_cert:  # Zowe's discovery service asks for the service's certificate
            ctx.load_cert_chain(args.tls_cert, args.tls_key)
        verify = os.environ.get("ZWE_zowe_verifyCertificates", "").strip().upper()  # start.sh: STRICT by default
        if verify in ("NONSTRICT", "DISABLED"):
            ctx.check_hostname = False  # NONSTRICT: the certificate is checked, not its host name
        if verify == "DISABLED":
            ctx.verify_mode = ssl.CERT_NONE
    inst = Instance("https" if args.tls_cert else "http", hostname, int(port),
                    gateway_port=launch.gateway_port or DEFAULT_GATEWAY_PORT)
    try:
        return EurekaClient(urls, inst, renewal=args.eureka_renewal, ssl_context=ctx, ready=serving,
                            report=lambda line: print(f"ksds serve: {line}", flush=True))
    except ValueError as e:
        raise CliError(f"--eureka: {e}", USAGE) from None


def _zowe_tls(args: argparse.Namespace) -> None:
    """Zowe's key store and trust store (start.sh's ``server.ssl.*``), as PEM files, where the command line gives
    no --tls-cert, --tls-key or --tls-ca (:func:`ksds.caching.zowe_env.zowe_tls`)."""
    if args.tls_cert or args.tls_key or args.tls_ca:
        return
    try:
        tls = zowe_tls(os.environ)
    except ZoweEnvError as e:
        raise CliError(str(e), USAGE) from None
    if tls is None:
        return
    atexit.register(shutil.rmtree, tls.directory, True)  # the PEM files (the key's only copy outside the store)
    args.tls_cert, args.tls_key, args.tls_ca, args.tls_client_auth = tls.cert, tls.key, tls.ca, tls.client_auth


def _check_tls(args: argparse.Namespace) -> None:
    if args.tls_key and not args.tls_cert:
        raise CliError("--tls-key needs --tls-cert", USAGE)
    if args.tls_ca and not args.tls_cert:
        raise CliError("--tls-ca needs --tls-cert (client certificates are verified over HTTPS only)", USAGE)
    if not args.tls_cert:
        return
    for option, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key), ("--tls-ca", args.tls_ca)):
        if path is not None and not os.path.isfile(path):
            raise CliError(f"{option} {path}: no such file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    except (ssl.SSLError, OSError) as e:
        raise CliError(f"cannot use the certificate {args.tls_cert} with its key: {e}") from None
    if args.tls_ca:
        try:
            ctx.load_verify_locations(args.tls_ca)
        except (ssl.SSLError, OSError) as e:
            raise CliError(f"cannot read the CA certificates in {args.tls_ca}: {e}") from None


def _listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise CliError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    # the protocol matters: asyncio turns Nagle off (TCP_NODELAY) on accepted sockets only when it is
    # IPPROTO_TCP; with 0, a response sent in two writes (headers, body) waits ~40 ms for a delayed ACK
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise CliError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


# --- running ----------------------------------------------------------------------------------------------------------


class _OneLine(logging.Handler):
    """uvicorn's warnings and errors as ``ksds serve: ...`` lines (no tracebacks)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"ksds serve: {one_line(record.getMessage())}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _uvicorn_logging(access_log: bool) -> Iterator[None]:
    handler = _OneLine(logging.WARNING)
    err = logging.getLogger("uvicorn.error")
    acc = logging.getLogger("uvicorn.access")
    access: logging.Handler | None = None
    err.addHandler(handler)
    err.propagate = False
    if access_log:
        access = logging.StreamHandler(sys.stdout)
        access.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        acc.addHandler(access)
        acc.setLevel(logging.INFO)
    acc.propagate = False
    try:
        yield
    finally:
        err.removeHandler(handler)
        if access is not None:
            acc.removeHandler(access)


def _missing_extra(e: ImportError, extra: str) -> CliError:
    """The one line for a package of an extra that is not installed (an ImportError of ksds itself is a bug:
    re-raised)."""
    name = e.name or ""
    if name.partition(".")[0] in ("", "ksds"):
        raise e
    return CliError(f"this needs the {extra} extra ({name} is not installed): pip install 'ksds[{extra}]'", FAILED)


def uvicorn_mismatches() -> list[str]:
    """What ``ksds serve`` needs of uvicorn that the installed uvicorn lacks (empty: nothing).

    It uses uvicorn's public interface only: ``Config`` with the keyword arguments :func:`run` gives (``http`` a
    protocol class), ``Server(config)``, its ``serve(sockets=...)`` coroutine and its ``should_exit`` and
    ``started`` attributes, and the protocol classes of ``--http h11`` (``uvicorn.protocols.http.h11_impl
    .H11Protocol``) and, where httptools is installed, ``--http httptools`` (``uvicorn.protocols.http
    .httptools_impl.HttpToolsProtocol``): asyncio protocols that :class:`ksds.caching.tls.Connections` builds with
    the arguments uvicorn gives. The signal handling relies on ``Server.serve`` putting back the handlers it found (as
    uvicorn documents in its code); tests/test_service_hardening.py checks that SIGTERM still ends it with
    status 0."""
    import asyncio
    import inspect

    import uvicorn

    problems = []
    try:
        params: Mapping[str, inspect.Parameter] = inspect.signature(uvicorn.Config).parameters
    except (TypeError, ValueError):
        params = {}
    missing = [name for name in CONFIG_OPTIONS if name not in params]
    if missing:
        problems.append(f"uvicorn.Config takes no {', '.join(missing)}")
    serve = getattr(uvicorn.Server, "serve", None)
    if serve is None or not inspect.iscoroutinefunction(serve):
        problems.append("uvicorn.Server has no serve() coroutine")
    elif "sockets" not in inspect.signature(serve).parameters:
        problems.append("uvicorn.Server.serve() takes no sockets")
    try:
        server = uvicorn.Server(uvicorn.Config(_no_app))
    except Exception as e:  # reported, whatever it is
        problems.append(f"uvicorn.Server(uvicorn.Config(app)) fails: {e}")
    else:
        for name in ("should_exit", "started"):
            if not isinstance(getattr(server, name, None), bool):
                problems.append(f"uvicorn.Server has no {name} flag")
    try:
        from uvicorn.protocols.http.h11_impl import H11Protocol
    except ImportError as e:
        problems.append(f"uvicorn.protocols.http.h11_impl.H11Protocol cannot be imported: {e}")
    else:
        if not (isinstance(H11Protocol, type) and issubclass(H11Protocol, asyncio.Protocol)):
            problems.append("uvicorn.protocols.http.h11_impl.H11Protocol is not an asyncio protocol")
    from ..caching.tls import httptools_available

    if httptools_available():
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        except ImportError as e:
            problems.append(f"uvicorn.protocols.http.httptools_impl.HttpToolsProtocol cannot be imported: {e}")
        else:
            if not (isinstance(HttpToolsProtocol, type) and issubclass(HttpToolsProtocol, asyncio.Protocol)):
                problems.append("uvicorn.protocols.http.httptools_impl.HttpToolsProtocol is not an asyncio protocol")
    return problems


async def _no_app(scope: object, receive: object, send: object) -> None:
    """(an ASGI application for :func:`uvicorn_mismatches` to build a Config with)"""


def check_uvicorn() -> None:
    """A CliError naming the installed uvicorn and what changed, if it lacks what ``ksds serve`` needs."""
    import uvicorn

    problems = uvicorn_mismatches()
    if problems:
        raise CliError(
            f"uvicorn {uvicorn.__version__} is not what ksds serve was tested with (uvicorn {TESTED_UVICORN}): "
            + "; ".join(problems) + " (pip install 'ksds[service]' installs a uvicorn that works)",
            FAILED,
        )


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401 - the service extra, checked before anything starts

        from ..caching.service import make_app  # noqa: F401
        from ..caching.tls import Connections  # noqa: F401
    except ImportError as e:
        raise _missing_extra(e, "service") from None
    check_uvicorn()

    launch = zowe_launch(os.environ)
    opts = storage_options(args)
    _zowe_tls(args)
    _check_tls(args)
    mode = str(opts.pop("mode"))
    workers: int = getattr(args, "workers", 1)
    if workers > 1 and mode.lower() in ("memory", "inmemory"):
        raise CliError(
            f"--workers {workers}: the memory storage lives in each server process, so {workers} workers would not "
            "share their entries (a client would find an entry only on the worker that took it); use --workers 1, "
            "or --storage ksds or redis, which the workers share", USAGE,
        )
    if mode.lower() == "redis":
        try:
            import redis  # noqa: F401 - said here once, before any server process starts
        except ImportError as e:
            raise _missing_extra(e, "redis") from None
    http, loop = http_path()
    host = args.host or launch.host or DEFAULT_HOST
    port = args.port if args.port is not None else launch.port if launch.port is not None else DEFAULT_PORT
    for note in launch.notes:
        print(f"ksds serve: {note}", file=sys.stderr, flush=True)
    sock = _listen(host, port)
    try:
        if workers > 1:
            return _supervise(args, launch, mode, opts, sock, http, loop)
        started = _serve_process(args, mode, opts, sock, http, loop, launch=launch)
    finally:
        sock.close()
    if started:
        print("ksds serve: stopped", flush=True)
        return 0
    raise CliError("the server did not start (see the messages above)")


#: the keyword arguments :func:`run` gives ``uvicorn.Config`` (checked by :func:`uvicorn_mismatches`)
CONFIG_OPTIONS = (
    "http", "interface", "server_header", "ws", "lifespan", "log_config", "log_level", "access_log",
    "timeout_graceful_shutdown", "ssl_certfile", "ssl_keyfile", "ssl_ca_certs", "ssl_cert_reqs",
)
#: the uvicorn versions the tests ran with (the service extra's range)
TESTED_UVICORN = ">=0.54"


# --- the HTTP path ----------------------------------------------------------------------------------------------------

#: chooses the HTTP path, for testing and diagnosis: ``auto`` (or unset) httptools on uvloop where they are
#: installed (each falls back on its own: to uvicorn's pure-Python h11 protocol, to asyncio's own event loop);
#: ``h11`` the pure-Python path (h11 on asyncio's loop) even where they are installed; ``httptools`` the fast
#: parser, or an error where httptools is missing
ENV_HTTP = "KSDS_HTTP"


def _uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def http_path(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The HTTP protocol ("httptools" or "h11") and the event loop ("uvloop" or "asyncio") ``ksds serve`` runs
    on, per :data:`ENV_HTTP` and what is installed."""
    from ..caching.tls import httptools_available

    env = os.environ if env is None else env
    raw = env.get(ENV_HTTP, "").strip()
    choice = raw.lower() or "auto"
    if choice not in ("auto", "httptools", "h11"):
        raise CliError(f"{ENV_HTTP} must be auto, httptools or h11, not {raw!r}", USAGE)
    if choice == "h11":
        return "h11", "asyncio"
    loop = "uvloop" if _uvloop_available() else "asyncio"
    if httptools_available():
        return "httptools", loop
    if choice == "httptools":
        raise CliError(f"{ENV_HTTP}=httptools, but httptools is not installed: pip install 'ksds[service]'")
    return "h11", loop


def _run_loop(main: Coroutine[Any, Any, None], loop: str) -> None:
    if loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


# --- one server process -----------------------------------------------------------------------------------------------


def _describe(args: argparse.Namespace, sock: socket.socket, mode: str, opts: Mapping[str, object], size: int,
              eviction: str) -> str:
    """``the caching service at URL on STORAGE (size N, eviction E)``."""
    from ..caching.service import API

    host, port = sock.getsockname()[:2]
    scheme = "https" if args.tls_cert else "http"
    where = f"[{host}]" if ":" in str(host) else str(host)
    what = {"ksds": f"ksds data set {opts.get('dataset')}", "vsam": f"ksds data set {opts.get('dataset')}",
            "redis": f"redis {opts.get('redis_url')}"}.get(mode.lower(), "memory")
    return (f"the caching service at {scheme}://{where}:{port}{API} on {what} (size {size or 'unlimited'}, "
            f"eviction {eviction})")


def _serve_process(
    args: argparse.Namespace, mode: str, opts: Mapping[str, object], sock: socket.socket, http: str, loop: str, *,
    launch: Launch | None = None, ready: Callable[[], None] | None = None, parent: int | None = None,
    signals: list[int] | None = None,
) -> bool:
    """Serve on ``sock`` in this process until SIGTERM or SIGINT; whether the server started.

    ``launch`` (the server itself, not a worker): print the line that says where it serves, and register with
    Eureka if asked. A worker calls ``ready`` once it serves, stops if its supervisor ``parent`` is gone, and
    stops as soon as it has started if ``signals`` (the ones that came before its server could take them) holds
    any."""
    import uvicorn

    from ..caching.service import make_app
    from ..caching.storage_factory import make_storage
    from ..caching.tls import Connections

    try:
        storage = make_storage(mode, **opts)  # type: ignore[arg-type]
    except ImportError as e:
        raise _missing_extra(e, "redis") from None
    require_cert = bool(args.tls_ca) and args.tls_client_auth == "required"
    app = make_app(
        storage, trust_dn_header=args.trust_dn_header, require_client_cert=require_cert, close_storage=True,
        mode=mode.lower(), dn_format=args.dn_format,
        health_requires_cert=bool(args.tls_ca) and args.health_auth == "certificate",
    )
    eureka: EurekaClient | None = None
    try:
        connections = Connections(http)
        options: dict[str, object] = {
            "http": connections.protocol,
            "interface": "asgi3",
            "server_header": False,
            "ws": "none",
            "lifespan": "on",
            "log_config": None,
            "log_level": "warning",
            "access_log": args.access_log,
            "timeout_graceful_shutdown": REQUEST_GRACE,
            "ssl_certfile": args.tls_cert,
            "ssl_keyfile": args.tls_key,
            "ssl_ca_certs": args.tls_ca,
            "ssl_cert_reqs": ssl.CERT_OPTIONAL if args.tls_ca else ssl.CERT_NONE,
        }
        server = uvicorn.Server(uvicorn.Config(connections.app(app), **options))  # type: ignore[arg-type]
        if launch is not None:
            eureka = _eureka(args, launch, sock, lambda: bool(server.started))
            if eureka is not None and app.state.caching_service.metrics is not None:
                app.state.caching_service.metrics.eureka = eureka  # the discovery figures of /metrics
            print(f"ksds serve: {_describe(args, sock, mode, opts, storage.size, storage.eviction)}; HTTP "
                  f"{connections.http} on {loop}; pid {os.getpid()}", flush=True)
        with _uvicorn_logging(args.access_log), _signals_stop(server, signals):
            if eureka is not None:
                eureka.start()
            _run_loop(_serve(server, sock, connections, ready, parent), loop)
    finally:
        if eureka is not None:
            eureka.stop()
        app.state.caching_service.close()  # if the lifespan did not (a failed start)
    return bool(server.started)


@contextlib.contextmanager
def _signals_stop(server: uvicorn.Server, pending: list[int] | None = None) -> Iterator[None]:
    """SIGTERM and SIGINT stop ``server``, and :func:`run` then returns (exit status 0) instead of the process
    dying of the signal.

    While it serves, uvicorn's ``Server.serve`` has handlers of its own for them; afterwards it puts back the
    handlers it found (these) and raises the signal it stopped for again, for them: here that only asks the
    server (stopped already) to stop. A signal before it serves (or one in ``pending``, which came before these
    handlers) makes it stop as soon as it has started."""

    def stop(signum: int, frame: object) -> None:
        server.should_exit = True

    originals = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    if pending:
        server.should_exit = True
    try:
        yield
    finally:
        for sig, handler in originals.items():
            signal.signal(sig, handler)


async def _serve(server: uvicorn.Server, sock: socket.socket, connections: Connections,
                 ready: Callable[[], None] | None = None, parent: int | None = None) -> None:
    """Serve on ``sock`` until a signal, with a shutdown that takes a bounded time.

    uvicorn closes an idle keep-alive connection at shutdown and waits for it to be gone; over TLS, closing
    sends close_notify and waits (up to asyncio's 30 s) for the client's, which a client that holds the
    connection idle never sends. Here a connection with no request in flight is cut once it has had
    :data:`CLOSE_GRACE` seconds to close; requests in flight get :data:`REQUEST_GRACE` seconds (uvicorn's
    ``timeout_graceful_shutdown``). ``ready`` is called once the server serves; with ``parent`` (a worker's
    supervisor) the server stops if that process is gone."""
    reaper = asyncio.create_task(_cut_idle_connections(server, connections))
    watcher = asyncio.create_task(_watch(server, ready, parent))
    try:
        await server.serve(sockets=[sock])
    finally:
        reaper.cancel()
        watcher.cancel()


async def _watch(server: uvicorn.Server, ready: Callable[[], None] | None, parent: int | None) -> None:
    while not server.started:
        if server.should_exit:
            return
        await asyncio.sleep(0.02)
    if ready is not None:
        ready()
    while parent is not None and not server.should_exit:
        if os.getppid() != parent:
            print(f"ksds serve: worker pid {os.getpid()}: its server process {parent} is gone; stopping",
                  file=sys.stderr, flush=True)
            server.should_exit = True
        await asyncio.sleep(0.5)


async def _cut_idle_connections(server: uvicorn.Server, connections: Connections) -> None:
    while not server.should_exit:
        await asyncio.sleep(0.1)
    await asyncio.sleep(CLOSE_GRACE)
    while True:
        connections.abort_idle()
        await asyncio.sleep(0.1)


# --- worker processes (--workers N) -----------------------------------------------------------------------------------

#: with --workers: seconds a worker gets to stop after SIGTERM (it bounds its own stop by CLOSE_GRACE and
#: REQUEST_GRACE, then closes its data set) before it is killed (SIGKILL) and the stop reported as a failure
WORKER_STOP_TIMEOUT = CLOSE_GRACE + REQUEST_GRACE + 15.0
#: a worker that dies is reported and replaced, unless more than MAX_RESTARTS died in the last RESTART_WINDOW
#: seconds: then the server stops (exit status 12)
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


@dataclass(eq=False)
class _Worker:
    slot: int
    proc: subprocess.Popen[bytes]
    #: the read end of the pipe the worker writes to once it serves
    ready_fd: int
    ready: bool = False


def _how(code: int) -> str:
    """A return code in words: ``exited with status 3``, ``was killed by SIGKILL``."""
    if code >= 0:
        return f"exited with status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"was killed by {name}"


def _start_worker(slot: int, args: argparse.Namespace, mode: str, opts: Mapping[str, object], sock: socket.socket,
                  http: str, loop: str) -> _Worker:
    """Start worker ``slot``: a new Python process (not a fork: nothing of this one's threads or event loop comes
    along) that inherits ``sock`` and is handed its configuration (pickled, on its standard input); it serves on
    ``sock`` and writes to its pipe once it does."""
    r, w = os.pipe()
    config = pickle.dumps({"slot": slot, "args": args, "mode": mode, "opts": dict(opts), "fd": sock.fileno(),
                           "ready_fd": w, "parent": os.getpid(), "http": http, "loop": loop})
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from ksds.cli.serve import worker_main; raise SystemExit(worker_main())"],
            stdin=subprocess.PIPE, pass_fds=(sock.fileno(), w), cwd=os.getcwd(),
        )
    except OSError as e:
        os.close(r)
        raise CliError(f"cannot start worker {slot}: {e}") from None
    finally:
        os.close(w)
    assert proc.stdin is not None
    try:
        proc.stdin.write(config)
        proc.stdin.close()
    except OSError:  # it died already: reported as a worker that did not start
        pass
    return _Worker(slot, proc, r)


def worker_main() -> int:
    """A worker process of ``ksds serve --workers N`` (:func:`_start_worker`): serve until SIGTERM or SIGINT."""
    signals: list[int] = []  # until the server's handlers are in place (its storage is open by then)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: signals.append(signum))
    config = pickle.loads(sys.stdin.buffer.read())
    slot: int = config["slot"]
    ready_fd: int = config["ready_fd"]
    try:
        sock = socket.socket(fileno=config["fd"])

        def ready() -> None:
            os.write(ready_fd, b"R")
            os.close(ready_fd)

        started = _serve_process(config["args"], config["mode"], config["opts"], sock, config["http"],
                                 config["loop"], ready=ready, parent=config["parent"], signals=signals)
        return 0 if started else FAILED
    except CliError as e:
        print(f"ksds serve: worker {slot}: {one_line(str(e))}", file=sys.stderr, flush=True)
        return e.status
    except Exception as e:  # whatever it is: one line, and the exit status says the worker failed
        print(f"ksds serve: worker {slot}: {type(e).__name__}: {one_line(str(e))}", file=sys.stderr, flush=True)
        return FAILED


def _supervise(args: argparse.Namespace, launch: Launch, mode: str, opts: Mapping[str, object], sock: socket.socket,
               http: str, loop: str) -> int:
    """Run ``args.workers`` worker processes on ``sock`` until SIGTERM or SIGINT, then stop them (SIGTERM: each
    closes its storage) and wait for them; exit status 0 once every worker stopped cleanly.

    A worker that dies is reported and replaced; the server stops instead (exit status 12) if a worker dies before
    it serves (it could not start), or if more than :data:`MAX_RESTARTS` died in :data:`RESTART_WINDOW`
    seconds. Eureka (if asked for) registers this process's address once every worker serves."""
    from ..caching.model import DEFAULT_EVICTION, DEFAULT_SIZE

    n: int = args.workers
    signals: list[int] = []

    def note(signum: int, frame: object) -> None:
        signals.append(signum)

    originals = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    workers: list[_Worker] = []
    deaths: list[float] = []
    failure = ""
    serving = False
    eureka: EurekaClient | None = None
    try:
        eureka = _eureka(args, launch, sock, lambda: serving)
        for slot in range(1, n + 1):
            workers.append(_start_worker(slot, args, mode, opts, sock, http, loop))
        while not signals and not failure:
            waiting = [w.ready_fd for w in workers if not w.ready]
            if waiting:
                readable, _, _ = select.select(waiting, [], [], 0.1)
                for w in workers:
                    if w.ready_fd in readable and os.read(w.ready_fd, 1):
                        w.ready = True
            else:
                time.sleep(0.1)
            if not serving and all(w.ready for w in workers):
                size = int(opts.get("size", DEFAULT_SIZE))  # type: ignore[call-overload]
                line = _describe(args, sock, mode, opts, size, str(opts.get("eviction", DEFAULT_EVICTION)))
                pids = ", ".join(str(w.proc.pid) for w in workers)
                print(f"ksds serve: {line}; HTTP {http} on {loop}; {n} workers (pids {pids}); pid {os.getpid()}",
                      flush=True)
                serving = True
                if eureka is not None:
                    eureka.start()
            for i, w in enumerate(workers):
                code = w.proc.poll()
                if code is None:
                    continue
                os.close(w.ready_fd)
                if not w.ready:
                    failure = f"worker {w.slot} (pid {w.proc.pid}) {_how(code)} before it served; stopping"
                    del workers[i]
                    break
                now = time.monotonic()
                deaths = [t for t in deaths if now - t < RESTART_WINDOW] + [now]
                if len(deaths) > MAX_RESTARTS:
                    failure = (f"worker {w.slot} (pid {w.proc.pid}) {_how(code)}, the {len(deaths)}th worker to die in "
                               f"{RESTART_WINDOW:g} s; stopping")
                    del workers[i]
                    break
                workers[i] = _start_worker(w.slot, args, mode, opts, sock, http, loop)
                print(f"ksds serve: worker {w.slot} (pid {w.proc.pid}) {_how(code)}; started it again (pid "
                      f"{workers[i].proc.pid})", file=sys.stderr, flush=True)
    finally:
        if eureka is not None and serving:
            eureka.stop()
        problems = _stop_workers(workers, signals)
        for sig, handler in originals.items():
            signal.signal(sig, handler)
    if failure or problems:
        raise CliError("; ".join([failure] * bool(failure) + problems))
    print("ksds serve: stopped", flush=True)
    return 0


def _stop_workers(workers: list[_Worker], signals: list[int]) -> list[str]:
    """SIGTERM to every worker (signals that come to the supervisor meanwhile are passed on: a second SIGINT makes
    uvicorn stop at once), then wait for each, at most :data:`WORKER_STOP_TIMEOUT` seconds; what went wrong."""
    problems = []
    for w in workers:
        with contextlib.suppress(ProcessLookupError):
            w.proc.send_signal(signal.SIGTERM)
    passed = len(signals)
    deadline = time.monotonic() + WORKER_STOP_TIMEOUT
    left = list(workers)
    while left:
        for w in list(left):
            code = w.proc.poll()
            if code is None:
                continue
            left.remove(w)
            # SIGTERM kills a worker only before its handlers are in place, when it has opened nothing yet
            if code != 0 and not (code == -signal.SIGTERM and not w.ready):
                problems.append(f"worker {w.slot} (pid {w.proc.pid}) {_how(code)} while stopping")
        for sig in signals[passed:]:
            for w in left:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(sig)
        passed = len(signals)
        if left and time.monotonic() > deadline:
            for w in left:
                w.proc.kill()
                w.proc.wait()
                problems.append(f"worker {w.slot} (pid {w.proc.pid}) did not stop in {WORKER_STOP_TIMEOUT:g} s: "
                                "killed")
            left = []
        time.sleep(0.05)
    for w in workers:
        with contextlib.suppress(OSError):
            os.close(w.ready_fd)
    return problems
