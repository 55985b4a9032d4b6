"""The sidecar's HTTP server for real: uvicorn on a socket, its limits, and how it starts and stops."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from authz.web.pages import CONTENT_SECURITY_POLICY
from authz.web.server import MAX_HEAD, HttpServer, bind
from authz.web.sidecar import MAX_BODY, create_app

from .conftest import Web

pytestmark = pytest.mark.anyio


async def _exchange(port: int, data: bytes, *, read_until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(-1) if read_until_close else reader.read(65536), 10)
    finally:
        writer.close()


def _request(path: str, host: str = "authenticate.localhost:8080", extra: str = "", body: bytes = b"") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{length}{extra}\r\n".encode() + body


async def test_answers_carry_the_security_headers_and_no_server_or_date_header(web: Web) -> None:
    server = await HttpServer.start(create_app(web.holder, lambda: True), "127.0.0.1", 0)
    try:
        probe = _request("/healthz", host="127.0.0.1")
        head = (await _exchange(server.port, probe)).partition(b"\r\n\r\n")[0].decode().lower()
        missing = (await _exchange(server.port, _request("/nope"))).decode().lower()
    finally:
        server.close()
        await server.wait_closed()
    assert head.startswith("http/1.1 200")
    assert "\r\nserver:" not in head and "\r\ndate:" not in head
    assert missing.startswith("http/1.1 404")
    for answer in (head, missing):
        csp = f"content-security-policy: {CONTENT_SECURITY_POLICY.lower()}"
        for line in ("x-content-type-options: nosniff", "x-frame-options: deny", csp, "referrer-policy: no-referrer"):
            assert f"\r\n{line}\r\n" in answer


async def test_limits_on_the_head_and_the_body(web: Web) -> None:
    server = await HttpServer.start(create_app(web.holder, lambda: True), "127.0.0.1", 0)
    try:
        # h11 measures a head while it is incomplete: send one that is not finished at the limit.
        big_head = await _exchange(server.port, _request("/healthz", "127.0.0.1", f"X-Big: {'a' * MAX_HEAD}\r\n")[:-2])
        fits = await _exchange(server.port, _request("/healthz", "127.0.0.1", f"X-Big: {'a' * (MAX_HEAD // 2)}\r\n"))
        big_body = await _exchange(server.port, _request("/.pomerium/sign_out", body=b"x" * (MAX_BODY + 1)))
    finally:
        server.close()
        await server.wait_closed()
    assert big_head.startswith(b"HTTP/1.1 400")
    assert fits.startswith(b"HTTP/1.1 200")
    assert big_body.startswith(b"HTTP/1.1 413") and big_body.endswith(b"request body too large\n")


async def test_an_idle_connection_is_closed(web: Web) -> None:
    server = await HttpServer.start(create_app(web.holder, lambda: True), "127.0.0.1", 0, idle_timeout=1)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await asyncio.wait_for(reader.read(1), 5) == b""  # closed by the server, nothing sent
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_busy_port_is_an_oserror() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="error while attempting to bind on address") as raised:
            bind("127.0.0.1", port)
    assert raised.value.strerror and "address already in use" in raised.value.strerror


async def test_close_drains_requests_in_flight_and_leaves_signals_alone() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(request: Request) -> Response:
        started.set()
        await release.wait()
        return PlainTextResponse("done")

    handlers: Callable[[], tuple[object, object]] = lambda: (  # noqa: E731
        signal.getsignal(signal.SIGINT),
        signal.getsignal(signal.SIGTERM),
    )
    before = handlers()
    server = await HttpServer.start(Starlette(routes=[Route("/slow", slow)]), "127.0.0.1", 0)
    assert handlers() == before
    answer = asyncio.create_task(_exchange(server.port, _request("/slow")))
    await asyncio.wait_for(started.wait(), 5)
    server.close()
    await asyncio.sleep(0.3)  # the server has stopped accepting
    with pytest.raises(OSError):
        await _exchange(server.port, _request("/slow"))
    release.set()
    await asyncio.wait_for(server.wait_closed(), 10)
    assert (await answer).endswith(b"done")
    assert handlers() == before
