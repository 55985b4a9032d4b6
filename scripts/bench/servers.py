"""The processes a benchmark run needs besides Envoy: nginx (the upstream, and a canned ext_authz
answer), the Python floors and the IdP, each pinned where the run says.

Envoy runs on CPU 0 and every ext_authz server (authz, the floors and the canned nginx alike) on
CPU 1, so each scenario gives the auth part the same core; the load tool and the upstream take what
is left (on a 2-core host they compete with both).
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from authz._proto.envoy.service.auth.v3 import external_auth_pb2 as pb  # noqa: E402
from authz.dev import stack as _stack  # noqa: E402
from authz.dev.stack import Process, http_ok, idp_available, port_open, wait_until  # noqa: E402
from authz.dev.stack import start_idp as _start_idp  # noqa: E402

ENVOY_CPU, AUTHZ_CPU = "0", "1"
# Ports handed out in this run: a port picked early (authz's, in the config) is only bound when its
# server starts, so a later pick must never get it again.
_HANDED: set[int] = set()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 that this run has not handed out before."""
    while (port := _stack.free_port()) in _HANDED:
        pass
    _HANDED.add(port)
    return port


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports, none handed out before in this run."""
    while True:
        first = _stack.free_ports(count)
        ports = set(range(first, first + count))
        if not ports & _HANDED:
            _HANDED.update(ports)
            return first


__all__ = ["AUTHZ_CPU", "ENVOY_CPU", "ROOT", "Proc", "free_port", "free_ports", "spawn", "wait_port", "wait_until"]


@dataclass
class Proc:
    """A process this run started, its output in a log file under the run's temp dir."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def spawn(name: str, argv: list[str], tmp: Path, cpu: str | None = None) -> Proc:
    """Start `argv` (pinned to `cpu` with taskset when given), its output in `<tmp>/<name>.log`."""
    log = tmp / f"{name}.log"
    command = ["taskset", "-c", cpu, *argv] if cpu is not None else argv
    with log.open("wb") as out:
        popen = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ))
    return Proc(name, popen, log)


def wait_port(proc: Proc, port: int, timeout: float = 30.0) -> None:
    """Wait until `proc` listens on `port`; exit with its log if it dies or never does."""
    try:
        wait_until(lambda: port_open(port), timeout, proc.name, proc.popen)
    except (RuntimeError, TimeoutError) as exc:
        proc.stop()
        raise SystemExit(f"{proc.name} did not start: {exc}\n{proc.log.read_text(errors='replace')[-2000:]}") from None


def nginx(tmp: Path, name: str, server_block: str, cpu: str | None) -> Proc:
    """One nginx (one worker, in the foreground) with one server block."""
    home = tmp / name
    (home / "body").mkdir(parents=True, exist_ok=True)
    conf = home / "nginx.conf"
    conf.write_text(
        f"daemon off;\nmaster_process off;\nworker_processes 1;\nuser root;\npid {home}/nginx.pid;\n"
        f"error_log {home}/error.log warn;\nevents {{ worker_connections 8192; }}\n"
        # Connections stay open for the whole run (the default closes them after 1000 requests).
        f"http {{\n  access_log off;\n  keepalive_requests 100000000;\n  keepalive_timeout 3600s;\n"
        f"  client_body_temp_path {home}/body;\n{server_block}\n}}\n"
    )
    if os.geteuid() != 0:  # `user` is only allowed to root
        conf.write_text(conf.read_text().replace("user root;\n", ""))
    return spawn(name, ["nginx", "-c", str(conf), "-p", str(home)], tmp, cpu)


def upstream(tmp: Path) -> tuple[Proc, int]:
    """The app behind every route, shared by all scenarios: a 200 with a small body."""
    port = free_port()
    block = (
        f"  server {{\n    listen 127.0.0.1:{port};\n"
        '    location / { return 200 "hello from the app\\n"; }\n'
        # For the checks before a run: the identity headers this request reached the app with.
        '    location /_seen/ { return 200 "assertion=$http_x_pomerium_jwt_assertion\\n'
        'email=$http_x_pomerium_claim_email\\n"; }\n  }'
    )
    proc = nginx(tmp, "upstream", block, None)
    wait_port(proc, port)
    return proc, port


