"""Zowe's Redis configuration (``caching.storage.redis.*``) for the redis storage: :class:`RedisConfig`.

Zowe's caching service reads it in ``RedisConfig``/``RedisConfiguration`` (``caching-service/.../service/redis/
config/``), from ``application.yml`` and, through Spring's relaxed binding, these environment variables:

=============================================== ================================ =============================
environment variable                            Zowe's property                  ksds option
=============================================== ================================ =============================
``CACHING_STORAGE_REDIS_MASTERNODEURI``         ``masterNodeUri``                ``--redis-url``
``CACHING_STORAGE_REDIS_TIMEOUT``               ``timeout`` (s, default 60)      ``--redis-timeout``
``CACHING_STORAGE_REDIS_SENTINEL_ENABLED``      ``sentinel.enabled``             ``--redis-sentinel``
``CACHING_STORAGE_REDIS_SENTINEL_MASTERINSTANCE`` ``sentinel.masterInstance``    ``--redis-sentinel-master``
``CACHING_STORAGE_REDIS_SENTINEL_NODES``        ``sentinel.nodes`` (a list)      ``--redis-sentinel-nodes``
``CACHING_STORAGE_REDIS_SSL_ENABLED``           ``ssl.enabled``                  ``--redis-tls``
``CACHING_STORAGE_REDIS_SSL_KEYSTORE``          ``ssl.keyStore``                 ``--redis-keystore``
``CACHING_STORAGE_REDIS_SSL_KEYSTOREPASSWORD``  ``ssl.keyStorePassword``         ``--redis-keystore-password``
``CACHING_STORAGE_REDIS_SSL_TRUSTSTORE``        ``ssl.trustStore``               ``--redis-truststore``
``CACHING_STORAGE_REDIS_SSL_TRUSTSTOREPASSWORD`` ``ssl.trustStorePassword``      ``--redis-truststore-password``
=============================================== ================================ =============================

The command line wins over the environment. Forms, as Zowe parses them:

* ``masterNodeUri``: ``[[user:]password@]host[:port]``; a bare ``password@host`` is a password for the user
  ``default``; the port defaults to 6379. ksds also takes a redis-py URL there (``redis://``, ``rediss://`` for
  TLS, ``unix://``), and, unlike Zowe, a password holding ``@`` (the last ``@`` ends it: a host has none) and an
  IPv6 host in brackets (``[::1]:6379``).
* ``sentinel.nodes``: a list (in one variable, comma-separated as Spring splits it, or Spring's indexed
  ``..._NODES_0``, ``..._NODES_1``) of ``[[user:]password@]host[:port]``, the port defaulting to 6379 as in Zowe;
  the password is the Sentinel's own (``requirepass`` of the Sentinel), the master's credentials come from
  ``masterNodeUri``, whose host and port Sentinel mode does not use (as in Zowe). Zowe drops a node's user name;
  ksds uses it.
* booleans as Spring reads them: ``true``/``false``, ``on``/``off``, ``yes``/``no``, ``1``/``0``, any case.
* key and trust stores: PEM files (a key store: the certificate chain and the private key in one file, the key
  encrypted with the key store password or not; a trust store: the CA certificates) or PKCS#12 files as Java's
  keytool writes them (read by the ``cryptography`` package). A Java KeyStore (JKS/JCEKS) or a z/OS key ring
  (``safkeyring://``) is refused with the command that converts it.

Unlike Zowe, TLS is off unless asked for (``--redis-tls``, ``CACHING_STORAGE_REDIS_SSL_ENABLED=true`` or a
``rediss://`` URL): Zowe's ``application.yml`` turns it on because every Zowe has a key store and trust store (its
own HTTPS server's, the default of ``ssl.keyStore``/``ssl.trustStore``), while ``ksds serve`` runs without
certificates by default and Debian's ``redis-server`` listens without TLS. With TLS on, Zowe's form of the address
and no store given, ksds falls back as Zowe does to its server's: ``--tls-cert``/``--tls-key`` as the client
certificate, ``--tls-ca`` as trusted CAs (added to the system's CAs, which are always trusted). Sentinels are
spoken to without TLS, as Zowe's Lettuce URI does (TLS is turned on before the Sentinel nodes are added, so they
keep plain connections); the master and replicas with TLS. The server's name is checked against its certificate
(Lettuce's ``verifyPeer`` FULL, Zowe's default).

Nothing here imports redis: ``ksds serve --help`` works without the redis extra.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 6379
DEFAULT_USER = "default"
#: seconds per command (Zowe's ``timeout``, Lettuce's command timeout)
DEFAULT_TIMEOUT = 60.0
#: the most seconds a connect may take (Lettuce's default connect timeout), whatever the command timeout
CONNECT_TIMEOUT = 10.0

ENV_MASTER_NODE_URI = "CACHING_STORAGE_REDIS_MASTERNODEURI"
ENV_TIMEOUT = "CACHING_STORAGE_REDIS_TIMEOUT"
ENV_SENTINEL_ENABLED = "CACHING_STORAGE_REDIS_SENTINEL_ENABLED"
ENV_SENTINEL_MASTER = "CACHING_STORAGE_REDIS_SENTINEL_MASTERINSTANCE"
ENV_SENTINEL_NODES = "CACHING_STORAGE_REDIS_SENTINEL_NODES"
ENV_SSL_ENABLED = "CACHING_STORAGE_REDIS_SSL_ENABLED"
ENV_KEYSTORE = "CACHING_STORAGE_REDIS_SSL_KEYSTORE"
ENV_KEYSTORE_PASSWORD = "CACHING_STORAGE_REDIS_SSL_KEYSTOREPASSWORD"
ENV_TRUSTSTORE = "CACHING_STORAGE_REDIS_SSL_TRUSTSTORE"
ENV_TRUSTSTORE_PASSWORD = "CACHING_STORAGE_REDIS_SSL_TRUSTSTOREPASSWORD"

#: (argparse dest, option, environment variable) of every setting
SETTINGS = (
    ("redis_url", "--redis-url", ENV_MASTER_NODE_URI),
    ("redis_timeout", "--redis-timeout", ENV_TIMEOUT),
    ("redis_sentinel", "--redis-sentinel", ENV_SENTINEL_ENABLED),
    ("redis_sentinel_master", "--redis-sentinel-master", ENV_SENTINEL_MASTER),
    ("redis_sentinel_nodes", "--redis-sentinel-nodes", ENV_SENTINEL_NODES),
    ("redis_tls", "--redis-tls", ENV_SSL_ENABLED),
    ("redis_keystore", "--redis-keystore", ENV_KEYSTORE),
    ("redis_keystore_password", "--redis-keystore-password", ENV_KEYSTORE_PASSWORD),
    ("redis_truststore", "--redis-truststore", ENV_TRUSTSTORE),
    ("redis_truststore_password", "--redis-truststore-password", ENV_TRUSTSTORE_PASSWORD),
)
URL_SCHEMES = ("redis", "rediss", "unix")
_TRUE = ("true", "on", "yes", "1")
_FALSE = ("false", "off", "no", "0")


class RedisConfigError(ValueError):
    """A Redis setting that cannot be used: the message names the setting, its value (passwords masked) and
    the fix."""


# --- the configuration -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisNode:
    """A Redis server (or Sentinel) and the credentials to give it (``password`` None: no AUTH)."""

    host: str
    port: int = DEFAULT_PORT
    username: str = DEFAULT_USER
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class SentinelConfig:
    """Sentinel mode: the master's name (``masterInstance``) and the Sentinels to ask for it."""

    master: str
    nodes: tuple[RedisNode, ...]


