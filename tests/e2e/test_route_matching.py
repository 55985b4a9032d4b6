"""authz's own route matching (`route_matching: host_path`) agrees with Envoy's: the same requests go
through the generated Envoy config, whose ext_authz call names the route Envoy picked (its
`route_id` context extension), and through authz's RouteTable with the host and path that call
carries. A recording ext_authz server stands in for authz and allows everything, so every route
Envoy picks is seen; a request Envoy answers itself (no route) must match nothing in authz."""

from __future__ import annotations

import base64
import secrets
import string
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx2
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz._proto.envoy.service.auth.v3 import external_auth_pb2 as pb
from authz._proto.envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc
from authz.check.routing import RouteTable, envoy_host
from authz.config import load_config
from authz.dev.stack import Process, free_port, start_envoy
from authz.signing.keys import generate_p256_pem
from tests.check.test_routing import ROUTES

from .upstream import Recorder

pytestmark = pytest.mark.e2e


class Checks(pb_grpc.AuthorizationServicer):
    """Allows every Check and remembers, by the request's `x-case` header, what Envoy sent."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str | None, str, str]] = {}
        self.lock = threading.Lock()

    def Check(self, request: pb.CheckRequest, context: grpc.ServicerContext) -> pb.CheckResponse:
        http = request.attributes.request.http
        route_id = request.attributes.context_extensions.get("route_id")
        with self.lock:
            self.seen[http.headers.get("x-case", "")] = (route_id, http.host, http.path)
        return pb.CheckResponse()


class Matching:
    """The generated Envoy in front of the recording ext_authz server, and authz's table."""

    def __init__(self, tmp: Path) -> None:
        self.upstream = Recorder()
        self.checks = Checks()
        self.grpc = grpc.server(ThreadPoolExecutor(4), options=[("grpc.so_reuseport", 0)])
        pb_grpc.add_AuthorizationServicer_to_server(self.checks, self.grpc)
        grpc_port = self.grpc.add_insecure_port("127.0.0.1:0")
        self.grpc.start()
        self.port, admin = free_port(), free_port()
        config = {
            "insecure_server": True,
            "address": f"127.0.0.1:{self.port}",
            "authenticate_service_url": f"http://authenticate.localhost:{self.port}",
            "grpc_address": f"127.0.0.1:{grpc_port}",
            "http_address": f"127.0.0.1:{free_port()}",
            "shared_secret": base64.b64encode(secrets.token_bytes(32)).decode(),
            "cookie_secret": base64.b64encode(secrets.token_bytes(32)).decode(),
            "signing_key": base64.b64encode(generate_p256_pem()).decode(),
            "session_store": "memory:",
            "ext_authz_transport": "grpc",
            "route_matching": "host_path",
            "routes": [{**r, "to": f"http://127.0.0.1:{self.upstream.port}"} for r in ROUTES],
        }
        path = tmp / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.table = RouteTable.build(load_config(path).routes)
        out = subprocess.run([sys.executable, "-m", "authz", "envoy-config", "-c", str(path), "--admin-address",
                              f"127.0.0.1:{admin}"], capture_output=True, text=True, check=True)  # fmt: skip
        (tmp / "envoy.yaml").write_text(out.stdout)
        self.envoy: Process = start_envoy(tmp / "envoy.yaml", admin, tmp)
        self.client = httpx2.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        self.count = 0

    def compare(self, host: str, path: str) -> tuple[str | None, str | None]:
        """(the route Envoy picked, the route authz picks from the Check Envoy sent) for one request."""
        self.count += 1
        case = str(self.count)
        self.client.get(f"http://127.0.0.1:{self.port}{path}", headers={"host": host, "x-case": case})
        seen = self.checks.seen.get(case)
        if seen is None:  # Envoy answered itself: no route there, so none in authz either
            found = self.table.match(envoy_host(host), path)
            return None, found.id if found else None
        envoy_route, sent_host, sent_path = seen
        found = self.table.match(envoy_host(sent_host), sent_path)
        return envoy_route or None, found.id if found else None

    def close(self) -> None:
        self.client.close()
        self.envoy.stop()
        self.grpc.stop(None)
        self.upstream.close()


