"""An HTTP client that reaches `*.localhost` on 127.0.0.1 while keeping each URL's host.

Python does not resolve `*.localhost`; browsers do. This transport connects to 127.0.0.1 but
leaves the request's URL (and so Host, cookies and redirects) as the browser would have it.
"""

from __future__ import annotations

from html.parser import HTMLParser

import httpx2


class LoopbackTransport(httpx2.HTTPTransport):
    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        host = request.url.host
        if host == "localhost" or host.endswith(".localhost"):
            # A copy goes to 127.0.0.1; the client keeps the original request (URL, Host, cookies).
            request = httpx2.Request(
                request.method,
                request.url.copy_with(host="127.0.0.1"),
                headers=request.headers,
                stream=request.stream,
                extensions=request.extensions,
            )
        return super().handle_request(request)


def browser(**kwargs: object) -> httpx2.Client:
    """A cookie-keeping client that follows redirects, as a browser would, with HTML Accept."""
    return httpx2.Client(
        transport=LoopbackTransport(),
        follow_redirects=True,
        headers={"accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"},
        timeout=20,
        **kwargs,  # type: ignore[arg-type]
    )


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, object]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": values.get("action", ""), "method": values.get("method", "get"), "fields": {}})
        elif tag == "input" and self.forms and values.get("name"):
            fields = self.forms[-1]["fields"]
            assert isinstance(fields, dict)
            fields[values["name"]] = values.get("value", "")


def forms(html: str) -> list[dict[str, object]]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


def idp_login(client: httpx2.Client, page: httpx2.Response, user: str) -> httpx2.Response:
    """Fill oidc-provider's development login form on `page` and follow where it leads."""
    (form,) = [f for f in forms(page.text) if "login" in f["fields"]]  # type: ignore[operator]
    fields = dict(form["fields"])  # type: ignore[call-overload]
    fields.update({"login": user, "password": "any"})
    return client.post(page.url.join(str(form["action"])), data=fields)
