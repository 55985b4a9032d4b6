"""Two `authz serve` replicas (127.0.0.1 and 127.0.0.2, one Redis) behind one real Envoy act as one
gate: a sign-in through one is served by the other; a sign-out through one is denied by the other
at once (and within session_cache_ttl with the invalidation channel killed); a sign-in link used
on one is refused on the other; a refresh happens once; a grant approved through one works on the
other; Redis stopped under load never lets an unknown session in and recovers; a replica stopped
or killed under load fails no request.

To send traffic to one replica only, a test freezes the other (SIGSTOP) until Envoy's health checks
take it out of both clusters, then thaws it (SIGCONT)."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
import yaml

from authz.config.model import RedisSettings
from authz.dev.stack import Process, free_port, http_ok, idp_available, start_envoy, start_idp, wait_until
from authz.sessions.codec import HandleCodec
from authz.sessions.redis_store import RedisStore
from authz.sessions.session import SessionHandle
from tests.redis_server import BINARY as REDIS_BINARY
from tests.redis_server import MISSING as REDIS_MISSING
from tests.redis_server import RedisServer

from .conftest import base_config, grpc_pass_only
from .loopback import browser, forms, idp_login
from .upstream import Recorder

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(idp_available() is not None, reason=f"local IdP unavailable: {idp_available()}"),
]
HOSTS = ("127.0.0.1", "127.0.0.2")
TTL = 3  # session_cache_ttl: the bound when a message is lost
API = "/.pomerium/api/v1/grants"


@dataclass
class Replicas:
    tmp: Path
    config: dict[str, Any]
    envoy_port: int
    admin_port: int
    grpc_port: int
    http_port: int
    metrics_port: int
    redis: RedisServer
    upstream: Recorder
    idp: Process
    envoy: Process | None = None
    procs: list[Process | None] = field(default_factory=lambda: [None, None])
    starts: int = 0

    def url(self, host: str, path: str = "/") -> str:
        return f"http://{host}:{self.envoy_port}{path}"

    def settings(self) -> RedisSettings:
        return self.redis.settings(self.config["session_store_key_prefix"])

    def store(self) -> RedisStore:
        return RedisStore(self.settings(), secret=base64.b64decode(self.config["cookie_secret"]))

    def config_path(self, index: int) -> Path:
        host = HOSTS[index]
        replica = {
            **self.config,
            "grpc_address": f"{host}:{self.grpc_port}",
            "http_address": f"{host}:{self.http_port}",
            "metrics_address": f"{host}:{self.metrics_port}",
        }
        path = self.tmp / f"replica-{index}.yaml"
        path.write_text(yaml.safe_dump(replica, sort_keys=False))
        return path

    def start(self, index: int) -> None:
        old = self.procs[index]
        if old is not None:  # stopped or killed by a test: close its log, keep it beside the new one
            old.stop()
        self.starts += 1
        argv = [sys.executable, "-m", "authz", "serve", "-c", str(self.config_path(index))]
        proc = Process(f"authz-{index}-{self.starts}", argv, self.tmp)
        healthz = f"http://{HOSTS[index]}:{self.http_port}/healthz"
        try:
            wait_until(lambda: http_ok(healthz), 30, f"replica {index}", proc.proc)
        except (RuntimeError, TimeoutError) as exc:
            proc.stop()
            raise RuntimeError(f"{exc}\n{proc.output()}") from None
        self.procs[index] = proc

    def signal(self, index: int, sig: signal.Signals) -> None:
        proc = self.procs[index]
        assert proc is not None
        proc.proc.send_signal(sig)

    def health(self) -> dict[tuple[str, str], bool]:
        """Envoy's view: (cluster, replica host) → whether it sends that endpoint requests."""
        text = httpx2.get(f"http://127.0.0.1:{self.admin_port}/clusters", timeout=5).text
        found = {}
        for line in text.splitlines():  # authz-grpc::127.0.0.2:9191::health_flags::healthy
            parts = line.split("::")
            if len(parts) == 4 and parts[0].startswith("authz-") and parts[2] == "health_flags":
                found[(parts[0], parts[1].rpartition(":")[0])] = parts[3] == "healthy"
        return found

    def wait_health(self, up: tuple[bool, bool], timeout: float = 15) -> None:
        want = {(cluster, host): up[i] for cluster in ("authz-grpc", "authz-http") for i, host in enumerate(HOSTS)}
        wait_until(lambda: self.health() == want, timeout, f"Envoy to see replicas up={up}")

    def only(self, index: int) -> None:
        """Traffic to replica `index` alone: the other frozen and out of Envoy's clusters."""
        other = 1 - index
        self.signal(index, signal.SIGCONT)
        self.signal(other, signal.SIGSTOP)
        self.wait_health((index == 0, index == 1))

    def both(self) -> None:
        for index in (0, 1):
            self.signal(index, signal.SIGCONT)
        self.wait_health((True, True))

    def checks(self) -> dict[str, int]:
        """Envoy's count of Checks sent to each replica."""
        text = httpx2.get(f"http://127.0.0.1:{self.admin_port}/clusters", timeout=5).text
        counts: dict[str, int] = {}
        for line in text.splitlines():
            parts = line.split("::")
            if len(parts) == 4 and parts[0] == "authz-grpc" and parts[2] == "rq_total":
                host = parts[1].rpartition(":")[0]
                counts[host] = counts.get(host, 0) + int(parts[3])
        return counts

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for host in HOSTS:
            text = httpx2.get(f"http://{host}:{self.metrics_port}/metrics", timeout=5).text
            for line in text.splitlines():
                if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def get(self, host: str, cookie: str, path: str = "/") -> httpx2.Response:
        return httpx2.get(f"http://127.0.0.1:{self.envoy_port}{path}", timeout=10,
                          headers={"host": f"{host}:{self.envoy_port}", "cookie": f"_pomerium={cookie}"})  # fmt: skip


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    if REDIS_BINARY is None:
        if os.environ.get("AUTHZ_REQUIRE_REDIS"):
            pytest.fail(REDIS_MISSING)
        pytest.skip(REDIS_MISSING)
    tmp = tmp_path_factory.mktemp("replicas")
    redis = RedisServer(tmp, persist=True)
    upstream = Recorder()
    envoy_port, admin_port, grpc_port, http_port, metrics_port, idp_port = (free_port() for _ in range(6))
    auth = f"http://authenticate.localhost:{envoy_port}"
    secret = secrets.token_urlsafe(24)
    # 62-second access tokens: due for refresh (60 s ahead) two seconds after they are issued.
    idp = start_idp(idp_port, tmp, redirect_uris=[f"{auth}/oauth2/callback"], client_secret=secret,
                    post_logout_redirect_uris=[f"{auth}/.pomerium/signed_out"],
                    ttl={"AccessToken": 62, "IdToken": 62})  # fmt: skip
    to = f"http://127.0.0.1:{upstream.port}"
    config = {
        **base_config(envoy_port, grpc_port, http_port),
        "session_store": redis.url,
        "session_store_key_prefix": "replicas:",
        "session_cache_ttl": f"{TTL}s",
        "grpc_client_timeout": "5s",
        "ext_authz_transport": os.environ.get("AUTHZ_E2E_TRANSPORT", "grpc"),
        "authorize_service_urls": [f"http://{host}:{grpc_port}" for host in HOSTS],
        "idp_provider_url": f"http://localhost:{idp_port}",
        "idp_client_id": "authz",
        "idp_client_secret": secret,
        "idp_timeout": "5s",
        "routes": [
            {"id": "private", "from": "http://private.localhost", "to": to, "allowed_domains": ["example.com"],
             "set_request_headers": {"X-Access-Token": "${pomerium.access_token}"}},
            {"id": "vault", "from": "http://vault.localhost", "to": to,
             "policy": {"allow": {"or": [{"email": {"is": "carol@example.com"}}]}},
             "jit": {"approvers": [{"allow": {"or": [{"groups": {"has": "admins"}}]}}]}},
        ],
    }  # fmt: skip
    running = Replicas(tmp, config, envoy_port, admin_port, grpc_port, http_port, metrics_port, redis, upstream, idp)
    try:
        for index in (0, 1):
            running.start(index)
        bootstrap = tmp / "envoy.yaml"
        argv = [sys.executable, "-m", "authz", "envoy-config", "-c", str(running.config_path(0)),
                "--admin-address", f"127.0.0.1:{admin_port}"]  # fmt: skip
        made = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert made.returncode == 0, made.stderr
        bootstrap.write_text(made.stdout)
        running.envoy = start_envoy(bootstrap, admin_port, tmp)
        running.wait_health((True, True))
        yield running
    finally:
        for proc in (running.envoy, *running.procs):
            if proc is not None:
                proc.proc.send_signal(signal.SIGCONT)
                proc.stop()
        idp.stop()
        upstream.close()
        redis.stop()


