"""The caching service's REST API: Zowe API ML's caching service (``/cachingservice/api/v1``) on a :class:`Storage`.

Gateways keep their users' login state here (invalidated tokens, personal access token rules, ...). The API is
Zowe's, status codes, payload checks and error bodies included (``shared/reference/zowe-caching-service.md``):

=======  =========================================  =====================================================
method   path (under ``/cachingservice/api/v1``)     success
=======  =========================================  =====================================================
GET      ``/cache``                                  200, ``{"<key>": KeyValue, ...}`` of the caller
DELETE   ``/cache``                                  200, no body: every entry of the caller removed
GET      ``/cache/{key}``                            200, the KeyValue
DELETE   ``/cache/{key}``                            204 (Zowe hands the deleted KeyValue to the server as the
                                                     body; HTTP sends no body with a 204, see below)
POST     ``/cache``  (body: KeyValue)                201, no body
PUT      ``/cache``  (body: KeyValue, key in it)     204, no body
POST     ``/cache-list/{mapKey}`` (body: KeyValue)   201: ``key -> value`` put in the caller's map
GET      ``/cache-list/{mapKey}``                    200, ``{"<key>": "<value>"}``
GET      ``/cache-list``                             200, ``{"<mapKey>": {"<key>": "<value>"}}``
GET      ``/cache-list-legacy``                      200, ``{}``: Zowe 3.6's read of the whole-map layout Zowe's
                                                     Infinispan had before; ksds never had it
POST     ``/cache-query`` (body: ``{"<mapKey>":      200, ``{"<mapKey>": {"<key>": "<value>"}}`` of the items
         ["<key>", ...]}``)                          found (Zowe 3.6); more than ``max_query_keys`` (66) in all: 400
DELETE   ``/cache-list/evict/rules/{mapKey}``        204: items older than 90 days removed
DELETE   ``/cache-list/evict/tokens/{mapKey}``       204: expired tokens removed
=======  =========================================  =====================================================

Errors are Zowe's ``{"messages": [{messageType, messageNumber, messageContent, messageAction, messageReason,
messageKey}]}`` with Zowe's message numbers, texts, reasons and actions (ZWECS130E invalid payload 400, ZWECS131E
not in cache 404, ZWECS132E no key 400, ZWECS133E collision 409, ZWECS134E full 507, ZWECS702W no identity 401,
ZWECS703W storage not available 503, ZWEAM701E internal error 500, ZWEAO404E/ZWEAO405E unknown path/method), the
whole message text HTML-escaped as Zowe's message service escapes it (``escapeHtml4``). Every response with a body
is ``application/json``; a client's mistake is never a 500. This facade adds ZWECS800E (401: a header DN the
client certificate contradicts) and ZWECS801E (403: no client certificate where one is required), numbers Zowe's
catalogues do not use (Zowe's caching service uses 130-155 and 700-703), and ZWECS137E (400: an entry too large
for a record; Zowe has the key ``payloadTooLarge`` but no message for it).

``ttlSeconds`` (a whole number of seconds, or null) in a KeyValue body sets the entry's or map item's time to live
(see :class:`~ksds.caching.model.Storage`); expired entries and items are never answered.

**Who is calling** (the partition of the data): the ``X-Certificate-DistinguishedName`` header (set by the gateway
from the client certificate) and/or ``X-CS-Service-ID``, neither is 401 ZWECS702W. The caller is an
:class:`~ksds.caching.model.Identity`: the DN and the service id kept apart, whose string is Zowe's (``"<DN>,
SERVICE=<id>"`` with both, else the one given: the entries' ``serviceId``). The native storages partition by the
pair, so a service id that spells a DN's string is not that DN; a storage that keeps Zowe's strings
(``flat_identities``: the zowe layout) makes the API refuse a service id holding ``=`` without a DN (401 ZWECS800E).
Text that is not Unicode (a lone surrogate, JSON's ``"\\ud800"``) in a key, value or ``created``, and JSON nested
too deeply, are 400 ZWECS130E; a response whose data UTF-8 cannot hold (stored by an older version) is sent with
JSON's ``\\uXXXX`` escapes. When the server runs with TLS and verifies client certificates
(:mod:`ksds.caching.tls`), the certificate's DN (as Java's ``getSubjectX500Principal().getName()`` writes it) is
the DN, whatever the header says: a header naming another DN is 401 (the fix Zowe issue 4423 asks for), and with
``require_client_cert`` a request of the API without a certificate is 403. ``dn_format`` says which of Java's two
forms the certificate's DN is written in (the one the gateway in use writes the header in, so that a partition
stays the same when callers move from the header to TLS). Every path may end with one ``/`` (ZAAS reads
``/cache-list/``; Zowe maps ``/cache/``, ``/cache-list/``, ``/cache-query/`` and ``/cache-list-legacy/``). The
health endpoint (``/cachingservice/application/health``) needs a verified client certificate with
``health_requires_cert`` (Zowe's ``apiml.health.protected``, true by default); info and the API document are public.

Differences from Zowe, on purpose:

* a :class:`StorageError` raised on GET/DELETE ``/cache`` or on the list and evict endpoints keeps its own status
  (Zowe turns it into 500, or 400 ZWECS136E on the list endpoints, because its storages other than Infinispan
  cannot hold lists; every storage here can);
* ``PUT /cache/{key}`` (what Zowe's documentation describes) is accepted too: the body's key may be left out, and
  must be the path's key if given;
* the body is read as JSON whatever its Content-Type (Spring would answer 415 to ``curl -d`` without
  ``-H 'Content-Type: application/json'``); a body over ``max_body`` bytes is 413;
* a 204 carries no body on the wire (RFC 9110 15.3.5; h11 refuses to send one), so ``DELETE /cache/{key}`` does
  not return the deleted entry although Zowe's controller hands it over. ``GET`` it first if you need it;
* unknown paths are 404 ZWEAO404E and wrong methods 405 ZWEAO405E (Zowe's common messages), in Zowe's error body
  (Zowe's caching service answers these with Spring's default error JSON).

Storage calls are synchronous (the ksds engine does file I/O): they run in Starlette's thread pool, one at a time
unless the storage says it is thread-safe (a ``thread_safe = True`` attribute; a ksds ``Dataset`` is not, and
KsdsStorage serialises its own calls on it). A storage whose calls are short and need no thread of their own (an
``inline_calls = True`` attribute: memory, and ksds, whose calls take microseconds and are one at a time anyway) is
called on the event loop itself: a trip to the thread pool and back, and the threads' contention for the GIL, cost
more than such a call (Redis, which waits on the network, stays in the thread pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import __version__
from .model import (
    CACHE_NOT_AVAILABLE,
    INTERNAL_ERROR,
    INVALID_PAYLOAD,
    KEY_NOT_PROVIDED,
    MISSING_CERTIFICATE,
    Identity,
    KeyValue,
    Message,
    Storage,
    StorageError,
    error_body,
    now_millis,
)
from .openapi import openapi_document

if TYPE_CHECKING:
    from .metrics import Metrics
from .tls import DnFormat, certificate_dn, same_dn

__all__ = ["API", "BASE", "make_app", "parse_key_value", "parse_query", "service_id"]

log = logging.getLogger("ksds.caching")
T = TypeVar("T")

BASE = "/cachingservice"
API = BASE + "/api/v1"
DN_HEADER = "X-Certificate-DistinguishedName"
SERVICE_HEADER = "X-CS-Service-ID"
#: the largest request body read (Spring WebFlux's default in-memory limit is 256 KiB)
DEFAULT_MAX_BODY = 1 << 20
#: the most item keys one ``/cache-query`` asks for (Zowe's ``caching.storage.maxQueryKeys``: 64 scopes + 2)
DEFAULT_MAX_QUERY_KEYS = 66

# Messages of this facade that Zowe's caching service does not have: numbers Zowe's catalogues do not use (its
# caching service has 130-155 and 700-703, ZWECS703W being "Cache is not available")
IDENTITY_NOT_PROVEN = Message(
    "ZWECS800E", "org.zowe.apiml.cache.identityNotProven", 401, "The caller's identity is not proven: {0}",
    "The X-Certificate-DistinguishedName header does not name the verified client certificate, or names a DN "
    "without a certificate where the service does not trust the header alone.",
    "Send the request with the client certificate whose DN the header names, or without the header.",
)
CERTIFICATE_REQUIRED = Message(
    "ZWECS801E", "org.zowe.apiml.cache.certificateRequired", 403, "A client certificate is required: {0}",
    "The service verifies client certificates, and the request came without one.",
    "Call the service with a client certificate signed by a CA the service trusts.",
)
BODY_TOO_LARGE = replace(INVALID_PAYLOAD, status=413)
# Zowe's common messages (apiml-common common-log-messages.yml: numbers ZWEAO404 and ZWEAO405 of type ERROR, which
# Zowe's message service answers as ZWEAO404E and ZWEAO405E; text, reason and action as Zowe's published catalogue)
NOT_FOUND = Message(
    "ZWEAO404E", "org.zowe.apiml.common.notFound", 404, "The service cannot find the requested resource.",
    "The requested resource URI was not found on the target service.",
    "Verify that the request URI is correct and that the target service exposes the requested endpoint.",
)
METHOD_NOT_ALLOWED = Message(
    "ZWEAO405E", "org.zowe.apiml.common.methodNotAllowed", 405,
    "The request method has been disabled and cannot be used for the requested resource.",
    "The HTTP method used in the request (e.g., POST, PUT) is not supported by the target resource.",
    "Check the API documentation for the target service to determine which HTTP methods are supported for this "
    "endpoint, and correct the request.",
)


class _MethodNotAllowed(Exception):
    def __init__(self, allowed: tuple[str, ...]) -> None:
        super().__init__(", ".join(allowed))
        self.allowed = allowed


# --- bodies ------------------------------------------------------------------------------------------------------


def json_response(status: int, body: object, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response. Text that UTF-8 cannot hold (a lone surrogate, in data an older version stored or written
    into the storage by something else) is sent as JSON's ``\\uXXXX`` escapes instead of failing the request."""
    try:
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        data = json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode()
    return Response(data, status, headers=headers, media_type="application/json")


