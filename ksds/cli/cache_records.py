"""ksds cache-records: what a data set served by ``ksds serve`` holds in ksds's native layout (its callers, their
entries' count, bytes, oldest and newest entry, and the entries of one caller).

The native layout keys an entry by digests (``X'00' 'E' + blake2b-128(partition) + blake2b-128(key)``, see
:mod:`ksds.caching.ksds_storage`), so the callers cannot be read back from the keys: they are what each entry
record stores (its ``serviceId``, Zowe's string of the caller, and ``dn``, the DN a caller proved), and each record
is checked against its key: a record whose stored caller and key do not digest to its key is counted as
mismatched (a digest collision, or a record written by something else), and one that is not an entry's JSON as
undecodable. Map items (``X'00' 'M'``) are counted by the caller they store, checked the same way.

It reads the data set as LISTCAT does: opened for reading when nothing else has it open, else (``ksds serve``
running on it) read without opening it, from the file and the committed transactions of its log
(:mod:`ksds.wal_view`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from ..caching.common import created_order
from ..caching.ksds_storage import COUNTER, DIGEST, ENTRY, MAP, MIN_KEY_LENGTH, TIME
from ..caching.model import Identity, caller_dn, partition_key
from ._common import ERROR, OK, WARNING, CliError, Subparsers, add_verb
from ._reader import Reader, open_reader
from .zowe_records import created_iso

EXAMPLES = """
  ksds cache-records cache.ksds                                   (every caller: entries, bytes, oldest, newest)
  ksds cache-records cache.ksds --service gateway                 (and the entries of X-CS-Service-ID gateway)
  ksds cache-records cache.ksds --dn 'CN=client-a,OU=Zowe,O=ACME\\, Inc.,C=US'
  ksds cache-records cache.ksds --dn 'CN=client-a,O=ACME' --service gw --json
a caller is named as the service identifies it: --service ID alone is a caller with no proven DN (the
X-CS-Service-ID header alone); --dn DN, with or without --service ID, a caller that proved DN (a verified client
certificate, whose DN is Java's RFC 2253 form, or a DN header the server trusts) exactly as the entries store it
(the DN part of their serviceId). Entries are keyed by digests of the caller and key, so the callers are what the
records store, checked against their keys. Works while ksds serve has the data set open.
exit status: 0 every record decoded and consistent; 4 some records do not match their key (digest collisions,
foreign records); 8 some records in the entries' key range are not entries; 12 not a native-layout data set
"""

ENTRY_COLUMNS = (("KEY", 28), ("VALUE", 40), ("CREATED", 24), ("SEQ", 8))
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HEAD = 8 + 4  # an entry record after its key: seq (u64), JSON length (u32)
_SERVICE = ", SERVICE="


def register(sub: Subparsers) -> None:
    p = add_verb(
        sub,
        "cache-records",
        "show what a data set served by ksds serve holds (native layout: callers, entries)",
        "Show the callers whose entries a caching-service data set in ksds's native layout holds, each with its "
        "entries' count and bytes, its oldest and newest entry and its map items; with --service and/or --dn, "
        "also that caller's entries. The callers are what the entry records store (the layout keys them by "
        "digests), each record checked against its key. (zowe-records decodes Zowe's layout.)",
        EXAMPLES,
    )
    p.add_argument("path", metavar="DATASET")
    p.add_argument("--service", metavar="ID", help="the entries of the caller with this service id "
                   "(X-CS-Service-ID); with --dn, of that DN calling as this service id")
    p.add_argument("--dn", metavar="DN", help="the entries of the caller that proved this DN (as the entries "
                   "store it: Java's RFC 2253 form for a client certificate)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the listing")
    p.set_defaults(func=run)


def _digest(text: str, size: int) -> bytes:
    """As :mod:`ksds.caching.ksds_storage` digests partitions and keys."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=size).digest()


def _json(data: bytes) -> Any:
    try:
        text = data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        text = data.decode("utf-8", "replace")
    return json.loads(text)


def caller_of(service_id: str, dn: str | None) -> str:
    """The caller a record stores (its ``serviceId`` and ``dn``) as the storage is given it: a service id alone
    (a plain str) or an :class:`~ksds.caching.model.Identity`. ValueError if the two do not go together."""
    if dn is None:
        return service_id
    if service_id == dn:
        return Identity(dn, None)
    if service_id.startswith(dn + _SERVICE):
        return Identity(dn, service_id[len(dn) + len(_SERVICE) :])
    raise ValueError(f"serviceId {service_id!r} is not the DN {dn!r}, with or without a service id")


def describe(caller: str) -> dict[str, str | None]:
    """``{"service_id", "dn", "service"}``: Zowe's string, the proven DN, the service id (None where absent)."""
    if isinstance(caller, Identity):
        return {"service_id": str(caller), "dn": caller.dn, "service": caller.service}
    return {"service_id": str(caller), "dn": None, "service": str(caller)}


@dataclass
class Caller:
    """What one caller has in the data set."""

    caller: str
    entries: list[dict[str, Any]] = field(default_factory=list)
    value_bytes: int = 0
    map_items: int = 0

    def summary(self, record_length: int) -> dict[str, Any]:
        order = sorted(self.entries, key=lambda e: (created_order(e["created"]), e["seq"]))
        pick = ("key", "created", "created_iso")
        return {
            **describe(self.caller),
            "entries": len(self.entries),
            "value_bytes": self.value_bytes,
            "record_bytes": len(self.entries) * record_length,
            "map_items": self.map_items,
            "oldest": {k: order[0][k] for k in pick} if order else None,
            "newest": {k: order[-1][k] for k in pick} if order else None,
        }


@dataclass
class Scan:
    callers: dict[tuple[str, str | None], Caller] = field(default_factory=dict)
    mismatched: list[str] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)
    time_index: int = 0

    def of(self, caller: str) -> Caller:
        got = self.callers.get((str(caller), caller_dn(caller)))
        if got is None:
            got = self.callers[(str(caller), caller_dn(caller))] = Caller(caller)
        return got


