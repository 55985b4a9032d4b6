"""authz's own verdict on a presented client certificate chain (downstream_mtls), case by case."""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from authz.check.clientcert import NOT_PRESENTED, ClientCertificates
from authz.config.model import DownstreamMtls, Pem, SanMatcher
from authz.dev.certs import Issued, issue
from authz.policy.reasons import Reason
from tests.pki import Pki

NOW = dt.datetime.now(dt.UTC)


def _verifier(pki: Pki, depth: int = 1, sans: tuple[SanMatcher, ...] = (), crl: bool = True) -> ClientCertificates:
    crls = pki.crl + pki.intermediate_crl if crl else b""
    return ClientCertificates(
        DownstreamMtls(
            ca=Pem("filename", "ca.pem"),
            ca_pem=pki.root.cert_pem,
            crl=Pem("filename", "crl.pem") if crl else None,
            crl_pem=crls,
            max_verify_depth=depth,
            match_subject_alt_names=sans,
        )
    )


def _chain(*certs: Issued) -> str:
    return "".join(c.cert_pem.decode() for c in certs)


def test_a_certificate_from_the_ca_is_valid(pki: Pki) -> None:
    verdict = _verifier(pki).verify(_chain(pki.client), NOW)
    assert verdict.valid and verdict.presented and verdict.reason == Reason.VALID_CLIENT_CERTIFICATE


def test_none_presented_is_required_not_invalid(pki: Pki) -> None:
    assert _verifier(pki).verify(None, NOW) is NOT_PRESENTED
    assert NOT_PRESENTED.reason == Reason.CLIENT_CERTIFICATE_REQUIRED and not NOT_PRESENTED.valid


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("expired", "expired on"),
        ("foreign", "not issued by a certificate authority this site trusts"),
        ("forged", "not issued by a certificate authority this site trusts"),
        ("revoked", "has been revoked"),
    ],
)
def test_each_bad_certificate_is_invalid_with_its_reason(pki: Pki, case: str, words: str) -> None:
    verdict = _verifier(pki).verify(_chain(getattr(pki, case)), NOW)
    assert verdict.presented and not verdict.valid
    assert verdict.reason == Reason.INVALID_CLIENT_CERTIFICATE
    assert words in verdict.detail


def test_an_intermediate_needs_max_verify_depth_2(pki: Pki) -> None:
    chain = _chain(pki.via_intermediate, pki.intermediate)
    refused = _verifier(pki, depth=1).verify(chain, NOW)
    assert not refused.valid and "max_verify_depth 1" in refused.detail
    assert _verifier(pki, depth=2).verify(chain, NOW).valid
    assert _verifier(pki, depth=0).verify(chain, NOW).valid  # 0: no limit
    # A certificate without SANs is a client certificate all the same (Envoy accepts them).
    assert _verifier(pki).verify(_chain(issue(pki.root, "cn only", client=True)), NOW).valid
    # Without the intermediate in the chain it cannot be built.
    assert not _verifier(pki, depth=2).verify(_chain(pki.via_intermediate), NOW).valid
    # The intermediate's own CRL revokes its leaves.
    revoked = _verifier(pki, depth=2).verify(_chain(pki.revoked_via_intermediate, pki.intermediate), NOW)
    assert not revoked.valid and "revoked" in revoked.detail


def test_a_crl_is_checked_only_when_signed_by_the_issuer(pki: Pki) -> None:
    from authz.dev.certs import revocation_list

    # A CRL that names root as issuer but is signed by another key revokes nothing.
    impostor = Issued(pki.root.cert, pki.other_root.key)
    fake = revocation_list(impostor, [pki.client.cert])
    verifier = ClientCertificates(DownstreamMtls(ca=Pem("filename", "ca.pem"), ca_pem=pki.root.cert_pem, crl_pem=fake))
    assert verifier.verify(_chain(pki.client), NOW).valid
    assert _verifier(pki, crl=False).verify(_chain(pki.revoked), NOW).valid  # no CRL, no revocation


def test_subject_alt_names_match_in_full_as_re2(pki: Pki) -> None:
    sans = (SanMatcher("email", r".*@example\.com"),)
    assert _verifier(pki, sans=sans).verify(_chain(pki.client), NOW).valid
    wrong = _verifier(pki, sans=sans).verify(_chain(pki.wrong_san), NOW)
    assert not wrong.valid and "subject alternative name" in wrong.detail
    # Anchored at both ends, as Envoy's safe_regex: "example.com" alone matches no email.
    assert not _verifier(pki, sans=(SanMatcher("email", "example.com"),)).verify(_chain(pki.client), NOW).valid
    for kind, pattern in (("dns", r"[a-z]+\.devices\.example\.com"), ("uri", r"spiffe://example\.com/.+")):
        assert _verifier(pki, sans=(SanMatcher(kind, pattern),)).verify(_chain(pki.client), NOW).valid
    # Any one of several matchers is enough.
    either = (SanMatcher("uri", "nothing"), SanMatcher("email", "alice@example\\.com"))
    assert _verifier(pki, sans=either).verify(_chain(pki.client), NOW).valid


