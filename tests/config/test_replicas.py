"""`authorize_service_urls`: the replicas Envoy dials, and the clusters it gets from them — every
worker of every replica an endpoint, health-checked, with outlier detection, and a Check that got
no answer retried on another endpoint (never one that got an answer)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.config import Address, Config
from authz.envoy.bootstrap import AUTHZ_CLUSTER, SIDECAR_CLUSTER, render_bootstrap
from authz.errors import ConfigError
from tests.envoy.test_bootstrap import envoy_validate

REPLICAS = ["http://127.0.0.1:7000", "http://127.0.0.2:7000"]


def problems(make_config: Callable[..., Config], **overrides: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        make_config(**overrides)
    return [str(p) for p in info.value.problems]


def clusters(config: Config) -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(render_bootstrap(config))
    return {c["name"]: c for c in data["static_resources"]["clusters"]}


def endpoints(cluster: dict[str, Any]) -> list[tuple[str, int]]:
    found = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    return [(e["endpoint"]["address"]["socket_address"]["address"],
             e["endpoint"]["address"]["socket_address"]["port_value"]) for e in found]  # fmt: skip


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_every_worker_of_every_replica_is_an_endpoint(
    make_config: Callable[..., Config], tmp_path: Path, transport: str
) -> None:
    config = make_config(
        authorize_service_urls=REPLICAS, workers=2, session_store="redis://127.0.0.1/0",
        grpc_address="127.0.0.1:7000", http_address="127.0.0.1:7100", ext_authz_transport=transport,
    )  # fmt: skip
    assert config.authorize_service_urls == (Address("127.0.0.1", 7000), Address("127.0.0.2", 7000))
    found = clusters(config)
    check, sidecar = found[AUTHZ_CLUSTER], found[SIDECAR_CLUSTER]
    assert endpoints(check) == [("127.0.0.1", 7000), ("127.0.0.1", 7001), ("127.0.0.2", 7000), ("127.0.0.2", 7001)]
    assert endpoints(sidecar) == [("127.0.0.1", 7100), ("127.0.0.2", 7100)]
    for cluster in (check, sidecar):
        assert cluster["health_checks"] and cluster["outlier_detection"]["consecutive_local_origin_failure"] == 1
        assert cluster["common_lb_config"]["healthy_panic_threshold"]["value"] == 0  # none serving: fail closed
        assert cluster["common_lb_config"]["update_merge_window"] == "0s"  # health changes apply at once
        outliers = cluster["outlier_detection"]
        assert outliers["enforcing_consecutive_5xx"] == outliers["enforcing_success_rate"] == 0  # not for answers
    assert sidecar["health_checks"][0]["http_health_check"]["path"] == "/healthz"
    text = render_bootstrap(config)
    filters = yaml.safe_load(text)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    ext_authz = next(f for f in filters["typed_config"]["http_filters"] if "ext_authz" in f["name"])["typed_config"]
    service = ext_authz["grpc_service"] if transport == "grpc" else ext_authz["http_service"]
    retry = service["retry_policy"]
    conditions = set(retry["retry_on"].split(","))
    assert {"connect-failure", "refused-stream", "reset"} <= conditions
    assert not conditions & {"5xx", "gateway-error", "retriable-4xx", "retriable-status-codes"}  # never a denial
    assert retry["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"
    # Envoy uses max_interval as the per-try timeout here: shorter than the Check timeout, a slow
    # Check under load would be cut and sent again.
    assert retry["retry_back_off"]["max_interval"] == "10s"  # grpc_client_timeout's default
    envoy_validate(text, tmp_path)


def test_one_endpoint_has_no_retry_and_no_health_checks(make_config: Callable[..., Config]) -> None:
    config = make_config(authorize_service_url="http://127.0.0.1:7000")
    found = clusters(config)
    assert endpoints(found[AUTHZ_CLUSTER]) == [("127.0.0.1", 7000)]
    assert "health_checks" not in found[AUTHZ_CLUSTER] and "retry_policy" not in render_bootstrap(config)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"authorize_service_urls": ["127.0.0.1:7000"]}, "expected http://host:port"),
        ({"authorize_service_urls": ["http://127.0.0.1"]}, "expected http://host:port"),
        ({"authorize_service_urls": ["http://127.0.0.1:7000/x"]}, "expected http://host:port"),
        ({"authorize_service_urls": ["https://127.0.0.1:7000"]}, "https:// needs internal_tls_*"),
        ({"authorize_service_urls": [REPLICAS[0], REPLICAS[0]]}, "is listed twice"),
        ({"authorize_service_url": REPLICAS[0], "authorize_service_urls": REPLICAS}, "not both"),
        ({"authorize_service_urls": ["http://10.0.0.5:7000"]}, "in plain text: set internal_tls_*"),
    ],
)
def test_mistakes(make_config: Callable[..., Config], overrides: dict[str, Any], expected: str) -> None:
    found = problems(make_config, **overrides)
    assert any(expected in p for p in found), found


def test_plain_text_to_another_host_only_when_said(make_config: Callable[..., Config]) -> None:
    config = make_config(authorize_service_urls=["http://10.0.0.5:7000"], insecure_internal=True)
    assert any("Envoy calls authz at 10.0.0.5:7000 in plain text" in w for w in config.warnings)
