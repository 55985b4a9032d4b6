"""The TLS keys (authz/config/tls.py) and what they make of Envoy's config: the listener's TLS
parameters and certificates, the redirect listener, and each route's TLS to its upstreams."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.config import Config
from authz.config.model import Pem
from authz.envoy.bootstrap import TLS12_CIPHERS, bootstrap, listener_secrets, render_bootstrap, upstream_tls
from authz.errors import ConfigError
from tests.pki import Pki

from .test_bootstrap import envoy_validate


def _problems(make_config: Callable[..., Config], **overrides: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        make_config(**overrides)
    return [str(p) for p in info.value.problems]


@pytest.fixture
def files(pki: Pki, tmp_path: Path) -> Path:
    for name, data in {"edge.pem": pki.server.cert_pem, "edge.key": pki.server.key_pem, "ca.pem": pki.root.cert_pem,
                       "envoy.pem": pki.envoy.cert_pem, "envoy.key": pki.envoy.key_pem}.items():  # fmt: skip
        (tmp_path / name).write_bytes(data)
    return tmp_path


def _route(**tls: Any) -> dict[str, Any]:
    public = {"allow_public_unauthenticated_access": True}
    return {"from": "http://app.localhost", "to": "https://app.internal:8443", **public, **tls}


def test_https_upstreams_are_verified_by_default(make_config: Callable[..., Config]) -> None:
    socket = upstream_tls(make_config(routes=[_route()]).routes[0])
    assert socket is not None
    context = socket["typed_config"]
    assert context["sni"] == "app.internal"
    validation = context["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"] == {"filename": "/etc/ssl/certs/ca-certificates.crt"}
    assert validation["match_typed_subject_alt_names"] == [{"san_type": "DNS", "matcher": {"exact": "app.internal"}}]
    assert "tls_certificates" not in context["common_tls_context"]
    plain = make_config(routes=[{**_route(), "to": "http://127.0.0.1:9000"}]).routes[0]
    assert upstream_tls(plain) is None


def test_custom_ca_name_and_client_certificate(make_config: Callable[..., Config], files: Path, pki: Pki) -> None:
    inline_ca = base64.b64encode(pki.root.cert_pem).decode()
    client = {"tls_client_cert_file": "envoy.pem", "tls_client_key_file": "envoy.key"}
    route = make_config(routes=[_route(tls_custom_ca=inline_ca, tls_server_name="10.0.0.5", **client)]).routes[0]
    assert route.tls.custom_ca == Pem("inline_string", pki.root.cert_pem.decode())
    assert route.tls.client_cert == Pem("filename", str(files / "envoy.pem"))
    socket = upstream_tls(route)
    assert socket is not None
    context = socket["typed_config"]
    assert "sni" not in context  # an IP address is no server name
    common = context["common_tls_context"]
    assert common["validation_context"]["match_typed_subject_alt_names"][0]["san_type"] == "IP_ADDRESS"
    assert common["tls_certificates"] == [
        {
            "certificate_chain": {"filename": str(files / "envoy.pem")},
            "private_key": {"filename": str(files / "envoy.key")},
        }
    ]


def test_skip_verify_warns_loudly_and_verifies_nothing(make_config: Callable[..., Config]) -> None:
    config = make_config(routes=[_route(tls_skip_verify=True)])
    assert any("NOT verified" in w for w in config.warnings)
    socket = upstream_tls(config.routes[0])
    assert socket is not None and "validation_context" not in socket["typed_config"]["common_tls_context"]


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (_route(tls_client_cert_file="envoy.pem"), "set both tls_client_cert and tls_client_key"),
        (_route(tls_custom_ca_file="missing.pem"), "cannot read 'missing.pem'"),
        (_route(tls_custom_ca_file="envoy.key"), "holds no PEM certificate"),
        (_route(tls_custom_ca="not base64!"), "is not base64 PEM (value not shown)"),
        (_route(tls_custom_ca="x", tls_custom_ca_file="ca.pem"), "set either tls_custom_ca or tls_custom_ca_file"),
        ({**_route(tls_server_name="a"), "to": "http://127.0.0.1:1"}, "has no effect: the route's upstreams are http"),
        ({**_route(), "to": ["https://a:1", "http://b:2"]}, "mixes http and https upstreams"),
        (
            _route(tls_client_cert_file="envoy.pem", tls_client_key_file="edge.key"),
            "tls_client_key_file: is not the key of tls_client_cert's first certificate",
        ),
        (
            _route(tls_custom_ca=base64.b64encode(b"-----BEGIN PRIVATE KEY-----\nMIIB\n").decode()),
            "tls_custom_ca: holds no PEM certificate",
        ),
        (
            _route(tls_client_cert_file="envoy.key", tls_client_key_file="envoy.key"),
            "tls_client_cert_file: holds no PEM certificate",
        ),
        (_route(tls_server_name="foo bar"), "'foo bar' is not a host name or an IP address"),
        (_route(tls_server_name="a", tls_upstream_server_name="a"), "set either tls_server_name or tls_upstream"),
        ({**_route(), "to": ["https://a.internal:1", "https://b.internal:2"]}, "are verified under one name"),
        (_route(tls_custom_ca_file="der.crt"), "tls_custom_ca_file: cannot read 'der.crt': not a text file"),
    ],
)
def test_bad_tls_keys_are_clear_errors(
    make_config: Callable[..., Config], files: Path, route: dict[str, Any], message: str
) -> None:
    (files / "der.crt").write_bytes(b"\x30\x82\x01\xff\xfe")
    out = _problems(make_config, routes=[route])
    assert any(message in p for p in out), out
    assert not any("unknown key" in p for p in out)


def test_an_inline_key_never_shows_in_a_repr(make_config: Callable[..., Config], pki: Pki) -> None:
    inline = {"tls_client_cert": base64.b64encode(pki.envoy.cert_pem).decode(),
              "tls_client_key": base64.b64encode(pki.envoy.key_pem).decode()}  # fmt: skip
    config = make_config(routes=[_route(**inline)])
    assert config.routes[0].tls.client_key is not None and "PRIVATE KEY" not in repr(config)
    assert "PRIVATE KEY" in config.routes[0].tls.client_key.value  # what Envoy gets inline


def test_the_listener_speaks_tls_1_2_and_up_with_ecdhe_aead_and_picks_certificates_by_sni(
    make_config: Callable[..., Config], files: Path
) -> None:
    config = make_config(insecure_server=False, authenticate_service_url="https://authenticate.localhost",
                         routes=[{**_route(), "from": "https://app.localhost"}], certificate_file="edge.pem",
                         key_file="edge.key", certificates=[{"cert": "envoy.pem", "key": "envoy.key"}],
                         http_redirect_addr="127.0.0.1:18080")  # fmt: skip
    listener, redirect = bootstrap(config)["static_resources"]["listeners"]
    common = listener["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    assert common["tls_params"] == {"tls_minimum_protocol_version": "TLSv1_2", "cipher_suites": list(TLS12_CIPHERS)}
    assert all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20" in c) for c in TLS12_CIPHERS)
    assert [c["certificate_chain"]["filename"] for c in common["tls_certificates"]] == [
        str(files / "edge.pem"), str(files / "envoy.pem")
    ]  # fmt: skip
    assert common["alpn_protocols"] == ["h2", "http/1.1"]
    assert redirect["address"]["socket_address"]["port_value"] == 18080
    assert yaml.safe_load(list(listener_secrets(config).values())[1])["resources"][0]["tls_certificate"][
        "watched_directory"
    ] == {"path": str(files)}
    envoy_validate(render_bootstrap(config), files)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"http_redirect_addr": "127.0.0.1:18080"}, "http_redirect_addr: redirects to https"),
        ({"certificates": [{"cert": "nope.pem", "key": "edge.key"}]}, "certificates[0].cert: cannot read 'nope.pem'"),
        ({"certificates": ["edge.pem"]}, "certificates[0]: expected {cert: <file>, key: <file>}"),
        ({"certificates": [{"cert": "edge.key", "key": "edge.pem"}]}, "certificates[0].cert: holds no PEM certificate"),
        ({"certificates": [{"cert": "edge.pem", "key": "envoy.key"}]}, "certificates[0].key: is not the key of its"),
        ({"certificate_file": "edge.pem", "key_file": "edge.key"}, "insecure_server: a plain-HTTP listener serves"),
    ],
)
def test_bad_listener_keys(
    make_config: Callable[..., Config], files: Path, overrides: dict[str, Any], message: str
) -> None:
    assert any(p.startswith(message) for p in _problems(make_config, **overrides)), message


def test_certificates_alone_make_a_tls_listener_as_in_pomerium(make_config: Callable[..., Config], files: Path) -> None:
    config = make_config(insecure_server=False, authenticate_service_url="https://authenticate.localhost",
                         routes=[{**_route(), "from": "https://app.localhost"}],
                         certificates=[{"cert": "edge.pem", "key": "edge.key"}])  # fmt: skip
    (listener,) = bootstrap(config)["static_resources"]["listeners"]
    common = listener["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    assert [c["certificate_chain"]["filename"] for c in common["tls_certificates"]] == [str(files / "edge.pem")]
