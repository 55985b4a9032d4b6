"""Redis pushes every write to the other replicas' caches (pub/sub on `{prefix}invalidate`); a lost
channel is reconnected and the caches emptied; Redis down is a StoreUnavailable, failing fast, and
recovers by itself. Against a real redis-server."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator

import pytest

from authz.config.model import RedisSettings, Secret
from authz.errors import StoreUnavailable
from authz.jit.cache import GrantCache
from authz.jit.model import Event, Grant, Record, Status
from authz.jit.redis_store import RedisGrantStore
from authz.sessions.cache import MISS, CachedStore
from authz.sessions.redis_store import RedisStore
from authz.sessions.session import Session
from tests.redis_server import RedisServer, free_port

SECRET = os.urandom(32)


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Seconds until `condition` held (fails after `timeout`)."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "condition never held"
        time.sleep(0.01)
    return time.monotonic() - start


@pytest.fixture
def pair(redis_server: RedisServer) -> Iterator[tuple[RedisStore, RedisStore]]:
    """Two replicas' stores on one Redis and one prefix."""
    settings = redis_server.settings()
    one, two = RedisStore(settings, secret=SECRET), RedisStore(settings, secret=SECRET)
    yield one, two
    one.close()
    two.close()


def session(sid: str = "s1", user: str = "u1") -> Session:
    now = int(time.time())
    return Session(sid, user, f"{user}@example.com", issued_at=now, expires_at=now + 3600)


def subscribed(server: RedisServer, prefix: str) -> bool:
    return bool(server.client().pubsub_numsub(f"{prefix}invalidate")[0][1])


def test_a_sign_out_on_one_replica_reaches_the_others_cache_at_once(
    pair: tuple[RedisStore, RedisStore], redis_server: RedisServer
) -> None:
    one, two = pair
    cache = CachedStore(two, ttl=30)  # a long bound: only the push can explain a quick miss
    two.watch(cache)
    eventually(lambda: subscribed(redis_server, two.link.prefix))
    one.put(session("s1"))
    one.put(session("s2", "u2"))
    now = time.time()
    assert cache.get("s1", now) is not None and cache.get("s2", now) is not None
    one.delete("s1")
    eventually(lambda: cache.peek("s1", time.time()) is MISS, timeout=1.0)
    assert cache.get("s1", time.time()) is None
    one.delete_user("u2")  # a user's revocation
    eventually(lambda: cache.peek("s2", time.time()) is MISS, timeout=1.0)
    assert cache.get("s2", time.time()) is None


def test_a_killed_channel_reconnects_and_empties_the_cache(
    pair: tuple[RedisStore, RedisStore], redis_server: RedisServer
) -> None:
    one, two = pair
    cache = CachedStore(two, ttl=30)
    two.watch(cache)
    eventually(lambda: subscribed(redis_server, two.link.prefix))
    one.put(session("s1"))
    assert cache.get("s1", time.time()) is not None
    redis_server.client().client_kill_filter(_type="pubsub")
    one.delete("s1")  # its message may be lost with the connection
    waited = eventually(lambda: cache.peek("s1", time.time()) is MISS, timeout=3.0)
    assert waited < 3.0 and cache.get("s1", time.time()) is None
    eventually(lambda: subscribed(redis_server, two.link.prefix))  # and it listens again
    one.put(session("s3"))
    assert cache.get("s3", time.time()) is not None
    one.delete("s3")
    eventually(lambda: cache.peek("s3", time.time()) is MISS, timeout=1.0)