@dataclass(frozen=True)
class Store:
    """A key store or trust store: a PEM or PKCS#12 file. ``key_path``: a separate PEM private key (the server's
    ``--tls-key``, when its certificate is the fallback key store); ``origin``: the option or variable that named
    it, for messages."""

    path: str
    password: str | None = field(default=None, repr=False)
    key_path: str | None = None
    origin: str = "the key store"


@dataclass(frozen=True)
class RedisConfig:
    """Where and how to reach Redis. Exactly one of ``node`` (Zowe's ``masterNodeUri``), ``url`` (a redis-py URL)
    or ``sentinel`` says where; in Sentinel mode ``node`` or ``url``, if given, only brings the master's
    credentials (and the URL its database number). ``timeout``: seconds per command (connects take at most
    :data:`CONNECT_TIMEOUT`). ``tls``: TLS to the Redis servers, with ``keystore`` (the client certificate, if
    Redis asks for one) and ``truststore`` (CAs trusted besides the system's)."""

    node: RedisNode | None = None
    url: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    sentinel: SentinelConfig | None = None
    tls: bool = False
    keystore: Store | None = None
    truststore: Store | None = None

    def __post_init__(self) -> None:
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) or not self.timeout > 0:
            raise RedisConfigError(f"the Redis timeout must be a number of seconds > 0, not {self.timeout!r}")
        if self.node is not None and self.url is not None:
            raise RedisConfigError("give Redis's address once: a masterNodeUri or a URL, not both")
        if self.node is None and self.url is None and self.sentinel is None:
            raise RedisConfigError("a Redis configuration needs an address (masterNodeUri or URL) or Sentinel")
        if self.url is not None:
            scheme = urlsplit(self.url).scheme.lower()
            if scheme not in URL_SCHEMES:
                raise RedisConfigError(f"a Redis URL starts with {', '.join(s + '://' for s in URL_SCHEMES)}, "
                                       f"not {mask(self.url)!r}")
            if (scheme == "rediss") != self.tls:
                raise RedisConfigError(f"the URL {mask(self.url)!r} says TLS {'on' if scheme == 'rediss' else 'off'}"
                                       " by its scheme; tls must agree")

    @property
    def connect_timeout(self) -> float:
        return min(float(self.timeout), CONNECT_TIMEOUT)

    def credentials(self) -> tuple[str | None, str | None, int]:
        """(user name, password, database) for the data nodes: from ``node`` or ``url`` (a user name ``default``
        is given as None: ``AUTH password`` is that user's)."""
        if self.url is not None:
            u = urlsplit(self.url)
            db_text = u.path.lstrip("/") or "0"
            db = int(db_text) if db_text.isdigit() else 0
            return (unquote(u.username) if u.username else None, unquote(u.password) if u.password else None, db)
        if self.node is not None:
            user = None if self.node.username == DEFAULT_USER else self.node.username
            return user, self.node.password, 0
        return None, None, 0

    def __str__(self) -> str:
        """A description for logs, with no password."""
        tls = " (TLS)" if self.tls else ""
        if self.sentinel is not None:
            nodes = ",".join(str(n) for n in self.sentinel.nodes)
            return f"Sentinel master {self.sentinel.master!r} via {nodes}{tls}"
        if self.url is not None:
            return mask(self.url)
        assert self.node is not None
        return f"{'rediss' if self.tls else 'redis'}://{self.node}"

    @classmethod
    def from_address(cls, address: str, *, timeout: float = DEFAULT_TIMEOUT) -> RedisConfig:
        """The configuration of one Redis at ``address``: a redis-py URL or Zowe's ``masterNodeUri``."""
        text = address.strip()
        if "://" in text:
            return cls(url=text, timeout=timeout, tls=urlsplit(text).scheme.lower() == "rediss")
        return cls(node=parse_node(text, "the Redis address"), timeout=timeout)


