"""A route's `jit:` block: just-in-time access, validated with a path on every problem.

    jit:
      approvers: [{allow: {or: [{groups: {has: admins}}]}}]   # PPL, as `policy`
      max_duration: 8h            # default 8h
      default_duration: 1h        # default 1h (or max_duration when that is shorter)
      reason_required: true       # default false
      notify_url: https://hooks.slack.com/services/…   # or notify_url_file; optional
      notify_secret: …            # or notify_secret_file; optional: HMAC-SHA256 signature
      max_stream_duration: 15m    # default 15m: Envoy ends longer streams on this route

A route with `jit` must name its `id` (the API and the CLI name routes by it). `notify_url` is
https, or http to a loopback address (a local relay); its value is never echoed, as a Slack
webhook URL is a secret.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import httpx2

from authz.config.model import JitOptions, Secret
from authz.config.ops import is_loopback
from authz.policy.ast import Policy
from authz.policy.parse import parse_policy
from authz.schema.reader import Node

JIT_KEYS = (
    "approvers", "max_duration", "default_duration", "reason_required", "notify_url", "notify_url_file",
    "notify_secret", "notify_secret_file", "max_stream_duration",
)  # fmt: skip
DEFAULT_MAX = 8 * 3600
DEFAULT_DURATION = 3600
DEFAULT_STREAM = 900.0
MIN_NOTIFY_SECRET = 16


def _text_secret(node: Node, key: str, read: Callable[[str], str]) -> str | None:
    """A plain-text secret from `key` or from the file `key_file` names (stripped); never echoed."""
    value, where = node.inline_or_file(key, read)
    if value is None:
        return None
    if not isinstance(value, str):
        node.error(where, "expected a string (value not shown)")
        return None
    return value.strip()


def _notify_url(node: Node, read: Callable[[str], str]) -> Secret | None:
    value = _text_secret(node, "notify_url", read)
    if value is None:
        return None
    where = "notify_url_file" if node.has("notify_url_file") else "notify_url"
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 - raises on a bad port
    except ValueError:
        node.error(where, "is not a valid URL (value not shown)")
        return None
    if not url.hostname or url.scheme not in ("https", "http") or any(c in value for c in "\r\n\x00 "):
        node.error(where, "expected an https URL (value not shown)")
        return None
    if url.scheme == "http" and not is_loopback(url.hostname):
        node.error(where, "must be https (http only to a loopback address); value not shown")
        return None
    try:  # what the notifier's HTTP client will parse: refuse here what it would refuse at delivery
        httpx2.URL(value)
    except Exception:
        node.error(where, "is not a URL the HTTP client accepts (value not shown)")
        return None
    return Secret(value.encode())


def read_jit(route: Node, read: Callable[[str], str], warnings: list[str]) -> JitOptions | None:
    """The route's `jit` options, or None when it has none (problems are added to the route's
    node; settings that load but weaken the feature to `warnings`)."""
    node = route.child("jit")
    if node is None:
        return None
    if route.raw("id") is None:
        route.error("jit", "a route with jit must set `id`: the grants API and CLI name routes by it")
    if node.has("approvers"):
        approvers = parse_policy(node.raw("approvers"), node.at("approvers"), node.problems)
    else:
        node.error("approvers", "is required: a policy (as `policy`) that says who may approve")
        approvers = Policy()
    maximum = node.duration("max_duration", DEFAULT_MAX)
    default = node.duration("default_duration", min(DEFAULT_DURATION, maximum))
    stream = node.duration("max_stream_duration", DEFAULT_STREAM)
    for key, value in (("max_duration", maximum), ("default_duration", default), ("max_stream_duration", stream)):
        if value < 1:
            node.error(key, "must be at least 1s")
    if default > maximum:
        node.error("default_duration", "must not be longer than max_duration")
    notify_url = _notify_url(node, read)
    notify_secret = _text_secret(node, "notify_secret", read)
    if notify_secret is not None and len(notify_secret) < MIN_NOTIFY_SECRET:
        where = "notify_secret_file" if node.has("notify_secret_file") else "notify_secret"
        node.error(where, f"must be at least {MIN_NOTIFY_SECRET} characters (value not shown)")
    if notify_secret is not None and notify_url is None:
        node.error("notify_secret", "signs notifications: set notify_url too")
    if stream > maximum:
        warnings.append(
            f"{node.at('max_stream_duration')}: streams may outlive the longest grant"
            f" ({int(stream)}s > max_duration {int(maximum)}s): a WebSocket opened near a grant's end stays open"
            " that long"
        )
    options = JitOptions(
        approvers=approvers,
        max_duration=int(maximum),
        default_duration=int(default),
        reason_required=node.flag("reason_required"),
        notify_url=notify_url,
        notify_secret=Secret(notify_secret.encode()) if notify_secret else None,
        max_stream_duration=stream,
    )
    node.finish(JIT_KEYS)
    return options
