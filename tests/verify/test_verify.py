"""authz.verify, the upstream verifier, against a JWKS served over HTTP as the sidecar serves it:
valid, expired, wrong audience or issuer, unknown key id (fetched again once, rate-limited), `alg:
none`, HS256 keyed with the public key, an anonymous assertion, the JWKS cache's lifetime, key
rotation; the ASGI and WSGI middlewares; and that it imports only the standard library and PyJWT."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from authz.signing.assertion import sign
from authz.signing.keys import SigningKey, generate_p256_pem, generate_rsa_pem, jwks_document, load_signing_keys
from authz.verify import AssertionMiddleware, Identity, InvalidAssertion, Verifier, WSGIAssertionMiddleware

HOST = "app.example.com"


def key(pem: bytes | None = None) -> SigningKey:
    (made,) = load_signing_keys((pem or generate_p256_pem()).decode())
    return made


class Jwks:
    """A JWKS endpoint whose keys and Cache-Control a test changes; it counts its fetches."""

    def __init__(self, keys: tuple[SigningKey, ...]) -> None:
        self.keys, self.cache_control, self.fetches, self.down = keys, "max-age=300", 0, False
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                if jwks.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps(jwks_document(jwks.keys)).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("cache-control", jwks.cache_control)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/pomerium/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def signer() -> SigningKey:
    return key()


@pytest.fixture
def jwks(signer: SigningKey) -> Iterator[Jwks]:
    made = Jwks((signer,))
    yield made
    made.server.shutdown()
    made.server.server_close()


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": HOST, "aud": HOST, "iat": now, "exp": now + 300, "sub": "alice", "email": "alice@example.com",
            "name": "Alice", "groups": ["admins"], "jti": "1", **overrides}  # fmt: skip


def verifier(jwks: Jwks, **options: Any) -> Verifier:
    return Verifier(jwks.url, audience=HOST, issuer=HOST, **options)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_valid_assertion_gives_its_identity(jwks: Jwks, signer: SigningKey) -> None:
    identity = verifier(jwks).verify(sign(signer, claims()))
    assert (identity.sub, identity.email, identity.name, identity.groups) == (
        "alice",
        "alice@example.com",
        "Alice",
        ("admins",),
    )
    rsa = key(generate_rsa_pem())
    jwks.keys = (signer, rsa)
    assert verifier(jwks).verify(sign(rsa, claims())).sub == "alice"  # RS256 too


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"aud": "other.example.com"}, "(?i)audience"),
        ({"iss": "other.example.com"}, "(?i)issuer"),
        ({"iat": int(time.time()) + 600}, "not yet valid"),
        ({"sub": ""}, "names no user"),
        ({"sub": 7}, "(?i)subject must be a string"),
    ],
)
def test_refused(jwks: Jwks, signer: SigningKey, changes: dict[str, Any], why: str) -> None:
    with pytest.raises(InvalidAssertion, match=why):
        verifier(jwks).verify(sign(signer, claims(**changes)))


def test_a_missing_claim_is_refused(jwks: Jwks, signer: SigningKey) -> None:
    for missing in ("exp", "iat", "aud", "iss"):
        token = sign(signer, {k: v for k, v in claims().items() if k != missing})
        with pytest.raises(InvalidAssertion, match=missing):
            verifier(jwks).verify(token)


def test_anonymous_only_when_allowed(jwks: Jwks, signer: SigningKey) -> None:
    token = sign(signer, claims(sub="", email="", groups=[]))
    assert verifier(jwks, allow_anonymous=True).verify(token).anonymous


def test_alg_none_and_hs256_keyed_with_the_public_key(jwks: Jwks, signer: SigningKey) -> None:
    body = b64(json.dumps(claims()).encode())
    none = f"{b64(json.dumps({'alg': 'none', 'kid': signer.kid}).encode())}.{body}."
    with pytest.raises(InvalidAssertion, match="algorithm 'none'"):
        verifier(jwks).verify(none)
    # The classic confusion: an HMAC keyed with the public key, which anyone can fetch.
    public_pem = signer.private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'kid': signer.kid}).encode())}.{body}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{b64(mac)}"
    with pytest.raises(InvalidAssertion, match="HS256"):
        verifier(jwks).verify(forged)
    with pytest.raises(ValueError, match="asymmetric"):
        Verifier(jwks.url, audience=HOST, issuer=HOST, algorithms=["HS256"])
    rsa = key(generate_rsa_pem())
    jwks.keys = (signer, rsa)
    mixed = sign(rsa, claims()).split(".")  # an RS256 signature presented under the EC key's id
    header = b64(json.dumps({"alg": "RS256", "kid": signer.kid, "typ": "JWT"}).encode())
    with pytest.raises(InvalidAssertion, match="not a RS256 key"):
        verifier(jwks).verify(".".join([header, mixed[1], mixed[2]]))


def test_required_arguments_and_a_plain_jwks_url_elsewhere() -> None:
    with pytest.raises(ValueError, match="audience and issuer"):
        Verifier("https://x/.well-known/pomerium/jwks.json", audience="", issuer=HOST)
    with pytest.raises(ValueError, match="https"):
        Verifier("http://app.example.com/.well-known/pomerium/jwks.json", audience=HOST, issuer=HOST)


def test_the_jwks_is_cached_for_its_max_age_and_an_unknown_kid_fetches_once(jwks: Jwks, signer: SigningKey) -> None:
    clock = Clock()
    check = verifier(jwks, clock=clock)
    token = sign(signer, claims())
    for _ in range(20):
        check.verify(token)
    assert jwks.fetches == 1
    clock.now += 299
    check.verify(token)
    assert jwks.fetches == 1
    clock.now += 2  # past max-age
    check.verify(token)
    assert jwks.fetches == 2
    # Forged key ids, just after a fetch: refused without asking the JWKS again …
    for _ in range(50):
        with pytest.raises(InvalidAssertion, match="no published key"):
            check.verify(sign(key(), claims()))
    assert jwks.fetches == 2
    # … and later, one fetch for the first of them, then none until refetch_interval has passed.
    clock.now += 11
    for _ in range(50):
        with pytest.raises(InvalidAssertion, match="no published key"):
            check.verify(sign(key(), claims()))
    assert jwks.fetches == 3
    check.verify(token)  # the known key needs no fetch
    assert jwks.fetches == 3


def test_rotation_a_new_key_is_found_on_its_first_use(jwks: Jwks, signer: SigningKey) -> None:
    clock = Clock()
    check = verifier(jwks, clock=clock)
    check.verify(sign(signer, claims()))
    successor = key()
    jwks.keys = (successor, signer)  # published beside the old one, then signing
    clock.now += 11
    assert check.verify(sign(successor, claims())).sub == "alice"
    assert check.verify(sign(signer, claims())).sub == "alice"  # the old one still, until retired


def test_a_jwks_briefly_away_keeps_the_known_keys(jwks: Jwks, signer: SigningKey) -> None:
    clock = Clock()
    check = verifier(jwks, clock=clock)
    token = sign(signer, claims())
    check.verify(token)
    jwks.down = True
    clock.now += 400  # stale, and the endpoint answers 503
    assert check.verify(token).sub == "alice"
    fresh = Verifier(jwks.url, audience=HOST, issuer=HOST)
    with pytest.raises(InvalidAssertion, match="JWKS could not be fetched"):
        fresh.verify(token)  # never fetched: nothing to trust


@pytest.mark.parametrize("body", [b"[]", b"not json", b'{"keys": 7}', b"{" + b" " * 300_000 + b"}"])
def test_a_jwks_that_is_no_jwks_is_refused_cleanly(signer: SigningKey, body: bytes) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check = Verifier(f"http://127.0.0.1:{server.server_address[1]}/jwks", audience=HOST, issuer=HOST)
        with pytest.raises(InvalidAssertion, match="JWKS could not be fetched"):
            check.verify(sign(signer, claims()))
    finally:
        server.shutdown()
        server.server_close()


def test_the_asgi_middleware(jwks: Jwks, signer: SigningKey) -> None:
    seen: list[Identity] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["state"]["identity"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = AssertionMiddleware(app, verifier(jwks))

    def call(headers: list[tuple[bytes, bytes]]) -> int:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
        asyncio.run(wrapped(scope, None, send))
        return int(sent[0]["status"])

    token = sign(signer, claims()).encode()
    assert call([(b"x-pomerium-jwt-assertion", token)]) == 200 and seen[0].sub == "alice"
    assert call([]) == 401
    assert call([(b"x-pomerium-jwt-assertion", token), (b"x-pomerium-jwt-assertion", token)]) == 401
    assert call([(b"x-pomerium-jwt-assertion", sign(signer, claims(aud="b.example.com")).encode())]) == 401
    assert len(seen) == 1  # no refused request reached the app


def test_the_wsgi_middleware(jwks: Jwks, signer: SigningKey) -> None:
    seen: list[Identity] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ["authz.identity"])
        start_response("200 OK", [])
        return [b"ok"]

    wrapped = WSGIAssertionMiddleware(app, verifier(jwks))
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        statuses.append(status)

    wrapped({"HTTP_X_POMERIUM_JWT_ASSERTION": sign(signer, claims())}, start_response)
    wrapped({}, start_response)
    wrapped({"HTTP_X_POMERIUM_JWT_ASSERTION": "not.a.jwt"}, start_response)
    assert statuses == ["200 OK", "401 Unauthorized", "401 Unauthorized"] and [i.sub for i in seen] == ["alice"]


def base_install(tmp_path: Path) -> Path:
    """A folder holding what `pip install authz` without extras installs: authz's package (its
    verifier and console-script shim among it), PyJWT and cryptography (with cffi)."""
    site = next(Path(p) for p in sys.path if p.endswith("site-packages") and (Path(p) / "jwt").is_dir())
    only = tmp_path / "only"
    only.mkdir()
    for name in ("jwt", "cryptography", "cffi"):
        (only / name).symlink_to(site / name)
    for backend in site.glob("_cffi_backend*"):
        (only / backend.name).symlink_to(backend)
    (only / "authz").symlink_to(Path(__file__).resolve().parents[2] / "authz")
    return only


def isolated(only: Path, code: str) -> subprocess.CompletedProcess[str]:
    """`code` in an interpreter that sees the standard library and `only`, nothing else (-I -S)."""
    script = f"import sys; sys.path.insert(0, {str(only)!r}); {code}"
    return subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, check=False)


def test_it_imports_only_the_standard_library_and_pyjwt(tmp_path: Path) -> None:
    out = isolated(base_install(tmp_path), (
        "import authz.verify as v; v.Verifier('https://a.example/jwks', audience='a', issuer='a'); "
        "third = sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names) - {'authz', 'jwt', "
        "'cryptography', 'cffi', '_cffi_backend', '_openssl', '__main__'}); print(third)"
    ))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_without_the_server_extra_the_command_says_what_to_install(tmp_path: Path) -> None:
    out = isolated(base_install(tmp_path), "from authz.command import main; raise SystemExit(main())")
    assert out.returncode == 1 and "pip install 'authz[server]'" in out.stderr and "Traceback" not in out.stderr


def test_the_base_distribution_depends_on_pyjwt_alone() -> None:
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    assert [d.split(">")[0] for d in project["dependencies"]] == ["pyjwt[crypto]"]
    assert "grpcio==1.85.1" in project["optional-dependencies"]["server"]
