"""Cookie names, reading the Cookie header, and writing Set-Cookie lines with the configured attributes.

Every cookie authz sets is named from `cookie_name` (`_pomerium`):

  session         `_pomerium`                   route hosts (Domain=cookie_domain when set)
  authenticate    `_pomerium_authenticate`      the authenticate host only, always host-only
  CSRF            `_pomerium_csrf_<digest>`     the authenticate host, one per sign-in attempt
  binding         `_pomerium_bind_<id>`         a route host, one per sign-in attempt (login CSRF)
  conflict        `_pomerium_conflict`          a route host that saw sessions of two users

With `cookie_secure` each host-only cookie carries the `__Host-` prefix (Secure, Path=/, no
Domain: a sibling subdomain cannot plant or shadow it), and the session cookie does too unless
`cookie_domain` spreads it over subdomains. While the prefix is in use, unprefixed cookies are
never read. Whatever the prefix, every cookie in authz's namespace is removed before the upstream.
"""

from __future__ import annotations

from dataclasses import dataclass

from authz.config import Config

HOST_PREFIX = "__Host-"
_EXPIRED = "; Expires=Thu, 01 Jan 1970 00:00:00 GMT"


@dataclass(frozen=True, slots=True)
class CookieNames:
    """The names this config gives authz's cookies, decided once per config."""

    session: str
    authenticate: str
    csrf_prefix: str  # + the state digest
    binding_prefix: str  # + the attempt id
    conflict: str
    namespace: str  # lower-case `cookie_name`: every cookie named it or `<it>_…` is authz's
    session_domain: str  # the Domain of the session cookie ('' for host-only)
    secure: bool

    @classmethod
    def build(cls, config: Config) -> CookieNames:
        base = config.cookie_name
        host_only = HOST_PREFIX if config.cookie_secure else ""
        session = host_only if not config.cookie_domain else ""
        return cls(
            session=f"{session}{base}",
            authenticate=f"{host_only}{base}_authenticate",
            csrf_prefix=f"{host_only}{base}_csrf_",
            binding_prefix=f"{host_only}{base}_bind_",
            conflict=f"{host_only}{base}_conflict",
            namespace=base.lower(),
            session_domain=config.cookie_domain,
            secure=config.cookie_secure,
        )

    def is_authz(self, name: str) -> bool:
        """Whether a cookie name is in authz's namespace (any case, any `__Host-`/`__Secure-` prefix)."""
        lowered = name.lower()
        if lowered.startswith("__host-"):
            lowered = lowered[7:]
        elif lowered.startswith("__secure-"):
            lowered = lowered[9:]
        ns = self.namespace
        return lowered == ns or (lowered.startswith(ns) and lowered[len(ns) : len(ns) + 1] == "_")


def pairs(header: str) -> list[tuple[str, str]]:
    """Every (name, value) in a Cookie header, in order, split on `;` only: browsers allow commas
    in values, so `x=1,__Host-_pomerium=…` (planted by a sibling site) is one cookie named `x`,
    never a `__Host-` cookie. (A second `Cookie:` line, which Envoy's ext_authz joins with `,` and
    browsers never send, is stripped by `authz.check.credentials` but never read as a credential.)"""
    out = []
    for part in header.split(";"):
        name, eq, value = part.strip().partition("=")
        if eq and name:
            out.append((name.strip(), value.strip().strip('"')))
    return out


def parse(header: str) -> dict[str, str]:
    """Cookie name → value; the first of duplicate names wins (RFC 6265 §5.4 orders by path)."""
    out: dict[str, str] = {}
    for name, value in pairs(header):
        out.setdefault(name, value)
    return out


def set_cookie(config: Config, name: str, value: str, max_age: int, *, path: str = "/", host_only: bool = False) -> str:
    """A Set-Cookie line: HttpOnly, SameSite and Secure per config; Domain only with cookie_domain
    and never on a `__Host-` cookie or one that must stay `host_only`."""
    parts = [f"{name}={value}", f"Path={path}", f"Max-Age={max(0, max_age)}"]
    if config.cookie_domain and not host_only and not name.startswith(HOST_PREFIX):
        parts.append(f"Domain={config.cookie_domain}")
    if config.cookie_http_only:
        parts.append("HttpOnly")
    parts.append(f"SameSite={config.cookie_same_site.capitalize()}")
    if config.cookie_secure or name.startswith(HOST_PREFIX):
        parts.append("Secure")
    return "; ".join(parts)


def binding_cookie(names: CookieNames, name: str, value: str, max_age: int) -> str:
    """A login-binding cookie: always host-only, HttpOnly and SameSite=Lax, whatever the config
    (the IdP → authenticate → route hops are cross-site top-level navigations)."""
    parts = [f"{name}={value}", "Path=/", f"Max-Age={max(0, max_age)}", "HttpOnly", "SameSite=Lax"]
    if names.secure:
        parts.append("Secure")
    return "; ".join(parts)


def clear_cookie(config: Config, name: str, *, path: str = "/", host_only: bool = False) -> str:
    return set_cookie(config, name, "", 0, path=path, host_only=host_only) + _EXPIRED


def deletion(name: str, *, domain: str = "", path: str = "/", secure: bool = False) -> str:
    """An expired Set-Cookie for `name` at exactly this Domain and Path (a cookie is only replaced
    or deleted by one with the same name, domain and path)."""
    parts = [f"{name}=", f"Path={path}", "Max-Age=0"]
    if domain:
        parts.append(f"Domain={domain}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts) + _EXPIRED
