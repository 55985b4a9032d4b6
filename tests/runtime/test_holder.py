"""One live state: swapping the holder under a running `authz serve` changes answers, and no request fails."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import httpx2
import pytest

from authz._proto.envoy.service.auth.v3 import external_auth_pb2 as pb
from authz._proto.envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc
from authz.cli.serve import run
from authz.config import Config
from authz.dev.stack import free_port, wait_until
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime
from authz.sessions.stores import MemoryStore
from authz.signing.keys import generate_p256_pem

ROUTE = {"id": "app", "from": "http://app.localhost", "to": "http://127.0.0.1:9"}


def test_swap_returns_the_previous_runtime(make_config: Callable[..., Config]) -> None:
    first = Runtime.build(make_config(), MemoryStore())
    second = Runtime.build(make_config(), MemoryStore())
    holder = RuntimeHolder(first)
    assert holder.current is first
    assert holder.swap(second) is first and holder.current is second


@dataclass
class Running:
    holder: RuntimeHolder
    grpc_port: int
    http_port: int
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event
    thread: threading.Thread


@pytest.fixture
def running(make_config: Callable[..., Config]) -> Iterator[Running]:
    grpc_port, http_port = free_port(), free_port()
    config = make_config(
        routes=[{**ROUTE, "policy": {"deny": {"or": [{"reject": True}]}}}],
        grpc_address=f"127.0.0.1:{grpc_port}",
        http_address=f"127.0.0.1:{http_port}",
    )
    holder = RuntimeHolder(Runtime.build(config, MemoryStore()))
    ready = threading.Event()
    state: dict[str, object] = {}

    def serve() -> None:
        async def main() -> None:
            state["loop"], state["stop"] = asyncio.get_running_loop(), asyncio.Event()
            ready.set()
            await run(holder, state["stop"])  # type: ignore[arg-type]

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    wait_until(lambda: _healthz(http_port) == 200, 10, "authz serve")
    server = Running(holder, grpc_port, http_port, state["loop"], state["stop"], thread)  # type: ignore[arg-type]
    yield server
    server.loop.call_soon_threadsafe(server.stop.set)
    thread.join(15)
    assert not thread.is_alive()


def _healthz(port: int) -> int:
    try:
        return httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code
    except httpx2.HTTPError:
        return 0


def _check() -> pb.CheckRequest:
    check = pb.CheckRequest()
    http = check.attributes.request.http
    http.method, http.host, http.path, http.scheme = "GET", "app.localhost", "/", "http"
    http.headers["accept"] = "application/json"
    check.attributes.context_extensions["route_id"] = "app"
    return check


def test_a_swap_takes_effect_under_load_with_no_request_failing(
    running: Running, make_config: Callable[..., Config]
) -> None:
    statuses: list[int] = []
    failures: list[str] = []
    done = threading.Event()

    def hammer() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
            stub = pb_grpc.AuthorizationStub(channel)
            while not done.is_set():
                try:
                    response = stub.Check(_check(), timeout=5)
                except grpc.RpcError as exc:
                    failures.append(str(exc.code()))
                    continue
                statuses.append(200 if response.status.code == 0 else response.denied_response.status.code)

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for worker in workers:
        worker.start()
    wait_until(lambda: len(statuses) >= 50, 10, "checks before the swap")
    old_jwks = httpx2.get(f"http://127.0.0.1:{running.http_port}/.well-known/pomerium/jwks.json").json()

    config = make_config(
        routes=[{**ROUTE, "allow_public_unauthenticated_access": True}],
        grpc_address=f"127.0.0.1:{running.grpc_port}",
        http_address=f"127.0.0.1:{running.http_port}",
        signing_key=base64.b64encode(generate_p256_pem()).decode(),
    )
    swapped_at = len(statuses)
    running.holder.swap(Runtime.build(config, MemoryStore()))
    wait_until(lambda: statuses.count(200) >= 50, 10, "checks after the swap")
    done.set()
    for worker in workers:
        worker.join(10)

    assert failures == []
    assert set(statuses) == {200, 403}
    # Before the swap every answer was the old policy's; once the new one answered, never the old again.
    first_allow = statuses.index(200)
    assert first_allow >= swapped_at - len(workers)
    assert 403 not in statuses[first_allow + len(workers) :]
    new_jwks = httpx2.get(f"http://127.0.0.1:{running.http_port}/.well-known/pomerium/jwks.json").json()
    assert new_jwks != old_jwks and len(new_jwks["keys"]) == 1
