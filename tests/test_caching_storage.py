"""The caching service's storage modes against one contract (memory, ksds native, ksds zowe layout, a real Redis),
then what only the ksds storage does: the Zowe VSAM layout byte for byte, reopening, and several processes
sharing one data set (size limit, removeOldest, kill -9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis

import ksds
from ksds import zowe
from ksds.caching.common import created_order, rule_is_stale, token_is_expired
from ksds.caching.ksds_storage import KsdsStorage, ksds_config_from_env
from ksds.caching.memory import MemoryStorage
from ksds.caching.model import Identity, KeyValue, Storage, StorageError
from ksds.caching.redis_storage import RedisStorage
from ksds.caching.storage_factory import make_storage

sys.path.insert(0, os.path.dirname(__file__))
from servers import redis_server  # noqa: E402

MODES = ["memory", "ksds", "ksds-zowe", "redis"]
Make = Callable[..., Storage]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(mode: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Make]:
    """A function making a fresh storage of the mode under test (size 100, reject unless told)."""
    made: list[Storage] = []

    def _make(size: int = 100, eviction: str = "reject") -> Storage:
        s: Storage
        if mode == "memory":
            s = MemoryStorage(size, eviction)
        elif mode == "redis":
            url = request.getfixturevalue("redis_url")
            if not made:
                redis.Redis.from_url(url).flushdb()
            s = RedisStorage(url, size=size, eviction=eviction)
        else:
            layout = "zowe" if mode == "ksds-zowe" else "native"
            path = str(tmp_path / f"cache{len(made)}.ksds")
            s = KsdsStorage(path, 128, 4096, layout=layout, size=size, eviction=eviction)
        made.append(s)
        return s

    yield _make
    for s in made:
        s.close()


def status_of(fn: Callable[[], object]) -> tuple[int, str]:
    with pytest.raises(StorageError) as e:
        fn()
    return e.value.status, e.value.message.number


def jhash(s: str) -> int:
    return zowe.java_string_hash(s)


#: two services whose Java hashes print as "97" and "97003": Zowe's readForService("a") positions on "97" and
#: takes every record starting "97", so it returns (and deleteForService deletes) "awa"'s entries too (defect 11.2)
LEAK_A, LEAK_B = "a", "awa"
assert (jhash(LEAK_A), jhash(LEAK_B)) == (97, 97003)

# --- the contract: CRUD ------------------------------------------------------------------------------------------


def test_create_read_update_delete(make: Make) -> None:
    s = make()
    got = s.create("svc", KeyValue("k", "v", created="1700000000000"))
    assert got == KeyValue("k", "v", "svc", "1700000000000")
    assert s.read("svc", "k") == KeyValue("k", "v", "svc", "1700000000000")
    assert s.count() == 1
    s.update("svc", KeyValue("k", "v2", created="1700000000009"))
    assert s.read("svc", "k") == KeyValue("k", "v2", "svc", "1700000000009")  # PUT replaces created too
    assert s.count() == 1
    assert s.delete("svc", "k") == KeyValue("k", "v2", "svc", "1700000000009")
    assert s.count() == 0
    assert status_of(lambda: s.read("svc", "k")) == (404, "ZWECS131E")


def test_created_defaults_to_now(make: Make) -> None:
    s = make()
    before = time.time_ns() // 1_000_000
    s.create("svc", KeyValue("k", "v"))
    created = int(s.read("svc", "k").created)
    assert before - 5 <= created <= time.time_ns() // 1_000_000 + 5


def test_errors_carry_zowe_messages(make: Make) -> None:
    s = make()
    s.create("svc", KeyValue("k", "v"))
    with pytest.raises(StorageError) as e:
        s.create("svc", KeyValue("k", "other"))
    assert (e.value.status, e.value.message.number) == (409, "ZWECS133E")
    assert "'k'" in str(e.value)
    body = e.value.body()
    assert body == {"messages": [{  # Zowe's caching-log-messages.yml, in ApiMessage's field order
        "messageType": "ERROR", "messageNumber": "ZWECS133E",
        "messageContent": "Adding key 'k' resulted in a collision in the cache.",
        "messageAction": "Update or delete the key, or add a different key.",
        "messageReason": "Key is already in the cache.",
        "messageKey": "org.zowe.apiml.cache.keyCollision",
    }]}
    assert list(body["messages"][0]) == [  # type: ignore[index]
        "messageType", "messageNumber", "messageContent", "messageAction", "messageReason", "messageKey"]
    assert s.read("svc", "k").value == "v"  # the failed create changed nothing
    calls: list[Callable[[], object]] = [
        lambda: s.read("svc", "nope"),
        lambda: s.update("svc", KeyValue("nope", "v")),
        lambda: s.delete("svc", "nope"),
        lambda: s.read("other", "k"),
    ]
    for fn in calls:
        with pytest.raises(StorageError) as e:
            fn()
        assert (e.value.status, e.value.message.number) == (404, "ZWECS131E")
    with pytest.raises(StorageError) as e:
        s.read("svc", "nope")
    assert str(e.value) == "ZWECS131E Key 'nope' is not in the cache for service 'svc'"
    assert s.count() == 1


def test_returned_entries_are_copies(make: Make) -> None:
    s = make()
    kv = KeyValue("k", "v", created="5")
    s.create("svc", kv)
    assert kv.service_id == ""  # the caller's object is not changed
    s.read("svc", "k").value = "changed"
    assert s.read("svc", "k").value == "v"


def test_special_characters_and_empty_strings(make: Make) -> None:
    s = make()
    keys = ["key .%^&!@#", "a/b?c=d&e#f", " lead and trail ", 'quo"te', "back\\slash", "new\nline\ttab",
            "[brackets] ^ ¬ ¨", "é ü ß ÿ", "", "{\"json\": 1}", "%2F", "0", "-1:2"]
    for i, k in enumerate(keys):
        s.create("svc", KeyValue(k, f"value of {k!r}", created=str(i)))
    s.create("svc", KeyValue("empty value", "", created="99"))
    got = s.read_for_service("svc")
    assert set(got) == set(keys) | {"empty value"}
    for k in keys:
        assert s.read("svc", k).value == f"value of {k!r}"
    assert s.read("svc", "empty value").value == ""
    assert s.read("svc", "").value == "value of ''"
    s.create("", KeyValue("k", "in the empty service"))
    assert s.read("", "k").value == "in the empty service"
    assert set(s.read_for_service("")) == {"k"}
    s.delete("svc", "")
    assert status_of(lambda: s.read("svc", "")) == (404, "ZWECS131E")


def test_unicode(make: Make, mode: str) -> None:
    s = make()
    k, v = "日本語のキー 🔑", "значение ☃ 🙂"
    if mode == "ksds-zowe":  # IBM-1047 has no code for them: refused instead of stored as "?" (Zowe)
        assert status_of(lambda: s.create("svc", KeyValue(k, "v"))) == (400, "ZWECS130E")
        assert status_of(lambda: s.create("svc", KeyValue("k", v))) == (400, "ZWECS130E")
        assert s.count() == 0
        return
    s.create("svc", KeyValue(k, v))
    s.create("сервис", KeyValue("k", v))
    assert s.read("svc", k).value == v
    assert s.read("сервис", "k").value == v
    assert set(s.read_for_service("svc")) == {k}


# --- the contract: services are isolated ----------------------------------------------------------------------------


@pytest.mark.parametrize("a,b", [("Aa", "BB"), (LEAK_A, LEAK_B), ("CN=alice,O=zowe", "CN=bob,O=zowe")])
def test_services_are_isolated_both_ways(make: Make, a: str, b: str) -> None:
    s = make()
    for i in range(5):
        s.create(a, KeyValue(f"a{i}", f"of {a}"))
        s.create(b, KeyValue(f"b{i}", f"of {b}"))
    assert set(s.read_for_service(a)) == {f"a{i}" for i in range(5)}
    assert set(s.read_for_service(b)) == {f"b{i}" for i in range(5)}
    assert all(kv.service_id == a and kv.value == f"of {a}" for kv in s.read_for_service(a).values())
    assert status_of(lambda: s.read(a, "b0")) == (404, "ZWECS131E")
    assert status_of(lambda: s.delete(b, "a0")) == (404, "ZWECS131E")
    s.delete_for_service(a)
    assert s.read_for_service(a) == {}
    assert set(s.read_for_service(b)) == {f"b{i}" for i in range(5)}
    assert s.count() == 5
    s.create(a, KeyValue("a0", "again"))
    s.delete_for_service(b)
    assert set(s.read_for_service(a)) == {"a0"} and s.read_for_service(b) == {}
    assert s.count() == 1


def test_equal_java_hashcodes(make: Make, mode: str) -> None:
    """"Aa" and "BB" have equal String.hashCode: as services, and as keys of one service."""
    assert jhash("Aa") == jhash("BB")
    s = make()
    s.create("Aa", KeyValue("same", "of Aa"))
    s.create("svc", KeyValue("Aa", "key Aa"))
    if mode == "ksds-zowe":
        # Zowe's layout keys records by hashCodes only: the second of two colliding entries is 409, as in Zowe,
        # but (unlike Zowe) nobody reads, updates or deletes the other's entry
        assert status_of(lambda: s.create("BB", KeyValue("same", "of BB"))) == (409, "ZWECS133E")
        assert status_of(lambda: s.create("svc", KeyValue("BB", "key BB"))) == (409, "ZWECS133E")
        for fn in (lambda: s.read("BB", "same"), lambda: s.read("svc", "BB"), lambda: s.delete("svc", "BB"),
                   lambda: s.update("BB", KeyValue("same", "x"))):
            assert status_of(fn) == (404, "ZWECS131E")
        assert s.read_for_service("BB") == {}
        s.delete_for_service("BB")
        assert s.read("Aa", "same").value == "of Aa" and s.read("svc", "Aa").value == "key Aa"
        assert s.count() == 2
        return
    s.create("BB", KeyValue("same", "of BB"))
    s.create("svc", KeyValue("BB", "key BB"))
    assert s.read("Aa", "same").value == "of Aa" and s.read("BB", "same").value == "of BB"
    assert s.read("svc", "Aa").value == "key Aa" and s.read("svc", "BB").value == "key BB"
    assert set(s.read_for_service("Aa")) == {"same"} and set(s.read_for_service("BB")) == {"same"}
    s.delete_for_service("BB")
    assert s.read("Aa", "same").value == "of Aa"
    s.delete("svc", "BB")
    assert s.read("svc", "Aa").value == "key Aa"
    assert s.count() == 2


# --- the contract: size limit -----------------------------------------------------------------------------------------


def test_reject_at_the_size_limit(make: Make) -> None:
    s = make(size=3, eviction="reject")
    for i in range(3):
        s.create(f"svc{i}", KeyValue("k", "v"))
    with pytest.raises(StorageError) as e:
        s.create("svc9", KeyValue("k", "v"))
    assert (e.value.status, e.value.message.number) == (507, "ZWECS134E")
    assert s.count() == 3 and s.read_for_service("svc9") == {}
    assert status_of(lambda: s.create("svc0", KeyValue("k", "dup"))) == (409, "ZWECS133E")  # 409 even when full
    s.update("svc0", KeyValue("k", "updating is no create"))
    s.delete("svc1", "k")
    s.create("svc9", KeyValue("k", "v"))
    assert s.count() == 3
    s.delete_for_service("svc9")
    s.create("svc8", KeyValue("k", "v"))
    assert status_of(lambda: s.create("svc7", KeyValue("k", "v"))) == (507, "ZWECS134E")


def test_remove_oldest(make: Make) -> None:
    s = make(size=3, eviction="removeOldest")
    s.create("a", KeyValue("k5", "v", created="1610965944035"))
    s.create("b", KeyValue("k3", "v", created="1610965944033"))
    s.create("a", KeyValue("k4", "v", created="1610965944034"))
    s.create("c", KeyValue("k9", "v", created="1610965944039"))  # the oldest (k3 of b) goes, whatever service
    assert s.count() == 3
    assert status_of(lambda: s.read("b", "k3")) == (404, "ZWECS131E")
    s.update("a", KeyValue("k4", "v", created="1610965944099"))  # updated: no longer the oldest
    s.create("c", KeyValue("k8", "v", created="1610965944098"))  # k5 goes
    assert status_of(lambda: s.read("a", "k5")) == (404, "ZWECS131E")
    assert {k for sid in "abc" for k in s.read_for_service(sid)} == {"k4", "k8", "k9"}
    assert status_of(lambda: s.create("c", KeyValue("k9", "v"))) == (409, "ZWECS133E")  # nothing evicted
    assert s.count() == 3 and s.read("c", "k8")


def test_remove_oldest_ties_and_odd_created(make: Make) -> None:
    s = make(size=3, eviction="removeOldest")
    for k in ("first", "second", "third"):
        s.create("svc", KeyValue(k, "v", created="7"))
    s.create("svc", KeyValue("fourth", "v", created="7"))  # a tie: the one stored first goes
    assert set(s.read_for_service("svc")) == {"second", "third", "fourth"}
    s.update("svc", KeyValue("second", "v", created="7"))  # an update counts as stored last
    s.create("svc", KeyValue("fifth", "v", created="7"))
    assert set(s.read_for_service("svc")) == {"second", "fourth", "fifth"}
    s.create("svc", KeyValue("not a number", "v", created="yesterday"))  # "fourth" goes (stored before "second")
    assert set(s.read_for_service("svc")) == {"second", "fifth", "not a number"}
    s.create("svc", KeyValue("negative", "v", created="-5"))  # "not a number" counts as 0: the oldest, it goes
    assert set(s.read_for_service("svc")) == {"second", "fifth", "negative"}
    s.create("svc", KeyValue("sixth", "v", created="8"))  # -5 is older than 7
    assert set(s.read_for_service("svc")) == {"second", "fifth", "sixth"}
    assert s.count() == 3


def test_remove_oldest_keeps_exactly_size(make: Make) -> None:
    s = make(size=5, eviction="removeOldest")
    for i in range(40):
        s.create(f"svc{i % 4}", KeyValue(f"k{i}", "v", created=str(1000 + i)))
        assert s.count() == min(i + 1, 5)
    left = {k for j in range(4) for k in s.read_for_service(f"svc{j}")}
    assert left == {f"k{i}" for i in range(35, 40)}


def test_no_limit(make: Make) -> None:
    s = make(size=0)
    for i in range(120):
        s.create("svc", KeyValue(f"k{i}", "v"))
    assert s.count() == 120 and len(s.read_for_service("svc")) == 120


# --- the contract: list maps ---------------------------------------------------------------------------------------


def test_list_maps(make: Make) -> None:
    s = make(size=1)
    assert s.get_all_maps("svc") == {} and s.get_all_map_items("svc", "invalidTokens") == {}
    s.store_map_item("svc", "invalidTokens", KeyValue("t1", "x1"))
    s.store_map_item("svc", "invalidTokens", KeyValue("t2", "x2"))
    s.store_map_item("svc", "invalidTokens", KeyValue("t1", "replaced"))
    rule = str(time.time_ns() // 1_000_000)  # a rule of now (one 90 days old expires: test_map_item_expiry)
    s.store_map_item("svc", "invalidUsers", KeyValue("user", rule))
    s.store_map_item("other", "invalidTokens", KeyValue("t9", "x9"))
    s.store_map_item("Aa", "m", KeyValue("k", "of Aa"))
    s.store_map_item("BB", "m", KeyValue("k", "of BB"))
    s.store_map_item("svc", "", KeyValue("", ""))
    assert s.get_all_map_items("svc", "invalidTokens") == {"t1": "replaced", "t2": "x2"}
    assert s.get_all_maps("svc") == {
        "invalidTokens": {"t1": "replaced", "t2": "x2"}, "invalidUsers": {"user": rule}, "": {"": ""},
    }
    assert s.get_all_maps("other") == {"invalidTokens": {"t9": "x9"}}
    assert s.get_all_maps("Aa") == {"m": {"k": "of Aa"}} and s.get_all_maps("BB") == {"m": {"k": "of BB"}}
    assert s.count() == 0  # map items are not entries: no size limit on them
    s.create("svc", KeyValue("invalidTokens", "an entry"))
    s.delete_for_service("svc")  # entries only
    assert s.get_all_map_items("svc", "invalidTokens") == {"t1": "replaced", "t2": "x2"}


def test_remove_non_relevant_rules(make: Make) -> None:
    s = make()
    now = time.time_ns() // 1_000_000
    day = 24 * 3600 * 1000
    items = {"old": now - 91 * day, "edge": now - 89 * day, "new": now, "future": now + day}
    # a map whose items do not expire by themselves (in invalidUsers "old" would expire on store: Zowe 3.6)
    rules = "invalidTokenRules"
    for k, v in items.items():
        s.store_map_item("svc", rules, KeyValue(k, str(v)))
    s.store_map_item("svc", rules, KeyValue("junk", "not a number"))
    s.store_map_item("svc", "other", KeyValue("old", str(now - 91 * day)))
    s.store_map_item("other", rules, KeyValue("old", str(now - 91 * day)))
    s.remove_non_relevant_rules("svc", rules)
    assert set(s.get_all_map_items("svc", rules)) == {"edge", "new", "future", "junk"}
    assert set(s.get_all_map_items("svc", "other")) == {"old"}
    assert set(s.get_all_map_items("other", rules)) == {"old"}
    s.remove_non_relevant_rules("svc", "no such map")


def test_remove_non_relevant_tokens(make: Make) -> None:
    s = make()
    now = datetime.now()
    past, future = now - timedelta(hours=1), now + timedelta(hours=1)

    def token(expires: object) -> str:
        return json.dumps({"userId": "u", "tokenValue": "h", "issuedAt": None, "expiresAt": expires, "scopes": []})

    values = {
        "iso-past": token(past.isoformat()),
        "iso-future": token(future.isoformat()),
        "iso-utc-past": token((datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")),
        "array-past": token([past.year, past.month, past.day, past.hour, past.minute, past.second, 5000]),
        "array-future": token([future.year, future.month, future.day, future.hour, future.minute]),
        "millis-past": token(int(past.timestamp() * 1000)),
        "millis-future": token(int(future.timestamp() * 1000)),
        "no-expiry": token(None),
        "not-json": "{nope",
    }
    for k, v in values.items():
        s.store_map_item("svc", "invalidTokens", KeyValue(k, v))
    s.store_map_item("svc", "rules", KeyValue("iso-past", values["iso-past"]))
    s.remove_non_relevant_tokens("svc", "invalidTokens")
    assert set(s.get_all_map_items("svc", "invalidTokens")) == {"iso-future", "array-future", "millis-future",
                                                                "no-expiry", "not-json"}
    assert set(s.get_all_map_items("svc", "rules")) == {"iso-past"}
    s.remove_non_relevant_tokens("svc", "invalidTokens")  # again: nothing more goes
    assert len(s.get_all_map_items("svc", "invalidTokens")) == 5


def test_a_map_emptied_by_eviction_is_gone(make: Make) -> None:
    s = make()
    s.store_map_item("svc", "invalidUsers", KeyValue("old", "1"))
    s.remove_non_relevant_rules("svc", "invalidUsers")
    assert s.get_all_maps("svc") == {}


# --- the contract: threads ------------------------------------------------------------------------------------------


def test_threads_share_a_storage(make: Make) -> None:
    s = make(size=25, eviction="reject")
    results: list[str] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        for i in range(10):
            try:
                s.create(f"svc{t % 2}", KeyValue(f"t{t}-{i}", "v"))
                r = "ok"
            except StorageError as e:
                r = str(e.status)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 25 and results.count("507") == 35
    assert s.count() == 25 == len(s.read_for_service("svc0")) + len(s.read_for_service("svc1"))


# --- helpers shared by every storage ------------------------------------------------------------------------------


def test_common_helpers() -> None:
    assert created_order("1700000000000") == 1700000000000
    assert created_order("-3") == -3 and created_order("+4") == 4
    assert created_order("") == 0 and created_order(" 5") == 0 and created_order("1_000") == 0
    assert created_order(str(1 << 63)) == 0  # beyond a Java long
    assert rule_is_stale("0", now_ms=91 * 86400000) and not rule_is_stale("0", now_ms=90 * 86400000)
    assert not rule_is_stale("soon")
    assert token_is_expired('{"expiresAt": "2000-01-01T00:00:00"}')
    assert not token_is_expired('{"expiresAt": "2999-01-01T00:00:00+02:00"}')
    assert not token_is_expired('{"expiresAt": [2024, 13, 1, 0, 0]}')  # no such month: kept
    assert not token_is_expired("[1, 2]") and not token_is_expired('{"expiresAt": true}')


# --- the factory ----------------------------------------------------------------------------------------------------


def test_make_storage(tmp_path: Path, redis_url: str) -> None:
    m = make_storage("memory", size=7, eviction="removeOldest")
    assert isinstance(m, MemoryStorage) and (m.size, m.eviction) == (7, "removeOldest")
    assert isinstance(make_storage("inMemory"), MemoryStorage)
    k = make_storage("VSAM", dataset=str(tmp_path / "f.ksds"), layout="zowe", key_length=64, record_length=1024)
    assert isinstance(k, KsdsStorage) and k.layout == "zowe" and (k.key_length, k.record_length) == (64, 1024)
    k.close()
    r = make_storage("redis", redis_url=redis_url)
    assert isinstance(r, RedisStorage)
    r.close()
    for kwargs, match in [
        (dict(mode="disk"), "storage mode must be one of ksds, memory, redis"),
        (dict(mode="ksds"), "needs dataset"),
        (dict(mode="redis"), "needs redis_url"),
        (dict(mode="memory", dataset="x"), "dataset: only for the ksds"),
        (dict(mode="redis", redis_url=redis_url, layout="zowe"), "layout: only for the ksds"),
        (dict(mode="ksds", dataset="x", redis_url=redis_url), "redis_url: only for the redis"),
        (dict(mode="memory", eviction="lru"), "eviction must be one of reject, removeOldest"),
        (dict(mode="memory", size=-1), "size must be"),
        (dict(mode="ksds", dataset=str(tmp_path / "g.ksds"), layout="json"), "layout must be one of"),
    ]:
        with pytest.raises(ValueError, match=match):
            make_storage(**kwargs)  # type: ignore[arg-type]


# --- Redis only -------------------------------------------------------------------------------------------------------


def test_redis_layout_is_zowes(redis_url: str) -> None:
    r = redis.Redis.from_url(url=redis_url)
    r.flushdb()
    s = RedisStorage(redis_url, size=10)
    s.create("gateway", KeyValue("key", "value", created="1700000000000"))
    assert r.hget("gateway", "key") == b'{"key":"key","value":"value","created":"1700000000000"}'  # Zowe's RedisEntry
    r.hset("gateway", "from-zowe", '{"key":"from-zowe","value":"é","serviceId":"gateway","created":"1"}')
    assert s.read("gateway", "from-zowe") == KeyValue("from-zowe", "é", "gateway", "1")
    assert set(s.read_for_service("gateway")) == {"key", "from-zowe"}
    assert s.count() == 1  # written behind its back: served, not counted
    s.delete_for_service("gateway")
    assert r.exists("gateway") == 0 and s.count() == 0
    # a caller whose DN was proven has Zowe's hash for its DN's string (a Redis that Zowe filled is served as is);
    # a service id alone that spells such a string gets a hash of its own and never reaches the DN's
    r.hset("CN=gw, SERVICE=x", "from-zowe", '{"key":"from-zowe","value":"v","serviceId":"CN=gw, SERVICE=x"}')
    dn_caller = Identity("CN=gw", "x")
    assert set(s.read_for_service(dn_caller)) == {"from-zowe"}
    assert s.read_for_service("CN=gw, SERVICE=x") == {}
    s.create(dn_caller, KeyValue("k", "dn"))
    s.create("CN=gw, SERVICE=x", KeyValue("k", "forger"))
    assert s.read(dn_caller, "k").value == "dn"
    assert r.hget(b"\0ksds:id:CN=gw, SERVICE=x", "k") is not None
    assert r.hlen("CN=gw, SERVICE=x") == 2
    s.close()


def test_redis_out_of_memory_is_507(redis_url: str) -> None:
    r = redis.Redis.from_url(url=redis_url)
    r.flushdb()
    s = RedisStorage(redis_url, size=0)
    s.create("svc", KeyValue("k", "v"))
    s.store_map_item("svc", "m", KeyValue("i", "v"))
    r.config_set("maxmemory", "1")
    try:
        assert status_of(lambda: s.create("svc", KeyValue("k2", "v"))) == (507, "ZWECS134E")
        assert status_of(lambda: s.update("svc", KeyValue("k", "v2"))) == (507, "ZWECS134E")
        assert status_of(lambda: s.store_map_item("svc", "m", KeyValue("j", "v"))) == (507, "ZWECS134E")
        assert s.read("svc", "k").value == "v"  # reads and deletes still work
        assert s.delete("svc", "k").value == "v"
    finally:
        r.config_set("maxmemory", "0")
    assert s.count() == 0 and s.read_for_service("svc") == {}
    s.close()


# --- ksds only: configuration -----------------------------------------------------------------------------------------


def test_ksds_lengths_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CACHING_STORAGE_VSAM_KEYLENGTH", raising=False)
    monkeypatch.delenv("CACHING_STORAGE_VSAM_RECORDLENGTH", raising=False)
    assert ksds_config_from_env() == (None, None)
    s = KsdsStorage(str(tmp_path / "default.ksds"))
    assert (s.key_length, s.record_length, s.layout) == (128, 4096, "native")  # Zowe's defaults
    s.close()
    monkeypatch.setenv("CACHING_STORAGE_VSAM_KEYLENGTH", "64")
    monkeypatch.setenv("CACHING_STORAGE_VSAM_RECORDLENGTH", "1024")
    assert ksds_config_from_env() == (64, 1024)
    s = KsdsStorage(str(tmp_path / "env.ksds"))
    assert (s.key_length, s.record_length) == (64, 1024)
    s.close()
    with pytest.raises(ValueError, match="has key_length 128, but 64 is configured"):
        KsdsStorage(str(tmp_path / "default.ksds"))
    s = KsdsStorage(str(tmp_path / "default.ksds"), 128, 4096)  # arguments win over the environment
    s.close()
    monkeypatch.setenv("CACHING_STORAGE_VSAM_KEYLENGTH", "many")
    with pytest.raises(ValueError, match="CACHING_STORAGE_VSAM_KEYLENGTH must be a positive integer"):
        ksds_config_from_env()
    monkeypatch.delenv("CACHING_STORAGE_VSAM_KEYLENGTH")
    monkeypatch.delenv("CACHING_STORAGE_VSAM_RECORDLENGTH")
    with pytest.raises(ValueError, match="key_length 30 is too short for the native layout: at least 34"):
        KsdsStorage(str(tmp_path / "short.ksds"), 30, 512)
    with pytest.raises(ValueError, match="key_length 22 is too short for the zowe layout: at least 23"):
        KsdsStorage(str(tmp_path / "short.ksds"), 22, 512, layout="zowe")
    with pytest.raises(ValueError, match="record_length 200 is too short for key_length 128: at least 272"):
        KsdsStorage(str(tmp_path / "short.ksds"), 128, 200)
    assert not (tmp_path / "short.ksds").exists()
    with pytest.raises(ValueError, match="holds the native layout, not zowe"):
        KsdsStorage(str(tmp_path / "default.ksds"), layout="zowe")
    s = KsdsStorage(str(tmp_path / "default.ksds"))  # nothing configured: the data set's own lengths
    assert (s.key_length, s.record_length) == (128, 4096)
    s.close()


@pytest.mark.parametrize("layout", ["native", "zowe"])
def test_ksds_payload_too_large(tmp_path: Path, layout: str) -> None:
    s = KsdsStorage(str(tmp_path / "c.ksds"), 64, 512, layout=layout, size=10)
    s.create("svc", KeyValue("fits", "x" * 300))
    with pytest.raises(StorageError) as e:
        s.create("svc", KeyValue("big", "x" * 600))
    assert (e.value.status, e.value.message.number) == (400, "ZWECS137E")
    assert "and a record holds at most 512" in str(e.value)
    assert status_of(lambda: s.create("svc", KeyValue("x" * 600, "v"))) == (400, "ZWECS137E")
    assert status_of(lambda: s.update("svc", KeyValue("fits", "x" * 600))) == (400, "ZWECS137E")
    assert status_of(lambda: s.store_map_item("svc", "m", KeyValue("big", "x" * 600))) == (400, "ZWECS137E")
    assert s.read("svc", "fits").value == "x" * 300 and s.count() == 1
    # the largest value that fits is stored whole
    n = 300
    while True:
        try:
            s.update("svc", KeyValue("fits", "y" * (n + 1), created="1"))
        except StorageError:
            break
        n += 1
    assert s.read("svc", "fits").value == "y" * n
    s.close()


# --- ksds only: the zowe layout byte for byte ------------------------------------------------------------------


def raw_records(path: str) -> list[bytes]:
    with ksds.open(path, "r", sharing="nonrls") as ds:
        return list(ds)


def test_zowe_layout_reproduces_the_reference_vector(tmp_path: Path) -> None:
    """VsamKeyTest / VsamRecordTest: keyLength 30, recordLength 512, IBM-1047; "Service" / "key"."""
    path = str(tmp_path / "zowe.ksds")
    s = KsdsStorage(path, 30, 512, layout="zowe")
    s.create("Service", KeyValue("key", "value", created="1700000000000"))
    s.close()
    expected = (
        "-646160747:106079".ljust(30)
        + '{"key":"key","value":"value","serviceId":"Service","created":"1700000000000"}'
    ).ljust(512).encode("cp1047")
    entries = [r for r in raw_records(path) if r[:1] != b"\0"]
    assert entries == [expected]
    assert expected[:30] == b"\x60\xf6\xf4\xf6\xf1\xf6\xf0\xf7\xf4\xf7\x7a\xf1\xf0\xf6\xf0\xf7\xf9" + b"\x40" * 13
    assert expected == zowe.encode_record(
        "Service", zowe.KeyValue("key", "value", "Service", "1700000000000"), key_length=30, record_length=512
    )
    # every record of ours has a key starting X'00', where no Zowe key starts
    assert all(r[:1] == b"\0" for r in raw_records(path) if r != expected)


def test_zowe_parse_vector_served(tmp_path: Path) -> None:
    """VsamRecordTest's parse vector, put in a data set as Zowe would have it, is served."""
    path = str(tmp_path / "zowe.ksds")
    ksds.define(path, key_length=30, record_length=512, ci_size=4096)
    with ksds.open(path) as ds:
        ds.write('-646160747:106079             {"key":"daisy","value":"flower"}'.ljust(512).encode("cp1047"))
    s = KsdsStorage(path, layout="zowe")
    assert s.count() == 1
    got = s.read_for_service("Service")
    assert got == {"daisy": KeyValue("daisy", "flower", "Service", "")}
    s.close()


