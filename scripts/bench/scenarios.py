"""The scenarios: what answers Envoy's ext_authz call in each, built behind one Envoy listener and
route config, and the check each must pass before it is measured."""

from __future__ import annotations

import base64
import secrets
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import envoys
import extra
import servers
import signin
from measure import Load

from authz.config import parse_config
from authz.dev.certs import write_dev_set
from authz.sessions.redis_store import RedisStore
from authz.sessions.stores import SQLiteStore

REFERENCES = (
    "envoy-only", "envoy-jwt-authn", "ext-authz-limit", "python-floor", "python-floor-sync", "python-floor-http",
)  # fmt: skip
AUTHZ = ("authz-session", "authz-session-nosign", "authz-public", "authz-deny", "authz-login")
# authz-session again from an `authz serve` configured otherwise (each on CPU 1, as every ext_authz
# server, behind an Envoy of its own): measured only when named (--scenario).
VARIANTS: dict[str, dict[str, Any]] = {
    "authz-session-workers2": {"workers": 2},  # both processes on CPU 1
    "authz-session-http": {"ext_authz_transport": "http"},  # Envoy's HTTP ext_authz service
    # No metrics and no decision lines for allows: beside authz-session, what observing costs.
    "authz-session-unobserved": {"metrics_address": None, "authorize_log_sample_rate": 0},
    # Metrics on and 1% of the allows logged: what a high-throughput edge runs.
    "authz-session-sampled": {"authorize_log_sample_rate": 0.01},
    # Envoy → authz over mutual TLS (`internal_tls_*`, the keys added in `internal_tls_keys`).
    "authz-session-mtls": {},
    # Sessions in a redis-server of its own (on CPU 0, beside Envoy), alice's copied there.
    "authz-session-redis": {},
}
MUTUAL_TLS = ("authz-session-mtls",)
WORKERS = tuple(VARIANTS)
SCENARIOS = (*REFERENCES, *AUTHZ)
SMOKE = ("envoy-only", "python-floor", "python-floor-http", "authz-session")  # --smoke: one of each kind
CANDIDATES = ("python-floor-uvloop",)  # transport candidates, measured only when named (--scenario)
FLOORS = {"python-floor": "aio", "python-floor-sync": "threads", "python-floor-uvloop": "uvloop"}
# Envoy's HTTP ext_authz (http_service, not grpc_service) against a do-nothing Python HTTP server.
HTTP_FLOORS = {"python-floor-http": "uvloop"}
UVLOOP = ("python-floor-uvloop", "python-floor-http")


@dataclass(frozen=True)
class Scenario:
    """A load, the Envoy and ext_authz server (None: none) whose CPU it is charged, and which
    identity headers the upstream must (True) or must not (False) receive."""

    name: str
    load: Load
    envoy_pid: int
    server_pid: int | None
    upstream_gets: tuple[tuple[str, bool], ...] = (("assertion", False), ("email", False))
    refusals: str = ""  # what was already checked to be refused when it was built


