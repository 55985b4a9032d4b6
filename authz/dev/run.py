"""`authz dev`: a local stack (IdP, Envoy, authz serve, a demo app) on one machine, until Ctrl-C."""

from __future__ import annotations

import argparse
import secrets
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

import yaml

from authz.config import parse_config
from authz.dev.demo import start_demo
from authz.dev.stack import Process, free_port, idp_available, port_open, start_authz, start_envoy, start_idp
from authz.envoy.bootstrap import render_bootstrap
from authz.schema import yamlcore
from authz.signing import keys


def dev_config(port: int, grpc: int, http: int, demo: int, work: Path, idp: tuple[int, str] | None) -> dict[str, Any]:
    """The demo config: `*.localhost` hosts, which browsers resolve to loopback by themselves."""
    upstream = f"http://127.0.0.1:{demo}"
    config: dict[str, Any] = {
        "insecure_server": True,
        "address": f"127.0.0.1:{port}",
        "authenticate_service_url": f"http://authenticate.localhost:{port}",
        "grpc_address": f"127.0.0.1:{grpc}",
        "http_address": f"127.0.0.1:{http}",
        **yamlcore.load(keys.keygen()),
        "cookie_secure": False,
        "session_store": f"sqlite://{work / 'sessions.db'}",
        "jwt_claims_headers": ["email", "groups"],
        "routes": [
            {"id": "public", "from": "http://public.localhost", "to": upstream,
             "allow_public_unauthenticated_access": True, "pass_identity_headers": True},
        ],
    }  # fmt: skip
    if idp is not None:
        idp_port, secret = idp
        config.update(idp_provider_url=f"http://localhost:{idp_port}", idp_client_id="authz", idp_client_secret=secret)
        config["routes"].insert(
            0,
            {"id": "app", "from": "http://app.localhost", "to": upstream, "pass_identity_headers": True,
             "policy": {"allow": {"or": [{"domain": {"is": "example.com"}}]}}},
        )  # fmt: skip
    return config


def run_dev(args: argparse.Namespace) -> int:
    port: int = args.port
    if port_open(port):
        print(f"port {port} is already in use; pass --port N")
        return 1
    work = Path(tempfile.mkdtemp(prefix="authz-dev-"))
    grpc, http, admin, idp_port = free_port(), free_port(), free_port(), free_port()
    demo = start_demo(f"http://127.0.0.1:{http}/.well-known/pomerium/jwks.json")
    processes: list[Process] = []
    missing = idp_available()
    idp = None
    if missing is None:
        secret = secrets.token_urlsafe(24)
        auth = f"http://authenticate.localhost:{port}"
        processes.append(
            start_idp(idp_port, work, redirect_uris=[f"{auth}/oauth2/callback"], client_secret=secret,
                      post_logout_redirect_uris=[f"{auth}/.pomerium/signed_out"], ttl={"AccessToken": 300})
        )  # fmt: skip
        idp = (idp_port, secret)
    config = dev_config(port, grpc, http, demo.server_address[1], work, idp)
    config_path = work / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    bootstrap = work / "envoy.yaml"
    bootstrap.write_text(render_bootstrap(parse_config(config, str(config_path), work), f"127.0.0.1:{admin}"))
    try:
        processes.append(start_authz(config_path, http, work))
        processes.append(start_envoy(bootstrap, admin, work))
    except Exception:
        for proc in reversed(processes):
            proc.stop()
        demo.shutdown()
        raise
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if idp is not None:
        print(f"\n  authz dev is running. Open:  http://app.localhost:{port}/")
        print("  Sign in as alice or bob (any password); mallory signs in but is denied (not example.com).")
    else:
        print(f"\n  authz dev is running (no sign-in: {missing}). Open:  http://public.localhost:{port}/")
    print(f"  A public page: http://public.localhost:{port}/   Config, Envoy bootstrap and logs: {work}")
    print("  Ctrl-C stops everything.\n", flush=True)
    try:
        while not stop.wait(0.5):
            for proc in processes:
                if proc.proc.poll() is not None:
                    print(f"{proc.name} exited ({proc.proc.returncode}); see {proc.log_path}")
                    stop.set()
    finally:
        for proc in reversed(processes):
            proc.stop()
        demo.shutdown()
    return 0
