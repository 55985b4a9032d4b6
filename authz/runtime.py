"""The Runtime: config, keys, codecs and stores built once at start and swapped whole on reload."""

from __future__ import annotations

from dataclasses import dataclass

from authz.config import Config
from authz.errors import InvalidSession
from authz.session import HandleCodec, Session, derive_key
from authz.stores import SessionStore, open_store


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything the hot path needs, with no global state behind it."""

    config: Config
    codec: HandleCodec
    store: SessionStore
    url_key: bytes

    @classmethod
    def build(cls, config: Config, store: SessionStore | None = None) -> Runtime:
        return cls(
            config=config,
            codec=HandleCodec(config.cookie_secret.value),
            store=store if store is not None else open_store(config.session_store),
            url_key=derive_key(config.shared_secret.value, b"authz/signed-url"),
        )

    def load_session(self, tokens: list[str], hostname: str, now: float) -> Session | None:
        """The first credential that opens, names this host and has a live stored session."""
        for token in tokens:
            try:
                handle = self.codec.open(token, hostname, now)
            except InvalidSession:
                continue
            session = self.store.get(handle.session_id, now)
            if session is not None and session.user_id == handle.user_id and session.expires_at > now:
                return session
        return None
