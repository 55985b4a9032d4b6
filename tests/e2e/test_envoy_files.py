"""Routes change without restarting Envoy: `authz envoy-config --out DIR --watch` beside a real Envoy
started from DIR/envoy.yaml, and `authz serve` on the same config file. A route added to the config
answers through the same Envoy process; removed, it answers 404 and its cluster is gone; an existing
route answers 200 to every request throughout."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from authz.dev.stack import Process, free_port, start_authz, start_envoy, wait_until

from .conftest import base_config
from .upstream import Recorder

pytestmark = pytest.mark.e2e


@dataclass
class Running:
    config: dict[str, Any]
    config_path: Path
    directory: Path
    envoy_port: int
    admin_port: int
    writer: Process
    authz: Process
    envoy: Process
    upstreams: tuple[Recorder, Recorder]

    def get(self, host: str) -> httpx2.Response:
        with httpx2.Client(timeout=5) as client:
            return client.get(f"http://127.0.0.1:{self.envoy_port}/", headers={"host": f"{host}:{self.envoy_port}"})

    def clusters(self) -> set[str]:
        url = f"http://127.0.0.1:{self.admin_port}/clusters?format=json"
        with urllib.request.urlopen(url, timeout=2) as answer:
            statuses = json.load(answer)["cluster_statuses"]
        return {status["name"] for status in statuses}

    def write_config(self, routes: list[dict[str, Any]]) -> None:
        """Replace the config file atomically, as a deploy does."""
        temporary = self.config_path.with_name("config.yaml.new")
        temporary.write_text(yaml.safe_dump({**self.config, "routes": routes}, sort_keys=False))
        os.replace(temporary, self.config_path)


def _config(envoy_port: int, grpc_port: int, http_port: int, upstream: int) -> dict[str, Any]:
    return {
        **base_config(envoy_port, grpc_port, http_port),
        "session_store": "memory:",
        "routes": [_route("steady", upstream)],
    }


def _route(name: str, upstream: int) -> dict[str, Any]:
    return {
        "id": name,
        "from": f"http://{name}.localhost",
        "to": f"http://127.0.0.1:{upstream}",
        "allow_public_unauthenticated_access": True,
    }


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    upstreams = (Recorder(), Recorder())
    envoy_port, admin_port, grpc_port, http_port = (free_port() for _ in range(4))
    config = _config(envoy_port, grpc_port, http_port, upstreams[0].port)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    directory = tmp_path / "envoy"
    argv = [sys.executable, "-m", "authz", "envoy-config", "-c", str(config_path), "--out", str(directory),
            "--admin-address", f"127.0.0.1:{admin_port}", "--watch"]  # fmt: skip
    writer = Process("writer", argv, tmp_path)
    started: list[Process] = [writer]
    try:
        wait_until(lambda: (directory / "envoy.yaml").exists(), 30, "envoy-config --out --watch", writer.proc)
        started.append(authz := start_authz(config_path, http_port, tmp_path))
        started.append(envoy := start_envoy(directory / "envoy.yaml", admin_port, tmp_path))
        yield Running(config, config_path, directory, envoy_port, admin_port, writer, authz, envoy, upstreams)
    finally:
        for process in reversed(started):
            process.stop()
        for upstream in upstreams:
            upstream.close()


def test_routes_come_and_go_through_the_same_envoy(running: Running) -> None:
    envoy_pid = running.envoy.proc.pid
    steady = [_route("steady", running.upstreams[0].port)]
    added = _route("added", running.upstreams[1].port)
    statuses: list[int] = []
    done = threading.Event()

    def keep_asking() -> None:
        with httpx2.Client(timeout=5) as client:
            while not done.is_set():
                try:
                    answer = client.get(
                        f"http://127.0.0.1:{running.envoy_port}/",
                        headers={"host": f"steady.localhost:{running.envoy_port}"},
                    )
                    statuses.append(answer.status_code)
                except httpx2.HTTPError:
                    statuses.append(0)
                time.sleep(0.02)

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        assert running.get("added.localhost").status_code == 404
        running.write_config([*steady, added])
        # Envoy has the route once the writer has written it, authz once it has reloaded; until both
        # do, it answers 404 (Envoy's, or authz's for a route_checksum it does not know yet).
        wait_until(lambda: running.get("added.localhost").status_code == 200, 10, "the added route", running.envoy.proc)
        assert running.upstreams[1].requests, "the added route reached its own upstream"
        assert "route-added" in running.clusters()

        running.write_config(steady)
        # authz may forget the route first (its own 404 page): wait for Envoy's.
        wait_until(
            lambda: running.get("added.localhost").text == "no route for this host\n", 10, "the removed route",
            running.envoy.proc,
        )  # fmt: skip
        assert running.get("added.localhost").status_code == 404
        wait_until(
            lambda: "route-added" not in running.clusters(),
            5,
            "its cluster removed",
            running.envoy.proc,
        )
    finally:
        done.set()
        asker.join(10)
    assert running.envoy.proc.poll() is None and running.envoy.proc.pid == envoy_pid, "Envoy was not restarted"
    assert len(statuses) > 20
    assert set(statuses) == {200}, {status: statuses.count(status) for status in set(statuses)}
    assert "envoy files written" in running.writer.output()
    assert running.writer.stop() == 0  # SIGTERM ends --watch cleanly
