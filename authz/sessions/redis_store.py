"""The Redis session store (`session_store: redis://…` or `rediss://…`): shared by every replica.

Keys, each under `session_store_key_prefix` (P):

    P s:{id}        a session: JSON with its schema version (`v`) and its IdP tokens sealed, as the
                    SQLite store seals them (a Redis dump or replica holds no usable token); it
                    expires in Redis with the session
    P u:{user}      the ids of a user's sessions (listing and revoking a user)
    P refresh       sorted set: sessions with a refresh token, by access-token expiry
    P l:{id}        a session's refresh lease: "owner until", set only if free or already the owner's
    P o:{key}       a single-use marker (login state, handoff): set if absent, with its expiry
    P t:{key}       a stashed value, sealed; P stash counts them (bounded as in the other stores)

A write and the invalidation it publishes (`s` + id, or `u` + user) go in one script or one
MULTI, so a replica never sees the message before the write. Each multi-key step is a Lua script
(atomic in Redis). A record with another schema version, as a newer authz may write, is treated
as no session and logged, never misread.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import redis

from authz.config.model import RedisSettings
from authz.sessions import stores
from authz.sessions.redis_link import LEASE_LUA, RedisLink
from authz.sessions.sealing import AtRestSealer
from authz.sessions.session import Session
from authz.sessions.stores import _SEALED_TOKENS, _TOKEN_FIELDS, STASH_AT_REST, TOKENS_AT_REST

log = logging.getLogger("authz.sessions")
SCHEMA = 1
_BATCH = 500

# put / update: KEYS session, user set, refresh set; ARGV data, ttl ms, id, refresh_at, only-if-present, message
_PUT = """
if ARGV[5] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
local ttl = redis.call('PTTL', KEYS[2])
if ttl < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
if tonumber(ARGV[4]) > 0 then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
else redis.call('ZREM', KEYS[3], ARGV[3]) end
redis.call('PUBLISH', KEYS[4], ARGV[6])
return 1
"""
# delete_user: KEYS user set, refresh set, channel; ARGV prefix, message
_DELETE_USER = """
local ended = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  ended = ended + redis.call('DEL', ARGV[1] .. 's:' .. id)
  redis.call('DEL', ARGV[1] .. 'l:' .. id)
  redis.call('ZREM', KEYS[2], id)
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', KEYS[3], ARGV[2])
return ended
"""
# claim_once: KEYS marker; ARGV now, expires_at, ttl ms
_CLAIM = """
local held = redis.call('GET', KEYS[1])
if held and tonumber(held) > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
# try_lease: KEYS session, lease; ARGV owner, until, now, ttl ms
_LEASE = (
    LEASE_LUA
    + """
if redis.call('EXISTS', KEYS[1]) == 0 or held_by_another(KEYS[2], ARGV[1], ARGV[3]) then return 0 end
redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[4])
return 1
"""
)
# stash: KEYS value, stash set; ARGV value, ttl ms, key, now, expires_at, max
_STASH = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
if not redis.call('ZSCORE', KEYS[2], ARGV[3]) and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[6]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


def _ms(until: float, now: float) -> int:
    """Milliseconds from `now` to `until`, at least 1 (Redis refuses an expiry of 0)."""
    return max(1, int((until - now) * 1000))


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _mget(keys: list[str], r: redis.Redis) -> Any:
    return r.mget(keys)


