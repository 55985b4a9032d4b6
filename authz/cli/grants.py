"""`authz grants list|show|approve|reject|revoke`: the operator's break-glass path, without a browser.

It works on the configured store directly (a `memory:` store lives inside the running server and
is out of reach), prints the same JSON as the grants API, and is recorded in the audit trail as
done by `cli`. The operator is not subject to a route's `approvers`. A change made here reaches a
running server's Checks within `session_cache_ttl` (its grant cache), and its notifications are
delivered by the server from the store's outbox.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from authz.config import Config
from authz.errors import GrantError
from authz.jit import service
from authz.jit.model import CLI_ACTOR
from authz.jit.store import GrantStore, open_grant_store

OPERATOR = service.Actor(CLI_ACTOR, operator=True)


def _open(config: Config) -> GrantStore | None:
    """The configured grant store, or None (with the reason on stderr) when this process cannot reach it."""
    url = config.session_store
    if url == "memory:":
        print("session_store is memory:, so grants live inside the running server's process and this"
              " command cannot reach them (use sqlite:// to manage them)", file=sys.stderr)  # fmt: skip
        return None
    if url.startswith("sqlite://") and not Path(url[len("sqlite://") :]).exists():
        print(f"no store at {url[len('sqlite://') :]} yet", file=sys.stderr)
        return None
    return open_grant_store(url, config.redis)


def run(
    config: Config, command: str, grant_id: str | None, status: str | None, duration: str | None, now: float
) -> int:
    """Run one command; print JSON; exit 0, 1 when the store is out of reach, 2 when refused."""
    store = _open(config)
    if store is None:
        return 1
    try:
        if command == "list":
            grants = service.listing(config, store, OPERATOR, status, now)
            out: object = {"grants": [g.to_json(now) for g in grants]}
        elif command == "show":
            grant, history = service.one(config, store, OPERATOR, grant_id or "", now)
            out = {**grant.to_json(now), "history": [r.to_json() for r in history]}
        elif command == "approve":
            out = service.approve(config, store, OPERATOR, grant_id or "", duration, now).to_json(now)
        elif command == "reject":
            out = service.reject(config, store, OPERATOR, grant_id or "", now).to_json(now)
        else:
            out = service.revoke(config, store, OPERATOR, grant_id or "", now).to_json(now)
    except GrantError as exc:
        print(json.dumps({"error": exc.message, "status": exc.status}), file=sys.stderr)
        return 2
    finally:
        store.close()
    print(json.dumps(out, indent=2))
    return 0
