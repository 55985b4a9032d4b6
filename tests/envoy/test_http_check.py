"""Envoy's HTTP ext_authz transport in process: what a check request becomes, what an answer
looks like on the wire, and how the server takes hostile bytes (a real socket, no Envoy)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import pytest

from authz.check.answer import Answer
from authz.config import Config
from authz.envoy.http_check import HEALTH_PATH, HttpCheckServer, encode, request_context
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime
from authz.sessions.stores import MemoryStore

PUBLIC = {"id": "pub", "from": "http://pub.localhost", "to": "http://127.0.0.1:9",
          "allow_public_unauthenticated_access": True, "pass_identity_headers": True}  # fmt: skip


def test_a_check_request_becomes_the_same_request_context_as_over_grpc() -> None:
    pairs = [
        (b"Host", b"pub.localhost:8080"),
        (b"Cookie", b"a=1"),
        (b"cookie", b"b=2"),  # a second line joins with ',' as Envoy's gRPC CheckRequest does
        (b"X-Request-Id", b"rid"),
        (b"x-forwarded-proto", b"https"),
        (b"x-authz-route-id", b"pub"),
        (b"x-authz-source", b"10.0.0.7"),
        (b"x-authz-client-cert", b"-----BEGIN%20CERTIFICATE-----%0AAA%3D%3D"),
    ]
    req = request_context("GET", "/a/b?q=1", pairs)
    assert (req.method, req.host, req.hostname, req.port, req.path, req.query) == (
        "GET", "pub.localhost:8080", "pub.localhost", 8080, "/a/b", "q=1",
    )  # fmt: skip
    assert (req.route_id, req.source_ip, req.request_id, req.scheme) == ("pub", "10.0.0.7", "rid", "https")
    assert req.client_certificate == "-----BEGIN CERTIFICATE-----\nAA=="
    assert req.headers["cookie"] == "a=1,b=2"
    assert not any(name.startswith("x-authz-") for name in req.headers)  # Envoy's additions are not headers
    assert request_context("GET", "/", [(b"host", b"h")]).client_certificate is None


def test_a_cookie_passed_on_keeps_its_bytes() -> None:
    req = request_context("GET", "/", [(b"host", b"h"), (b"cookie", b"a=\xff\xfe; b=caf\xc3\xa9")])
    answer = Answer(True, 200, (), (("cookie", req.headers["cookie"]),), (), "", "r", "")
    assert b"\r\ncookie: a=\xff\xfe; b=caf\xc3\xa9\r\n" in encode(answer, keep_alive=True)


def test_answers_on_the_wire() -> None:
    allowed = Answer(True, 200, (), (("x-pomerium-jwt-assertion", "eyJ"),), ("cookie", "authorization"), "", "r", "")
    head, _, body = encode(allowed, keep_alive=True).partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 200 OK", b"x-pomerium-jwt-assertion: eyJ", b"x-envoy-auth-headers-to-remove: cookie,authorization",
        b"content-length: 0",
    ]  # fmt: skip
    assert body == b""
    denied = Answer(
        False, 302, (), (("location", "/x"), ("set-cookie", "a=1"), ("set-cookie", "b=2")), (), "é", "r", ""
    )
    head, _, body = encode(denied, keep_alive=False).partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 302 Found", b"location: /x", b"set-cookie: a=1", b"set-cookie: b=2", b"content-length: 2",
        b"connection: close",
    ]  # fmt: skip
    assert body == "é".encode()
    injected = Answer(True, 200, (), (("x-claim", "a\r\nx-evil: 1"),), (), "", "r", "")
    assert encode(injected, keep_alive=True).startswith(b"HTTP/1.1 503 ")


@pytest.fixture
def server_port(make_config: Callable[..., Config]) -> Callable[..., Callable[[bytes], bytes]]:
    """A running HttpCheckServer; the callable sends raw bytes on one connection and returns all it read."""

    def make(store: MemoryStore | None = None, config: Config | None = None) -> Callable[[bytes], bytes]:
        def exchange(data: bytes) -> bytes:
            async def scenario() -> bytes:
                rt = Runtime.build(config or make_config(routes=[PUBLIC]), store or MemoryStore())
                server = HttpCheckServer(RuntimeHolder(rt))
                await server.start("127.0.0.1:0")
                assert server.server is not None
                port = server.server.sockets[0].getsockname()[1]
                server.set(True)
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(data)
                await writer.drain()
                if writer.can_write_eof():
                    writer.write_eof()
                out = await asyncio.wait_for(reader.read(), 5)
                writer.close()
                await server.stop(1)
                return out

            return asyncio.run(scenario())

        return exchange

    return make


def _check(target: str = "/", route: str = "pub", extra: str = "") -> bytes:
    return (f"GET {target} HTTP/1.1\r\nhost: pub.localhost\r\nx-authz-route-id: {route}\r\n"
            f"accept: application/json\r\n{extra}\r\n").encode()  # fmt: skip


def test_checks_on_one_connection_are_answered_in_order(server_port: Callable[[], Callable[[bytes], bytes]]) -> None:
    exchange = server_port()
    out = exchange(_check() + _check(route="nope") + _check("/a%zz") + f"GET {HEALTH_PATH} HTTP/1.1\r\n\r\n".encode())
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", out)
    assert statuses == [b"200", b"404", b"400", b"204"]


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nbad header line\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nx: " + b"a" * 200_000 + b"\r\n\r\n", b"431"),
        (b"POST / HTTP/1.1\r\ncontent-length: 100000\r\n\r\n" + b"x" * 100_000, b"413"),
    ],
)
def test_hostile_bytes_get_a_plain_refusal_and_the_connection_closes(
    server_port: Callable[[], Callable[[bytes], bytes]], data: bytes, status: bytes
) -> None:
    out = server_port()(data)
    assert out.startswith(b"HTTP/1.1 " + status + b" ") and b"connection: close" in out


def test_an_upgrade_is_answered_then_the_connection_closes(
    server_port: Callable[[], Callable[[bytes], bytes]],
) -> None:
    out = server_port()(_check(extra="upgrade: websocket\r\nconnection: upgrade\r\n") + _check())
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", out) == [b"200"]


class _BlockingStore(MemoryStore):
    """A store the Check must read off the event loop (as SQLite on a cache miss)."""

    blocking = True


def test_an_upgrade_waiting_on_the_store_is_answered_then_the_connection_closes(
    server_port: Callable[..., Callable[[bytes], bytes]], make_config: Callable[..., Config]
) -> None:
    """A WebSocket request's check whose session must be read from the store: still answered (the
    parser stops at the upgrade, the answer does not), then the connection closes."""
    import time

    from authz.sessions.session import Session, SessionHandle

    store, config = _BlockingStore(), make_config(routes=[PUBLIC])
    now = int(time.time())
    store.put(Session("s1", "u1", "u@example.com", "", (), {}, now, now + 600))
    cookie = Runtime.build(config, store).codec.seal(SessionHandle("s1", "u1", "pub.localhost", now, now + 600))
    upgrade = f"upgrade: websocket\r\nconnection: upgrade\r\ncookie: _pomerium={cookie}\r\n"
    out = server_port(store, config)(_check(extra=upgrade) + _check())
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", out) == [b"200"]
    assert b"x-pomerium-jwt-assertion: " in out  # the session was read from the store


def test_a_health_check_is_never_a_check_and_a_check_never_a_health_check(
    server_port: Callable[[], Callable[[bytes], bytes]],
) -> None:
    exchange = server_port()
    posing = exchange(_check(HEALTH_PATH, route="nope"))  # carries the route header: a check (404)
    assert posing.startswith(b"HTTP/1.1 404 ")
    assert exchange(f"GET {HEALTH_PATH} HTTP/1.1\r\n\r\n".encode()).startswith(b"HTTP/1.1 204 ")
