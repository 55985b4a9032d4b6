"""The connection to Redis that the session and grant stores share: a bounded wait, fast failure
while Redis is down, and the invalidation channel.

Every call waits at most `session_store_timeout`. A call that fails to connect or times out raises
`StoreUnavailable` (a 503 page, never an allow) and marks Redis down: for a back-off that doubles
from 0.25 s to 5 s, calls fail at once instead of each waiting out the timeout, then the next call
tries again. The first failure and the recovery are each logged once, with the URL's password
masked (the URL never holds it: `RedisSettings.url`).

Writes publish what they changed on `{prefix}invalidate`; each process listens on its own
connection (a daemon thread) and drops those entries from its caches at once. A lost listening
connection is reconnected with the same back-off, and every cache is then emptied, since messages
sent meanwhile were lost; until the loss is noticed, `session_cache_ttl` bounds what a cache may hold.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from authz.config.model import RedisSettings
from authz.errors import StoreUnavailable

log = logging.getLogger("authz.sessions")

FIRST_BACKOFF = 0.25
MAX_BACKOFF = 5.0
# What says Redis cannot serve now (not a bug in a command): no connection (a wrong password
# included), no answer in time, a replica that was primary before a failover (READONLY), a server
# still loading its data or cut from its primary, a full one (OOM), and a primary refusing writes
# it could not replicate (NOREPLICAS, with min-replicas-to-write).
_DOWN = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.MasterDownError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.TryAgainError,
)
_DOWN_REPLIES = ("NOREPLICAS",)
CLEAR_ALL = "*"
# A lease is "owner until": `held_by_another(key, owner, now)` is true while someone else's is live
# (Redis expires it too, but by its own clock; `now` is the caller's, as in the other stores).
LEASE_LUA = """
local function held_by_another(key, owner, now)
  local held = redis.call('GET', key)
  if not held then return false end
  local space = string.find(held, ' ', 1, true)
  return string.sub(held, 1, space - 1) ~= owner and tonumber(string.sub(held, space + 1)) > tonumber(now)
end
"""


class Listener(Protocol):
    def invalidate(self, message: str) -> None:
        """Drop what `message` names from the cache ("*": everything)."""
        ...


def connect(settings: RedisSettings, *, pubsub: bool = False) -> redis.Redis:
    """A client for `settings`: bounded waits, one immediate retry of a dropped pooled connection
    (Redis restarted), never redis-py's default retries with back-off, which would hold a Check."""
    ssl: dict[str, Any] = {}
    if settings.tls:
        ssl = {"ssl": True, "ssl_ca_certs": settings.ca_file, "ssl_certfile": settings.cert_file,
               "ssl_keyfile": settings.key_file, "ssl_cert_reqs": "required", "ssl_check_hostname": True}  # fmt: skip
    return redis.Redis(
        host=settings.host,
        port=settings.port,
        db=settings.db,
        username=settings.username,
        password=settings.password.value.decode() if settings.password else None,
        socket_timeout=None if pubsub else settings.timeout,
        socket_connect_timeout=settings.timeout,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 0 if pubsub else 1, supported_errors=(redis.ConnectionError,)),
        health_check_interval=30,
        client_name="authz",
        decode_responses=False,
        **ssl,
    )


class RedisLink:
    """One Redis for one process: its client, its down/up state and its invalidation listener."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.prefix = settings.key_prefix
        self.channel = f"{self.prefix}invalidate"
        self.client = connect(settings)
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._backoff = 0.0
        self._listeners: weakref.WeakSet[Listener] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._pubsub: redis.client.PubSub | None = None

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def down(self) -> bool:
        return self._backoff > 0

    def call(self, fn: Callable[[Any], Any]) -> Any:
        """`fn(client)`, or StoreUnavailable when Redis is down or does not answer in time."""
        if self._backoff and time.monotonic() < self._down_until:
            raise StoreUnavailable("the session store is unreachable")
        try:
            result = fn(self.client)
        except _DOWN as exc:
            self._failed(exc)
            raise StoreUnavailable("the session store is unreachable") from None
        except redis.ResponseError as exc:
            if not any(reply in str(exc) for reply in _DOWN_REPLIES):  # a pipeline's error quotes its command
                raise
            self._failed(exc)
            raise StoreUnavailable("the session store refuses writes") from None
        if self._backoff:
            self._recovered()
        return result

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            first = not self._backoff
            self._backoff = FIRST_BACKOFF if first else min(self._backoff * 2, MAX_BACKOFF)
            self._down_until = time.monotonic() + self._backoff
        if first:
            log.warning(
                "session store %s is unreachable (%s: %s); answering 503 where a session must be read",
                self.settings.url, type(exc).__name__, exc,
            )  # fmt: skip

    def _recovered(self) -> None:
        with self._lock:
            was = self._backoff
            self._backoff = 0.0
        if was:
            log.warning("session store %s answers again", self.settings.url)

    # -- invalidation ----------------------------------------------------------------------

    def publish(self, pipe: Any, message: str) -> None:
        """Queue the message on a pipeline (or a client): sent with the write it describes."""
        pipe.publish(self.channel, message)

    def watch(self, listener: Listener) -> None:
        """Deliver every invalidation to `listener` while it lives (held weakly: a reloaded Runtime's
        cache goes with it)."""
        self._listeners.add(listener)
        with self._lock:
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(target=self._listen, name="authz-redis-invalidate", daemon=True)
                self._thread.start()

    def _deliver(self, message: str) -> None:
        for listener in list(self._listeners):
            try:
                listener.invalidate(message)
            except Exception:
                log.exception("could not apply an invalidation")

    def _listen(self) -> None:
        backoff = 0.0
        first = True
        while not self._closed.is_set():
            try:
                pubsub = connect(self.settings, pubsub=True).pubsub(ignore_subscribe_messages=True)
                self._pubsub = pubsub
                pubsub.subscribe(self.channel)
                if not first:
                    # Messages sent while the connection was down are lost: forget everything.
                    self._deliver(CLEAR_ALL)
                    log.warning("session store invalidations resumed; caches emptied")
                first, backoff = False, 0.0
                while not self._closed.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        data = message["data"]
                        self._deliver(data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data))
            except (redis.RedisError, OSError, ValueError) as exc:
                if self._closed.is_set():
                    return
                if not backoff:
                    log.warning("session store invalidation channel lost (%s); reconnecting", type(exc).__name__)
                first = False
                self._deliver(CLEAR_ALL)  # nothing cached may outlive a message it could have missed
                backoff = FIRST_BACKOFF if not backoff else min(backoff * 2, MAX_BACKOFF)
                self._closed.wait(backoff)
            finally:
                pubsub_now, self._pubsub = self._pubsub, None
                if pubsub_now is not None:
                    with contextlib.suppress(redis.RedisError, OSError):
                        pubsub_now.close()

    def close(self) -> None:
        self._closed.set()
        self.client.close()
