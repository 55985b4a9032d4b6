"""Pomerium's own names for the listener's key and the metrics listener's key
(`certificate_key_file`, `metrics_certificate_key(_file)`), beside authz's older `key_file` and
`metrics_key(_file)`: a Pomerium config loads as it is, and setting both names is refused."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from authz.config import Config
from authz.errors import ConfigError
from tests.pki import Pki


@pytest.fixture
def edge(pki: Pki, tmp_path: Path) -> dict[str, Any]:
    for name, data in {
        "edge.pem": pki.server.cert_pem,
        "edge.key": pki.server.key_pem,
        "ca.pem": pki.root.cert_pem,
    }.items():
        (tmp_path / name).write_bytes(data)
    return {
        "insecure_server": False,
        "authenticate_service_url": "https://authenticate.localhost",
        "certificate_file": "edge.pem",
        "routes": [{"from": "https://app.localhost", "to": "http://127.0.0.1:9", "allow_any_authenticated_user": True}],
    }


def _problems(make_config: Callable[..., Config], **overrides: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        make_config(**overrides)
    return [str(p) for p in info.value.problems]


def test_certificate_key_file_is_the_listeners_key(make_config: Callable[..., Config], edge: dict[str, Any],
                                                   tmp_path: Path) -> None:  # fmt: skip
    pomerium = make_config(**edge, certificate_key_file="edge.key")
    older = make_config(**edge, key_file="edge.key")
    assert pomerium.key_file == older.key_file == str(tmp_path / "edge.key")


def test_both_names_or_neither_is_refused(make_config: Callable[..., Config], edge: dict[str, Any]) -> None:
    both = _problems(make_config, **edge, certificate_key_file="edge.key", key_file="edge.key")
    assert "key_file: set either certificate_key_file (Pomerium's name) or key_file, not both" in both
    missing = _problems(make_config, **edge, certificate_key_file="nothing.key")
    assert "certificate_key_file: no such file 'nothing.key'" in missing


def test_metrics_certificate_key_in_either_form(make_config: Callable[..., Config], pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "m.pem").write_bytes(pki.server.cert_pem)
    (tmp_path / "m.key").write_bytes(pki.server.key_pem)
    inline = base64.b64encode(pki.server.key_pem).decode()
    base = {"metrics_address": "127.0.0.1:9300", "metrics_certificate_file": str(tmp_path / "m.pem")}
    for key in ({"metrics_certificate_key_file": str(tmp_path / "m.key")}, {"metrics_certificate_key": inline},
                {"metrics_key_file": str(tmp_path / "m.key")}):  # fmt: skip
        config = make_config(**base, **key)
        assert config.metrics.key is not None and config.metrics.key.value == pki.server.key_pem
    both = _problems(make_config, **base, metrics_certificate_key=inline, metrics_key=inline)
    assert "metrics_key: set either metrics_certificate_key (Pomerium's name) or metrics_key, not both" in both
