"""ksds repro: copy records between data sets, and to and from flat files (JSON Lines, CSV, binary, text)."""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import csv
import io
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from .. import dataset
from ..dataset import Dataset
from ..definition import MAX_CI_SIZE
from ..errors import DuplicateKeyError, RecordLengthError, RecordNotFoundError
from ._common import (
    DEFAULT_ENCODING,
    ERROR,
    FAILED,
    OK,
    USAGE,
    CliError,
    Progress,
    Subparsers,
    UsageError,
    add_verb,
    check_encoding,
    check_key,
    is_dataset,
    parse_key,
    show_key,
    whole_number,
)
from ._reader import Reader, open_reader
from .print_ import records

EXAMPLES = """
  ksds repro cust.jsonl cust.ksds                  (load: JSON Lines into a defined data set)
  ksds repro cust.ksds backup.ksds --replace       (copy; records with keys already there are rewritten)
  ksds repro cust.ksds cust.csv --fields text --encoding cp037
  ksds repro unload.bin cust.ksds --rdw            (a z/OS variable-blocked unload: RDW before each record)
  ksds repro fixed.bin out.jsonl --lrecl 80        (a fixed-length binary file of 80-byte records)
  ksds repro vb.bin cust.ksds --rdw --pad X'40'    (variable-length records padded with EBCDIC spaces)
  ksds repro vb.bin cust.ksds --rdw --rdw-adjust 4 (RDW lengths that leave out the 4-byte RDW itself)
  ksds repro cust.ksds - --outformat jsonl --fromkey X'F0F1' --count 100 | head
flat files, chosen by extension or --informat/--outformat:
  jsonl (.jsonl .ndjson .json)  one object a line: {"key": "...", "record": "..."}
  csv   (.csv)                  a header line key,record then one line a record
  bin   (.bin .dat .raw)        records back to back (fixed length), or each after a 4-byte RDW with --rdw
  txt   (.txt)                  one record a line, as text in --encoding (short lines padded with spaces)
  ksds  (a data set; it must be defined first: ksds define)
The key and record fields of jsonl and csv are hex (the default), base64, or text in --encoding (--fields).
On input the key field is optional; when it is there it must match the record's key.
A bin IN is checked before anything is written: a fixed-length file must be a whole number of records (--lrecl,
or OUT's record length), and every record loaded into a data set must have its record length, or be shorter
with --pad (which pads it with a fill byte; records are never cut); a file cut at OUT's record length (no
--lrecl) whose records repeat a key is refused as probably misaligned (give --lrecl to say the length is right).
An RDW's length counts the 4-byte RDW itself (IBM's); some transfer tools write it without: --rdw-adjust 4.
jsonl and csv fields that are not in --fields (e.g. text read as hex) are found at the first record.
Loading into an empty data set: records are sorted by key first (in memory) and written in key order, so the
CIs and CAs fill up to FREESPACE as an IDCAMS load does. Into a data set that has records they are merged in the
order they come (inserts, with CI and CA splits as needed).
Without --replace a record whose key is already there is an error (NOREPLACE: counted, not written, exit 8);
with --replace it rewrites the record.
"""

FORMATS = ("ksds", "jsonl", "csv", "bin", "txt")
EXTENSIONS = {
    ".ksds": "ksds",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".bin": "bin",
    ".dat": "bin",
    ".raw": "bin",
    ".txt": "txt",
}
BATCH = 1000  # records per transaction when writing a data set
SHOW_ERRORS = 20  # record errors shown on stderr (all are counted)