def error_response(message: Message, *params: object, headers: Mapping[str, str] | None = None) -> Response:
    return json_response(message.status, error_body(message, *params), headers)


def empty_response(status: int, headers: Mapping[str, str] | None = None) -> Response:
    return Response(b"", status, headers=headers)


# --- the payload ---------------------------------------------------------------------------------------------------


class _Number(str):
    """A JSON number, kept as its text (Jackson gives a String field a number's text)."""


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _lombok(fields: dict[str, object]) -> str:
    """``KeyValue.toString()`` as Lombok writes it (Zowe puts it in the invalid-payload message)."""
    inner = ", ".join(f"{k}={'null' if v is None else v}" for k, v in fields.items())
    return f"KeyValue({inner})"


def _is_unicode(text: str) -> bool:
    """Whether ``text`` is Unicode text (UTF-8 can hold it): no lone surrogate, which JSON's ``"\\ud800"`` gives."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _surrogate(text: str) -> int:
    return next(ord(c) for c in text if 0xD800 <= ord(c) <= 0xDFFF)


def _printable(text: str) -> str:
    """``text`` for a message: lone surrogates written as ``\\udXXX``."""
    return text if text.isascii() or _is_unicode(text) else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _field(data: dict[str, Any], name: str, payload: str) -> str | None:
    v = data.get(name, "")
    if v is None or isinstance(v, str):
        return str(v) if v is not None else None
    if isinstance(v, bool):
        return "true" if v else "false"
    raise StorageError(INVALID_PAYLOAD, payload, f"The field '{name}' must be a string, not {type(v).__name__}")


_JAVA_LONG = (-(1 << 63), (1 << 63) - 1)


def _ttl(v: object, payload: str) -> int | None:
    """``ttlSeconds`` as Jackson reads it into a ``Long``: null, a whole number, a number with a fraction (cut to
    its whole part, Jackson's ACCEPT_FLOAT_AS_INT) or a string of a whole number; anything else, or a number a
    Java long cannot hold, is 400."""
    if v is None:
        return None
    why = "The field 'ttlSeconds' must be a whole number of seconds"
    n: int | None = None
    if isinstance(v, _Number):
        try:
            n = int(v)
        except ValueError:
            f = float(v)
            n = int(f) if math.isfinite(f) else None
    elif isinstance(v, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", v):
        n = int(v)
    if n is None or not _JAVA_LONG[0] <= n <= _JAVA_LONG[1]:
        raise StorageError(INVALID_PAYLOAD, payload, why)
    return n


def parse_key_value(body: bytes, service: str = "", *, path_key: str | None = None) -> KeyValue:
    """A request body as Zowe's controller reads a KeyValue, checked as ``checkForInvalidPayload`` checks it.

    No body or ``null``: 400 "No KeyValue provided in the payload"; ``"value": null``: 400 "No value provided in
    the payload"; ``"key": null``: 400 "No key provided in the payload"; a field left out is "" (Jackson starts
    from ``KeyValue()``); numbers and booleans are taken as their text; other fields are ignored; ``created``
    is the client's if it sends one, else now (epoch milliseconds). ``path_key`` (``PUT /cache/{key}``): the key
    when the body has none; a body naming another key is 400.
    """
    if not body.strip():
        raise StorageError(INVALID_PAYLOAD, None, "No KeyValue provided in the payload")
    try:
        text = body.decode("utf-8")
        data = json.loads(text, parse_int=_Number, parse_float=_Number, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        excerpt = body[:80].decode("utf-8", errors="replace") + ("..." if len(body) > 80 else "")
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise StorageError(INVALID_PAYLOAD, excerpt, f"The body is not JSON: {why}") from None
    if data is None:
        raise StorageError(INVALID_PAYLOAD, None, "No KeyValue provided in the payload")
    if not isinstance(data, dict):
        raise StorageError(INVALID_PAYLOAD, text[:80], "The body is not a JSON object (a KeyValue)")
    if path_key is not None and "key" not in data:
        data["key"] = path_key
    created_in = data.get("created")
    shown = {k: data.get(k, "") for k in ("key", "value")} | {"serviceId": "", "created": created_in or now_millis()}
    payload = _printable(_lombok(shown))
    key = _field(data, "key", payload)
    value = _field(data, "value", payload)
    created = _field(data, "created", payload) if created_in is not None else None
    for name, text_value in (("key", key), ("value", value), ("created", created)):
        if text_value is not None and not text_value.isascii() and not _is_unicode(text_value):
            code = _surrogate(text_value)
            raise StorageError(
                INVALID_PAYLOAD, payload, f"The field '{name}' holds a lone surrogate (\\u{code:04x}), which is "
                "not a Unicode character"
            )
    if value is None:
        raise StorageError(INVALID_PAYLOAD, payload, "No value provided in the payload")
    if key is None:
        raise StorageError(INVALID_PAYLOAD, payload, "No key provided in the payload")
    if path_key is not None and key != path_key:
        raise StorageError(INVALID_PAYLOAD, payload, f"The key in the body is not the key of the path '{path_key}'")
    ttl = _ttl(data.get("ttlSeconds"), payload)
    return KeyValue(key, value, service, created or now_millis(), ttl)


def _json_body(body: bytes) -> Any:
    text = body.decode("utf-8")
    return json.loads(text, parse_int=_Number, parse_float=_Number, parse_constant=_reject_constant)


def parse_query(body: bytes, limit: int = DEFAULT_MAX_QUERY_KEYS) -> dict[str, list[str | None]]:
    """A ``/cache-query`` body as Zowe reads it (``Map<String, List<String>>``, then ``checkQueryPayload``):
    ``{"<mapKey>": ["itemKey", ...]}``, a null list counting as empty and null item keys kept (they count, and
    the storage skips them); numbers and booleans as their text. No body or ``null``: 400 "No map keys provided
    in the payload"; more than ``limit`` keys over all maps: 400 "Too many keys requested at once, the limit is
    N" (the payload shown is the count, as Zowe shows it); anything else that is not such an object: 400."""
    if not body.strip():
        raise StorageError(INVALID_PAYLOAD, None, "No map keys provided in the payload")
    try:
        data = _json_body(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        excerpt = body[:80].decode("utf-8", errors="replace") + ("..." if len(body) > 80 else "")
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise StorageError(INVALID_PAYLOAD, excerpt, f"The body is not JSON: {why}") from None
    if data is None:
        raise StorageError(INVALID_PAYLOAD, None, "No map keys provided in the payload")
    shown = _printable(body[:80].decode("utf-8", errors="replace"))
    if not isinstance(data, dict):
        raise StorageError(INVALID_PAYLOAD, shown, "The body is not a JSON object of map keys and lists of item keys")
    out: dict[str, list[str | None]] = {}
    total = 0
    for map_key, keys in data.items():
        if not _is_unicode(map_key):
            raise StorageError(INVALID_PAYLOAD, shown, "A map key holds a lone surrogate, which is not Unicode")
        items: list[str | None] = []
        if keys is not None and not isinstance(keys, list):
            raise StorageError(INVALID_PAYLOAD, shown, f"The item keys of map '{_printable(map_key)}' are not a list")
        for k in keys or ():
            if isinstance(k, bool):
                k = "true" if k else "false"
            if k is not None and not isinstance(k, str):
                raise StorageError(
                    INVALID_PAYLOAD, shown, f"An item key of map '{_printable(map_key)}' is not a string"
                )
            if k is not None and not _is_unicode(k):
                raise StorageError(INVALID_PAYLOAD, shown, "An item key holds a lone surrogate, which is not Unicode")
            items.append(None if k is None else str(k))
        total += len(items)
        out[map_key] = items
    if total > limit:
        raise StorageError(INVALID_PAYLOAD, str(total), f"Too many keys requested at once, the limit is {limit}")
    return out


# --- the caller -----------------------------------------------------------------------------------------------------


def _header(request: Request, name: str) -> str | None:
    value = request.headers.get(name)
    return value if value else None  # Zowe: StringUtils.isEmpty -> absent


def service_id(
    request: Request, *, trust_dn_header: bool = True, require_client_cert: bool = False, flat: bool = False,
    dn_format: DnFormat = "rfc2253",
) -> Identity:
    """The caller (Zowe's ``getServiceId``, kept as its DN and service id), the client certificate's DN winning
    over the header.

    Raises StorageError: 401 ZWECS702W without any identity, 401 ZWECS800E for a header DN that the certificate
    contradicts (or, with ``trust_dn_header`` False, a header DN without a certificate), 403 ZWECS801E without a
    certificate when ``require_client_cert``. ``flat``: the storage partitions by Zowe's string
    (``"<DN>, SERVICE=<id>"``), so a service id without a DN that could be such a string (it holds ``=``, as
    every DN does) is 401 ZWECS800E: it would reach the partition of the caller that proved that DN.
    ``dn_format``: the form the certificate's DN is written in (:func:`~ksds.caching.tls.java_dn`), the one the
    gateway writes the header in, so that a caller keeps its partition when it moves from the header to TLS; a
    header sent with the certificate may name it in either form.
    """
    tls = (request.scope.get("extensions") or {}).get("tls") or {}
    cert_dn = certificate_dn(tls, dn_format)
    header_dn = _header(request, DN_HEADER)
    service = _header(request, SERVICE_HEADER)
    if cert_dn is not None:
        if header_dn is not None and header_dn != cert_dn:
            subject = tls.get("client_cert_subject")
            if subject is None or not same_dn(header_dn, subject):
                raise StorageError(
                    IDENTITY_NOT_PROVEN, f"the header {DN_HEADER} '{header_dn}' is not the client certificate's DN "
                    f"'{cert_dn}'"
                )
        dn: str | None = cert_dn
    elif require_client_cert:
        raise StorageError(CERTIFICATE_REQUIRED, "the request came without a client certificate")
    elif header_dn is not None and not trust_dn_header:
        raise StorageError(
            IDENTITY_NOT_PROVEN, f"the service does not accept {DN_HEADER} without a client certificate"
        )
    else:
        dn = header_dn
    if dn is None:
        if service is None:
            raise StorageError(MISSING_CERTIFICATE, "parameter")
        if flat and "=" in service:
            raise StorageError(
                IDENTITY_NOT_PROVEN, f"the {SERVICE_HEADER} '{service}' could name the partition of a DN (it holds "
                "'='), and this storage keeps Zowe's '<DN>, SERVICE=<id>' partitions; prove the DN (a client "
                f"certificate or {DN_HEADER}) or use a service id without '='"
            )
    return Identity(dn, service)


# --- routing ----------------------------------------------------------------------------------------------------------


def _segments(request: Request) -> list[str] | None:
    """The request path under ``/cachingservice`` cut into decoded segments, one trailing slash ignored (Spring's
    trailing-slash match); None for a path outside it. Cut before decoding, so a key may hold ``%2F``."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, (bytes, bytearray)) else request.scope["path"]
    path = path.split("?", 1)[0]
    root = request.scope.get("root_path") or ""
    if root and path.startswith(root):
        path = path[len(root) :]
    if path.endswith("/") and len(path) > 1:
        path = path[:-1]
    parts = path.split("/")
    if len(parts) < 2 or parts[0] != "" or parts[1] != BASE[1:]:
        return None
    return [unquote(p, encoding="utf-8", errors="replace") for p in parts[2:]]


_ALLOWED: dict[str, tuple[str, ...]] = {
    "cache": ("GET", "DELETE", "POST", "PUT"),
    "cache/{key}": ("GET", "DELETE", "PUT"),
    "cache-list": ("GET",),
    "cache-list-legacy": ("GET",),
    "cache-list/{mapKey}": ("GET", "POST"),
    "cache-query": ("POST",),
    "evict": ("DELETE",),
    "doc": ("GET",),
}


def _route(segs: list[str]) -> tuple[str, list[str]] | None:
    """The route of a path (its name and its variables), or None."""
    if segs[:2] == ["api", "v1"]:
        rest = segs[2:]
        if rest == ["cache"]:
            return "cache", []
        if len(rest) == 2 and rest[0] == "cache":
            return "cache/{key}", [rest[1]]
        if rest == ["cache-list"]:
            return "cache-list", []
        if rest == ["cache-list-legacy"]:
            return "cache-list-legacy", []
        if rest == ["cache-query"]:
            return "cache-query", []
        if len(rest) == 2 and rest[0] == "cache-list":
            return "cache-list/{mapKey}", [rest[1]]
        if len(rest) == 4 and rest[:2] == ["cache-list", "evict"] and rest[2] in ("rules", "tokens"):
            return "evict", [rest[2], rest[3]]
        return None
    if segs in (["api-doc"], ["v3", "api-docs"], ["api-docs"]):
        return "doc", []
    if segs == ["application", "health"]:
        return "health", []
    if segs == ["application", "info"]:
        return "info", []
    return None


def _verified_certificate(request: Request) -> bool:
    """Whether the request's connection presented a client certificate the server verified (the ASGI TLS
    extension has its chain: :func:`~ksds.caching.tls.tls_extension`)."""
    tls = (request.scope.get("extensions") or {}).get("tls") or {}
    return bool(tls.get("client_cert_chain"))


class CachingService:
    """The endpoints, on one storage. :func:`make_app` wraps it in a Starlette application."""

    def __init__(
        self,
        storage: Storage,
        *,
        trust_dn_header: bool = True,
        require_client_cert: bool = False,
        max_body: int = DEFAULT_MAX_BODY,
        mode: str = "",
        max_query_keys: int = DEFAULT_MAX_QUERY_KEYS,
        dn_format: DnFormat = "rfc2253",
        health_requires_cert: bool = False,
    ) -> None:
        self.storage = storage
        self.dn_format: DnFormat = dn_format
        self.health_requires_cert = health_requires_cert
        self.max_query_keys = max_query_keys
        self.trust_dn_header = trust_dn_header
        self.require_client_cert = require_client_cert
        self.max_body = max_body
        self.mode = mode or type(storage).__name__
        #: the storage partitions by Zowe's identity string (see :func:`service_id`)
        self.flat = storage.flat_identities
        self.started = time.time()
        self._lock: threading.Lock | None = None if getattr(storage, "thread_safe", False) else threading.Lock()
        self._inline = bool(getattr(storage, "inline_calls", False))
        self._closed = False
        #: the Prometheus metrics (``GET /metrics``; :mod:`ksds.caching.metrics`), None: not served
        self.metrics: Metrics | None = None

    # storage calls: in the thread pool, one at a time unless the storage is thread-safe
    def _locked(self, fn: Callable[..., T], *args: Any) -> T:
        if self._lock is None:
            return fn(*args)
        with self._lock:
            return fn(*args)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._inline:
            return self._locked(fn, *args)
        return await run_in_threadpool(self._locked, fn, *args)

    def close(self) -> None:
        """Close the storage, after the call in progress (if any)."""
        if self._closed:
            return
        self._closed = True
        self._locked(self.storage.close)

    async def _body(self, request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise StorageError(BODY_TOO_LARGE, f"{length} bytes", f"A request body holds at most {self.max_body} bytes")
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise StorageError(
                    BODY_TOO_LARGE, f"more than {self.max_body} bytes",
                    f"A request body holds at most {self.max_body} bytes",
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _sid(self, request: Request) -> Identity:
        return service_id(
            request, trust_dn_header=self.trust_dn_header, require_client_cert=self.require_client_cert,
            flat=self.flat, dn_format=self.dn_format,
        )

    async def endpoint(self, request: Request) -> Response:
        metrics = self.metrics
        if metrics is None:
            return await self._answer(request)
        start = time.perf_counter()
        response = await self._answer(request)
        metrics.observe(request.scope["path"], request.method, response.status_code, time.perf_counter() - start)
        return response

    async def _answer(self, request: Request) -> Response:
        try:
            return await self._dispatch(request)
        except StorageError as e:
            return error_response(e.message, *e.params)
        except _MethodNotAllowed as e:
            return error_response(METHOD_NOT_ALLOWED, headers={"Allow": ", ".join(e.allowed)})
        except OSError as e:  # the storage's files or connection failed (a storage says so itself where it can)
            log.error("%s %s failed: %s: %s", request.method, request.url.path, type(e).__name__, e)
            return error_response(CACHE_NOT_AVAILABLE, f"{type(e).__name__}: {e}")
        except Exception as e:  # the storage failed: Zowe's 500 ZWEAM701E
            log.error("%s %s failed: %s: %s", request.method, request.url.path, type(e).__name__, e)
            log.debug("traceback", exc_info=True)
            return error_response(INTERNAL_ERROR, str(request.url), str(e), f"{type(e).__name__}: {e}")

    async def _dispatch(self, request: Request) -> Response:
        if request.scope["path"] == "/metrics" and self.metrics is not None:
            return await self._metrics(request, self.metrics)
        segs = _segments(request)
        found = _route(segs) if segs is not None else None
        if found is None:
            return error_response(NOT_FOUND)
        name, args = found
        method = request.method
        if method == "HEAD":
            method = "GET"
        allowed = _ALLOWED.get(name, ("GET",))
        if method == "OPTIONS":
            return empty_response(200, {"Allow": ", ".join((*allowed, "HEAD", "OPTIONS"))})
        if method not in allowed:
            raise _MethodNotAllowed(allowed)
        if name == "doc":
            return json_response(200, openapi_document(str(request.base_url).rstrip("/")))
        if name == "health":
            if self.health_requires_cert and not _verified_certificate(request):
                raise StorageError(
                    CERTIFICATE_REQUIRED, "the health endpoint is protected (ksds serve --health-auth none opens it)"
                )
            return await self._health()
        if name == "info":
            return json_response(200, self._info())
        sid = self._sid(request)
        st = self.storage
        if name == "cache":
            if method == "GET":
                entries = await self.call(st.read_for_service, sid)
                return json_response(200, {k: kv.to_json() for k, kv in (entries or {}).items()})
            if method == "DELETE":
                await self.call(st.delete_for_service, sid)
                return empty_response(200)
            kv = parse_key_value(await self._body(request), sid)
            if method == "POST":
                await self.call(st.create, sid, kv)
                return empty_response(201)
            await self.call(st.update, sid, kv)
            return empty_response(204)
        if name == "cache/{key}":
            key = args[0]
            if method == "PUT":  # Zowe's documentation's PUT /cache/{key}
                kv = parse_key_value(await self._body(request), sid, path_key=key)
                await self.call(st.update, sid, kv)
                return empty_response(204)
            if key == "":
                raise StorageError(KEY_NOT_PROVIDED)
            if method == "GET":
                found_kv = await self.call(st.read, sid, key)
                return json_response(200, found_kv.to_json())
            await self.call(st.delete, sid, key)
            return empty_response(204)
        if name == "cache-list":
            maps = await self.call(st.get_all_maps, sid)
            return json_response(200, maps or {})
        if name == "cache-list-legacy":
            # Zowe 3.6: the maps of the whole-map layout Zowe's Infinispan storage had before its per-item one,
            # for tokens issued before the cutover. ksds never had that layout (every map item is its own
            # record, which /cache-query finds), so nothing is in it; one keyed lookup (its answer unused) makes
            # it 503 like every endpoint while the storage is not available
            await self.call(st.get_map_items, sid, {"invalidTokens": ["\0"]})
            return json_response(200, {})
        if name == "cache-query":
            query = parse_query(await self._body(request), self.max_query_keys)
            found_items = await self.call(st.get_map_items, sid, query)
            return json_response(200, found_items or {})
        if name == "cache-list/{mapKey}":
            map_key = args[0]
            if method == "GET":
                items = await self.call(st.get_all_map_items, sid, map_key)
                return json_response(200, items or {})
            kv = parse_key_value(await self._body(request), sid)
            await self.call(st.store_map_item, sid, map_key, kv)
            return empty_response(201)
        # evict
        kind, map_key = args
        if kind == "rules":
            await self.call(st.remove_non_relevant_rules, sid, map_key)
        else:
            await self.call(st.remove_non_relevant_tokens, sid, map_key)
        return empty_response(204)

    async def _metrics(self, request: Request, metrics: Metrics) -> Response:
        """``GET /metrics``: Prometheus's text format; a client certificate is needed where the API needs one."""
        if request.method not in ("GET", "HEAD"):
            raise _MethodNotAllowed(("GET",))
        if self.require_client_cert and not ((request.scope.get("extensions") or {}).get("tls") or {}).get(
                "client_cert_name"):
            raise StorageError(CERTIFICATE_REQUIRED, "the request came without a client certificate")
        snapshot = metrics.snapshot()
        body = await self.call(metrics.render, snapshot)
        return Response(body, 200, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def _health(self) -> Response:
        storage: dict[str, Any] = {"status": "UP", "details": {"mode": self.mode}}
        try:
            entries = await asyncio.wait_for(self.call(self.storage.count), timeout=5)
            storage["details"].update(
                {"entries": entries, "size": self.storage.size, "eviction": self.storage.eviction}
            )
        except Exception as e:  # noqa: BLE001 - any failure is DOWN
            storage = {"status": "DOWN", "details": {"mode": self.mode, "error": f"{type(e).__name__}: {e}"}}
        status = storage["status"]
        return json_response(200 if status == "UP" else 503, {"status": status, "components": {"storage": storage}})

    def _info(self) -> dict[str, object]:
        return {
            "build": {
                "artifact": "ksds",
                "name": "caching-service",
                "description": "Zowe API ML caching service API on ksds",
                "version": __version__,
            },
            "storage": {"mode": self.mode},
            "uptime": round(time.time() - self.started, 3),
        }


class _EveryPath(Route):
    """The one route, for every path: :meth:`CachingService.endpoint` routes. Starlette's ``{path:path}`` pattern
    stops at a newline, which a key may hold (``/cache/a%0Ab``); this one does not."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]], methods: list[str]) -> None:
        super().__init__("/{path:path}", endpoint, methods=methods)
        self.path_regex = re.compile(r"^/(?P<path>.*)$", re.DOTALL)


async def _json_http_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        return error_response(METHOD_NOT_ALLOWED)
    if isinstance(exc, HTTPException) and exc.status_code == 404:
        return error_response(NOT_FOUND)
    log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return error_response(INTERNAL_ERROR, str(request.url), str(exc), f"{type(exc).__name__}: {exc}")


def make_app(
    storage: Storage,
    *,
    trust_dn_header: bool = True,
    require_client_cert: bool = False,
    max_body: int = DEFAULT_MAX_BODY,
    close_storage: bool = True,
    mode: str = "",
    max_query_keys: int = DEFAULT_MAX_QUERY_KEYS,
    metrics: bool = True,
    dn_format: DnFormat = "rfc2253",
    health_requires_cert: bool = False,
) -> Starlette:
    """The caching service on ``storage``, as a Starlette (ASGI) application.

    ``trust_dn_header``: believe ``X-Certificate-DistinguishedName`` from a caller without a client certificate
    (Zowe does; False: such a request is 401). ``require_client_cert``: a request of the API without a verified
    client certificate is 403 (Zowe's behaviour when it verifies certificates; the health, info and API document
    stay open). A verified certificate's DN always wins over the header (see :func:`service_id`).
    ``max_body``: the largest request body (bytes; 413 beyond). ``close_storage``: close the storage when the
    application shuts down (after the requests in flight). ``mode``: the storage mode named by health and info.
    ``max_query_keys``: the most item keys one ``/cache-query`` may ask for (Zowe's ``caching.storage.maxQueryKeys``).
    ``dn_format``: the form a client certificate's DN is written in, ``rfc2253`` (Java's
    ``getSubjectX500Principal().getName()``) or ``legacy`` (``getSubjectDN().getName()``, Zowe 3.0's gateway): the
    one the gateway in use writes ``X-Certificate-DistinguishedName`` in. ``health_requires_cert``: the health
    endpoint answers only a request with a verified client certificate (403 ZWECS801E without), as Zowe's does
    (``apiml.health.protected``).
    ``metrics``: serve Prometheus metrics at ``GET /metrics`` (:mod:`ksds.caching.metrics`).
    """
    service = CachingService(
        storage, trust_dn_header=trust_dn_header, require_client_cert=require_client_cert, max_body=max_body,
        mode=mode, max_query_keys=max_query_keys, dn_format=dn_format, health_requires_cert=health_requires_cert,
    )
    if metrics:  # GET /metrics (prometheus-client, of the service extra)
        from .metrics import Metrics

        service.metrics = Metrics(storage, mode or type(storage).__name__, __version__)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if close_storage:
                await run_in_threadpool(service.close)

    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    app = Starlette(
        routes=[_EveryPath(service.endpoint, methods)],
        exception_handlers={HTTPException: _json_http_error, Exception: _json_http_error},
        lifespan=lifespan,
    )
    app.state.caching_service = service
    return app