def build(tmp: Path, names: list[str], procs: list[Any]) -> dict[str, Scenario]:
    """Start what the scenarios need (each process goes into `procs` as it starts, so a failure
    half-way stops what was started)."""
    if any(name in UVLOOP for name in names) and not extra.have("uvloop"):
        raise SystemExit("uvloop could not be installed: pip install '.[bench]'")
    up, up_port = servers.upstream(tmp)
    procs.append(up)
    idp_port, client_secret = servers.free_port(), secrets.token_urlsafe(24)
    base = signin.authz_config(tmp, up_port, servers.free_port(), f"http://localhost:{idp_port}", client_secret)
    app = signin.APP_HOST
    out: dict[str, Scenario] = {}

    def start_envoy(
        name: str, grpc_port: int | None, jwt_authn: str | None = None, http_ext_authz: int | None = None
    ) -> tuple[int, int]:
        config = {**base, "address": f"127.0.0.1:{servers.free_port()}"}
        if grpc_port:
            config["grpc_address"] = f"127.0.0.1:{grpc_port}"
        with_ext_authz = grpc_port is not None or http_ext_authz is not None
        proc, port = envoys.envoy_for(
            tmp, name, config, with_ext_authz=with_ext_authz, jwt_authn=jwt_authn, http_ext_authz=http_ext_authz
        )
        procs.append(proc)
        return proc.pid, port

    if "envoy-only" in names:
        pid, port = start_envoy("envoy-only", None)
        out["envoy-only"] = Scenario("envoy-only", Load(port, app), pid, None)
    if "envoy-jwt-authn" in names:
        jwks, token, outsider = envoys.bench_jwt()
        pid, port = start_envoy("envoy-jwt-authn", None, jwt_authn=jwks)
        # It does check: no token, no entry (401); a valid token without the claim, refused by RBAC (403).
        refused = {
            "no token": (Load(port, app), 401),
            "an example.org token": (Load(port, app, ((envoys.JWT_HEADER, outsider),)), 403),
        }
        for what, (load, status) in refused.items():
            if status_of(load)[0] != status:
                raise SystemExit(f"envoy-jwt-authn: {what} was not refused with {status}")
        load = Load(port, app, ((envoys.JWT_HEADER, token),))
        refusals = ", ".join(f"{what} ({status})" for what, (_, status) in refused.items())
        out["envoy-jwt-authn"] = Scenario("envoy-jwt-authn", load, pid, None, refusals=refusals)
    if "ext-authz-limit" in names:
        canned, canned_port = servers.canned_ext_authz(tmp)
        procs.append(canned)
        pid, port = start_envoy("ext-authz-limit", canned_port)
        out["ext-authz-limit"] = Scenario("ext-authz-limit", Load(port, app), pid, canned.pid)
    for name, transport in FLOORS.items():
        if name in names:
            floor, floor_port = servers.python_floor(tmp, transport)
            procs.append(floor)
            pid, port = start_envoy(name, floor_port)
            out[name] = Scenario(name, Load(port, app), pid, floor.pid)
    for name, transport in HTTP_FLOORS.items():
        if name in names:
            floor, floor_port = servers.python_floor(tmp, transport, "http_floor.py")
            procs.append(floor)
            pid, port = start_envoy(name, None, http_ext_authz=floor_port)
            # Envoy does ask it: the floor refuses /_refuse, and Envoy passes its 403 on.
            if status_of(Load(port, app, path="/_refuse"))[0] != 403:
                raise SystemExit(f"{name}: the HTTP floor's 403 for /_refuse did not come through Envoy")
            out[name] = Scenario(name, Load(port, app), pid, floor.pid, refusals="/_refuse (403)")
    if any(name in AUTHZ or name in WORKERS for name in names):
        variants = [name for name in VARIANTS if name in names]
        out.update(authz_scenarios(tmp, base, idp_port, client_secret, procs, variants))
    return {name: out[name] for name in names}


def authz_scenarios(
    tmp: Path, base: dict[str, Any], idp_port: int, client_secret: str, procs: list[Any], variants: list[str]
) -> dict[str, Scenario]:
    """authz behind its own generated Envoy, with alice signed in through the real IdP."""
    why = servers.idp_unavailable()
    if why:
        raise SystemExit(f"the authz scenarios sign in through the local IdP, which cannot run: {why}")
    procs.append(
        servers.start_idp(idp_port, tmp, [f"{base['authenticate_service_url']}/oauth2/callback"], client_secret)
    )
    envoy_proc, port = envoys.envoy_for(tmp, "authz", base)  # writes authz.config.yaml
    procs.append(envoy_proc)
    authz = servers.authz(tmp, tmp / "authz.config.yaml", int(base["grpc_address"].rsplit(":", 1)[1]))
    procs.append(authz)
    cookies = signin.sign_in(port, [signin.APP_HOST, signin.NOSIGN_HOST, signin.DENY_HOST])

    def jar(host: str) -> tuple[tuple[str, str], ...]:
        return (("Cookie", f"_pomerium={cookies[host]}"),)

    def scenario(name: str, load: Load, *gets: tuple[str, bool]) -> Scenario:
        return Scenario(name, load, envoy_proc.pid, authz.pid, gets or Scenario.upstream_gets)

    app = signin.APP_HOST
    out = {
        s.name: s
        for s in (
            scenario("authz-session", Load(port, app, jar(app)), ("assertion", True), ("email", True)),
            scenario("authz-session-nosign", Load(port, signin.NOSIGN_HOST, jar(signin.NOSIGN_HOST))),
            scenario("authz-public", Load(port, signin.PUBLIC_HOST), ("assertion", True), ("email", False)),
            scenario("authz-deny", Load(port, signin.DENY_HOST, jar(signin.DENY_HOST), expect=403)),
            scenario("authz-login", Load(port, app, (("Accept", "text/html"),), expect=302)),
        )
    }
    for variant in variants:
        # The same secrets and store, so alice's cookie opens there too; its own Envoy and ports.
        grpc = servers.free_ports(2)
        config = {
            **base,
            "grpc_address": f"127.0.0.1:{grpc}",
            "http_address": f"127.0.0.1:{servers.free_port()}",
            "metrics_address": f"127.0.0.1:{servers.free_port()}",
            "address": f"127.0.0.1:{servers.free_port()}",
            **VARIANTS[variant],
        }
        if variant in MUTUAL_TLS:
            config.update(internal_tls_keys(tmp))
        if variant == "authz-session-redis":
            config["session_store"] = redis_copy(tmp, base, procs)
        config = {key: value for key, value in config.items() if value is not None}  # None: a key left out
        envoy2, port2 = envoys.envoy_for(tmp, variant, config)
        procs.append(envoy2)
        authz2 = servers.authz(tmp, tmp / f"{variant}.config.yaml", grpc, name=variant)
        procs.append(authz2)
        # With several workers Envoy health-checks them every 2 s: it sends Checks once it has seen them serve.
        load = Load(port2, app, jar(app))
        servers.wait_until(lambda: status_of(load)[0] == 200, 15, f"{variant} ready in Envoy", authz2.popen)  # noqa: B023
        out[variant] = Scenario(variant, load, envoy2.pid, authz2.pid, (("assertion", True), ("email", True)))
    return out