def register(sub: Subparsers) -> None:
    p = add_verb(
        sub,
        "repro",
        "copy records between data sets and flat files (REPRO)",
        "Copy records from IN to OUT: between data sets, or to and from flat files. A data set is read in key "
        "order; --fromkey/--tokey (generic when shorter than the key), --skip and --count select what is copied. "
        "Prints one summary line: records processed, written, replaced, errors.",
        EXAMPLES,
    )
    prog = p.prog
    p.add_argument("input", metavar="IN", help="a data set or a flat file ('-' for standard input)")
    p.add_argument("output", metavar="OUT", help="a data set or a flat file ('-' for standard output)")
    # the range options of ksds print, with repro's checked numbers
    p.add_argument(
        "--path", dest="aix_path", metavar="NAME",
        help="from a data set, in the order of its alternate index NAME (a PATH): --fromkey and --tokey are then "
        "alternate keys",
    )
    p.add_argument("--fromkey", metavar="K", help="start at the first key >= K")
    p.add_argument("--tokey", metavar="K", help="stop after the last key <= K (or starting with K)")
    p.add_argument(
        "--skip", type=whole_number(prog, "--skip", 0), default=0, metavar="N", help="skip the first N records"
    )
    p.add_argument("--count", type=whole_number(prog, "--count", 0), metavar="N", help="at most N records")
    p.add_argument("--replace", action="store_true", help="rewrite records whose keys are already in OUT (REPLACE)")
    p.add_argument("--informat", choices=FORMATS, help="format of IN (default: from its contents or extension)")
    p.add_argument("--outformat", choices=FORMATS, help="format of OUT (default: from its contents or extension)")
    p.add_argument("--fields", choices=("hex", "base64", "text"), default="hex", help="jsonl/csv field encoding")
    p.add_argument(
        "--encoding", default=DEFAULT_ENCODING, metavar="CODEPAGE", help="code page of text (txt, --fields text)"
    )
    p.add_argument("--rdw", action="store_true", help="bin: a 4-byte RDW before each record (variable-blocked unload)")
    p.add_argument(
        "--rdw-adjust",
        type=whole_number(prog, "--rdw-adjust", -4, 4),
        default=0,
        metavar="N",
        help="with --rdw: N is added to each RDW's length to get IBM's, which counts the 4-byte RDW (4 for RDWs "
        "that leave it out); on output, RDWs are written the same way",
    )
    p.add_argument(
        "--pad",
        type=pad_byte(prog),
        metavar="X'hh'",
        help="pad records shorter than OUT's record length with this byte (X'40' EBCDIC space, X'20' ASCII "
        "space, X'00'; or 2 hex digits); longer records are refused",
    )
    p.add_argument(
        "--lrecl",
        type=whole_number(prog, "--lrecl", 1, MAX_CI_SIZE),
        metavar="N",
        help="the record length of a fixed-length bin IN, or the length txt lines are padded to (default: OUT's "
        "record length when OUT is a data set)",
    )
    p.add_argument(
        "--keys",
        nargs=2,
        type=whole_number(prog, "--keys", 0, MAX_CI_SIZE),
        metavar=("LENGTH", "OFFSET"),
        help="the key's place in a record, when neither IN nor OUT is a data set",
    )
    p.add_argument(
        "--errorlimit",
        type=whole_number(prog, "--errorlimit", 1),
        metavar="N",
        help="stop after N record errors (exit 12)",
    )
    p.set_defaults(func=run)


# --- formats ---------------------------------------------------------------------------------------------------


def detect(path: str, given: str | None, role: str) -> str:
    if given:
        return given
    if path == "-":
        raise CliError(f"give --{role}format for standard {'input' if role == 'in' else 'output'}", USAGE)
    if is_dataset(path):
        return "ksds"
    ext = os.path.splitext(path)[1].lower()
    if ext in EXTENSIONS:
        return EXTENSIONS[ext]
    if role == "in" and not os.path.exists(path):
        raise CliError(f"no such file or data set: {path}")
    raise CliError(f"cannot tell the format of {path} from its name: give --{role}format {'|'.join(FORMATS)}", USAGE)


class Fields:
    """How jsonl and csv hold keys and records: hex, base64, or text in a code page."""

    def __init__(self, kind: str, encoding: str) -> None:
        self.kind = kind
        self.encoding = encoding

    def encode(self, data: bytes) -> str:
        if self.kind == "hex":
            return data.hex().upper()
        if self.kind == "base64":
            return base64.b64encode(data).decode("ascii")
        return data.decode(self.encoding)

    def decode(self, text: Any, what: str) -> bytes:
        if not isinstance(text, str):
            raise ValueError(f"the {what} field is not a string")
        try:
            if self.kind == "hex":
                return bytes.fromhex(text)
            if self.kind == "base64":
                return base64.b64decode(text, validate=True)
            return text.encode(self.encoding)
        except (ValueError, binascii.Error) as e:
            alphabet = _HEX if self.kind == "hex" else _BASE64
            if self.kind != "text" and alphabet.search(text):
                raise TextFieldError(f"the {what} field is not {self.kind} ({e})") from None
            raise ValueError(f"the {what} field is not {self.kind} ({e})") from None


#: characters that are not in a hex or base64 field (spaces between hex digits are allowed)
_HEX = re.compile(r"[^0-9A-Fa-f\s]")
_BASE64 = re.compile(r"[^A-Za-z0-9+/=\s]")


