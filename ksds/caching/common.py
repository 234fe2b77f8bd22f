"""What every storage mode shares: the order of ``created`` values, and the rules of the two map evictions.

* :func:`created_order` -- the number removeOldest compares. Zowe compares ``Long.parseLong(created)``; a
  ``created`` that is not a Java long (a client may send anything) counts as 0 here, so it is the oldest and
  goes first, where Zowe's strategy would fail. Among entries of equal ``created`` the one stored (or last
  updated) first goes first: every storage keeps a sequence number for that.
* :func:`rule_is_stale` -- ``removeNonRelevantRules``: an item whose value (epoch milliseconds) is more than
  90 days old. A value that is not a number is kept (Zowe's Infinispan storage would fail on it).
* :func:`token_is_expired` -- ``removeNonRelevantTokens``: an item whose value is the JSON of an APIML
  ``AccessTokenContainer`` with ``expiresAt`` before now. APIML writes it with Jackson's ``JavaTimeModule``:
  a ``LocalDateTime`` in the gateway's time zone, as an ISO-8601 string (``"2024-10-25T12:30:15.123"``) or, with
  timestamps on (Jackson's default), as an array ``[2024,10,25,12,30,15,123000000]``. Both are read, as local
  time unless the string carries an offset; so are epoch milliseconds (a number or a string of digits). A value
  that is not JSON, or has no readable ``expiresAt``, is kept (as Zowe keeps a value it cannot parse).
* :func:`entry_expiry` and :func:`item_expiry` -- when an entry or a map item expires (Zowe's ``ttlSeconds``,
  since 3.6: ``InfinispanStorage.resolveTtlSeconds``), in epoch milliseconds, None for never.
"""

from __future__ import annotations

import json
import math
import re
import time
from datetime import datetime
from typing import Any

from .model import KeyValue

#: removeNonRelevantRules keeps items at most this old (milliseconds)
RULE_MAX_AGE_MS = 90 * 24 * 3600 * 1000
#: the longest time to live (Zowe's maxTtlSeconds: 90 days, as long as a personal access token lives)
MAX_TTL_SECONDS = 90 * 24 * 3600
#: the maps of the personal access token revocations, whose items expire by themselves (Zowe's PatRevocationStore)
INVALID_TOKENS, INVALID_USERS, INVALID_SCOPES = "invalidTokens", "invalidUsers", "invalidScopes"
_LONG = re.compile(r"[+-]?[0-9]+\Z")
_JAVA_LONG_MIN = -(1 << 63)
_JAVA_LONG_MAX = (1 << 63) - 1


def parse_java_long(text: str) -> int | None:
    """``Long.parseLong(text)``, or None where Java would throw NumberFormatException."""
    if not _LONG.match(text):
        return None
    n = int(text)
    return n if _JAVA_LONG_MIN <= n <= _JAVA_LONG_MAX else None


def created_order(created: str) -> int:
    """The number removeOldest orders entries by (a signed 64-bit integer; 0 for a ``created`` Java can't parse)."""
    n = parse_java_long(created)
    return 0 if n is None else n


def with_service(service_id: str, kv: KeyValue) -> KeyValue:
    """A copy of ``kv`` as stored for ``service_id`` (Zowe sets ``serviceId`` on the entry before storing it:
    Zowe's string of the caller, a plain ``str``)."""
    return KeyValue(kv.key, kv.value, str(service_id), kv.created)


def rule_is_stale(value: str, now_ms: int | None = None) -> bool:
    """Whether a rule (epoch milliseconds) is more than 90 days old."""
    n = parse_java_long(value.strip())
    if n is None:
        return False
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    return now_ms - n > RULE_MAX_AGE_MS


def _instant(dt: datetime) -> float:
    """A date-time as epoch seconds; one too far from now for the platform's clock is minus or plus infinity (long
    gone, or never), so a client's odd date is a decision, never an error."""
    try:
        return dt.timestamp()  # naive: local time, as APIML's LocalDateTime.now(); with an offset: that instant
    except (ValueError, OverflowError, OSError):
        return float("-inf") if dt.year < 1970 else float("inf")


