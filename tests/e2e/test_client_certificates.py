"""Client certificates at the edge (`downstream_mtls`), through a real Envoy with a TLS listener, in
each enforcement mode with each certificate case: one from the CA, one through an intermediate,
a revoked one, an expired one, one from another CA, one with a SAN nobody allowed, one forged with
a valid one's names, and none.

- policy_with_default_deny (max_verify_depth 1): only a valid certificate gets past a 495 that names
  the reason, before any sign-in; the intermediate's leaf is refused at depth 1.
- policy (max_verify_depth 2): nothing is enforced but what the policy says; `client_certificate`
  criteria match real certificates (fingerprint, SPKI hash, SAN email/DNS/URI), only valid ones;
  a deny rule on `invalid_client_certificate` answers 495.
- reject_connection (max_verify_depth 2): Envoy refuses the handshake for every bad case; and at
  max_verify_depth 1, for the intermediate's leaf too.

In the gRPC pass all three; in the HTTP pass the default mode, which covers passing the chain.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from authz.config import load_config
from authz.dev.certs import Issued, revocation_list
from authz.dev.stack import Process, free_port, start_authz, start_envoy, wait_until
from authz.envoy.files import publish
from tests.pki import Pki

from .conftest import base_config
from .upstream import Recorder

pytestmark = pytest.mark.e2e

HTTP_PASS = os.environ.get("AUTHZ_E2E_TRANSPORT") == "http"
DEFAULT = ("policy_with_default_deny", 1)
MODES = [DEFAULT] if HTTP_PASS else [DEFAULT, ("policy", 2), ("reject_connection", 2), ("reject_connection", 1)]
CASES = ("client", "via_intermediate", "revoked", "expired", "foreign", "wrong_san", "forged", None)
REFUSED = "refused"  # the TLS handshake failed


@dataclass
class Edge:
    mode: str
    depth: int  # max_verify_depth
    port: int
    folder: Path
    upstream: Recorder

    @property
    def valid(self) -> set[str]:
        """The cases authz and Envoy find valid at this edge's depth."""
        return {"client", "via_intermediate"} if self.depth == 2 else {"client"}