class TextFieldError(ValueError):
    """A jsonl or csv field that is not in the ``--fields`` encoding and has characters no such field has: text."""


@dataclass(frozen=True)
class KeyPlace:
    offset: int
    length: int

    def of(self, rec: bytes) -> bytes:
        return rec[self.offset : self.offset + self.length]


@dataclass
class Item:
    """One input record (or what went wrong reading it): ``where`` names it in messages."""

    where: str
    record: bytes | None
    error: str | None = None
    text: bool = False  # the error is a field that reads as text (TextFieldError)


# --- sources ---------------------------------------------------------------------------------------------------


class Source:
    """Input records in order; ``progress()`` says how far (done, total) for the progress bar."""

    def __init__(self, items: Iterator[Item], progress: Callable[[], tuple[int, int]]) -> None:
        self.items = items
        self.progress = progress


def _file_progress(f: IO[bytes]) -> Callable[[], tuple[int, int]]:
    try:
        size = os.fstat(f.fileno()).st_size
    except (OSError, io.UnsupportedOperation):
        size = 0

    def progress() -> tuple[int, int]:
        try:
            return f.tell(), size
        except OSError:
            return 0, 0

    return progress


def _lines(f: IO[bytes]) -> Iterator[tuple[int, str]]:
    for n, raw in enumerate(f, 1):
        try:
            yield n, raw.decode("utf-8")
        except UnicodeDecodeError:
            yield n, "\x00bad"  # reported by the caller as not UTF-8


def jsonl_items(f: IO[bytes], fields: Fields, keys: KeyPlace | None) -> Iterator[Item]:
    for n, line in _lines(f):
        where = f"line {n}"
        if line == "\x00bad":
            yield Item(where, None, "not UTF-8 text")
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict) or "record" not in obj:
                raise ValueError('not a JSON object with a "record" field')
            rec = fields.decode(obj["record"], "record")
            if obj.get("key") is not None and keys is not None:
                key = fields.decode(obj["key"], "key")
                if key != keys.of(rec):
                    raise ValueError(
                        f"the key field {show_key(key, fields.encoding)} is not the record's key "
                        f"{show_key(keys.of(rec), fields.encoding)}"
                    )
        except TextFieldError as e:
            yield Item(where, None, str(e), text=True)
            continue
        except ValueError as e:
            yield Item(where, None, str(e))
            continue
        yield Item(where, rec)


def csv_items(f: IO[bytes], fields: Fields, keys: KeyPlace | None) -> Iterator[Item]:
    lines = (line for _, line in _lines(f))
    reader = csv.reader(lines)
    key_col: int | None = 0
    rec_col = 1
    for row in reader:
        where = f"line {reader.line_num}"
        names = [c.strip().lower() for c in row]
        if reader.line_num == 1 and names in (["key", "record"], ["record", "key"], ["record"]):
            rec_col = names.index("record")
            key_col = names.index("key") if "key" in names else None
            continue
        if not row:
            continue
        if len(row) == 1 and reader.line_num == 1:
            key_col, rec_col = None, 0
        try:
            if rec_col >= len(row):
                raise ValueError(f"{len(row)} columns; expected key,record")
            rec = fields.decode(row[rec_col], "record")
            if key_col is not None and key_col < len(row) and row[key_col] and keys is not None:
                key = fields.decode(row[key_col], "key")
                if key != keys.of(rec):
                    raise ValueError(
                        f"the key field {show_key(key, fields.encoding)} is not the record's key "
                        f"{show_key(keys.of(rec), fields.encoding)}"
                    )
        except TextFieldError as e:
            yield Item(where, None, str(e), text=True)
            continue
        except ValueError as e:
            yield Item(where, None, str(e))
            continue
        yield Item(where, rec)


