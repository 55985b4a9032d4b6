"""The sidecar's HTTP server: uvicorn on the running asyncio loop (the gRPC server's), limits set on purpose.

uvicorn runs its h11 implementation (forced: httptools would ignore the head limit) with:

  request head    32 KiB  request line and headers still incomplete past this → 400
                          (`h11_max_incomplete_event_size`; a longer head that arrives whole in
                          one read is parsed, as before; Envoy caps headers at 96 KiB in front)
  request body    64 KiB  `sidecar.MAX_BODY`, enforced by `middleware.BodyLimit`; more → 413
  idle            30 s    a connection with no request in flight is closed, counted from its
                          last answer or, for a new connection, from connect (`_Http11`)
  concurrency     1000    open connections or in-flight requests; beyond that uvicorn answers 503
  backlog         2048    connections waiting in the kernel to be accepted
  shutdown grace  5 s     after `close()`, for requests in flight; then they are cancelled

and: no forwarded-header trust (`proxy_headers=False`: client address and scheme are the
socket's), no `Server` and no `Date` header (as before), on every answer (uvicorn's default
headers, so its own 400s and 503s carry them too) `x-content-type-options: nosniff`,
`x-frame-options: DENY` (the sign-out and account pages hold forms a framing page must not click
through) and `referrer-policy: no-referrer` (sign-in and handoff URLs carry one-time values); the
Content-Security-Policy, which depends on the config's branding, is added by the app
(`middleware.ContentSecurity`) to every answer of its own, HSTS when Envoy's
listener is TLS (`extra_headers`, from serve.py), no access log, logging left to
authz (`log_config=None`; uvicorn's own lines only from warning up), no lifespan, no websockets, and
no signal handling: authz's handlers drain (and will reload) both servers, so uvicorn must never
replace them or re-raise a signal on exit; `close()` stops it. The sockets are bound here, so a
busy port is an OSError from `start`, before anything is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from authz.web.pages import STATIC_HEADERS

MAX_HEAD = 32 * 1024
IDLE_TIMEOUT = 30
CONCURRENCY = 1000
BACKLOG = 2048
SHUTDOWN_GRACE = 5
SECURITY_HEADERS = STATIC_HEADERS


class _Http11(H11Protocol):
    """uvicorn's h11 protocol with the idle timer running from connect.

    uvicorn arms it only after an answer, so a client that connects and never sends a request would
    hold its connection, and a place under the concurrency limit, for ever.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handling, and telling when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn would install SIGINT/SIGTERM handlers over authz's and re-raise the signal when
        # it stops; authz stops it through `should_exit` instead.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for host:port, one per address it resolves to (as `asyncio.start_server` binds)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebinding after a restart; never SO_REUSEPORT
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # the IPv4 address has its own socket
            try:
                sock.bind(address)
            except OSError as exc:
                reason = (exc.strerror or str(exc)).lower()
                raise OSError(exc.errno, f"error while attempting to bind on address {address!r}: {reason}") from None
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class HttpServer:
    """One ASGI app served by uvicorn on the running loop until `close()`; shaped like `asyncio.Server`."""

    def __init__(self, server: _Server, sockets: list[socket.socket], task: asyncio.Task[None]) -> None:
        self._server = server
        self.sockets = sockets
        self._task = task

    @classmethod
    async def start(
        cls,
        app: ASGIApp,
        host: str,
        port: int,
        *,
        idle_timeout: int = IDLE_TIMEOUT,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        ssl_ca_certs: str | None = None,
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> HttpServer:
        """Bind host:port (OSError if it cannot) and serve `app` there, over TLS when given a
        certificate (and requiring client certificates from `ssl_ca_certs`); returns once listening."""
        sockets = bind(host, port)
        config = uvicorn.Config(
            app,
            http=_Http11,
            ws="none",
            lifespan="off",
            interface="asgi3",
            h11_max_incomplete_event_size=MAX_HEAD,
            timeout_keep_alive=idle_timeout,
            limit_concurrency=CONCURRENCY,
            backlog=BACKLOG,
            timeout_graceful_shutdown=SHUTDOWN_GRACE,
            proxy_headers=False,
            server_header=False,
            date_header=False,
            headers=[*SECURITY_HEADERS, *extra_headers],
            access_log=False,
            log_config=None,
            log_level="warning",
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            ssl_ca_certs=ssl_ca_certs,
            ssl_cert_reqs=ssl.CERT_REQUIRED if ssl_ca_certs else ssl.CERT_NONE,
        )
        server = _Server(config)
        task = asyncio.create_task(server.serve(sockets=sockets), name="authz-http")
        listening = asyncio.create_task(server.listening.wait())
        await asyncio.wait({task, listening}, return_when=asyncio.FIRST_COMPLETED)
        if not listening.done():
            listening.cancel()
            for sock in sockets:
                sock.close()
            task.result()  # the reason it stopped
            raise RuntimeError("the HTTP server stopped while starting")
        return cls(server, sockets, task)

    @property
    def port(self) -> int:
        """The port of the first listening socket (useful after binding port 0)."""
        return int(self.sockets[0].getsockname()[1])

    def close(self) -> None:
        """Stop accepting connections and start draining the requests in flight."""
        self._server.should_exit = True

    async def wait_closed(self) -> None:
        """Wait until every connection is closed (at most the shutdown grace, then requests are cancelled)."""
        await self._task
