"""Client certificates for the caching service: the peer certificate in the ASGI scope, and its DN as Java writes it.

Zowe's gateway tells the caching service who the caller is in the ``X-Certificate-DistinguishedName`` header; the
caching service believes it (Zowe issue 4423). Here, when the service runs with TLS and a CA for client
certificates, the DN of the verified client certificate is the identity, and a header that names another DN is
refused. Three pieces make that work:

* :class:`Connections`: the ASGI TLS extension (``scope["extensions"]["tls"]``: ``client_cert_name``,
  ``client_cert_chain``, ``tls_version``, ...) for the requests of a uvicorn server, which (0.54) does not give the
  application the peer certificate. Only uvicorn's public interface is used: :attr:`Connections.protocol` is an
  asyncio protocol for ``uvicorn.Config(http=...)`` that hands everything to uvicorn's own httptools protocol
  (C, the one ``--http httptools`` names) or, where httptools is missing, its h11 protocol, and, when a
  connection is made (after the TLS handshake), notes its addresses and TLS
  session; :meth:`Connections.app` wraps the application and puts the TLS session of the request's connection
  (found by ``scope["server"]`` and ``scope["client"]``, which the ASGI specification defines) into the scope.
  It also knows which connections have a request in flight, so a shutdown can cut the idle ones
  (:meth:`Connections.abort_idle`);
* the certificate is parsed by ``cryptography`` (:func:`subject_of`: ``x509.load_der_x509_certificate(der)
  .subject``); a certificate it cannot read (one whose subject holds text that is not valid for its string
  type, say) has no DN here: the caller is not identified by it (``client_cert_error`` says why);
* :func:`java_dn`, the adapter from the subject (:func:`name_rdns`: a ``cryptography`` Name as RDNs of
  :class:`SubjectAttribute`) to the DN in the form the Zowe in use writes (``ksds serve --dn-format``):
  ``rfc2253``, as Java's ``X509Certificate.getSubjectX500Principal().getName()`` writes it (newer gateways, and
  the newest caching service when it reads the DN from the TLS session), or ``legacy``, as
  ``getSubjectDN().getName()`` does (the v3.0 gateway's ``X-Certificate-DistinguishedName``). The DN names the
  caller's partition, so it must be the gateway's byte for byte. :func:`same_dn` compares a DN written by a
  client (either form, or any RFC 1779/2253/4514 spelling of the same attributes) with the certificate's.

Both forms list the RDNs in reverse order of the certificate's encoding (the most specific first), the values of
a multi-valued RDN in their encoded order, and write a value of a type they have no text for as ``#`` and the
lowercase hex of its DER (Java 17, ``HexFormat``). The RFC 2253 form (``AVA.toRFC2253String``):

* RDNs joined by ``,`` and the values of a multi-valued RDN by ``+``, with no spaces;
* the attribute types CN, C, L, ST, O, OU, STREET, DC and UID by keyword, every other one (e.g. emailAddress) by
  its dotted OID with the value in hex; so is a value of a keyword type that is not one of PrintableString,
  UTF8String, IA5String, T61String, BMPString, GeneralString (a UniversalString, a VisibleString, a BIT STRING);
* a value of those types as text, with a backslash before each of ``, = + < > # ; " \\``, before leading and
  trailing spaces and CRs, and NUL as ``\\00``; other characters (non-ASCII ones included) as they are. Java 17
  reads the value's bytes as UTF-8 whatever its type, so a BMPString comes out as ``\\00A\\00B`` and U+FFFD
  (newer JDKs, 25 for one, read each type in its charset; :func:`same_dn` accepts that form too).

The legacy form (``X500Name.toString``, ``AVA.toKeywordValueString``):

* RDNs joined by ``", "``, the values of a multi-valued RDN by ``" + "``;
* the keywords of RFC 2253 and T, IP, DNQ, SURNAME, GIVENNAME, INITIALS, GENERATION, EMAILADDRESS and
  SERIALNUMBER; every other type as ``OID.`` and its dotted OID;
* a value of a string type (those above and UniversalString, each read in its charset, T61String as ISO 8859-1)
  as text, between double quotes if it holds one of ``, + = < > # ; \\ "`` or a newline, begins or ends with a
  space or newline, or has two spaces in a row; inside, ``"`` and ``\\`` get a backslash. A value that is
  itself between double quotes is written as it is.
"""