def zowe_unload(path: str, entries: list[tuple[str, KeyValue]]) -> None:
    """A data set as REPRO of a Zowe caching data set leaves it: Zowe's records only."""
    ksds.define(path, key_length=128, record_length=4096, ci_size=18432)
    with ksds.open(path) as ds:
        recs = sorted(
            zowe.encode_record(sid, zowe.KeyValue(kv.key, kv.value, sid, kv.created)) for sid, kv in entries
        )
        for r in recs:
            ds.write(r)


def test_zowe_unload_is_read_and_served(tmp_path: Path) -> None:
    path = str(tmp_path / "unload.ksds")
    entries = [(sid, KeyValue(f"{sid}-k{i}", f"v{i}", created=str(1000 + 10 * i + j)))
               for j, sid in enumerate([LEAK_A, LEAK_B, "Aa", "gateway"]) for i in range(5)]
    zowe_unload(path, entries)
    s = KsdsStorage(path, layout="zowe", size=20, eviction="removeOldest")
    assert s.count() == 20
    assert s.audit() == {"entries": 20, "time_index": 20, "slots": 20, "map_items": 0, "counter": 20}
    # no prefix leak: LEAK_B's hash starts with LEAK_A's digits, and Zowe's readForService(LEAK_A) returns both
    assert set(s.read_for_service(LEAK_A)) == {f"{LEAK_A}-k{i}" for i in range(5)}
    assert set(s.read_for_service(LEAK_B)) == {f"{LEAK_B}-k{i}" for i in range(5)}
    assert s.read("gateway", "gateway-k3") == KeyValue("gateway-k3", "v3", "gateway", "1033")
    s.delete_for_service(LEAK_A)
    assert len(s.read_for_service(LEAK_B)) == 5 and s.count() == 15
    for i in range(6):
        s.create("new", KeyValue(f"n{i}", "v", created=str(2000 + i)))
    # 21 entries for 20 places: the oldest left (LEAK_B's k0, created 1001) went
    assert s.count() == 20
    assert status_of(lambda: s.read(LEAK_B, f"{LEAK_B}-k0")) == (404, "ZWECS131E")
    s.close()
    s = KsdsStorage(path, layout="zowe")  # reopened: the bookkeeping is not rebuilt, it is there
    assert s.audit() == {"entries": 20, "time_index": 20, "slots": 20, "map_items": 0, "counter": 20}
    s.close()
    with ksds.open(path) as ds:  # more of Zowe's records REPRO'd in behind the storage's back
        ds.write(zowe.encode_record("late", zowe.KeyValue("k", "v", "late", "1")))
    s = KsdsStorage(path, layout="zowe")
    assert s.count() == 20 and s.read("late", "k").value == "v"
    assert s.rebuild() == 21
    assert s.audit() == {"entries": 21, "time_index": 21, "slots": 21, "map_items": 0, "counter": 21}
    s.delete("late", "k")
    assert s.count() == 20
    s.close()
    # and what we wrote is still Zowe's layout: every entry record decodes as Zowe would
    for r in raw_records(path):
        if r[:1] != b"\0":
            rec = zowe.decode(r)
            assert rec.consistent and rec.entry.service_id


