"""``ksds cache-records``: what a caching-service data set holds in ksds's native layout, as real subprocesses.

Two data sets: one filled through the storage API (:class:`KsdsStorage`, then closed), one filled through a
running ``ksds serve`` and read while the server has it open (the live view of the committed log). The figures
(callers, entries, bytes, oldest and newest, map items) and the entries of one caller are checked, with callers
named as the service names them: a service id alone, a DN alone, a DN with a service id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import Servers

import ksds
from ksds.caching.ksds_storage import KsdsStorage
from ksds.caching.model import Identity, KeyValue

ENV = {k: v for k, v in os.environ.items() if k != "KSDS_FAULTS"}
DN_X = "CN=x,OU=Zowe,O=ACME\\, Inc.,C=US"


def cache_records(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ksds", "cache-records", *args], capture_output=True, text=True,
                          timeout=60, env=ENV)


def as_json(*args: str, status: int = 0) -> Any:
    r = cache_records(*args, "--json")
    assert r.returncode == status, (r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)


def by_caller(doc: dict[str, Any]) -> dict[tuple[str | None, str | None], dict[str, Any]]:
    return {(c["dn"], c["service"]): c for c in doc["callers"]}


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    """Entries of four callers, one of them a service id that spells another caller's DN string."""
    path = tmp_path / "cache.ksds"
    st = KsdsStorage(path)
    try:
        st.create("gw", KeyValue("a", "12345", created="1000"))
        st.create("gw", KeyValue("b", "é", created="3000"))  # 2 bytes in UTF-8
        st.create("gw", KeyValue("c", "", created="2000"))
        st.update("gw", KeyValue("a", "123", created="4000"))  # now the newest
        st.create(Identity(DN_X, None), KeyValue("k", "dn alone", created="1500"))
        st.create(Identity(DN_X, "gw"), KeyValue("k", "dn as gw", created="1600"))
        st.create(f"{DN_X}, SERVICE=gw", KeyValue("k", "forged", created="1700"))  # a service id alone
        st.store_map_item("gw", "rules", KeyValue("r1", "1"))
        st.store_map_item("gw", "rules", KeyValue("r2", "2"))
        st.store_map_item(Identity(DN_X, None), "tokens", KeyValue("t", "{}"))
    finally:
        st.close()
    return path


def test_a_data_set_filled_through_the_storage_api(filled: Path) -> None:
    doc = as_json(str(filled))
    assert doc["layout"] == "native" and "note" not in doc  # nothing has it open: opened for reading
    assert (doc["entries"], doc["value_bytes"], doc["map_items"], doc["time_index"]) == (6, 3 + 2 + 8 + 8 + 6, 3, 6)
    assert doc["counter"]["count"] == 6 and (doc["mismatched"], doc["undecodable"]) == (0, 0)
    callers = by_caller(doc)
    assert set(callers) == {(None, "gw"), (DN_X, None), (DN_X, "gw"), (None, f"{DN_X}, SERVICE=gw")}
    gw = callers[(None, "gw")]
    assert (gw["service_id"], gw["entries"], gw["value_bytes"], gw["map_items"]) == ("gw", 3, 5, 2)
    with ksds.open(str(filled), "r") as ds:
        assert gw["record_bytes"] == 3 * ds.definition.record_length
    assert (gw["oldest"]["key"], gw["oldest"]["created"]) == ("c", "2000")
    assert (gw["newest"]["key"], gw["newest"]["created_iso"]) == ("a", "1970-01-01T00:00:04.000Z")
    as_gw = callers[(DN_X, "gw")]
    assert as_gw["service_id"] == f"{DN_X}, SERVICE=gw" and as_gw["entries"] == 1
    assert callers[(DN_X, None)]["map_items"] == 1
    # the entries of one caller, named as the service names it
    assert [(e["key"], e["value"]) for e in as_json(str(filled), "--service", "gw")["entries"]] == [
        ("a", "123"), ("b", "é"), ("c", "")]
    assert [e["value"] for e in as_json(str(filled), "--dn", DN_X)["entries"]] == ["dn alone"]
    one = as_json(str(filled), "--dn", DN_X, "--service", "gw")
    assert [e["value"] for e in one["entries"]] == ["dn as gw"]
    assert (one["caller"]["dn"], one["caller"]["service"], one["caller"]["entries"]) == (DN_X, "gw", 1)
    forged = as_json(str(filled), "--service", f"{DN_X}, SERVICE=gw")
    assert [e["value"] for e in forged["entries"]] == ["forged"] and forged["caller"]["dn"] is None
    assert as_json(str(filled), "--service", "nobody")["entries"] == []
    # the listing
    r = cache_records(str(filled))
    assert r.returncode == 0, r.stderr
    assert "6 entries (counter 6, 6 time-index records), 27 bytes of values, 3 map items, 4 callers" in r.stdout
    assert "service 'gw': 3 entries, 5 bytes, 2 map items; oldest 'c' 1970-01-01T00:00:02.000Z, newest 'a'" in r.stdout
    r = cache_records(str(filled), "--dn", DN_X, "--service", "gw")
    assert r.returncode == 0 and "dn as gw" in r.stdout and "forged" not in r.stdout, r.stdout


