"""Envoy ↔ authz over mutual TLS: the `internal_tls_*` keys, the refusal of a reachable plain-text
Check port, and the clusters the generated Envoy config gets from them (`envoy --mode validate`)."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.config import Config
from authz.envoy.bootstrap import AUTHZ_CLUSTER, SIDECAR_CLUSTER, authz_clusters, bootstrap, render_bootstrap
from authz.envoy.snippet import render_snippet
from authz.errors import ConfigError
from authz.ops.reload import kept_credentials, restart_needed
from tests.envoy.test_bootstrap import envoy_validate
from tests.internal_tls import write_internal_tls
from tests.pki import Pki


@pytest.fixture
def keys(pki: Pki, tmp_path: Path) -> dict[str, str]:
    return write_internal_tls(pki, tmp_path)


def problems(make_config: Callable[..., Config], **overrides: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        make_config(**overrides)
    return [str(p) for p in info.value.problems]


def _clusters(config: Config) -> dict[str, dict[str, Any]]:
    return {cluster["name"]: cluster for cluster in authz_clusters(config)}


def test_loopback_default_is_plain_and_needs_nothing(make_config: Callable[..., Config]) -> None:
    config = make_config()
    assert config.internal_tls is None and config.warnings == ()
    assert all("transport_socket" not in cluster for cluster in authz_clusters(config))


def test_keys_are_read(make_config: Callable[..., Config], keys: dict[str, str], pki: Pki, tmp_path: Path) -> None:
    tls = make_config(**keys).internal_tls
    assert tls is not None
    assert tls.certificate == pki.authz.cert_pem and tls.key.value == pki.authz.key_pem
    assert tls.client_ca == pki.root.cert_pem
    # Envoy's are paths, resolved against the config's folder (Envoy reads them, not authz).
    assert tls.envoy_certificate_file == str(tmp_path / "envoy.pem")
    assert tls.envoy_key_file == str(tmp_path / "envoy.key")
    assert tls.ca_file == str(tmp_path / "ca.pem")
    assert tls.server_name == "127.0.0.1"  # grpc_address's host by default
    assert "***" in repr(tls) and "PRIVATE" not in repr(tls)


def test_inline_base64_forms(make_config: Callable[..., Config], keys: dict[str, str], pki: Pki) -> None:
    inline = {k: v for k, v in keys.items() if not k.startswith(("internal_tls_certificate", "internal_tls_key"))}
    inline["internal_tls_certificate"] = base64.b64encode(pki.authz.cert_pem).decode()
    inline["internal_tls_key"] = base64.b64encode(pki.authz.key_pem).decode()
    tls = make_config(**inline).internal_tls
    assert tls is not None and tls.certificate == pki.authz.cert_pem


def test_server_name_from_a_dns_grpc_address_or_set(make_config: Callable[..., Config], keys: dict[str, str]) -> None:
    tls = make_config(**keys, grpc_address="localhost:9191").internal_tls
    assert tls is not None and tls.server_name == "localhost"
    tls = make_config(**keys, internal_tls_server_name="LocalHost").internal_tls
    assert tls is not None and tls.server_name == "localhost"


def test_every_key_or_none(make_config: Callable[..., Config], keys: dict[str, str]) -> None:
    out = problems(make_config, internal_tls_certificate_file="authz.pem", internal_tls_key_file="authz.key")
    assert len(out) == 1
    assert out[0].startswith("internal_tls_certificate: mutual TLS between Envoy and authz needs every one")
    assert "missing: internal_tls_client_ca_file, internal_tls_envoy_certificate_file" in out[0]
    # Envoy's side alone is as incomplete.
    envoy_only = {k: v for k, v in keys.items() if "envoy" in k or k == "internal_tls_ca_file"}
    out = problems(make_config, **envoy_only)
    assert any("missing: internal_tls_certificate_file, internal_tls_key_file, internal_tls_client_ca_file" in p
               for p in out)  # fmt: skip


def test_missing_file_is_named(make_config: Callable[..., Config], keys: dict[str, str]) -> None:
    out = problems(make_config, **{**keys, "internal_tls_client_ca_file": "nope.pem"})
    assert out == ["internal_tls_client_ca_file: cannot read 'nope.pem': No such file or directory"]


def test_key_must_fit_the_certificate(make_config: Callable[..., Config], keys: dict[str, str]) -> None:
    out = problems(make_config, **{**keys, "internal_tls_key_file": "envoy.key"})
    assert out == ["internal_tls_key: is not the key of internal_tls_certificate's first certificate"]


def test_server_name_must_be_on_the_certificate(make_config: Callable[..., Config], keys: dict[str, str]) -> None:
    out = problems(make_config, **keys, internal_tls_server_name="authz.internal")
    assert out == [
        "internal_tls_server_name: 'authz.internal' is not among the names of internal_tls_certificate"
        " (set the name it carries)"
    ]
    out = problems(make_config, **keys, grpc_address="0.0.0.0:9191")
    assert out[0].startswith("internal_tls_server_name: is required: grpc_address 0.0.0.0:9191 names no host")
    assert make_config(**keys, grpc_address="0.0.0.0:9191", internal_tls_server_name="localhost").internal_tls


@pytest.mark.parametrize("key", ["grpc_address", "http_address"])
def test_reachable_plain_text_is_refused(make_config: Callable[..., Config], key: str) -> None:
    out = problems(make_config, **{key: "0.0.0.0:9300"})
    assert len(out) == 1
    assert out[0].startswith(f"{key}: 0.0.0.0:9300 is reachable from other hosts, and whoever reaches it can have")
    assert "set internal_tls_certificate_file" in out[0] and "insecure_internal: true" in out[0]
    assert make_config(**{key: "localhost:9300"}).internal_tls is None  # loopback by name is fine


def test_insecure_internal_allows_it_with_a_warning(make_config: Callable[..., Config], keys: dict[str, str]) -> None:
    config = make_config(grpc_address="10.0.0.5:9191", http_address="10.0.0.5:9192", insecure_internal=True)
    assert config.internal_tls is None
    assert [w.split(" ")[:3] for w in config.warnings] == [
        ["insecure_internal:", "grpc_address", "10.0.0.5:9191"],
        ["insecure_internal:", "http_address", "10.0.0.5:9192"],
    ]
    assert problems(make_config, insecure_internal=True, **keys) == [
        "insecure_internal: has no effect with internal_tls_*: leave it out"
    ]


def test_reachable_with_tls_is_accepted(make_config: Callable[..., Config], keys: dict[str, str]) -> None:
    config = make_config(**keys, grpc_address="0.0.0.0:9191", http_address="0.0.0.0:9192",
                         internal_tls_server_name="localhost")  # fmt: skip
    assert config.internal_tls is not None and config.warnings == ()


def test_clusters_carry_the_tls_context(
    make_config: Callable[..., Config], keys: dict[str, str], tmp_path: Path
) -> None:
    clusters = _clusters(make_config(**keys))
    grpc = clusters[AUTHZ_CLUSTER]["transport_socket"]["typed_config"]
    assert grpc["@type"].endswith("UpstreamTlsContext")
    common = grpc["common_tls_context"]
    assert common["alpn_protocols"] == ["h2"]
    assert common["tls_certificates"] == [
        {
            "certificate_chain": {"filename": str(tmp_path / "envoy.pem")},
            "private_key": {"filename": str(tmp_path / "envoy.key")},
        }
    ]
    assert common["validation_context"] == {
        "trusted_ca": {"filename": str(tmp_path / "ca.pem")},
        "match_typed_subject_alt_names": [{"san_type": "IP_ADDRESS", "matcher": {"exact": "127.0.0.1"}}],
    }
    assert "sni" not in grpc  # an IP address is no SNI
    sidecar = clusters[SIDECAR_CLUSTER]["transport_socket"]["typed_config"]
    assert sidecar["common_tls_context"]["alpn_protocols"] == ["http/1.1"]
    named = _clusters(make_config(**keys, internal_tls_server_name="localhost"))
    typed = named[AUTHZ_CLUSTER]["transport_socket"]["typed_config"]
    assert typed["sni"] == "localhost"
    assert typed["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "localhost"}}
    ]


def test_http_transport_and_workers(make_config: Callable[..., Config], keys: dict[str, str], tmp_path: Path) -> None:
    sqlite = f"sqlite:///{tmp_path / 'db'}"
    config = make_config(
        **keys, ext_authz_transport="http", workers=2, session_store=sqlite, http_address="127.0.0.1:9300"
    )
    data = bootstrap(config)
    grpc = next(c for c in data["static_resources"]["clusters"] if c["name"] == AUTHZ_CLUSTER)
    assert grpc["transport_socket"]["typed_config"]["common_tls_context"]["alpn_protocols"] == ["http/1.1"]
    assert "health_checks" in grpc  # the workers' health checks go through the same socket
    text = yaml.safe_dump(data)
    assert "uri: https://127.0.0.1:9191" in text
    envoy_validate(render_bootstrap(config), tmp_path)


def test_bootstrap_validates(make_config: Callable[..., Config], keys: dict[str, str], tmp_path: Path) -> None:
    envoy_validate(render_bootstrap(make_config(**keys, internal_tls_server_name="localhost")), tmp_path)


def test_snippet_carries_the_same_clusters(make_config: Callable[..., Config], keys: dict[str, str]) -> None:
    config = make_config(**keys)
    pieces = yaml.safe_load(render_snippet(config))
    assert pieces["clusters"] == authz_clusters(config)


def test_tls_on_or_off_needs_a_restart_and_new_credentials_wait_for_one(
    make_config: Callable[..., Config], keys: dict[str, str]
) -> None:
    config = make_config(**keys)
    assert restart_needed(config, make_config(**keys)) == []  # the same files read again: no change
    assert restart_needed(config, dataclasses.replace(config, internal_tls=None)) == ["internal_tls_*"]
    # A renewed certificate (here: another server name) must not hold up the rest of a reload: the
    # running ports keep theirs, the rest applies.
    renewed = make_config(**keys, internal_tls_server_name="localhost", log_level="debug")
    assert restart_needed(config, renewed) == []
    applied, kept = kept_credentials(config, renewed)
    assert kept == ["internal_tls_*"] and applied.internal_tls == config.internal_tls and applied.log_level == "debug"


def test_without_a_client_san_any_certificate_of_the_ca_is_warned_about(
    make_config: Callable[..., Config], keys: dict[str, str]
) -> None:
    pinned = make_config(**keys)
    assert pinned.internal_tls is not None and pinned.internal_tls.client_san == "envoy"
    assert not any("internal_tls_client_san" in w for w in pinned.warnings)
    loose = make_config(**{k: v for k, v in keys.items() if k != "internal_tls_client_san"})
    assert loose.internal_tls is not None and loose.internal_tls.client_san == ""
    assert any("internal_tls_client_san is unset" in w for w in loose.warnings)