# --- ksds only: reopening ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout,durability", [("native", "process"), ("native", "power"), ("zowe", "process")])
def test_ksds_survives_close_and_reopen(tmp_path: Path, layout: str, durability: str) -> None:
    path = str(tmp_path / "c.ksds")
    s = KsdsStorage(path, layout=layout, size=4, eviction="removeOldest", durability=durability)
    for k in ("a", "b", "c"):
        s.create("svc", KeyValue(k, f"value {k}", created="5"))
    s.store_map_item("svc", "invalidTokens", KeyValue("t", "x"))
    s.close()
    s = KsdsStorage(path, layout=layout, size=4, eviction="removeOldest")
    assert s.count() == 3
    assert s.read("svc", "b") == KeyValue("b", "value b", "svc", "5")
    assert s.get_all_maps("svc") == {"invalidTokens": {"t": "x"}}
    s.create("svc", KeyValue("d", "v", created="5"))
    s.create("svc", KeyValue("e", "v", created="5"))  # the sequence goes on across opens: "a" is the oldest
    assert set(s.read_for_service("svc")) == {"b", "c", "d", "e"}
    a = s.audit()
    assert a["entries"] == a["time_index"] == a["counter"] == 4
    s.close()
    s = KsdsStorage(path, layout=layout, size=2, eviction="removeOldest")  # reopened with a smaller limit
    s.create("svc", KeyValue("f", "v", created="6"))  # evicts down to the limit: b, c and d go
    assert set(s.read_for_service("svc")) == {"e", "f"} and s.count() == 2
    s.close()
    assert ksds.examine(path).sound


