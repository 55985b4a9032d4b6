"""The operating keys: metrics (`metrics_*`, as Pomerium) and logs (`log_format`, `authorize_log_*`).

    metrics_address: 127.0.0.1:9090       # off unless set; its own listener, never a route host
    metrics_basic_auth: dXNlcjpwYXNz       # base64 "user:password" (or metrics_basic_auth_file)
    metrics_certificate_file: metrics.pem  # TLS on the metrics listener; metrics_certificate and
    metrics_certificate_key_file: metrics.key  # metrics_certificate_key take base64 PEM, as Pomerium
                                           #   (metrics_key(_file): authz's older name)
    metrics_client_ca_file: ca.pem         # and client certificates required, from this CA
    log_format: json                       # or text
    authorize_log_fields: [request-id, envoy-route-id, host, method, path, ip, user, email]
    authorize_log_sample_rate: 1.0         # authz's own: the share of allows logged
    authorize_log_rate_limit: 100          # authz's own: other decisions, lines a second (0: no limit)

A `metrics_address` that is not loopback must authenticate its scrapers, by basic auth or by
client certificates (TLS alone encrypts but lets anyone read): counts by route tell an outsider
what is behind the gate.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable

from authz.config.model import DEFAULT_LOG_FIELDS, DEFAULT_LOG_RATE_LIMIT, Address, LogSettings, MetricsSettings, Secret
from authz.errors import Problem
from authz.schema.reader import Node, describe

OPS_KEYS = (
    "metrics_address", "metrics_basic_auth", "metrics_basic_auth_file", "metrics_certificate",
    "metrics_certificate_file", "metrics_certificate_key", "metrics_certificate_key_file", "metrics_key",
    "metrics_key_file", "metrics_client_ca",
    "metrics_client_ca_file", "log_format", "authorize_log_fields", "authorize_log_sample_rate",
    "authorize_log_rate_limit",
)  # fmt: skip

FIELDS = frozenset(DEFAULT_LOG_FIELDS)
# Pomerium's fields that would write a credential, the query string (codes, tokens) or a body.
REFUSED = {
    "id-token": "it would log the user's ID token",
    "query": "the query string carries authorization codes and tokens",
    "body": "it would log request bodies",
    "headers": "it would log every header, the session cookie and Authorization among them",
}
# `headers.<name>` is refused for headers that carry credentials or a URL with its query string
# (codes, tokens): these by name, and any name with one of the CREDENTIAL_WORDS in it (x-api-key,
# x-auth-token, x-csrf-token, x-amz-security-token, …). A name must be an HTTP token (RFC 9110
# §5.6.2): pseudo-headers such as `:path` (which carries the query) are not headers to log.
CREDENTIAL_HEADERS = frozenset((
    "cookie", "authorization", "proxy-authorization", "x-pomerium-authorization", "x-pomerium-jwt-assertion",
    "x-pomerium-jwt-assertion-for", "set-cookie", "x-authz-client-cert", "x-forwarded-client-cert",
))  # fmt: skip
URL_HEADERS = frozenset(("referer", "referrer", "x-envoy-original-path", "x-forwarded-path", "x-rewrite-url"))
URL_WORDS = ("url", "uri", "query", "location")  # x-forwarded-uri, x-original-url, content-location, …
CREDENTIAL_WORDS = (
    "auth", "token", "secret", "key", "cookie", "session", "pass", "sig", "credential", "jwt", "bearer", "oidc",
    "dpop", "hmac", "otp",
)  # fmt: skip
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
# Pomerium's fields that authz has no value for: accepted (a Pomerium config loads) and left out.
ABSENT = frozenset((
    "check-request-id", "session-id", "id-token-claims", "impersonate-email", "impersonate-session-id",
    "impersonate-user-id", "service-account-id", "cluster-stat-name", "envoy-route-checksum",
))  # fmt: skip


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_pem(node: Node, key: str, read: Callable[[str], str]) -> bytes | None:
    """A PEM from `key` (base64, as Pomerium) or from the file `key_file`; never echoed."""
    value, where = node.inline_or_file(key, read)
    if value is None:
        return None
    if not isinstance(value, str):
        node.error(where, "expected base64 PEM (value not shown)")
        return None
    text = value
    if where == key:
        try:
            text = base64.b64decode(value.strip(), validate=True).decode("ascii")
        except (binascii.Error, ValueError):
            node.error(key, "is not base64 PEM (value not shown)")
            return None
    if "-----BEGIN " not in text:
        node.error(where, "is not a PEM file (value not shown)")
        return None
    return text.encode("ascii", "replace")


def read_metrics(node: Node, address: Address | None, read: Callable[[str], str]) -> MetricsSettings:
    """The metrics listener's settings; `address` is what `_address` read for `metrics_address`."""
    basic = node.secret("metrics_basic_auth", size=None, read=read)
    if basic is not None and (b":" not in basic or basic.startswith(b":")):
        node.error("metrics_basic_auth", "must be base64 of 'user:password' (value not shown)")
        basic = None
    # Pomerium's name for the key is metrics_certificate_key(_file); metrics_key(_file) is authz's older one.
    pomerium = node.has("metrics_certificate_key") or node.has("metrics_certificate_key_file")
    if pomerium and (node.has("metrics_key") or node.has("metrics_key_file")):
        node.error("metrics_key", "set either metrics_certificate_key (Pomerium's name) or metrics_key, not both")
    key_name = "metrics_certificate_key" if pomerium else "metrics_key"
    certificate, key = read_pem(node, "metrics_certificate", read), read_pem(node, key_name, read)
    client_ca = read_pem(node, "metrics_client_ca", read)
    if (certificate is None) != (key is None):
        node.error("metrics_certificate", "set both metrics_certificate and metrics_key (or their _file forms)")
        certificate = key = None
    if client_ca is not None and certificate is None:
        node.error("metrics_client_ca", "client certificates need TLS: set metrics_certificate and metrics_key")
    if address is None:
        for name in ("metrics_basic_auth", "metrics_certificate", "metrics_client_ca"):
            if node.has(name) or node.has(f"{name}_file"):
                node.error(name, "has no effect without metrics_address")
        return MetricsSettings()
    if not is_loopback(address.host) and basic is None and client_ca is None:
        # TLS alone encrypts the scrape but lets anyone who reaches the port read it.
        node.error(
            "metrics_address",
            f"{address} is reachable from other hosts: set metrics_basic_auth, or metrics_client_ca with"
            " metrics_certificate and metrics_key, or listen on 127.0.0.1",
        )
    return MetricsSettings(
        address=address,
        basic_auth=Secret(basic) if basic is not None else None,
        certificate=certificate,
        key=Secret(key) if key is not None else None,
        client_ca=client_ca,
    )


