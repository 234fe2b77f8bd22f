"""The DN of a client certificate as Java writes it, from certificates made by ``cryptography`` and parsed by it
(ksds.caching.tls), and the uvicorn interface ``ksds serve`` relies on (ksds.cli.serve.check_uvicorn).

The expected DNs are Java's ``X509Certificate.getSubjectX500Principal().getName()`` (RFC 2253): the most specific
RDN first, no spaces, ``, = + < > # ; " \\`` escaped with a backslash anywhere in a value, leading and trailing
spaces escaped, NUL as ``\\00``, non-ASCII text as it is, and a type without an RFC 2253 keyword (emailAddress) or
a value that is not a string type Java writes as text by ``#`` and the hex of the value's DER.
"""

from __future__ import annotations

import datetime
import inspect
from typing import Any

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from ksds.caching.tls import java_dn as java_dn_of_rdns
from ksds.caching.tls import name_rdns, same_dn, subject_of
from ksds.cli import serve
from ksds.cli._common import CliError

KEY = ec.generate_private_key(ec.SECP256R1())
NOW = datetime.datetime.now(datetime.timezone.utc)
EMAIL = "1.2.840.113549.1.9.1"


def attr(oid: x509.ObjectIdentifier, value: str, kind: _ASN1Type | None = None) -> x509.NameAttribute[str]:
    return x509.NameAttribute(oid, value) if kind is None else x509.NameAttribute(oid, value, _type=kind)


