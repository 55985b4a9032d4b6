"""Envoy ↔ authz over mutual TLS (`internal_tls_*`) for real: `authz serve` with two workers, each
Check port and the web layer requiring a client certificate from the internal CA, behind the Envoy
that `authz envoy-config` generates (its client certificate, authz's verified). Runs in both e2e
passes: the gRPC Check server and Envoy's HTTP service each do their own TLS."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx2
import pytest
import yaml

from authz._proto.envoy.service.auth.v3 import external_auth_pb2 as pb
from authz._proto.envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc
from authz.dev.certs import Issued, issue
from authz.dev.stack import free_port, free_ports, start_authz, start_envoy, wait_until
from authz.envoy.http_check import HEALTH_PATH
from tests.internal_tls import write_internal_tls
from tests.pki import Pki

from .conftest import Stack, _teardown, stack_config
from .upstream import Recorder

pytestmark = pytest.mark.e2e
TRANSPORT = os.environ.get("AUTHZ_E2E_TRANSPORT", "grpc")


def _context(pki: Pki, client: Issued | None, folder: Path) -> ssl.SSLContext:
    """A client context trusting the internal CA, presenting `client`'s certificate if given."""
    context = ssl.create_default_context(cadata=pki.root.cert_pem.decode())
    if client is not None:
        bundle = folder / f"{client.cert.serial_number}.pem"
        bundle.write_bytes(client.cert_pem + client.key_pem)
        context.load_cert_chain(bundle)
    return context


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[tuple[Stack, int]]:
    tmp = tmp_path_factory.mktemp("internal-mtls")
    upstream = Recorder()
    envoy_port, admin_port, http_port = free_port(), free_port(), free_port()
    grpc_port = free_ports(2)
    config = stack_config(envoy_port, grpc_port, http_port, upstream.port, tmp / "sessions.db")
    config.update(write_internal_tls(pki, tmp), workers=2, ext_authz_transport=TRANSPORT)
    config_path = tmp / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    command = [sys.executable, "-m", "authz", "envoy-config", "-c", str(config_path), "--admin-address",
               f"127.0.0.1:{admin_port}"]  # fmt: skip
    (tmp / "envoy.yaml").write_text(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    authz = start_authz(config_path, http_port, tmp, tls=_context(pki, pki.envoy, tmp))
    try:
        envoy = start_envoy(tmp / "envoy.yaml", admin_port, tmp)
    except Exception:
        authz.stop()
        upstream.close()
        raise
    running = Stack(envoy_port, admin_port, http_port, config, config_path, upstream, authz, envoy, tmp / "sessions.db")
    try:
        # Envoy sends Checks to a worker once its health check (through the same TLS) saw it serve.
        wait_until(lambda: running.get("public.localhost").status_code == 200, 15, "Checks through Envoy")
        yield running, grpc_port
    finally:
        _teardown(running)


def test_public_route_through_envoy(mtls: tuple[Stack, int]) -> None:
    stack, _ = mtls
    for _ in range(4):  # round robin: both workers answer over TLS
        response = stack.get("public.localhost", "/hello")
        assert response.status_code == 200, response.text
    assert all(seen.headers.get("x-pomerium-jwt-assertion") for seen in stack.upstream.requests)


def test_signed_in_and_denied_through_envoy(mtls: tuple[Stack, int]) -> None:
    stack, _ = mtls
    cookie = stack.seed_session("private.localhost", user_id="u1", email="alice@example.com")
    allowed = stack.get("private.localhost", "/", headers={"cookie": f"_pomerium={cookie}"})
    assert allowed.status_code == 200, allowed.text
    assert stack.upstream.requests[-1].headers["x-pomerium-claim-email"] == ["alice@example.com"]
    other = stack.seed_session("nobody.localhost", user_id="u1", email="alice@example.com")
    denied = stack.get("nobody.localhost", "/", headers={"cookie": f"_pomerium={other}", "accept": "application/json"})
    assert denied.status_code == 403


def test_sign_in_pages_through_envoy(mtls: tuple[Stack, int]) -> None:
    stack, _ = mtls
    # The web layer answers through Envoy's TLS link to http_address.
    assert stack.get("public.localhost", "/.well-known/pomerium/jwks.json").status_code == 200


def _check(port: int, credentials: grpc.ChannelCredentials | None) -> pb.CheckResponse:
    message = pb.CheckRequest()
    http = message.attributes.request.http
    http.method, http.host, http.path, http.scheme = "GET", "public.localhost", "/", "http"
    message.attributes.context_extensions["route_id"] = "public"
    address = f"127.0.0.1:{port}"
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel:
        answer: pb.CheckResponse = pb_grpc.AuthorizationStub(channel).Check(message, timeout=5)
        return answer


@pytest.mark.skipif(TRANSPORT == "http", reason="the gRPC Check server: gRPC pass")
def test_raw_grpc_client_needs_the_right_certificate(mtls: tuple[Stack, int], pki: Pki) -> None:
    _, first = mtls
    envoy = grpc.ssl_channel_credentials(pki.root.cert_pem, pki.envoy.key_pem, pki.envoy.cert_pem)
    refused = {
        "no client certificate": grpc.ssl_channel_credentials(pki.root.cert_pem),
        "another CA's certificate": grpc.ssl_channel_credentials(
            pki.root.cert_pem, pki.foreign.key_pem, pki.foreign.cert_pem
        ),
        "plain text": None,
    }
    # The right CA, another workload's certificate (a user's): a session, but no Check.
    same_ca = grpc.ssl_channel_credentials(pki.root.cert_pem, pki.client.key_pem, pki.client.cert_pem)
    # Envoy's name as a common name only, no SAN: a name is a SAN or nothing.
    cn_only = issue(pki.root, "envoy", client=True)
    named_cn = grpc.ssl_channel_credentials(pki.root.cert_pem, cn_only.key_pem, cn_only.cert_pem)
    for port in (first, first + 1):  # every worker
        assert _check(port, envoy).status.code == 0
        for what, credentials in refused.items():
            with pytest.raises(grpc.RpcError) as info:
                _check(port, credentials)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, what  # type: ignore[attr-defined]
        for credentials in (same_ca, named_cn):
            with pytest.raises(grpc.RpcError) as info:
                _check(port, credentials)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]


