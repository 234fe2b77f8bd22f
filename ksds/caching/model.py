"""The caching service's model: entries, errors (Zowe's message numbers and HTTP statuses), the storage interface.

Semantics follow Zowe's caching service (``zowe/api-layer`` ``caching-service``), see
``shared/reference/zowe-caching-service.md``:

* entries are partitioned by *service id* (the caller's identity); a key is unique within its service;
* ``create`` of an existing key -> 409 (ZWECS133E); ``read``/``update``/``delete`` of a missing key -> 404
  (ZWECS131E); a store at its size limit -> 507 (ZWECS134E) with eviction ``reject``, or the entry with the
  smallest ``created`` is removed first with ``removeOldest``;
* an entry that does not fit the storage (the record length) -> 400, a clear error naming the sizes.

Unlike Zowe, every storage mode supports the list maps (``/cache-list``), and none scans its data to check the
size or find the oldest entry.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from ..errors import KsdsError

#: Zowe's default size limit (``caching.storage.size`` as the launch script sets it) and eviction strategy
DEFAULT_SIZE = 10000
DEFAULT_EVICTION = "reject"
EVICTION_STRATEGIES = ("reject", "removeOldest")


def now_millis() -> str:
    """``created`` as Zowe makes it: ``String.valueOf(new Date().getTime())``."""
    return str(time.time_ns() // 1_000_000)


@dataclass
class KeyValue:
    """A cache entry. JSON: ``{"key", "value", "serviceId", "created"}`` with empty fields left out."""

    key: str
    value: str
    service_id: str = ""
    created: str = field(default_factory=now_millis)

    def to_json(self) -> dict[str, str]:
        """Zowe's serialisation (field order key, value, serviceId, created), with ``key`` and ``value`` always
        there: Zowe's ``@JsonInclude(NON_EMPTY)`` drops an empty value, so what a client stored as ``""`` would
        come back without its value (empty ``serviceId`` and ``created`` are still left out)."""
        out = {"key": self.key, "value": self.value}
        if self.service_id:
            out["serviceId"] = self.service_id
        if self.created:
            out["created"] = self.created
        return out


class Identity(str):
    """A caller: the DN it proved (a verified client certificate, or a DN header the operator trusts) and/or the
    service id it named (``X-CS-Service-ID``), kept apart.

    As a string it is Zowe's ``getServiceId``: ``"<DN>, SERVICE=<id>"``, the DN or the id alone; that is the
    ``serviceId`` of the caller's entries, and the partition of the storages that keep Zowe's layouts. The native
    layouts partition by :attr:`partition` instead, which no service id can forge: a service id ``"CN=x"`` or
    ``"CN=x, SERVICE=gw"`` is not the caller that proved ``CN=x``. A plain ``str`` given to a storage is a service
    id alone.
    """

    dn: str | None
    service: str | None

    def __new__(cls, dn: str | None, service: str | None) -> Identity:
        if dn is None and service is None:
            raise ValueError("an identity has a DN, a service id, or both")
        if dn is not None and service is not None:
            text = f"{dn}, SERVICE={service}"
        else:
            text = dn if dn is not None else str(service)
        self = super().__new__(cls, text)
        self.dn = dn
        self.service = service
        return self

    def __repr__(self) -> str:
        return f"Identity(dn={self.dn!r}, service={self.service!r})"

    def __reduce__(self) -> tuple[type[Identity], tuple[str | None, str | None]]:
        return Identity, (self.dn, self.service)


def caller_dn(service_id: str) -> str | None:
    """The proven DN of a caller (None for a service id alone, a plain ``str`` included)."""
    return service_id.dn if isinstance(service_id, Identity) else None


def partition_key(service_id: str) -> str:
    """The caller's partition in the native layouts: one string per distinct (DN, service id), unambiguous.

    A service id alone is itself (so the partitions of such callers are what they always were), with ``X'00'``
    doubled in front if it starts with one; a caller with a DN is ``X'00' 'D' + len(DN) ':' DN``, followed by
    ``len(id) ':' id`` if it also names a service id. The three forms cannot meet: a service id alone never starts
    with X'00' unescaped, an escaped one starts X'00' X'00', a DN's starts X'00' 'D', and the length prefix says
    where the DN ends."""
    dn = caller_dn(service_id)
    if dn is None:
        return "\0\0" + service_id if service_id.startswith("\0") else str(service_id)
    assert isinstance(service_id, Identity)
    svc = service_id.service
    return f"\0D{len(dn)}:{dn}" + ("" if svc is None else f"{len(svc)}:{svc}")


@dataclass(frozen=True)
class Message:
    number: str
    key: str
    status: int
    text: str
    reason: str = ""
    action: str = ""


DUPLICATE_KEY = Message(
    "ZWECS133E", "org.zowe.apiml.cache.keyCollision", 409, "Adding key '{0}' resulted in a collision in the cache.",
    "The key already exists for the service.", "Use PUT to change the value, or another key.",
)
KEY_NOT_PROVIDED = Message(
    "ZWECS132E", "org.zowe.apiml.cache.keyNotProvided", 400, "No cache key provided.",
    "The request does not name a key.", "Provide a key.",
)
KEY_NOT_IN_CACHE = Message(
    "ZWECS131E", "org.zowe.apiml.cache.keyNotInCache", 404, "Key '{0}' is not in the cache for service '{1}'",
    "The key is not stored for the service.", "Create the key first.",
)
INVALID_PAYLOAD = Message(
    "ZWECS130E", "org.zowe.apiml.cache.invalidPayload", 400, "Payload '{0}' is not valid: '{1}'.",
    "The request body is not a valid KeyValue.", "Send a JSON object with key and value.",
)
INSUFFICIENT_STORAGE = Message(
    "ZWECS134E", "org.zowe.apiml.cache.insufficientStorage", 507, "Insufficient storage space limit.",
    "The storage holds as many entries as its size limit allows.",
    "Delete entries, raise the size, or use the removeOldest eviction strategy.",
)
PAYLOAD_TOO_LARGE = Message(
    "ZWECS137E", "org.zowe.apiml.cache.payloadTooLarge", 400,
    "Payload for key '{0}' is too large: {1} bytes, and a record holds at most {2}.",
    "The entry does not fit the storage's record length.",
    "Store a shorter value, or define the data set with a larger record length.",
)
MISSING_CERTIFICATE = Message(
    "ZWECS702W", "org.zowe.apiml.cache.missingCertificate", 401, "Missing header with certificate. {0}",
    "The caller sent neither X-Certificate-DistinguishedName nor X-CS-Service-ID (nor a client certificate).",
    "Call through the gateway, with a client certificate, or with the X-CS-Service-ID header.",
)
INTERNAL_ERROR = Message(
    "ZWEAM701E", "org.zowe.apiml.common.internalRequestError", 500,
    "The request to the URL '{0}' has failed: {1} caused by: {2}",
    "The storage failed.", "Look at the service log.",
)


class StorageError(KsdsError):
    """A caching-service error: a Zowe message with its HTTP status (``status``) and parameters."""

    def __init__(self, message: Message, *params: object) -> None:
        self.message = message
        self.params = params
        self.status = message.status
        super().__init__(f"{message.number} {message.text.format(*params)}")

    def body(self) -> dict[str, object]:
        """Zowe's error body (``ApiMessageView``)."""
        return error_body(self.message, *self.params)