from __future__ import annotations

import asyncio
import binascii
import re
import ssl
from dataclasses import dataclass
from typing import Any, Literal, cast

from cryptography import x509
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "DN_FORMATS",
    "Connections",
    "DnFormat",
    "SubjectAttribute",
    "certificate_dn",
    "java_dn",
    "java_dns",
    "name_rdns",
    "parse_dn",
    "same_dn",
    "subject_of",
    "tls_extension",
]

# --- a certificate's subject, as cryptography reads it ----------------------------------------------------------

#: the DER string types a client's hex value (``#0c03...``) is read as text for, by tag, and how (T61String as
#: UTF-8, as cryptography reads it); a value of another type is compared by its DER
_STRING_CODECS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString
    0x14: "utf-8",  # T61String
    0x16: "ascii",  # IA5String
    0x1B: "ascii",  # GeneralString
    0x1E: "utf-16-be",  # BMPString
}
#: how cryptography's text of a value is encoded again for its DER (the types cryptography reads as text)
_CONTENT_CODECS = {0x1E: "utf-16-be", 0x1C: "utf-32-be"}  # BMPString, UniversalString; the others UTF-8


@dataclass(frozen=True)
class SubjectAttribute:
    """One attribute of a DN: its OID, its value as text (None: not text), and the value's DER element (None: a
    value a client wrote as text, taken as a UTF8String)."""

    oid: str
    text: str | None
    der: bytes | None = None


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    size = (n.bit_length() + 7) // 8
    return bytes([0x80 | size]) + n.to_bytes(size, "big")


def _asn1_tag(attr: x509.NameAttribute[Any]) -> int:
    """The ASN.1 tag of the attribute's value as the certificate encodes it (cryptography keeps it with the
    attribute: its ``_type``, which it re-encodes the value with)."""
    kind = getattr(attr, "_type", None)
    tag = getattr(kind, "value", None)
    if not isinstance(tag, int):
        raise ValueError("cryptography does not say the ASN.1 type of the attribute values (NameAttribute._type)")
    return tag


def _attribute(attr: x509.NameAttribute[Any]) -> SubjectAttribute:
    tag = _asn1_tag(attr)
    value = attr.value
    if isinstance(value, bytes):  # a BIT STRING (x500UniqueIdentifier): the contents as they are
        content = value
    else:
        content = value.encode(_CONTENT_CODECS.get(tag, "utf-8"), "surrogatepass")
    der = bytes([tag]) + _der_length(len(content)) + content
    return SubjectAttribute(attr.oid.dotted_string, value if isinstance(value, str) else None, der)


def name_rdns(name: x509.Name) -> list[list[SubjectAttribute]]:
    """A ``cryptography`` Name as RDNs in encoded order (the least specific first), each a list of attributes in
    encoded order, for :func:`java_dn` and :func:`same_dn`."""
    return [[_attribute(a) for a in rdn] for rdn in name.rdns]


def subject_of(der: bytes) -> list[list[SubjectAttribute]]:
    """The subject of a DER certificate (parsed by ``cryptography``): its RDNs in encoded order, each a list of
    attributes. ValueError if ``der`` is not a certificate whose subject cryptography can read."""
    return name_rdns(x509.load_der_x509_certificate(der).subject)


def _der_parts(der: bytes) -> tuple[int, bytes]:
    """The tag and the contents of one DER element. ValueError if it is not one whole element (single-byte tag,
    definite length)."""
    if len(der) < 2:
        raise ValueError("truncated element")
    tag, length, pos = der[0], der[1], 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or len(der) < pos + n:
            raise ValueError("bad length")
        length = int.from_bytes(der[pos : pos + n], "big")
        pos += n
    if pos + length != len(der):
        raise ValueError("the length is not that of the bytes")
    return tag, der[pos:]


def _der_text(der: bytes) -> str | None:
    """The text of one DER element written by a client in hex (``#...``): None if its type is not one of
    :data:`_STRING_CODECS`. ValueError if it is not one whole element."""
    tag, content = _der_parts(der)
    codec = _STRING_CODECS.get(tag)
    return content.decode(codec) if codec else None