@pytest.mark.skipif(TRANSPORT != "http", reason="Envoy's HTTP service: HTTP pass")
def test_raw_http_check_client_needs_the_right_certificate(mtls: tuple[Stack, int], pki: Pki, tmp_path: Path) -> None:
    _, first = mtls
    for port in (first, first + 1):
        url = f"https://127.0.0.1:{port}{HEALTH_PATH}"
        assert httpx2.get(url, verify=_context(pki, pki.envoy, tmp_path), timeout=5).status_code == 204
        for client in (None, pki.foreign, pki.client):  # pki.client: the right CA, not Envoy's name
            with pytest.raises(httpx2.HTTPError):
                httpx2.get(url, verify=_context(pki, client, tmp_path), timeout=5)
        with pytest.raises(httpx2.HTTPError):
            httpx2.get(f"http://127.0.0.1:{port}{HEALTH_PATH}", timeout=5)


def test_web_layer_needs_the_right_certificate(mtls: tuple[Stack, int], pki: Pki, tmp_path: Path) -> None:
    stack, _ = mtls
    url = f"https://127.0.0.1:{stack.http_port}/healthz"
    assert httpx2.get(url, verify=_context(pki, pki.envoy, tmp_path), timeout=5).status_code == 200
    for client in (None, pki.foreign):
        with pytest.raises(httpx2.HTTPError):
            httpx2.get(url, verify=_context(pki, client, tmp_path), timeout=5)
    with pytest.raises(httpx2.HTTPError):
        httpx2.get(f"http://127.0.0.1:{stack.http_port}/healthz", timeout=5)


def test_envoy_handshakes_with_both_clusters(mtls: tuple[Stack, int]) -> None:
    stack, _ = mtls
    assert stack.get("public.localhost", "/.well-known/pomerium/jwks.json").status_code == 200
    stats = httpx2.get(f"http://127.0.0.1:{stack.admin_port}/stats?filter=ssl.handshake$", timeout=5).text
    counts = dict(line.split(": ") for line in stats.splitlines())
    assert int(counts["cluster.authz-grpc.ssl.handshake"]) >= 2  # a connection to each worker, at least
    assert int(counts["cluster.authz-http.ssl.handshake"]) >= 1
