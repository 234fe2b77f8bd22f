"""The ``redis`` storage mode: the cache on a Redis server, as Zowe's Redis back end keeps it.

**Entries** (Zowe's layout): one hash per caller, field = the entry's key, value = the KeyValue as Zowe's Redis
storage writes it (``RedisEntry.getEntryAsString``: Jackson, ``{"key","value","created"}`` in that order, empty
fields left out, and no ``serviceId``: Zowe's Redis storage does not set it, the hash's name says whose the entry
is; one read with a ``serviceId``, written by earlier ksds versions, is served all the same). Only Zowe's fields
are written, as Zowe's reader (a plain Jackson ``ObjectMapper``) refuses a field it does not know. The hash of a
service id alone without ``=`` is named by it, as Zowe names it (so such a Redis filled by Zowe is served as is),
and so is the hash of a caller whose DN was proven (a verified certificate, or a trusted DN header): Zowe's string
``"<DN>, SERVICE=<id>"``. A caller without a proven DN whose service id holds ``=`` (as every DN's string does)
gets the hash ``\\0ksds:id:`` followed by its :func:`~ksds.caching.model.partition_key` instead: a service id can
never name the hash of a DN. create = HSETNX (false: 409); update = HEXISTS + HSET (404); read = HGET;
readForService = HGETALL; delete = HGET + HDEL; deleteForService = DEL.

**Unlike Zowe, the size limit and removeOldest apply** (Zowe leaves them to Redis's maxmemory), atomically, in
Lua scripts (each runs alone on the server), with bookkeeping keys that start with a NUL byte (a service id
comes from an HTTP header and cannot contain one; one that does, from the Python API, gets a ``\\0ksds:id:``
hash):

* ``\\0ksds:order``: a sorted set, score = ``created`` (as :func:`~ksds.caching.common.created_order`), member =
  16 hex digits of a sequence number + ``len(hash name) ":" hash name key`` (an *ident*): the first member is
  the oldest entry, ties going to the lowest sequence number (stored or last updated first); its cardinality
  is the count;
* ``\\0ksds:members``: a hash ident -> member (to find an entry's member on update and delete);
* ``\\0ksds:seq``: the sequence number (INCR);
* ``\\0ksds:expiry``: a sorted set of what expires (``ttlSeconds``), score = the expiry (epoch milliseconds),
  member = ``E`` + the entry's ident, or ``M`` + ``len(name) ":" name len(mapKey) ":" mapKey itemKey`` for a map
  item. Every change first runs a script that removes what has expired from its front (``ZRANGEBYSCORE``, no
  scan), and every read asks the set for the scores of what it read (``ZSCORE``/``ZMSCORE``, in one round trip
  with the read), so nothing expired is returned even before it is removed. (The installed Redis 7.0 has no
  per-field ``HEXPIRE``, which came in 7.4, and the entries' bookkeeping must go with them anyway.)

Entries written into the service hashes by something else (Zowe itself) are served but not counted. The
bookkeeping keys describe the entries ksds wrote; Zowe never reads them (a service id from an HTTP header cannot
start with NUL) and they do not change the hashes Zowe reads, so Zowe and ksds can serve one Redis in turn. While
both write to it at once, what Zowe deletes stays in ksds's count until removeOldest reaches it (or DEL of the
keys above), and an entry that ksds wrote with ``ttlSeconds`` and Zowe then wrote again without one still expires.

**Connections** (:class:`~ksds.caching.redis_config.RedisConfig`: Zowe's ``masterNodeUri``, Sentinel, TLS with
PEM or PKCS#12 stores, the timeout): redis-py, connecting on first use; each command may take ``timeout`` seconds
(Zowe: 60), each connect at most 10. There are no hidden retries (a command retried after its connection broke
may have run already: a create would then answer 409 for its own entry): a request while Redis is down, or whose
connection breaks, answers 503 ZWECS703W at once, and the next request reconnects (a connection that Redis closed,
when it restarted, is noticed before it is used; in Sentinel mode each new connection asks the Sentinels for the
master, so after a failover the next request reaches the new one). Zowe's Lettuce instead queues commands while it
reconnects, up to its timeout, and Zowe exits when Redis is not there at start; ksds starts, and answers 503 until
Redis is there.

**List maps**: a hash per map, ``\\0ksds:map:<len(name)>:<name><mapKey>`` (item key -> value), and a set per
caller of its map keys, ``\\0ksds:maps:<name>``, where ``name`` is the name of the caller's entries' hash.

**Errors**: Redis's "OOM command not allowed" (maxmemory) is 507, as in Zowe; a Redis that cannot be reached (or
is loading its data) is 503 ZWECS703W, Zowe's "Cache is not available". The scripts that add data are
refused whole when Redis is over maxmemory (``#!lua`` scripts are checked once, before they run), so a refused
create changes nothing; delete scripts may run over maxmemory (``allow-oom``): deleting is how to get under it.
The scripts name keys they compute (the evicted entry's service), so they need a single Redis (not a cluster).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.exceptions import BusyLoadingError, OutOfMemoryError
from redis.retry import Retry
from redis.sentinel import Sentinel

from .. import zowe
from .common import (
    created_order,
    entry_expiry,
    expired,
    item_expiry,
    rule_is_stale,
    token_is_expired,
    with_service,
)
from .model import (
    CACHE_NOT_AVAILABLE,
    DEFAULT_EVICTION,
    DEFAULT_SIZE,
    DUPLICATE_KEY,
    INSUFFICIENT_STORAGE,
    KEY_NOT_IN_CACHE,
    KeyValue,
    Storage,
    StorageError,
    caller_dn,
    partition_key,
)
from .redis_config import DEFAULT_TIMEOUT, ClientCertificate, RedisConfig, client_certificate, trusted_pem

PREFIX = "\0ksds:"
ORDER = PREFIX + "order"
MEMBERS = PREFIX + "members"
SEQ = PREFIX + "seq"
EXPIRY = PREFIX + "expiry"

# KEYS: service hash, order, members, seq, expiry. ARGV: key, json, ident, score, size, reject (1/0), expiry ms
# or '', now (ms: an entry there that has expired is gone)
_CREATE = """#!lua
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  local exp = redis.call('ZSCORE', KEYS[5], 'E' .. ARGV[3])
  if not exp or tonumber(exp) > tonumber(ARGV[8]) then return 'dup' end
  -- an expired entry the purge has not reached: it is gone, and its key is free
  local old = redis.call('HGET', KEYS[3], ARGV[3])
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[3])
  if old then redis.call('ZREM', KEYS[2], old) end
  redis.call('ZREM', KEYS[5], 'E' .. ARGV[3])
