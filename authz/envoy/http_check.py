"""Envoy's HTTP ext_authz service (`ext_authz_transport: http`): the same Check over HTTP/1.1.

Envoy sends each check as an HTTP/1.1 request on a kept-alive connection: the original method,
the original path as Envoy holds it (after its own normalisation, exactly what the gRPC transport
gets as `http.path`), every original header (the generated config lets all through), and three
headers the generated config fills from Envoy's own knowledge, replacing any a client sent:

  x-authz-route-id      the route's id (%ROUTE_NAME%: the generated config names each route so)
  x-authz-route-checksum  the route's checksum (%METADATA(ROUTE:authz:checksum)%)
  x-authz-source        the client's address (%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%)
  x-authz-client-cert   the client certificate, URL-encoded PEM (%DOWNSTREAM_PEER_CERT%)

They take the place of gRPC's context extension, source address and peer certificate, and are
removed from the headers the Check sees. The answer: allowed → 200, the headers to set on the
upstream request (Envoy overwrites the ones the generated config names) and
`x-envoy-auth-headers-to-remove`; denied → the status, headers and body for the client. An answer
whose headers hold a line break is a plain 503 instead, never an injected header.

Requests are parsed by httptools (llhttp, as uvicorn's fast path), with a cap on the head
(MAX_HEAD); anything it refuses is a 400 and the connection closes. The Check runs on the event
loop; a store read it needs runs in a thread, and the connection reads nothing more meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

import httptools

from authz.check.answer import Answer, error
from authz.check.gather import Pending
from authz.check.request import RequestContext
from authz.config.model import InternalTls
from authz.envoy.adapter import decode_certificate
from authz.envoy.peer import carries, ssl_sans
from authz.envoy.service import Authorization
from authz.errors import RequestError
from authz.ops.tls import mutual_tls_context
from authz.policy.reasons import Reason
from authz.runtime.holder import RuntimeHolder
from authz.web.pages import STATUS_TEXT

log = logging.getLogger("authz")

ROUTE_HEADER = "x-authz-route-id"
CHECKSUM_HEADER = "x-authz-route-checksum"
SOURCE_HEADER = "x-authz-source"
CERTIFICATE_HEADER = "x-authz-client-cert"
INTERNAL_HEADERS = (ROUTE_HEADER, CHECKSUM_HEADER, SOURCE_HEADER, CERTIFICATE_HEADER)
REMOVE_HEADER = "x-envoy-auth-headers-to-remove"
MAX_HEAD = 128 * 1024  # Envoy's listener caps request headers at 96 KiB; its own additions fit
MAX_BODY = 64 * 1024  # Envoy sends no body (with_request_body is off); a little is read and dropped
_REASONS = {**STATUS_TEXT, 200: "OK", 302: "Found", 400: "Bad Request", 503: "Service Unavailable"}
_UNSAFE = frozenset("\r\n\x00")


def _headers(pairs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header lines as a map: names lower-cased, a repeated header joined with `,` (as Envoy's
    gRPC CheckRequest joins them)."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in pairs:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("utf-8", "surrogateescape")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


def fallback_request(method: str, pairs: list[tuple[bytes, bytes]]) -> RequestContext:
    """A minimal context for answering a check request that could not be read (format, request id)."""
    headers = _headers(pairs)
    return RequestContext(
        method=method,
        host=headers.get("host", ""),
        path="/",
        headers=headers,
        request_id=headers.get("x-request-id", ""),
        route_id=headers.get(ROUTE_HEADER, ""),
    )


def request_context(method: str, target: str, pairs: list[tuple[bytes, bytes]]) -> RequestContext:
    """The plain request from a check request's method, target and header lines (RequestError
    when the target is one authz refuses, as for gRPC)."""
    headers = _headers(pairs)
    route_id = headers.pop(ROUTE_HEADER, "")
    checksum = headers.pop(CHECKSUM_HEADER, "")
    source_ip = headers.pop(SOURCE_HEADER, "")
    certificate = headers.pop(CERTIFICATE_HEADER, "")
    return RequestContext.build(
        method=method,
        host=headers.get("host", ""),
        target=target,
        scheme=headers.get("x-forwarded-proto", ""),
        headers=headers,
        lowered=True,
        source_ip=source_ip,
        request_id=headers.get("x-request-id", ""),
        route_id=route_id,
        route_checksum=checksum,
        client_certificate=decode_certificate(certificate) if certificate else None,
    )


def encode(answer: Answer, keep_alive: bool) -> bytes:
    """The HTTP/1.1 answer Envoy reads; a plain 503 when a header value would break the framing."""
    status = 200 if answer.allowed else answer.status
    headers = list(answer.headers)
    if answer.allowed and answer.headers_to_remove:
        headers.append((REMOVE_HEADER, ",".join(answer.headers_to_remove)))
    if any(_UNSAFE.intersection(value) or _UNSAFE.intersection(name) for name, value in headers):
        log.error("an answer held a line break in a header; answering 503")
        return _plain(503, keep_alive)
    body = answer.body.encode("utf-8", "replace") if not answer.allowed else b""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"content-length: {len(body)}")
    if not keep_alive:
        lines.append("connection: close")
    head = "\r\n".join(lines) + "\r\n\r\n"
    try:  # a header value passed on (the rewritten cookie) goes back byte for byte
        return head.encode("utf-8", "surrogateescape") + body
    except UnicodeEncodeError:
        return head.encode("utf-8", "replace") + body


def _plain(status: int, keep_alive: bool = False) -> bytes:
    body = f"{status} {_REASONS.get(status, 'Error')}\n".encode()
    connection = "" if keep_alive else "connection: close\r\n"
    head = f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\ncontent-type: text/plain; charset=utf-8\r\n"
    return f"{head}content-length: {len(body)}\r\n{connection}\r\n".encode() + body


class _Connection(asyncio.Protocol):
    """One connection from Envoy: requests one after another (Envoy never pipelines; if a client
    did, each request is still answered in order, as the parser delivers it)."""

    def __init__(self, server: HttpCheckServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.pairs: list[tuple[bytes, bytes]] = []
        self.head = 0
        self.body = 0
        self.busy: asyncio.Task[None] | None = None
        self.too_large = 0  # the status of a cap a request passed (431 head, 413 body)
        self.closing = False  # an upgrade was parsed: close once every queued check is answered
        self.queue: list[tuple[str, str, list[tuple[bytes, bytes]], bool]] = []

    # -- asyncio ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        pin = self.server.client_san
        if pin and not carries(ssl_sans(transport.get_extra_info("peercert")), pin):
            transport.close()  # over mutual TLS, a certificate that is not Envoy's (peer.py)
            return
        self.transport = transport
        self.server.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # A check of a WebSocket request carries its `upgrade` and `connection` headers; the
            # check itself is complete (queued, answered or waiting on the store) and is answered,
            # but the parser reads nothing past an upgrade: the connection closes after the answer.
            self.closing = True
            self._close_when_done()
        except httptools.HttpParserError:
            # httptools wraps what a callback raised; a cap that was passed says which answer.
            self._refuse(self.too_large or 400)

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url, self.pairs, self.head, self.body = b"", [], 0, 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        self.pairs.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += len(body)
        if self.body > MAX_BODY:
            self.too_large = 413
            raise _TooLarge(413)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode("latin-1")
        keep_alive = self.parser.should_keep_alive()
        try:
            target = self.url.decode("utf-8")
        except UnicodeDecodeError:
            self._write(_plain(400), close=True)
            return
        self.queue.append((method, target, self.pairs, keep_alive))
        if self.busy is None:
            self._next()

    # -- answering ----------------------------------------------------------------------------

    def _count(self, size: int) -> None:
        self.head += size
        if self.head > MAX_HEAD:
            self.too_large = 431
            raise _TooLarge(431)

    def _refuse(self, status: int) -> None:
        self.queue.clear()
        self._write(_plain(status), close=True)

    def _write(self, data: bytes, close: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)
        if close:
            self.transport.close()

    def _close_when_done(self) -> None:
        if self.closing and not self.queue and self.busy is None and self.transport is not None:
            self.transport.close()

    def _next(self) -> None:
        """Answer queued requests in order; one that must wait on the store pauses the rest."""
        while self.queue and self.transport is not None:
            method, target, pairs, keep_alive = self.queue.pop(0)
            if _is_health_check(method, target, pairs):
                status = 204 if self.server.serving else 503
                self._write(_plain(status, keep_alive) if status != 204 else _NO_CONTENT, close=not keep_alive)
                continue
            result = self.server.begin(method, target, pairs)
            if isinstance(result, Pending):
                self.transport.pause_reading()
                self.busy = asyncio.ensure_future(self._finish(result, keep_alive))
                return
            self._write(encode(result, keep_alive), close=not keep_alive)

    async def _finish(self, pending: Pending, keep_alive: bool) -> None:
        answer = await asyncio.to_thread(self.server.finish, pending)
        self.busy = None
        self._write(encode(answer, keep_alive), close=not keep_alive)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            self._next()
            self._close_when_done()


HEALTH_PATH = "/.authz/health"
_NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
_ROUTE_HEADER = ROUTE_HEADER.encode()


def _is_health_check(method: str, target: str, pairs: list[tuple[bytes, bytes]]) -> bool:
    """Envoy's health checker, never a check request: every check request carries the route's id
    header (the ext_authz filter adds it, overriding a client's), a health check never does. The
    answer is 204, which Envoy's ext_authz would take as a denial, never as an allow."""
    return method == "GET" and target == HEALTH_PATH and not any(n.lower() == _ROUTE_HEADER for n, _ in pairs)


class _TooLarge(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class HttpCheckServer:
    """Envoy's HTTP ext_authz service on one address; every fault is a denial, never an allow."""

    def __init__(self, holder: RuntimeHolder, clock: Callable[[], float] = time.time) -> None:
        self.holder = holder
        self.core = Authorization(holder)  # the same fault barrier as the gRPC servicer
        self.finish = self.core.finish  # completes a Pending Check; blocks, so it runs in a thread
        self.clock = clock
        self.connections: set[_Connection] = set()
        self.server: asyncio.Server | None = None
        self.serving = False  # what /healthz and the health of this worker report
        self.client_san = ""  # over mutual TLS: the SAN a caller's certificate must carry ("": any)

    def begin(self, method: str, target: str, pairs: list[tuple[bytes, bytes]]) -> Answer | Pending:
        now = self.clock()
        try:
            req = request_context(method, target, pairs)
        except RequestError as exc:
            req, rt = fallback_request(method, pairs), self.holder.current
            answer = error(exc.status, (exc.reason,), req, detail=exc.detail, theme=rt.theme)
            return self.core.observe(rt, req, answer, now)
        except Exception:
            log.exception("could not read the check request; answering 503")
            req, rt = fallback_request(method, pairs), self.holder.current
            return self.core.observe(rt, req, error(503, (Reason.INTERNAL_ERROR,), req, theme=rt.theme), now)
        return self.core.check(req, now)

    @property
    def health(self) -> HttpCheckServer:
        return self

    def set(self, serving: bool) -> None:
        """Whether Envoy's health check finds this worker serving (see `_is_health_check`)."""
        self.serving = serving

    async def start(self, address: str, tls: InternalTls | None = None) -> None:
        """Listen on host:port (OSError if it cannot: SO_REUSEADDR only, never a shared port); with
        `tls`, over mutual TLS (a client certificate from the internal CA required)."""
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        loop = asyncio.get_running_loop()
        context = None
        if tls is not None:
            context = mutual_tls_context(tls.certificate, tls.key.value, tls.client_ca, alpn=("http/1.1",))
            self.client_san = tls.client_san
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT, not a live socket
            sock.bind((host, int(port)))
            sock.listen(2048)
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot listen on grpc_address {address}: {exc.strerror}") from None
        sock.setblocking(False)
        self.server = await loop.create_server(lambda: _Connection(self), sock=sock, ssl=context)

    async def stop(self, grace: float | None) -> None:
        """Stop accepting; let answers in flight finish for up to `grace` seconds, then close."""
        self.serving = False
        if self.server is None:
            return
        self.server.close()
        deadline = time.monotonic() + (grace or 0)
        while any(c.busy is not None for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
        await self.server.wait_closed()
