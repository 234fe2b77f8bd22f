"""ksds serve: run the caching service (Zowe API ML's caching service REST API) on a storage mode.

One server process; for high availability run several ``ksds serve --storage ksds`` on one data set (record-level
sharing: each sees what the others acknowledged) behind the gateways' load balancing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from ._common import FAILED, USAGE, CliError, Subparsers, add_verb, one_line

if TYPE_CHECKING:
    import uvicorn

    from ..caching.tls import Connections

EXAMPLES = """
  ksds serve --dataset cache.ksds                          (the ksds storage; defines cache.ksds if missing)
  ksds serve --storage memory --port 10016
  ksds serve --storage redis --redis-url redis://127.0.0.1:6379/0
  ksds serve --dataset cache.ksds --size 100 --eviction removeOldest
  ksds serve --dataset /shared/cache.ksds --port 7555 &    (two servers on one data set: HA)
  ksds serve --dataset /shared/cache.ksds --port 7556 &
  ksds serve --dataset cache.ksds --tls-cert server.pem --tls-key server.key --tls-ca clients-ca.pem
environment (Zowe's names; the command line wins): CACHING_STORAGE_MODE (inMemory|VSAM|redis, or ksds|memory),
CACHING_STORAGE_SIZE, CACHING_STORAGE_EVICTIONSTRATEGY, CACHING_STORAGE_VSAM_NAME (the data set),
CACHING_STORAGE_VSAM_KEYLENGTH, CACHING_STORAGE_VSAM_RECORDLENGTH, CACHING_STORAGE_REDIS_MASTERNODEURI
the API: http://HOST:PORT/cachingservice/api/v1/cache (GET/POST/PUT/DELETE), .../cache-list, OpenAPI document at
/cachingservice/v3/api-docs, health at /cachingservice/application/health
exit status: 0 stopped by SIGTERM or SIGINT; 12 it could not start (one line on stderr says why); 2 wrong arguments
"""

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7555
ENV_MODE = "CACHING_STORAGE_MODE"
ENV_SIZE = "CACHING_STORAGE_SIZE"
ENV_EVICTION = "CACHING_STORAGE_EVICTIONSTRATEGY"
ENV_DATASET = "CACHING_STORAGE_VSAM_NAME"
ENV_REDIS = "CACHING_STORAGE_REDIS_MASTERNODEURI"
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
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)")
    p.add_argument("--size", type=_size, help="most entries across all callers, 0: no limit (default 10000) "
                   "[CACHING_STORAGE_SIZE]")
    p.add_argument("--eviction", choices=("reject", "removeOldest"),
                   help="at the size limit: refuse with 507 (reject, the default) or remove the oldest entry "
                   "[CACHING_STORAGE_EVICTIONSTRATEGY]")
    p.add_argument("--redis-url", metavar="URL", help="redis://[user:password@]host:port/db (redis storage) "
                   "[CACHING_STORAGE_REDIS_MASTERNODEURI]")
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


def _redis_from_env(raw: str) -> str:
    """Zowe's ``masterNodeUri`` is ``[user:]password@host:port``; a URL with a scheme is taken as it is."""
    raw = raw.strip()
    return raw if "://" in raw else f"redis://{raw}"


def storage_options(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> dict[str, object]:
    """The keyword arguments of :func:`~ksds.caching.storage_factory.make_storage` from the command line and
    Zowe's environment variables (the command line wins)."""
    env = os.environ if env is None else env
    mode = args.storage or env.get(ENV_MODE, "").strip() or "ksds"
    size = args.size if args.size is not None else _env_int(env, ENV_SIZE)
    eviction = args.eviction or env.get(ENV_EVICTION, "").strip() or None
    dataset = args.dataset or (_dataset_from_env(env[ENV_DATASET]) if env.get(ENV_DATASET, "").strip() else None)
    redis_url = args.redis_url or (_redis_from_env(env[ENV_REDIS]) if env.get(ENV_REDIS, "").strip() else None)
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
        if not redis_url:
            raise CliError("the redis storage needs --redis-url URL (or CACHING_STORAGE_REDIS_MASTERNODEURI)", USAGE)
        opts["redis_url"] = redis_url
    elif args.redis_url:
        opts["redis_url"] = args.redis_url
    for name, value in (("layout", args.layout), ("key_length", args.keylength),
                        ("record_length", args.recordlength), ("durability", args.durability)):
        if value is not None:
            opts[name] = value
    return opts


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
    ``started`` attributes, and the protocol class of ``--http h11`` (``uvicorn.protocols.http.h11_impl
    .H11Protocol``, an asyncio protocol that :class:`ksds.caching.tls.Connections` builds with the arguments
    uvicorn gives). The signal handling relies on ``Server.serve`` putting back the handlers it found (as
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
    from ..caching.storage_factory import make_storage

    try:
        import uvicorn

        from ..caching.service import API, make_app
        from ..caching.tls import Connections
    except ImportError as e:
        raise _missing_extra(e, "service") from None
    check_uvicorn()

    opts = storage_options(args)
    _check_tls(args)
    sock = _listen(args.host, args.port)
    try:
        mode = str(opts.pop("mode"))
        storage = make_storage(mode, **opts)  # type: ignore[arg-type]
    except ImportError as e:
        sock.close()
        raise _missing_extra(e, "redis") from None
    except BaseException:
        sock.close()
        raise
    require_cert = bool(args.tls_ca) and args.tls_client_auth == "required"
    app = make_app(
        storage, trust_dn_header=args.trust_dn_header, require_client_cert=require_cert, close_storage=True,
        mode=mode.lower(),
    )
    connections = Connections()
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
    host, port = sock.getsockname()[:2]
    scheme = "https" if args.tls_cert else "http"
    where = f"[{host}]" if ":" in str(host) else str(host)
    what = {"ksds": f"ksds data set {opts.get('dataset')}", "vsam": f"ksds data set {opts.get('dataset')}",
            "redis": f"redis {opts.get('redis_url')}"}.get(mode.lower(), "memory")
    print(f"ksds serve: the caching service at {scheme}://{where}:{port}{API} on {what} "
          f"(size {storage.size or 'unlimited'}, eviction {storage.eviction}); pid {os.getpid()}", flush=True)
    try:
        with _uvicorn_logging(args.access_log), _signals_stop(server):
            asyncio.run(_serve(server, sock, connections))
    finally:
        sock.close()
        app.state.caching_service.close()  # if the lifespan did not (a failed start)
    if server.started:
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


@contextlib.contextmanager
def _signals_stop(server: uvicorn.Server) -> Iterator[None]:
    """SIGTERM and SIGINT stop ``server``, and :func:`run` then returns (exit status 0) instead of the process
    dying of the signal.

    While it serves, uvicorn's ``Server.serve`` has handlers of its own for them; afterwards it puts back the
    handlers it found (these) and raises the signal it stopped for again, for them: here that only asks the
    server (stopped already) to stop. A signal before it serves makes it stop as soon as it has started."""

    def stop(signum: int, frame: object) -> None:
        server.should_exit = True

    originals = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in originals.items():
            signal.signal(sig, handler)


async def _serve(server: uvicorn.Server, sock: socket.socket, connections: Connections) -> None:
    """Serve on ``sock`` until a signal, with a shutdown that takes a bounded time.

    uvicorn closes an idle keep-alive connection at shutdown and waits for it to be gone; over TLS, closing
    sends close_notify and waits (up to asyncio's 30 s) for the client's, which a client that holds the
    connection idle never sends. Here a connection with no request in flight is cut once it has had
    :data:`CLOSE_GRACE` seconds to close; requests in flight get :data:`REQUEST_GRACE` seconds (uvicorn's
    ``timeout_graceful_shutdown``)."""
    reaper = asyncio.create_task(_cut_idle_connections(server, connections))
    try:
        await server.serve(sockets=[sock])
    finally:
        reaper.cancel()


async def _cut_idle_connections(server: uvicorn.Server, connections: Connections) -> None:
    while not server.should_exit:
        await asyncio.sleep(0.1)
    await asyncio.sleep(CLOSE_GRACE)
    while True:
        connections.abort_idle()
        await asyncio.sleep(0.1)