# --- DNs as Java writes them ----------------------------------------------------------------------------------

#: the forms of a DN: ``rfc2253`` is ``X509Certificate.getSubjectX500Principal().getName()`` (newer gateways, the
#: newest caching service), ``legacy`` is ``getSubjectDN().getName()`` (the v3.0 gateway's
#: X-Certificate-DistinguishedName)
DnFormat = Literal["rfc2253", "legacy"]
DN_FORMATS: tuple[DnFormat, ...] = ("rfc2253", "legacy")

#: the keywords Java's X500Principal.getName() (RFC 2253) writes; every other type is written as its OID
RFC2253_KEYWORDS = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.9": "STREET",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}

#: the keywords Java's X500Name.toString() (getSubjectDN().getName()) writes (AVAKeyword: where an OID has two,
#: the one registered last); every other type is written as ``OID.`` and its OID
LEGACY_KEYWORDS = RFC2253_KEYWORDS | {
    "2.5.4.12": "T",
    "1.3.6.1.4.1.42.2.11.2.1": "IP",
    "2.5.4.46": "DNQ",
    "2.5.4.4": "SURNAME",
    "2.5.4.42": "GIVENNAME",
    "2.5.4.43": "INITIALS",
    "2.5.4.44": "GENERATION",
    "1.2.840.113549.1.9.1": "EMAILADDRESS",
    "2.5.4.5": "SERIALNUMBER",
}

#: keywords a client may use when writing a DN (RFC 2253/4514, RFC 1779, Java's X500Name.toString, OpenSSL)
_KEYWORD_OIDS = {kw: oid for oid, kw in LEGACY_KEYWORDS.items()} | {
    "S": "2.5.4.8",
    "EMAIL": "1.2.840.113549.1.9.1",
    "E": "1.2.840.113549.1.9.1",
    "TITLE": "2.5.4.12",
    "SN": "2.5.4.4",
    "DNQUALIFIER": "2.5.4.46",
    "PSEUDONYM": "2.5.4.65",
    "POSTALCODE": "2.5.4.17",
    "ORGANIZATIONIDENTIFIER": "2.5.4.97",
}

#: DerValue.isPrintableStringChar: the characters of a PrintableString
_PRINTABLE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")
#: the types AVA.toRFC2253String writes as text (isDerString(value, false)): PrintableString, T61String,
#: IA5String, GeneralString, BMPString, UTF8String
_RFC2253_TEXT_TAGS = frozenset({0x13, 0x14, 0x16, 0x1B, 0x1E, 0x0C})
#: how a newer JDK (AVA.getCharset; JDK 25 for one) reads those; JDK 17 reads every one as UTF-8
_RFC2253_CHARSETS = {0x13: "latin-1", 0x14: "latin-1", 0x16: "latin-1", 0x1B: "latin-1", 0x1E: "utf-16-be",
                     0x0C: "utf-8"}
_RFC2253_ESCAPED = frozenset(',=+<>#;"\\')
#: DerValue.getAsString, which X500Name.toString writes values with: the string types and their charsets
_LEGACY_CHARSETS = {0x0C: "utf-8", 0x13: "ascii", 0x14: "latin-1", 0x16: "ascii", 0x1C: "utf-32-be",
                    0x1E: "utf-16-be", 0x1B: "ascii"}
#: AVA.toKeywordValueString: a value holding one of these is quoted
_LEGACY_SPECIAL = frozenset(',+=\n<>#;\\"')


def _value_der(attr: SubjectAttribute) -> bytes:
    """The value's DER element (a value written as text without one: a UTF8String)."""
    if attr.der is not None:
        return attr.der
    content = (attr.text or "").encode("utf-8", "surrogatepass")
    return b"\x0c" + _der_length(len(content)) + content