@pytest.fixture(scope="module")
def matching(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matching]:
    made = Matching(tmp_path_factory.mktemp("matching"))
    yield made
    made.close()


@pytest.mark.parametrize(
    ("host", "path"),
    [
        ("app.localhost", "/api/x"),
        ("app.localhost", "/api"),
        ("app.localhost", "/exact?q=1"),
        ("app.localhost", "/v2/x?y=1"),
        ("app.localhost", "/xv2/x"),
        ("APP.LocalHost", "/api/x"),  # upper-case host
        ("app.localhost:8080", "/exact"),  # an explicit port
        ("app.localhost.", "/"),  # a trailing dot
        ("a.wild.localhost", "/abc"),
        ("a.wild.localhost", "/b"),  # no fallthrough to another host
        ("q.b.wild.localhost", "/abc"),  # the longest wildcard
        ("x.wild.localhost", "/a"),  # exact after the wildcard in config order
        ("y.other.localhost", "/"),  # exact before it
        ("z.other.localhost", "/"),
        ("other.localhost", "/"),
        ("over.localhost", "/abc"),  # overlapping prefixes: config order
        ("over.localhost", "/a"),
        ("q.localhost", "/find?x=1"),  # the query is not part of the path
        ("q.localhost", "/search?x=1"),  # a prefix that holds `?` never matches
        ("case.localhost", "/Admin"),
        ("case.localhost", "/admin"),
        ("nowhere.localhost", "/"),
        ("app.localhost:a.wild.localhost", "/a"),  # a "port" that is none: Envoy cuts at the last colon
        ("app.localhost:1,a.wild.localhost", "/a"),
        ("app.localhost:", "/api/x"),
        ("app.localhost:abc", "/api/x"),
    ],
)
def test_named_cases_agree(matching: Matching, host: str, path: str) -> None:
    envoy, authz = matching.compare(host, path)
    assert envoy == authz, (host, path)


_LABEL = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=6)
_KNOWN_HOSTS = [
    "app.localhost", "x.wild.localhost", "y.other.localhost", "over.localhost", "q.localhost", "case.localhost",
    "wild.localhost", "b.wild.localhost",
]  # fmt: skip
_PARENTS = ["wild.localhost", "b.wild.localhost", "other.localhost", "localhost"]
_HOSTS = st.one_of(st.sampled_from(_KNOWN_HOSTS), st.builds(lambda a, b: f"{a}.{b}", _LABEL, st.sampled_from(_PARENTS)))
_SEGMENT = st.text(string.ascii_letters + string.digits + "-_~", min_size=1, max_size=5)
_WORDS = ["api", "exact", "v1", "a", "ab", "abc", "find", "search", "Admin"]
_PATHS = st.builds(
    lambda segments, query: "/" + "/".join(segments) + (f"?{query}" if query else ""),
    st.lists(st.one_of(_SEGMENT, st.sampled_from(_WORDS)), max_size=4),
    st.one_of(st.none(), st.sampled_from(["x=1", "y", "q=/a"])),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(host=_HOSTS, port=st.sampled_from(["", ":80", ":8080"]), upper=st.booleans(), path=_PATHS)
def test_generated_hosts_and_paths_agree(matching: Matching, host: str, port: str, upper: bool, path: str) -> None:
    sent = (host.upper() if upper else host) + port
    envoy, authz = matching.compare(sent, path)
    assert envoy == authz, (sent, path)


def test_every_route_is_reached(matching: Matching) -> None:
    """The cases above are not all misses: Envoy picked most routes at least once."""
    picked: set[Any] = {route for route, _, _ in matching.checks.seen.values()}
    expected = {"api", "exact", "versioned", "app", "wild-a", "deep", "x-exact", "y-exact", "other", "ab", "a"}
    assert expected | {"query", "case"} <= picked
