"""ksds zowe-records: decode a data set in the Zowe caching service's VSAM layout (see :mod:`ksds.zowe`)."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any

from .. import dataset, zowe
from ._common import ERROR, OK, WARNING, CliError, Subparsers, add_verb, check_encoding, show_key

EXAMPLES = """
  ksds zowe-records cache.ksds
  ksds zowe-records cache.ksds --json | jq '.[] | select(.service == "gateway")'
the data set is the caching service's: KEYS(128 0) RECSZ(4096 4096) in IBM-1047 by default; any key length of
23 or more at offset 0 works (Zowe's caching.storage.vsam.keyLength / recordLength).
exit status: 0 every record decoded; 4 some keys do not match their entry (hash collisions, foreign records);
8 some records are not in the layout
"""

COLUMNS = (("SERVICE", 24), ("KEY", 28), ("VALUE", 40), ("CREATED", 24))


def register(sub: Subparsers) -> None:
    p = add_verb(
        sub,
        "zowe-records",
        "decode the Zowe caching service's records (service, key, value, created)",
        "Decode every record of a data set written by the Zowe API ML caching service's VSAM storage: the key "
        "(Java hashCode of the service id and of the key), the JSON entry after it (key, value, serviceId, "
        "created in epoch milliseconds). A record whose key hashes do not match its entry is flagged.",
        EXAMPLES,
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument("--json", action="store_true", help="a JSON array of the records")
    p.add_argument(
        "--encoding", default=zowe.ENCODING, metavar="CODEPAGE", help="code page (default cp1047 = IBM-1047)"
    )
    p.set_defaults(func=run)


def created_iso(created: str | None) -> str | None:
    if not created:
        return None
    try:
        ms = int(created)
        t = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    except (ValueError, OverflowError, OSError):
        return None
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _cut(s: str, width: int) -> str:
    s = s.replace("\n", "\\n").replace("\t", "\\t")
    return s if len(s) <= width else s[: width - 1] + "~"


def run(args: argparse.Namespace) -> int:
    encoding = check_encoding(args.encoding)
    rows: list[dict[str, Any]] = []
    bad = 0
    mismatched = 0
    with dataset.open(args.path, "r") as ds:
        kl = ds.key_length
        if ds.key_offset != 0 or kl < zowe.MIN_KEY_LENGTH:
            raise CliError(
                f"{args.path} has KEYS({kl} {ds.key_offset}); the Zowe layout has the key at offset 0 and "
                f"{zowe.MIN_KEY_LENGTH} or more bytes long (KEYS(128 0))"
            )
        for rec in ds:
            vkey = ds.key_of(rec)
            try:
                r = zowe.decode(rec, key_length=kl, encoding=encoding)
            except zowe.ZoweLayoutError as err:
                bad += 1
                print(f"ksds zowe-records: record {show_key(vkey, encoding)}: {err}", file=sys.stderr)
                continue
            if not r.consistent:
                mismatched += 1
            e = r.entry
            rows.append(
                {
                    "vsam_key": r.key_text,
                    "service": e.service_id,
                    "service_hash": r.service_hash,
                    "key": e.key,
                    "value": e.value,
                    "created": e.created,
                    "created_iso": created_iso(e.created),
                    "consistent": r.consistent,
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        print("  ".join(name.ljust(w) for name, w in COLUMNS).rstrip())
        for row in rows:
            service = row["service"] or f"#{row['service_hash']}"
            cells = (service, row["key"], row["value"], row["created_iso"] or row["created"] or "")
            flag = "" if row["consistent"] else "  ! key hash does not match"
            print("  ".join(_cut(str(v), w).ljust(w) for v, (_, w) in zip(cells, COLUMNS, strict=True)).rstrip() + flag)
        print(f"{len(rows)} records decoded, {mismatched} with keys that do not match, {bad} not in the layout")
    if bad:
        return ERROR
    return WARNING if mismatched else OK
