"""`authz keygen --rsa`, `authz jwks [--pem]` and `authz --version`: what a Grafana user needs to
hand the published keys to an upstream that takes a key file, or only RS256."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jwt
import yaml
from cryptography.hazmat.primitives import serialization

from authz.config import load_config
from authz.signing.assertion import sign
from authz.signing.keys import generate_p256_pem


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "authz", *args], capture_output=True, text=True, check=False)


def test_keygen_rsa_makes_an_rs256_config(write_config: Callable[..., Path], tmp_path: Path) -> None:
    made = yaml.safe_load(cli("keygen", "--rsa").stdout)
    pem = base64.b64decode(made["signing_key"])
    assert b"BEGIN PRIVATE KEY" in pem
    key = serialization.load_pem_private_key(pem, None)
    assert key.key_size == 2048  # type: ignore[union-attr]
    path = write_config(signing_key=made["signing_key"])
    (signing,) = load_config(path).signing_keys
    assert signing.algorithm == "RS256"


def test_jwks_prints_what_the_sidecar_publishes_and_pems_verify(write_config: Callable[..., Path]) -> None:
    rsa_key = yaml.safe_load(cli("keygen", "--rsa").stdout)["signing_key"]
    path = write_config(signing_key=rsa_key)
    config = load_config(path)
    document = json.loads(cli("jwks", "-c", str(path)).stdout)
    assert document == {"keys": [dict(k.jwk) for k in config.signing_keys]}
    assert "d" not in document["keys"][0] and "p" not in document["keys"][0]  # public halves only
    pems = cli("jwks", "--pem", "-c", str(path)).stdout
    assert pems.startswith(f"kid: {config.signing_keys[0].kid} (RS256)\n-----BEGIN PUBLIC KEY-----")
    assert "PRIVATE" not in pems
    public = serialization.load_pem_public_key(pems.split("\n", 1)[1].encode())  # what a key_file reader gets
    token = sign(config.signing_keys[0], {"sub": "alice", "aud": "app", "iss": "authz"})
    assert jwt.decode(token, public, algorithms=["RS256"], audience="app")["sub"] == "alice"  # type: ignore[arg-type]


def test_version() -> None:
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("authz ") and out.stdout.split()[1][0].isdigit()


def test_keys_edits_the_file_the_config_names_from_the_environment_too(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    keys = tmp_path / "from-env.pem"
    keys.write_bytes(generate_p256_pem())
    path = write_config(signing_key=None)
    env = {**os.environ, "SIGNING_KEY_FILE": str(keys)}
    added = subprocess.run([sys.executable, "-m", "authz", "keys", "add", "-c", str(path)],
                           capture_output=True, text=True, check=False, env=env)  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert keys.read_text().count("BEGIN PRIVATE KEY") == 2 and keys.stat().st_mode & 0o077 == 0
    inline = cli("keys", "add", "-c", str(write_config()))
    assert inline.returncode == 1 and "inline" in inline.stderr