def _with_other_sans(pki: Pki, names: list[x509.GeneralName]) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "upn user")]))
        .issuer_name(pki.root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(pki.root.key.public_key()), critical=False)
        .sign(pki.root.key, hashes.SHA256())
    )
    return Issued(cert, key)


def test_user_principal_names_and_ip_addresses(pki: Pki) -> None:
    name = b"carol@corp.example"
    upn = x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), bytes([0x0C, len(name)]) + name)
    holder = _with_other_sans(pki, [upn, x509.IPAddress(ipaddress.ip_address("10.1.2.3"))])
    chain = _chain(holder)
    assert _verifier(pki, sans=(SanMatcher("user_principal_name", r"carol@corp\.example"),)).verify(chain, NOW).valid
    assert _verifier(pki, sans=(SanMatcher("ip_address", r"10\.1\.2\.\d+"),)).verify(chain, NOW).valid
    assert not _verifier(pki, sans=(SanMatcher("email", ".*"),)).verify(chain, NOW).valid


def test_garbage_is_invalid_never_an_exception(pki: Pki) -> None:
    verifier = _verifier(pki)
    for chain in ("x", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "\x00" * 10, "é" * 100):
        verdict = verifier.verify(chain, NOW)
        assert verdict.presented and not verdict.valid
    assert "too long" in verifier.verify("A" * (65 * 1024), NOW).detail
    many = _chain(*[pki.client] * 11)
    assert "more than 10" in verifier.verify(many, NOW).detail
    # A server-only certificate from the trusted CA is no client certificate.
    assert not verifier.verify(_chain(pki.server), NOW).valid


def test_a_cached_verdict_ends_when_the_certificate_does(pki: Pki) -> None:
    soon = NOW + dt.timedelta(seconds=30)
    short = issue(pki.root, "short", emails=["s@example.com"], client=True, not_after=soon)
    verifier = _verifier(pki)
    chain = _chain(short)
    assert verifier.verify(chain, NOW).valid
    assert verifier.verify(chain, NOW + dt.timedelta(seconds=10)).valid  # from the cache
    late = verifier.verify(chain, soon + dt.timedelta(seconds=1))
    assert not late.valid and "expired" in late.detail
    early = issue(pki.root, "early", client=True, not_before=NOW + dt.timedelta(seconds=60))
    assert not verifier.verify(_chain(early), NOW).valid
    assert verifier.verify(_chain(early), NOW + dt.timedelta(seconds=61)).valid


def test_the_url_encoded_chain_envoy_sends_is_read_after_unquoting(pki: Pki) -> None:
    from authz._proto.envoy.service.auth.v3 import external_auth_pb2 as pb
    from authz.envoy.adapter import CLIENT_CERT_NAMESPACE, to_request

    check = pb.CheckRequest()
    http = check.attributes.request.http
    http.method, http.host, http.path = "GET", "app.example.com", "/"
    chain = _chain(pki.via_intermediate, pki.intermediate)
    fields = check.attributes.metadata_context.filter_metadata[CLIENT_CERT_NAMESPACE].fields
    fields["chain"].string_value = quote(chain)
    check.attributes.source.certificate = quote(pki.client.cert_pem.decode())  # ignored: the chain wins
    assert to_request(check).client_certificate == chain
    del check.attributes.metadata_context.filter_metadata[CLIENT_CERT_NAMESPACE]
    assert to_request(check).client_certificate == pki.client.cert_pem.decode()


def test_the_verdict_cache_stays_bounded(pki: Pki) -> None:
    from authz.check import clientcert

    verifier = _verifier(pki)
    for i in range(clientcert.CACHE_SIZE + 10):
        verifier.verify(f"not a certificate {i}", NOW)
    assert len(verifier._cache) <= clientcert.CACHE_SIZE
    long_chain = _chain(pki.via_intermediate, pki.intermediate) + "\n" * clientcert.CACHE_KEY_TEXT
    assert _verifier(pki, depth=2).verify(long_chain, NOW).valid
    verifier.verify(long_chain, NOW)
    assert all(len(key) <= clientcert.CACHE_KEY_TEXT for key in verifier._cache)