def _fingerprint(issued: Issued) -> str:
    return hashlib.sha256(issued.cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _spki(issued: Issued) -> str:
    der = issued.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def _routes(pki: Pki, to: str) -> list[dict[str, Any]]:
    public = {"allow_public_unauthenticated_access": True}
    only = {"allow": {"and": [{"client_certificate": {}}]}}  # filled per route below

    def cert_route(name: str, matcher: dict[str, Any]) -> dict[str, Any]:
        return {"id": name, "from": f"https://{name}.edge.test", "to": to,
                "policy": [{**only, "allow": {"and": [{"client_certificate": matcher}]}}]}  # fmt: skip

    return [
        {"id": "public", "from": "https://public.edge.test", "to": to, **public,
         "set_request_headers": {"x-cert-fingerprint": "${pomerium.client_cert_fingerprint}",
                                 "x-cert-emails": "${pomerium.client_cert_san_email}"}},
        {"id": "login", "from": "https://login.edge.test", "to": to, "allow_any_authenticated_user": True},
        {"id": "deny", "from": "https://deny.edge.test", "to": to,
         "policy": [{"allow": {"and": [{"accept": True}]}, "deny": {"and": [{"invalid_client_certificate": True}]}}]},
        cert_route("fingerprint", {"fingerprint": _fingerprint(pki.client)}),
        cert_route("spki", {"spki_hash": _spki(pki.client)}),
        cert_route("email", {"san_email": {"is": "alice@example.com"}}),
        cert_route("dns", {"san_dns": {"ends_with": ".devices.example.com"}}),
        cert_route("uri", {"san_uri": {"starts_with": "spiffe://example.com/"}}),
    ]  # fmt: skip


@pytest.fixture(scope="module", params=MODES, ids=lambda p: f"{p[0]}-depth{p[1]}")
def edge(request: pytest.FixtureRequest, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    mode, depth = request.param
    tmp = tmp_path_factory.mktemp(f"mtls-{mode}")
    files = {"edge.pem": pki.server.cert_pem, "edge.key": pki.server.key_pem, "ca.pem": pki.root.cert_pem,
             "crl.pem": pki.crl + pki.intermediate_crl}  # fmt: skip
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    upstream = Recorder()
    port, admin_port, grpc_port, http_port = (free_port() for _ in range(4))
    config: dict[str, Any] = {
        **base_config(port, grpc_port, http_port),
        "insecure_server": False,
        "cookie_secure": True,
        "authenticate_service_url": f"https://authenticate.edge.test:{port}",
        "certificate_file": "edge.pem",
        "key_file": "edge.key",
        "session_store": "memory:",
        "ext_authz_transport": "http" if HTTP_PASS else "grpc",
        "downstream_mtls": {
            "ca_file": "ca.pem",
            "crl_file": "crl.pem",
            "enforcement": mode,
            "max_verify_depth": depth,
            "match_subject_alt_names": [{"email": r".*@example\.com"}],
        },
        "routes": _routes(pki, f"http://127.0.0.1:{upstream.port}"),
    }
    config_path = tmp / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    # As `authz envoy-config --out DIR`: the client CA and CRL through an SDS file Envoy follows.
    publish(load_config(config_path), tmp / "envoy", admin_address=f"127.0.0.1:{admin_port}")
    started: list[Process] = [start_authz(config_path, http_port, tmp)]
    try:
        started.append(start_envoy(tmp / "envoy" / "envoy.yaml", admin_port, tmp))
        yield Edge(mode, depth, port, tmp, upstream)
    finally:
        for process in reversed(started):
            process.stop()
        upstream.close()


def _context(edge: Edge, pki: Pki, case: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=pki.root.cert_pem.decode())
    if case is not None:
        issued: Issued = getattr(pki, case)
        chain = issued.cert_pem + (pki.intermediate.cert_pem if case == "via_intermediate" else b"")
        cert, key = edge.folder / f"{case}.pem", edge.folder / f"{case}.key"
        cert.write_bytes(chain)
        key.write_bytes(issued.key_pem)
        context.load_cert_chain(cert, key)
    return context


def _get(
    edge: Edge, pki: Pki, case: str | None, host: str, path: str = "/x", headers: dict[str, str] | None = None
) -> httpx2.Response | str:
    """A request with the case's certificate (or none); REFUSED when the handshake fails."""
    try:
        with httpx2.Client(verify=_context(edge, pki, case), timeout=10) as client:
            return client.get(
                f"https://127.0.0.1:{edge.port}{path}",
                headers={"host": host, **(headers or {})},
                extensions={"sni_hostname": host},
            )
    except httpx2.TransportError:
        return REFUSED


def _status(answer: httpx2.Response | str) -> int | str:
    return answer if isinstance(answer, str) else answer.status_code


def _refused(edge: Edge) -> int | str:
    """What a request without a valid certificate gets where the mode enforces one."""
    return REFUSED if edge.mode == "reject_connection" else 495


REASONS = {
    "via_intermediate": "more intermediate CAs than this site accepts (max_verify_depth 1)",
    "revoked": "has been revoked",
    "expired": "expired on",
    "foreign": "not issued by a certificate authority this site trusts",
    "forged": "not issued by a certificate authority this site trusts",
    "wrong_san": "no subject alternative name that this site accepts",
    None: "No client certificate was presented",
}


def test_each_certificate_on_a_public_route(edge: Edge, pki: Pki) -> None:
    seen = {}
    for case in CASES:
        edge.upstream.clear()
        answer = _get(edge, pki, case, "public.edge.test")
        seen[case] = _status(answer)
        if seen[case] == 200:
            assert edge.upstream.requests, case
        elif seen[case] == 495:
            assert not edge.upstream.requests, f"{case}: the upstream was reached"
    if edge.mode == "policy":
        assert seen == {case: 200 for case in CASES}
    else:
        assert seen == {case: 200 if case in edge.valid else _refused(edge) for case in CASES}


def test_the_495_says_why_in_html_and_json(edge: Edge, pki: Pki) -> None:
    if edge.mode != "policy_with_default_deny":
        pytest.skip("the default mode answers 495 on every route")
    for case, words in REASONS.items():
        page = _get(edge, pki, case, "public.edge.test", headers={"accept": "text/html"})
        assert not isinstance(page, str) and page.status_code == 495, case
        assert "Client Certificate Required" in page.text and words in page.text, case
        data = _get(edge, pki, case, "public.edge.test", headers={"accept": "application/json"})
        assert not isinstance(data, str)
        body = json.loads(data.text)
        required = "client-certificate-required" if case is None else "invalid-client-certificate"
        assert body["status"] == 495 and body["reasons"] == [required] and words in body["detail"], case


def test_the_495_comes_before_sign_in(edge: Edge, pki: Pki) -> None:
    browser = {"accept": "text/html", "user-agent": "Mozilla/5.0"}
    without = _status(_get(edge, pki, None, "login.edge.test", headers=browser))
    with_valid = _get(edge, pki, "client", "login.edge.test", headers=browser)
    assert not isinstance(with_valid, str) and with_valid.status_code == 302
    assert "/.pomerium/sign_in" in with_valid.headers["location"]
    assert without == {"policy_with_default_deny": 495, "policy": 302, "reject_connection": REFUSED}[edge.mode]


def test_authz_pages_and_the_jwks_need_no_certificate_in_the_policy_modes(edge: Edge, pki: Pki) -> None:
    for host in ("public.edge.test", "authenticate.edge.test"):
        answer = _status(_get(edge, pki, None, host, "/.well-known/pomerium/jwks.json"))
        assert answer == (REFUSED if edge.mode == "reject_connection" else 200), host


def test_client_certificate_criteria_match_real_certificates(edge: Edge, pki: Pki) -> None:
    if edge.mode == "policy_with_default_deny":
        pytest.skip("in the default mode an invalid certificate never reaches a policy")
    for route in ("fingerprint", "spki", "email", "dns", "uri"):
        host = f"{route}.edge.test"
        assert _status(_get(edge, pki, "client", host)) == 200, route
        other = 403 if "via_intermediate" in edge.valid else REFUSED  # valid: another user
        assert _status(_get(edge, pki, "via_intermediate", host)) == other, route
        if edge.mode == "policy":
            # alice's names on a certificate anyone can make: never a match.
            assert _status(_get(edge, pki, "forged", host)) == 403, route
            assert _status(_get(edge, pki, None, host)) == 403, route


def test_a_deny_rule_on_an_invalid_certificate_is_a_495_in_every_mode(edge: Edge, pki: Pki) -> None:
    expected = {case: 200 if case in edge.valid else _refused(edge) for case in CASES}
    assert {case: _status(_get(edge, pki, case, "deny.edge.test")) for case in CASES} == expected


def test_the_upstream_reads_the_verified_certificate_never_a_forged_one(edge: Edge, pki: Pki) -> None:
    forged_xfcc = {"x-forwarded-client-cert": 'By=spiffe://x;Hash=00;Subject="CN=admin"'}
    edge.upstream.clear()
    assert _status(_get(edge, pki, "client", "public.edge.test", headers=forged_xfcc)) == 200
    seen = edge.upstream.last()
    xfcc = seen.one("x-forwarded-client-cert") or ""
    assert f"Hash={_fingerprint(pki.client)}" in xfcc and "CN=admin" not in xfcc
    assert seen.one("x-cert-fingerprint") == _fingerprint(pki.client)
    assert seen.one("x-cert-emails") == "alice@example.com"
    if edge.mode == "policy":
        # An invalid certificate let through by the policy: nothing about it reaches the upstream.
        edge.upstream.clear()
        assert _status(_get(edge, pki, "forged", "public.edge.test", headers=forged_xfcc)) == 200
        seen = edge.upstream.last()
        assert seen.one("x-forwarded-client-cert") is None
        assert seen.one("x-cert-fingerprint") in (None, "")


def test_a_new_crl_is_followed_without_restarting_envoy(edge: Edge, pki: Pki) -> None:
    """Last in the module: it revokes the valid certificate, then restores the CRL."""
    if edge.mode != "reject_connection" or edge.depth != 2:
        pytest.skip("once, where Envoy itself checks the CRL")
    crl = edge.folder / "crl.pem"
    original = crl.read_bytes()

    def replace(data: bytes) -> None:  # as a CRL publisher does: a new file moved in
        (edge.folder / ".crl.new").write_bytes(data)
        os.replace(edge.folder / ".crl.new", crl)

    assert _status(_get(edge, pki, "client", "public.edge.test")) == 200
    try:
        replace(revocation_list(pki.root, [pki.revoked.cert, pki.client.cert]) + pki.intermediate_crl)
        # Envoy reads it (the handshake fails) and authz reloads it: no restart of either.
        wait_until(lambda: _get(edge, pki, "client", "public.edge.test") == REFUSED, 10, "the new CRL in Envoy")
    finally:
        replace(original)
    wait_until(lambda: _status(_get(edge, pki, "client", "public.edge.test")) == 200, 10, "the CRL restored")