def _expires_at(v: Any) -> float | None:
    """``expiresAt`` as epoch seconds (minus or plus infinity when it is too far off to say), or None if it can't
    be read."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int):
        try:
            return v / 1000.0
        except OverflowError:  # hundreds of digits: as far off as can be
            return float("-inf") if v < 0 else float("inf")
    if isinstance(v, float):
        return None if math.isnan(v) else v / 1000.0
    if isinstance(v, list):
        if not 3 <= len(v) <= 7 or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            return None
        y, mo, d, h, mi, sec, nano = list(v) + [0] * (7 - len(v))
        try:
            dt = datetime(y, mo, d, h, mi, sec, nano // 1000)
        except (ValueError, OverflowError):
            return None
        return _instant(dt)  # a LocalDateTime: the local time zone
    if isinstance(v, str):
        s = v.strip()
        n = parse_java_long(s)
        if n is not None:
            return n / 1000.0
        try:
            dt = datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith(("Z", "z")) else s)
        except ValueError:
            return None
        return _instant(dt)
    return None


def token_is_expired(value: str, now: float | None = None) -> bool:
    """Whether an invalidated token (JSON with ``expiresAt``) has expired (``expiresAt`` strictly before now)."""
    try:
        obj = json.loads(value)
    except (ValueError, RecursionError):  # stored before the door refused it, or written by something else
        return False
    if not isinstance(obj, dict):
        return False
    at = _expires_at(obj.get("expiresAt"))
    if at is None:
        return False
    return at < (time.time() if now is None else now)


def entry_expiry(kv: KeyValue, now_ms: int) -> int | None:
    """When an entry (or any item given ``ttlSeconds``) expires: ``now + min(ttlSeconds, 90 days)``, epoch
    milliseconds; None without ``ttlSeconds`` (never). At or before ``now_ms``: it is removed, not stored."""
    if kv.ttl_seconds is None:
        return None
    return now_ms + min(kv.ttl_seconds, MAX_TTL_SECONDS) * 1000


def item_expiry(map_key: str, kv: KeyValue, now_ms: int) -> int | None:
    """When a map item expires, as Zowe's ``resolveTtlSeconds`` decides, epoch milliseconds (None: never).

    ``ttlSeconds`` given: ``now + min(ttlSeconds, 90 days)``. Else, in ``invalidTokens``: the token's
    ``expiresAt`` (as :func:`token_is_expired` reads it); in ``invalidUsers`` and ``invalidScopes``: the rule's
    timestamp + 90 days; a value whose time cannot be read: 90 days on; each at most 90 days on. Other maps:
    never. Unlike Zowe, which rounds the time left down to whole seconds (so a revocation could go up to a second
    before its token expires), the expiry is the exact millisecond."""
    if kv.ttl_seconds is not None:
        return entry_expiry(kv, now_ms)
    if map_key not in (INVALID_TOKENS, INVALID_USERS, INVALID_SCOPES):
        return None
    ceiling = now_ms + MAX_TTL_SECONDS * 1000
    derived: int | None = None
    if map_key == INVALID_TOKENS:
        try:
            obj = json.loads(kv.value)
        except (ValueError, RecursionError):
            obj = None
        at = _expires_at(obj.get("expiresAt")) if isinstance(obj, dict) else None
        if at is not None:
            if math.isfinite(at):
                derived = int(at * 1000)
            elif at < 0:
                derived = now_ms  # long gone: expired now (not kept for the ceiling's 90 days)
    else:
        n = parse_java_long(kv.value.strip())
        if n is not None:
            derived = n + RULE_MAX_AGE_MS
    return ceiling if derived is None else min(derived, ceiling)


def expired(expires: int | None, now_ms: int) -> bool:
    """Whether something that expires at ``expires`` (None: never) has expired by ``now_ms``."""
    return expires is not None and expires <= now_ms