def _glob(text: str) -> str:
    """`text` escaped for a SCAN MATCH pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


class RedisStore:
    """Sessions, markers, leases and the stash in Redis, with the invalidation channel."""

    blocking = True

    def __init__(self, settings: RedisSettings, *, secret: bytes, link: RedisLink | None = None) -> None:
        self.link = link if link is not None else RedisLink(settings)
        self._tokens = AtRestSealer(secret, TOKENS_AT_REST)
        self._stashed = AtRestSealer(secret, STASH_AT_REST)
        client = self.link.client
        self._put = client.register_script(_PUT)
        self._delete_user = client.register_script(_DELETE_USER)
        self._claim = client.register_script(_CLAIM)
        self._lease = client.register_script(_LEASE)
        self._stash = client.register_script(_STASH)
        self._refresh = self.link.key("refresh")
        self._stash_set = self.link.key("stash")
        self._warned_version = False

    def _key(self, kind: str, name: str) -> str:
        return self.link.key(f"{kind}:{name}")

    # -- records ---------------------------------------------------------------------------

    def _dump(self, session: Session) -> str:
        data: dict[str, Any] = {"v": SCHEMA, **session.to_dict()}
        tokens = [data.pop(name) for name in _TOKEN_FIELDS]
        if any(tokens):
            data[_SEALED_TOKENS] = self._tokens.seal(json.dumps(tokens), session.id)
        return json.dumps(data, separators=(",", ":"))

    def _load(self, session_id: str, raw: bytes | None, tokens: bool = True) -> Session | None:
        if raw is None:
            return None
        try:
            data: dict[str, Any] = json.loads(raw)
            if data.pop("v", None) != SCHEMA:
                if not self._warned_version:
                    self._warned_version = True
                    log.warning("a session record has another schema version (a newer authz?); treated as none")
                return None
            sealed = data.pop(_SEALED_TOKENS, None)
            if not tokens:
                return dataclasses.replace(Session.from_dict(data), id_token="", access_token="", refresh_token="")
            if sealed is not None:
                data.update(zip(_TOKEN_FIELDS, json.loads(self._tokens.open(sealed, session_id)), strict=True))
            return Session.from_dict(data)
        except (ValueError, TypeError, KeyError):
            log.warning("session %s… is unreadable (sealed under another key?); treated as none", session_id[:8])
            return None

    # -- sessions --------------------------------------------------------------------------

    def get(self, session_id: str, now: float | None = None) -> Session | None:
        raw = self.link.call(lambda r: r.get(self._key("s", session_id)))
        session = self._load(session_id, raw)
        if session is None or session.expires_at <= _now(now):
            return None
        return session

    def _write(self, session: Session, only_if_present: bool) -> bool:
        refresh_at = session.token_expires_at if session.refresh_token else 0
        keys = [self._key("s", session.id), self._key("u", session.user_id), self._refresh, self.link.channel]
        args: list[Any] = [self._dump(session), _ms(session.expires_at, time.time()), session.id, refresh_at,
                "1" if only_if_present else "0", f"s:{session.id}"]  # fmt: skip
        return bool(self.link.call(lambda r: self._put(keys, args, client=r)))

    def put(self, session: Session) -> None:
        self._write(session, only_if_present=False)

    def update(self, session: Session) -> bool:
        return self._write(session, only_if_present=True)

    def delete(self, session_id: str) -> None:
        def delete(r: redis.Redis) -> None:
            pipe = r.pipeline(transaction=True)
            pipe.delete(self._key("s", session_id), self._key("l", session_id))
            pipe.zrem(self._refresh, session_id)
            self.link.publish(pipe, f"s:{session_id}")
            pipe.execute()

        self.link.call(delete)

    def _read_many(self, ids: list[str], tokens: bool) -> list[tuple[str, Session | None]]:
        found: list[tuple[str, Session | None]] = []
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]
            raws = self.link.call(partial(_mget, [self._key("s", i) for i in batch]))
            found.extend((i, self._load(i, raw, tokens)) for i, raw in zip(batch, raws, strict=True))
        return found

    def sessions(self, user_id: str | None = None, now: float | None = None) -> Iterator[Session]:
        at = _now(now)
        if user_id is not None:
            ids = sorted(m.decode() for m in self.link.call(lambda r: r.smembers(self._key("u", user_id))))
        else:
            pattern = _glob(self.link.key("s:")) + "*"
            start = len(self.link.key("s:"))
            ids = sorted(
                {k.decode()[start:] for k in self.link.call(lambda r: list(r.scan_iter(match=pattern, count=1000)))}
            )
        read = self._read_many(ids, tokens=False)
        gone = [i for i, s in read if s is None]
        if user_id is not None and gone:  # sessions that expired in Redis leave their id behind
            self.link.call(lambda r: r.srem(self._key("u", user_id), *gone))
        live = [s for _, s in read if s is not None and s.expires_at > at and user_id in (None, s.user_id)]
        return iter(sorted(live, key=lambda s: (s.issued_at, s.id)))

    def delete_user(self, user_id: str) -> int:
        keys = [self._key("u", user_id), self._refresh, self.link.channel]
        return int(self.link.call(lambda r: self._delete_user(keys, [self.link.prefix, f"u:{user_id}"], client=r)))

    def due_for_refresh(self, before: float, limit: int = 100) -> list[Session]:
        ids = [
            m.decode()
            for m in self.link.call(lambda r: r.zrangebyscore(self._refresh, "(0", f"({before}", start=0, num=limit))
        ]
        due, gone = [], []
        for session_id, session in self._read_many(ids, tokens=True):
            if session is None:
                gone.append(session_id)  # expired, or sealed under another cookie_secret
            else:
                due.append(session)
        if gone:
            self.link.call(lambda r: r.zrem(self._refresh, *gone))
        return due

    def try_lease(self, session_id: str, owner: str, until: float, now: float | None = None) -> bool:
        at = _now(now)
        keys = [self._key("s", session_id), self._key("l", session_id)]
        args: list[Any] = [owner, repr(until), repr(at), _ms(until, at)]
        return bool(self.link.call(lambda r: self._lease(keys, args, client=r)))

    # -- markers and the stash -------------------------------------------------------------

    def claim_once(self, key: str, expires_at: float, now: float | None = None) -> bool:
        at = _now(now)
        if expires_at <= at:
            return True  # expired as it is claimed: nothing to keep (as the other stores answer)
        args: list[Any] = [repr(at), repr(expires_at), _ms(expires_at, at)]
        return bool(self.link.call(lambda r: self._claim([self._key("o", key)], args, client=r)))

    def stash(self, key: str, value: str, expires_at: float) -> bool:
        if len(value) > stores.MAX_STASH_VALUE:
            return False
        at = time.time()
        if expires_at <= at:
            return True  # nothing a `take` could still return
        sealed = f"{expires_at!r} {self._stashed.seal(value, key)}"
        keys = [self._key("t", key), self._stash_set]
        args: list[Any] = [sealed, _ms(expires_at, at), key, repr(at), repr(expires_at), stores.MAX_STASHED]
        return bool(self.link.call(lambda r: self._stash(keys, args, client=r)))

    def take(self, key: str, now: float | None = None) -> str | None:
        def take(r: redis.Redis) -> Any:
            pipe = r.pipeline(transaction=True)
            pipe.getdel(self._key("t", key))
            pipe.zrem(self._stash_set, key)
            return pipe.execute()[0]

        raw = self.link.call(take)
        if raw is None:
            return None
        expires, _, sealed = raw.decode().partition(" ")
        if float(expires) <= _now(now):
            return None
        try:
            return self._stashed.open(sealed, key)
        except ValueError:
            log.warning("a stashed value is sealed under another key; treated as none")
            return None

    # -- the rest --------------------------------------------------------------------------

    def watch(self, listener: Any) -> None:
        """Deliver this store's invalidations to `listener` (a cache) while it lives."""
        self.link.watch(listener)

    def ping(self) -> None:
        self.link.call(lambda r: r.ping())

    def close(self) -> None:
        self.link.close()