def _rfc2253_value(attr: SubjectAttribute, newer_jdk: bool = False) -> str:
    """``AVA.toRFC2253String``'s value: ``#`` and the lowercase hex of the DER for a type without a keyword or a
    value that is not one of the string types; else the text with ``, = + < > # ; " \\`` escaped by a
    backslash, NUL as ``\\00``, leading and trailing spaces and CRs escaped, other characters as they are. The
    text is the contents' bytes read as UTF-8 whatever the type (JDK 17: a BMPString's UTF-16 comes out as NULs
    and U+FFFD), or, with ``newer_jdk``, read in the type's own charset."""
    der = _value_der(attr)
    tag, content = _der_parts(der)
    if attr.oid not in RFC2253_KEYWORDS or tag not in _RFC2253_TEXT_TAGS:
        return "#" + der.hex()
    text = content.decode(_RFC2253_CHARSETS[tag] if newer_jdk else "utf-8", "replace")
    chars: list[str] = []
    for c in text:
        if c in _RFC2253_ESCAPED:
            chars += ("\\", c)
        elif c == "\0":
            chars += ("\\", "0", "0")
        else:
            chars.append(c)
    lead = 0
    while lead < len(chars) and chars[lead] in (" ", "\r"):
        lead += 1
    trail = len(chars) - 1
    while trail >= 0 and chars[trail] in (" ", "\r"):
        trail -= 1
    return "".join(("\\" + c) if i < lead or i > trail else c for i, c in enumerate(chars))


def _legacy_value(attr: SubjectAttribute) -> str:
    """``AVA.toKeywordValueString``'s value (RFC 1779 style): ``#`` and the lowercase hex of the DER for a value
    that is not a string type; else the text (in the type's charset), within double quotes when it holds one of
    ``, + = < > # ; \\ "`` or a newline, begins or ends with a space or newline, or has two spaces in a row,
    with ``"`` and ``\\`` escaped by a backslash; a text already between double quotes is written as it is."""
    der = _value_der(attr)
    tag, content = _der_parts(der)
    charset = _LEGACY_CHARSETS.get(tag)
    if charset is None:
        return "#" + der.hex()
    text = content.decode(charset, "replace")
    quoted = len(text) > 1 and text[0] == '"' and text[-1] == '"'
    quote = False
    white = False
    out: list[str] = []
    for i, c in enumerate(text):
        if quoted and (i == 0 or i == len(text) - 1):
            out.append(c)
            continue
        if c in _PRINTABLE or c in _LEGACY_SPECIAL:
            if not quote and ((i == 0 and c in " \n") or c in _LEGACY_SPECIAL):
                quote = True
            if c in " \n":
                if not quote and white:
                    quote = True
                white = True
            else:
                if c in '"\\':
                    out.append("\\")
                white = False
        else:
            white = False
        out.append(c)
    if out and out[-1] in (" ", "\n"):
        quote = True
    value = "".join(out)
    return f'"{value}"' if quote and not quoted else value


def _rfc2253_dn(rdns: list[list[SubjectAttribute]], newer_jdk: bool = False) -> str:
    return ",".join(
        "+".join(f"{RFC2253_KEYWORDS.get(a.oid, a.oid)}={_rfc2253_value(a, newer_jdk)}" for a in rdn)
        for rdn in reversed(rdns)
    )


def _legacy_dn(rdns: list[list[SubjectAttribute]]) -> str:
    return ", ".join(
        " + ".join(f"{LEGACY_KEYWORDS.get(a.oid) or 'OID.' + a.oid}={_legacy_value(a)}" for a in rdn)
        for rdn in reversed(rdns)
    )


def java_dn(rdns: list[list[SubjectAttribute]], dn_format: DnFormat = "rfc2253") -> str:
    """The DN as Java 17 writes it: ``rfc2253``, ``X500Principal.getName()`` (e.g. ``CN=gw,O=ACME\\, Inc.,C=US``);
    ``legacy``, ``X509Certificate.getSubjectDN().getName()`` (e.g. ``CN=gw, O="ACME, Inc.", C=US``). The most
    specific RDN first; the values of a multi-valued RDN in their encoded order. ValueError for another format."""
    if dn_format == "rfc2253":
        return _rfc2253_dn(rdns)
    if dn_format == "legacy":
        return _legacy_dn(rdns)
    raise ValueError(f"the DN format {dn_format!r} is not one of {', '.join(DN_FORMATS)}")


