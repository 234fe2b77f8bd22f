"""Zowe's launcher variables for ``ksds serve``: what Zowe's ``start.sh`` makes of ``ZWE_*``, for ksds.

Zowe's launcher (``zwe``) exports the caching service's part of ``zowe.yaml`` (``components.caching-service``)
as ``ZWE_configs_*`` (``storage.mode`` -> ``ZWE_configs_storage_mode``), the rest of ``zowe.yaml`` as ``ZWE_zowe_*``,
``ZWE_components_*`` and ``ZWE_haInstance_*``, and runs the component's ``bin/start.sh``, which turns them into the
service's Spring properties (``caching-service-package/src/main/resources/bin/start.sh`` in zowe/api-layer, v3.x).
:func:`translate` does what that script does, onto the names ``ksds serve`` reads:

==========================================  ========================================  ===========================
``ZWE_`` variable (zowe.yaml key)           start.sh passes                           ksds
==========================================  ========================================  ===========================
``ZWE_configs_storage_mode``                ``-Dcaching.storage.mode`` (inMemory)     ``CACHING_STORAGE_MODE``
``ZWE_configs_storage_size``                ``-Dcaching.storage.size`` (10000)        ``CACHING_STORAGE_SIZE``
``ZWE_configs_storage_evictionStrategy``    ``-Dcaching.storage.evictionStrategy``    ``CACHING_STORAGE_EVICTION``
                                                                                      ``STRATEGY``
``ZWE_configs_storage_vsam_name``           ``-Dcaching.storage.vsam.name=//'NAME'``  ``CACHING_STORAGE_VSAM_NAME``
``ZWE_configs_port``                        ``-Dapiml.service.port`` (7555)           ``--port``
``ZWE_configs_zowe_network_server_listen``  ``-Dserver.address`` (0.0.0.0)            ``--host``
``Addresses_0``, else ``ZWE_zowe_...``
``ZWE_haInstance_hostname``                 ``-Dapiml.service.hostname``              the host name registered
                                                                                      with Eureka
``ZWE_DISCOVERY_SERVICES_LIST``             ``-Dapiml.service.discoveryServiceUrls``  ``--eureka``
``ZWE_components_gateway_port``             ``customMetadata.apiml.gatewayPort``      Eureka metadata
``ZWE_configs_certificate_keystore_*``,     ``server.ssl.keyStore`` (PKCS12), alias,  ``--tls-cert``,
else ``ZWE_zowe_certificate_keystore_*``    password                                  ``--tls-key`` (PEM files)
``..._truststore_*`` (same order)           ``server.ssl.trustStore``                 ``--tls-ca``
``ZWE_zowe_verifyCertificates``             STRICT/NONSTRICT: x509 required;          ``--tls-client-auth``
                                            DISABLED: not                             required / optional
``ZWE_configs_server_ssl_enabled``,         ``server.ssl.enabled`` (true); AT-TLS     no TLS when false / AT-TLS
``ZWE_zowe_network_server_tls_attls``       turns it off
==========================================  ========================================  ===========================

The certificates apply only when the command line gives none of ``--tls-cert``, ``--tls-key``, ``--tls-ca``
(:func:`zowe_tls`): the PKCS#12 stores are read with ``cryptography`` and written as PEM files into a private
temporary directory (mode 0700, the key 0600) that ``ksds serve`` removes when it stops. SAF key rings
(``JCERACFKS`` and the other z/OS types) cannot be read off z/OS: an error.

**Precedence.** start.sh hands these values to Java as system properties (``-D``), which Spring Boot ranks above
environment variables: a ``ZWE_configs_*`` value wins over the ``CACHING_STORAGE_*`` variable of the same property
(``zowe.environments`` in zowe.yaml). :func:`translate` does the same (the command line of ``ksds serve`` wins over
both), and says so in :attr:`Launch.notes` when the two disagree. Unlike start.sh it passes nothing for a
``ZWE_configs_*`` variable that is not set (start.sh passes its default, e.g. ``inMemory``), so that
``CACHING_STORAGE_*`` and ksds's own defaults still apply outside Zowe's launcher.

``ZWE_configs_storage_redis_*``: start.sh maps none (Zowe configures Redis with ``CACHING_STORAGE_REDIS_*`` in
``zowe.environments``, which Spring binds to ``caching.storage.redis.*``); neither does ksds. The
``storage.vsam.keyLength``/``recordLength``/``encoding`` of Zowe's schema are not passed by start.sh either (Zowe's
documentation says to set ``CACHING_STORAGE_VSAM_KEYLENGTH``/``..._RECORDLENGTH``), and are not mapped.

Values ksds cannot honour are a :class:`ZoweEnvError` naming the variable, its value and what ksds supports: the
``infinispan`` storage mode, a size or port that is not a number, an eviction strategy other than ``reject`` and
``removeOldest``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Launch", "ZoweEnvError", "ZoweTls", "translate", "zowe_tls", "MAPPED"]

ENV_MODE = "CACHING_STORAGE_MODE"
ENV_SIZE = "CACHING_STORAGE_SIZE"
ENV_EVICTION = "CACHING_STORAGE_EVICTIONSTRATEGY"
ENV_DATASET = "CACHING_STORAGE_VSAM_NAME"

#: the storage variables start.sh maps: ZWE_configs_* -> the CACHING_* variable of the same Spring property
MAPPED = {
    "ZWE_configs_storage_mode": ENV_MODE,
    "ZWE_configs_storage_size": ENV_SIZE,
    "ZWE_configs_storage_evictionStrategy": ENV_EVICTION,
    "ZWE_configs_storage_vsam_name": ENV_DATASET,
}
#: the storage modes ksds serves, by the names Zowe's schema (and ksds) give them (compared ignoring case, as
#: Spring's ``@ConditionalOnProperty`` compares them)
MODES = {"inmemory": "inMemory", "vsam": "VSAM", "redis": "redis", "ksds": "ksds", "memory": "memory"}
EVICTIONS = ("reject", "removeOldest")
PORT = "ZWE_configs_port"
LISTEN = ("ZWE_configs_zowe_network_server_listenAddresses_0", "ZWE_zowe_network_server_listenAddresses_0")
HOSTNAME = "ZWE_haInstance_hostname"
DISCOVERY = "ZWE_DISCOVERY_SERVICES_LIST"
GATEWAY_PORT = "ZWE_components_gateway_port"


class ZoweEnvError(ValueError):
    """A ``ZWE_*`` value ksds cannot honour (the message names the variable, the value and what ksds supports)."""


@dataclass(frozen=True)
class Launch:
    """What Zowe's launcher variables ask of ``ksds serve``."""

    #: the environment to read ``CACHING_*`` from: the one given, with the ``ZWE_configs_*`` values set over it
    environ: dict[str, str]
    #: ``ZWE_configs_port`` (None: not set)
    port: int | None = None
    #: the listen address (``server.address``; None: not set)
    host: str | None = None
    #: the host name to register with Eureka (``apiml.service.hostname``; None: not set)
    hostname: str | None = None
    #: the discovery services (Eureka base URLs, ``.../eureka/``) to register with
    discovery: tuple[str, ...] = ()
    #: the gateway's port (``apiml.gatewayPort`` of the Eureka metadata; None: not set)
    gateway_port: int | None = None
    #: (variable, value) of every ``ZWE_*`` variable used
    used: tuple[tuple[str, str], ...] = ()
    #: one line for each ``CACHING_*`` variable a ``ZWE_configs_*`` one overrode with another value
    notes: tuple[str, ...] = field(default=())