def certificate(*rdns: list[x509.NameAttribute[str]]) -> bytes:
    """A self-signed certificate whose subject has these RDNs (least specific first, as encoded), in DER."""
    name = x509.Name([x509.RelativeDistinguishedName(rdn) for rdn in rdns])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(KEY.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=1)).sign(KEY, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


def java_dn(der: bytes) -> str:
    return java_dn_of_rdns(subject_of(der))


def test_several_rdns_most_specific_first() -> None:
    der = certificate([attr(NameOID.COUNTRY_NAME, "US")], [attr(NameOID.ORGANIZATION_NAME, "ACME")],
                      [attr(NameOID.ORGANIZATIONAL_UNIT_NAME, "Zowe")], [attr(NameOID.COMMON_NAME, "client")],
                      [attr(NameOID.DOMAIN_COMPONENT, "example")], [attr(NameOID.LOCALITY_NAME, "Here")],
                      [attr(NameOID.STATE_OR_PROVINCE_NAME, "There")], [attr(NameOID.STREET_ADDRESS, "1 Main St")])
    assert java_dn(der) == "STREET=1 Main St,ST=There,L=Here,DC=example,CN=client,OU=Zowe,O=ACME,C=US"
    assert subject_of(der) == name_rdns(x509.load_der_x509_certificate(der).subject)


def test_rfc_4514_escapes_inside_a_value() -> None:
    der = certificate([attr(NameOID.ORGANIZATION_NAME, "ACME, Inc.")],
                      [attr(NameOID.COMMON_NAME, ' a,b+c"d\\e<f>g;h=i#j ')])
    assert java_dn(der) == 'CN=\\ a\\,b\\+c\\"d\\\\e\\<f\\>g\\;h\\=i\\#j\\ ,O=ACME\\, Inc.'
    assert java_dn(certificate([attr(NameOID.COMMON_NAME, "#lead")])) == "CN=\\#lead"
    assert java_dn(certificate([attr(NameOID.COMMON_NAME, "nul\0here")])) == "CN=nul\\00here"
    assert java_dn(certificate([attr(NameOID.COMMON_NAME, "  two  ")])) == "CN=\\ \\ two\\ \\ "
    subject = subject_of(der)
    # what a client writes for it: Java's RFC 2253 form, or getSubjectDN()'s quoted style (Zowe's gateway)
    assert same_dn('CN=\\ a\\,b\\+c\\"d\\\\e\\<f\\>g\\;h\\=i\\#j\\ ,O=ACME\\, Inc.', subject)
    assert same_dn('CN=" a,b+c\\"d\\\\e<f>g;h=i#j ", O="ACME, Inc."', subject)
    assert not same_dn("CN=a,O=ACME\\, Inc.", subject)


def test_a_multi_valued_rdn() -> None:
    der = certificate([attr(NameOID.ORGANIZATION_NAME, "ACME")],
                      [attr(NameOID.COMMON_NAME, "x"), attr(NameOID.USER_ID, "y"),
                       attr(NameOID.ORGANIZATIONAL_UNIT_NAME, "z")])
    encoded = [a.oid.dotted_string for a in x509.load_der_x509_certificate(der).subject.rdns[1]]
    keyword = {"2.5.4.3": "CN=x", "0.9.2342.19200300.100.1.1": "UID=y", "2.5.4.11": "OU=z"}
    assert java_dn(der) == "+".join(keyword[o] for o in encoded) + ",O=ACME"  # in encoded order
    assert java_dn(der) == "CN=x+OU=z+UID=y,O=ACME"
    assert same_dn("UID=y+CN=x+OU=z, O=ACME", subject_of(der))  # a client may write them in any order
    assert not same_dn("CN=x+OU=z,O=ACME", subject_of(der))


def test_an_email_address_attribute() -> None:
    der = certificate([attr(NameOID.ORGANIZATION_NAME, "ACME")], [attr(NameOID.EMAIL_ADDRESS, "a+b@example.com")],
                      [attr(NameOID.COMMON_NAME, "x")])
    value = b"a+b@example.com"
    hexed = "16" + f"{len(value):02x}" + value.hex()  # IA5String
    assert java_dn(der) == f"CN=x,{EMAIL}=#{hexed},O=ACME"
    email = subject_of(der)[1][0]
    assert email.der is not None and email.der in x509.load_der_x509_certificate(der).subject.public_bytes()
    assert email.text == "a+b@example.com"
    subject = subject_of(der)
    for written in (f"CN=x,{EMAIL}=#{hexed},O=ACME", 'CN=x, EMAILADDRESS="a+b@example.com", O=ACME',
                    "CN=x,E=a\\+b@example.com,O=ACME"):
        assert same_dn(written, subject), written
    assert not same_dn("CN=x,EMAILADDRESS=c@example.com,O=ACME", subject)
    assert not same_dn("CN=x,EMAILADDRESS=a+b@example.com,O=ACME", subject)  # an unescaped + is another AVA


def test_non_ascii_text() -> None:
    der = certificate([attr(NameOID.ORGANIZATION_NAME, "Ünïcödé GmbH", _ASN1Type.BMPString)],
                      [attr(NameOID.ORGANIZATIONAL_UNIT_NAME, "Zoë", _ASN1Type.T61String)],
                      [attr(NameOID.COMMON_NAME, "日本語 ✓ client")])
    # Java 17 reads every string type's bytes as UTF-8 (AVA.toRFC2253String): the BMPString's UTF-16 comes out as
    # NULs (\\00) and U+FFFD; newer JDKs write "O=Ünïcödé GmbH" (and the T61String as ISO 8859-1), and a header
    # in that form names the certificate too (tests/test_service_dn_format.py checks both against a real JVM)
    garbled = "".join("\\00" + (c if c.isascii() else "\ufffd") for c in "Ünïcödé GmbH")
    assert java_dn(der) == f"CN=日本語 ✓ client,OU=Zoë,O={garbled}"
    assert same_dn("cn=日本語 ✓ CLIENT, ou=ZOË, o=ünïcödé gmbh", subject_of(der))
    assert same_dn("CN=日本語 ✓ client,OU=ZoÃ«,O=Ünïcödé GmbH", subject_of(der))
    # a keyword type whose value is not a string type Java writes as text: the hex of its DER
    der = certificate([attr(NameOID.COMMON_NAME, "ü", _ASN1Type.UniversalString)])
    assert java_dn(der) == "CN=#1c04000000fc"
    der = certificate([attr(NameOID.COMMON_NAME, "vis", _ASN1Type.VisibleString)])
    assert java_dn(der) == "CN=#1a03766973"


def test_a_subject_that_is_not_valid_is_not_read() -> None:
    """Bytes a certificate's string type does not allow are refused (before: read with U+FFFD in their place, so
    certificates with different bytes had one DN); and so are bytes that are not a whole certificate."""
    der = certificate([attr(NameOID.COMMON_NAME, "client")])
    bad = der.replace(b"\x0c\x06client", b"\x0c\x06\xff\xfeient")
    assert bad != der
    with pytest.raises(ValueError):
        subject_of(bad)
    t61 = certificate([attr(NameOID.COMMON_NAME, "clienX", _ASN1Type.T61String)])
    with pytest.raises(ValueError):
        subject_of(t61.replace(b"\x14\x06clienX", b"\x14\x06clien\xe9"))
    # the certificate's DER up to its subject, wrapped as if it were whole (no key, no signature)
    cert = x509.load_der_x509_certificate(der)
    tbs = cert.tbs_certificate_bytes
    subject = cert.subject.public_bytes()
    head = tbs[: tbs.index(subject) + len(subject)]
    inner = head[:1] + _length(len(head) - 4) + head[4:] if head[1] == 0x82 else head
    stub = b"\x30" + _length(len(inner)) + inner
    with pytest.raises(ValueError):
        subject_of(stub)
    with pytest.raises(ValueError):
        subject_of(b"\x30\x03\x02\x01\x00")


def _length(n: int) -> bytes:
    return bytes([n]) if n < 0x80 else bytes([0x82]) + n.to_bytes(2, "big")


# --- the uvicorn interface ksds serve relies on -----------------------------------------------------------------


def test_the_installed_uvicorn_has_what_ksds_serve_needs() -> None:
    assert serve.uvicorn_mismatches() == [], uvicorn.__version__
    serve.check_uvicorn()
    params = inspect.signature(uvicorn.Config).parameters
    assert all(name in params for name in serve.CONFIG_OPTIONS)


def test_an_uvicorn_that_changed_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn.protocols.http.h11_impl as h11_impl

    async def serve_without_sockets(self: Any) -> None: ...

    monkeypatch.setattr(uvicorn.Server, "serve", serve_without_sockets)
    monkeypatch.setattr(h11_impl, "H11Protocol", object)
    with pytest.raises(CliError) as e:
        serve.check_uvicorn()
    text = str(e.value)
    assert f"uvicorn {uvicorn.__version__} " in text and serve.TESTED_UVICORN in text
    assert "uvicorn.Server.serve() takes no sockets" in text
    assert "H11Protocol is not an asyncio protocol" in text
    monkeypatch.undo()
    real = uvicorn.Config.__init__

    def config_without_http(self: Any, app: Any, **kw: Any) -> None:
        real(self, app)

    monkeypatch.setattr(uvicorn.Config, "__init__", config_without_http)
    assert serve.uvicorn_mismatches() == [f"uvicorn.Config takes no {', '.join(serve.CONFIG_OPTIONS)}"]