def _prefixed(ds: Reader, prefix: bytes) -> Any:
    for rec in ds.browse(prefix):
        if not rec.startswith(prefix):
            return
        yield rec


def _scan(ds: Reader, only: str | None) -> Scan:
    kl = ds.key_length
    md = min(DIGEST, (kl - 2) // 3)
    scan = Scan()
    start = ENTRY if only is None else ENTRY + _digest(partition_key(only), DIGEST)
    for rec in _prefixed(ds, start):
        key = rec[:kl]
        try:
            (seq,) = _U64.unpack_from(rec, kl)
            (n,) = _U32.unpack_from(rec, kl + 8)
            obj = _json(rec[kl + _HEAD : kl + _HEAD + n])
            sid, dn, k, v, created = obj["serviceId"], obj.get("dn"), obj["key"], obj["value"], obj["created"]
            if not all(isinstance(x, str) for x in (sid, k, v, created)) or not (dn is None or isinstance(dn, str)):
                raise TypeError("not strings")
            caller = caller_of(sid, dn)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError, struct.error):
            scan.undecodable.append(key.hex())
            continue
        if key != (ENTRY + _digest(partition_key(caller), DIGEST) + _digest(k, DIGEST)).ljust(kl, b"\0"):
            scan.mismatched.append(key.hex())
            continue
        if only is not None and (str(caller), caller_dn(caller)) != (str(only), caller_dn(only)):
            continue  # another caller's partition digest is this one's: never shown as this caller's
        c = scan.of(caller)
        c.entries.append({"key": k, "value": v, "created": created, "created_iso": created_iso(created), "seq": seq})
        c.value_bytes += len(v.encode("utf-8", "surrogatepass"))
    if only is None:
        scan.time_index = sum(1 for _ in _prefixed(ds, TIME))
    for rec in _prefixed(ds, MAP if only is None else MAP + _digest(partition_key(only), md)):
        try:
            (n,) = _U32.unpack_from(rec, kl)
            obj = _json(rec[kl + 4 : kl + 4 + n])
            caller = caller_of(obj["serviceId"], obj.get("dn"))
            m, k = obj["mapKey"], obj["key"]
            if not (isinstance(m, str) and isinstance(k, str)):
                raise TypeError("not strings")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError, struct.error):
            scan.undecodable.append(rec[:kl].hex())
            continue
        want = MAP + _digest(partition_key(caller), md) + _digest(m, md) + _digest(k, md)
        if rec[:kl] != want.ljust(kl, b"\0"):
            scan.mismatched.append(rec[:kl].hex())
            continue
        if only is None or (str(caller), caller_dn(caller)) == (str(only), caller_dn(only)):
            scan.of(caller).map_items += 1
    return scan


def _selected(args: argparse.Namespace) -> str | None:
    if args.dn is not None:
        return Identity(args.dn, args.service)
    return args.service  # type: ignore[no-any-return]