def _value(env: Mapping[str, str], name: str) -> str | None:
    """``${name}`` as start.sh reads it: empty is unset (``${name:-default}``)."""
    raw = env.get(name, "")
    return raw if raw.strip() else None


def _whole(name: str, raw: str, low: int, high: int | None, what: str) -> int:
    text = raw.strip()
    if not text.lstrip("+").isdigit() and not (text.startswith("-") and text[1:].isdigit()):
        raise ZoweEnvError(f"{name}={raw!r}: ksds needs {what}")
    n = int(text)
    if n < low or (high is not None and n > high):
        raise ZoweEnvError(f"{name}={raw!r}: ksds needs {what}")
    return n


def _mode(name: str, raw: str) -> str:
    mode = raw.strip()
    if mode.lower() == "infinispan":
        raise ZoweEnvError(
            f"{name}={raw!r}: ksds does not provide the infinispan storage; it serves inMemory, VSAM (a ksds data "
            "set, shared by several servers for high availability) or redis"
        )
    if mode.lower() not in MODES:
        raise ZoweEnvError(f"{name}={raw!r}: ksds serves the storage modes inMemory, VSAM (a ksds data set) or redis")
    return mode


def translate(env: Mapping[str, str]) -> Launch:
    """What Zowe's ``start.sh`` makes of the ``ZWE_*`` variables in ``env``, for ksds (module docstring)."""
    out = dict(env)
    used: list[tuple[str, str]] = []
    notes: list[str] = []
    for zwe, target in MAPPED.items():
        raw = _value(env, zwe)
        if raw is None:
            continue
        used.append((zwe, raw))
        if zwe == "ZWE_configs_storage_mode":
            value = _mode(zwe, raw)
        elif zwe == "ZWE_configs_storage_size":
            value = str(_whole(zwe, raw, 0, None, "a whole number of entries >= 0 (0: no limit)"))
        elif zwe == "ZWE_configs_storage_evictionStrategy":
            value = raw.strip()
            if value not in EVICTIONS:
                raise ZoweEnvError(f"{zwe}={raw!r}: ksds supports the eviction strategies reject and removeOldest")
        else:  # start.sh: VSAM_FILE_NAME=//\'${ZWE_configs_storage_vsam_name}\'
            value = f"//'{raw}'"
        before = _value(env, target)
        if before is not None and before.strip() != value.strip():
            notes.append(
                f"{zwe}={raw} wins over {target}={before} (as in Zowe, whose start.sh passes it as a system "
                "property, which outranks an environment variable)"
            )
        out[target] = value
    port = None
    raw_port = _value(env, PORT)
    if raw_port is not None:
        used.append((PORT, raw_port))
        port = _whole(PORT, raw_port, 0, 65535, "a port number (0-65535)")
    host = None
    for name in LISTEN:
        raw = _value(env, name)
        if raw is not None:
            used.append((name, raw))
            host = raw.strip()
            break
    hostname = _value(env, HOSTNAME)
    if hostname is not None:
        used.append((HOSTNAME, hostname))
        hostname = hostname.strip()
    discovery: tuple[str, ...] = ()
    raw_list = _value(env, DISCOVERY)
    if raw_list is not None:
        used.append((DISCOVERY, raw_list))
        discovery = tuple(u.strip() for u in raw_list.split(",") if u.strip())
        for url in discovery:
            if not url.startswith(("http://", "https://")):
                raise ZoweEnvError(
                    f"{DISCOVERY}={raw_list!r}: {url!r} is not a discovery service URL (http(s)://host:port/eureka/)"
                )
    gateway_port = None
    raw_gw = _value(env, GATEWAY_PORT)
    if raw_gw is not None:
        used.append((GATEWAY_PORT, raw_gw))
        gateway_port = _whole(GATEWAY_PORT, raw_gw, 1, 65535, "a port number (1-65535)")
    return Launch(out, port, host, hostname, discovery, gateway_port, tuple(used), tuple(notes))