def java_dns(rdns: list[list[SubjectAttribute]]) -> set[str]:
    """Every form a Java-based gateway writes this subject's DN in: both :data:`DN_FORMATS`, and the RFC 2253
    form of a newer JDK (which differs from JDK 17's for BMPString and non-ASCII T61String values only)."""
    return {_rfc2253_dn(rdns), _legacy_dn(rdns), _rfc2253_dn(rdns, newer_jdk=True)}


# --- DNs written by clients, and comparing DNs --------------------------------------------------------------------

_OID_RE = re.compile(r"(?:OID\.)?([0-9]+(?:\.[0-9]+)+)", re.IGNORECASE)


def _split(text: str, seps: str) -> list[str]:
    """``text`` cut at the characters of ``seps`` that are neither escaped nor inside quotes."""
    parts = []
    current: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c in seps and not quoted:
            parts.append("".join(current))
            current = []
            i += 1
            continue
        current.append(c)
        i += 1
    if quoted:
        raise ValueError("unbalanced quotes")
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    """An RDN value: quotes removed, ``\\c`` and ``\\hh`` (UTF-8 bytes) decoded, unescaped outer spaces dropped."""
    s = text.lstrip(" ")
    bare = s.rstrip(" ")
    quoted = len(bare) >= 2 and bare[0] == '"' and bare[-1] == '"' and not bare.endswith('\\"')
    if quoted:
        s = bare[1:-1]
    tokens: list[tuple[bytes, bool]] = []  # (bytes, escaped)
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            if i + 1 >= len(s):
                raise ValueError("a value ends with a backslash")
            pair = s[i + 1 : i + 3]
            if len(pair) == 2 and all(ch in "0123456789abcdefABCDEF" for ch in pair):
                tokens.append((bytes.fromhex(pair), True))
                i += 3
            else:
                tokens.append((s[i + 1].encode(), True))
                i += 2
            continue
        tokens.append((c.encode(), False))
        i += 1
    if not quoted:  # spaces around a value are not part of it unless escaped
        while tokens and tokens[-1] == (b" ", False):
            tokens.pop()
    return b"".join(t for t, _ in tokens).decode("utf-8", errors="replace")


def _parse_value(oid: str, raw: str) -> SubjectAttribute:
    s = raw.strip(" ")
    if s.startswith("#"):
        try:
            der = binascii.unhexlify(s[1:])
            text = _der_text(der)
        except (binascii.Error, ValueError) as e:
            raise ValueError(f"bad hex value {s!r}") from e
        return SubjectAttribute(oid, text, der)
    return SubjectAttribute(oid, _unescape(raw))


def parse_dn(text: str) -> list[list[SubjectAttribute]]:
    """A DN as a client writes it (``CN=a,O=b``, ``CN=a, O=b``, ``CN="a, b"``, ``CN=a + UID=b``,
    ``EMAILADDRESS=...``, ``OID.1.2.3=...``), most specific RDN first, as written. ValueError if it is not a DN."""
    rdns = []
    for rdn_text in _split(text, ",;"):
        rdn = []
        for ava in _split(rdn_text, "+"):
            kind, eq, value = ava.partition("=")
            if not eq:
                raise ValueError(f"{ava.strip()!r} is not TYPE=VALUE")
            kind = kind.strip()
            m = _OID_RE.fullmatch(kind)
            oid = m.group(1) if m else _KEYWORD_OIDS.get(kind.upper())
            if oid is None:
                raise ValueError(f"unknown attribute type {kind!r}")
            rdn.append(_parse_value(oid, value))
        rdns.append(rdn)
    return rdns


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _same_attribute(a: SubjectAttribute, b: SubjectAttribute) -> bool:
    if a.oid != b.oid:
        return False
    if a.text is not None and b.text is not None:
        return _norm(a.text) == _norm(b.text)
    return a.der is not None and a.der == b.der


