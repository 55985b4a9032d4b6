"""`authz sessions list|revoke`: see and end sessions in the configured store, from outside the server.

Revoking deletes the stored sessions, so every cookie that names them opens nothing on the next
request (the Check reads the store each time). IdP tokens are never read or printed. A `memory:`
store lives inside the running server's process, out of this command's reach.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from authz.config import Config
from authz.sessions.session import Session
from authz.sessions.stores import SessionStore, open_store

ID_PREFIX = 8  # enough to tell sessions apart and to name one to `revoke --session`; never the whole id


def _when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(session: Session) -> str:
    """One line per session: id prefix, user, email, issued, expires (never a token)."""
    return (
        f"{session.id[:ID_PREFIX]}  user={session.user_id}  email={session.email or '-'}"
        f"  issued={_when(session.issued_at)}  expires={_when(session.expires_at)}"
    )


def _open(config: Config) -> SessionStore | None:
    """The configured store, or None (with the reason on stderr) when this process cannot reach it."""
    url = config.session_store
    if url == "memory:":
        print(
            "session_store is memory:, so sessions live inside the running server's process and this"
            " command cannot reach them (restarting the server ends them all; use sqlite:// to manage them)",
            file=sys.stderr,
        )
        return None
    if url.startswith("sqlite://") and not Path(url[len("sqlite://") :]).exists():
        # Opening would create it, owned by whoever runs this command (perhaps root, not the server).
        print(f"no session store at {url[len('sqlite://') :]} yet", file=sys.stderr)
        return None
    return open_store(url, secret=config.cookie_secret.value, redis=config.redis)


def list_sessions(config: Config, user_id: str | None, now: float) -> int:
    """Print the live sessions (of one user, or all); exit 0, or 1 when the store is out of reach."""
    store = _open(config)
    if store is None:
        return 1
    try:
        for session in store.sessions(user_id, now):
            print(describe(session))
    finally:
        store.close()
    return 0


def revoke(config: Config, user_id: str | None, session_id: str | None, now: float) -> int:
    """End every session of a user, or one session named by its id or listed prefix; print how many."""
    store = _open(config)
    if store is None:
        return 1
    try:
        if user_id is not None:
            count = store.delete_user(user_id)
            print(f"revoked {count} session{'' if count == 1 else 's'} of user {user_id}")
            return 0
        if session_id is None or len(session_id) < ID_PREFIX:
            print(f"--session: give at least the {ID_PREFIX} characters that `list` shows", file=sys.stderr)
            return 1
        matches = [s for s in store.sessions(None, now) if s.id.startswith(session_id)]
        if len(matches) != 1:
            print(f"{len(matches)} live sessions match {session_id!r}; nothing revoked", file=sys.stderr)
            return 1
        store.delete(matches[0].id)
        print(f"revoked session {describe(matches[0])}")
        return 0
    finally:
        store.close()