def bin_items(f: IO[bytes], lrecl: int | None, rdw: bool, adjust: int = 0) -> Iterator[Item]:
    """Records of a bin file: ``lrecl`` bytes each, or each after an RDW (whose length plus ``adjust`` counts the
    record and the 4-byte RDW)."""
    n = 0
    offset = 0
    while True:
        n += 1
        where = f"record {n} (byte {offset})"
        if rdw:
            head = f.read(4)
            if not head:
                return
            if len(head) < 4:
                yield Item(where, None, f"the file ends inside an RDW ({len(head)} of 4 bytes)")
                return
            length = int.from_bytes(head[:2], "big") + adjust
            if head[2:] != b"\0\0" or length < 4:
                counted = "including itself" if adjust == 0 else f"plus {adjust} (--rdw-adjust {adjust})"
                yield Item(
                    where,
                    None,
                    f"X'{head.hex().upper()}' is not an RDW (2-byte length {counted}, then X'0000'); "
                    "is this a variable-blocked unload? (without RDWs, leave out --rdw)",
                )
                return
            size = length - 4
            offset += 4
        else:
            assert lrecl is not None
            size = lrecl
        rec = f.read(size)
        if not rec and not rdw:
            return
        offset += len(rec)
        if len(rec) < size:
            yield Item(
                where, None, f"the file ends {len(rec)} bytes into a record of {size} (wrong --lrecl, or --rdw?)"
            )
            return
        yield Item(where, rec)


# --- checks of a bin IN before anything is written --------------------------------------------------------------


def seekable(f: IO[bytes], stack: contextlib.ExitStack) -> IO[bytes]:
    """``f``, or (a pipe) a temporary copy of it: a bin IN is read twice, to check it and then to copy it."""
    if f.seekable():
        return f
    tmp: IO[bytes] = stack.enter_context(tempfile.TemporaryFile())
    shutil.copyfileobj(f, tmp)
    tmp.seek(0)
    return tmp


