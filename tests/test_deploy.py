"""The Dockerfile and the systemd unit, checked without a Docker engine (none runs here): the final
image runs `authz serve` as a non-root user with a /healthz healthcheck, holds the server extra
and ca-certificates and no build or test packages, and its base is pinned by version tag; the unit
is accepted by `systemd-analyze verify` and runs unprivileged, reloading on SIGHUP."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    found = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def stages(text: str) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for instruction in instructions(text):
        if instruction[0] == "FROM":
            out.append([])
        out[-1].append(instruction)
    return out


def test_the_image_runs_authz_serve_unprivileged_with_a_healthcheck() -> None:
    build, final = stages((ROOT / "Dockerfile").read_text())
    for stage in (build, final):
        image = stage[0][1].split()[0]
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", image), image  # a version tag
    final_args = dict(final)
    user = final_args["USER"].split(":")[0]
    assert user not in ("root", "0") and int(user) >= 1000
    assert json.loads(final_args["ENTRYPOINT"]) == ["authz", "serve"]
    health = final_args["HEALTHCHECK"]
    assert "/healthz" in final_args["ENV"] and "AUTHZ_HEALTH_URL" in health and "--interval" in health
    assert ("COPY", "--from=build /opt/authz /opt/authz") in final


def test_the_image_holds_the_server_extra_and_ca_certificates_only() -> None:
    build, final = stages((ROOT / "Dockerfile").read_text())
    runs = " ".join(args for word, args in final if word == "RUN")
    installed = re.findall(r"apt-get install (?:-\S+ )*([^&]+)", runs)
    assert [pkg.split() for pkg in installed] == [["ca-certificates"]]
    assert "pip" not in runs  # nothing is installed into the final image with pip
    pips = [args for word, args in build if word == "RUN" and "pip install" in args]
    assert pips == ['/opt/authz/bin/pip install ".[server]"']  # not dev, bench or test packages
    copied = [args for word, args in build if word == "COPY"]
    assert copied == ["pyproject.toml README.md ./", "authz ./authz"]  # no tests, scripts or .venv
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if not line.startswith("#")]
    assert ignored == ["*", "!pyproject.toml", "!README.md", "!authz/", "authz/**/__pycache__"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    text = (ROOT / "deploy" / "authz.service").read_text()
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    assert values["User"] == "authz" and values["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert values["ExecStart"] == "/opt/authz/bin/authz serve -c /etc/authz/config.yaml"
    for hardening in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectHome"):
        assert values[hardening] in ("yes", "strict"), hardening
    # systemd checks the ExecStart binary exists: point it at one that does for the check.
    unit = tmp_path / "authz.service"
    unit.write_text(text.replace("/opt/authz/bin/authz", shutil.which("true") or "/bin/true"))
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr
