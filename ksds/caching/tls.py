"""Client certificates for the caching service: the peer certificate in the ASGI scope, and its DN as Java writes it.

Zowe's gateway tells the caching service who the caller is in the ``X-Certificate-DistinguishedName`` header; the
caching service believes it (Zowe issue 4423). Here, when the service runs with TLS and a CA for client
certificates, the DN of the verified client certificate is the identity, and a header that names another DN is
refused. Two pieces make that work:

* :class:`PeerCertH11Protocol`: uvicorn's h11 protocol, which also puts the TLS session into the scope as the ASGI
  TLS extension (``scope["extensions"]["tls"]``: ``client_cert_name``, ``client_cert_chain``, ``tls_version``, ...).
  uvicorn 0.54 does not expose the peer certificate to the application, so the protocol (``uvicorn.Config(http=...)``)
  reads it from the connection's ``ssl_object`` when the connection is made (after the handshake);
* :func:`java_dn`: the certificate's subject DN formatted exactly as Java's
  ``X509Certificate.getSubjectX500Principal().getName()`` (RFC 2253), which is what Zowe itself uses when it reads
  the DN from the TLS session (its "modulith" mode). :func:`same_dn` compares a DN written by a client (RFC 2253, or
  the ``"CN=x, OU=y, O=z"`` style of Java's ``getSubjectDN().getName()`` that Zowe's gateway puts in the header) with
  the certificate's, attribute by attribute.

The RFC 2253 format, as Java writes it:

* the RDNs in reverse order of the certificate's encoding (the most specific first), joined by ``,`` with no space;
  the values of a multi-valued RDN joined by ``+`` in their encoded order;
* the attribute types CN, C, L, ST, O, OU, STREET, DC and UID by keyword, every other one (e.g. emailAddress) by
  its dotted OID, with the value as ``#`` and the lowercase hex of its DER encoding;
* a string value (PrintableString, UTF8String, IA5String, T61String, BMPString, GeneralString) as text, with a
  backslash before each of ``, = + < > # ; " \\``, before leading and trailing spaces, and NUL as ``\\00``.
"""

from __future__ import annotations

import asyncio
import binascii
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["PeerCertH11Protocol", "SubjectAttribute", "java_dn", "parse_dn", "same_dn", "subject_of", "tls_extension"]

# --- DER, just enough to find a certificate's subject ----------------------------------------------------------