def _custom(
    pki: Pki,
    extensions: list[tuple[x509.ExtensionType, bool]],
    issuer: Issued | None = None,
    version_1: bool = False,
) -> Issued:
    """A certificate with exactly these extensions, signed by `issuer` (root by default)."""
    signer = issuer or pki.root
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "custom")]))
        .issuer_name(signer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return Issued(builder.sign(signer.key, hashes.SHA256()), key)


CLIENT_EKU = (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)


def test_cas_made_as_openssl_makes_them_are_accepted(pki: Pki) -> None:
    # openssl's default v3_ca: basicConstraints (critical) and key identifiers, no key usage.
    ca = _custom(pki, [(x509.BasicConstraints(ca=True, path_length=None), True)])
    leaf = _custom(pki, [CLIENT_EKU, (x509.SubjectAlternativeName([x509.RFC822Name("o@example.com")]), False)], ca)
    assert _verifier(pki, depth=2).verify(_chain(leaf, ca), NOW).valid
    # A basicConstraints not marked critical, as some CAs have it.
    loose = _custom(pki, [(x509.BasicConstraints(ca=True, path_length=None), False)])
    assert _verifier(pki, depth=2).verify(_chain(_custom(pki, [CLIENT_EKU], loose), loose), NOW).valid
    # What stays refused: a CA whose key usage forbids signing certificates, a leaf acting as a CA,
    # a path length exceeded, a leaf whose usages lack clientAuth.
    no_sign = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    signer = _custom(pki, [(x509.BasicConstraints(ca=True, path_length=None), True), (no_sign, True)])
    assert not _verifier(pki, depth=2).verify(_chain(_custom(pki, [CLIENT_EKU], signer), signer), NOW).valid
    not_ca = _custom(pki, [CLIENT_EKU, (x509.BasicConstraints(ca=False, path_length=None), True)])
    assert not _verifier(pki, depth=2).verify(_chain(_custom(pki, [CLIENT_EKU], not_ca), not_ca), NOW).valid
    below = _custom(pki, [(x509.BasicConstraints(ca=True, path_length=None), True)], pki.intermediate)
    deep = _chain(_custom(pki, [CLIENT_EKU], below), below, pki.intermediate)
    assert "max_verify_depth" not in _verifier(pki, depth=0).verify(deep, NOW).detail  # refused: path length 0
    assert not _verifier(pki, depth=0).verify(deep, NOW).valid
    server_only = (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    assert not _verifier(pki).verify(_chain(_custom(pki, [server_only])), NOW).valid


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_a_version_1_certificate_is_refused_with_how_to_reissue_it(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(pki.root.cert_pem)
    (tmp_path / "ca.key").write_bytes(pki.root.key_pem)
    run = functools.partial(subprocess.run, cwd=tmp_path, check=True, capture_output=True)
    run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", "c.key", "-out", "c.csr", "-subj", "/CN=v1 user"])  # fmt: skip
    # What a tutorial's `openssl x509 -req` gives without -extfile: a version 1 certificate.
    run(["openssl", "x509", "-req", "-in", "c.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-days", "1", "-out", "v1.pem"])  # fmt: skip
    (tmp_path / "ext.cnf").write_text("extendedKeyUsage=clientAuth\nsubjectAltName=email:v3@example.com\n")
    run(["openssl", "x509", "-req", "-in", "c.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-days", "1", "-extfile", "ext.cnf", "-out", "v3.pem"])  # fmt: skip
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)  # openssl starts them at this second
    v1 = _verifier(pki).verify((tmp_path / "v1.pem").read_text(), now)
    assert not v1.valid and "version 1" in v1.detail and "-extfile" in v1.detail
    assert _verifier(pki).verify((tmp_path / "v3.pem").read_text(), now).valid


def test_sans_are_read_as_envoy_reads_them(pki: Pki) -> None:
    name = ("u" * 150 + "@corp.example").encode()  # over 127 bytes: DER's long length form
    upn = x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), bytes([0x0C, 0x81, len(name)]) + name)
    mapped = x509.IPAddress(ipaddress.ip_address("::ffff:10.0.0.1"))
    holder = _chain(_custom(pki, [CLIENT_EKU, (x509.SubjectAlternativeName([upn, mapped]), False)]))
    assert _verifier(pki, sans=(SanMatcher("user_principal_name", r"u+@corp\.example"),)).verify(holder, NOW).valid
    assert _verifier(pki, sans=(SanMatcher("ip_address", r"::ffff:10\.0\.0\.1"),)).verify(holder, NOW).valid


MALFORMED_SANS = {
    "an IP of 5 bytes": b"\x30\x07\x87\x05\x01\x02\x03\x04\x05",
    "a DNS name not in IA5": b"\x30\x05\x82\x03\xc3\xa9x",
    "truncated": b"\x30\x03\x82\x01",
}


@pytest.mark.parametrize("der", MALFORMED_SANS.values(), ids=MALFORMED_SANS.keys())
def test_a_malformed_extension_is_an_invalid_certificate_never_an_exception(pki: Pki, der: bytes) -> None:
    from authz.check.request import RequestContext
    from authz.policy.ast import PolicyInput
    from authz.policy.certificate import ClientCertificate, InvalidClientCertificate, parse_leaf

    bad = _custom(pki, [CLIENT_EKU, (x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, der), False)])
    chain = _chain(bad)
    sans = (SanMatcher("email", ".*"),)
    verdict = _verifier(pki, sans=sans).verify(chain, NOW)
    assert not verdict.valid
    parse_leaf(chain)  # no traceback, no 503: a leaf whose SANs do not parse is none (or has none)
    request = RequestContext.build(method="GET", host="a.example", target="/", client_certificate=chain)
    matcher = ClientCertificate(san_email=None, fingerprints=frozenset({"0" * 64}))
    for certificate in (verdict, None):  # with downstream_mtls, and evaluated on the PEM alone
        inp = PolicyInput(request, None, NOW, certificate)
        assert matcher.evaluate(inp)[0] is False
        InvalidClientCertificate().evaluate(inp)
    assert InvalidClientCertificate().evaluate(PolicyInput(request, None, NOW, verdict))[0] is True
