"""The sidecar against an identity provider that is down or slow: clear 502/504 pages."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx2
import pytest

from authz.config import Config
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime
from authz.sessions.stores import MemoryStore
from authz.signing import signed_url
from authz.web.sidecar import create_app

ROUTE = {"from": "http://app.localhost", "to": "http://127.0.0.1:9", "allow_any_authenticated_user": True}


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sign_in(make_config: Callable[..., Config], idp_url: str) -> tuple[int, str]:
    config = make_config(routes=[ROUTE], idp_provider_url=idp_url, idp_client_id="authz",
                         idp_client_secret="s", idp_timeout="1s")  # fmt: skip
    assert config.idp is not None
    rt = Runtime.build(config, MemoryStore())
    endpoint = f"{config.authenticate_service_url}/.pomerium/sign_in"
    url = urlsplit(signed_url.sign(rt.url_key, endpoint, "http://app.localhost:8080/", time.time()))

    async def run() -> tuple[int, str]:
        transport = httpx2.ASGITransport(app=create_app(RuntimeHolder(rt), ready=lambda: True))
        async with httpx2.AsyncClient(transport=transport, base_url=config.authenticate_service_url) as client:
            response = await client.get(f"{url.path}?{url.query}", headers={"accept": "text/html"})
        await rt.close()
        return response.status_code, response.text

    return asyncio.run(run())


def test_unreachable_idp_is_502(make_config: Callable[..., Config]) -> None:
    status, body = _sign_in(make_config, f"http://127.0.0.1:{_closed_port()}")
    assert status == 502 and "unreachable" in body and "Traceback" not in body


def test_slow_idp_is_504(make_config: Callable[..., Config], silent_server: int) -> None:
    started = time.monotonic()
    status, body = _sign_in(make_config, f"http://127.0.0.1:{silent_server}")
    assert status == 504 and "timed out" in body
    assert time.monotonic() - started < 5