class DerError(ValueError):
    """The bytes are not the DER a certificate should be."""


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """The tag, the start of the contents and the end of the element at ``pos``."""
    if pos + 2 > len(data):
        raise DerError("truncated element")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte tags are not expected in a certificate name")
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise DerError("bad length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    end = pos + length
    if end > len(data):
        raise DerError("element longer than its container")
    return tag, pos, end


def _children(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(tag, element start, contents start, end) of each element in ``data[start:end]``."""
    pos = start
    while pos < end:
        tag, body, stop = _tlv(data, pos)
        if stop > end:
            raise DerError("element longer than its container")
        yield tag, pos, body, stop
        pos = stop


def _oid(raw: bytes) -> str:
    if not raw:
        raise DerError("empty OID")
    arcs: list[int] = []
    value = 0
    for b in raw:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


#: DER string types Java writes as text in RFC 2253 (``AVA.isDerString(value, false)``), and how Java decodes them
_STRING_CODECS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString
    0x14: "latin-1",  # T61String (Java: ISO-8859-1)
    0x16: "ascii",  # IA5String
    0x1B: "ascii",  # GeneralString
    0x1E: "utf-16-be",  # BMPString
}


@dataclass(frozen=True)
class SubjectAttribute:
    """One attribute of a DN: its OID, and its value as text (a DER string type) and/or as the DER element."""

    oid: str
    text: str | None
    der: bytes | None = None


def _attribute(data: bytes, start: int, end: int) -> SubjectAttribute:
    parts = list(_children(data, start, end))
    if len(parts) != 2 or parts[0][0] != 0x06:
        raise DerError("an attribute is not (OID, value)")
    _, _, ob, oe = parts[0]
    vtag, vstart, vbody, vend = parts[1]
    codec = _STRING_CODECS.get(vtag)
    text = data[vbody:vend].decode(codec, errors="replace") if codec else None
    return SubjectAttribute(_oid(data[ob:oe]), text, data[vstart:vend])


def subject_of(der: bytes) -> list[list[SubjectAttribute]]:
    """The subject of a DER certificate: its RDNs in encoded order, each a list of attributes."""
    tag, body, end = _tlv(der, 0)
    if tag != 0x30:
        raise DerError("a certificate is a SEQUENCE")
    tag, tbs, tbs_end = _tlv(der, body)
    if tag != 0x30:
        raise DerError("tbsCertificate is a SEQUENCE")
    fields = list(_children(der, tbs, tbs_end))
    if fields and fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject
    if len(fields) < 5 or fields[4][0] != 0x30:
        raise DerError("no subject in the certificate")
    _, _, sbody, send = fields[4]
    rdns: list[list[SubjectAttribute]] = []
    for rtag, _, rbody, rend in _children(der, sbody, send):
        if rtag != 0x31:
            raise DerError("an RDN is a SET")
        rdn = []
        for atag, _, abody, aend in _children(der, rbody, rend):
            if atag != 0x30:
                raise DerError("an attribute is a SEQUENCE")
            rdn.append(_attribute(der, abody, aend))
        rdns.append(rdn)
    return rdns


# --- DNs as Java writes them ----------------------------------------------------------------------------------

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

#: keywords a client may use when writing a DN (RFC 2253/4514, RFC 1779, Java's X500Name.toString, OpenSSL)
_KEYWORD_OIDS = {kw: oid for oid, kw in RFC2253_KEYWORDS.items()} | {
    "S": "2.5.4.8",
    "EMAILADDRESS": "1.2.840.113549.1.9.1",
    "EMAIL": "1.2.840.113549.1.9.1",
    "E": "1.2.840.113549.1.9.1",
    "SERIALNUMBER": "2.5.4.5",
    "T": "2.5.4.12",
    "TITLE": "2.5.4.12",
    "SURNAME": "2.5.4.4",
    "SN": "2.5.4.4",
    "GIVENNAME": "2.5.4.42",
    "INITIALS": "2.5.4.43",
    "GENERATION": "2.5.4.44",
    "DNQ": "2.5.4.46",
    "DNQUALIFIER": "2.5.4.46",
    "PSEUDONYM": "2.5.4.65",
    "POSTALCODE": "2.5.4.17",
    "ORGANIZATIONIDENTIFIER": "2.5.4.97",
}

_ESCAPED = set(',=+<>#;"\\')


def _java_value(attr: SubjectAttribute) -> str:
    keyword = RFC2253_KEYWORDS.get(attr.oid)
    if keyword is None or attr.text is None:
        return "#" + (attr.der or b"").hex()
    out = []
    for c in attr.text:
        if c in _ESCAPED:
            out.append("\\" + c)
        elif c == "\0":
            out.append("\\00")
        else:
            out.append(c)
    # a backslash before leading and trailing spaces (and CRs), as Java does
    chars = out
    lead = 0
    while lead < len(chars) and chars[lead] in (" ", "\r"):
        lead += 1
    trail = len(chars) - 1
    while trail >= 0 and chars[trail] in (" ", "\r"):
        trail -= 1
    return "".join(("\\" + c) if i < lead or i > trail else c for i, c in enumerate(chars))


def java_dn(rdns: list[list[SubjectAttribute]]) -> str:
    """The DN as Java's ``X500Principal.getName()`` writes it (RFC 2253), e.g. ``CN=gateway,OU=Zowe,O=ACME,C=US``."""
    parts = []
    for rdn in reversed(rdns):
        parts.append(
            "+".join(f"{RFC2253_KEYWORDS.get(a.oid, a.oid)}={_java_value(a)}" for a in rdn)
        )
    return ",".join(parts)


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
            tag, body, end = _tlv(der, 0)
        except (binascii.Error, DerError) as e:
            raise ValueError(f"bad hex value {s!r}") from e
        codec = _STRING_CODECS.get(tag)
        return SubjectAttribute(oid, der[body:end].decode(codec, errors="replace") if codec else None, der)
    return SubjectAttribute(oid, _unescape(raw))


def parse_dn(text: str) -> list[list[SubjectAttribute]]:
    """A DN as a client writes it (``CN=a,O=b``, ``CN=a, O=b``, ``CN="a, b"``, ``EMAILADDRESS=...``), most
    specific RDN first, as written. ValueError if it is not a DN."""
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
    """Whether the DN a client wrote names the certificate's subject: the same attributes in the same RDNs, in
    the written order (most specific first), values compared without case and with runs of spaces as one."""
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
    except DerError as e:
        ext["client_cert_error"] = f"cannot read the certificate's subject: {e}"
        return ext
    ext["client_cert_subject"] = subject
    ext["client_cert_name"] = java_dn(subject)
    return ext


class PeerCertH11Protocol(H11Protocol):
    """uvicorn's h11 protocol that also gives the application the ASGI TLS extension (the client certificate).

    Use as ``uvicorn.Config(app, http=PeerCertH11Protocol, ...)``. The TLS handshake is over when asyncio calls
    :meth:`connection_made`, so the verified peer certificate is known for every request of the connection.
    """

    def abort_if_idle(self) -> None:
        """Cut the connection now if no request is in flight on it (at shutdown: an idle keep-alive connection, or
        one whose last response is sent, which over TLS would otherwise wait for the client's close_notify)."""
        if self.cycle is None or self.cycle.response_complete:
            self.transport.abort()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        tls = tls_extension(ssl_object)
        inner = self.app

        async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
            raw = cast(dict[str, Any], scope)
            extensions = dict(raw.get("extensions") or {})
            extensions["tls"] = tls
            raw["extensions"] = extensions
            await inner(scope, receive, send)

        self.app = app