def check_fixed(f: IO[bytes], name: str, lrecl: int, given: bool, ds: Dataset | None, encoding: str) -> None:
    """A fixed-length bin IN: a whole number of ``lrecl``-byte records, and (cut at OUT's record length, not at a
    ``--lrecl`` given) no key twice, which is what a file of records of another length cut at ``lrecl`` shows."""
    start = f.tell()
    size = f.seek(0, os.SEEK_END) - start
    f.seek(start)
    where = f"--lrecl {lrecl}" if given or ds is None else f"the record length of {ds.path}"
    if size % lrecl:
        head = f.read(4)
        f.seek(start)
        hint = ""
        if len(head) == 4 and head[2:] == b"\0\0" and 4 < int.from_bytes(head[:2], "big") <= size:
            hint = "; it starts like a file of variable-length records (give --rdw if each has an RDW)"
        raise CliError(
            f"{name}: {size} bytes is not a whole number of {lrecl}-byte records ({where}): {size % lrecl} bytes "
            f"over{hint}; refused, nothing written"
        )
    if given or ds is None:
        return
    ko, kl = ds.key_offset, ds.key_length
    seen: dict[bytes, int] = {}
    try:
        for n in range(1, size // lrecl + 1):
            key = f.read(lrecl)[ko : ko + kl]
            first = seen.setdefault(key, n)
            if first != n:
                raise CliError(
                    f"{name}: cut into {lrecl}-byte records ({where}), records {first} and {n} have the same key "
                    f"{show_key(key, encoding)}: are its records {lrecl} bytes long? Refused, nothing written (if they "
                    f"are, give --lrecl {lrecl}; if not, the file needs a data set of its record length)"
                )
    finally:
        f.seek(start)


def check_rdw(f: IO[bytes], name: str, ds: Dataset | None, adjust: int, pad: int | None) -> Item | None:
    """An IN with RDWs: the first RDW that is not one (returned: reported as the only record error, nothing
    written), or a CliError for a record whose length is not OUT's record length (shorter is allowed with
    ``pad``). Either names ``--rdw-adjust`` when the file reads cleanly with another one."""
    start = f.tell()
    try:
        for item in bin_items(f, None, True, adjust):
            if item.record is None:
                item.error = f"{item.error}{rdw_hint(f, start, adjust, ds, pad is not None)}"
                return item
            n = len(item.record)
            if ds is not None and (n > ds.record_length or (n < ds.record_length and pad is None)):
                rl = ds.record_length
                if n > rl:
                    convert = "records are not cut"
                else:
                    convert = f"--pad X'40' (or another fill byte) pads shorter records to {rl} bytes"
                hint = rdw_hint(f, start, adjust, ds, pad is not None)
                raise CliError(
                    f"{name}: {item.where} is {n} bytes (its RDW says {n + 4 - adjust}); the records of {ds.path} "
                    f"are {rl} bytes: refused, nothing written ({convert}){hint}"
                )
    finally:
        f.seek(start)
    return None


def rdw_hint(f: IO[bytes], start: int, adjust: int, ds: Dataset | None, pad: bool) -> str:
    """"; ... give --rdw-adjust 4" when the file from ``start`` reads as whole RDW records with the other usual
    adjustment (0: IBM's RDWs, which count themselves; 4: RDWs that leave themselves out), each of OUT's record
    length (or, ``pad``, no longer) when OUT is a data set; else ""."""
    other = 4 if adjust != 4 else 0
    here = f.tell()
    f.seek(start)
    n = 0
    try:
        for item in bin_items(f, None, True, other):
            if item.record is None:
                return ""
            n_bytes = len(item.record)
            if ds is not None and (n_bytes > ds.record_length or (n_bytes < ds.record_length and not pad)):
                return ""
            n += 1
    finally:
        f.seek(here)
    if n == 0:
        return ""
    what = "leave out the 4-byte RDW itself" if other == 4 else "count the 4-byte RDW itself, as IBM's do"
    return f"; read as RDWs whose lengths {what}, the file is {n} whole records: give --rdw-adjust {other}"


def txt_items(f: IO[bytes], encoding: str, lrecl: int | None, fill: int | None = None) -> Iterator[Item]:
    pad = " ".encode(encoding) if fill is None else bytes([fill])
    for n, line in _lines(f):
        where = f"line {n}"
        if line == "\x00bad":
            yield Item(where, None, "not UTF-8 text")
            continue
        text = line.rstrip("\n").rstrip("\r")
        try:
            rec = text.encode(encoding)
        except UnicodeEncodeError as e:
            yield Item(where, None, f"text that {encoding} cannot hold ({e.reason})")
            continue
        if lrecl is not None:
            if len(rec) > lrecl:
                yield Item(where, None, f"{len(rec)} bytes, longer than the record length {lrecl}")
                continue
            rec += pad * ((lrecl - len(rec)) // max(1, len(pad)))
        yield Item(where, rec)


# --- padding ---------------------------------------------------------------------------------------------------

_PAD = re.compile(r"[xX]'([0-9A-Fa-f]{2})'|([0-9A-Fa-f]{2})")


def pad_byte(prog: str) -> Callable[[str], int]:
    """The argparse ``type`` of ``--pad``: X'hh' or hh; anything else is one line, exit status 12."""

    def parse(text: str) -> int:
        m = _PAD.fullmatch(text.strip())
        if m is None:
            raise UsageError(
                prog, f"--pad takes one byte in hex, as X'40' or 40, not {text!r} (see '{prog} --help')", FAILED
            )
        return int(m.group(1) or m.group(2), 16)

    return parse


def padded(items: Iterable[Item], length: int, fill: int, out: str) -> Iterator[Item]:
    """Records shorter than ``length`` padded with ``fill``; a longer one is a record error naming both lengths."""
    pad = bytes([fill])
    for item in items:
        rec = item.record
        if rec is not None and len(rec) != length:
            if len(rec) > length:
                item = Item(
                    item.where,
                    None,
                    f"{len(rec)} bytes, longer than the {length}-byte records of {out} (--pad does not cut records)",
                )
            else:
                item = Item(item.where, rec + pad * (length - len(rec)))
        yield item


def first_checked(items: Iterator[Item], fields: Fields, name: str) -> Iterator[Item]:
    """jsonl and csv: the first record read now; if its field is not in ``--fields`` but reads as text, that is
    the whole file's encoding, not one bad record: one CliError naming --fields text, before anything is written."""
    first = next(items, None)
    if first is None:
        return items
    if first.text:
        raise CliError(
            f"{name}: {first.where}: {first.error}: its fields look like text, not {fields.kind}: give --fields text "
            f"(and --encoding CODEPAGE for the code page of the records); refused, nothing written"
        )
    return itertools.chain([first], items)


# --- selection -------------------------------------------------------------------------------------------------


def select(
    items: Iterable[Item], keys: KeyPlace | None, lo: bytes | None, hi: bytes | None, skip: int, count: int | None
) -> Iterator[Item]:
    """FROMKEY/TOKEY (as a filter: a flat file need not be in key order), then SKIP and COUNT."""
    out = 0
    if count == 0:
        return
    for item in items:
        rec = item.record
        if rec is not None and keys is not None:
            key = keys.of(rec)
            if lo is not None and key[: len(lo)] < lo:
                continue
            if hi is not None and key[: len(hi)] > hi:
                continue
        if rec is not None:
            if skip:
                skip -= 1
                continue
            out += 1
        yield item
        if count is not None and out >= count:
            return


# --- sinks -----------------------------------------------------------------------------------------------------


class Counts:
    def __init__(self) -> None:
        self.processed = 0
        self.written = 0
        self.replaced = 0
        self.errors = 0


class DatasetSink:
    def __init__(self, ds: Dataset, replace: bool, counts: Counts, encoding: str) -> None:
        self.ds = ds
        self.replace = replace
        self.counts = counts
        self.encoding = encoding

    def batch(self) -> contextlib.AbstractContextManager[Any]:
        return self.ds.batch()

    def put(self, rec: bytes) -> str | None:
        ds = self.ds
        try:
            ds.write(rec)
            self.counts.written += 1
            return None
        except DuplicateKeyError:
            key = show_key(ds.key_of(rec), self.encoding)
            if not self.replace:
                return f"duplicate key {key} (NOREPLACE: not written; --replace rewrites it)"
        except RecordLengthError:
            return f"{len(rec)} bytes; the records of {ds.path} have {ds.record_length}"
        try:
            ds.rewrite(rec)
        except RecordNotFoundError:  # pragma: no cover - the key was there a moment ago
            return f"key {key} vanished before it could be replaced"
        self.counts.replaced += 1
        return None

    def close(self) -> None:
        self.ds.close()


class FileSink:
    def __init__(
        self,
        f: IO[bytes],
        fmt: str,
        fields: Fields,
        keys: KeyPlace | None,
        rdw: bool,
        encoding: str,
        counts: Counts,
        rdw_adjust: int = 0,
    ) -> None:
        self.f = f
        self.rdw_adjust = rdw_adjust
        self.fmt = fmt
        self.fields = fields
        self.keys = keys
        self.rdw = rdw
        self.encoding = encoding
        self.counts = counts
        self.text: io.TextIOWrapper | None = None
        self.csv: Any = None
        if fmt in ("jsonl", "csv", "txt"):
            self.text = text = io.TextIOWrapper(f, encoding="utf-8", newline="", write_through=False)
            if fmt == "csv":
                self.csv = csv.writer(text, lineterminator="\n")
                self.csv.writerow(["key", "record"] if keys is not None else ["record"])

    def batch(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def put(self, rec: bytes) -> str | None:
        try:
            if self.fmt == "bin":
                if self.rdw:
                    length = len(rec) + 4 - self.rdw_adjust
                    if not 0 <= length <= 0xFFFF:
                        return f"{len(rec)} bytes: too long for an RDW"
                    self.f.write(length.to_bytes(2, "big") + b"\0\0")
                self.f.write(rec)
            elif self.fmt == "txt":
                text = rec.decode(self.encoding)
                if "\n" in text or "\r" in text:
                    return f"the record holds a line break in {self.encoding}: use jsonl or csv"
                assert self.text is not None
                self.text.write(text + "\n")
            else:
                r = self.fields.encode(rec)
                k = self.fields.encode(self.keys.of(rec)) if self.keys is not None else None
                if self.fmt == "jsonl":
                    assert self.text is not None
                    obj = {"key": k, "record": r} if k is not None else {"record": r}
                    self.text.write(json.dumps(obj, ensure_ascii=False) + "\n")
                else:
                    self.csv.writerow([k, r] if k is not None else [r])
        except UnicodeDecodeError as e:
            return f"not text in {self.encoding} ({e.reason}): use --fields hex"
        self.counts.written += 1
        return None

    def close(self) -> None:
        if self.text is not None:
            self.text.flush()
            self.text.detach()
        self.f.flush()
        if self.f is not sys.stdout.buffer:
            self.f.close()


# --- the verb --------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    encoding = check_encoding(args.encoding)
    infmt = detect(args.input, args.informat, "in")
    outfmt = detect(args.output, args.outformat, "out")
    if args.input != "-" and args.output != "-" and os.path.exists(args.output):
        if os.path.samefile(args.input, args.output):
            raise CliError(f"IN and OUT are the same file ({args.input})", USAGE)
    if outfmt == "ksds" and not os.path.exists(args.output):
        raise CliError(
            f"no data set at {args.output}: define it first (ksds define {args.output} --keys ... --recordsize ...)"
        )
    if (args.input == "-" and infmt == "ksds") or (args.output == "-" and outfmt == "ksds"):
        raise CliError("a data set cannot be read from standard input or written to standard output", USAGE)
    if args.lrecl is not None and (infmt not in ("bin", "txt") or args.rdw):
        if infmt == "bin":
            raise CliError("--lrecl and --rdw: with --rdw each record's RDW gives its length; leave out --lrecl", USAGE)
        what = "a data set" if infmt == "ksds" else f"{infmt}, not bin or txt"
        raise CliError(f"--lrecl is the record length of a bin or txt IN, and IN ({args.input}) is {what}", USAGE)
    if args.rdw_adjust and not args.rdw:
        raise CliError("--rdw-adjust is for the RDWs of --rdw: give --rdw too", USAGE)
    if args.pad is not None and outfmt != "ksds":
        raise CliError(f"--pad pads records to the record length of a data set OUT, and OUT is {outfmt}", USAGE)
    if args.keys is not None and args.keys[0] < 1:
        raise CliError(f"--keys LENGTH takes a whole number from 1 to {MAX_CI_SIZE}, not {args.keys[0]}")
    fields = Fields(args.fields, encoding)
    counts = Counts()
    summary_to = sys.stderr if args.output == "-" else sys.stdout
    with contextlib.ExitStack() as stack:
        ds_in: Reader | None = None
        ds_out: Dataset | None = None
        if infmt == "ksds":
            ds_in = stack.enter_context(open_reader(args.input))
            if ds_in.note is not None:
                said = f"{ds_in.note} (records changed while it is read may or may not be copied)"
                print(f"ksds repro: note: {said}", file=sys.stderr)
        if outfmt == "ksds":
            ds_out = stack.enter_context(dataset.open(args.output, "rw"))
        ref: Reader | Dataset | None = ds_in if ds_in is not None else ds_out  # (not "or": empty ones are falsy)
        keys: KeyPlace | None
        if ref is not None:
            keys = KeyPlace(ref.key_offset, ref.key_length)
            if args.keys is not None and tuple(args.keys) != _keys(ref):
                raise CliError(
                    f"--keys {args.keys[0]} {args.keys[1]} is not the key of {ref.path}, KEYS({ref.key_length} "
                    f"{ref.key_offset}): leave out --keys"
                )
        elif args.keys is not None:
            keys = KeyPlace(args.keys[1], args.keys[0])
        else:
            keys = None
        if ds_in is not None and ds_out is not None and _keys(ds_in) != _keys(ds_out):
            raise CliError(
                f"the keys differ: IN has KEYS({ds_in.key_length} {ds_in.key_offset}), "
                f"OUT has KEYS({ds_out.key_length} {ds_out.key_offset})"
            )
        # --lrecl is IN's record length; by default, OUT's
        lrecl: int | None = args.lrecl
        if lrecl is None and ds_out is not None:
            lrecl = ds_out.record_length
        name = "standard input" if args.input == "-" else args.input
        padding = args.pad is not None and lrecl is not None and ds_out is not None and lrecl < ds_out.record_length
        if ds_out is not None and lrecl is not None and lrecl != ds_out.record_length and not padding:
            rl = ds_out.record_length
            if infmt == "txt":
                found, convert = f"lines padded to {lrecl} bytes", f"leave out --lrecl to pad the lines to {rl}"
            elif lrecl < rl:
                found = f"{lrecl}-byte records"
                convert = f"--pad X'40' (or another fill byte) pads them to {rl} bytes; or load them into a data set "
                convert += f"with --recordsize {lrecl}"
            else:
                found = f"{lrecl}-byte records"
                convert = f"records are not cut: load them into a data set with --recordsize {lrecl}"
            raise CliError(
                f"{name}: {found} (--lrecl {lrecl}), but the records of {ds_out.path} are {rl} bytes: refused, nothing "
                f"written ({convert})"
            )
        if ref is None and keys is not None and lrecl is not None and keys.offset + keys.length > lrecl:
            raise CliError(
                f"--keys {keys.length} {keys.offset} ends at byte {keys.offset + keys.length}, after the end of the "
                f"{lrecl}-byte records (--lrecl {lrecl})"
            )
        if ds_in is None and keys is None and (args.fromkey is not None or args.tokey is not None):
            raise CliError("--fromkey/--tokey on a flat file need the key's place: give --keys LENGTH OFFSET", USAGE)
        kl = keys.length if keys is not None else 255
        if args.aix_path is not None:
            if ds_in is None:
                raise CliError("--path NAME reads a data set in the order of its alternate index NAME: IN must be a "
                               "data set", USAGE)
            info = ds_in.aixes().get(args.aix_path)
            if info is None:
                have = ", ".join(ds_in.aixes()) or "none"
                raise CliError(f"{ds_in.path} has no alternate index named {args.aix_path!r} (it has: {have})")
            kl = info["key_length"]
        lo = hi = None
        if args.fromkey is not None:
            lo = check_key(parse_key(args.fromkey, encoding), kl, "--fromkey", encoding)
        if args.tokey is not None:
            hi = check_key(parse_key(args.tokey, encoding), kl, "--tokey", encoding)

        def pad(items: Iterator[Item]) -> Iterator[Item]:
            if args.pad is None or ds_out is None:
                return items
            return padded(items, ds_out.record_length, args.pad, ds_out.path)

        # the source
        if ds_in is not None:
            src_ds = ds_in
            total = len(ds_in)
            selected = records(src_ds, lo, hi, args.skip, args.count, args.aix_path)
            source = Source(
                pad(Item(f"key {show_key(src_ds.key_of(r), encoding)}", r) for r in selected),
                lambda: (counts.processed, total),
            )
        else:
            f: IO[bytes] = sys.stdin.buffer if args.input == "-" else stack.enter_context(open(args.input, "rb"))
            if infmt == "jsonl":
                items = first_checked(jsonl_items(f, fields, keys), fields, name)
            elif infmt == "csv":
                items = first_checked(csv_items(f, fields, keys), fields, name)
            elif infmt == "txt":
                items = txt_items(f, encoding, lrecl, args.pad)
            elif args.rdw:
                f = seekable(f, stack)
                bad = check_rdw(f, name, ds_out, args.rdw_adjust, args.pad)
                items = iter([bad]) if bad is not None else bin_items(f, None, True, args.rdw_adjust)
            else:
                if lrecl is None:
                    raise CliError(
                        "a fixed-length binary file needs the record length: give --lrecl N (or --rdw)", USAGE
                    )
                f = seekable(f, stack)
                check_fixed(f, name, lrecl, args.lrecl is not None, ds_out, encoding)
                items = bin_items(f, lrecl, False)
            source = Source(select(pad(items), keys, lo, hi, args.skip, args.count), _file_progress(f))

        # into an empty data set: load in key order
        note = ""
        if ds_out is not None and ds_in is None and len(ds_out) == 0 and keys is not None:
            loaded = list(source.items)
            good = [it for it in loaded if it.record is not None]
            ks = keys
            order = [ks.of(it.record or b"") for it in good]
            if any(a > b for a, b in zip(order, order[1:], strict=False)):
                good.sort(key=lambda it: ks.of(it.record or b""))
                note = " (sorted by key to load)"
            ordered = [it for it in loaded if it.record is None] + good
            n_total = len(ordered)
            source = Source(iter(ordered), lambda: (counts.processed, n_total))

        # the sink
        sink: DatasetSink | FileSink
        if ds_out is not None:
            sink = DatasetSink(ds_out, args.replace, counts, encoding)
        else:
            out = sys.stdout.buffer if args.output == "-" else open(args.output, "wb")
            sink = FileSink(out, outfmt, fields, keys, args.rdw, encoding, counts, args.rdw_adjust)
            stack.callback(sink.close)

        status = _copy(source, sink, counts, args.errorlimit)
    print(
        f"ksds repro: {counts.processed} records processed, {counts.written} written, {counts.replaced} replaced, "
        f"{counts.errors} errors{note}",
        file=summary_to,
    )
    if status == FAILED:
        raise CliError(f"stopped at ERRORLIMIT {args.errorlimit} ({counts.errors} record errors)", FAILED)
    return status


def _keys(ds: Dataset | Reader) -> tuple[int, int]:
    return ds.key_length, ds.key_offset


def _copy(source: Source, sink: DatasetSink | FileSink, counts: Counts, errorlimit: int | None) -> int:
    items = source.items
    done = False
    with Progress("ksds repro") as bar:
        while not done:
            done = True
            with sink.batch():
                for n, item in enumerate(items):
                    err = item.error
                    if item.record is not None:
                        counts.processed += 1
                        err = sink.put(item.record)
                    if err is not None:
                        counts.errors += 1
                        if counts.errors <= SHOW_ERRORS:
                            print(f"ksds repro: {item.where}: {err}", file=sys.stderr)
                        elif counts.errors == SHOW_ERRORS + 1:
                            print("ksds repro: (further record errors are counted, not shown)", file=sys.stderr)
                        if errorlimit is not None and counts.errors >= errorlimit:
                            return FAILED
                    if n % 256 == 255:
                        d, t = source.progress()
                        bar.update(d, t, f"{counts.processed} records")
                    if n + 1 >= BATCH:
                        done = False
                        break
    return ERROR if counts.errors else OK