def redis_copy(tmp: Path, base: dict[str, Any], procs: list[Any]) -> str:
    """A redis-server (Debian's, nothing persisted) holding a copy of the SQLite store's sessions."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("authz-session-redis needs redis-server (apt-get install redis-server)")
    port = servers.free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)]
    proc = servers.spawn("redis-server", argv, tmp, servers.ENVOY_CPU)
    procs.append(proc)
    servers.wait_port(proc, port)
    url = f"redis://127.0.0.1:{port}/0"
    secret = base64.b64decode(base["cookie_secret"])
    source = SQLiteStore(base["session_store"][len("sqlite://") :], secret=secret)
    target = RedisStore(parse_config({**base, "session_store": url}).redis, secret=secret)  # type: ignore[arg-type]
    for listed in source.sessions():
        found = source.get(listed.id)
        if found is not None:
            target.put(found)
    source.close()
    target.close()
    return url


def internal_tls_keys(tmp: Path) -> dict[str, str]:
    """A throwaway CA, authz's and Envoy's certificates (`authz certs dev`'s set) and the keys naming them."""
    paths = write_dev_set(tmp / "internal-tls")
    return {
        "internal_tls_certificate_file": str(paths["authz"]),
        "internal_tls_key_file": str(paths["authz_key"]),
        "internal_tls_client_ca_file": str(paths["ca"]),
        "internal_tls_envoy_certificate_file": str(paths["envoy"]),
        "internal_tls_envoy_key_file": str(paths["envoy_key"]),
        "internal_tls_ca_file": str(paths["ca"]),
        "internal_tls_client_san": "envoy",  # each Check's peer certificate checked, as operated
    }


def status_of(load: Load, path: str | None = None) -> tuple[int, dict[str, str], str]:
    """One request as the load tool sends it, redirects not followed: status, headers, body."""
    request = urllib.request.Request(f"http://127.0.0.1:{load.port}{path or load.path}")
    request.add_header("Host", load.host)
    for name, value in load.headers:
        request.add_header(name, value)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as response:
            return response.status, _lower(response.headers.items()), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, _lower(exc.headers.items()), exc.read().decode(errors="replace")
    except (OSError, urllib.error.URLError) as exc:  # refused, reset, or no answer in 10 s
        raise SystemExit(f"{request.full_url} (Host {load.host}) got no answer: {exc}") from None


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


def check(scenario: Scenario) -> str:
    """Before measuring: the scenario answers what it should, a 302 goes to sign in, and what reaches
    the upstream carries (or not) the signed assertion and claim headers; what was checked."""
    load = scenario.load
    status, headers, _ = status_of(load)
    if status != load.expect:
        raise SystemExit(f"{scenario.name}: expected {load.expect}, got {status}")
    if status == 302:
        where = headers.get("location", "")
        if "authenticate.bench" not in where:
            raise SystemExit(f"{scenario.name}: the 302 goes to {where!r}, not to sign in")
        return f"302 to sign in ({where.split('?')[0]})"
    if status != 200:
        return str(status)
    _, _, seen = status_of(load, "/_seen/")
    got = dict(line.split("=", 1) for line in seen.splitlines() if "=" in line)
    for header, wanted in scenario.upstream_gets:
        value = got.get(header, "")
        present = value.startswith("eyJ") if header == "assertion" else "@" in value
        if present != wanted:
            raise SystemExit(f"{scenario.name}: the upstream {'got no' if wanted else 'got a'} {header} header")
    got_these = [h for h, want in scenario.upstream_gets if want] or ["no identity header"]
    refused = f"; refused: {scenario.refusals}" if scenario.refusals else ""
    return f"200, upstream got {' and '.join(got_these)}{refused}"