def sign_in(stack: Replicas, user: str = "alice", host: str = "private.localhost") -> tuple[httpx2.Client, str]:
    client = browser()
    landed = idp_login(client, client.get(stack.url(host, "/")), user)
    assert landed.status_code in (200, 403), landed.text[:300]
    cookie = client.cookies.get("_pomerium", domain=host)
    assert cookie
    return client, cookie


def statuses(stack: Replicas, cookie: str, count: int = 6, host: str = "private.localhost") -> list[int]:
    return [stack.get(host, cookie).status_code for _ in range(count)]


def until(condition: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "condition not met in time"
        time.sleep(0.05)
    return time.monotonic() - start


def test_a_sign_in_through_one_replica_is_served_by_the_other(replicas: Replicas) -> None:
    replicas.only(0)
    try:
        client, cookie = sign_in(replicas)  # every step on replica 0: sign-in, callback, handoff, Check
        client.close()
        replicas.only(1)
        before = replicas.checks()
        assert statuses(replicas, cookie) == [200] * 6
        after = replicas.checks()
        assert after[HOSTS[1]] - before[HOSTS[1]] >= 6  # replica 0 is frozen: it cannot have answered
    finally:
        replicas.both()


def _warm(replicas: Replicas, cookie: str) -> None:
    """Both replicas have the session in their cache (and Envoy sent each some of the Checks)."""
    before = replicas.checks()
    assert statuses(replicas, cookie, 8) == [200] * 8
    after = replicas.checks()
    assert all(after[h] > before.get(h, 0) for h in HOSTS), (before, after)


def _sign_out(client: httpx2.Client, replicas: Replicas) -> None:
    ask = client.get(replicas.url("private.localhost", "/.pomerium/sign_out"))
    (confirm,) = forms(ask.text)
    done = client.post(ask.url.join(str(confirm["action"])), data=confirm["fields"])  # type: ignore[arg-type]
    # Ended in authz: on to the IdP's end-session endpoint (its confirmation form is not needed here).
    assert any(urlsplit(str(r.url)).path == "/session/end" for r in [*done.history, done]), done.url


def test_a_sign_out_through_one_replica_is_denied_by_the_other_at_once(replicas: Replicas) -> None:
    client, cookie = sign_in(replicas)
    _warm(replicas, cookie)
    _sign_out(client, replicas)
    # A cache entry would last TTL seconds: only the pushed invalidation explains a quicker denial.
    took = until(lambda: all(s in (302, 401) for s in statuses(replicas, cookie, 4)), timeout=TTL)
    assert took < 1.0
    client.close()


def test_with_the_channel_killed_a_sign_out_is_denied_within_the_bound(replicas: Replicas) -> None:
    client, cookie = sign_in(replicas)
    _warm(replicas, cookie)
    replicas.redis.client().client_kill_filter(_type="pubsub")  # both replicas' listeners lose their link
    _sign_out(client, replicas)
    until(lambda: all(s in (302, 401) for s in statuses(replicas, cookie, 4)), timeout=TTL + 1)
    client.close()


def test_a_sign_in_link_used_on_one_replica_is_refused_on_the_other(replicas: Replicas) -> None:
    client = browser()
    page = client.get(replicas.url("private.localhost", "/"))
    (form,) = [f for f in forms(page.text) if "login" in f["fields"]]  # type: ignore[operator]
    answer = client.post(page.url.join(str(form["action"])), data={**form["fields"], "login": "alice", "password": "x"},  # type: ignore[dict-item]
                         follow_redirects=False)  # fmt: skip
    while urlsplit(answer.headers["location"]).path != "/oauth2/callback":
        answer = client.get(answer.url.join(answer.headers["location"]), follow_redirects=False)
    callback = urlsplit(answer.headers["location"])
    cookies = "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar if "authenticate" in c.domain)
    headers = {"host": f"authenticate.localhost:{replicas.envoy_port}", "cookie": cookies}
    path = f"/oauth2/callback?{callback.query}"
    first = httpx2.get(f"http://{HOSTS[0]}:{replicas.http_port}{path}", headers=headers, timeout=10)
    assert first.status_code == 302, first.text[:300]
    replay = httpx2.get(f"http://{HOSTS[1]}:{replicas.http_port}{path}", headers=headers, timeout=10)
    assert replay.status_code == 400 and "already used" in replay.text
    client.close()


@grpc_pass_only("the refresher's lease")
def test_a_refresh_happens_once_across_replicas(replicas: Replicas) -> None:
    """Both replicas' refreshers see the session due every pass; the lease lets one refresh it,
    with the IdP's rotating refresh token (a second use would be refused and end the session)."""
    store = replicas.store()
    try:
        store.delete_user("alice")  # earlier tests' sessions would be refreshed too
        refreshed = replicas.metric("authz_token_refreshes_total", outcome="refreshed")
        ended = replicas.metric("authz_token_refreshes_total", outcome="ended")
        client, cookie = sign_in(replicas)
        sid = HandleCodec(base64.b64decode(replicas.config["cookie_secret"])).open(
            cookie, "private.localhost", time.time()).session_id  # fmt: skip
        seen = set()
        deadline = time.monotonic() + 16
        while time.monotonic() < deadline:
            session = store.get(sid)
            assert session is not None, "the session ended: a refresh token was used twice"
            seen.add(session.refresh_token)
            time.sleep(0.1)
        rotations = len(seen) - 1
        assert rotations >= 2  # every ~5 s (a pass), by one replica or the other
        assert replicas.metric("authz_token_refreshes_total", outcome="refreshed") - refreshed == rotations
        assert replicas.metric("authz_token_refreshes_total", outcome="ended") == ended
        assert statuses(replicas, cookie, 2) == [200, 200]
        client.close()
    finally:
        store.close()


def test_a_grant_approved_through_one_replica_works_on_the_other(replicas: Replicas) -> None:
    bob, _ = sign_in(replicas, "bob", "vault.localhost")
    cookie = bob.cookies.get("_pomerium", domain="vault.localhost")
    assert cookie
    json_call = {"content-type": "application/json", "sec-fetch-site": "same-origin"}
    asked = bob.post(replicas.url("vault.localhost", API), headers=json_call,
                     json={"route": "vault", "reason": "incident 9", "duration": "5m"})  # fmt: skip
    assert asked.status_code == 201, asked.text[:300]
    gid = asked.json()["id"]
    assert statuses(replicas, cookie, 8, "vault.localhost") == [403] * 8  # both replicas cached "no grant"
    alice = browser()
    landed = idp_login(alice, alice.get(replicas.url("authenticate.localhost", "/.pomerium/jit")), "alice")
    assert landed.status_code == 200
    approved = alice.post(replicas.url("authenticate.localhost", f"{API}/{gid}/approve"), headers=json_call,
                          content=b"{}")  # fmt: skip
    assert approved.status_code == 200, approved.text[:300]
    took = until(lambda: statuses(replicas, cookie, 4, "vault.localhost") == [200] * 4, timeout=TTL)
    assert took < 1.0
    bob.close()
    alice.close()


class Load:
    """GETs in a loop on a thread, each (cookie name, status) recorded with the time."""

    def __init__(self, replicas: Replicas, cookies: dict[str, str]) -> None:
        self.replicas, self.cookies = replicas, cookies
        self.seen: list[tuple[float, str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, cookie in self.cookies.items():
                try:
                    status = self.replicas.get("private.localhost", cookie).status_code
                except httpx2.HTTPError:
                    status = 0
                self.seen.append((time.monotonic(), name, status))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def of(self, name: str, since: float = 0.0) -> list[int]:
        return [status for at, who, status in self.seen if who == name and at >= since]


def _ghost(replicas: Replicas) -> str:
    """A validly sealed cookie naming a session that was never stored."""
    now = int(time.time())
    handle = SessionHandle(secrets.token_urlsafe(16), "ghost", "private.localhost", now, now + 3600)
    return HandleCodec(base64.b64decode(replicas.config["cookie_secret"])).seal(handle)


def test_redis_stopped_and_restarted_under_load(replicas: Replicas) -> None:
    client, cookie = sign_in(replicas)
    load = Load(replicas, {"alice": cookie, "ghost": _ghost(replicas)})
    try:
        time.sleep(0.5)
        assert set(load.of("alice")) == {200}
        replicas.redis.stop()
        stopped = time.monotonic()
        until(lambda: 503 in load.of("alice", stopped + TTL), timeout=TTL + 5)  # past the bound: a clear 503
        page = replicas.get("private.localhost", cookie)
        assert page.status_code == 503
        if replicas.config["ext_authz_transport"] == "grpc":  # Envoy's HTTP service drops a 5xx answer's body
            assert "session store" in page.text
        # While Redis is down a sign-out is never reported done, and a new sign-in is a clear 503.
        out = client.get(replicas.url("private.localhost", "/.pomerium/sign_out"))
        if out.status_code == 200:  # the confirmation page; its form is what ends the session
            (confirm,) = forms(out.text)
            out = client.post(out.url.join(str(confirm["action"])), data=confirm["fields"])  # type: ignore[arg-type]
        assert out.status_code == 503 and "session store" in out.text, out.text[:300]
        with browser() as newcomer:
            start = newcomer.get(replicas.url("private.localhost", "/"))
            assert start.status_code == 200, [(r.status_code, str(r.url)) for r in [*start.history, start]]
            landed = idp_login(newcomer, start, "bob")
            steps = [(r.status_code, str(r.url)) for r in [*landed.history, landed]]
            assert landed.status_code == 503 and "session store" in landed.text, steps
        replicas.redis.start()
        restarted = time.monotonic()
        until(lambda: load.of("alice", restarted)[-3:] == [200] * 3, timeout=15)
    finally:
        load.stop()
        client.close()
    assert 200 not in load.of("ghost")  # an unknown session never got in, up, down or back
    assert set(load.of("ghost")) <= {302, 401, 503}
    assert set(load.of("alice")) <= {200, 503}


def test_a_replica_stopped_or_killed_under_load_fails_no_request(replicas: Replicas) -> None:
    client, cookie = sign_in(replicas)
    load = Load(replicas, {"alice": cookie})
    try:
        time.sleep(0.5)
        replicas.signal(1, signal.SIGTERM)  # drains
        time.sleep(3)
        proc = replicas.procs[1]
        assert proc is not None and proc.proc.wait(10) == 0
        replicas.start(1)
        replicas.wait_health((True, True))
        time.sleep(0.5)
        replicas.signal(0, signal.SIGKILL)  # a crash: no draining
        time.sleep(3)
    finally:
        load.stop()
        client.close()
    served = load.of("alice")
    assert len(served) > 50 and set(served) == {200}, {s: served.count(s) for s in set(served)}
