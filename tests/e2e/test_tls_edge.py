"""The TLS listener and TLS to upstreams, through one real Envoy started from `envoy-config --out`:
TLS 1.2 at least with ECDHE and AEAD suites only, h2 by ALPN, a certificate by SNI, certificates
that rotate without a restart, the HTTP → HTTPS redirect listener, and upstreams over TLS verified
against a custom CA with the edge's client certificate (or, with `tls_skip_verify`, not verified)."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from authz.dev.certs import Issued, issue
from authz.dev.stack import Process, free_port, start_authz, start_envoy, wait_until
from tests.pki import Pki

from .conftest import base_config, grpc_pass_only
from .upstream import Recorder

pytestmark = [pytest.mark.e2e, grpc_pass_only("the TLS listener and TLS to upstreams")]


@dataclass
class Edge:
    port: int
    redirect_port: int
    certs: Path
    upstream: Recorder
    envoy: Process
    app: Recorder  # the plain-HTTP app behind envoy/app-sidecar.yaml
    sidecar_port: int
    admin_port: int

    def stat(self, name: str) -> int:
        """One of Envoy's counters (0 when absent)."""
        text = httpx2.get(f"http://127.0.0.1:{self.admin_port}/stats?filter=^{name}$", timeout=5).text
        return int(text.split(": ")[1]) if ": " in text else 0


SIDECAR = Path(__file__).resolve().parents[2] / "envoy" / "app-sidecar.yaml"


