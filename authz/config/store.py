"""Where sessions, markers, leases and grants live: `session_store` and, for Redis, its own keys.

    session_store: memory:                        # one process (tests, development)
    session_store: sqlite:///var/lib/authz/db     # the workers of one host (the default, beside the config)
    session_store: rediss://authz@redis.internal:6380/0   # many replicas (redis:// is plain text)
    session_store_password_file: /run/secrets/redis       # or the password in the URL
    session_store_ca_file: redis-ca.pem           # rediss: the CAs that sign Redis's certificate
    session_store_cert_file: authz-redis.pem      # rediss: a client certificate, when Redis asks for one
    session_store_key_file: authz-redis.key
    session_store_key_prefix: "authz:"            # every key and the invalidation channel start with it
    session_store_timeout: 1s                     # a Redis call that takes longer counts as Redis down

These keys are authz's own: Pomerium's databroker stored sessions in Redis once and no longer does.
The password never leaves this module in the URL: `Config.session_store` holds the URL without it
(safe to log or print), and `RedisSettings.password` is a `Secret`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit

from authz.config.model import RedisSettings, Secret
from authz.config.ops import is_loopback
from authz.schema.reader import Node, describe

STORE_KEYS = (
    "session_store", "session_store_password_file", "session_store_ca_file", "session_store_cert_file",
    "session_store_key_file", "session_store_key_prefix", "session_store_timeout",
)  # fmt: skip
_REDIS_ONLY = STORE_KEYS[1:]
_SCHEMES = ("redis", "rediss")
DEFAULT_PREFIX = "authz:"


def masked(url: str) -> str:
    """`url` with any password in it replaced by `***`: what a message may show of a store URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<not shown>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def read_session_store(
    node: Node, base: Path, read: Callable[[str], str], warnings: list[str]
) -> tuple[str, RedisSettings | None]:
    """`session_store` (its URL without a password) and, for redis:// and rediss://, the settings."""
    value = node.raw("session_store")
    if value is None:
        value = f"sqlite://{base / 'authz.db'}"
    if not isinstance(value, str):
        node.error("session_store", f"expected memory:, sqlite:///path or redis://host, got {describe(value)}")
        return "memory:", None
    scheme = value.partition(":")[0].lower()
    if scheme not in _SCHEMES:
        for key in _REDIS_ONLY:
            if node.has(key):
                node.error(key, "applies to a redis:// or rediss:// session_store only")
    if value == "memory:":
        return value, None
    if value.startswith("sqlite://") and len(value) > len("sqlite://"):
        path = Path(value[len("sqlite://") :])
        return f"sqlite://{path if path.is_absolute() else base / path}", None
    if scheme in _SCHEMES:
        return _redis(node, value, base, read, warnings)
    node.error(
        "session_store", f"expected memory:, sqlite:///path, redis://host or rediss://host, got {masked(value)!r}"
    )
    return "memory:", None


def _redis(
    node: Node, value: str, base: Path, read: Callable[[str], str], warnings: list[str]
) -> tuple[str, RedisSettings | None]:
    try:
        parts = urlsplit(value)
        port = parts.port or 6379
    except ValueError:
        node.error("session_store", f"is not a valid Redis URL: {masked(value)!r}")
        return "memory:", None
    problem = _url_problem(parts)
    if problem:
        node.error("session_store", f"{problem}: {masked(value)!r}")
        return "memory:", None
    db = int(parts.path.strip("/") or 0)
    password = unquote(parts.password) if parts.password is not None else None
    if node.has("session_store_password_file"):
        file = node.raw("session_store_password_file")
        if password is not None:
            node.error("session_store_password_file", "the session_store URL has a password already: set one of them")
        elif not isinstance(file, str):
            node.error("session_store_password_file", f"expected a file path, got {describe(file)}")
        else:
            try:
                password = read(file).strip()
            except OSError as exc:
                node.error("session_store_password_file", f"cannot read {file!r}: {exc.strerror}")
    tls = parts.scheme == "rediss"
    files = {}
    for key in ("session_store_ca_file", "session_store_cert_file", "session_store_key_file"):
        name = node.text(key)
        if name and not tls:
            node.error(key, "needs a rediss:// session_store (TLS to Redis)")
        elif name:
            path = base / name
            if not path.is_file():
                node.error(key, f"no such file {name!r}")
            files[key] = str(path)
    if ("session_store_cert_file" in files) != ("session_store_key_file" in files):
        node.error("session_store_cert_file", "set both session_store_cert_file and session_store_key_file")
    prefix = node.text("session_store_key_prefix", DEFAULT_PREFIX)
    if not prefix or len(prefix) > 64 or not prefix.isprintable():
        node.error("session_store_key_prefix", "must be 1 to 64 printable characters")
    timeout = node.duration("session_store_timeout", 1.0)
    if not 0 < timeout <= 30:
        node.error("session_store_timeout", f"must be more than 0s and at most 30s, got {timeout:g}s")
    host = parts.hostname or ""
    if not tls and not is_loopback(host):
        warnings.append(
            f"session_store: redis:// to {host} is plain text: session records (users, emails, groups)"
            " cross the network readable; use rediss://"
        )
    user = parts.username or ""
    netloc = f"{user}@{parts.netloc.rpartition('@')[2]}" if user else parts.netloc.rpartition("@")[2]
    url = parts._replace(netloc=netloc, path=f"/{db}").geturl()
    settings = RedisSettings(
        url=url,
        host=host,
        port=port,
        db=db,
        username=unquote(user) or None,
        password=Secret(password.encode()) if password else None,
        tls=tls,
        ca_file=files.get("session_store_ca_file"),
        cert_file=files.get("session_store_cert_file"),
        key_file=files.get("session_store_key_file"),
        key_prefix=prefix,
        timeout=timeout,
    )
    return url, settings


def _url_problem(parts: SplitResult) -> str:
    if not parts.hostname:
        return "names no host"
    if parts.query or parts.fragment:
        return "takes no query or fragment (use the session_store_* keys)"
    db = parts.path.strip("/")
    if db and (not db.isdigit() or int(db) > 10_000):
        return "the path must be a database number such as /0"
    return ""