end
local size = tonumber(ARGV[5])
if size > 0 then
  local count = redis.call('ZCARD', KEYS[2])
  if count >= size then
    if ARGV[6] == '1' then return 'full' end
    while count >= size do
      local m = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
      if not m then return 'full' end
      local ident = string.sub(m, 17)
      local n = string.match(ident, '^(%d+):')
      local sid = string.sub(ident, #n + 2, #n + 1 + tonumber(n))
      local key = string.sub(ident, #n + 2 + tonumber(n))
      redis.call('HDEL', sid, key)
      redis.call('HDEL', KEYS[3], ident)
      redis.call('ZREM', KEYS[2], m)
      redis.call('ZREM', KEYS[5], 'E' .. ident)
      count = count - 1
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local member = string.format('%016x', redis.call('INCR', KEYS[4])) .. ARGV[3]
redis.call('ZADD', KEYS[2], ARGV[4], member)
redis.call('HSET', KEYS[3], ARGV[3], member)
if ARGV[7] == '' then redis.call('ZREM', KEYS[5], 'E' .. ARGV[3])
else redis.call('ZADD', KEYS[5], ARGV[7], 'E' .. ARGV[3]) end
return 'ok'
"""

# KEYS: service hash, order, members, seq, expiry. ARGV: key, json, ident, score, expiry ms or ''
_UPDATE = """#!lua
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 'missing' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local old = redis.call('HGET', KEYS[3], ARGV[3])
if old then redis.call('ZREM', KEYS[2], old) end
local member = string.format('%016x', redis.call('INCR', KEYS[4])) .. ARGV[3]
redis.call('ZADD', KEYS[2], ARGV[4], member)
redis.call('HSET', KEYS[3], ARGV[3], member)
if ARGV[5] == '' then redis.call('ZREM', KEYS[5], 'E' .. ARGV[3])
else redis.call('ZADD', KEYS[5], ARGV[5], 'E' .. ARGV[3]) end
return 'ok'
"""

# KEYS: service hash, order, members, expiry. ARGV: key, ident. Returns the deleted JSON (or nil).
_DELETE = """#!lua flags=allow-oom
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return nil end
redis.call('HDEL', KEYS[1], ARGV[1])
local m = redis.call('HGET', KEYS[3], ARGV[2])
if m then
  redis.call('ZREM', KEYS[2], m)
  redis.call('HDEL', KEYS[3], ARGV[2])
end
redis.call('ZREM', KEYS[4], 'E' .. ARGV[2])
return v
"""

# KEYS: service hash, order, members, expiry. ARGV: ident prefix (len(sid) ":" sid)
_DELETE_SERVICE = """#!lua flags=allow-oom
local keys = redis.call('HKEYS', KEYS[1])
for _, key in ipairs(keys) do
  local ident = ARGV[1] .. key
  local m = redis.call('HGET', KEYS[3], ident)
  if m then
    redis.call('ZREM', KEYS[2], m)
    redis.call('HDEL', KEYS[3], ident)
  end
  redis.call('ZREM', KEYS[4], 'E' .. ident)
end
redis.call('DEL', KEYS[1])
return #keys
"""

# KEYS: map hash, service's map set, expiry. ARGV: map key, expiry member prefix, then item key / value pairs to
# delete if unchanged ('' value: whatever it is)
_DELETE_ITEMS = """#!lua flags=allow-oom
for i = 3, #ARGV, 2 do
  if ARGV[i + 1] == '' or redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('ZREM', KEYS[3], ARGV[2] .. ARGV[i])
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[1]) end
return 1
"""

# KEYS: map hash, service's map set, expiry. ARGV: map key, item key, value, expiry member, expiry ms or ''
_STORE_ITEM = """#!lua
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
if ARGV[5] == '' then redis.call('ZREM', KEYS[3], ARGV[4]) else redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4]) end
return 1
"""

# KEYS: expiry, order, members. ARGV: now (ms), most to remove. Removes what has expired, from the front of the
# expiry set (the names of the hashes are in the members); returns how many.
_PURGE = """#!lua flags=allow-oom
local function cut(s)
  local n = string.match(s, '^(%d+):')
  local len = tonumber(n)
  return string.sub(s, #n + 2, #n + 1 + len), string.sub(s, #n + 2 + len)
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(gone) do
  local kind, rest = string.sub(m, 1, 1), string.sub(m, 2)
  if kind == 'E' then
    local sid, key = cut(rest)
    redis.call('HDEL', sid, key)
    local om = redis.call('HGET', KEYS[3], rest)
    if om then
      redis.call('ZREM', KEYS[2], om)
      redis.call('HDEL', KEYS[3], rest)
    end
  elseif kind == 'M' then
    local name, after = cut(rest)
    local map_key, item = cut(after)
    local map = '\\0ksds:map:' .. #name .. ':' .. name .. map_key
    redis.call('HDEL', map, item)
    if redis.call('EXISTS', map) == 0 then redis.call('SREM', '\\0ksds:maps:' .. name, map_key) end
  end
  redis.call('ZREM', KEYS[1], m)
end
return #gone
"""
#: the most expired entries and items one call removes (the rest go with the next calls)
PURGE_BATCH = 1000


IDS = PREFIX + "id:"


def _utf8(text: str) -> bytes:
    """Text as stored: UTF-8 (a lone surrogate, which the REST API refuses, kept as its UTF-8-like bytes)."""
    return text.encode("utf-8", "surrogatepass")


def _hash_name(service_id: str) -> bytes:
    """The name of the caller's entries' hash, as Zowe names it: Zowe's string of the caller (a service id alone,
    or ``"<DN>, SERVICE=<id>"`` for a caller whose DN was proven). A caller without a proven DN whose service id
    holds ``=`` (as every DN's string does) or starts with NUL gets ``\\0ksds:id:`` + its partition key instead,
    so it can never name a DN's hash."""
    if caller_dn(service_id) is not None:
        return _utf8(str(service_id))
    if "=" not in service_id and not service_id.startswith("\0"):
        return _utf8(service_id)
    return _utf8(IDS + partition_key(service_id))


def _ident_prefix(name: bytes) -> bytes:
    return b"%d:" % len(name) + name


def _ident(name: bytes, key: str) -> bytes:
    return _ident_prefix(name) + _utf8(key)


def _map_name(name: bytes, map_key: str) -> bytes:
    return (PREFIX + "map:").encode() + _ident(name, map_key)


def _maps_name(name: bytes) -> bytes:
    return (PREFIX + "maps:").encode() + name


def _item_member_prefix(name: bytes, map_key: str) -> bytes:
    """The expiry-set member of a map item, without the item key."""
    return b"M" + _ident_prefix(name) + _ident_prefix(_utf8(map_key))


def _scores_expired(scores: Sequence[Any], now_ms: int) -> list[bool]:
    return [sc is not None and float(sc) <= now_ms for sc in scores]


def _text(b: Any) -> str:
    """Stored text: UTF-8, with bytes that are not (written by something else) read as U+FFFD; lone surrogates
    as they were written."""
    if not isinstance(b, bytes):
        return str(b)
    try:
        return b.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return b.decode("utf-8", "replace")


def _scalar(v: Any) -> str:
    """A JSON field as Jackson reads it into a String: text as it is, a number or boolean as its JSON, null and
    anything else as ""."""
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, int, float)):
        return json.dumps(v)
    return ""