def _param(p: object) -> str:
    """A message parameter as Zowe's message service writes it: ``null`` for None, HTML-escaped."""
    text = "null" if p is None else str(p)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def error_body(message: Message, *params: object) -> dict[str, object]:
    """Zowe's ``ApiMessageView``, empty fields left out. The type comes from the number's last letter (E, W, I);
    a number without one (Zowe's common ZWEAO404, ...) is an error."""
    kind = {"W": "WARNING", "I": "INFO"}.get(message.number[-1], "ERROR")
    view = {
        "messageType": kind,
        "messageNumber": message.number,
        "messageContent": message.text.format(*(_param(p) for p in params)),
        "messageReason": message.reason,
        "messageAction": message.action,
        "messageKey": message.key,
    }
    return {"messages": [{k: v for k, v in view.items() if v}]}


class Storage(ABC):
    """What every storage mode implements (Zowe's ``Storage`` interface). Every method may raise StorageError.

    ``service_id`` is the caller: an :class:`Identity` (DN and/or service id) or a plain ``str`` (a service id
    alone). Native layouts keep the callers apart by :func:`partition_key`; ``serviceId`` of the entries is
    ``str(service_id)``.

    ``size`` is the most entries (``create``) the storage holds across all services (0: no limit); at the limit,
    ``eviction`` "reject" refuses a create with 507 and "removeOldest" first removes the entry with the smallest
    ``created``. Both are checked without scanning the entries. A create of an existing key is 409 whether or not
    the storage is full (Zowe's VSAM back end answers 507 there: its defect 11.4).
    """

    #: the storage partitions by Zowe's identity string (``str(service_id)``: ``"<DN>, SERVICE=<id>"``) rather
    #: than by :func:`partition_key`; the REST API then refuses a service id that could be such a string
    flat_identities = False

    def __init__(self, size: int = DEFAULT_SIZE, eviction: str = DEFAULT_EVICTION) -> None:
        if eviction not in EVICTION_STRATEGIES:
            raise ValueError(f"eviction must be one of {', '.join(EVICTION_STRATEGIES)}, not {eviction!r}")
        if size < 0:
            raise ValueError(f"size must be >= 0, not {size}")
        self.size = size
        self.eviction = eviction

    # entries
    @abstractmethod
    def create(self, service_id: str, kv: KeyValue) -> KeyValue:
        """Store a new entry; 409 if the key exists for the service, 507/eviction at the size limit."""

    @abstractmethod
    def read(self, service_id: str, key: str) -> KeyValue:
        """The entry; 404 if missing."""

    @abstractmethod
    def update(self, service_id: str, kv: KeyValue) -> KeyValue:
        """Replace an existing entry (``created`` too, as Zowe does); 404 if missing."""

    @abstractmethod
    def delete(self, service_id: str, key: str) -> KeyValue:
        """Remove an entry and return it; 404 if missing."""

    @abstractmethod
    def read_for_service(self, service_id: str) -> dict[str, KeyValue]:
        """Every entry of one service (and of no other), by key."""

    @abstractmethod
    def delete_for_service(self, service_id: str) -> None:
        """Remove every entry of one service (and of no other)."""

    # list maps (Zowe: Infinispan only; here every storage)
    @abstractmethod
    def store_map_item(self, service_id: str, map_key: str, kv: KeyValue) -> KeyValue:
        """Put ``kv.key -> kv.value`` in the service's map ``map_key`` (replacing an item of the same key)."""

    @abstractmethod
    def get_all_map_items(self, service_id: str, map_key: str) -> dict[str, str]:
        """The items of one map of the service."""

    @abstractmethod
    def get_all_maps(self, service_id: str) -> dict[str, dict[str, str]]:
        """Every map of the service."""

    @abstractmethod
    def remove_non_relevant_rules(self, service_id: str, map_key: str) -> None:
        """Drop the map's items whose value (epoch milliseconds) is more than 90 days old."""

    @abstractmethod
    def remove_non_relevant_tokens(self, service_id: str, map_key: str) -> None:
        """Drop the map's items whose value (JSON with ``expiresAt``) has expired."""

    @abstractmethod
    def count(self) -> int:
        """Entries held across all services (what the size limit counts), without scanning them."""

    @abstractmethod
    def close(self) -> None:
        """Release the storage (files, connections)."""