def _sidecar_config(values: dict[str, str]) -> str:
    """envoy/app-sidecar.yaml with its UPPER_CASE words replaced, as envsubst would."""
    text = SIDECAR.read_text()
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    assert "${" not in text, "a word of the example is left unreplaced"
    return text


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _upstream_tls(pki: Pki, tmp: Path) -> ssl.SSLContext:
    """The app's TLS: its certificate for upstream.test, a client certificate asked for (optional:
    the recorder says whether one came) from the test root."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(_write(tmp / "up.pem", pki.upstream.cert_pem), _write(tmp / "up.key", pki.upstream.key_pem))
    context.load_verify_locations(cadata=pki.root.cert_pem.decode())
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


@pytest.fixture(scope="module")
def edge(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("tls-edge")
    certs = tmp / "certs"
    certs.mkdir()
    other = issue(pki.root, "other edge", dns=["*.example.test"], server=True)
    files = {
        "edge.pem": pki.server.cert_pem, "edge.key": pki.server.key_pem, "other.pem": other.cert_pem,
        "other.key": other.key_pem, "ca.pem": pki.root.cert_pem, "envoy.pem": pki.envoy.cert_pem,
        "envoy.key": pki.envoy.key_pem,
    }  # fmt: skip
    for name, data in files.items():
        _write(certs / name, data)
    upstream, app = Recorder(tls=_upstream_tls(pki, tmp)), Recorder()
    port, redirect_port, admin_port, grpc_port, http_port = (free_port() for _ in range(5))
    sidecar_port, sidecar_admin = free_port(), free_port()
    to = f"https://127.0.0.1:{upstream.port}"
    public = {"allow_public_unauthenticated_access": True}
    config: dict[str, Any] = {
        **base_config(port, grpc_port, http_port),
        "insecure_server": False,
        "authenticate_service_url": f"https://authenticate.edge.test:{port}",
        "certificate_file": "certs/edge.pem",
        "key_file": "certs/edge.key",
        "certificates": [{"cert": "certs/other.pem", "key": "certs/other.key"}],
        "http_redirect_addr": f"127.0.0.1:{redirect_port}",
        "session_store": "memory:",
        "routes": [
            {"from": "https://verified.edge.test", "to": to, "tls_custom_ca_file": "certs/ca.pem",
             "tls_server_name": "upstream.test", "tls_client_cert_file": "certs/envoy.pem",
             "tls_client_key_file": "certs/envoy.key", **public},
            {"id": "system-cas", "from": "https://system-cas.edge.test", "to": to,
             "tls_server_name": "upstream.test", **public},
            {"id": "wrong-name", "from": "https://wrong-name.edge.test", "to": to, "tls_custom_ca_file": "certs/ca.pem",
             "tls_server_name": "elsewhere.test", **public},
            {"from": "https://unverified.edge.test", "to": to, "tls_skip_verify": True, **public},
            {"id": "closed", "from": "https://closed.edge.test", "to": to, "allowed_domains": ["example.com"],
             "tls_custom_ca_file": "certs/ca.pem", "tls_server_name": "upstream.test"},
            # The app that trusts nothing: mTLS to its sidecar, which also verifies the assertion.
            {"from": "https://zt.edge.test", "to": f"https://127.0.0.1:{sidecar_port}",
             "tls_custom_ca_file": "certs/ca.pem", "tls_server_name": "upstream.test",
             "tls_client_cert_file": "certs/envoy.pem", "tls_client_key_file": "certs/envoy.key",
             "pass_identity_headers": True, **public},
        ],
    }  # fmt: skip
    config_path = tmp / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    out = tmp / "envoy"
    written = subprocess.run(
        [sys.executable, "-m", "authz", "envoy-config", "-c", str(config_path), "--out", str(out),
         "--admin-address", f"127.0.0.1:{admin_port}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    sidecar = tmp / "sidecar.yaml"
    sidecar.write_text(_sidecar_config({
        "SIDECAR_PORT": str(sidecar_port), "APP_PORT": str(app.port), "APP_CERT_FILE": str(tmp / "up.pem"),
        "APP_KEY_FILE": str(tmp / "up.key"), "EDGE_CA_FILE": str(certs / "ca.pem"), "EDGE_CLIENT_SAN": "envoy",
        "APP_HOST": "zt.edge.test", "JWKS_HOST": f"zt.edge.test:{port}", "EDGE_ADDRESS": "127.0.0.1",
        "JWKS_PORT": str(port),
    }) + f"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {sidecar_admin}}}}}}}\n")  # fmt: skip
    started = [start_authz(config_path, http_port, tmp)]
    try:
        started.append(envoy := start_envoy(out / "envoy.yaml", admin_port, tmp))
        started.append(start_envoy(sidecar, sidecar_admin, tmp))
        yield Edge(port, redirect_port, certs, upstream, envoy, app, sidecar_port, admin_port)
    finally:
        for process in reversed(started):
            process.stop()
        upstream.close()
        app.close()


def _handshake(edge: Edge, context: ssl.SSLContext, server_name: str = "app.edge.test") -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", edge.port), timeout=5)
    return context.wrap_socket(raw, server_hostname=server_name)


def _client(pki: Pki, minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2, maximum: ssl.TLSVersion | None = None,
            ciphers: str | None = None) -> ssl.SSLContext:  # fmt: skip
    context = ssl.create_default_context(cadata=pki.root.cert_pem.decode())
    context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


def test_tls_1_2_with_ecdhe_and_aead_only_and_h2_by_alpn(edge: Edge, pki: Pki) -> None:
    modern = _client(pki)
    modern.set_alpn_protocols(["h2", "http/1.1"])
    with _handshake(edge, modern) as tls:
        assert tls.version() == "TLSv1.3" and tls.selected_alpn_protocol() == "h2"
    tls12 = _client(pki, maximum=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    with _handshake(edge, tls12) as tls:
        assert tls.version() == "TLSv1.2" and tls.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
    with warnings.catch_warnings():  # a TLS 1.1 client is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old = _client(
            pki, minimum=ssl.TLSVersion.TLSv1_1, maximum=ssl.TLSVersion.TLSv1_1, ciphers="DEFAULT:@SECLEVEL=0"
        )
    refused = {
        "TLS 1.1": old,
        "CBC": _client(pki, maximum=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384"),
        "no ECDHE": _client(pki, maximum=ssl.TLSVersion.TLSv1_2, ciphers="AES128-GCM-SHA256:AES256-GCM-SHA384"),
    }  # fmt: skip
    for what, context in refused.items():
        # Refused by Envoy (an alert naming the version or the ciphers), not by this client's library.
        with pytest.raises(ssl.SSLError, match=r"ALERT_PROTOCOL_VERSION|ALERT_HANDSHAKE_FAILURE"):
            _handshake(edge, context).close()
            pytest.fail(f"{what}: accepted")


def _served_certificate(edge: Edge, pki: Pki, server_name: str) -> x509.Certificate:
    with _handshake(edge, _client(pki), server_name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_the_certificate_is_chosen_by_sni(edge: Edge, pki: Pki) -> None:
    assert _served_certificate(edge, pki, "app.edge.test").serial_number == pki.server.cert.serial_number
    other = _served_certificate(edge, pki, "grafana.example.test")
    assert other.subject.rfc4514_string() == "CN=other edge"


def test_plain_http_is_redirected_to_https(edge: Edge) -> None:
    answer = httpx2.get(f"http://127.0.0.1:{edge.redirect_port}/a/b?c=1", headers={"host": "verified.edge.test:80"})
    assert answer.status_code == 301
    assert answer.headers["location"] == f"https://verified.edge.test:{edge.port}/a/b?c=1"
    # A host the config does not serve is no redirect target.
    assert httpx2.get(f"http://127.0.0.1:{edge.redirect_port}/", headers={"host": "evil.example"}).status_code == 404


def _get(edge: Edge, pki: Pki, host: str) -> httpx2.Response:
    with httpx2.Client(verify=_client(pki), timeout=10) as client:
        return client.get(f"https://127.0.0.1:{edge.port}/x", headers={"host": host}, extensions={"sni_hostname": host})


def test_authz_pages_over_the_tls_listener_carry_hsts_for_this_host_only(edge: Edge, pki: Pki) -> None:
    """authz's own pages (the sidecar's, and the Check's answers) ask browsers for HTTPS for a year,
    without includeSubDomains or preload (they would bind the parent domain); an app's are its own."""

    def at(host: str, path: str, accept: str) -> httpx2.Response:
        with httpx2.Client(verify=_client(pki), timeout=10) as client:
            return client.get(f"https://127.0.0.1:{edge.port}{path}", headers={"host": host, "accept": accept},
                              extensions={"sni_hostname": host})  # fmt: skip

    signed_out = at("authenticate.edge.test", "/.pomerium/signed_out", "text/html")
    sign_in = at("closed.edge.test", "/", "text/html")
    api = at("closed.edge.test", "/", "application/json")
    assert (signed_out.status_code, sign_in.status_code, api.status_code) == (200, 302, 401)
    for page in (signed_out, sign_in, api):
        assert page.headers.get_list("strict-transport-security") == ["max-age=31536000"]
    assert "strict-transport-security" not in _get(edge, pki, "verified.edge.test").headers  # the app's answer


