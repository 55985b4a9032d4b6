"""The operating keys: metrics_* and the decision log's fields, sampling, limit and format."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from authz.config import Config
from authz.config.load import load_config
from authz.config.model import DEFAULT_LOG_FIELDS
from authz.errors import ConfigError

BASIC = base64.b64encode(b"prom:s3cret").decode()
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def problems(make_config: Callable[..., Config], **overrides: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        make_config(**overrides)
    return [str(p) for p in info.value.problems]


def test_defaults(make_config: Callable[..., Config]) -> None:
    config = make_config()
    assert config.metrics.address is None
    assert config.logs.fields == DEFAULT_LOG_FIELDS
    assert (config.logs.sample_rate, config.logs.rate_limit, config.logs.format) == (1.0, 100, "json")


def test_log_fields_refuse_what_would_log_a_secret(make_config: Callable[..., Config]) -> None:
    fields = ["request-id", "query", "id-token", "body", "headers", "headers.Cookie", "headers.authorization",
              "headers.x-pomerium-authorization", "headers.", "emial"]  # fmt: skip
    out = problems(make_config, authorize_log_fields=fields)
    assert "authorize_log_fields[1]: 'query' is refused: the query string carries authorization codes and tokens" in out
    assert any(p.startswith("authorize_log_fields[2]: 'id-token' is refused") for p in out)
    assert any(p.startswith("authorize_log_fields[3]: 'body' is refused") for p in out)
    assert any(p.startswith("authorize_log_fields[4]: 'headers' is refused") for p in out)
    for i in (5, 6, 7, 8):
        assert any(p.startswith(f"authorize_log_fields[{i}]: ") and "refused" in p for p in out), i
    assert any(p.startswith("authorize_log_fields[9]: unknown field 'emial' (known: email,") for p in out)
    assert not any(p.startswith("authorize_log_fields[0]") for p in out)


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (":path", "not a header name"),  # the pseudo-header carries the query string
        (":authority", "not a header name"),
        ("user agent", "not a header name"),
        ("x-a\nx-b", "not a header name"),
        ("referer", "carries a URL with its query string"),
        ("x-forwarded-uri", "carries a URL with its query string"),
        ("x-api-key", "may carry credentials"),
        ("x-auth-request-access-token", "may carry credentials"),
        ("x-csrf-token", "may carry credentials"),
        ("x-amz-security-token", "may carry credentials"),
        ("x-forwarded-client-cert", "may carry credentials"),
        ("x-amzn-oidc-data", "may carry credentials"),
        ("dpop", "may carry credentials"),
        ("x-passcode", "may carry credentials"),
        ("x-hmac", "may carry credentials"),
        ("x-request-uri", "carries a URL with its query string"),
        ("x-ms-original-url", "carries a URL with its query string"),
        ("x-original-query", "carries a URL with its query string"),
        ("content-location", "carries a URL with its query string"),
        ("x-pomerium-jwt-assertion", "may carry credentials"),
    ],
)
def test_log_header_fields_refuse_pseudo_credential_and_url_headers(
    make_config: Callable[..., Config], header: str, why: str
) -> None:
    out = problems(make_config, authorize_log_fields=["ip", f"headers.{header}"])
    assert any(p.startswith("authorize_log_fields[1]: ") and why in p for p in out), out


def test_log_header_fields_take_ordinary_headers(make_config: Callable[..., Config]) -> None:
    names = ["headers.user-agent", "headers.x-forwarded-for", "headers.traceparent", "headers.accept-language"]
    assert make_config(authorize_log_fields=names).logs.fields == tuple(names)


def test_log_fields_select_and_pomerium_only_fields_load_with_a_warning(make_config: Callable[..., Config]) -> None:
    config = make_config(authorize_log_fields=["ip", "Email", "headers.User-Agent", "session-id", "ip"])
    assert config.logs.fields == ("ip", "email", "headers.user-agent")
    assert any("'session-id' has no value in authz" in w for w in config.warnings)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("authorize_log_sample_rate", 1.5, "expected a number from 0 to 1"),
        ("authorize_log_sample_rate", True, "expected a number from 0 to 1"),
        ("authorize_log_rate_limit", -1, "0 or more"),
        ("log_format", "logfmt", "is not one of json, text"),
    ],
)
def test_bad_log_settings(make_config: Callable[..., Config], key: str, value: object, message: str) -> None:
    assert any(p.startswith(f"{key}: ") and message in p for p in problems(make_config, **{key: value}))


def test_metrics_address_on_loopback_needs_nothing_else(make_config: Callable[..., Config]) -> None:
    config = make_config(metrics_address="127.0.0.1:9300", authorize_log_sample_rate=0.25, log_format="text")
    assert str(config.metrics.address) == "127.0.0.1:9300" and config.metrics.basic_auth is None
    assert (config.logs.sample_rate, config.logs.format) == (0.25, "text")


def test_metrics_address_elsewhere_needs_basic_auth_or_client_certificates(make_config: Callable[..., Config]) -> None:
    out = problems(make_config, metrics_address=":9300")
    assert any(p.startswith("metrics_address: 0.0.0.0:9300 is reachable from other hosts") for p in out)
    config = make_config(metrics_address="0.0.0.0:9300", metrics_basic_auth=BASIC)
    assert config.metrics.basic_auth is not None and config.metrics.basic_auth.value == b"prom:s3cret"
    assert "s3cret" not in repr(config.metrics)


def test_metrics_tls_from_files_or_base64(make_config: Callable[..., Config], tmp_path: Path) -> None:
    (tmp_path / "m.pem").write_text(PEM)
    (tmp_path / "m.key").write_text(PEM.replace("CERTIFICATE", "PRIVATE KEY"))
    tls = {
        "metrics_address": "0.0.0.0:9300",
        "metrics_certificate_file": str(tmp_path / "m.pem"),
        "metrics_key": base64.b64encode((tmp_path / "m.key").read_bytes()).decode(),
    }
    # TLS alone encrypts the scrape and lets anyone read it: off loopback, it needs client certificates.
    assert any("is reachable from other hosts" in p for p in problems(make_config, **tls))
    config = make_config(**tls, metrics_client_ca=base64.b64encode(PEM.encode()).decode())
    assert config.metrics.certificate == PEM.encode() and config.metrics.key is not None
    assert config.metrics.client_ca == PEM.encode()
    assert str(tmp_path / "m.pem") in config.files


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"metrics_address": "127.0.0.1:9300", "metrics_basic_auth": base64.b64encode(b"nocolon").decode()},
         "metrics_basic_auth: must be base64 of 'user:password' (value not shown)"),
        ({"metrics_address": "127.0.0.1:9300", "metrics_certificate": base64.b64encode(PEM.encode()).decode()},
         "metrics_certificate: set both metrics_certificate and metrics_key"),
        ({"metrics_address": "127.0.0.1:9300", "metrics_key": "not base64!"},
         "metrics_key: is not base64 PEM (value not shown)"),
        ({"metrics_basic_auth": BASIC}, "metrics_basic_auth: has no effect without metrics_address"),
        ({"metrics_address": "127.0.0.1:9192"}, "metrics_address: 127.0.0.1:9192 is already http_address"),
        ({"metrics_address": "127.0.0.1:9191"}, "metrics_address: 127.0.0.1:9191 is already grpc_address"),
        ({"metrics_address": "localhost"}, "metrics_address: expected host:port"),
    ],
)  # fmt: skip
def test_bad_metrics_settings(make_config: Callable[..., Config], overrides: dict[str, Any], message: str) -> None:
    out = problems(make_config, **overrides)
    assert any(p.startswith(message) for p in out), out


def test_the_digest_covers_the_files_the_config_names(tmp_path: Path) -> None:
    secret = tmp_path / "cookie.secret"
    secret.write_text(base64.b64encode(b"c" * 32).decode())
    path = tmp_path / "config.yaml"
    path.write_text(
        "insecure_server: true\nauthenticate_service_url: http://auth.localhost\n"
        f"shared_secret: {base64.b64encode(b's' * 32).decode()}\ncookie_secret_file: cookie.secret\n"
        f"signing_key: {base64.b64encode(_signing_pem()).decode()}\n"
    )
    first = load_config(path)
    assert first.files == (str(secret),) and len(first.digest) == 64
    assert load_config(path).digest == first.digest
    secret.write_text(base64.b64encode(b"d" * 32).decode())
    assert load_config(path).digest != first.digest


def _signing_pem() -> bytes:
    from authz.signing.keys import generate_p256_pem

    return generate_p256_pem()