def same_dn(written: str, certificate: list[list[SubjectAttribute]]) -> bool:
    """Whether the DN a client wrote names the certificate's subject: one of the forms Java writes it in
    (:func:`java_dns`: RFC 2253 or ``getSubjectDN()``'s, whatever ``--dn-format`` says), or the same attributes
    in the same RDNs in the written order (most specific first), values compared without case and with runs of
    spaces as one."""
    if written in java_dns(certificate):
        return True
    try:
        rdns = parse_dn(written)
    except ValueError:
        return False
    cert = list(reversed(certificate))
    if len(rdns) != len(cert):
        return False
    for mine, theirs in zip(rdns, cert, strict=True):
        if len(mine) != len(theirs):
            return False
        rest = list(theirs)
        for a in mine:
            match = next((b for b in rest if _same_attribute(a, b)), None)
            if match is None:
                return False
            rest.remove(match)
    return True


def certificate_dn(tls: dict[str, Any], dn_format: DnFormat = "rfc2253") -> str | None:
    """The DN of the verified client certificate of a request's ASGI TLS extension (:func:`tls_extension`) in
    ``dn_format`` (None: no certificate, or one whose subject cannot be read). Kept in the extension, which lives
    as long as its connection, so that each connection's DN is written once per format."""
    subject = tls.get("client_cert_subject")
    if subject is None:
        name = tls.get("client_cert_name")
        return name if isinstance(name, str) and dn_format == "rfc2253" else None
    cached = tls.get("ksds_dn_" + dn_format)
    if isinstance(cached, str):
        return cached
    dn = java_dn(subject, dn_format)
    tls["ksds_dn_" + dn_format] = dn
    return dn


# --- the ASGI TLS extension -------------------------------------------------------------------------------------