def mask(text: str) -> str:
    """``text`` (an address or URL) with its password replaced by ``***``."""
    head, sep, tail = text.rpartition("@")
    if not sep:
        return text
    scheme, s, creds = head.rpartition("://")
    user, colon, _ = creds.partition(":")
    creds = f"{user}:***" if colon else "***"
    return f"{scheme}{s}{creds}@{tail}"


# --- parsing ----------------------------------------------------------------------------------------------------------


def parse_node(text: str, what: str, *, default_port: int = DEFAULT_PORT) -> RedisNode:
    """Zowe's ``[[user:]password@]host[:port]`` (``RedisConfig.parseCredentialsFromUri`` and friends). ``what``
    names the setting in errors."""
    raw = text.strip()
    form = "[[user:]password@]host[:port]"
    if not raw:
        raise RedisConfigError(f"{what} is empty: give {form}")
    creds, at, hostport = raw.rpartition("@")
    username, password = DEFAULT_USER, None
    if at:
        user, colon, pw = creds.partition(":")
        if colon:
            username, password = user or DEFAULT_USER, pw
        else:
            password = creds
        if password == "":
            password = None
    if hostport.startswith("["):
        end = hostport.find("]")
        host, rest = (hostport[1:end], hostport[end + 1:]) if end > 0 else ("", "")
        if end < 0 or (rest and not rest.startswith(":")):
            raise RedisConfigError(f"{what} {mask(raw)!r}: an IPv6 host is written [address]:port")
        port_text: str | None = rest[1:] if rest else None
    else:
        host, colon, port_text = hostport.partition(":")
        if not colon:
            port_text = None
    if not host or re.search(r"[\s/,?#]", host):
        raise RedisConfigError(f"{what} {mask(raw)!r} names no host: give {form} (or a redis:// URL)")
    port = default_port
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise RedisConfigError(f"{what} {mask(raw)!r}: the port {port_text!r} is not a port number (1-65535)")
        port = int(port_text)
    return RedisNode(host, port, username, password)


