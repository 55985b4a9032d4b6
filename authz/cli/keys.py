"""`authz keys add|promote|retire`: rotate the assertion's signing key without a failed request.

The keys live in the file `signing_key_file` names, one PEM block each; every one is published in
the JWKS, and the first signs. A rotation is three edits of that file, each picked up by a running
authz on its own (it watches the file; SIGHUP does it at once):

1. `authz keys add -c config.yaml [--rsa]`: a new key goes last: published, not signing.
2. Wait until every verifier has fetched the JWKS again: authz serves it with `max-age=60`, and
   some upstreams cache longer (Grafana honours it, capped by its own `cache_ttl`).
   `authz keys promote -c config.yaml KID`: the new key goes first and signs from then on.
3. Wait out the lifetime of assertions the old key signed (300 s, plus verifiers' leeway).
   `authz keys retire -c config.yaml KID`: the old key leaves the file and the JWKS.

Each edit writes a new file beside the old one and renames it over it (owner-only), so authz never
reads half a file. Inline `signing_key` values are left alone: the commands say to move the key
to a file first.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from authz.config import Config
from authz.signing.keys import SigningKey, generate_p256_pem, generate_rsa_pem, load_signing_keys

LIFETIME_WAIT = "300 s (the assertion lifetime) plus your verifiers' leeway"


def _file(config: Config) -> Path | None:
    """The signing key file the config names, or None with the reason on stderr."""
    if config.signing_key_file is None:
        print(
            "the signing keys are inline (signing_key): move them to a file named by signing_key_file,"
            " which these commands edit and authz reloads",
            file=sys.stderr,
        )
        return None
    return Path(config.signing_key_file)


def _pem(key: SigningKey) -> bytes:
    return key.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, keys: tuple[SigningKey, ...]) -> None:
    """Replace the file at once: a new owner-only file renamed over the old one."""
    fd, temporary = tempfile.mkstemp(prefix=".authz-keys-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(b"".join(_pem(k) for k in keys))
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _find(keys: tuple[SigningKey, ...], kid: str) -> SigningKey | None:
    found = [k for k in keys if k.kid.startswith(kid)] if len(kid) >= 8 else []
    if len(found) != 1:
        print(f"no single key has an id starting {kid!r} (at least 8 characters; `authz jwks` lists them)",
              file=sys.stderr)  # fmt: skip
        return None
    return found[0]


def run(config_path: str, config: Config, command: str, kid: str | None, rsa: bool) -> int:
    path = _file(config)
    if path is None:
        return 1
    keys = load_signing_keys(path.read_text())
    if command == "add":
        (new,) = load_signing_keys((generate_rsa_pem() if rsa else generate_p256_pem()).decode())
        _write(path, (*keys, new))
        print(f"added {new.kid} ({new.algorithm}): published, not signing. Once verifiers have fetched the JWKS"
              f" again (authz's max-age is 60 s), run: authz keys promote -c {config_path} {new.kid[:16]}")  # fmt: skip
        return 0
    assert kid is not None
    chosen = _find(keys, kid)
    if chosen is None:
        return 1
    others = tuple(k for k in keys if k is not chosen)
    if command == "promote":
        _write(path, (chosen, *others))
        print(f"{chosen.kid} signs now; after {LIFETIME_WAIT}, retire the one before: "
              f"authz keys retire -c {config_path} {keys[0].kid[:16]}")  # fmt: skip
        return 0
    if chosen is keys[0]:
        print(f"{chosen.kid} is the signing key: promote another first", file=sys.stderr)
        return 1
    _write(path, others)
    print(f"retired {chosen.kid}: no longer published")
    return 0
