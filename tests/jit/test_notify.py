"""Notifications and the sweeper against a local recording endpoint (a real HTTP server on port 0):
delivered from the store at least once, signed, retried with back-off, never blocking a call, the
URL never logged; only the lease holder works."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest

from authz.config import Config
from authz.jit import notify, service
from authz.jit.model import Status
from authz.jit.store import MemoryGrantStore
from authz.runtime.state import Runtime
from authz.sessions.stores import MemoryStore
from tests.jit.test_service import ALICE, BOB, jit_routes

pytestmark = pytest.mark.anyio
NOW = 1_800_000_000.0
SECRET = "0123456789abcdef-secret"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Endpoint:
    """An HTTP server that records each POST and answers the next status from `statuses` (then 204)."""

    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], str]] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        lines = head.split("\r\n")[1:]
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
        body = (await reader.readexactly(int(headers.get("content-length", "0")))).decode()
        self.received.append((headers, body))
        status = self.statuses.pop(0) if self.statuses else 204
        writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def endpoint() -> AsyncIterator[Endpoint]:
    made = Endpoint()
    server = await asyncio.start_server(made.handle, "127.0.0.1", 0)
    made.port = server.sockets[0].getsockname()[1]
    async with server:
        yield made


def runtime(make_config: Callable[..., Config], port: int, **jit: Any) -> Runtime:
    config = make_config(routes=jit_routes(notify_url=f"http://127.0.0.1:{port}/hook/T0SECRETPATH", **jit))
    return Runtime.build(config, MemoryStore(), grants=MemoryGrantStore())


def ask(rt: Runtime) -> Any:
    assert rt.grants is not None
    return service.request_access(rt.config, rt.grants, BOB, "app", None, "incident 7", NOW)


async def test_delivered_signed_with_an_event_id(make_config: Callable[..., Config]) -> None:
    async with endpoint() as hook, httpx2.AsyncClient(timeout=2) as client:
        rt = runtime(make_config, hook.port, notify_secret=SECRET)
        ask(rt)
        assert await notify.one_pass(rt, client, "w1", lambda: NOW + 1)
        ((headers, body),) = hook.received
        data = json.loads(body)
        assert (
            data["event"] == "requested"
            and data["grant"]["user"] == "bob"
            and headers["x-authz-event-id"] == data["id"]
        )
        assert headers["content-type"] == "application/json"
        expected = hmac.new(
            SECRET.encode(), f"{headers['x-authz-timestamp']}.{body}".encode(), hashlib.sha256
        ).hexdigest()
        assert headers["x-authz-signature"] == f"sha256={expected}"
        assert rt.grants is not None and rt.grants.due(NOW + 10**6) == []
        await notify.one_pass(rt, client, "w1", lambda: NOW + 2)
        assert len(hook.received) == 1  # delivered once


async def test_retries_with_back_off_and_never_logs_the_url(
    make_config: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with endpoint() as hook, httpx2.AsyncClient(timeout=2) as client:
        hook.statuses = [500, 503]
        rt = runtime(make_config, hook.port)
        ask(rt)
        assert rt.grants is not None
        await notify.one_pass(rt, client, "w1", lambda: NOW)
        (waiting,) = rt.grants.due(NOW + 10**6)
        assert (waiting.attempts, waiting.next_at) == (1, NOW + notify.FIRST_RETRY)
        await notify.one_pass(rt, client, "w1", lambda: NOW + 1)  # not due yet
        assert len(hook.received) == 1
        await notify.one_pass(rt, client, "w1", lambda: NOW + 2)
        (waiting,) = rt.grants.due(NOW + 10**6)
        assert (waiting.attempts, waiting.next_at) == (2, NOW + 2 + 2 * notify.FIRST_RETRY)
        await notify.one_pass(rt, client, "w1", lambda: NOW + 6)
        assert len(hook.received) == 3 and rt.grants.due(NOW + 10**6) == []
        # All three POSTs carried the same event id: the receiver de-duplicates on it.
        assert len({h["x-authz-event-id"] for h, _ in hook.received}) == 1
    ours = "\n".join(
        r.getMessage() + str(getattr(r, "fields", "")) for r in caplog.records if r.name.startswith("authz")
    )
    assert "T0SECRETPATH" not in ours and "HTTP 500" in ours


async def test_an_unreachable_endpoint_is_given_up_after_the_last_attempt(
    make_config: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    async with endpoint() as hook:
        port = hook.port
    rt = runtime(make_config, port)  # nothing listens there any more
    ask(rt)
    assert rt.grants is not None
    now = NOW
    async with httpx2.AsyncClient(timeout=1) as client:
        for _ in range(notify.MAX_ATTEMPTS):
            (waiting,) = rt.grants.due(10**12)
            now = max(now, waiting.next_at)
            await notify.one_pass(rt, client, "w1", lambda: now)  # noqa: B023
    assert rt.grants.due(10**12) == []
    ours = "\n".join(
        r.getMessage() + str(getattr(r, "fields", "")) for r in caplog.records if r.name.startswith("authz")
    )
    assert "given up after 12 attempts" in ours and str(port) not in ours


async def test_a_call_never_waits_for_the_endpoint(make_config: Callable[..., Config]) -> None:
    rt = runtime(make_config, 9)  # the request is recorded without any delivery attempt
    grant = ask(rt)
    assert grant.status is Status.PENDING and rt.grants is not None and len(rt.grants.due(NOW)) == 1


async def test_only_the_lease_holder_sweeps_and_delivers(make_config: Callable[..., Config]) -> None:
    async with endpoint() as hook, httpx2.AsyncClient(timeout=2) as client:
        rt = runtime(make_config, hook.port)
        grant = ask(rt)
        assert rt.grants is not None
        service.approve(rt.config, rt.grants, ALICE, grant.id, "1m", NOW)
        assert await notify.one_pass(rt, client, "w1", lambda: NOW + 50)
        assert not await notify.one_pass(rt, client, "w2", lambda: NOW + 61)  # w1's lease is live
        assert len(hook.received) == 2  # w2 delivered nothing either
        assert rt.grants.get(grant.id).status is Status.ACTIVE  # type: ignore[union-attr]
        assert await notify.one_pass(rt, client, "w1", lambda: NOW + 61)  # the sweeper: a second after
        assert rt.grants.get(grant.id).status is Status.EXPIRED  # type: ignore[union-attr]
        assert [json.loads(b)["event"] for _, b in hook.received] == ["requested", "approved", "expired"]
        # The lease lapses when its holder stops: another worker takes over.
        assert await notify.one_pass(rt, client, "w2", lambda: NOW + 61 + notify.LEASE + 1)


async def test_jit_loop_stops_when_told(make_config: Callable[..., Config]) -> None:
    from authz.runtime.holder import RuntimeHolder

    async with endpoint() as hook:
        rt = runtime(make_config, hook.port)
        ask(rt)
        stop = asyncio.Event()
        task = asyncio.create_task(notify.jit_loop(RuntimeHolder(rt), stop, clock=lambda: NOW + 1, tick=0.05))
        for _ in range(100):
            if hook.received:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 5)
        assert len(hook.received) == 1


async def test_a_fault_in_one_delivery_never_holds_up_the_others(
    make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with endpoint() as hook, httpx2.AsyncClient(timeout=2) as client:
        rt = runtime(make_config, hook.port)
        ask(rt)
        other = service.Actor("carol", "carol@example.com")
        assert rt.grants is not None
        service.request_access(rt.config, rt.grants, other, "app", None, "x", NOW)
        calls = {"n": 0}
        real_post = client.post

        async def flaky(*args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 1:
                raise ValueError("a client fault that is no HTTPError")
            return await real_post(*args, **kwargs)

        monkeypatch.setattr(client, "post", flaky)
        assert await notify.one_pass(rt, client, "w1", lambda: NOW)
        assert len(hook.received) == 1  # the second was delivered all the same
        (waiting,) = rt.grants.due(NOW + 10**6)
        assert waiting.attempts == 1  # the first counts as a failed attempt, retried later
