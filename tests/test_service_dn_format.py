"""``ksds serve --dn-format rfc2253|legacy``: the DN of a verified client certificate, byte for byte as the Zowe in
use writes X-Certificate-DistinguishedName, so that a caller's partition stays the same when it moves from the
header (over HTTP, through a gateway) to TLS.

The two forms are Java 17's: ``getSubjectX500Principal().getName()`` (RFC 2253, newer gateways and the newest
caching service) and ``getSubjectDN().getName()`` (``X500Name.toString``, the v3.0 gateway). The expected strings
are the reference's table (shared/reference/zowe-current.md, "The DN forms") and what a JVM printed for the same
certificates; :func:`test_both_forms_are_the_jvms` asks a real JVM about many more.
"""

from __future__ import annotations

import base64
import datetime
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
from servers import Servers, make_pki, tls_client

from ksds.caching.tls import DN_FORMATS, java_dn, same_dn, subject_of

DN = "X-Certificate-DistinguishedName"
SID = "X-CS-Service-ID"
KEY = ec.generate_private_key(ec.SECP256R1())
NOW = datetime.datetime.now(datetime.timezone.utc)

Attr = tuple[ObjectIdentifier, str] | tuple[ObjectIdentifier, str, _ASN1Type]


def name(*rdns: list[Attr]) -> x509.Name:
    """RDNs least specific first, as encoded (the DN strings list them the other way round)."""
    return x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(*a) for a in rdn]) for rdn in rdns])


