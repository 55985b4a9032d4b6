"""How authz's own pages look: a name, a logo, a favicon, two colours and an error-page paragraph.

    branding:
      name: Example Corp             # above every page's heading and in its title (default: authz)
      logo_url: https://static.example.com/logo.svg   # shown beside the name
      favicon_url: https://static.example.com/favicon.ico
      primary_color: "#6e43e8"       # buttons and the card's top edge
      secondary_color: "#3b2a8f"     # links
      error_message_first_paragraph: If you need access, ask in #it-help.

Pomerium's keys of the same meaning are read at the top level too (`primary_color`, `secondary_color`,
`logo_url`, `favicon_url`, `error_message_first_paragraph`), so a Pomerium config keeps its look;
one setting given both ways is refused. Pages stay under a strict Content-Security-Policy: the
stylesheet is allowed by its hash and images only from the exact logo and favicon URLs, which is
why those must be plain https URLs (http only on loopback, for development) and colours plain
`#rgb`/`#rrggbb` values that cannot carry CSS of their own.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import urlsplit

from authz.config.model import Branding
from authz.config.ops import is_loopback
from authz.schema.reader import Node, describe

POMERIUM_KEYS = ("primary_color", "secondary_color", "logo_url", "favicon_url", "error_message_first_paragraph")
BRANDING_KEYS = ("branding", *POMERIUM_KEYS)
SUB_KEYS = ("name", *POMERIUM_KEYS)
MAX_NAME = 60
MAX_PARAGRAPH = 500
MAX_URL = 2000
_COLOR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
# What a URL may hold to be written into a CSP source list and an attribute as it is: no space,
# quote, comma or semicolon (CSP separators), no backslash or fragment.
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?&=%+!$*()@\[\]]+")


def _plain_text(value: str) -> bool:
    """No control or format characters (newlines, bidi overrides, zero-width joiners)."""
    return not any(unicodedata.category(c).startswith("C") for c in value)


def _name(node: Node, key: str, value: str) -> str | None:
    text = value.strip()
    if not 1 <= len(text) <= MAX_NAME or not _plain_text(text):
        node.error(key, f"expected 1 to {MAX_NAME} characters of plain text on one line, got {describe(value)}")
        return None
    return text


def _paragraph(node: Node, key: str, value: str) -> str | None:
    text = " ".join(value.split())
    if not 1 <= len(text) <= MAX_PARAGRAPH or not _plain_text(text):
        node.error(key, f"expected 1 to {MAX_PARAGRAPH} characters of plain text, got {describe(value)}")
        return None
    return text


def _color(node: Node, key: str, value: str) -> str | None:
    if not _COLOR.fullmatch(value):
        node.error(key, f"expected a colour as #rgb or #rrggbb, got {describe(value)}")
        return None
    digits = value[1:].lower()
    return "#" + ("".join(c * 2 for c in digits) if len(digits) == 3 else digits)


def _image_url(node: Node, key: str, value: str) -> str | None:
    """An image URL the pages may load: https (http only on a loopback host), no credentials or
    fragment, and only characters a CSP source and an attribute carry as they are."""
    if len(value) > MAX_URL or not _URL_CHARS.fullmatch(value):
        node.error(key, f"expected an https URL of at most {MAX_URL} plain URL characters, got {describe(value)}")
        return None
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 - a bad port raises here
    except ValueError:
        node.error(key, f"is not a URL: {describe(value)}")
        return None
    host = url.hostname or ""
    loopback = is_loopback(host) or host.endswith(".localhost")
    if url.scheme != "https" and not (url.scheme == "http" and loopback):
        node.error(key, f"must be an https URL (http only on a loopback host), got {describe(value)}")
    elif not host or url.username is not None or "@" in url.netloc:
        node.error(key, f"must name a host and carry no user name or password, got {describe(value)}")
    elif ":" in host:
        node.error(
            key, f"an IPv6 address cannot be named in a Content-Security-Policy: use a host name, got {describe(value)}"
        )
    else:
        return value
    return None


_READERS = {
    "name": _name,
    "primary_color": _color,
    "secondary_color": _color,
    "logo_url": _image_url,
    "favicon_url": _image_url,
    "error_message_first_paragraph": _paragraph,
}


def read_branding(node: Node) -> Branding:
    """`branding` and Pomerium's top-level keys of the same meaning, validated."""
    sub = node.child("branding")
    values: dict[str, str] = {}
    for key in SUB_KEYS:
        sources = [(n, f) for n, f in ((sub, key), (node, key if key in POMERIUM_KEYS else "")) if n and f]
        given = [(n, f) for n, f in sources if n.has(f)]
        for n, f in sources:
            n.raw(f)  # read: an unset one is not reported as unknown
        if len(given) > 1:
            node.error(key, f"set either {key} or branding.{key}, not both")
            continue
        if not given:
            continue
        ((where, field_name),) = given
        value = where.text(field_name)
        if value and (checked := _READERS[key](where, field_name, value)) is not None:
            values[key] = checked
    if sub is not None:
        sub.finish(SUB_KEYS)
    return Branding(**values)
