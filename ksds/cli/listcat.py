"""ksds listcat: LISTCAT ALL for one data set, for a person or (--json) a program."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._common import OK, Subparsers, add_verb
from ._reader import open_reader

EXAMPLES = """
  ksds listcat cust.ksds
  ksds listcat cust.ksds --json | jq '.STATISTICS["SPLITS-CI"]'
"""

#: LISTCAT's groups; a statistic not named here is shown under STATISTICS
GROUPS: dict[str, tuple[str, ...]] = {
    "ATTRIBUTES": ("KEYLEN", "RKP", "AVGLRECL", "MAXLRECL", "CISIZE", "CI/CA", "RECORDS/CI", "SHROPTNS"),
    "STATISTICS": (
        "REC-TOTAL",
        "REC-DELETED",
        "REC-INSERTED",
        "REC-UPDATED",
        "REC-RETRIEVED",
        "SPLITS-CI",
        "SPLITS-CA",
        "FREESPACE-%CI",
        "FREESPACE-%CA",
        "FREESPC",
        "EXCPS",
    ),
    "ALLOCATION": ("HI-A-RBA", "HI-U-RBA", "CAS", "DATA-CIS", "FREE-CIS"),
    "INDEX": ("LEVELS", "INDEX-CIS", "HI-LEVEL-RBA"),
}
FIELD_WIDTH = 28
PER_LINE = 3


def register(sub: Subparsers) -> None:
    p = add_verb(
        sub,
        "listcat",
        "show the definition and statistics (LISTCAT ALL)",
        "Show the data set's attributes and LISTCAT ALL statistics, grouped as LISTCAT groups them "
        "(ATTRIBUTES, STATISTICS, ALLOCATION, INDEX). --json gives the same as one JSON object, plus the "
        'definition under "definition".',
        EXAMPLES,
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the listing")
    p.set_defaults(func=run)


def grouped(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}
    placed = set()
    for group, names in GROUPS.items():
        for name in names:
            if name in stats:
                out[group][name] = stats[name]
                placed.add(name)
    for name, value in stats.items():
        if name not in placed:
            out["STATISTICS"][name] = value
    return out


def _value(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        return "(" + ",".join(str(x) for x in v) + ")"
    return str(v)


def _json(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def field(name: str, value: Any) -> str:
    v = _value(value)
    return name + "-" * max(1, FIELD_WIDTH - len(name) - len(v)) + v


def run(args: argparse.Namespace) -> int:
    with open_reader(args.path) as ds:
        stats = ds.stats()
        aixes = ds.aixes()
        d = ds.definition
        recovery = ds.recovery
        note = ds.note
    groups = grouped(stats)
    if args.json:
        doc: dict[str, Any] = {
            "path": args.path,
            "definition": {
                "key_length": d.key_length,
                "key_offset": d.key_offset,
                "record_length": d.record_length,
                "ci_size": d.ci_size,
                "cis_per_ca": d.cis_per_ca,
                "freespace": list(d.freespace),
                "share_options": list(d.share_options),
                "records_per_ci": d.records_per_ci,
                "entries_per_index_ci": d.entries_per_index_ci,
            },
            **{g: {k: _json(v) for k, v in fields.items()} for g, fields in groups.items()},
        }
        if aixes:
            doc["alternate_indexes"] = {n: {k: _json(v) for k, v in a.items()} for n, a in aixes.items()}
        if recovery is not None:
            doc["recovered"] = str(recovery)
        if note is not None:
            doc["note"] = note
        print(json.dumps(doc, indent=2))
        return OK
    lines = [f"CLUSTER ------- {args.path}"]
    if note is not None:
        lines.append(f"  NOTE: {note}")
    for group, fields in groups.items():
        lines.append(f"  {group}")
        items = [field(k, v) for k, v in fields.items()]
        for i in range(0, len(items), PER_LINE):
            lines.append("    " + "    ".join(s.ljust(FIELD_WIDTH) for s in items[i : i + PER_LINE]).rstrip())
    for name, a in aixes.items():
        lines.append(f"AIX ----------- {name}")
        lines.append(f"  RELATE ------- {args.path}")
        attrs = {
            "KEYLEN": a["key_length"], "RKP": a["key_offset"], "AVGLRECL": a["record_length"],
            "UNIQUEKEY" if a["unique"] else "NONUNIQUEKEY": "", "UPGRADE" if a["upgrade"] else "NOUPGRADE": "",
            "CURRENT" if a["current"] else "NOT-CURRENT (BLDINDEX rebuilds it)": "", "FREESPACE": a["freespace"],
        }
        stats_a = {
            "REC-TOTAL": a["records"], "SPLITS-CI": a["splits_ci"], "SPLITS-CA": a["splits_ca"],
            "LEVELS": a["levels"], "DATA-CIS": a["data_cis"], "INDEX-CIS": a["index_cis"], "CAS": a["cas"],
        }
        for group, fields in (("ATTRIBUTES", attrs), ("STATISTICS", stats_a)):
            lines.append(f"  {group}")
            items = [field(k, v) if v != "" else k for k, v in fields.items()]
            for i in range(0, len(items), PER_LINE):
                lines.append("    " + "    ".join(s.ljust(FIELD_WIDTH) for s in items[i : i + PER_LINE]).rstrip())
    print("\n".join(lines))
    return OK
