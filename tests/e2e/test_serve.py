"""`authz serve` as a process: health, port ownership, and `authz dev` end to end."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx2
import pytest

from authz._proto.grpc.health.v1 import health_pb2, health_pb2_grpc
from authz.dev.stack import free_port, idp_available, wait_until
from authz.envoy.http_check import HEALTH_PATH, ROUTE_HEADER

from .conftest import Stack
from .loopback import browser, idp_login

pytestmark = pytest.mark.e2e


def test_health_reports_serving(stack: Stack) -> None:
    grpc_address = stack.config["grpc_address"]
    if stack.config["ext_authz_transport"] == "http":
        with httpx2.Client(base_url=f"http://{grpc_address}", timeout=5) as client:
            assert client.get(HEALTH_PATH).status_code == 204
            # A check request (it always carries the route header Envoy adds) is never a health check.
            posing = client.get(
                HEALTH_PATH, headers={ROUTE_HEADER: "nope", "host": "public.localhost", "accept": "application/json"}
            )
            assert posing.status_code == 404 and posing.headers["content-type"].startswith("application/json")
        return
    with grpc.insecure_channel(grpc_address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        ok = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert ok.status == health_pb2.HealthCheckResponse.SERVING
        named = stub.Check(health_pb2.HealthCheckRequest(service="envoy.service.auth.v3.Authorization"), timeout=5)
        assert named.status == health_pb2.HealthCheckResponse.SERVING
        other = stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert other.status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


def test_healthz_on_http_address(stack: Stack) -> None:
    response = httpx2.get(f"http://127.0.0.1:{stack.http_port}/healthz", timeout=5)
    assert (response.status_code, response.text) == (200, "ok\n")


def test_second_server_on_the_same_ports_refuses_to_start(stack: Stack) -> None:
    # gRPC Python enables SO_REUSEPORT by default; authz turns it off so a leftover server
    # can never silently share the port with a new one.
    result = subprocess.run(
        [sys.executable, "-m", "authz", "serve", "-c", str(stack.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot listen on grpc_address" in result.stderr
    assert stack.get("public.localhost", "/").status_code == 200


def test_missing_signing_key_is_a_clear_startup_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("insecure_server: true\nauthenticate_service_url: http://a.localhost\n")
    result = subprocess.run(
        [sys.executable, "-m", "authz", "serve", "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "signing_key: no signing key configured" in result.stderr and "authz keygen" in result.stderr
    assert "Traceback" not in result.stderr


def test_authz_dev_serves_the_demo_and_stops_on_ctrl_c() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "authz", "dev", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = ""
        deadline = time.monotonic() + 60
        while "Ctrl-C stops everything" not in banner and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, f"authz dev exited: {banner}"
            banner += line

        def page() -> str:
            response = httpx2.get(f"http://127.0.0.1:{port}/", headers={"host": f"public.localhost:{port}"}, timeout=5)
            return response.text

        wait_until(lambda: "assertion verified" in page(), 30, "demo page")
        if idp_available() is None:
            assert f"http://app.localhost:{port}/" in banner and "alice" in banner
            with browser() as client:
                landed = idp_login(client, client.get(f"http://app.localhost:{port}/"), "alice")
            assert "Signed in as <b>alice@example.com</b>" in landed.text
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        assert proc.stdout is not None
        proc.stdout.close()
    assert code == 0
