"""`authz certs dev` and the certificate builders: chains that verify, usages and SANs as asked,
keys owner-only, the test PKI's odd cases odd in the way they claim."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import ClientVerifier, PolicyBuilder, ServerVerifier, Store, VerificationError

from authz.cli import main
from tests.pki import Pki


def _server_verifier(ca: x509.Certificate, host: str) -> ServerVerifier:
    return PolicyBuilder().store(Store([ca])).build_server_verifier(x509.DNSName(host))


def _client_verifier(ca: x509.Certificate, intermediates: int = 0) -> ClientVerifier:
    """cryptography counts the intermediates a chain may hold (Envoy's max_verify_depth 1 is 0 here)."""
    return PolicyBuilder().store(Store([ca])).max_chain_depth(intermediates).build_client_verifier()


def test_certs_dev_writes_a_set_that_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "certs"
    assert main(["certs", "dev", "--out", str(out), "--host", "grafana.example.com"]) == 0
    assert "never for production" in capsys.readouterr().out
    load = lambda name: x509.load_pem_x509_certificate((out / f"{name}.pem").read_bytes())  # noqa: E731
    ca = load("ca")
    _server_verifier(ca, "grafana.example.com").verify(load("server"), [])
    _server_verifier(ca, "app.localhost").verify(load("server"), [])
    _server_verifier(ca, "localhost").verify(load("authz"), [])
    _server_verifier(ca, "localhost").verify(load("upstream"), [])
    for client in ("client", "envoy", "authz"):
        _client_verifier(ca).verify(load(client), [])
    with pytest.raises(VerificationError):  # a client certificate is not a server's
        _server_verifier(ca, "localhost").verify(load("client"), [])
    for name in ("ca", "server", "client", "authz", "envoy", "upstream"):
        assert stat.S_IMODE((out / f"{name}.key").stat().st_mode) == 0o600
    crl = x509.load_pem_x509_crl((out / "crl.pem").read_bytes())
    assert crl.is_signature_valid(ca.public_key()) and len(list(crl)) == 0  # type: ignore[arg-type]


def test_certs_dev_never_replaces_a_ca_unasked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "dev", "--out", str(tmp_path)]) == 0
    before = (tmp_path / "ca.pem").read_bytes()
    assert main(["certs", "dev", "--out", str(tmp_path)]) == 1
    assert "already holds a CA" in capsys.readouterr().err and (tmp_path / "ca.pem").read_bytes() == before
    assert main(["certs", "dev", "--out", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "ca.pem").read_bytes() != before
    (tmp_path / "file").write_text("")
    assert main(["certs", "dev", "--out", str(tmp_path / "file")]) == 1


def test_the_test_pki_cases_are_what_they_claim(pki: Pki) -> None:
    verifier = _client_verifier(pki.root.cert)
    for good in (pki.client, pki.revoked, pki.wrong_san):
        verifier.verify(good.cert, [])  # revocation is authz's check: the chain itself is fine
    with pytest.raises(VerificationError):
        verifier.verify(pki.expired.cert, [])
    with pytest.raises(VerificationError):
        verifier.verify(pki.foreign.cert, [])
    # Through the intermediate: refused with no intermediate allowed, verified with one.
    with pytest.raises(VerificationError):
        verifier.verify(pki.via_intermediate.cert, [pki.intermediate.cert])
    _client_verifier(pki.root.cert, intermediates=1).verify(pki.via_intermediate.cert, [pki.intermediate.cert])
    crl = x509.load_pem_x509_crl(pki.crl)
    assert crl.get_revoked_certificate_by_serial_number(pki.revoked.cert.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(pki.client.cert.serial_number) is None
    assert pki.expired.cert.not_valid_after_utc < dt.datetime.now(dt.UTC)
    sans = pki.client.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.RFC822Name) == ["alice@example.com"]
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.com/alice"]