def _counter(ds: Reader) -> dict[str, Any] | None:
    kl = ds.key_length
    for rec in _prefixed(ds, COUNTER.ljust(kl, b"\0")):
        try:
            (n,) = _U32.unpack_from(rec, kl)
            obj = _json(rec[kl + 4 : kl + 4 + n])
            return {"layout": str(obj["layout"]), "count": int(obj["count"]), "seq": int(obj["seq"])}
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError, struct.error):
            return {"layout": None, "count": None, "seq": None}
    return None


def _cut(s: str, width: int) -> str:
    s = s.replace("\n", "\\n").replace("\t", "\\t")
    return s if len(s) <= width else s[: width - 1] + "~"


def _who(d: dict[str, Any]) -> str:
    if d["dn"] is None:
        return f"service {d['service']!r}"
    return f"DN {d['dn']!r}" + ("" if d["service"] is None else f" as service {d['service']!r}")


def _when(e: dict[str, Any] | None) -> str:
    if e is None:
        return "-"
    return f"{e['key']!r} {e['created_iso'] or e['created']}"


def run(args: argparse.Namespace) -> int:
    only = _selected(args)
    with open_reader(args.path) as ds:
        d = ds.definition
        if d.key_offset != 0 or d.key_length < MIN_KEY_LENGTH["native"]:
            raise CliError(f"{args.path} has KEYS({d.key_length} {d.key_offset}): not a caching-service data set "
                           f"in the native layout (keys at offset 0, {MIN_KEY_LENGTH['native']} or more bytes long)")
        counter = _counter(ds)
        if counter is not None and counter["layout"] == "zowe":
            raise CliError(f"{args.path} holds the caching service's zowe layout: ksds zowe-records decodes it")
        scan = _scan(ds, only)
        note = ds.note
    rl = d.record_length
    callers = sorted(scan.callers.values(), key=lambda c: (str(c.caller), caller_dn(c.caller) or ""))
    summaries = [c.summary(rl) for c in callers]
    doc: dict[str, Any] = {"path": args.path, "layout": "native"}
    if note is not None:
        doc["note"] = note
    if only is None:
        doc.update({
            "counter": counter,
            "entries": sum(s["entries"] for s in summaries),
            "value_bytes": sum(s["value_bytes"] for s in summaries),
            "map_items": sum(s["map_items"] for s in summaries),
            "time_index": scan.time_index,
            "mismatched": len(scan.mismatched),
            "undecodable": len(scan.undecodable),
            "callers": summaries,
        })
    else:
        mine = scan.callers.get((str(only), caller_dn(only))) or Caller(only)
        entries = sorted(mine.entries, key=lambda e: e["key"])
        doc.update({"caller": mine.summary(rl), "entries": entries,
                    "mismatched": len(scan.mismatched), "undecodable": len(scan.undecodable)})
    status = ERROR if scan.undecodable else WARNING if scan.mismatched else OK
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return status
    lines = [f"CACHE ------- {args.path} (native layout)"]
    if note is not None:
        lines.append(f"  NOTE: {note}")
    if only is None:
        count = "no counter record" if counter is None else f"counter {counter['count']}"
        lines.append(f"  {doc['entries']} entries ({count}, {scan.time_index} time-index records), "
                     f"{doc['value_bytes']} bytes of values, {doc['map_items']} map items, "
                     f"{len(callers)} callers")
        for s in summaries:
            lines.append(f"  {_who(s)}: {s['entries']} entries, {s['value_bytes']} bytes, {s['map_items']} map "
                         f"items; oldest {_when(s['oldest'])}, newest {_when(s['newest'])}")
    else:
        s = doc["caller"]
        lines.append(f"  {_who(s)}: {s['entries']} entries, {s['value_bytes']} bytes, {s['map_items']} map items; "
                     f"oldest {_when(s['oldest'])}, newest {_when(s['newest'])}")
        lines.append("  " + "  ".join(name.ljust(w) for name, w in ENTRY_COLUMNS).rstrip())
        for e in doc["entries"]:
            cells = (e["key"], e["value"], e["created_iso"] or e["created"], str(e["seq"]))
            lines.append("  " + "  ".join(_cut(str(v), w).ljust(w) for v, (_, w) in
                                          zip(cells, ENTRY_COLUMNS, strict=True)).rstrip())
    if scan.mismatched:
        lines.append(f"  {len(scan.mismatched)} records whose key is not the digests of the caller and key they "
                     "store (left out)")
    if scan.undecodable:
        lines.append(f"  {len(scan.undecodable)} records in the entries' or map items' key range that are not "
                     "entries or map items (left out)")
    print("\n".join(lines))
    return status