# --- the certificates -------------------------------------------------------------------------------------------------

#: start.sh's certificate variables: the component's (ZWE_configs_certificate_*), else Zowe's (ZWE_zowe_certificate_*)
CERT_PREFIXES = ("ZWE_configs_certificate_", "ZWE_zowe_certificate_")
SSL_ENABLED = "ZWE_configs_server_ssl_enabled"
ATTLS = "ZWE_zowe_network_server_tls_attls"
VERIFY = "ZWE_zowe_verifyCertificates"


@dataclass(frozen=True)
class ZoweTls:
    """The server's TLS as Zowe's start.sh configures it, as PEM files ksds serves with (in ``directory``, which the
    caller removes when the server has stopped)."""

    cert: str
    key: str
    ca: str | None
    #: "required" (Zowe's STRICT and NONSTRICT verifyCertificates: x509 client certificates are required) or
    #: "optional" (DISABLED)
    client_auth: str
    directory: str


def _cert_var(env: Mapping[str, str], suffix: str) -> tuple[str, str] | None:
    """``${ZWE_configs_certificate_X:-${ZWE_zowe_certificate_X}}``: (the variable used, its value)."""
    for prefix in CERT_PREFIXES:
        raw = _value(env, prefix + suffix)
        if raw is not None:
            return prefix + suffix, raw
    return None