def _refused_header(name: str) -> str:
    """Why `headers.<name>` may not be logged, or "" when it may."""
    if not _TOKEN.fullmatch(name):
        return "not a header name (pseudo-headers such as :path are not logged)"
    if name in CREDENTIAL_HEADERS or any(word in name for word in CREDENTIAL_WORDS):
        return "that header may carry credentials"
    if name in URL_HEADERS or any(word in name for word in URL_WORDS):
        return "that header carries a URL with its query string (codes, tokens)"
    return ""


def read_log_settings(node: Node, warnings: list[str]) -> LogSettings:
    """`log_format` and the decision log's fields, sampling and rate limit."""
    fields: list[str] = []
    raw = node.raw("authorize_log_fields")
    names = node.str_list("authorize_log_fields") if raw is not None else list(DEFAULT_LOG_FIELDS)
    for i, name in enumerate(names):
        where = f"authorize_log_fields[{i}]" if isinstance(raw, list) else "authorize_log_fields"
        field = name.strip().lower()
        header = field[len("headers.") :] if field.startswith("headers.") else None
        if field in REFUSED:
            node.problems.append(Problem(node.at(where), f"{name!r} is refused: {REFUSED[field]}"))
        elif header is not None and (why := _refused_header(header)):
            node.problems.append(Problem(node.at(where), f"{name!r} is refused: {why}"))
        elif field in ABSENT:
            warnings.append(f"authorize_log_fields: {name!r} has no value in authz and is left out of the log")
        elif field in FIELDS or header is not None:
            if field not in fields:
                fields.append(field)
        else:
            known = ", ".join(sorted(FIELDS)) + ", headers.<name>"
            node.problems.append(Problem(node.at(where), f"unknown field {name!r} (known: {known})"))
    rate = node.raw("authorize_log_sample_rate")
    sample = 1.0
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            node.error("authorize_log_sample_rate", f"expected a number from 0 to 1, got {describe(rate)}")
        else:
            sample = float(rate)
    limit = node.integer("authorize_log_rate_limit", DEFAULT_LOG_RATE_LIMIT)
    if limit < 0:
        node.error("authorize_log_rate_limit", f"expected lines a second, 0 or more, got {limit}")
        limit = DEFAULT_LOG_RATE_LIMIT
    return LogSettings(
        fields=tuple(fields),
        sample_rate=sample,
        rate_limit=limit,
        format=node.choice("log_format", "json", ["json", "text"]),
    )
