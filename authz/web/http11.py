"""A small HTTP/1.1 server on asyncio streams; h11 does the parsing, this does the plumbing.

It serves the sidecar's few endpoints behind Envoy (and `/healthz` directly). Bodies are capped,
idle connections time out, and a handler fault is a 500 page with no traceback sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

import h11

log = logging.getLogger("authz.http")

MAX_BODY = 64 * 1024
IDLE_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]


def text_response(status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Response:
    return Response(status, text.encode(), [("content-type", content_type)])


def _request(event: h11.Request, body: bytes) -> Request:
    target = event.target.decode("ascii", "replace")
    raw_path, _, query = target.partition("?")
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("ascii", "replace").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return Request(event.method.decode("ascii", "replace").upper(), target, unquote(raw_path), query, headers, body)


async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, response: Response, head: bool) -> None:
    headers = [(k, v) for k, v in response.headers if k.lower() != "content-length"]
    headers.append(("content-length", str(len(response.body))))
    headers.append(("x-content-type-options", "nosniff"))
    data = conn.send(h11.Response(status_code=response.status, headers=headers)) or b""
    if not head and response.body:
        data += conn.send(h11.Data(data=response.body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    writer.write(data)
    await writer.drain()


async def _serve_connection(handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=32 * 1024)
    try:
        while True:
            request: h11.Request | None = None
            body = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await asyncio.wait_for(reader.read(65536), IDLE_TIMEOUT)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    return
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_BODY:
                        await _send(conn, writer, text_response(413, "request body too large\n"), False)
                        return
                elif isinstance(event, h11.EndOfMessage):
                    break
            assert request is not None
            parsed = _request(request, bytes(body))
            try:
                response = await handler(parsed)
            except Exception:
                log.exception("sidecar handler failed for %s %s", parsed.method, parsed.path)
                response = text_response(500, "internal error\n")
            await _send(conn, writer, response, parsed.method == "HEAD")
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except h11.RemoteProtocolError:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with contextlib.suppress(h11.LocalProtocolError, ConnectionError):
                await _send(conn, writer, text_response(400, "bad request\n"), False)
    except (TimeoutError, ConnectionError, h11.LocalProtocolError):
        pass
    finally:
        writer.close()


async def start(handler: Handler, host: str, port: int) -> asyncio.Server:
    """Listen on host:port and serve each connection with `handler`."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_connection(handler, reader, writer)

    return await asyncio.start_server(on_connect, host, port, reuse_address=True, limit=65536)