def test_grant_changes_are_pushed(redis_server: RedisServer) -> None:
    settings = redis_server.settings()
    one, two = RedisGrantStore(settings), RedisGrantStore(settings)
    try:
        cache = GrantCache(two, ttl=30)
        two.watch(cache)
        eventually(lambda: subscribed(redis_server, settings.key_prefix))
        now = int(time.time())
        grant = Grant("g1", "app", "bob", "bob@example.com", Status.PENDING, "incident", 600, now)
        assert one.add(grant, Record("g1", "app", Event.REQUESTED, "bob", now), None)
        assert cache.load("app", "bob", now) == ()
        active = Grant(
            "g1", "app", "bob", "bob@example.com", Status.ACTIVE, "incident", 600, now, "amy", now, now + 600
        )
        assert one.change(Status.PENDING, active, Record("g1", "app", Event.APPROVED, "amy", now), None)
        eventually(lambda: cache.peek("app", "bob", time.time()) is MISS, timeout=1.0)
        assert cache.load("app", "bob", now) == (active,)
    finally:
        one.close()
        two.close()


def test_redis_down_fails_fast_and_recovers(
    caplog: pytest.LogCaptureFixture, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = RedisServer(tmp_path_factory.mktemp("redis-faults"))
    store = RedisStore(server.settings(timeout=0.5), secret=SECRET)
    try:
        store.put(session("s1"))
        server.stop()
        with caplog.at_level(logging.WARNING, "authz.sessions"):
            with pytest.raises(StoreUnavailable):
                store.get("s1")
            start = time.monotonic()
            for _ in range(100):  # while backing off: no wait for a timeout, no new log line
                with pytest.raises(StoreUnavailable):
                    store.get("s1")
            assert time.monotonic() - start < 0.5
            with pytest.raises(StoreUnavailable):
                store.delete("s1")  # a sign-out is never reported done while Redis is down
        assert caplog.text.count("is unreachable") == 1
        server.start()  # the same port: as a restarted Redis
        eventually(lambda: _answers(store), timeout=10)
        assert "answers again" in caplog.text
        assert store.get("s1") is None  # no persistence in the test server: the session is gone, not invented
    finally:
        store.close()
        server.stop()


def _answers(store: RedisStore) -> bool:
    try:
        store.ping()
        return True
    except StoreUnavailable:
        time.sleep(0.05)
        return False


def test_an_unreachable_redis_is_unavailable_within_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    password = Secret(b"hunter2-in-no-log")
    settings = RedisSettings(url="redis://authz@127.0.0.1/0", host="127.0.0.1", port=free_port(), db=0,
                             username="authz", password=password, tls=False, timeout=0.5)  # fmt: skip
    store = RedisStore(settings, secret=SECRET)
    try:
        start = time.monotonic()
        with caplog.at_level(logging.DEBUG), pytest.raises(StoreUnavailable):
            store.get("s1")
        assert time.monotonic() - start < 2
        assert "is unreachable" in caplog.text and "hunter2" not in caplog.text
    finally:
        store.close()


def test_a_slow_redis_is_bounded_by_the_timeout(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.settings(timeout=0.3), secret=SECRET)
    try:
        store.put(session("s1"))
        redis_server.client().client_pause(1500)  # every other client's commands wait 1.5 s
        start = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.get("s1")
        assert time.monotonic() - start < 1.0
        time.sleep(1.6)
        eventually(lambda: _answers(store), timeout=10)
        assert store.get("s1") is not None
    finally:
        store.close()


def test_a_primary_refusing_unreplicated_writes_is_unavailable(redis_server: RedisServer) -> None:
    """With min-replicas-to-write and no replica in reach, Redis refuses writes (NOREPLICAS): a
    sign-out then answers 503, as with Redis down, never as done."""
    store = RedisStore(redis_server.settings(), secret=SECRET)
    admin = redis_server.client()
    store.put(session("s1"))
    admin.config_set("min-replicas-to-write", 1)
    try:
        for write in (lambda: store.delete("s1"), lambda: store.put(session("s2")), lambda: store.delete_user("u1")):
            store.link._backoff = 0.0  # each write tried, not refused by the back-off of the one before
            with pytest.raises(StoreUnavailable):
                write()
    finally:
        admin.config_set("min-replicas-to-write", 0)
        store.close()
