"""Metrics in one process, and the metrics listener: basic auth, TLS, client certificates."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import ipaddress
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from authz.config.model import Address, MetricsSettings, Secret
from authz.dev.stack import free_port
from authz.ops.metrics import CHECK_BUCKETS, NO_METRICS, Metrics, decision_of, use_multiprocess
from authz.ops.server import authorized, start_metrics_server


def _value(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


def test_decisions_of_answers() -> None:
    assert [decision_of(True, 200), decision_of(False, 302), decision_of(False, 401)] == ["allow", "login", "login"]
    assert [decision_of(False, s) for s in (400, 403, 404, 495, 503)] == ["deny"] * 4 + ["error"]


def test_values_move_and_labels_never_carry_a_user() -> None:
    metrics = Metrics(worker=0)
    for _ in range(3):
        metrics.check("app", "allow", ("email-ok",), 0.00004)
    metrics.check("app", "deny", ("email-unauthorized", "groups-unauthorized"), 0.002)
    metrics.session_cache(True)
    metrics.session_cache(False)
    metrics.sign_in("ok")
    metrics.idp_call("token", "idp-timeout", 5.0)
    metrics.refresh("refreshed")
    metrics.grant("active")
    metrics.reload("invalid")
    metrics.config_loaded("0123456789abcdef" * 4, 1_800_000_000.0)
    text = metrics.exposition().decode()
    assert _value(text, "authz_checks_total", route="app", decision="allow", reason="email-ok") == 3
    assert _value(text, "authz_checks_total", decision="deny", reason="email-unauthorized,groups-unauthorized") == 1
    # 40 µs falls in the 50 µs bucket, not in the 25 µs one: the buckets resolve tens of microseconds.
    assert _value(text, "authz_check_duration_seconds_bucket", decision="allow", le="2.5e-05") == 0
    assert _value(text, "authz_check_duration_seconds_bucket", decision="allow", le="5e-05") == 3
    assert _value(text, "authz_session_cache_total", result="hit") == 1
    assert _value(text, "authz_sign_ins_total", outcome="ok") == 1
    assert _value(text, "authz_sign_ins_total", outcome="idp-refused") == 0  # there from the start
    assert _value(text, "authz_idp_requests_total", endpoint="token", outcome="idp-timeout") == 1
    assert _value(text, "authz_token_refreshes_total", outcome="refreshed") == 1
    assert _value(text, "authz_jit_grants_total", state="active") == 1
    assert _value(text, "authz_config_reloads_total", result="invalid") == 1
    assert _value(text, "authz_config_hash", worker="0") == int("0123456789abc", 16)
    labels = {k for f in text_string_to_metric_families(text) for s in f.samples for k in s.labels}
    assert labels <= {"route", "decision", "reason", "result", "store", "outcome", "endpoint", "state", "worker",
                      "version", "python", "le"}  # fmt: skip


def test_checks_counted_per_thread_add_up_exactly_and_match_prometheus_own_histogram() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    metrics = Metrics(worker=0)
    durations = [0.00001, 0.00002, 0.0004, 0.03, 7.0, 12.0]  # on a bound, between bounds, past the last

    def work() -> None:
        for i in range(3000):
            metrics.check(f"r{i % 3}", "allow", ("ok",), durations[i % len(durations)])
            metrics.session_cache(i % 2 == 0)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
        metrics.flush()  # flushes while threads count lose nothing and count nothing twice
    for thread in threads:
        thread.join()
    text = metrics.exposition().decode()
    assert sum(_value(text, "authz_checks_total", route=f"r{i}") for i in range(3)) == 24000
    assert _value(text, "authz_session_cache_total", result="hit") == 12000
    assert metrics.exposition().decode() == text  # nothing new: a second flush adds nothing
    reference = Histogram("h", "h", buckets=CHECK_BUCKETS, registry=CollectorRegistry())
    for i in range(24000):
        reference.observe(durations[i % len(durations)])
    expected = {s.labels["le"]: s.value for s in reference.collect()[0].samples if s.name == "h_bucket"}
    for le, count in expected.items():
        assert _value(text, "authz_check_duration_seconds_bucket", decision="allow", le=le) == count, le
    total = _value(text, "authz_check_duration_seconds_sum", decision="allow")
    assert total == pytest.approx(sum(durations) * 4000)


def test_several_workers_flush_to_their_files_and_one_scrape_adds_them_up(tmp_path: Path) -> None:
    worker = (
        "from authz.ops.metrics import Metrics, use_multiprocess\n"
        f"use_multiprocess({str(tmp_path)!r})\n"
        "m = Metrics(worker=1)\n"
        "m.check('app', 'deny', ('no',), 0.001)\n"
        "m.check('app', 'deny', ('no',), 0.001)\n"
        "m.flush()\n"  # what its flush_loop does once a second
    )
    subprocess.run([sys.executable, "-c", worker], check=True, timeout=60)
    use_multiprocess(str(tmp_path))
    try:
        first = Metrics(worker=0)
        first.check("app", "deny", ("no",), 0.001)
        text = first.exposition().decode()  # the scraping process flushes itself
        assert _value(text, "authz_checks_total", route="app", decision="deny") == 3
        assert _value(text, "authz_check_duration_seconds_count", decision="deny") == 3
        assert _value(text, "authz_sign_ins_total", outcome="error") == 0
    finally:
        use_multiprocess(None)


def test_no_metrics_records_nothing() -> None:
    assert not NO_METRICS.enabled
    NO_METRICS.check("app", "allow", (), 0.1)  # and costs one empty call


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("Basic " + base64.b64encode(b"prom:s3cret").decode(), True),
        ("basic " + base64.b64encode(b"prom:s3cret").decode(), True),
        ("Basic " + base64.b64encode(b"prom:s3cre").decode(), False),
        ("Bearer " + base64.b64encode(b"prom:s3cret").decode(), False),
        ("Basic !!!", False),
        ("", False),
    ],
)
def test_basic_auth(header: str, ok: bool) -> None:
    assert authorized(header, b"prom:s3cret") is ok


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


Issuer = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: Issuer | None, ca: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_the_listener_over_tls_with_basic_auth_and_client_certificates(tmp_path: Path) -> None:
    ca_key = _key()
    ca = _cert("metrics test CA", ca_key, None, ca=True)
    server_key, client_key = _key(), _key()
    server, client = _cert("authz", server_key, (ca, ca_key)), _cert("prometheus", client_key, (ca, ca_key))
    (tmp_path / "ca.pem").write_bytes(_pem(ca))
    (tmp_path / "client.pem").write_bytes(_pem(client))
    (tmp_path / "client.key").write_bytes(_key_pem(client_key))
    port = free_port()
    settings = MetricsSettings(
        address=Address("127.0.0.1", port),
        basic_auth=Secret(b"prom:s3cret"),
        certificate=_pem(server),
        key=Secret(_key_pem(server_key)),
        client_ca=_pem(ca),
    )
    metrics = Metrics()
    metrics.check("app", "allow", ("accept",), 0.001)
    url = f"https://127.0.0.1:{port}/metrics"

    def verify(with_client: bool) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        if with_client:
            context.load_cert_chain(str(tmp_path / "client.pem"), str(tmp_path / "client.key"))
        return context

    async def scenario() -> None:
        listener = await start_metrics_server(metrics, settings)
        try:
            auth = ("prom", "s3cret")
            async with httpx2.AsyncClient(verify=verify(True)) as good:
                answer = await good.get(url, auth=auth)
                assert answer.status_code == 200
                assert answer.headers["content-type"].startswith("text/plain; version=")
                assert _value(answer.text, "authz_checks_total", route="app") == 1
                refused = await good.get(url, auth=("prom", "wrong"))
                assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic ")
                assert (await good.get(url)).status_code == 401
                assert (await good.get(url.replace("/metrics", "/"), auth=auth)).status_code == 404
            async with httpx2.AsyncClient(verify=verify(False)) as anonymous:
                with pytest.raises(httpx2.HTTPError):  # no client certificate: the handshake fails
                    await anonymous.get(url, auth=auth)
            async with httpx2.AsyncClient() as plain:
                with pytest.raises(httpx2.HTTPError):
                    await plain.get(url.replace("https:", "http:"), auth=auth)
        finally:
            listener.close()
            await listener.wait_closed()
        assert not list(Path("/tmp").glob("authz-metrics-tls-*/key.pem"))  # the key's file is gone

    asyncio.run(scenario())


def test_a_busy_metrics_address_is_a_clear_error() -> None:
    port = free_port()

    async def scenario() -> None:
        settings = MetricsSettings(address=Address("127.0.0.1", port))
        first = await start_metrics_server(Metrics(), settings)
        try:
            with pytest.raises(OSError, match=f"cannot listen on metrics_address 127.0.0.1:{port}"):
                await start_metrics_server(Metrics(), settings)
        finally:
            first.close()
            await first.wait_closed()

    asyncio.run(scenario())


def test_a_check_refused_before_its_route_was_looked_up_counts_under_that_route(make_config: Any) -> None:
    from authz.check.answer import error
    from authz.check.request import RequestContext
    from authz.envoy.service import Authorization
    from authz.policy.reasons import Reason
    from authz.runtime.state import Runtime
    from authz.sessions.stores import MemoryStore

    config = make_config(routes=[{"id": "app", "from": "http://app.localhost", "to": "http://127.0.0.1:9000"}])
    rt = dataclasses.replace(Runtime.build(config, MemoryStore(), metrics=Metrics()), decisions=None)
    for route_id in ("app", "nope"):
        req = RequestContext(method="GET", host="app.localhost", path="/", raw_path="/", route_id=route_id)
        Authorization.observe(rt, req, error(400, (Reason.BAD_REQUEST,), req, theme=rt.theme), 0.0)
    text = rt.metrics.exposition().decode()  # type: ignore[attr-defined]
    assert _value(text, "authz_checks_total", route="app", decision="deny", reason="bad-request") == 1
    assert _value(text, "authz_checks_total", route="unknown", decision="deny", reason="bad-request") == 1


def test_a_flush_between_a_checks_bucket_and_its_sum_leaves_nothing_behind() -> None:
    metrics = Metrics()
    metrics.check("app", "allow", (), 0.002)
    metrics.flush()
    tally = metrics._tallies[0]
    tally.latency["allow"][3] += 1  # a Check half recorded: its bucket, not yet its sum or count
    metrics.flush()
    tally.sums["allow"] += 0.5
    tally.count += 1
    text = metrics.exposition().decode()
    assert _value(text, "authz_check_duration_seconds_count", decision="allow") == 2
    assert _value(text, "authz_check_duration_seconds_sum", decision="allow") == pytest.approx(0.502)
    assert metrics.exposition().decode() == text  # and a flush with nothing new changes nothing