def connect(config: RedisConfig) -> tuple[redis.Redis, Callable[[], None]]:
    """A redis-py client as ``config`` says (nothing is connected yet), and the function that closes it (and
    what it needed: the Sentinel clients, a key file made from a PKCS#12 key store)."""
    common: dict[str, Any] = {
        "socket_timeout": float(config.timeout),
        "socket_connect_timeout": config.connect_timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    tls: dict[str, Any] = {}
    cert: ClientCertificate | None = None
    if config.tls:
        tls = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
        if config.truststore is not None:
            tls["ssl_ca_data"] = trusted_pem(config.truststore)
        if config.keystore is not None:
            cert = client_certificate(config.keystore)
            tls.update(ssl_certfile=cert.certfile, ssl_keyfile=cert.keyfile, ssl_password=cert.password)
    closers: list[Callable[[], None]] = []
    try:
        if config.sentinel is not None:
            nodes = config.sentinel.nodes
            where = [(n.host, n.port) for n in nodes]
            sentinel = Sentinel(where, sentinel_kwargs=dict(common))  # type: ignore[no-untyped-call]
            # each Sentinel with its own password (Zowe's nodes: [password@]host:port), without TLS as Zowe's
            sentinel.sentinels = [
                redis.Redis(n.host, n.port, username=None if n.username == "default" else n.username,
                            password=n.password, **common)
                for n in nodes
            ]
            closers.append(sentinel.close)
            username, password, db = config.credentials()
            client = sentinel.master_for(  # type: ignore[no-untyped-call]
                config.sentinel.master, username=username, password=password, db=db, ssl=config.tls, **common, **tls)
        elif config.url is not None:
            client = redis.Redis.from_url(config.url, **common, **tls)
        else:
            username, password, _ = config.credentials()
            assert config.node is not None
            client = redis.Redis(config.node.host, config.node.port, username=username, password=password,
                                 ssl=config.tls, **common, **tls)
    except BaseException:
        if cert is not None:
            cert.cleanup()
        raise
    closers.insert(0, client.close)
    if cert is not None:
        closers.append(cert.cleanup)

    def close() -> None:
        for c in closers:
            c()

    return client, close


class RedisStorage(Storage):
    """The cache on Redis: ``url`` is a :class:`~ksds.caching.redis_config.RedisConfig`, or one Redis's address as
    a redis-py URL (``redis://[[user]:password@]host:port/db``, ``rediss://`` for TLS) or Zowe's ``masterNodeUri``
    (``[[user:]password@]host[:port]``), with ``timeout`` seconds per command. ``client``: an existing
    ``redis.Redis`` to use instead (not closed by :meth:`close`)."""

    thread_safe = True

    def __init__(
        self,
        url: str | RedisConfig | None = None,
        *,
        size: int = DEFAULT_SIZE,
        eviction: str = DEFAULT_EVICTION,
        client: redis.Redis | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(size, eviction, clock=clock)
        self._close: Callable[[], None] | None = None
        if client is None:
            if not url:
                raise ValueError("the redis storage needs a URL (redis://host:port/db) or Zowe's masterNodeUri")
            config = url if isinstance(url, RedisConfig) else RedisConfig.from_address(url, timeout=timeout)
            client, self._close = connect(config)
            self.config: RedisConfig | None = config
        else:
            self.config = url if isinstance(url, RedisConfig) else None
        #: where (for messages: no password)
        self.url = str(self.config) if self.config is not None else url
        self._r: redis.Redis = client
        r = self._r
        self._create = r.register_script(_CREATE)
        self._update = r.register_script(_UPDATE)
        self._delete = r.register_script(_DELETE)
        self._delete_service = r.register_script(_DELETE_SERVICE)
        self._delete_items = r.register_script(_DELETE_ITEMS)
        self._store_item = r.register_script(_STORE_ITEM)
        self._purge_script = r.register_script(_PURGE)

    def _run(self, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except OutOfMemoryError:
            raise StorageError(INSUFFICIENT_STORAGE) from None
        except (redis.ConnectionError, redis.TimeoutError, BusyLoadingError) as e:
            raise StorageError(CACHE_NOT_AVAILABLE, f"Redis: {type(e).__name__}: {e}") from None

    def _now(self) -> int:
        """Now, with what has expired by then removed (at most :data:`PURGE_BATCH`)."""
        now = self.now_ms()
        self._run(self._purge_script, keys=[EXPIRY, ORDER, MEMBERS], args=[now, PURGE_BATCH])
        return now

    def _pipe(self, *calls: tuple[str, tuple[Any, ...]]) -> list[Any]:
        """Several commands in one round trip (no transaction)."""

        def go() -> list[Any]:
            p = self._r.pipeline(transaction=False)
            for name, args in calls:
                getattr(p, name)(*args)
            return list(p.execute())

        return cast(list[Any], self._run(go))

    @staticmethod
    def _json(kv: KeyValue) -> str:
        """The entry as Zowe's Redis storage writes it: no ``serviceId`` (the hash's name is the caller)."""
        return zowe.to_json(zowe.KeyValue(kv.key, kv.value, "", kv.created))

    @staticmethod
    def _parse(service_id: str, key: str, data: Any) -> KeyValue:
        """The entry stored at field ``key``. A value that is not a KeyValue's JSON (written by something else) is
        the entry's value as it is, so it reads back instead of failing the request."""
        text = _text(data)
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict):
            return KeyValue(key, text, str(service_id), "")
        created = obj.get("created")
        return KeyValue(_scalar(obj.get("key")) or key, _scalar(obj.get("value")), str(service_id),
                        "" if created is None else _scalar(created))

    # --- entries -----------------------------------------------------------------------------------------------

    def _exists(self, name: bytes, key: str, now: int) -> bool:
        there, score = self._pipe(("hexists", (name, _utf8(key))), ("zscore", (EXPIRY, b"E" + _ident(name, key))))
        return bool(there) and not _scores_expired([score], now)[0]

    def create(self, service_id: str, kv: KeyValue) -> KeyValue:
        stored = with_service(service_id, kv)
        name = _hash_name(service_id)
        now = self._now()
        expires = entry_expiry(kv, now)
        if expired(expires, now):  # ttlSeconds <= 0: nothing to store (409 all the same if the key is there)
            if self._exists(name, kv.key, now):
                raise StorageError(DUPLICATE_KEY, kv.key)
            return stored
        got = self._run(
            self._create,
            keys=[name, ORDER, MEMBERS, SEQ, EXPIRY],
            args=[
                _utf8(kv.key), _utf8(self._json(stored)), _ident(name, kv.key), created_order(kv.created),
                self.size, 1 if self.eviction == "reject" else 0, "" if expires is None else expires, now,
            ],
        )
        status = _text(got)
        if status == "dup":
            raise StorageError(DUPLICATE_KEY, kv.key)
        if status == "full":
            raise StorageError(INSUFFICIENT_STORAGE)
        return stored

    def read(self, service_id: str, key: str) -> KeyValue:
        name = _hash_name(service_id)
        data, score = self._pipe(("hget", (name, _utf8(key))), ("zscore", (EXPIRY, b"E" + _ident(name, key))))
        if data is None or _scores_expired([score], self.now_ms())[0]:
            raise StorageError(KEY_NOT_IN_CACHE, key, service_id)
        return self._parse(service_id, key, data)

    def update(self, service_id: str, kv: KeyValue) -> KeyValue:
        stored = with_service(service_id, kv)
        name = _hash_name(service_id)
        now = self._now()
        expires = entry_expiry(kv, now)
        if expired(expires, now):  # ttlSeconds <= 0: the entry is removed
            self.delete(service_id, kv.key)
            return stored
        got = self._run(
            self._update,
            keys=[name, ORDER, MEMBERS, SEQ, EXPIRY],
            args=[_utf8(kv.key), _utf8(self._json(stored)), _ident(name, kv.key),
                  created_order(kv.created), "" if expires is None else expires],
        )
        if _text(got) == "missing":
            raise StorageError(KEY_NOT_IN_CACHE, kv.key, service_id)
        return stored

    def delete(self, service_id: str, key: str) -> KeyValue:
        name = _hash_name(service_id)
        self._now()
        data = self._run(self._delete, keys=[name, ORDER, MEMBERS, EXPIRY], args=[_utf8(key), _ident(name, key)])
        if data is None:
            raise StorageError(KEY_NOT_IN_CACHE, key, service_id)
        return self._parse(service_id, key, data)

    def read_for_service(self, service_id: str) -> dict[str, KeyValue]:
        name = _hash_name(service_id)
        got = cast(dict[bytes, bytes], self._run(self._r.hgetall, name))
        if not got:
            return {}
        fields = list(got)
        scores = self._run(self._r.zmscore, EXPIRY, [b"E" + _ident_prefix(name) + f for f in fields])
        gone = _scores_expired(scores, self.now_ms())
        return {_text(k): self._parse(service_id, _text(k), got[k]) for k, g in zip(fields, gone, strict=True) if not g}

    def delete_for_service(self, service_id: str) -> None:
        name = _hash_name(service_id)
        self._now()
        self._run(self._delete_service, keys=[name, ORDER, MEMBERS, EXPIRY], args=[_ident_prefix(name)])

    def count(self) -> int:
        self._now()
        return int(self._run(self._r.zcard, ORDER))

    def used_memory(self) -> int | None:
        """Bytes the Redis server uses (``INFO memory``'s used_memory); None while Redis does not answer."""
        try:
            used = self._r.info("memory").get("used_memory")
        except redis.RedisError:
            return None
        return used if isinstance(used, int) else None

    # --- list maps ---------------------------------------------------------------------------------------------

    def store_map_item(self, service_id: str, map_key: str, kv: KeyValue) -> KeyValue:
        name = _hash_name(service_id)
        now = self._now()
        expires = item_expiry(map_key, kv, now)
        keys = [_map_name(name, map_key), _maps_name(name), EXPIRY]
        prefix = _item_member_prefix(name, map_key)
        if expired(expires, now):  # removed instead of stored (Zowe: ttlSeconds <= 0)
            self._run(self._delete_items, keys=keys, args=[_utf8(map_key), prefix, _utf8(kv.key), b""])
        else:
            self._run(
                self._store_item, keys=keys,
                args=[_utf8(map_key), _utf8(kv.key), _utf8(kv.value), prefix + _utf8(kv.key),
                      "" if expires is None else expires],
            )
        return with_service(service_id, kv)

    def _live(self, name: bytes, map_key: str, got: Mapping[bytes, Any], now: int) -> dict[str, str]:
        """The items of ``got`` (item key -> value, as stored; a value None is missing) that have not expired."""
        fields = [k for k, v in got.items() if v is not None]
        if not fields:
            return {}
        prefix = _item_member_prefix(name, map_key)
        scores = self._run(self._r.zmscore, EXPIRY, [prefix + f for f in fields])
        return {_text(k): _text(got[k]) for k, g in zip(fields, _scores_expired(scores, now), strict=True) if not g}

    def _items(self, name: bytes, map_key: str) -> dict[str, str]:
        got = cast(dict[bytes, bytes], self._run(self._r.hgetall, _map_name(name, map_key)))
        return self._live(name, map_key, got, self.now_ms())

    def get_map_items(self, service_id: str, query: Mapping[str, Sequence[str | None]]) -> dict[str, dict[str, str]]:
        """One HMGET per map asked for (one round trip for all), then the expiries of what was found."""
        name = _hash_name(service_id)
        asked = [(m, list(dict.fromkeys(_utf8(k) for k in keys if k is not None))) for m, keys in query.items()]
        asked = [(m, ks) for m, ks in asked if ks]
        if not asked:
            return {}
        values = self._pipe(*(("hmget", (_map_name(name, m), ks)) for m, ks in asked))
        now = self.now_ms()
        out: dict[str, dict[str, str]] = {}
        for (m, ks), vs in zip(asked, values, strict=True):
            found = self._live(name, m, dict(zip(ks, vs, strict=True)), now)
            if found:
                out[m] = found
        return out

    def get_all_map_items(self, service_id: str, map_key: str) -> dict[str, str]:
        return self._items(_hash_name(service_id), map_key)

    def get_all_maps(self, service_id: str) -> dict[str, dict[str, str]]:
        name = _hash_name(service_id)
        map_keys = cast(set[bytes], self._run(self._r.smembers, _maps_name(name)))
        out: dict[str, dict[str, str]] = {}
        for raw in sorted(map_keys):
            items = self._items(name, _text(raw))
            if items:
                out[_text(raw)] = items
        return out

    def _evict_items(self, service_id: str, map_key: str, stale: bool) -> None:
        name = _hash_name(service_id)
        now_ms = self._now()
        got = cast(dict[bytes, bytes], self._run(self._r.hgetall, _map_name(name, map_key)))
        args: list[bytes] = [_utf8(map_key), _item_member_prefix(name, map_key)]
        for k, v in got.items():
            text = _text(v)
            if rule_is_stale(text, now_ms) if stale else token_is_expired(text, now_ms / 1000):
                args += [k, v]  # as stored: the script deletes the item only if it is unchanged
        if len(args) > 2:
            self._run(self._delete_items, keys=[_map_name(name, map_key), _maps_name(name), EXPIRY], args=args)

    def remove_non_relevant_rules(self, service_id: str, map_key: str) -> None:
        self._evict_items(service_id, map_key, True)

    def remove_non_relevant_tokens(self, service_id: str, map_key: str) -> None:
        self._evict_items(service_id, map_key, False)

    def close(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            close()