# --- ksds only: several processes ----------------------------------------------------------------------------


WORKER = """
import json, os, sys, time
from ksds.caching.ksds_storage import KsdsStorage
from ksds.caching.model import KeyValue, StorageError
path, who, n, size, eviction, layout, go = sys.argv[1:8]
s = KsdsStorage(path, 128, 1024, layout=layout, size=int(size), eviction=eviction, lock_timeout=60)
while not os.path.exists(go):
    time.sleep(0.002)
ok = full = 0
for i in range(int(n)):
    try:
        s.create(f"svc{i % 3}", KeyValue(f"{who}-{i}", "v" * 40, created=str(1000 + i)))
        ok += 1
    except StorageError as e:
        assert e.status == 507, e
        full += 1
    assert s.count() <= int(size)
    print(who, i, flush=True)
s.close()
print(json.dumps({"ok": ok, "full": full}))
"""


def start(body: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(body), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def finish(p: subprocess.Popen[str]) -> str:
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, f"exit {p.returncode}\n{out[-2000:]}\n{err[-4000:]}"
    return out


@pytest.mark.parametrize("eviction", ["reject", "removeOldest"])
@pytest.mark.parametrize("layout", ["native", "zowe"])
def test_processes_share_the_size_limit(tmp_path: Path, eviction: str, layout: str) -> None:
    """3 processes create 150 entries each, at once, on one new data set (they race to define it too)."""
    path, go = str(tmp_path / "shared.ksds"), str(tmp_path / "go")
    procs = [start(WORKER, path, f"p{w}", "150", "15", eviction, layout, go) for w in range(3)]
    time.sleep(0.3)
    Path(go).touch()
    results = [json.loads(finish(p).splitlines()[-1]) for p in procs]
    s = KsdsStorage(path, layout=layout)
    if eviction == "reject":
        assert sum(r["ok"] for r in results) == 15 and sum(r["full"] for r in results) == 435
    else:
        assert sum(r["ok"] for r in results) == 450
    assert s.count() == 15
    assert s.audit() == {"entries": 15, "time_index": 15, "slots": 15 if layout == "zowe" else 0,
                         "map_items": 0, "counter": 15}
    assert sum(len(s.read_for_service(f"svc{j}")) for j in range(3)) == 15
    s.close()
    assert ksds.examine(path).sound


MIXED = """
import os, random, sys, time
from ksds.caching.ksds_storage import KsdsStorage
from ksds.caching.model import KeyValue, StorageError
path, who, go = sys.argv[1:4]
s = KsdsStorage(path, 128, 1024, size=12, eviction="removeOldest", lock_timeout=60)
rnd = random.Random(who)
while not os.path.exists(go):
    time.sleep(0.002)
for i in range(400):
    sid, key = f"svc{rnd.randrange(2)}", f"k{rnd.randrange(20)}"
    op = rnd.randrange(6)
    try:
        if op < 3:
            s.create(sid, KeyValue(key, who, created=str(rnd.randrange(50))))
        elif op == 3:
            s.update(sid, KeyValue(key, who, created=str(rnd.randrange(50))))
        elif op == 4:
            s.delete(sid, key)
        elif i % 50 == 5:
            s.delete_for_service(sid)
        else:
            s.store_map_item(sid, "m", KeyValue(key, who))
    except StorageError as e:
        assert e.status in (404, 409), e
    assert s.count() <= 12
s.close()
"""


def test_processes_mixed_work_keeps_the_bookkeeping_exact(tmp_path: Path) -> None:
    path, go = str(tmp_path / "mixed.ksds"), str(tmp_path / "go")
    KsdsStorage(path, 128, 1024, size=12, eviction="removeOldest").close()
    procs = [start(MIXED, path, f"p{w}", go) for w in range(3)]
    time.sleep(0.3)
    Path(go).touch()
    for p in procs:
        finish(p)
    s = KsdsStorage(path)
    a = s.audit()
    assert a["entries"] == a["time_index"] == a["counter"] == s.count() <= 12
    assert sum(len(s.read_for_service(f"svc{j}")) for j in range(2)) == a["entries"]
    s.close()
    assert ksds.examine(path).sound


KILLED = """
import sys
from ksds.caching.ksds_storage import KsdsStorage
from ksds.caching.model import KeyValue
path, who = sys.argv[1:3]
s = KsdsStorage(path, 128, 1024, size=0, lock_timeout=60)
i = 0
while True:
    s.create("svc", KeyValue(f"{who}-{i}", "acknowledged", created=str(i)))
    if i % 7 == 0:
        s.update("svc", KeyValue(f"{who}-{i}", "updated", created=str(i)))
    print(i, flush=True)
    i += 1
"""


def test_killed_process_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Two writers; one is killed with SIGKILL at some point of its work; the other goes on undisturbed."""
    path = str(tmp_path / "kill.ksds")
    KsdsStorage(path, 128, 1024, size=0).close()
    victim = start(KILLED, path, "victim")
    survivor = start(KILLED, path, "survivor")
    acked = -1
    assert victim.stdout is not None
    while acked < 150:
        line = victim.stdout.readline()
        assert line, victim.stderr.read() if victim.stderr else ""
        acked = int(line)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    time.sleep(0.3)  # the survivor carries on past the death
    survivor.send_signal(signal.SIGKILL)
    survivor.wait()
    s = KsdsStorage(path)
    got = s.read_for_service("svc")
    for i in range(acked + 1):
        assert got[f"victim-{i}"].value == ("updated" if i % 7 == 0 else "acknowledged")
    assert sum(k.startswith("survivor-") for k in got) > 0
    a = s.audit()
    assert a["entries"] == a["time_index"] == a["counter"] == len(got)
    s.close()
    assert ksds.examine(path).sound


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_crash_inside_a_create_leaves_it_whole_or_absent(tmp_path: Path, n: int) -> None:
    """Killed right after the n-th transaction's log write: that create is there whole (it committed) and the
    counter, the time index and the entries agree."""
    path = str(tmp_path / "crash.ksds")
    KsdsStorage(path, 128, 1024, size=0).close()  # the bootstrap transaction is done before the crash counts
    env = dict(os.environ, KSDS_FAULTS=f"point=log-written;crash={n}")
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED), path, "c"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr
    acked = len(p.stdout.split())
    s = KsdsStorage(path)
    got = s.read_for_service("svc")
    assert acked <= len(got) <= acked + 1
    a = s.audit()
    assert a["entries"] == a["time_index"] == a["counter"] == len(got)
    s.close()
    assert ksds.examine(path).sound


HOLDER = """
import sys, time
import ksds
from ksds.caching.ksds_storage import COUNTER
ds = ksds.open(sys.argv[1], sharing="rls")
ds.read(COUNTER.ljust(ds.key_length, b"\\0"), update=True)  # a stuck process holding the counter's lock
open(sys.argv[2], "w").close()
time.sleep(30)
"""


def test_a_stuck_process_delays_changes_not_reads(tmp_path: Path) -> None:
    path, ready = str(tmp_path / "stuck.ksds"), str(tmp_path / "ready")
    s = KsdsStorage(path, 128, 1024, lock_timeout=0.5)
    s.create("svc", KeyValue("k", "v"))
    s.store_map_item("svc", "m", KeyValue("i", "v"))
    holder = start(HOLDER, path, ready)
    try:
        while not os.path.exists(ready):
            assert holder.poll() is None, holder.communicate()
            time.sleep(0.01)
        t0 = time.monotonic()
        with pytest.raises(StorageError) as e:
            s.create("svc", KeyValue("k2", "v"))  # 503 ZWECS703W: not ready to write at the moment
        assert (e.value.status, e.value.message.number) == (503, "ZWECS703W")
        assert "RecordLockedError" in str(e.value)
        assert 0.4 < time.monotonic() - t0 < 3
        assert s.read("svc", "k").value == "v" and set(s.read_for_service("svc")) == {"k"} and s.count() == 1
        s.store_map_item("svc", "m", KeyValue("j", "v"))  # maps do not need the counter
        holder.send_signal(signal.SIGKILL)  # its lock dies with it
        holder.wait()
        s.create("svc", KeyValue("k2", "v"))
        assert s.count() == 2
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        s.close()