def parse_nodes(text: str, what: str) -> tuple[RedisNode, ...]:
    """A comma-separated list of Sentinel nodes (Spring splits a list property at commas and trims)."""
    parts = [p.strip() for p in text.split(",")]
    if not any(parts):
        raise RedisConfigError(f"{what} is empty: give the Sentinels as [password@]host:port,[password@]host:port")
    if not all(parts):
        raise RedisConfigError(f"{what} {mask(text)!r} has an empty node: separate the nodes by single commas")
    return tuple(parse_node(p, f"{what} node {i + 1}") for i, p in enumerate(parts))


def parse_bool(text: str, what: str) -> bool:
    """A boolean as Spring converts one."""
    t = text.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise RedisConfigError(f"{what} must be true or false, not {text!r}")


def parse_timeout(text: str, what: str) -> float:
    """Seconds > 0 (Zowe: a whole number; ksds also takes a fraction)."""
    try:
        t = float(text.strip())
    except ValueError:
        t = float("nan")
    if not t > 0 or t == float("inf"):
        raise RedisConfigError(f"{what} must be a number of seconds > 0 (Zowe's default is 60), not {text!r}")
    return t


# --- the command line and the environment -------------------------------------------------------------------------


def _seconds(text: str) -> float:
    try:
        return parse_timeout(text, "--redis-timeout")
    except RedisConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The redis storage's options (``ksds serve``), each naming its environment variable."""
    g = parser.add_argument_group(
        "redis storage (--storage redis)",
        "Zowe's caching.storage.redis settings; the environment variable of each is in [], the command line wins.",
    )
    g.add_argument("--redis-url", "--redis-master-node-uri", dest="redis_url", metavar="ADDRESS",
                   help="Redis: [[user:]password@]host[:port] as Zowe's masterNodeUri (a bare password is the user "
                   "default's; port 6379), or a redis-py URL (redis://, rediss:// for TLS, unix://); with Sentinel "
                   f"only its credentials are used [{ENV_MASTER_NODE_URI}]")
    g.add_argument("--redis-timeout", type=_seconds, metavar="SECONDS",
                   help=f"seconds a command may take before it answers 503 (default 60, as Zowe) [{ENV_TIMEOUT}]")
    g.add_argument("--redis-sentinel", action=argparse.BooleanOptionalAction, default=None,
                   help=f"find the master through Redis Sentinel (default off) [{ENV_SENTINEL_ENABLED}]")
    g.add_argument("--redis-sentinel-master", metavar="NAME",
                   help=f"Sentinel: the master's name (masterInstance) [{ENV_SENTINEL_MASTER}]")
    g.add_argument("--redis-sentinel-nodes", metavar="NODES",
                   help="Sentinel: the Sentinels, [password@]host[:port] separated by commas (port 6379 if "
                   f"left out, as in Zowe) [{ENV_SENTINEL_NODES}]")
    g.add_argument("--redis-tls", action=argparse.BooleanOptionalAction, default=None,
                   help="TLS to Redis (default off; Zowe's default is on) [" + ENV_SSL_ENABLED + "]")
    g.add_argument("--redis-keystore", metavar="FILE",
                   help="TLS: the client certificate and key, PEM (one file) or PKCS#12 (default: --tls-cert and "
                   f"--tls-key) [{ENV_KEYSTORE}]")
    g.add_argument("--redis-keystore-password", metavar="PASSWORD",
                   help="the key store's (or PEM key's) password; the variable keeps it out of ps "
                   f"[{ENV_KEYSTORE_PASSWORD}]")
    g.add_argument("--redis-truststore", metavar="FILE",
                   help="TLS: CAs to trust besides the system's, PEM or PKCS#12 (default: --tls-ca) "
                   f"[{ENV_TRUSTSTORE}]")
    g.add_argument("--redis-truststore-password", metavar="PASSWORD",
                   help=f"the trust store's password [{ENV_TRUSTSTORE_PASSWORD}]")