def certificate(subject: x509.Name) -> bytes:
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(KEY.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=1)).sign(KEY, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


C, ST, L, ORG, OU, CN = (NameOID.COUNTRY_NAME, NameOID.STATE_OR_PROVINCE_NAME, NameOID.LOCALITY_NAME,
                       NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.COMMON_NAME)
UID, EMAIL = NameOID.USER_ID, NameOID.EMAIL_ADDRESS

#: the reference's table: subject, getSubjectDN().getName() (legacy), getSubjectX500Principal().getName()
VECTORS = {
    "several RDNs": (
        name([(CN, "APIMTST")], [(OU, "CA")], [(ORG, "Broadcom")], [(L, "Prague")], [(ST, "Prague")], [(C, "CZ")]),
        "C=CZ, ST=Prague, L=Prague, O=Broadcom, OU=CA, CN=APIMTST",
        "C=CZ,ST=Prague,L=Prague,O=Broadcom,OU=CA,CN=APIMTST",
    ),
    "a comma in a value, an email address": (
        name([(C, "CZ")], [(ST, "Prague")], [(ORG, "Zowe, Inc.")], [(OU, "API ML")], [(CN, "zowe-client")],
             [(EMAIL, "user@example.com")]),
        'EMAILADDRESS=user@example.com, CN=zowe-client, OU=API ML, O="Zowe, Inc.", ST=Prague, C=CZ',
        "1.2.840.113549.1.9.1=#161075736572406578616d706c652e636f6d,CN=zowe-client,OU=API ML,O=Zowe\\, Inc.,"
        "ST=Prague,C=CZ",
    ),
    "special characters": (
        name([(C, "US")], [(ORG, "A+B;C<D>")], [(OU, "x=y")], [(CN, "#hash")]),
        'CN="#hash", OU="x=y", O="A+B;C<D>", C=US',
        "CN=\\#hash,OU=x\\=y,O=A\\+B\\;C\\<D\\>,C=US",
    ),
    "a multi-valued RDN": (
        name([(ORG, "Org")], [(CN, "svc"), (UID, "42")]),
        "CN=svc + UID=42, O=Org",
        "CN=svc+UID=42,O=Org",
    ),
}


@pytest.mark.parametrize("case", list(VECTORS))
def test_the_reference_vectors_in_both_forms(case: str) -> None:
    subject, legacy, rfc2253 = VECTORS[case]
    rdns = subject_of(certificate(subject))
    assert java_dn(rdns, "legacy") == legacy
    assert java_dn(rdns, "rfc2253") == rfc2253 == java_dn(rdns)
    for written in (legacy, rfc2253):  # a header in either form names the certificate
        assert same_dn(written, rdns), written
    other = subject_of(certificate(name([(C, "CZ")], [(CN, "APIMTST2")])))
    assert not same_dn(legacy, other) and not same_dn(rfc2253, other)
    with pytest.raises(ValueError, match="DN format 'x500'"):
        java_dn(rdns, "x500")  # type: ignore[arg-type]


def test_the_rules_of_the_legacy_form() -> None:
    """``AVA.toKeywordValueString``: quotes (not backslashes) around a value with a special character, a space
    at either end or two spaces in a row; ``"`` and ``\\`` escaped inside; other characters (``@``, ``_``, tab,
    non-ASCII) as they are; X500Name's keywords (EMAILADDRESS, T, SERIALNUMBER, ...) or ``OID.``; a value that is
    not a string type in lowercase hex (Java 17's HexFormat); each string type in its own charset."""
    cases: list[tuple[list[list[Attr]], str, str]] = [
        ([[(L, "a  b")], [(ORG, "trail ")], [(OU, " lead")], [(CN, "  two  inner  ")]],
         'CN="  two  inner  ", OU=" lead", O="trail ", L="a  b"',
         "CN=\\ \\ two  inner\\ \\ ,OU=\\ lead,O=trail\\ ,L=a  b"),
        ([[(CN, '"abc"')], [(OU, 'a"b\\c')], [(ORG, '"x')], [(L, "new\nline")], [(NameOID.STREET_ADDRESS, "cr\rhere")]],
         'STREET=cr\rhere, L="new\nline", O="\\"x", OU="a\\"b\\\\c", CN="abc"',
         'STREET=cr\rhere,L=new\nline,O=\\"x,OU=a\\"b\\\\c,CN=\\"abc\\"'),
        ([[(CN, "a@b_c!d$e%f&g*h[i]j{k}l|m~n^o`p")], [(OU, "tab\there")], [(ORG, "nul\0x")]],
         "O=nul\0x, OU=tab\there, CN=a@b_c!d$e%f&g*h[i]j{k}l|m~n^o`p",
         "O=nul\\00x,OU=tab\there,CN=a@b_c!d$e%f&g*h[i]j{k}l|m~n^o`p"),
        ([[(CN, "vis", _ASN1Type.VisibleString)], [(OU, "ü", _ASN1Type.UniversalString)],
          [(NameOID.SERIAL_NUMBER, "123")], [(NameOID.TITLE, "Dr, X")], [(NameOID.DN_QUALIFIER, "q")],
          [(NameOID.DOMAIN_COMPONENT, "example")], [(ObjectIdentifier("1.2.3.4"), "x,y")]],
         'OID.1.2.3.4="x,y", DC=example, DNQ=q, T="Dr, X", SERIALNUMBER=123, OU=ü, CN=#1a03766973',
         "1.2.3.4=#0c03782c79,DC=example,2.5.4.46=#130171,2.5.4.12=#0c0544722c2058,2.5.4.5=#1303313233,"
         "OU=#1c04000000fc,CN=#1a03766973"),
        ([[(CN, "ia5 value", _ASN1Type.IA5String)], [(EMAIL, "a+b@example.com")], [(ORG, "P")]],
         'O=P, EMAILADDRESS="a+b@example.com", CN=ia5 value',
         "O=P,1.2.840.113549.1.9.1=#160f612b62406578616d706c652e636f6d,CN=ia5 value"),
        # a BMPString and a T61String: the legacy form reads them in their charsets (T61String as ISO 8859-1),
        # Java 17's RFC 2253 form reads every string type's bytes as UTF-8
        ([[(L, "ABC", _ASN1Type.BMPString)], [(OU, "Zoë", _ASN1Type.T61String)], [(ST, "𝄞 clef")]],
         "ST=𝄞 clef, OU=ZoÃ«, L=ABC",
         "ST=𝄞 clef,OU=Zoë,L=\\00A\\00B\\00C"),
        ([[(NameOID.ORGANIZATION_NAME, "ACME")], [(CN, "x"), (UID, "y"), (OU, "z")]],
         "CN=x + OU=z + UID=y, O=ACME", "CN=x+OU=z+UID=y,O=ACME"),  # an RDN's values in their DER order
        ([[(CN, "only")]], "CN=only", "CN=only"),
    ]
    for rdns, legacy, rfc2253 in cases:
        subject = subject_of(certificate(name(*rdns)))
        assert (java_dn(subject, "legacy"), java_dn(subject, "rfc2253")) == (legacy, rfc2253)
        assert same_dn(legacy, subject) and same_dn(rfc2253, subject), legacy
    # the newer JDKs' RFC 2253 form of a BMPString (its text) names the certificate too
    subject = subject_of(certificate(name([(L, "ABC", _ASN1Type.BMPString)], [(OU, "Zoë", _ASN1Type.T61String)])))
    assert same_dn("OU=ZoÃ«,L=ABC", subject) and not same_dn("OU=Zoe,L=ABC", subject)


# --- against a real JVM -------------------------------------------------------------------------------------------

JAVA_PRINTER = """
import java.io.*;
import java.security.cert.*;
import java.util.Base64;

public class DnForms {
    public static void main(String[] args) throws Exception {
        CertificateFactory cf = CertificateFactory.getInstance("X.509");
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, "UTF-8"));
        PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), true, "UTF-8");
        Base64.Encoder b64 = Base64.getEncoder();
        for (String line; (line = in.readLine()) != null; ) {
            X509Certificate c = (X509Certificate) cf.generateCertificate(
                new ByteArrayInputStream(Base64.getDecoder().decode(line)));
            out.println(b64.encodeToString(c.getSubjectDN().getName().getBytes("UTF-8")) + " "
                + b64.encodeToString(c.getSubjectX500Principal().getName().getBytes("UTF-8")));
        }
    }
}
"""

_TYPES: list[Any] = [None, _ASN1Type.UTF8String, _ASN1Type.PrintableString, _ASN1Type.IA5String,
                     _ASN1Type.T61String, _ASN1Type.BMPString, _ASN1Type.UniversalString, _ASN1Type.VisibleString]
_OIDS = [CN, ORG, OU, L, NameOID.STREET_ADDRESS, NameOID.DOMAIN_COMPONENT, UID, EMAIL, NameOID.TITLE,
         NameOID.SURNAME, NameOID.GIVEN_NAME, NameOID.SERIAL_NUMBER, NameOID.PSEUDONYM, ObjectIdentifier("1.2.3.4.5"),
         NameOID.DN_QUALIFIER, NameOID.GENERATION_QUALIFIER, NameOID.INITIALS]
_CHARS = list("abcXYZ019 '()+,-./:=?\"\\#;<>!@$%^&*_[]{}|~`\n\r\t\0") + ["é", "ü", "日", "✓", "𝄞", "\u00a0", "\u2028"]


def _random_subjects(rng: random.Random, count: int) -> Iterator[bytes]:
    """Certificates whose subjects cryptography reads: random attributes, string types and characters."""
    made = 0
    while made < count:
        rdns = []
        for _ in range(rng.randint(1, 4)):
            rdn = []
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                text = "".join(rng.choice(_CHARS) for _ in range(rng.randint(1, 8)))
                kind = rng.choice(_TYPES)
                try:
                    rdn.append(x509.NameAttribute(rng.choice(_OIDS), text, **({} if kind is None else
                                                                               {"_type": kind})))
                except ValueError:  # a value its type (or its attribute) does not allow
                    continue
            if rdn:
                rdns.append(x509.RelativeDistinguishedName(rdn))
        if not rdns:
            continue
        try:
            der = certificate(x509.Name(rdns))
            subject_of(der)
        except ValueError:
            continue
        made += 1
        yield der


def test_both_forms_are_the_jvms(tmp_path: Path) -> None:
    """Java 17 (``java`` on PATH: the machine's default-jdk) prints both forms of the reference's certificates and
    of 300 random subjects (every string type, the characters both forms treat specially, non-ASCII, multi-valued
    RDNs, types without a keyword); each must be what ksds writes, and name the certificate in :func:`same_dn`."""
    java = shutil.which("java")
    if java is None:
        pytest.skip("no java on PATH (apt-get install default-jdk-headless)")
    version = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60).stderr
    ders = [certificate(subject) for subject, _, _ in VECTORS.values()]
    ders += list(_random_subjects(random.Random(20260513), 300))
    (tmp_path / "DnForms.java").write_text(JAVA_PRINTER)
    r = subprocess.run([java, "DnForms.java"], input="".join(base64.b64encode(d).decode() + "\n" for d in ders),
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(ders)
    wrong = []
    for der, line in zip(ders, lines, strict=True):
        legacy, rfc2253 = (base64.b64decode(part).decode("utf-8") for part in line.split())
        subject = subject_of(der)
        for fmt, want in (("legacy", legacy), ("rfc2253", rfc2253)):
            if java_dn(subject, fmt) != want:  # type: ignore[arg-type]
                wrong.append((fmt, want, java_dn(subject, fmt)))  # type: ignore[arg-type]
            assert same_dn(want, subject), want
    assert not wrong, (version, wrong[:5])
    assert [legacy for _, legacy, _ in VECTORS.values()] == [
        base64.b64decode(line.split()[0]).decode() for line in lines[: len(VECTORS)]]


# --- through real servers: the partition when TLS is turned on ----------------------------------------------------


def _leaf(pki: Path, stem: str, subject: x509.Name) -> None:
    """A client certificate for ``subject`` signed by the test CA (``servers.make_pki``)."""
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(NOW - datetime.timedelta(minutes=5))
        .not_valid_after(NOW + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    (pki / f"{stem}.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    (pki / f"{stem}.key").write_bytes(key.private_bytes(
        Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


ZOWE_SUBJECT, ZOWE_LEGACY, ZOWE_RFC = VECTORS["a comma in a value, an email address"]
SPECIAL_SUBJECT = name([(C, "US")], [(ORG, "A+B;C<D>")], [(OU, "x=y")], [(CN, "#hash"), (UID, "42")])
SPECIAL_LEGACY = 'CN="#hash" + UID=42, OU="x=y", O="A+B;C<D>", C=US'
SPECIAL_RFC = "CN=\\#hash+UID=42,OU=x\\=y,O=A\\+B\\;C\\<D\\>,C=US"


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(tmp_path)
    try:
        yield s
    finally:
        s.stop_all()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = make_pki(tmp_path_factory.mktemp("pki"))
    _leaf(d, "zowe-client", ZOWE_SUBJECT)
    _leaf(d, "special", SPECIAL_SUBJECT)
    return d


def test_a_partition_stays_when_tls_is_turned_on(pki: Path, servers: Servers, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Callers first reach ``ksds serve`` over HTTP through a gateway that writes the header (a v3.0 gateway:
    the legacy form; a newer one: RFC 2253); then the operator turns TLS on and they connect with their
    certificates. With the ``--dn-format`` of their gateway they land in the partition they had: entries, service
    ids and map items alike; with the other form they would not. All four servers share one data set."""
    dataset = str(tmp_path / "cache.ksds")
    tls = ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"), "--tls-ca", str(pki / "ca.pem")]
    http = servers.start("--dataset", dataset, name="http")
    with http.client() as c:
        for dn, value in ((ZOWE_LEGACY, "legacy"), (ZOWE_RFC, "rfc2253"), (SPECIAL_LEGACY, "legacy"),
                          (SPECIAL_RFC, "rfc2253")):
            assert c.post("/cache", json={"key": "k", "value": value}, headers={DN: dn}).status_code == 201
            assert c.post("/cache", json={"key": "k", "value": value + "+gw"},
                          headers={DN: dn, SID: "gw"}).status_code == 201
            r = c.post("/cache-list/invalidTokens", json={"key": "t1", "value": value}, headers={DN: dn})
            assert r.status_code == 201
    legacy = servers.start("--dataset", dataset, *tls, "--dn-format", "legacy", name="tls-legacy")
    rfc2253 = servers.start("--dataset", dataset, *tls, name="tls-rfc2253")
    monkeypatch.setenv("KSDS_DN_FORMAT", "legacy")
    from_env = servers.start("--dataset", dataset, *tls, name="tls-env-legacy")
    flag_wins = servers.start("--dataset", dataset, *tls, "--dn-format", "rfc2253", name="tls-flag-rfc2253")
    monkeypatch.delenv("KSDS_DN_FORMAT")
    for server, fmt in ((legacy, "legacy"), (rfc2253, "rfc2253"), (from_env, "legacy"), (flag_wins, "rfc2253")):
        for who, (dn_legacy, dn_rfc) in (("zowe-client", (ZOWE_LEGACY, ZOWE_RFC)),
                                         ("special", (SPECIAL_LEGACY, SPECIAL_RFC))):
            mine, theirs = (dn_legacy, dn_rfc) if fmt == "legacy" else (dn_rfc, dn_legacy)
            with tls_client(server, pki, who) as c:
                r = c.get("/cache/k")  # no header: the certificate is the caller
                assert (r.status_code, r.json()) == (200, {"key": "k", "value": fmt, "serviceId": mine,
                                                          "created": r.json()["created"]}), (server.name, who)
                assert c.get("/cache/k", headers={SID: "gw"}).json()["serviceId"] == f"{mine}, SERVICE=gw"
                assert c.get("/cache/k", headers={SID: "gw"}).json()["value"] == fmt + "+gw"
                assert c.get("/cache-list/").json() == {"invalidTokens": {"t1": fmt}}
                assert c.post("/cache-query", json={"invalidTokens": ["t1", "t2"]}).json() == {
                    "invalidTokens": {"t1": fmt}}
                # a header naming the certificate in either form is the same caller, in the server's form
                for header in (mine, theirs):
                    r = c.get("/cache/k", headers={DN: header})
                    assert (r.status_code, r.json()["serviceId"]) == (200, mine), (server.name, header)
                # a header naming another certificate's DN, in either form, is refused
                other = ZOWE_LEGACY if who == "special" else SPECIAL_RFC
                r = c.get("/cache/k", headers={DN: other})
                assert r.status_code == 401 and r.json()["messages"][0]["messageNumber"] == "ZWECS800E"
    # what the certificate writes lands where the gateway's header reads it
    with tls_client(legacy, pki, "zowe-client") as c:
        assert c.put("/cache", json={"key": "k", "value": "via tls"}).status_code == 204
    with http.client() as c:
        assert c.get("/cache/k", headers={DN: ZOWE_LEGACY}).json()["value"] == "via tls"
        assert c.get("/cache/k", headers={DN: ZOWE_RFC}).json()["value"] == "rfc2253"


def test_a_wrong_dn_format_is_one_line(tmp_path: Path) -> None:
    for args, env, text in (
        (["--dn-format", "x500"], {}, "'x500' is not rfc2253 or legacy"),
        ([], {"KSDS_DN_FORMAT": "RFC2253"}, "'RFC2253' is not rfc2253 or legacy (--dn-format or KSDS_DN_FORMAT)"),
    ):
        environ = {k: v for k, v in os.environ.items() if k != "KSDS_DN_FORMAT"} | env
        r = subprocess.run([sys.executable, "-m", "ksds", "serve", "--storage", "memory", *args],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path, env=environ)
        assert r.returncode == 2 and text in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert DN_FORMATS == ("rfc2253", "legacy")


def test_the_http_servers_use_the_header_as_it_is(servers: Servers) -> None:
    """Without TLS the header is the DN as sent, whatever ``--dn-format`` says (the format is that of the
    certificate's DN only)."""
    s = servers.start("--storage", "memory", "--dn-format", "legacy", name="http-legacy")
    with s.client() as c:
        assert c.post("/cache", json={"key": "k", "value": "v"}, headers={DN: ZOWE_RFC}).status_code == 201
        assert c.get("/cache/k", headers={DN: ZOWE_RFC}).json()["serviceId"] == ZOWE_RFC
        assert c.get("/cache/k", headers={DN: ZOWE_LEGACY}).status_code == 404
    assert httpx.get(s.base + "/cachingservice/application/health", timeout=10).status_code == 200  # no TLS
