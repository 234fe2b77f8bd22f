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

import html.entities
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
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
    """A cache entry. JSON: ``{"key", "value", "serviceId", "created"}`` with empty fields left out.

    ``ttl_seconds``: Zowe's ``ttlSeconds`` of a request (None: not given), what the storage derives the entry's or
    map item's expiry from (:func:`~ksds.caching.common.entry_expiry`, :func:`~ksds.caching.common.item_expiry`);
    it is not stored, and not part of the JSON answered."""

    key: str
    value: str
    service_id: str = ""
    created: str = field(default_factory=now_millis)
    ttl_seconds: int | None = field(default=None, compare=False)

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
    """A message of Zowe's catalogues: ``number`` with its type letter (Zowe's ``number`` + ``type.toChar()``),
    ``text`` a ``str.format`` template (Zowe's ``%s`` in order; parameters beyond the template's slots are
    dropped, as Java's ``String.format`` drops them), ``reason`` and ``action`` as the catalogue writes them."""

    number: str
    key: str
    status: int
    text: str
    reason: str = ""
    action: str = ""


# Zowe's caching-service messages (caching-service/src/main/resources/caching-log-messages.yml, and Zowe's
# published catalogue for ZWECS703W, since 3.6)
DUPLICATE_KEY = Message(
    "ZWECS133E", "org.zowe.apiml.cache.keyCollision", 409, "Adding key '{0}' resulted in a collision in the cache.",
    "Key is already in the cache.", "Update or delete the key, or add a different key.",
)
KEY_NOT_PROVIDED = Message(
    "ZWECS132E", "org.zowe.apiml.cache.keyNotProvided", 400, "No cache key provided.",
    "No cache key was provided.", "Provide a key that is in the cache.",
)
KEY_NOT_IN_CACHE = Message(
    "ZWECS131E", "org.zowe.apiml.cache.keyNotInCache", 404, "Key '{0}' is not in the cache for service '{1}'",
    "Cache does not contain the provided key.",
    "Add a key-value pair to the cache using the key or operate on an existing key in the cache.",
)
INVALID_PAYLOAD = Message(
    "ZWECS130E", "org.zowe.apiml.cache.invalidPayload", 400, "Payload '{0}' is not valid: '{1}'.",
    "The payload is not in valid JSON format.", "Provide a payload in JSON format.",
)
INSUFFICIENT_STORAGE = Message(
    "ZWECS134E", "org.zowe.apiml.cache.insufficientStorage", 507, "Insufficient storage space limit.",
    "The storage space is full.",
    "Change the definition of the VSAM and the configuration for the maximum records stored or replace Reject "
    "strategy with Remove Oldest.",
)
MISSING_CERTIFICATE = Message(
    "ZWECS702W", "org.zowe.apiml.cache.missingCertificate", 401, "Missing header with certificate.",
    "Call executed without valid client certificate.", "Verify ssl context in client application.",
)
CACHE_NOT_AVAILABLE = Message(
    "ZWECS703W", "org.zowe.apiml.cache.notAvailable", 503, "Cache is not available: {0}",
    "Cache is not ready to write at the moment.",
    "Wait till initialization of cache is done. In case it is done verify the instance configuration or "
    "connectivity between multiple instances.",
)
# Zowe's common message (common-service-core core-log-messages.yml)
INTERNAL_ERROR = Message(
    "ZWEAM701E", "org.zowe.apiml.common.internalRequestError", 500,
    "The request to the URL '{0}' has failed: {1} caused by: {2}",
    "The request failed because of an internal error.",
    "Refer to specific exception details for troubleshooting. Create an issue with this message.",
)
# ksds's own: Zowe's Messages enum has the key payloadTooLarge but its catalogue no message for it (Zowe answers
# ZWEAM102E "Invalid message key"); the number is ksds's, one Zowe's catalogue does not use
PAYLOAD_TOO_LARGE = Message(
    "ZWECS137E", "org.zowe.apiml.cache.payloadTooLarge", 400,
    "Payload for key '{0}' is too large: {1} bytes, and a record holds at most {2}.",
    "The entry does not fit the storage's record length.",
    "Store a shorter value, or define the data set with a larger record length.",
)