def test_records_that_do_not_match_their_key(filled: Path) -> None:
    with ksds.open(str(filled)) as ds:
        kl = ds.definition.key_length
        entry = next(r for r in ds.browse(b"\0E", generic=True))
        ds.write(entry[: kl - 1] + b"\x01" + entry[kl:])  # the same entry at another key: a stray copy
    doc = as_json(str(filled), status=4)
    assert (doc["mismatched"], doc["undecodable"], doc["entries"]) == (1, 0, 6)
    with ksds.open(str(filled)) as ds:
        ds.write(b"\0E\xff".ljust(kl, b"\0") + b"not an entry".ljust(ds.definition.record_length - kl, b"\0"))
    doc = as_json(str(filled), status=8)
    assert (doc["mismatched"], doc["undecodable"], doc["entries"]) == (1, 1, 6)
    r = cache_records(str(filled))
    assert r.returncode == 8 and "1 records whose key is not the digests" in r.stdout, r.stdout


def test_not_the_native_layout(tmp_path: Path) -> None:
    path = tmp_path / "zowe.ksds"
    KsdsStorage(path, layout="zowe").close()
    r = cache_records(str(path))
    assert r.returncode == 12 and "zowe layout" in r.stderr and "zowe-records" in r.stderr, r.stderr
    ksds.define(str(tmp_path / "plain.ksds"), key_length=8, record_length=40)
    r = cache_records(str(tmp_path / "plain.ksds"))
    assert r.returncode == 12 and "KEYS(8 0)" in r.stderr, r.stderr


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(tmp_path)
    yield s
    s.stop_all()


def test_a_data_set_served_by_ksds_serve(servers: Servers, tmp_path: Path) -> None:
    path = tmp_path / "served.ksds"
    s = servers.start("--dataset", str(path), name="served")
    dn, sid = "X-Certificate-DistinguishedName", "X-CS-Service-ID"
    with s.client() as c:
        for i in range(5):
            r = c.post("/cache", json={"key": f"k{i}", "value": "v" * i}, headers={sid: "gw"})
            assert r.status_code == 201, r.text
        assert c.post("/cache", json={"key": "mine", "value": "x"}, headers={dn: DN_X}).status_code == 201
        assert c.post("/cache", json={"key": "mine", "value": "yy"}, headers={dn: DN_X, sid: "gw"}).status_code == 201
        assert c.delete("/cache/k0", headers={sid: "gw"}).status_code == 204
        assert c.post("/cache-list/m", json={"key": "i", "value": "1"}, headers={sid: "gw"}).status_code in (200, 201)
        created = {k: v["created"] for k, v in c.get("/cache", headers={sid: "gw"}).json().items()}
    # read while the server has the data set open: through the committed log
    doc = as_json(str(path))
    assert "open in another process" in doc["note"]
    assert (doc["entries"], doc["counter"]["count"], doc["map_items"]) == (6, 6, 1)
    callers = by_caller(doc)
    assert set(callers) == {(None, "gw"), (DN_X, None), (DN_X, "gw")}
    gw = callers[(None, "gw")]
    assert (gw["entries"], gw["value_bytes"], gw["map_items"]) == (4, 1 + 2 + 3 + 4, 1)
    assert gw["oldest"]["created"] == min(created.values(), key=int)
    assert gw["newest"]["created"] == max(created.values(), key=int)
    one = as_json(str(path), "--dn", DN_X, "--service", "gw")
    assert [(e["key"], e["value"]) for e in one["entries"]] == [("mine", "yy")]
    entries = as_json(str(path), "--service", "gw")["entries"]
    assert [(e["key"], e["value"], e["created"]) for e in entries] == [
        (f"k{i}", "v" * i, created[f"k{i}"]) for i in range(1, 5)]
    assert s.proc.poll() is None  # the server was not disturbed
    with s.client() as c:  # and what it serves next is seen next
        assert c.post("/cache", json={"key": "later", "value": "z"}, headers={dn: DN_X}).status_code == 201
    assert [e["key"] for e in as_json(str(path), "--dn", DN_X)["entries"]] == ["later", "mine"]
