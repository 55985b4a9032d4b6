"""Just-in-time access through the real Envoy, the real IdP and `authz serve`: bob asks from the 403
page, alice approves on the authenticate host for a few seconds, bob gets in (and only bob), and
after the duration he is out again with his session still valid; a revoked grant stops working;
nobody approves their own request; forged, replayed and same-origin approvals are refused; every
step is notified to a recording endpoint."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest

from authz.dev.stack import free_ports, idp_available

from .conftest import Stack, _launch, _teardown
from .loopback import browser, forms, idp_login

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(idp_available() is not None, reason=f"local IdP unavailable: {idp_available()}"),
]
API = "/.pomerium/api/v1/grants"


class Hook:
    """A notification endpoint recording each POST's headers and JSON body."""

    def __init__(self) -> None:
        self.events: list[tuple[dict[str, str], dict[str, Any]]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                hook.events.append(({k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def names(self) -> list[str]:
        return [body["event"] for _, body in self.events]

    def wait_for(self, event: str, count: int = 1, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.names().count(event) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        assert self.names().count(event) >= count, self.names()


@pytest.fixture(scope="module")
def hook() -> Iterator[Hook]:
    made = Hook()
    yield made
    made.server.shutdown()
    made.server.server_close()


class WebSocketUpstream:
    """An upstream that accepts every WebSocket upgrade (RFC 6455 §4.2.2) and holds it open."""

    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            key = re.search(rb"(?im)^sec-websocket-key:\s*(\S+)", head)
            accept = base64.b64encode(hashlib.sha1(key.group(1) + self.GUID.encode()).digest()) if key else b""  # noqa: S324
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")  # fmt: skip
            while conn.recv(4096):
                pass

    def close(self) -> None:
        self.server.close()


@pytest.fixture(scope="module")
def ws_upstream() -> Iterator[WebSocketUpstream]:
    made = WebSocketUpstream()
    yield made
    made.close()


@pytest.fixture(scope="module")
def jit_stack(tmp_path_factory: pytest.TempPathFactory, hook: Hook, ws_upstream: WebSocketUpstream) -> Iterator[Stack]:
    vault = {
        "id": "vault",
        "from": "http://vault.localhost",
        "pass_identity_headers": True,
        "policy": {
            "allow": {"or": [{"email": {"is": "carol@example.com"}}]},
            "deny": {"or": [{"email": {"is": "mallory@evil.test"}}]},
        },
        "jit": {
            "approvers": [{"allow": {"or": [{"groups": {"has": "admins"}}, {"email": {"is": "bob@example.com"}}]}}],
            "max_duration": "1h",
            "default_duration": "5m",
            "notify_url": f"http://127.0.0.1:{hook.port}/hook",
            "notify_secret": "a-notification-signing-secret",
        },
    }
    stream = {
        "id": "stream",
        "from": "http://stream.localhost",
        "to": f"http://127.0.0.1:{ws_upstream.port}",
        "allow_websockets": True,
        "policy": {"allow": {"or": [{"email": {"is": "bob@example.com"}}]}},
        "jit": {"approvers": [{"allow": {"or": [{"groups": {"has": "admins"}}]}}], "max_stream_duration": "2s"},
    }
    running = _launch(tmp_path_factory.mktemp("jit"), extra_routes=[vault, stream])
    yield running
    _teardown(running)


@pytest.fixture
def opened() -> Iterator[list[httpx2.Client]]:
    """The test's browsers, closed after it."""
    clients: list[httpx2.Client] = []
    yield clients
    for client in clients:
        client.close()


def signed_in(
    stack: Stack, opened: list[httpx2.Client], user: str, host: str = "vault.localhost"
) -> tuple[httpx2.Client, httpx2.Response]:
    """A browser in which `user` signed in through the IdP, starting from `host`; and the page it landed on."""
    client = browser()
    opened.append(client)
    landed = idp_login(client, client.get(stack.url(host, "/")), user)
    return client, landed


def auth_page(stack: Stack, client: httpx2.Client) -> httpx2.Response:
    """The authenticate host's page (signing in there first if this browser has no session there)."""
    page = client.get(stack.url("authenticate.localhost", "/.pomerium/jit"))
    if "login" in page.text and "Just-in-time access" not in page.text:
        page = idp_login(client, page, "")
    return page


def decide(
    stack: Stack, client: httpx2.Client, page: httpx2.Response, grant: str, action: str, **extra: str
) -> httpx2.Response:
    (form,) = [f for f in forms(page.text) if f["fields"].get("grant") == grant]  # type: ignore[union-attr]
    fields = {**form["fields"], "action": action, **extra}  # type: ignore[dict-item]
    return client.post(stack.url("authenticate.localhost", "/.pomerium/jit"), data=fields)


def request_from_403(stack: Stack, client: httpx2.Client, page: httpx2.Response, duration: str) -> httpx2.Response:
    (form,) = [f for f in forms(page.text) if f["action"] == "/.pomerium/jit/request"]
    fields = {**form["fields"], "reason": "incident 42", "duration": duration}  # type: ignore[dict-item]
    return client.post(stack.url("vault.localhost", "/.pomerium/jit/request"), data=fields)


def grant_id(stack: Stack, client: httpx2.Client, user_host: str = "vault.localhost") -> str:
    mine = client.get(stack.url(user_host, API), headers={"accept": "application/json"}).json()["grants"]
    pending = [g for g in mine if g["status"] == "pending"]
    assert len(pending) == 1, mine
    return str(pending[0]["id"])


def test_request_approve_expire_revoke(jit_stack: Stack, hook: Hook, opened: list[httpx2.Client]) -> None:
    stack = jit_stack
    bob, denied = signed_in(stack, opened, "bob")
    assert denied.status_code == 403 and "Request access" in denied.text
    sent = request_from_403(stack, bob, denied, "4s")
    assert sent.status_code == 200 and "waiting for an approver" in sent.text
    gid = grant_id(stack, bob)
    hook.wait_for("requested")

    alice, _ = signed_in(stack, opened, "alice", "second.localhost")
    page = auth_page(stack, alice)
    assert page.status_code == 200 and "incident 42" in page.text and "Waiting for approval" in page.text
    approved = decide(stack, alice, page, gid, "approve", duration="4s")
    assert approved.status_code == 200 and "Approved." in approved.text  # after the 303 back to the page
    started = time.time()

    stack.upstream.clear()
    inside = bob.get(stack.url("vault.localhost", "/data"))
    assert inside.status_code == 200
    assertion = stack.upstream.last().one("x-pomerium-jwt-assertion")
    assert assertion is not None
    claims = jwt.decode(assertion, options={"verify_signature": False})
    assert claims["email"] == "bob@example.com" and claims["exp"] <= started + 5  # ends with the grant

    # Only bob: alice (not allowed by the policy, no grant of her own) is still refused.
    assert alice.get(stack.url("vault.localhost", "/")).status_code == 403

    # After the duration: out again, with no action by anyone and his session still valid.
    time.sleep(max(0.0, started + 4.2 - time.time()))
    after = bob.get(stack.url("vault.localhost", "/"))
    assert after.status_code == 403 and "Request access" in after.text
    assert bob.get(stack.url("second.localhost", "/")).status_code == 200
    hook.wait_for("expired")

    # A revoked grant stops working on the next request.
    request_from_403(stack, bob, after, "30m")
    gid = grant_id(stack, bob)
    decide(stack, alice, auth_page(stack, alice), gid, "approve")
    assert bob.get(stack.url("vault.localhost", "/")).status_code == 200
    revoked = decide(stack, alice, auth_page(stack, alice), gid, "revoke")
    assert revoked.status_code == 200 and "Revoked." in revoked.text
    assert bob.get(stack.url("vault.localhost", "/")).status_code == 403
    hook.wait_for("revoked")

    # Every event reached the endpoint, signed, once each.
    assert sorted(hook.names()) == sorted(["requested", "approved", "expired", "requested", "approved", "revoked"])
    assert len({h["x-authz-event-id"] for h, _ in hook.events}) == len(hook.events)
    assert all(h["x-authz-signature"].startswith("sha256=") for h, _ in hook.events)
    history = alice.get(stack.url("authenticate.localhost", f"{API}/{gid}")).json()["history"]
    assert [(h["event"], h["actor"]) for h in history] == [
        ("requested", "bob"),
        ("approved", "alice"),
        ("revoked", "alice"),
    ]


def test_who_may_approve(jit_stack: Stack, opened: list[httpx2.Client]) -> None:
    stack = jit_stack
    bob, denied = signed_in(stack, opened, "bob")
    request_from_403(stack, bob, denied, "10m")
    gid = grant_id(stack, bob)
    json_call = {"content-type": "application/json", "sec-fetch-site": "same-origin"}
    # bob is an approver too, but not of his own request: no button on his page, 403 from the API.
    own_page = auth_page(stack, bob)
    assert "Your own request: another approver decides." in own_page.text
    own = bob.post(stack.url("authenticate.localhost", f"{API}/{gid}/approve"), headers=json_call, content=b"{}")
    assert own.status_code == 403 and "own request" in own.json()["error"]
    # mallory is no approver; and a grant would not let her in anyway (a deny rule names her).
    mallory, refused = signed_in(stack, opened, "mallory")
    assert refused.status_code == 403 and "Request access" not in refused.text
    not_approver = mallory.post(stack.url("authenticate.localhost", f"{API}/{gid}/approve"), headers=json_call,
                                content=b"{}")  # fmt: skip
    assert not_approver.status_code == 403 and "not an approver" in not_approver.json()["error"]
    mine = mallory.post(stack.url("vault.localhost", API), headers=json_call,
                        json={"route": "vault", "reason": "let me in", "duration": "5m"})  # fmt: skip
    assert mine.status_code == 201
    alice, _ = signed_in(stack, opened, "alice", "second.localhost")
    page = auth_page(stack, alice)
    decide(stack, alice, page, mine.json()["id"], "approve")
    assert mallory.get(stack.url("vault.localhost", "/")).status_code == 403  # deny rules still win

    # A forged form (another session's token) and a replayed one are refused.
    page = auth_page(stack, alice)
    (form,) = [f for f in forms(page.text) if f["fields"].get("grant") == gid]  # type: ignore[union-attr]
    forged = bob.post(stack.url("authenticate.localhost", "/.pomerium/jit"),
                      data={**form["fields"], "action": "approve"})  # type: ignore[dict-item]  # fmt: skip
    assert forged.status_code == 403
    assert decide(stack, alice, page, gid, "approve").status_code == 200
    replayed = alice.post(stack.url("authenticate.localhost", "/.pomerium/jit"),
                          data={**form["fields"], "action": "approve"})  # type: ignore[dict-item]  # fmt: skip
    assert replayed.status_code == 409


def test_cookie_decisions_are_refused_on_route_hosts(jit_stack: Stack, opened: list[httpx2.Client]) -> None:
    """An approver's route-host cookie is what a script in the app would ride on: refused there."""
    stack = jit_stack
    alice, _ = signed_in(stack, opened, "alice", "vault.localhost")
    same = {"content-type": "application/json", "sec-fetch-site": "same-origin"}
    dave = stack.seed_session("vault.localhost", user_id="dave", email="dave@example.com")
    with stack.client("vault.localhost") as client:
        made = client.post(API, headers={**same, "cookie": f"_pomerium={dave}"}, json={"route": "vault", "reason": "r"})
    assert made.status_code == 201, made.text
    gid = made.json()["id"]
    for verb, path in (("POST", f"{API}/{gid}/approve"), ("POST", f"{API}/{gid}/reject"), ("DELETE", f"{API}/{gid}")):
        out = alice.request(verb, stack.url("vault.localhost", path), headers=same, content=b"{}")
        assert out.status_code == 403, out.text
        assert "not on an application's host" in out.json()["error"]
    # The same approver on the authenticate host decides.
    page = auth_page(stack, alice)
    assert decide(stack, alice, page, gid, "reject").status_code == 200


def test_open_streams_end_after_max_stream_duration(jit_stack: Stack) -> None:
    """ext_authz judges a stream once, when it opens: on a jit route Envoy ends it after
    `jit.max_stream_duration` (2 s here), so a WebSocket cannot outlive a grant by long."""
    cookie = jit_stack.seed_session("stream.localhost", user_id="bob", email="bob@example.com")
    upgrade = (
        f"GET /ws HTTP/1.1\r\nHost: stream.localhost:{jit_stack.envoy_port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Cookie: _pomerium={cookie}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", jit_stack.envoy_port), timeout=10) as conn:
        conn.sendall(upgrade.encode())
        head = conn.recv(4096)
        opened = time.monotonic()
        assert head.startswith(b"HTTP/1.1 101"), head
        while conn.recv(4096):  # the upstream sends nothing: this returns when Envoy ends the stream
            pass
        held = time.monotonic() - opened
    assert 1.5 <= held <= 6, held


def test_with_two_workers_each_event_is_delivered_once(tmp_path: Path) -> None:
    """Both workers run the sweeper and notifier; the store's lease lets one at a time work, so
    requests from the API, decisions from the CLI and expiries recorded by the sweeper each reach
    the endpoint once."""
    hook = Hook()
    vault = {
        "id": "vault", "from": "http://vault.localhost", "allowed_users": ["nobody"],
        "jit": {"approvers": [{"allow": {"or": [{"groups": {"has": "admins"}}]}}],
                "notify_url": f"http://127.0.0.1:{hook.port}/hook"},
    }  # fmt: skip
    stack = _launch(tmp_path, workers=2, grpc_address=f"127.0.0.1:{free_ports(2)}", extra_routes=[vault])
    try:
        ids = []
        for n in range(4):
            cookie = stack.seed_session("vault.localhost", user_id=f"user-{n}", email=f"user{n}@example.com")
            with stack.client("vault.localhost") as client:
                headers = {"cookie": f"_pomerium={cookie}", "sec-fetch-site": "same-origin"}
                made = client.post(API, json={"route": "vault", "reason": "r"}, headers=headers)
            assert made.status_code == 201, made.text
            ids.append(made.json()["id"])

        def cli(*argv: str) -> None:
            out = subprocess.run([sys.executable, "-m", "authz", "grants", *argv, "-c", str(stack.config_path)],
                                 capture_output=True, text=True, check=False)  # fmt: skip
            assert out.returncode == 0, out.stderr

        cli("approve", ids[0], "--duration", "1s")
        cli("approve", ids[1], "--duration", "1s")
        cli("reject", ids[2])
        expected = ["requested"] * 4 + ["approved", "approved", "rejected", "expired", "expired"]
        hook.wait_for("expired", 2, timeout=20)
        time.sleep(2)  # any second delivery of an event would arrive meanwhile
        assert sorted(hook.names()) == sorted(expected)
        assert len({h["x-authz-event-id"] for h, _ in hook.events}) == len(expected)
    finally:
        _teardown(stack)
        hook.server.shutdown()
        hook.server.server_close()