_TLS_VERSIONS = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def tls_extension(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> dict[str, Any]:
    """The ASGI TLS extension for a connection: ``client_cert_name`` (Java's RFC 2253 DN of the verified client
    certificate, or None), ``client_cert_chain`` (its PEM), ``client_cert_subject`` (the parsed subject, for
    :func:`same_dn`), ``client_cert_error``, ``tls_version``, ``cipher_suite``, ``server_cert``."""
    ext: dict[str, Any] = {
        "server_cert": None,
        "client_cert_chain": [],
        "client_cert_name": None,
        "client_cert_error": None,
        "client_cert_subject": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
    }
    if ssl_object.context.verify_mode == ssl.CERT_NONE:
        return ext  # no client certificate was asked for, so none was verified
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return ext
    ext["client_cert_chain"] = [ssl.DER_cert_to_PEM_cert(der)]
    try:
        subject = subject_of(der)
    except ValueError as e:
        ext["client_cert_error"] = f"cannot read the certificate's subject: {e}"
        return ext
    ext["client_cert_subject"] = subject
    ext["client_cert_name"] = java_dn(subject)
    return ext


Address = tuple[str, int]


def _address(transport: asyncio.BaseTransport, which: str) -> Address | None:
    """A connection's local (``which="sockname"``) or remote (``"peername"``) address as uvicorn puts it in the
    ASGI scope (``scope["server"]``, ``scope["client"]``): host and port."""
    sock = transport.get_extra_info("socket")
    try:
        info = getattr(sock, "get" + which)() if sock is not None else transport.get_extra_info(which)
    except OSError:
        return None
    if isinstance(info, (tuple, list)) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return None


@dataclass(eq=False)
class _Connection:
    transport: asyncio.Transport
    #: the ASGI TLS extension (None: plain HTTP)
    tls: dict[str, Any] | None
    #: requests of the application whose response is not complete
    requests: int = 0


#: the HTTP/1.1 protocols of uvicorn :class:`Connections` can wrap: httptools (the C parser, llhttp) and h11
#: (pure Python)
HTTP_IMPLEMENTATIONS = ("httptools", "h11")


def httptools_available() -> bool:
    """Whether uvicorn's httptools protocol can be used (the ``httptools`` package is installed)."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return False
    return True


def _http_protocol(http: str) -> type[asyncio.Protocol]:
    """uvicorn's protocol class for ``http`` ("httptools" or "h11"); ImportError if httptools is missing."""
    if http == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    if http == "h11":
        return H11Protocol
    raise ValueError(f"http must be one of {', '.join(HTTP_IMPLEMENTATIONS)}, not {http!r}")


class Connections:
    """The connections of one uvicorn server, for the ASGI TLS extension and for cutting idle ones at shutdown.

    Give uvicorn both halves: ``uvicorn.Config(connections.app(app), http=connections.protocol, ...)``.
    :attr:`protocol` hands every call to uvicorn's own HTTP/1.1 protocol (``http``: "httptools", the one
    ``--http httptools`` names, whose parser is C; "h11", pure Python; "auto", the default: httptools where it is
    installed, else h11), and when a connection is made (over TLS: after the handshake, so the verified peer
    certificate is known) notes it by its two addresses; :meth:`app` finds the connection of each HTTP request by
    ``scope["server"]`` and ``scope["client"]`` and puts its TLS session into ``scope["extensions"]["tls"]``
    (:func:`tls_extension`). A request whose connection is not known (its addresses could not be read) gets no
    TLS extension: it is a caller without a client certificate. Both protocols set those two scope entries from
    the transport's socket, as :func:`_address` reads them.
    """

    def __init__(self, http: str = "auto") -> None:
        if http == "auto":
            http = "httptools" if httptools_available() else "h11"
        #: the protocol wrapped: "httptools" or "h11"
        self.http = http
        self._open: dict[tuple[Address, Address], _Connection] = {}
        self.protocol: type[asyncio.Protocol] = self._protocol_class(_http_protocol(http))

    def __len__(self) -> int:
        return len(self._open)

    def _protocol_class(self, http_protocol: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
        connections = self._open

        class PeerCertProtocol(asyncio.Protocol):
            """uvicorn's HTTP protocol, with the connection noted (see :class:`Connections`)."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self._http = http_protocol(*args, **kwargs)  # whatever uvicorn builds its protocol with
                self._key: tuple[Address, Address] | None = None
                self._connection: _Connection | None = None

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                tcp = cast(asyncio.Transport, transport)
                local, remote = _address(tcp, "sockname"), _address(tcp, "peername")
                if local is not None and remote is not None:
                    ssl_object = tcp.get_extra_info("ssl_object")
                    tls = tls_extension(ssl_object) if ssl_object is not None else None
                    self._key, self._connection = (local, remote), _Connection(tcp, tls)
                    connections[self._key] = self._connection
                self._http.connection_made(tcp)

            def connection_lost(self, exc: Exception | None) -> None:
                try:
                    self._http.connection_lost(exc)
                finally:
                    if self._key is not None and connections.get(self._key) is self._connection:
                        del connections[self._key]

            def data_received(self, data: bytes) -> None:
                self._http.data_received(data)

            def eof_received(self) -> bool | None:
                return self._http.eof_received()

            def pause_writing(self) -> None:
                self._http.pause_writing()

            def resume_writing(self) -> None:
                self._http.resume_writing()

        return PeerCertProtocol

    def app(self, app: ASGIApp) -> ASGIApp:
        """``app`` with the TLS extension in the scope of each HTTP request (see the class's docstring)."""
        connections = self._open

        async def with_tls(scope: Scope, receive: Receive, send: Send) -> None:
            server, client = scope.get("server"), scope.get("client")
            conn = None
            if scope["type"] == "http" and server and client:
                conn = connections.get(((str(server[0]), int(server[1])), (str(client[0]), int(client[1]))))
            if conn is None:
                await app(scope, receive, send)
                return
            if conn.tls is not None:
                scope = dict(scope)
                scope["extensions"] = {**(scope.get("extensions") or {}), "tls": conn.tls}
            conn.requests += 1
            complete = False

            async def sent(message: Message) -> None:
                nonlocal complete
                await send(message)
                if not complete and message["type"] == "http.response.body" and not message.get("more_body"):
                    complete = True
                    conn.requests -= 1

            try:
                await app(scope, receive, sent)
            finally:
                if not complete:
                    conn.requests -= 1

        return with_tls

    def abort_idle(self) -> int:
        """Cut every connection with no request in flight (at shutdown: an idle keep-alive connection, or one whose
        last response is sent, which over TLS would otherwise wait for the client's close_notify); how many."""
        idle = [c for c in self._open.values() if c.requests <= 0]
        for c in idle:
            c.transport.abort()
        return len(idle)
