"""TLS for authz's own listeners (metrics, the sidecar, the HTTP Check service) from PEM bytes.

uvicorn and Python's `ssl` read a certificate and its key from files only, while the config holds
PEM bytes (inline base64 or read from a file, and kept for reload's comparison). `pem_files`
writes them owner-only into a fresh temporary folder that is removed as soon as the server has
loaded them: the key never sits anywhere else on disk, and never longer than a start.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class TlsFiles:
    certificate: str
    key: str
    client_ca: str | None


@contextlib.contextmanager
def pem_files(
    certificate: bytes, key: bytes, client_ca: bytes | None, prefix: str = "authz-tls-"
) -> Iterator[TlsFiles]:
    """The PEMs as owner-only files, removed on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:

        def write(name: str, data: bytes) -> str:
            path = Path(folder) / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            return str(path)

        ca = write("ca.pem", client_ca) if client_ca is not None else None
        yield TlsFiles(write("cert.pem", certificate), write("key.pem", key), ca)


def mutual_tls_context(certificate: bytes, key: bytes, client_ca: bytes, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """A server context that requires a client certificate chaining to `client_ca` (TLS 1.2 and up)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=client_ca.decode("ascii"))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    with pem_files(certificate, key, None) as files:
        context.load_cert_chain(files.certificate, files.key)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context
