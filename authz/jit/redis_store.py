"""The Redis grant store: grants, their audit records and outbox beside the Redis session store.

Keys, under `session_store_key_prefix` (P), where {ru} is the JSON of [route, user]:

    P g:{id}        a grant: JSON with its schema version (`v`)
    P gp:{ru}       the id of the user's pending request on the route (one at a time)
    P ga:{ru}       the ids of the user's grants recorded as active on the route
    P gall          sorted set: every grant by creation time (listings, newest first)
    P gexp          sorted set: active grants by expiry (the sweeper)
    P gh:{id}       a grant's audit records, oldest first (append-only)
    P gr:{route}    a route's audit records, newest first (append-only)
    P gout, P gdue  the outbox: notifications by id, and their ids by next attempt
    P gl:{name}     a named lease: "owner until"

`add` and `change` are Lua scripts: the grant, its indexes, its audit record, its notification and
the invalidation message (`g` + {ru}) are written together or not at all, and `change` compares the
stored status first, so of two approvers (on any replicas) exactly one wins.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from functools import partial
from typing import Any

import redis

from authz.config.model import RedisSettings
from authz.jit.model import Delivery, Grant, Record, Status
from authz.jit.store import MAX_LISTED, MAX_TRAIL, _record, _record_row
from authz.sessions.redis_link import LEASE_LUA, RedisLink

log = logging.getLogger("authz.jit")
SCHEMA = 1
_BATCH = 500

# KEYS: g, gp, ga, gexp, gh, gr, gout, gdue, gall, channel
# ARGV: grant JSON, id, status, expires_at, record, delivery id, delivery JSON, next_at, created_at, message
# `write` stores the grant, keeps its indexes (one pending request per route and user; the active
# set and the expiry order), appends its audit record, queues its notification once, and publishes.
_WRITE = """
local function write()
  local id, status = ARGV[2], ARGV[3]
  redis.call('SET', KEYS[1], ARGV[1])
  if status ~= 'pending' and redis.call('GET', KEYS[2]) == id then redis.call('DEL', KEYS[2]) end
  if status == 'active' then
    redis.call('SADD', KEYS[3], id)
    redis.call('ZADD', KEYS[4], ARGV[4], id)
  else
    redis.call('SREM', KEYS[3], id)
    redis.call('ZREM', KEYS[4], id)
  end
  redis.call('RPUSH', KEYS[5], ARGV[5])
  redis.call('LPUSH', KEYS[6], ARGV[5])
  if ARGV[6] ~= '' and redis.call('HSETNX', KEYS[7], ARGV[6], ARGV[7]) == 1 then
    redis.call('ZADD', KEYS[8], ARGV[8], ARGV[6])
  end
  redis.call('PUBLISH', KEYS[10], ARGV[10])
  return 1
end
"""
_ADD = (
    _WRITE
    + """
if ARGV[3] == 'pending' and redis.call('SET', KEYS[2], ARGV[2], 'NX') == false then return 0 end
redis.call('ZADD', KEYS[9], ARGV[9], ARGV[2])
return write()
"""
)
# KEYS and ARGV as _ADD's, then the status the stored grant must still have
_CHANGE = (
    _WRITE
    + """
local stored = redis.call('GET', KEYS[1])
if not stored or cjson.decode(stored)['status'] ~= ARGV[11] then return 0 end
return write()
"""
)
# KEYS: lease; ARGV: owner, until, now
_LEASE = (
    LEASE_LUA
    + """