class StorageError(KsdsError):
    """A caching-service error: a Zowe message with its HTTP status (``status``) and parameters."""

    def __init__(self, message: Message, *params: object) -> None:
        self.message = message
        self.params = params
        self.status = message.status
        super().__init__(f"{message.number} {message.text.format(*(_param(p) for p in params))}")

    def body(self) -> dict[str, object]:
        """Zowe's error body (``ApiMessageView``)."""
        return error_body(self.message, *self.params)


def _param(p: object) -> str:
    """A message parameter as Java's ``String.format("%s", p)`` writes it: ``null`` for None."""
    return "null" if p is None else str(p)


#: Apache Commons Text's ``StringEscapeUtils.escapeHtml4``: the 252 entities of HTML 4.01 (``"&<>``, Latin-1,
#: and the extended ones: Greek letters, symbols, ...), which are Python's ``html.entities.codepoint2name``
_HTML4 = {cp: f"&{name};" for cp, name in html.entities.codepoint2name.items()}


def escape_html4(text: str) -> str:
    """``StringEscapeUtils.escapeHtml4(text)``: what Zowe's message service does to the whole text of a message
    (``Message.getConvertedText``), the template's characters included; ``'`` and characters without an HTML 4
    entity stay as they are."""
    return text.translate(_HTML4)


def message_text(message: Message, *params: object) -> str:
    """The message's text with its parameters, escaped as Zowe escapes it."""
    return escape_html4(message.text.format(*(_param(p) for p in params)))


def error_body(message: Message, *params: object) -> dict[str, object]:
    """Zowe's ``ApiMessageView`` (``Message.mapToView``): its fields in Jackson's order (messageType,
    messageNumber, messageContent, messageAction, messageReason, messageKey), empty ones left out. The type comes
    from the number's last letter (E, W, I)."""
    kind = {"W": "WARNING", "I": "INFO"}.get(message.number[-1], "ERROR")
    view = {
        "messageType": kind,
        "messageNumber": message.number,
        "messageContent": message_text(message, *params),
        "messageAction": message.action,
        "messageReason": message.reason,
        "messageKey": message.key,
    }
    return {"messages": [{k: v for k, v in view.items() if v}]}


class Storage(ABC):
    """What every storage mode implements (Zowe's ``Storage`` interface). Every method may raise StorageError:
    503 ZWECS703W (:data:`CACHE_NOT_AVAILABLE`) when the storage cannot be reached or read (Redis down, a data
    set that cannot be opened or is damaged).

    **Expiry** (Zowe's ``ttlSeconds``): an entry (``create``/``update``) or map item (``store_map_item``) whose
    :class:`KeyValue` has ``ttl_seconds`` expires then (at most 90 days on; zero or less: it is removed instead
    of stored); map items of ``invalidTokens``, ``invalidUsers`` and ``invalidScopes`` without one expire when
    Zowe says (:func:`~ksds.caching.common.item_expiry`). Expired data is never returned by any method, and each
    storage removes it through an index of expiry times (no scan), measured by :attr:`clock`.

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

    def __init__(
        self, size: int = DEFAULT_SIZE, eviction: str = DEFAULT_EVICTION, *, clock: Callable[[], float] | None = None
    ) -> None:
        if eviction not in EVICTION_STRATEGIES:
            raise ValueError(f"eviction must be one of {', '.join(EVICTION_STRATEGIES)}, not {eviction!r}")
        if size < 0:
            raise ValueError(f"size must be >= 0, not {size}")
        self.size = size
        self.eviction = eviction
        #: the time (epoch seconds, as ``time.time``) that expiries and the map evictions are measured against;
        #: tests give a clock of their own
        self.clock: Callable[[], float] = clock or time.time

    def now_ms(self) -> int:
        """Now by :attr:`clock`, in epoch milliseconds."""
        return int(self.clock() * 1000)

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
    def get_map_items(self, service_id: str, query: Mapping[str, Sequence[str | None]]) -> dict[str, dict[str, str]]:
        """The items asked for (Zowe's ``getMapItems``, ``POST /cache-query``): ``{mapKey: [itemKey, ...]}`` ->
        ``{mapKey: {itemKey: value}}`` of the items that exist (and have not expired); a map with none is left
        out, a None item key is skipped. Looks up only those items, never reading a whole map."""

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