def canned_ok_frame() -> bytes:
    """One gRPC message (gRPC over HTTP/2: a 0 compression flag, a 4-byte big-endian length, the
    protobuf) holding a CheckResponse with status OK and an empty ok_response."""
    response = pb.CheckResponse()
    response.status.SetInParent()  # google.rpc.Status code 0: OK
    response.ok_response.SetInParent()
    body = response.SerializeToString()
    return b"\0" + len(body).to_bytes(4, "big") + body


def canned_ext_authz(tmp: Path) -> tuple[Proc, int]:
    """nginx answering every Check with the canned OK over h2c, `grpc-status: 0` as a trailer: what
    an ext_authz service that costs nothing would give (a POST to a static file is a 405, which
    error_page turns into the frame)."""
    port = free_port()
    home = tmp / "ext-authz-limit"
    home.mkdir(parents=True, exist_ok=True)
    (home / "ok.grpc").write_bytes(canned_ok_frame())
    block = (
        f"  server {{\n    listen 127.0.0.1:{port} http2;\n    root {home};\n"
        "    location / { error_page 405 =200 /ok.grpc; return 405; }\n"
        "    location = /ok.grpc { internal; default_type application/grpc; add_trailer grpc-status 0 always; }\n"
        "  }"
    )
    proc = nginx(tmp, "ext-authz-limit-nginx", block, AUTHZ_CPU)
    wait_port(proc, port)
    return proc, port


def python_floor(tmp: Path, transport: str, script: str = "floor.py") -> tuple[Proc, int]:
    """A do-nothing ext_authz (floor.py: gRPC; http_floor.py: HTTP) on `transport`, pinned with
    authz's core."""
    port = free_port()
    argv = [sys.executable, str(Path(__file__).with_name(script)), transport, str(port)]
    proc = spawn(f"{Path(script).stem}-{transport}", argv, tmp, AUTHZ_CPU)
    wait_port(proc, port)
    return proc, port


def authz(tmp: Path, config: Path, grpc_port: int, name: str = "authz") -> Proc:
    """`authz serve` from this checkout, as deployed (its default transport; the config's workers,
    all on CPU 1 like every ext_authz server), waited on until every worker serves (/healthz)."""
    proc = spawn(name, [sys.executable, "-m", "authz", "serve", "-c", str(config)], tmp, AUTHZ_CPU)
    wait_port(proc, grpc_port, timeout=60)
    settings = yaml.safe_load(config.read_text())
    http, tls = settings["http_address"], _probe_tls(settings)
    url = f"{'https' if tls else 'http'}://{http}/healthz"
    wait_until(lambda: http_ok(url, tls), 60, name, proc.popen)
    return proc


def _probe_tls(settings: dict[str, Any]) -> ssl.SSLContext | None:
    """With `internal_tls_*`, the web layer wants Envoy's client certificate: the probe presents it."""
    if "internal_tls_envoy_certificate_file" not in settings:
        return None
    context = ssl.create_default_context(cafile=settings["internal_tls_ca_file"])
    context.load_cert_chain(settings["internal_tls_envoy_certificate_file"], settings["internal_tls_envoy_key_file"])
    return context


def idp_unavailable() -> str | None:
    """Why the local IdP (idp/, oidc-provider) cannot run here, or None."""
    return idp_available()


def start_idp(port: int, tmp: Path, redirect_uris: list[str], client_secret: str) -> Process:
    """The real npm IdP of the dev stack, its tokens valid for longer than any run."""
    return _start_idp(port, tmp, redirect_uris=redirect_uris, client_secret=client_secret,
                      ttl={"AccessToken": 3600, "IdToken": 3600})  # fmt: skip
