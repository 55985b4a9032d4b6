"""A do-nothing HTTP ext_authz server: every check is a 200. The Python floor for Envoy's HTTP
ext_authz (`http_service`), a transport measurement only: authz has no HTTP ext_authz transport.

python scripts/bench/http_floor.py uvloop PORT    # a bare asyncio.Protocol HTTP/1.1 server on uvloop
python scripts/bench/http_floor.py asyncio PORT   # the same on the standard library's loop

The fastest of those tried, each pinned to one core, wrk -c50 straight at it on the 2-core bench
host: this Protocol on uvloop about 50k answers/s, on asyncio's loop about 30-40k, uvicorn with
httptools (on uvloop) and a raw ASGI app about 13-15k. Behind Envoy all three are Envoy-bound.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
# For the check before a run that Envoy does ask this server: a request for /_refuse... is a 403.
REFUSE, REFUSED = b" /_refuse", b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n"


class Allow(asyncio.Protocol):
    """HTTP/1.1 with keep-alive: a 200 for each request head (a 403 for /_refuse), its body
    (Content-Length) skipped."""

    def __init__(self) -> None:
        self.buffer = b""
        self.skip = 0  # body bytes of the current request still to come

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        answers = []
        while True:
            if self.skip:
                taken = min(self.skip, len(buffer))
                buffer, self.skip = buffer[taken:], self.skip - taken
                if self.skip:
                    break
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head, buffer = buffer[:end].lower(), buffer[end + 4 :]
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                self.skip = int(head[at + 17 :].split(b"\r\n", 1)[0])
            answers.append(REFUSED if REFUSE in head.split(b"\r\n", 1)[0] else OK)
        self.buffer = buffer
        if answers:
            self.transport.write(b"".join(answers))


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Allow, "127.0.0.1", port, backlog=1024)
    await server.serve_forever()


def main() -> None:
    loop, port = sys.argv[1], int(sys.argv[2])
    if loop == "uvloop":
        import uvloop  # the `bench` extra

        uvloop.run(serve(port))
    elif loop == "asyncio":
        asyncio.run(serve(port))
    else:
        raise SystemExit(f"unknown loop {loop!r}: uvloop or asyncio")


if __name__ == "__main__":
    main()
