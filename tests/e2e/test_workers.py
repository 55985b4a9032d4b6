"""`authz serve` with `workers: 2` behind the real Envoy: both workers answer Checks, a dead one is
routed around and started again, each owns its port, and the children end with their parent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx2
import pytest
import yaml

from authz._proto.grpc.health.v1 import health_pb2, health_pb2_grpc
from authz.dev.stack import free_port, free_ports, wait_until
from authz.envoy.http_check import HEALTH_PATH

from .conftest import Stack, _launch, _teardown

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, int]]:
    base = free_ports(2)
    running = _launch(tmp_path_factory.mktemp("workers"), workers=2, grpc_address=f"127.0.0.1:{base}")
    yield running, base
    _teardown(running)


def _children(pid: int) -> list[int]:
    """The live (not zombie) child processes of `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _serving(port: int) -> bool:
    """Whether the worker on `port` says it serves, as Envoy's health check asks it."""
    if os.environ.get("AUTHZ_E2E_TRANSPORT") == "http":
        try:
            return httpx2.get(f"http://127.0.0.1:{port}{HEALTH_PATH}", timeout=2).status_code == 204
        except httpx2.HTTPError:
            return False
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    except grpc.RpcError:
        return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def _checks_per_port(stack: Stack) -> dict[int, int]:
    """Envoy's count of Checks sent to each endpoint of the authz cluster."""
    text = httpx2.get(f"http://127.0.0.1:{stack.admin_port}/clusters", timeout=5).text
    counts = {}
    for line in text.splitlines():  # authz-grpc::127.0.0.1:9191::rq_total::12
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == "authz-grpc" and parts[2] == "rq_total":
            counts[int(parts[1].rpartition(":")[2])] = int(parts[3])
    return counts


def _statuses(stack: Stack, count: int) -> list[int]:
    with stack.client("public.localhost") as client:
        return [client.get("/").status_code for _ in range(count)]


def test_both_workers_answer_checks_through_envoy(workers: tuple[Stack, int]) -> None:
    stack, base = workers
    assert _serving(base) and _serving(base + 1)
    (child,) = _children(stack.authz.proc.pid)
    before = _checks_per_port(stack)
    assert _statuses(stack, 40) == [200] * 40
    after = _checks_per_port(stack)
    assert set(after) == {base, base + 1}
    assert all(after[port] - before.get(port, 0) >= 10 for port in (base, base + 1)), (before, after)
    assert child in _children(stack.authz.proc.pid)


def test_a_dead_worker_is_routed_around_and_started_again(workers: tuple[Stack, int]) -> None:
    stack, base = workers
    (child,) = _children(stack.authz.proc.pid)
    os.kill(child, signal.SIGKILL)
    # Envoy stops sending it Checks once a connection fails or its health check does; a Check
    # already on its way to it fails closed (403), never open.
    time.sleep(3)
    assert _statuses(stack, 20) == [200] * 20
    wait_until(lambda: [c for c in _children(stack.authz.proc.pid) if c != child] != [], 15, "a new worker")
    wait_until(lambda: _serving(base + 1), 15, "the new worker serving")
    assert "worker 1 exited with status -9; starting it again" in stack.authz.output()
    time.sleep(3)  # Envoy's next health check finds it serving
    before = _checks_per_port(stack)
    assert _statuses(stack, 40) == [200] * 40
    assert _checks_per_port(stack)[base + 1] > before[base + 1]


def test_a_revocation_reaches_every_worker_within_the_cache_bound(workers: tuple[Stack, int]) -> None:
    stack, base = workers
    cookie = stack.seed_session("private.localhost", user_id="u-rev", email="rev@example.com")
    sent = {"cookie": f"_pomerium={cookie}", "accept": "text/html"}
    with stack.client("private.localhost") as client:
        before = _checks_per_port(stack)
        assert [client.get("/", headers=sent).status_code for _ in range(20)] == [200] * 20
        assert all(_checks_per_port(stack)[p] > before[p] for p in (base, base + 1))  # both read it
        revoked = subprocess.run(
            [sys.executable, "-m", "authz", "sessions", "revoke", "--user", "u-rev", "-c", str(stack.config_path)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert revoked.returncode == 0, revoked.stderr
        time.sleep(1.5)  # session_cache_ttl is 1 s in this stack
        assert [client.get("/", headers=sent).status_code for _ in range(20)] == [302] * 20


def _config(tmp: Path, stack: Stack, **changes: object) -> Path:
    path = tmp / "c.yaml"
    path.write_text(yaml.safe_dump({**stack.config, **changes}))
    return path


def test_a_worker_that_cannot_bind_its_port_stops_the_start(workers: tuple[Stack, int], tmp_path: Path) -> None:
    stack, _ = workers
    base = free_ports(2)
    changes = {"grpc_address": f"127.0.0.1:{base}", "http_address": f"127.0.0.1:{free_port()}"}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + 1))
        taken.listen()
        result = subprocess.run(
            [sys.executable, "-m", "authz", "serve", "-c", str(_config(tmp_path, stack, **changes))],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on grpc_address 127.0.0.1:{base + 1}" in result.stderr
    assert "worker 1 did not start" in result.stderr
    assert not _serving(base)  # worker 0 let its port go


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_workers_end_with_their_parent(workers: tuple[Stack, int], tmp_path: Path, how: signal.Signals) -> None:
    stack, _ = workers
    base, http_port = free_ports(2), free_port()
    config = _config(tmp_path, stack, grpc_address=f"127.0.0.1:{base}", http_address=f"127.0.0.1:{http_port}")
    parent = subprocess.Popen(
        [sys.executable, "-m", "authz", "serve", "-c", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: _serving(base + 1) and _serving(base), 30, "both workers")
        (child,) = _children(parent.pid)
        parent.send_signal(how)  # SIGTERM: drained by the parent; SIGKILL: the kernel tells the child
        parent.wait(timeout=15)
        wait_until(lambda: not Path(f"/proc/{child}").exists() or _zombie(child), 15, "the child to end")
        assert not _serving(base + 1)
    finally:
        if parent.poll() is None:
            parent.kill()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True
