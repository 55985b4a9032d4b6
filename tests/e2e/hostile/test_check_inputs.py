"""What the Check learns from Envoy itself — the route, the client's address, its certificate —
never comes from the client (on both transports: gRPC carries them in the CheckRequest, the HTTP
service in headers the generated config has Envoy add): attacks through the real Envoy."""

from __future__ import annotations

import datetime
import http.client
import json
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authz.envoy.http_check import INTERNAL_HEADERS

from ..conftest import Stack, _launch, _teardown

pytestmark = pytest.mark.e2e

CERT_POLICY = {"allow": {"and": [{"client_certificate": {"san_dns": {"is": "forged.example"}}}]}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = _launch(
        tmp_path_factory.mktemp("check-inputs"),
        extra_routes=[
            {"id": "detailed", "from": "http://detailed.localhost", "show_error_details": True,
             "allowed_domains": ["nobody.example"]},
            {"id": "by-cert", "from": "http://cert.localhost", "policy": CERT_POLICY},
        ],
    )  # fmt: skip
    yield running
    _teardown(running)


def _pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("forged.example")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _send(stack: Stack, host: str, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    """One request with exactly these header lines, names cased as given."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.envoy_port, timeout=10)
    try:
        conn.putrequest("GET", "/x", skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"{host}:{stack.envoy_port}")
        conn.putheader("Accept", "application/json")
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _forged(name: str, value: str) -> list[tuple[str, str]]:
    """The header in three casings, each sent twice."""
    cased = [name, name.upper(), "-".join(part.capitalize() for part in name.split("-"))]
    return [(c, value) for c in cased for _ in range(2)]


def test_a_client_cannot_name_the_route_or_its_address(stack: Stack) -> None:
    seed = stack.seed_session("detailed.localhost", user_id="u-1", email="ann@example.com")
    stack.upstream.clear()
    forged = [*_forged("x-authz-route-id", "public"), *_forged("x-authz-source", "203.0.113.9")]
    status, body = _send(stack, "detailed.localhost", [("Cookie", f"_pomerium={seed}"), *forged])
    assert status == 403, body
    details = json.loads(body)["details"]
    assert details["route"] == "detailed" and details["source ip"] == "127.0.0.1"
    assert stack.upstream.requests == []


def test_a_client_cannot_present_a_certificate_in_a_header(stack: Stack) -> None:
    pem = quote(_pem(), safe="")
    stack.upstream.clear()
    for name in (*INTERNAL_HEADERS, "x-forwarded-client-cert"):
        status, body = _send(stack, "cert.localhost", _forged(name, pem))
        assert status == 403 and json.loads(body)["reasons"] == ["client-certificate-unauthorized"], (name, body)
    assert stack.upstream.requests == []
