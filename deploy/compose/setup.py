"""The compose stack's one-shot `setup` service: throwaway certificates, secrets and Envoy's config.

Runs in the authz image as root on every `docker compose up`, before the others start. The first
run fills the `state` volume; later runs keep every key and certificate and only write Envoy's
config again, from deploy/compose/authz.yaml as it is now. `docker compose down -v` starts over.

Each reader gets its own folder, owned by the user its image runs as, so no container can read
another's keys:

    authz/       10001 (authz)       secrets, signing key, authz's mutual-TLS certificate
    envoy/       101 (envoy), group 10001   envoy.yaml, the edge's and Envoy's client certificate;
                                     authz may read the edge's (it checks that key at load) and
                                     nothing else there
    idp/         1000 (node)         the development IdP's settings and client secret
    prometheus/  65534 (nobody)      the metrics password
    public/      everyone            the CA, and the CA with the system's (SSL_CERT_FILE for authz)

The CA's key is not kept: nothing can be signed by it after this run. Never for production.

    python setup.py [--state /etc/authz] [--config /config/authz.yaml]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from authz.dev.certs import authority, issue
from authz.signing.keys import generate_p256_pem

AUTHZ, ENVOY, NODE, NOBODY = 10001, 101, 1000, 65534
SYSTEM_CAS = Path("/etc/ssl/certs/ca-certificates.crt")  # the Debian bundle of the authz image
FOLDERS = {"authz": (AUTHZ, AUTHZ, 0o700), "envoy": (ENVOY, AUTHZ, 0o750), "idp": (NODE, NODE, 0o700),
           "prometheus": (NOBODY, NOBODY, 0o700), "public": (0, 0, 0o755)}  # fmt: skip
PUBLIC = 0o644


def _token() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _write(state: Path, name: str, data: bytes | str, mode: int | None = None) -> None:
    """Write `state/name` with its folder's owner: readable by that owner only (or its group, or
    everyone for `mode=PUBLIC`) from the first byte."""
    folder = name.split("/")[0]
    uid, gid, folder_mode = FOLDERS[folder]
    if mode is None:
        mode = 0o640 if folder_mode & 0o050 else 0o600
    path = state / name
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(handle, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)
    if os.geteuid() == 0:
        os.chown(path, uid, gid)


def _folders(state: Path) -> None:
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o755)  # noqa: S103 - anyone may enter; each folder below guards itself
    for folder, (uid, gid, mode) in FOLDERS.items():
        path = state / folder
        path.mkdir(exist_ok=True)
        os.chmod(path, mode)
        if os.geteuid() == 0:
            os.chown(path, uid, gid)


def _edge_names(config: dict[str, Any]) -> list[str]:
    """The names on the edge's certificate: the authenticate host and every route's host, each by
    name (TLS clients refuse a wildcard right below a top-level name such as `*.localhost`)."""
    urls = [config["authenticate_service_url"], *(route["from"] for route in config.get("routes", []))]
    return sorted({str(urlsplit(str(url)).hostname) for url in urls})


def _certificates(state: Path, config: dict[str, Any]) -> None:
    """The CA, the edge's certificate, and both ends of the Envoy ↔ authz mutual TLS."""
    root = authority("authz compose CA (throwaway)")
    edge = issue(root, "authz compose edge", dns=_edge_names(config), server=True)
    own = issue(root, "authz", dns=["authz"], server=True, client=True)  # client: its own health check
    envoy = issue(root, "envoy", dns=["envoy"], client=True)
    for folder in ("authz", "envoy", "public"):
        _write(state, f"{folder}/ca.pem", root.cert_pem, PUBLIC)
    _write(state, "envoy/server.pem", edge.cert_pem, 0o640)
    _write(state, "envoy/server.key", edge.key_pem)
    _write(state, "envoy/envoy.pem", envoy.cert_pem, 0o640)
    _write(state, "envoy/envoy.key", envoy.key_pem, 0o600)  # Envoy's alone
    _write(state, "authz/authz.pem", own.cert_pem, PUBLIC)
    _write(state, "authz/authz.key", own.key_pem)
    system = SYSTEM_CAS.read_bytes() if SYSTEM_CAS.exists() else b""
    _write(state, "public/trust.pem", system + root.cert_pem, PUBLIC)


def _secrets(state: Path, config: dict[str, Any]) -> None:
    """authz's secrets, the IdP's client secret on both sides, and the metrics password."""
    _write(state, "authz/shared_secret", _token())
    _write(state, "authz/cookie_secret", _token())
    _write(state, "authz/signing_key.pem", generate_p256_pem())
    client_secret = secrets.token_urlsafe(32)
    _write(state, "authz/idp_client_secret", client_secret)
    password = secrets.token_urlsafe(24)
    _write(state, "authz/metrics_basic_auth", base64.b64encode(f"prometheus:{password}".encode()).decode())
    _write(state, "prometheus/password", password)
    authenticate = str(config["authenticate_service_url"]).rstrip("/")
    idp = {
        "host": "0.0.0.0",
        "port": 3000,
        "issuer": str(config["idp_provider_url"]).rstrip("/"),
        "proxy": True,  # behind Envoy: the scheme and host come from X-Forwarded-Proto and Host
        "client_id": config["idp_client_id"],
        "client_secret": client_secret,
        "cookie_key": secrets.token_urlsafe(32),
        "redirect_uris": [f"{authenticate}/oauth2/callback"],
        "post_logout_redirect_uris": [f"{authenticate}/.pomerium/signed_out"],
    }
    _write(state, "idp/config.json", json.dumps(idp, indent=2))


def _envoy_config(state: Path, config_path: Path) -> None:
    """Envoy's bootstrap, generated from authz's config as it is now."""
    result = subprocess.run(
        [sys.executable, "-m", "authz", "envoy-config", "-c", str(config_path), "--admin-address", "127.0.0.1:9901"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"setup: authz envoy-config failed:\n{result.stderr}")
    _write(state, "envoy/envoy.yaml", result.stdout, 0o600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, default=Path("/etc/authz"))
    parser.add_argument("--config", type=Path, default=Path("/config/authz.yaml"))
    args = parser.parse_args(argv)
    import yaml

    config = yaml.safe_load(args.config.read_text())
    state: Path = args.state
    if (state / "authz" / "signing_key.pem").exists():
        print("setup: keeping the keys and certificates already in the state volume")
    else:
        _folders(state)
        _certificates(state, config)
        _secrets(state, config)
        print("setup: wrote a throwaway CA, certificates and secrets")
    _envoy_config(state, args.config)
    print("setup: wrote envoy/envoy.yaml from", args.config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
