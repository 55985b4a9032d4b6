"""What the Redis session store costs: memory per session, and Redis commands per Check.

    python scripts/bench/redis_sizing.py [--sessions 100000]

Starts its own redis-server (Debian's; nothing persisted) on a free port, then:

1. writes `--sessions` sessions through `RedisStore.put`, shaped as a sign-in makes them (name,
   email, 10 groups, a few claims, three IdP tokens of the oidc-provider's sizes, sealed at rest),
   and reports Redis's `used_memory` growth per session;
2. runs Checks in process (`Authorization.answer`, the gRPC service's code) for one signed-in
   session against a Runtime on that Redis with `session_cache_ttl: 10s`, and counts the commands
   Redis executed (`INFO commandstats`): for the first Check, and for the next `--checks` Checks
   within the TTL (the steady state);
3. the same with a fresh read every TTL: commands per Check for a session seen once per second.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis

from authz._proto.envoy.service.auth.v3 import external_auth_pb2 as pb
from authz.config import parse_config
from authz.envoy.adapter import to_response
from authz.envoy.service import Authorization
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime
from authz.sessions.redis_store import RedisStore
from authz.sessions.session import Session, SessionHandle
from authz.signing.keys import generate_p256_pem


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def commands(client: redis.Redis) -> int:
    """Commands Redis executed so far, leaving out this script's own INFO and CONFIG calls."""
    stats = client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_config"))


def session(i: int, now: float) -> Session:
    return Session(
        f"{secrets.token_urlsafe(24)}", f"user-{i}", f"user{i}@example.com", f"User {i}",
        tuple(f"group-{g}" for g in range(10)), {"department": "engineering", "locale": "en"},
        int(now), int(now + 3600), id_token="x" * 900, access_token="y" * 700, refresh_token="z" * 60,
        token_expires_at=int(now + 600),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--checks", type=int, default=10_000)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory() as work:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", work],
            stdout=subprocess.DEVNULL,
        )
        try:
            run(port, args.sessions, args.checks)
        finally:
            server.terminate()
            server.wait()


def run(port: int, count: int, checks: int) -> None:
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    version = client.info("server")["redis_version"]
    config = parse_config({
        "insecure_server": True, "address": "127.0.0.1:8080",
        "authenticate_service_url": "http://authenticate.localhost:8080",
        "shared_secret": base64.b64encode(secrets.token_bytes(32)).decode(),
        "cookie_secret": base64.b64encode(secrets.token_bytes(32)).decode(),
        "signing_key": base64.b64encode(generate_p256_pem()).decode(),
        "cookie_secure": False, "session_store": f"redis://127.0.0.1:{port}/0", "session_cache_ttl": "10s",
        "routes": [{"id": "app", "from": "http://app.localhost", "to": "http://127.0.0.1:9",
                    "allowed_domains": ["example.com"], "pass_identity_headers": True}],
    })  # fmt: skip
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # the decision log's lines
    rt = Runtime.build(config)
    store = rt.raw_store
    assert isinstance(store, RedisStore)

    now = time.time()
    before = client.info("memory")["used_memory"]
    start = time.monotonic()
    for i in range(count):
        store.put(session(i, now))
    took = time.monotonic() - start
    grown = client.info("memory")["used_memory"] - before
    keys = client.dbsize()
    print(f"redis-server {version}; {count:,} sessions written through RedisStore.put in {took:.1f} s")
    print(f"  used_memory grew {grown / 2**20:.1f} MiB: {grown / count:,.0f} bytes per session ({keys:,} keys)")

    sid = "bench-session"
    store.put(Session(sid, "ann", "ann@example.com", "Ann", ("g1", "g2"), {}, int(now), int(now) + 86400))
    cookie = "_pomerium=" + rt.codec.seal(SessionHandle(sid, "ann", "app.localhost", int(now), int(now) + 86400))
    message = pb.CheckRequest()
    http = message.attributes.request.http
    http.method, http.host, http.path, http.scheme, http.id = "GET", "app.localhost", "/", "http", "1"
    http.headers.update({"accept": "text/html", "cookie": cookie})
    message.attributes.context_extensions["route_id"] = "app"
    service = Authorization(RuntimeHolder(rt))

    def check(at: float) -> None:
        response = to_response(service.answer(message, at))
        assert response.status.code == 0, response

    first = commands(client)
    check(time.time())
    cold = commands(client) - first
    steady_start = commands(client)
    for _ in range(checks):
        check(time.time())
    steady = commands(client) - steady_start
    print(
        f"  Redis commands for the first Check of a session: {cold}; for the next {checks:,} within the TTL: {steady}"
    )
    # A session seen once a second for a minute: one read per TTL (10 s) at most.
    spaced_start = commands(client)
    base = time.time()
    for second in range(60):
        check(base + second)
    spaced = commands(client) - spaced_start
    print(
        f"  a session checked once a second for 60 s (clock advanced): {spaced} commands, {spaced / 60:.2f} per Check"
    )
    rt.raw_store.close()


if __name__ == "__main__":
    main()
