"""ksds print: records as IDCAMS PRINT shows them (CHARACTER, HEX or DUMP)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from ._common import (
    DEFAULT_ENCODING,
    OK,
    CliError,
    Subparsers,
    add_verb,
    char_table,
    check_encoding,
    check_key,
    parse_key,
    whole_number,
)
from ._reader import Reader, open_reader

EXAMPLES = """
  ksds print cust.ksds                                   (DUMP: offset, hex and characters)
  ksds print cust.ksds --character --encoding cp037      (EBCDIC records as text)
  ksds print cust.ksds --hex --fromkey X'F0F0F1' --tokey X'F0F0F2' --count 10
  ksds print cust.ksds --fromkey 0001 --skip 5 --count 2
  ksds print cust.ksds --path BYNAME --fromkey SMITH --count 10   (in the order of alternate index BYNAME)
keys: text (written in --encoding) or hex as X'C1C2' or 0xC1C2; a shorter key is generic (--fromkey starts at
the first key at or after it, --tokey ends after the last key that starts with it).
"""

CHAR_WIDTH = 120  # CHARACTER: characters per line
HEX_WIDTH = 60  # HEX: bytes per line (120 hex digits)
DUMP_WIDTH = 32  # DUMP: bytes per line, in groups of 4


def register(sub: Subparsers) -> None:
    p = add_verb(
        sub,
        "print",
        "print records (PRINT CHARACTER | HEX | DUMP)",
        "Print records in key order as IDCAMS PRINT does: a 'KEY OF RECORD - <hex>' line, then the record as "
        "CHARACTER (text; unprintable bytes as '.'), HEX, or DUMP (offset, hex and characters; the default). Text "
        "is decoded in the code page --encoding (cp037, cp1047, cp500 for EBCDIC; latin-1, the default; ascii).",
        EXAMPLES,
    )
    p.add_argument("path", metavar="PATH")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--character", dest="format", action="store_const", const="character", help="records as text")
    fmt.add_argument("--hex", dest="format", action="store_const", const="hex", help="records in hexadecimal")
    fmt.add_argument("--dump", dest="format", action="store_const", const="dump", help="hex and text (default)")
    add_range_options(p)
    p.add_argument(
        "--encoding", default=DEFAULT_ENCODING, metavar="CODEPAGE", help="code page of the text (default latin-1)"
    )
    p.set_defaults(func=run, format="dump")


def add_range_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--path", dest="aix_path", metavar="NAME",
        help="in the order of alternate index NAME (a PATH): --fromkey and --tokey are then alternate keys",
    )
    p.add_argument("--fromkey", metavar="K", help="start at the first key >= K")
    p.add_argument("--tokey", metavar="K", help="stop after the last key <= K (or starting with K)")
    p.add_argument(
        "--skip", type=whole_number(p.prog, "--skip", 0), default=0, metavar="N", help="skip the first N records"
    )
    p.add_argument("--count", type=whole_number(p.prog, "--count", 0), metavar="N", help="at most N records")


def key_field(ds: Reader, args: argparse.Namespace) -> tuple[int, int]:
    """(offset, length) of the key the records go in the order of: the prime key, or the alternate key of
    ``--path``'s alternate index."""
    if args.aix_path is None:
        return ds.key_offset, ds.key_length
    info = ds.aixes().get(args.aix_path)
    if info is None:
        have = ", ".join(ds.aixes()) or "none"
        raise CliError(f"{ds.path} has no alternate index named {args.aix_path!r} (it has: {have})")
    return info["key_offset"], info["key_length"]


def key_range(ds: Reader, args: argparse.Namespace, encoding: str) -> tuple[bytes | None, bytes | None]:
    kl = key_field(ds, args)[1]
    lo = check_key(parse_key(args.fromkey, encoding), kl, "--fromkey", encoding) if args.fromkey is not None else None
    hi = check_key(parse_key(args.tokey, encoding), kl, "--tokey", encoding) if args.tokey is not None else None
    return lo, hi


def records(
    ds: Reader, lo: bytes | None, hi: bytes | None, skip: int, count: int | None, path: str | None = None
) -> Iterator[bytes]:
    """The records in key order (or in the order of alternate index ``path``) from ``lo`` (generic, at or after)
    to ``hi`` (generic, inclusive), after ``skip`` of them, at most ``count``."""
    if count == 0:
        return
    if path is None:
        it = ds.browse(lo)
        ko = ds.key_offset
    else:
        it = ds.browse_path(path, lo)
        ko = ds.aixes()[path]["key_offset"]
    n = len(hi) if hi is not None else 0
    out = 0
    for rec in it:
        if hi is not None and rec[ko : ko + n] > hi:
            break
        if skip:
            skip -= 1
            continue
        yield rec
        out += 1
        if count is not None and out >= count:
            break


def format_record(rec: bytes, key: bytes, fmt: str, table: list[str]) -> list[str]:
    lines = [f"KEY OF RECORD - {key.hex().upper()}"]
    if fmt == "character":
        text = "".join(table[b] for b in rec)
        lines += [text[i : i + CHAR_WIDTH] for i in range(0, len(text), CHAR_WIDTH)] or [""]
    elif fmt == "hex":
        lines += [rec[i : i + HEX_WIDTH].hex().upper() for i in range(0, len(rec), HEX_WIDTH)] or [""]
    else:
        for off in range(0, len(rec), DUMP_WIDTH):
            chunk = rec[off : off + DUMP_WIDTH]
            groups = " ".join(chunk[i : i + 4].hex().upper() for i in range(0, DUMP_WIDTH, 4))
            width = DUMP_WIDTH * 2 + DUMP_WIDTH // 4 - 1
            lines.append(f"{off:04X}  {groups.ljust(width)}  *{''.join(table[b] for b in chunk).ljust(DUMP_WIDTH)}*")
    lines.append("")
    return lines


def run(args: argparse.Namespace) -> int:
    encoding = check_encoding(args.encoding)
    table = char_table(encoding)
    n = 0
    out = sys.stdout
    with open_reader(args.path) as ds:
        if ds.note is not None:
            note = f"{ds.note} (records changed while it is read may or may not be shown)"
            print(f"ksds print: note: {note}", file=sys.stderr)
        lo, hi = key_range(ds, args, encoding)
        ko, kl = ds.key_offset, ds.key_length
        for rec in records(ds, lo, hi, args.skip, args.count, args.aix_path):
            out.write("\n".join(format_record(rec, rec[ko : ko + kl], args.format, table)) + "\n")
            n += 1
    out.write(f"IDC0005I NUMBER OF RECORDS PROCESSED WAS {n}\n")
    return OK
