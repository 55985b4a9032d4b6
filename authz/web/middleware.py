"""Small pure ASGI middlewares around the sidecar app: the pages' CSP, the request body cap and the fault barrier."""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authz.runtime.holder import RuntimeHolder
from authz.web.responses import text

log = logging.getLogger("authz.http")


class ContentSecurity:
    """Every answer of the app carries a Content-Security-Policy: the one its page set (a page
    sends the policy of the look it was rendered in), else the current config's."""

    def __init__(self, app: ASGIApp, holder: RuntimeHolder) -> None:
        self.app = app
        self.holder = holder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name.lower() == b"content-security-policy" for name, _ in headers):
                    headers.append((b"content-security-policy", self.holder.current.theme.csp.encode()))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_policy)


class BodyLimit:
    """Refuse a request body over `limit` bytes with 413, before the app runs.

    A declared Content-Length over the cap is refused without reading a byte; otherwise the body
    is read (counting the bytes of a chunked one) up to the cap and handed to the app whole, so no
    endpoint ever sees part of a body. The 413 closes the connection: the rest is never read.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its whole request
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal body
            if body is None:
                return await receive()  # after the body: only http.disconnect is left
            message, body = body, None
            return message

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
        response = text(413, "request body too large\n")
        response.headers["connection"] = "close"
        await response(scope, receive, send)


class Faults:
    """Any exception the app did not turn into an answer is a plain 500 and one log line; no traceback is sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("sidecar handler failed for %s %s", scope["method"], scope["path"])
            if started:
                raise  # half an answer is out: the server can only close the connection
            await text(500, "internal error\n")(scope, receive, send)
