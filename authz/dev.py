"""`authz dev`: a local stack (Envoy, authz serve, a demo app) on one machine, until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

import yaml

from authz import keys, yamlcore
from authz.config import parse_config
from authz.demo import start_demo
from authz.envoy_config import render_bootstrap
from authz.stack import free_port, port_open, start_authz, start_envoy


def dev_config(port: int, grpc: int, http: int, demo: int, work: Path) -> dict[str, Any]:
    """The demo config: `*.localhost` hosts, which browsers resolve to loopback by themselves."""
    secrets_ = yamlcore.load(keys.keygen())
    upstream = f"http://127.0.0.1:{demo}"
    return {
        "insecure_server": True,
        "address": f"127.0.0.1:{port}",
        "authenticate_service_url": f"http://authenticate.localhost:{port}",
        "grpc_address": f"127.0.0.1:{grpc}",
        "http_address": f"127.0.0.1:{http}",
        **secrets_,
        "cookie_secure": False,
        "session_store": f"sqlite://{work / 'sessions.db'}",
        "jwt_claims_headers": ["email", "groups"],
        "routes": [
            {"id": "demo", "from": "http://app.localhost", "to": upstream,
             "allow_public_unauthenticated_access": True, "pass_identity_headers": True},
        ],
    }  # fmt: skip


def run_dev(args: argparse.Namespace) -> int:
    port: int = args.port
    if port_open(port):
        print(f"port {port} is already in use; pass --port N")
        return 1
    work = Path(tempfile.mkdtemp(prefix="authz-dev-"))
    grpc, http, admin = free_port(), free_port(), free_port()
    demo = start_demo(f"http://127.0.0.1:{http}/.well-known/pomerium/jwks.json")
    config = dev_config(port, grpc, http, demo.server_address[1], work)
    config_path = work / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    bootstrap = work / "envoy.yaml"
    bootstrap.write_text(render_bootstrap(parse_config(config, str(config_path), work), f"127.0.0.1:{admin}"))
    authz = start_authz(config_path, http, work)
    try:
        envoy = start_envoy(bootstrap, admin, work)
    except Exception:
        authz.stop()
        raise
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"\n  authz dev is running. Open:  http://app.localhost:{port}/\n")
    print(f"  config, Envoy bootstrap and logs: {work}\n  Ctrl-C stops everything.\n", flush=True)
    try:
        while not stop.wait(0.5):
            for proc in (authz, envoy):
                if proc.proc.poll() is not None:
                    print(f"{proc.name} exited ({proc.proc.returncode}); see {proc.log_path}")
                    stop.set()
    finally:
        envoy.stop()
        authz.stop()
        demo.shutdown()
    return 0