if held_by_another(KEYS[1], ARGV[1], ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2])
return 1
"""
)


def _mget(keys: list[str], r: redis.Redis) -> Any:
    return r.mget(keys)


def _newest(key: str, start: int, r: redis.Redis) -> Any:
    return r.zrevrange(key, start, start + _BATCH - 1)


def route_user(route: str, user: str) -> str:
    """The (route, user) pair as it appears in keys and invalidation messages."""
    return json.dumps([route, user], separators=(",", ":"))


def _delivery_json(delivery: Delivery) -> str:
    return json.dumps([delivery.id, delivery.route, delivery.body, delivery.attempts, delivery.next_at])


def _delivery(raw: bytes) -> Delivery:
    return Delivery(*json.loads(raw))


class RedisGrantStore:
    """Grants in Redis, on the session store's connection (`link`)."""

    blocking = True

    def __init__(self, settings: RedisSettings, link: RedisLink | None = None) -> None:
        self.link = link if link is not None else RedisLink(settings)
        self._owns_link = link is None
        client = self.link.client
        self._add = client.register_script(_ADD)
        self._change = client.register_script(_CHANGE)
        self._lease = client.register_script(_LEASE)
        key = self.link.key
        self._all, self._expiring, self._outbox, self._due = key("gall"), key("gexp"), key("gout"), key("gdue")
        self._warned_version = False

    def _keys(self, grant: Grant) -> list[str]:
        key, pair = self.link.key, route_user(grant.route, grant.user)
        return [key(f"g:{grant.id}"), key(f"gp:{pair}"), key(f"ga:{pair}"), self._expiring,
                key(f"gh:{grant.id}"), key(f"gr:{grant.route}"), self._outbox, self._due, self._all,
                self.link.channel]  # fmt: skip

    def _args(self, grant: Grant, record: Record, delivery: Delivery | None) -> list[Any]:
        data = json.dumps({"v": SCHEMA, **grant.to_row()}, separators=(",", ":"))
        _, _, record_json = _record_row(record)
        return [data, grant.id, str(grant.status), grant.expires_at, json.dumps([record.grant, record.route,
                record_json]), delivery.id if delivery else "", _delivery_json(delivery) if delivery else "",
                delivery.next_at if delivery else 0, grant.created_at,
                f"g:{route_user(grant.route, grant.user)}"]  # fmt: skip

    def _load(self, raw: bytes | None) -> Grant | None:
        if raw is None:
            return None
        try:
            row = json.loads(raw)
            if row.pop("v", None) != SCHEMA:
                if not self._warned_version:
                    self._warned_version = True
                    log.warning("a grant record has another schema version (a newer authz?); left out")
                return None
            return Grant.from_row(row)
        except (ValueError, TypeError, KeyError):
            log.warning("a grant record is unreadable; left out")
            return None

    def _many(self, ids: list[bytes]) -> list[Grant]:
        found: list[Grant] = []
        for start in range(0, len(ids), _BATCH):
            batch = [self.link.key(f"g:{i.decode()}") for i in ids[start : start + _BATCH]]
            found.extend(g for raw in self.link.call(partial(_mget, batch)) if (g := self._load(raw)))
        return found

    def add(self, grant: Grant, record: Record, delivery: Delivery | None) -> bool:
        keys, args = self._keys(grant), self._args(grant, record, delivery)
        return bool(self.link.call(lambda r: self._add(keys, args, client=r)))

    def get(self, grant_id: str) -> Grant | None:
        return self._load(self.link.call(lambda r: r.get(self.link.key(f"g:{grant_id}"))))

    def change(self, expected: Status, grant: Grant, record: Record, delivery: Delivery | None) -> bool:
        keys, args = self._keys(grant), [*self._args(grant, record, delivery), str(expected)]
        return bool(self.link.call(lambda r: self._change(keys, args, client=r)))

    def grants(
        self,
        *,
        routes: Collection[str] | None = None,
        user: str | None = None,
        status: Status | None = None,
        now: float = 0.0,
    ) -> list[Grant]:
        if routes is not None and not routes:
            return []
        found: list[Grant] = []
        start = 0
        while len(found) < MAX_LISTED:
            ids = self.link.call(partial(_newest, self._all, start))
            if not ids:
                break
            start += len(ids)
            found.extend(
                g
                for g in self._many(ids)
                if (routes is None or g.route in routes)
                and user in (None, g.user)
                and (status is None or g.status_at(now) is status)
            )
        return found[:MAX_LISTED]

    def active(self, route: str, user: str) -> tuple[Grant, ...]:
        ids = self.link.call(lambda r: r.smembers(self.link.key(f"ga:{route_user(route, user)}")))
        return tuple(g for g in self._many(sorted(ids)) if g.status is Status.ACTIVE)

    def expiring(self, now: float, limit: int = 100) -> list[Grant]:
        ids = self.link.call(lambda r: r.zrangebyscore(self._expiring, "-inf", now, start=0, num=limit))
        return [g for g in self._many(ids) if g.status is Status.ACTIVE]

    def history(self, grant_id: str) -> list[Record]:
        raws = self.link.call(lambda r: r.lrange(self.link.key(f"gh:{grant_id}"), 0, -1))
        return [_record(*json.loads(raw)) for raw in raws]

    def trail(self, routes: Collection[str]) -> list[Record]:
        def read(r: redis.Redis) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            for route in routes:
                pipe.lrange(self.link.key(f"gr:{route}"), 0, MAX_TRAIL - 1)
            return pipe.execute()

        records = [_record(*json.loads(raw)) for raws in self.link.call(read) for raw in raws]
        return sorted(records, key=lambda rec: rec.at, reverse=True)[:MAX_TRAIL]

    def due(self, now: float, limit: int = 20) -> list[Delivery]:
        ids = self.link.call(lambda r: r.zrangebyscore(self._due, "-inf", now, start=0, num=limit))
        if not ids:
            return []
        raws = self.link.call(lambda r: r.hmget(self._outbox, ids))
        return [_delivery(raw) for raw in raws if raw is not None]

    def delivered(self, delivery_id: str) -> None:
        def forget(r: redis.Redis) -> None:
            pipe = r.pipeline(transaction=True)
            pipe.hdel(self._outbox, delivery_id)
            pipe.zrem(self._due, delivery_id)
            pipe.execute()

        self.link.call(forget)

    def postpone(self, delivery_id: str, attempts: int, next_at: float) -> None:
        raw = self.link.call(lambda r: r.hget(self._outbox, delivery_id))
        if raw is None:
            return
        found = _delivery(raw)
        again = Delivery(found.id, found.route, found.body, attempts, next_at)

        def write(r: redis.Redis) -> None:
            pipe = r.pipeline(transaction=True)
            pipe.hset(self._outbox, delivery_id, _delivery_json(again))
            pipe.zadd(self._due, {delivery_id: next_at})
            pipe.execute()

        self.link.call(write)

    def try_lease(self, name: str, owner: str, until: float, now: float) -> bool:
        key = self.link.key(f"gl:{name}")
        return bool(self.link.call(lambda r: self._lease([key], [owner, repr(until), repr(now)], client=r)))

    def watch(self, listener: Any) -> None:
        self.link.watch(listener)

    def ping(self) -> None:
        self.link.call(lambda r: r.ping())

    def close(self) -> None:
        if self._owns_link:
            self.link.close()
