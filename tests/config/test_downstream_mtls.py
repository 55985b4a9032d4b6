"""`downstream_mtls`: its keys and refusals, and what it makes of Envoy's config in each
enforcement mode (`envoy --mode validate` on the result), the snippet included."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.config import Config
from authz.envoy.adapter import CLIENT_CERT_NAMESPACE
from authz.envoy.bootstrap import CLIENT_CERT_LUA, bootstrap, render_bootstrap
from authz.envoy.snippet import snippet
from authz.errors import ConfigError
from tests.envoy.test_bootstrap import envoy_validate
from tests.pki import Pki


@pytest.fixture
def tls(pki: Pki, tmp_path: Path) -> dict[str, Any]:
    files = {"edge.pem": pki.server.cert_pem, "edge.key": pki.server.key_pem, "ca.pem": pki.root.cert_pem,
             "crl.pem": pki.crl + pki.intermediate_crl}  # fmt: skip
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {
        "insecure_server": False,
        "authenticate_service_url": "https://authenticate.localhost",
        "certificate_file": "edge.pem",
        "key_file": "edge.key",
        "routes": [{"from": "https://app.localhost", "to": "http://127.0.0.1:9", "allow_any_authenticated_user": True}],
    }


def _problems(make_config: Callable[..., Config], **overrides: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        make_config(**overrides)
    return [str(p) for p in info.value.problems]


def _listener(config: Config) -> dict[str, Any]:
    return bootstrap(config)["static_resources"]["listeners"][0]


def _manager(config: Config) -> dict[str, Any]:
    return _listener(config)["filter_chains"][0]["filters"][0]["typed_config"]


def _context(config: Config) -> dict[str, Any]:
    return _listener(config)["filter_chains"][0]["transport_socket"]["typed_config"]


def test_the_default_mode_asks_for_any_certificate_and_passes_the_chain(
    make_config: Callable[..., Config], tls: dict[str, Any], tmp_path: Path
) -> None:
    config = make_config(**tls, downstream_mtls={"ca_file": "ca.pem", "crl_file": "crl.pem"})
    mtls = config.downstream_mtls
    assert mtls is not None and mtls.enforcement == "policy_with_default_deny" and mtls.default_deny
    assert mtls.max_verify_depth == 1
    context = _context(config)
    # Any certificate, or none, gets through the handshake: authz answers 495 and says why.
    assert "require_client_certificate" not in context
    validation = context["common_tls_context"]["validation_context"]
    assert validation == {
        "trusted_ca": {"filename": str(tmp_path / "ca.pem")},
        "trust_chain_verification": "ACCEPT_UNTRUSTED",
    }
    manager = _manager(config)
    assert manager["forward_client_cert_details"] == "SANITIZE_SET"
    lua, ext_authz = manager["http_filters"][0], manager["http_filters"][1]
    assert lua["typed_config"]["default_source_code"]["inline_string"] == CLIENT_CERT_LUA
    assert ext_authz["typed_config"]["metadata_context_namespaces"] == [CLIENT_CERT_NAMESPACE]
    assert "include_peer_certificate" not in ext_authz["typed_config"]
    envoy_validate(render_bootstrap(config), tmp_path)


def test_reject_connection_makes_envoy_verify_as_authz_does(
    make_config: Callable[..., Config], tls: dict[str, Any], tmp_path: Path, pki: Pki
) -> None:
    sans = [{"email": r".*@example\.com"}, {"user_principal_name": ".*@corp"}, {"ip_address": r"10\..*"}]
    config = make_config(**tls, downstream_mtls={
        "ca": base64.b64encode(pki.root.cert_pem).decode(), "crl_file": "crl.pem", "enforcement": "reject_connection",
        "max_verify_depth": 2, "match_subject_alt_names": sans,
    })  # fmt: skip
    context = _context(config)
    assert context["require_client_certificate"] is True
    validation = context["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"] == {"inline_string": pki.root.cert_pem.decode()}
    assert validation["crl"] == {"filename": str(tmp_path / "crl.pem")}
    assert validation["only_verify_leaf_cert_crl"] is True
    assert validation["max_verify_depth"] == 2
    assert "trust_chain_verification" not in validation
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "EMAIL", "matcher": {"safe_regex": {"regex": r".*@example\.com"}}},
        {"san_type": "OTHER_NAME", "oid": "1.3.6.1.4.1.311.20.2.3", "matcher": {"safe_regex": {"regex": ".*@corp"}}},
        {"san_type": "IP_ADDRESS", "matcher": {"safe_regex": {"regex": r"10\..*"}}},
    ]
    assert any("reject_connection" in w and "JWKS" in w for w in config.warnings)
    envoy_validate(render_bootstrap(config), tmp_path)


def test_policy_mode_warns_and_the_http_transport_gets_the_chain_as_a_header(
    make_config: Callable[..., Config], tls: dict[str, Any], tmp_path: Path
) -> None:
    mtls = {"ca_file": "ca.pem", "enforcement": "policy", "max_verify_depth": 0}
    config = make_config(**tls, ext_authz_transport="http", downstream_mtls=mtls)
    assert config.downstream_mtls is not None and not config.downstream_mtls.default_deny
    assert any("enforcement: policy" in w for w in config.warnings)
    service = _manager(config)["http_filters"][2]["typed_config"]["http_service"]
    added = {h["key"]: h["value"] for h in service["authorization_request"]["headers_to_add"]}
    assert added["x-authz-client-cert"] == f"%DYNAMIC_METADATA({CLIENT_CERT_NAMESPACE}:chain)%"
    envoy_validate(render_bootstrap(config), tmp_path)


def test_without_downstream_mtls_nothing_is_asked_for(make_config: Callable[..., Config], tls: dict[str, Any]) -> None:
    config = make_config(**tls)
    assert config.downstream_mtls is None
    assert "validation_context" not in _context(config)["common_tls_context"]
    manager = _manager(config)
    assert "forward_client_cert_details" not in manager  # Envoy's SANITIZE: a client's XFCC is dropped
    assert [f["name"] for f in manager["http_filters"]] == ["envoy.filters.http.ext_authz", "envoy.filters.http.router"]


def test_the_snippet_carries_the_lua_filter(make_config: Callable[..., Config], tls: dict[str, Any]) -> None:
    config = make_config(**tls, downstream_mtls={"ca_file": "ca.pem"})
    pieces = snippet(config)
    assert pieces["http_filters"][0]["name"] == "envoy.filters.http.lua"
    listener = pieces["listener"]
    assert listener["forward_client_cert_details"] == "SANITIZE_SET"
    assert listener["validation_context"]["trust_chain_verification"] == "ACCEPT_UNTRUSTED"
    assert yaml.safe_dump(pieces)


@pytest.mark.parametrize(
    ("mtls", "message"),
    [
        ({}, "downstream_mtls.ca: is required"),
        ({"ca_file": "missing.pem"}, "downstream_mtls.ca_file: cannot read 'missing.pem'"),
        ({"ca_file": "edge.key"}, "downstream_mtls.ca_file: holds no PEM certificate"),
        ({"ca": "not base64!"}, "downstream_mtls.ca: is not base64 PEM"),
        ({"ca_file": "ca.pem", "crl_file": "ca.pem"}, "downstream_mtls.crl_file: holds no readable PEM CRL"),
        ({"ca_file": "ca.pem", "enforcement": "strict"}, "downstream_mtls.enforcement"),
        ({"ca_file": "ca.pem", "max_verify_depth": 17}, "downstream_mtls.max_verify_depth: must be 0"),
        ({"ca_file": "ca.pem", "match_subject_alt_names": [{"cn": "x"}]}, "unknown SAN type 'cn'"),
        ({"ca_file": "ca.pem", "match_subject_alt_names": [{"email": "(?<=a)b"}]}, "invalid RE2 regex"),
        ({"ca_file": "ca.pem", "match_subject_alt_names": {"email": "x"}}, "expected a list"),
        ({"ca_file": "ca.pem", "verify_depth": 2}, "downstream_mtls.verify_depth: unknown key"),
    ],
)
def test_refusals(make_config: Callable[..., Config], tls: dict[str, Any], mtls: dict[str, Any], message: str) -> None:
    assert any(message in p for p in _problems(make_config, **tls, downstream_mtls=mtls)), message


def test_a_plain_listener_cannot_ask_for_certificates(make_config: Callable[..., Config], tls: dict[str, Any]) -> None:
    problems = _problems(make_config, downstream_mtls={"ca_file": "ca.pem"})
    assert any("downstream_mtls: client certificates need a TLS listener" in p for p in problems)


def test_the_per_route_client_ca_points_at_downstream_mtls(
    make_config: Callable[..., Config], tls: dict[str, Any]
) -> None:
    routes = [{**tls["routes"][0], "tls_downstream_client_ca_file": "ca.pem"}]
    problems = _problems(make_config, **{**tls, "routes": routes})
    assert any("tls_downstream_client_ca_file" in p and "downstream_mtls.ca" in p for p in problems)


def test_a_crl_past_its_next_update_is_a_warning(
    make_config: Callable[..., Config], tls: dict[str, Any], tmp_path: Path, pki: Pki
) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    now = dt.datetime.now(dt.UTC)
    stale = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.root.cert.subject)
        .last_update(now - dt.timedelta(days=3))
        .next_update(now - dt.timedelta(days=1))
        .sign(pki.root.key, hashes.SHA256())
    )
    (tmp_path / "stale.pem").write_bytes(stale.public_bytes(serialization.Encoding.PEM))
    config = make_config(**tls, downstream_mtls={"ca_file": "ca.pem", "crl_file": "stale.pem"})
    # Envoy (reject_connection) answers every certificate of that CA with "certificate expired".
    assert any("CN=test root CA was due for renewal" in w and "refuses every certificate" in w for w in config.warnings)
    fresh = make_config(**tls, downstream_mtls={"ca_file": "ca.pem", "crl_file": "crl.pem"})
    assert not any("due for renewal" in w for w in fresh.warnings)


def test_a_regex_envoy_would_refuse_is_a_config_error(make_config: Callable[..., Config], tls: dict[str, Any]) -> None:
    names = "|".join(["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "oscar"])
    big = f"({names}|mallory|peggy|trent|victor|walter)@(example|corp)\\.com"
    mtls = {"ca_file": "ca.pem", "match_subject_alt_names": [{"email": big}]}
    assert any(
        "RE2 program size" in p and "over the 100 Envoy accepts" in p
        for p in _problems(make_config, **tls, downstream_mtls=mtls)
    )
    # The same rule for a route's `regex`, which Envoy compiles the same way.
    routes = [{**tls["routes"][0], "regex": f"/({big})"}]
    assert any("RE2 program size" in p for p in _problems(make_config, **{**tls, "routes": routes}))


def test_a_crl_not_signed_by_its_ca_is_a_config_error(
    make_config: Callable[..., Config], tls: dict[str, Any], tmp_path: Path, pki: Pki
) -> None:
    from authz.dev.certs import Issued, revocation_list

    impostor = revocation_list(Issued(pki.root.cert, pki.other_root.key), [pki.client.cert])
    (tmp_path / "forged-crl.pem").write_bytes(impostor)
    problems = _problems(make_config, **tls, downstream_mtls={"ca_file": "ca.pem", "crl_file": "forged-crl.pem"})
    assert any("the CRL of CN=test root CA is not signed by that CA's key" in p for p in problems)


def test_with_out_the_ca_and_crl_come_through_a_watched_sds_file(
    make_config: Callable[..., Config], tls: dict[str, Any], tmp_path: Path, pki: Pki
) -> None:
    from authz.envoy.bootstrap import CLIENT_CA_SECRET, dynamic_bootstrap, listener_secrets

    config = make_config(**tls, downstream_mtls={"ca_file": "ca.pem", "crl_file": "crl.pem",
                                                 "enforcement": "reject_connection"})  # fmt: skip
    listener = dynamic_bootstrap(config, str(tmp_path / "out"))["static_resources"]["listeners"][0]
    common = listener["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    assert "validation_context" not in common
    assert common["validation_context_sds_secret_config"]["name"] == CLIENT_CA_SECRET
    secret = yaml.safe_load(listener_secrets(config)[f"{CLIENT_CA_SECRET}.yaml"])["resources"][0]
    validation = secret["validation_context"]
    assert validation["watched_directory"] == {"path": str(tmp_path)}
    assert validation["crl"] == {"filename": str(tmp_path / "crl.pem")} and validation["max_verify_depth"] == 1
    # An inline CA cannot be followed: it stays in the listener.
    inline = make_config(**tls, downstream_mtls={"ca": base64.b64encode(pki.root.cert_pem).decode()})
    assert f"{CLIENT_CA_SECRET}.yaml" not in listener_secrets(inline)
    common = dynamic_bootstrap(inline, str(tmp_path / "out"))["static_resources"]["listeners"][0]["filter_chains"][0][
        "transport_socket"
    ]["typed_config"]["common_tls_context"]
    assert "validation_context" in common