def _load_pkcs12(name: str, path: str, password: str | None) -> Any:
    from cryptography.hazmat.primitives.serialization import pkcs12

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ZoweEnvError(f"{name}={path!r}: cannot read it: {e.strerror or e}") from None
    try:
        return pkcs12.load_pkcs12(data, password.encode() if password is not None else None)
    except ValueError as e:
        raise ZoweEnvError(f"{name}={path!r}: not a PKCS#12 key store that its password opens ({e})") from None


def zowe_tls(env: Mapping[str, str]) -> ZoweTls | None:
    """The server's TLS from Zowe's certificate variables, as start.sh reads them (``server.ssl.*``), or None when
    they ask for none: no key store, ``ZWE_configs_server_ssl_enabled=false``, or AT-TLS
    (``ZWE_zowe_network_server_tls_attls=true``: the z/OS TCP/IP stack does TLS, the service speaks HTTP).

    The key store and trust store must be PKCS#12 files (``keystore.type`` PKCS12, Zowe's default); the key entry
    is the one named by ``keystore.alias`` (when given). Its key, certificate chain and the trust store's
    certificates are written as PEM files into a new private directory. SAF key rings (``JCERACFKS`` and the
    other z/OS key ring types) are a ZoweEnvError: ksds cannot read them."""
    if (_value(env, SSL_ENABLED) or "true").strip().lower() == "false":
        return None
    if (_value(env, ATTLS) or "").strip().lower() == "true":
        return None
    keystore = _cert_var(env, "keystore_file")
    if keystore is None:
        return None
    ks_name, ks_path = keystore
    kind = _cert_var(env, "keystore_type")
    if kind is not None and kind[1].strip().upper() != "PKCS12":
        raise ZoweEnvError(
            f"{kind[0]}={kind[1]!r}: ksds reads PKCS12 key stores only (not SAF key rings); give the server's "
            "certificate as PEM files with --tls-cert, --tls-key and --tls-ca"
        )
    password = _cert_var(env, "keystore_password")
    key_password = _cert_var(env, "key_password") or password
    store = _load_pkcs12(ks_name, ks_path, password[1] if password else None)
    if store.key is None or store.cert is None:
        if key_password is not None and key_password != password:
            store = _load_pkcs12(ks_name, ks_path, key_password[1])
        if store.key is None or store.cert is None:
            raise ZoweEnvError(f"{ks_name}={ks_path!r}: the key store holds no private key with its certificate")
    alias = _cert_var(env, "keystore_alias")
    have = (store.cert.friendly_name or b"").decode("utf-8", "replace")
    if alias is not None and have and alias[1].strip().lower() != have.lower():
        raise ZoweEnvError(f"{alias[0]}={alias[1]!r}: the key store {ks_path} holds the key {have!r}, not that one")
    trusted: list[Any] = []
    truststore = _cert_var(env, "truststore_file")
    if truststore is not None:
        t_kind = _cert_var(env, "truststore_type")
        if t_kind is not None and t_kind[1].strip().upper() != "PKCS12":
            raise ZoweEnvError(f"{t_kind[0]}={t_kind[1]!r}: ksds reads PKCS12 trust stores only (not SAF key rings)")
        t_password = _cert_var(env, "truststore_password")
        ts = _load_pkcs12(truststore[0], truststore[1], t_password[1] if t_password else None)
        trusted = [c.certificate for c in ([ts.cert] if ts.cert is not None else []) + list(ts.additional_certs)]
        if not trusted:
            raise ZoweEnvError(f"{truststore[0]}={truststore[1]!r}: the trust store holds no certificate")
    verify = (_value(env, VERIFY) or "STRICT").strip().upper()
    return _write_pem(store, trusted, "optional" if verify == "DISABLED" else "required")


def _write_pem(store: Any, trusted: list[Any], client_auth: str) -> ZoweTls:
    import tempfile

    from cryptography.hazmat.primitives import serialization

    directory = tempfile.mkdtemp(prefix="ksds-tls-")  # mode 0700: only this user reads the key

    def write(name: str, data: bytes) -> str:
        path = os.path.join(directory, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path

    pem = serialization.Encoding.PEM
    key = write("key.pem", store.key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    chain = [store.cert.certificate] + [c.certificate for c in store.additional_certs]
    cert = write("cert.pem", b"".join(c.public_bytes(pem) for c in chain))
    ca = write("ca.pem", b"".join(c.public_bytes(pem) for c in trusted)) if trusted else None
    return ZoweTls(cert, key, ca, client_auth, directory)