def test_an_upstream_over_tls_verified_against_a_custom_ca_and_shown_the_edges_certificate(
    edge: Edge, pki: Pki
) -> None:
    edge.upstream.clear()
    assert _get(edge, pki, "verified.edge.test").status_code == 200
    assert edge.upstream.last().one("x-seen-client-cn") == "envoy"
    assert edge.upstream.last().one("x-seen-tls-version") == "TLSv1.3"
    # The same upstream against the system CAs, or under a name its certificate lacks: Envoy refuses it.
    assert _get(edge, pki, "system-cas.edge.test").status_code == 503
    assert _get(edge, pki, "wrong-name.edge.test").status_code == 503
    # ... for the reason said: a certificate no system CA signed, a name it does not carry.
    assert edge.stat("cluster.route-system-cas.ssl.fail_verify_error") >= 1
    assert edge.stat("cluster.route-wrong-name.ssl.fail_verify_san") >= 1
    # tls_skip_verify: reached, unverified, and no client certificate shown.
    edge.upstream.clear()
    assert _get(edge, pki, "unverified.edge.test").status_code == 200
    assert edge.upstream.last().one("x-seen-client-cn") == ""


def test_a_renewed_certificate_is_served_without_restarting_envoy(edge: Edge, pki: Pki) -> None:
    pid = edge.envoy.proc.pid
    renewed: Issued = issue(pki.root, "edge renewed", dns=["localhost", "*.edge.test"], server=True)
    # As a renewal tool or a Kubernetes Secret update does: new files moved into the folder.
    for name, data in (("edge.key", renewed.key_pem), ("edge.pem", renewed.cert_pem)):
        _write(edge.certs / f".{name}.new", data)
        os.replace(edge.certs / f".{name}.new", edge.certs / name)
    wait_until(
        lambda: _served_certificate(edge, pki, "app.edge.test").serial_number == renewed.cert.serial_number,
        10,
        "the renewed certificate",
        edge.envoy.proc,
    )
    time.sleep(0.2)
    assert edge.envoy.proc.poll() is None and edge.envoy.proc.pid == pid


def _at_sidecar(edge: Edge, pki: Pki, client: Issued | None, headers: dict[str, str] | None = None) -> int | str:
    """A request straight to the app's sidecar, as someone inside the network would send it."""
    context = ssl.create_default_context(cadata=pki.root.cert_pem.decode())
    context.check_hostname = False  # the sidecar's name is not the question here
    if client is not None:
        folder = edge.certs.parent
        cert, key = folder / f"{client.cert.serial_number}.pem", folder / f"{client.cert.serial_number}.key"
        cert.write_bytes(client.cert_pem)
        key.write_bytes(client.key_pem)
        context.load_cert_chain(cert, key)
    try:
        with httpx2.Client(verify=context, timeout=10) as http:
            return http.get(f"https://127.0.0.1:{edge.sidecar_port}/secret", headers=headers or {}).status_code
    except httpx2.HTTPError as exc:
        return type(exc).__name__


def test_an_app_behind_its_sidecar_admits_only_the_edge_with_an_assertion(edge: Edge, pki: Pki) -> None:
    edge.app.clear()
    assert _get(edge, pki, "zt.edge.test").status_code == 200
    assertion = edge.app.last().one("x-pomerium-jwt-assertion")
    assert assertion, "the app got the assertion its sidecar verified"
    # Inside the network, straight to the sidecar:
    assert isinstance(_at_sidecar(edge, pki, None), str)  # no client certificate: no TLS session
    assert isinstance(_at_sidecar(edge, pki, pki.foreign), str)  # another CA's certificate
    assert isinstance(_at_sidecar(edge, pki, pki.wrong_san), str)  # the right CA, not the edge's name
    # Even the edge's own certificate (stolen) opens nothing without an assertion authz signed:
    assert _at_sidecar(edge, pki, pki.envoy) == 401
    forged = jwt.encode({"iss": "zt.edge.test", "aud": "zt.edge.test", "sub": "admin", "exp": time.time() + 60},
                        ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")  # fmt: skip
    assert _at_sidecar(edge, pki, pki.envoy, {"x-pomerium-jwt-assertion": forged}) == 401
    assert _at_sidecar(edge, pki, pki.envoy, {"x-pomerium-jwt-assertion": assertion}) == 200  # a replay within exp
    assert [r.path for r in edge.app.requests] == ["/x", "/secret"]