def options_given(args: argparse.Namespace) -> list[str]:
    """The redis options given on the command line (to refuse them for another storage mode)."""
    return [option for dest, option, _ in SETTINGS if getattr(args, dest, None) is not None]


def _indexed(env: Mapping[str, str], name: str) -> list[tuple[int, str]]:
    """Spring's indexed list variables: ``NAME_0``, ``NAME_1_``, ... (value, in index order)."""
    pat = re.compile(re.escape(name) + r"_(\d+)_?")
    found = []
    for k, v in env.items():
        m = pat.fullmatch(k)
        if m and v.strip():
            found.append((int(m.group(1)), v.strip()))
    return sorted(found)


def from_sources(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> RedisConfig:
    """The configuration from ``ksds serve``'s options (:func:`add_arguments`) and Zowe's environment variables,
    the command line winning; the stores are read once here, so a wrong path or password is an error now.
    Raises :class:`RedisConfigError`."""
    env = os.environ if env is None else env

    def pick(dest: str) -> tuple[object, str, bool]:
        """(value, its name for messages, from the command line?) or (None, option, False)."""
        option, var = next((o, e) for d, o, e in SETTINGS if d == dest)
        value = getattr(args, dest, None)
        if value is not None:
            return value, option, True
        raw = env.get(var, "")
        if raw.strip():
            return raw, var, False
        return None, option, False

    def text(dest: str) -> tuple[str | None, str, bool]:
        v, name, cli = pick(dest)
        return (None if v is None else str(v)), name, cli

    def flag(dest: str) -> tuple[bool | None, str]:
        v, name, cli = pick(dest)
        if v is None or isinstance(v, bool):
            return v, name
        return parse_bool(str(v), name), name

    # timeout
    t, t_name, t_cli = text("redis_timeout")
    timeout = DEFAULT_TIMEOUT if t is None else (float(t) if t_cli else parse_timeout(t, t_name))

    # Sentinel
    sentinel_on, _ = flag("redis_sentinel")
    master, master_name, master_cli = text("redis_sentinel_master")
    nodes_text, nodes_name, nodes_cli = text("redis_sentinel_nodes")
    if nodes_text is None:
        indexed = _indexed(env, ENV_SENTINEL_NODES)
        if indexed:
            nodes_text, nodes_name = ",".join(v for _, v in indexed), f"{ENV_SENTINEL_NODES}_0..."
    elif not nodes_cli and _indexed(env, ENV_SENTINEL_NODES):
        raise RedisConfigError(f"{ENV_SENTINEL_NODES} and {ENV_SENTINEL_NODES}_0... are both set: keep one")
    sentinel: SentinelConfig | None = None
    if sentinel_on:
        if not master or not master.strip():
            raise RedisConfigError("Redis Sentinel needs the master's name: --redis-sentinel-master NAME (or "
                                   f"{ENV_SENTINEL_MASTER})")
        if nodes_text is None:
            raise RedisConfigError("Redis Sentinel needs its nodes: --redis-sentinel-nodes HOST:PORT,... (or "
                                   f"{ENV_SENTINEL_NODES})")
        sentinel = SentinelConfig(master.strip(), parse_nodes(nodes_text, nodes_name))
    else:
        for given, cli, name in ((master, master_cli, master_name), (nodes_text, nodes_cli, nodes_name)):
            if given is not None and cli:  # from the environment they are ignored, as Zowe ignores them
                raise RedisConfigError(f"{name} is for Redis Sentinel: add --redis-sentinel (or "
                                       f"{ENV_SENTINEL_ENABLED}=true)")

    # the address
    address, addr_name, _ = text("redis_url")
    node: RedisNode | None = None
    url: str | None = None
    if address is not None and "://" in address:
        url = address.strip()
    elif address is not None:
        node = parse_node(address, addr_name)
    elif sentinel is None:
        raise RedisConfigError(
            f"the redis storage needs --redis-url ADDRESS (or {ENV_MASTER_NODE_URI}): [[user:]password@]host[:port] "
            "or redis://host:port/db; or Sentinel: --redis-sentinel --redis-sentinel-master NAME "
            "--redis-sentinel-nodes HOST:PORT,...")

    # TLS
    tls_flag, tls_name = flag("redis_tls")
    if url is not None:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in URL_SCHEMES:
            raise RedisConfigError(f"{addr_name} {mask(url)!r}: a Redis URL starts with "
                                   f"{', '.join(s + '://' for s in URL_SCHEMES)}")
        by_scheme = scheme == "rediss"
        if tls_flag is not None and tls_flag != by_scheme:
            raise RedisConfigError(
                f"{addr_name} {mask(url)!r} says TLS {'on' if by_scheme else 'off'} by its scheme, {tls_name} "
                f"says {'on' if tls_flag else 'off'}: use rediss:// for TLS, redis:// without, or Zowe's form "
                "host:port with the TLS setting")
        tls = by_scheme
    else:
        tls = bool(tls_flag)

    keystore = truststore = None
    stores = (("redis_keystore", "redis_keystore_password"), ("redis_truststore", "redis_truststore_password"))
    if tls:
        found: list[Store | None] = []
        for path_dest, pw_dest in stores:
            path, path_name, _ = text(path_dest)
            pw, _, _ = text(pw_dest)
            found.append(None if path is None else Store(path.strip(), pw, origin=path_name))
        keystore, truststore = found
        # Zowe's defaults, for Zowe's form: the caching service's own key store and trust store (a redis-py URL
        # is ksds's own form, and may carry its own ssl_certfile, ssl_ca_certs parameters)
        cert, key, ca = (getattr(args, a, None) for a in ("tls_cert", "tls_key", "tls_ca"))
        if keystore is None and cert and url is None:
            keystore = Store(str(cert), key_path=str(key) if key else None, origin="--tls-cert")
        if truststore is None and ca and url is None:
            truststore = Store(str(ca), origin="--tls-ca")
    else:
        for path_dest, pw_dest in stores:
            for dest in (path_dest, pw_dest):
                v, name, cli = pick(dest)
                if v is not None and cli:  # from the environment: ignored without TLS, as Zowe ignores them
                    raise RedisConfigError(f"{name} is for TLS: add --redis-tls (or {ENV_SSL_ENABLED}=true, or "
                                           "use a rediss:// URL)")
    config = RedisConfig(node=node, url=url, timeout=timeout, sentinel=sentinel, tls=tls, keystore=keystore,
                         truststore=truststore)
    check_stores(config)
    return config


# --- the key store and trust store ---------------------------------------------------------------------------------

_PASSWORD_VARS = {
    "--redis-keystore": ("--redis-keystore-password", ENV_KEYSTORE_PASSWORD),
    ENV_KEYSTORE: ("--redis-keystore-password", ENV_KEYSTORE_PASSWORD),
    "--redis-truststore": ("--redis-truststore-password", ENV_TRUSTSTORE_PASSWORD),
    ENV_TRUSTSTORE: ("--redis-truststore-password", ENV_TRUSTSTORE_PASSWORD),
}


def _password_hint(store: Store) -> str:
    option, var = _PASSWORD_VARS.get(store.origin, ("--redis-keystore-password", ENV_KEYSTORE_PASSWORD))
    return f"{option} or {var}"


def _read(store: Store) -> bytes:
    name = f"{store.origin} {store.path}"
    if store.path.lower().startswith(("safkeyring:", "safkeyringjce", "safkeyringjcecca", "safkeyringjcehybrid")):
        raise RedisConfigError(f"{name}: a z/OS key ring exists only on z/OS; export its certificates (and key) to "
                               "a PKCS#12 or PEM file and name that file")
    try:
        with open(store.path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise RedisConfigError(f"{name}: {e.strerror or e}") from None
    if data[:4] in (b"\xfe\xed\xfe\xed", b"\xce\xce\xce\xce"):
        kind = "JKS" if data[:4] == b"\xfe\xed\xfe\xed" else "JCEKS"
        raise RedisConfigError(
            f"{name}: a Java {kind} key store, which ksds cannot read; convert it to PKCS#12: keytool "
            f"-importkeystore -srckeystore {store.path} -destkeystore {store.path}.p12 -deststoretype PKCS12")
    return data


def _is_pem(data: bytes) -> bool:
    return b"-----BEGIN " in data


def _pkcs12(store: Store, data: bytes) -> object:
    """The PKCS#12 file's contents (``cryptography``'s ``PKCS12KeyAndCertificates``)."""
    name = f"{store.origin} {store.path}"
    try:
        from cryptography.hazmat.primitives.serialization import pkcs12
    except ImportError:
        raise RedisConfigError(f"{name}: reading PKCS#12 needs the cryptography package (pip install "
                               "'ksds[service]'), or give PEM files") from None
    tries: list[bytes | None] = [store.password.encode()] if store.password is not None else [None, b""]
    for pw in tries:
        try:
            return pkcs12.load_pkcs12(data, pw)
        except ValueError:
            continue
    if store.password is None:
        raise RedisConfigError(f"{name}: not a PEM file, and not a PKCS#12 file that opens without a password "
                               f"(give its password: {_password_hint(store)})")
    raise RedisConfigError(f"{name}: the password does not open it, or it is not a PKCS#12 file (check "
                           f"{_password_hint(store)})")


def trusted_pem(store: Store) -> str:
    """The CA certificates of a trust store, as PEM text (redis-py's ``ssl_ca_data``)."""
    data = _read(store)
    name = f"{store.origin} {store.path}"
    if _is_pem(data):
        text = data.decode("ascii", "replace")
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise RedisConfigError(f"{name}: a PEM file with no certificate (a trust store holds CA certificates)")
    else:
        from cryptography.hazmat.primitives.serialization import Encoding

        p = _pkcs12(store, data)
        certs = [c.certificate for c in getattr(p, "additional_certs", [])]
        main = getattr(p, "cert", None)
        if main is not None:
            certs.insert(0, main.certificate)
        if not certs:
            raise RedisConfigError(f"{name}: the PKCS#12 file holds no certificates")
        text = "".join(c.public_bytes(Encoding.PEM).decode("ascii") for c in certs)
    try:
        ssl.create_default_context().load_verify_locations(cadata=text)
    except ssl.SSLError as e:
        raise RedisConfigError(f"{name}: its certificates cannot be read: {e}") from None
    return text


@dataclass(frozen=True)
class ClientCertificate:
    """What ``SSLContext.load_cert_chain`` needs (redis-py's ``ssl_certfile``, ``ssl_keyfile``, ``ssl_password``),
    and ``cleanup`` to call when done (it removes a file made from a PKCS#12 key store)."""

    certfile: str
    keyfile: str | None
    password: str | None = field(repr=False)
    cleanup: Callable[[], None] = field(repr=False, compare=False)


def _nothing() -> None:
    return None


def client_certificate(store: Store) -> ClientCertificate:
    """The client certificate of a key store. A PEM key store is used where it is; a PKCS#12 one is written as
    PEM to a private temporary file (mode 0600), its key encrypted with a random password kept in memory only, so
    the file is of no use to anyone else (``cleanup`` removes it)."""
    data = _read(store)
    name = f"{store.origin} {store.path}"
    if _is_pem(data):
        keyfile = store.key_path
        key_data = data
        if keyfile is not None:
            key_data = _read(Store(keyfile, origin="--tls-key"))
        if b"PRIVATE KEY-----" not in key_data:
            raise RedisConfigError(f"{name}: no private key in it; a key store in PEM holds the certificate and its "
                                   "key in one file (cat cert.pem key.pem > keystore.pem), or give a PKCS#12 file")
        encrypted = b"ENCRYPTED PRIVATE KEY" in key_data or b"Proc-Type: 4,ENCRYPTED" in key_data
        if encrypted and store.password is None:
            raise RedisConfigError(f"{name}: its key is encrypted; give the password: {_password_hint(store)}")
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(store.path, keyfile, store.password)
        except (ssl.SSLError, OSError) as e:
            why = " (a wrong password?)" if encrypted else ""
            raise RedisConfigError(f"{name}: cannot use its certificate with the key{why}: {e}") from None
        return ClientCertificate(store.path, keyfile, store.password if encrypted else None, _nothing)
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, Encoding, PrivateFormat

    p = _pkcs12(store, data)
    key = getattr(p, "key", None)
    main = getattr(p, "cert", None)
    if key is None or main is None:
        raise RedisConfigError(f"{name}: the PKCS#12 file holds no private key with its certificate (a trust "
                               "store?); a key store holds the client's key and certificate")
    secret = secrets.token_urlsafe(32)
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(secret.encode()))
    pem += main.certificate.public_bytes(Encoding.PEM)
    for extra in getattr(p, "additional_certs", []):
        pem += extra.certificate.public_bytes(Encoding.PEM)
    fd, path = tempfile.mkstemp(prefix="ksds-redis-", suffix=".pem")
    try:
        os.write(fd, pem)
    finally:
        os.close(fd)

    def cleanup() -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(path, None, secret)
    except ssl.SSLError as e:
        cleanup()
        raise RedisConfigError(f"{name}: cannot use its certificate with the key: {e}") from None
    return ClientCertificate(path, None, secret, cleanup)


def check_stores(config: RedisConfig) -> None:
    """Read the stores of ``config`` once: an unreadable file or a wrong password is an error now, not a 503 on
    every request."""
    if config.truststore is not None:
        trusted_pem(config.truststore)
    if config.keystore is not None:
        client_certificate(config.keystore).cleanup()
