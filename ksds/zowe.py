"""The Zowe API ML caching service's VSAM layout: its keys and records, decoded and encoded byte for byte.

The caching service (``zowe/api-layer``, ``VsamKey`` and ``VsamRecord``) keeps one record per cached entry in a
KSDS defined ``KEYS(128 0) RECSZ(4096 4096)``, everything in IBM-1047 EBCDIC:

* the **key** is ``rightPad(sid.hashCode() + ":" + key.hashCode(), keyLength)``: the Java ``String.hashCode`` of
  the service id and of the entry's key, in decimal (either may be negative), padded with spaces;
  a service's records all start with ``rightPad(sid.hashCode(), keyLength)`` trimmed (the "sid-only" key that
  ``readForService`` / ``deleteForService`` position on);
* the **record** is ``rightPad(vsamKey + json, recordLength)``: the key, then the entry as Jackson writes it
  (compact, fields in the order ``key``, ``value``, ``serviceId``, ``created``, empty ones left out), then
  spaces; ``created`` is a string of epoch milliseconds. A record longer than ``recordLength`` is refused
  (``PayloadTooLargeError``: Zowe's PAYLOAD_TOO_LARGE, HTTP 400);
* to **read** a record Zowe decodes the whole record, drops the first ``keyLength`` characters, trims
  (Java ``String.trim``: every character up to U+0020 at both ends) and parses the JSON.

Two behaviours are kept on purpose, because they are Zowe's: characters IBM-1047 cannot represent become ``?``
when encoding (Java's replacement; pass ``errors="strict"`` to refuse them instead), and the key holds only hashes,
so two keys of one service with equal ``hashCode`` collide (see :attr:`ZoweRecord.consistent`).

Decoding is lenient where Jackson would coerce: a missing field reads as "" (``created`` as ``None``), numbers and
booleans read as their JSON text; fields Zowe does not write are ignored.

Importing this module registers the ``cp1047`` codec (aliases ``ibm1047``, ``ibm-1047``, ``1047``), which the
Python standard library lacks: it is ``cp037`` with the six code points IBM-1047 places differently
(``[`` X'AD', ``]`` X'BD', ``^`` X'5F', ``¬`` X'B0', ``Ý`` X'BA', ``¨`` X'BB').
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

#: Zowe's defaults (``caching.storage.vsam.keyLength`` / ``recordLength`` / ``encoding``)
KEY_LENGTH = 128
RECORD_LENGTH = 4096
ENCODING = "cp1047"
#: the shortest key Zowe accepts: "-2147483648:-2147483648" is 23 characters
MIN_KEY_LENGTH = 23

# --- the IBM-1047 codec ----------------------------------------------------------------------------------------

#: byte pairs whose characters IBM-1047 swaps relative to IBM-037 (CECP US/Canada)
CP1047_SWAPS = ((0x5F, 0xB0), (0xAD, 0xBA), (0xBB, 0xBD))


def _cp1047_table() -> str:
    table = list(bytes(range(256)).decode("cp037"))
    for a, b in CP1047_SWAPS:
        table[a], table[b] = table[b], table[a]
    return "".join(table)


CP1047_DECODING_TABLE = _cp1047_table()
_CP1047_ENCODING_TABLE = codecs.charmap_build(CP1047_DECODING_TABLE)


class _Cp1047Codec(codecs.Codec):
    def encode(self, input: str, errors: str = "strict") -> tuple[bytes, int]:  # noqa: A002 - codecs API
        return codecs.charmap_encode(input, errors, _CP1047_ENCODING_TABLE)

    def decode(self, input: ReadableBuffer, errors: str = "strict") -> tuple[str, int]:  # noqa: A002
        return codecs.charmap_decode(input, errors, CP1047_DECODING_TABLE)


class _Cp1047IncrementalEncoder(codecs.IncrementalEncoder):
    def encode(self, input: str, final: bool = False) -> bytes:  # noqa: A002
        return codecs.charmap_encode(input, self.errors, _CP1047_ENCODING_TABLE)[0]


class _Cp1047IncrementalDecoder(codecs.IncrementalDecoder):
    def decode(self, input: ReadableBuffer, final: bool = False) -> str:  # noqa: A002
        return codecs.charmap_decode(input, self.errors, CP1047_DECODING_TABLE)[0]


class _Cp1047StreamWriter(_Cp1047Codec, codecs.StreamWriter):
    pass


class _Cp1047StreamReader(_Cp1047Codec, codecs.StreamReader):
    pass


_CP1047_INFO = codecs.CodecInfo(
    name="cp1047",
    encode=_Cp1047Codec().encode,
    decode=_Cp1047Codec().decode,
    incrementalencoder=_Cp1047IncrementalEncoder,
    incrementaldecoder=_Cp1047IncrementalDecoder,
    streamwriter=_Cp1047StreamWriter,
    streamreader=_Cp1047StreamReader,
)
_CP1047_NAMES = {"cp1047", "ibm1047", "1047", "csibm1047"}


def _search(name: str) -> codecs.CodecInfo | None:
    if name.replace("-", "").replace("_", "").lower() in _CP1047_NAMES:
        return _CP1047_INFO
    return None


def register_cp1047() -> None:
    """Make ``"cp1047"`` (and ``"IBM-1047"``) a Python codec, unless one is registered already."""
    try:
        codecs.lookup("cp1047")
    except LookupError:
        codecs.register(_search)


register_cp1047()

# --- errors ------------------------------------------------------------------------------------------------------


class ZoweLayoutError(ValueError):
    """A record or key that does not follow the caching service's layout (Zowe's VsamRecordException)."""


class PayloadTooLargeError(ZoweLayoutError):
    """The encoded record is longer than the record length (Zowe's PAYLOAD_TOO_LARGE, HTTP 400)."""


# --- keys --------------------------------------------------------------------------------------------------------


def java_string_hash(s: str) -> int:
    """Java's ``String.hashCode``: ``h = 31*h + c`` over the UTF-16 code units, as a signed 32-bit integer."""
    b = s.encode("utf-16-be", "surrogatepass")
    h = 0
    for i in range(0, len(b), 2):
        h = (31 * h + (b[i] << 8 | b[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def _check_key_length(key_length: int) -> None:
    if key_length < MIN_KEY_LENGTH:
        raise ZoweLayoutError(
            f"a Zowe VSAM key needs at least {MIN_KEY_LENGTH} characters, not {key_length} "
            f'("-2147483648:-2147483648" must fit)'
        )


def key_text(service_id: str, key: str, key_length: int = KEY_LENGTH) -> str:
    """``VsamKey.getKey``: ``"<sid hash>:<key hash>"`` padded with spaces to ``key_length`` characters."""
    _check_key_length(key_length)
    return f"{java_string_hash(service_id)}:{java_string_hash(key)}".ljust(key_length)


def vsam_key(service_id: str, key: str, *, key_length: int = KEY_LENGTH, encoding: str = ENCODING) -> bytes:
    """The VSAM key of entry ``key`` of service ``service_id`` (``VsamKey.getKeyBytes``)."""
    return key_text(service_id, key, key_length).encode(encoding)


def service_key(service_id: str, *, key_length: int = KEY_LENGTH, encoding: str = ENCODING) -> bytes:
    """The sid-only key (``VsamKey.getKeyBytesSidOnly``): where ``readForService`` starts (KEY_GE)."""
    _check_key_length(key_length)
    return str(java_string_hash(service_id)).ljust(key_length).encode(encoding)


# --- records -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyValue:
    """Zowe's ``KeyValue``: an entry of the cache. ``created`` is epoch milliseconds as a string."""

    key: str = ""
    value: str = ""
    service_id: str = ""
    created: str | None = None


def _jackson_string(s: str) -> str:
    """A JSON string as Jackson writes it: only ``"``, ``\\`` and control characters escaped, ``\\uXXXX`` in
    upper case; everything else (non-ASCII included) as is."""
    out = ['"']
    for ch in s:
        c = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif c < 0x20:
            short = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}.get(c)
            out.append(short or f"\\u{c:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def to_json(kv: KeyValue) -> str:
    """The entry as Zowe's ObjectMapper writes it (``@JsonInclude(NON_EMPTY)``, declaration order, compact)."""
    fields = (("key", kv.key), ("value", kv.value), ("serviceId", kv.service_id), ("created", kv.created))
    return "{" + ",".join(f'"{n}":{_jackson_string(v)}' for n, v in fields if v) + "}"


def encode_record(
    service_id: str,
    kv: KeyValue,
    *,
    key_length: int = KEY_LENGTH,
    record_length: int = RECORD_LENGTH,
    encoding: str = ENCODING,
    errors: str = "replace",
) -> bytes:
    """``VsamRecord.getBytes``: the VSAM key (from ``service_id`` and ``kv.key``), the JSON, spaces to the end.

    Raises :class:`PayloadTooLargeError` if the record does not fit in ``record_length`` bytes.
    """
    text = key_text(service_id, kv.key, key_length) + to_json(kv)
    data = text.encode(encoding, errors)
    if len(data) > record_length:
        raise PayloadTooLargeError(
            f"the record of key {kv.key!r} needs {len(data)} bytes; the record length is {record_length}"
        )
    return data + " ".encode(encoding) * (record_length - len(data))


def _java_trim(s: str) -> str:
    """Java ``String.trim``: strip every character <= U+0020 at both ends."""
    i, j = 0, len(s)
    while i < j and s[i] <= " ":
        i += 1
    while j > i and s[j - 1] <= " ":
        j -= 1
    return s[i:j]


def _field(obj: dict[str, Any], name: str) -> str | None:
    v = obj.get(name)
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    raise ZoweLayoutError(f"field {name!r} holds a JSON {type(v).__name__}, not a string")


def decode_record(data: bytes, *, key_length: int = KEY_LENGTH, encoding: str = ENCODING) -> KeyValue:
    """The entry held by a record (``new VsamRecord(config, bytes)``). Raises :class:`ZoweLayoutError`."""
    _check_key_length(key_length)
    text = _java_trim(data.decode(encoding, "replace")[key_length:])
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise ZoweLayoutError(f"the record's value is not JSON ({e.args[0] if e.args else e})") from None
    if not isinstance(obj, dict):
        raise ZoweLayoutError(f"the record's value is a JSON {type(obj).__name__}, not an object")
    return KeyValue(
        key=_field(obj, "key") or "",
        value=_field(obj, "value") or "",
        service_id=_field(obj, "serviceId") or "",
        created=_field(obj, "created"),
    )


@dataclass(frozen=True)
class ZoweRecord:
    """A decoded record: its VSAM key as text, the hashes it names, the entry, and whether they agree."""

    key_text: str
    service_hash: int | None
    key_hash: int | None
    entry: KeyValue

    @property
    def consistent(self) -> bool:
        """The key's hashes are those of the entry's service id and key (False: a collision or a foreign record).

        An entry whose JSON has no ``serviceId`` (Zowe always writes it) is checked on its key hash alone.
        """
        if self.key_hash != java_string_hash(self.entry.key):
            return False
        return not self.entry.service_id or self.service_hash == java_string_hash(self.entry.service_id)


def parse_key(key: bytes, *, encoding: str = ENCODING) -> tuple[str, int | None, int | None]:
    """A VSAM key's text and the two hashes in it (None where the text is not ``"<int>:<int>"``)."""
    text = key.decode(encoding, "replace").rstrip(" ")
    sid, sep, k = text.partition(":")
    try:
        return text, int(sid), int(k) if sep else None
    except ValueError:
        return text, None, None


def decode(data: bytes, *, key_length: int = KEY_LENGTH, encoding: str = ENCODING) -> ZoweRecord:
    """Decode a whole record: key and entry. Raises :class:`ZoweLayoutError` for a value that is not JSON."""
    text, sid_hash, key_hash = parse_key(data[:key_length], encoding=encoding)
    return ZoweRecord(text, sid_hash, key_hash, decode_record(data, key_length=key_length, encoding=encoding))
