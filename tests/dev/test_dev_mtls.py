"""`authz dev --mtls` (`make dev-mtls`): the demo stack over TLS, asking for a client certificate
from a throwaway CA; run for real, then asked with and without the certificate it wrote."""

from __future__ import annotations

import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from authz.dev.run import P12_PASSWORD
from authz.dev.stack import free_port

pytestmark = pytest.mark.e2e


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return "".join(lines)
    raise AssertionError(f"`authz dev --mtls` did not print {marker!r}:\n{''.join(lines)}")


def test_the_demo_stack_asks_for_a_client_certificate() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "authz", "dev", "--mtls", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    certs: Path | None = None
    try:
        output = _read_until(proc, "Ctrl-C stops everything", 90)
        found = re.search(r"--cacert (\S+)/ca\.pem", output)
        assert found, output
        certs = Path(found.group(1))
        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        url = f"https://127.0.0.1:{port}/"
        where = {"headers": {"host": f"public.localhost:{port}"}, "extensions": {"sni_hostname": "public.localhost"}}
        with httpx2.Client(verify=context, timeout=10) as client:
            assert client.get(url, **where).status_code == 495  # type: ignore[arg-type]
        context.load_cert_chain(certs / "client.pem", certs / "client.key")
        with httpx2.Client(verify=context, timeout=10) as client:
            assert client.get(url, **where).status_code == 200  # type: ignore[arg-type]
        # The browser's bundle holds the same certificate, under the password printed.
        bundle = pkcs12.load_pkcs12((certs / "client.p12").read_bytes(), P12_PASSWORD.encode())
        assert bundle.cert is not None
        assert bundle.cert.certificate.subject.rfc4514_string() == "CN=dev user"
        assert (certs / "client.p12").stat().st_mode & 0o077 == 0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if certs is not None:
            shutil.rmtree(certs.parent, ignore_errors=True)  # the stack's folder: config, logs, certificates
