"""Reload in one process: the result of each kind of change, what is kept, what is swapped."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from authz.config import Config
from authz.config.load import load_config
from authz.ops.metrics import Metrics
from authz.ops.reload import Reloader, Result, kept_credentials, restart_needed, stamp, watch
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime


def _counted(metrics: Metrics, result: str) -> float:
    needle = f'authz_config_reloads_total{{result="{result}"}} '
    line = next(line for line in metrics.exposition().decode().splitlines() if line.startswith(needle))
    return float(line.rsplit(" ", 1)[1])


@pytest.mark.parametrize(
    ("change", "keys"),
    [
        ({"session_store": "sqlite:///tmp/other.db"}, ["session_store"]),
        ({"grpc_address": "127.0.0.1:9300"}, ["grpc_address"]),
        ({"http_address": "127.0.0.1:9301"}, ["http_address"]),
        ({"address": "127.0.0.1:9302"}, ["address"]),
        ({"metrics_address": "127.0.0.1:9303"}, ["metrics_*"]),
        ({"ext_authz_transport": "http"}, ["ext_authz_transport"]),
        ({"cookie_expire": "1h", "log_level": "debug", "authorize_log_sample_rate": 0.5}, []),
    ],
)
def test_what_needs_a_restart(make_config: Callable[..., object], change: dict[str, object], keys: list[str]) -> None:
    old = make_config(session_store="sqlite:///tmp/one.db")
    new = make_config(**{"session_store": "sqlite:///tmp/one.db", **change})
    assert restart_needed(old, new) == keys  # type: ignore[arg-type]


def test_new_metrics_credentials_wait_for_a_restart_and_hold_up_nothing(make_config: Callable[..., Config]) -> None:
    basic = {"metrics_address": "127.0.0.1:9303", "metrics_basic_auth": base64.b64encode(b"prom:one").decode()}
    old = make_config(**basic)
    new = make_config(**{**basic, "metrics_basic_auth": base64.b64encode(b"prom:two").decode(), "log_level": "debug"})
    assert restart_needed(old, new) == []
    applied, kept = kept_credentials(old, new)
    assert kept == ["metrics_*"] and applied.metrics is old.metrics and applied.log_level == "debug"


def test_reload_results_and_what_carries_over(write_config: Callable[..., Path], tmp_path: Path) -> None:
    store = f"sqlite://{tmp_path}/s.db"
    path = write_config(session_store=store)
    metrics = Metrics()
    first = Runtime.build(load_config(path), metrics=metrics)
    holder = RuntimeHolder(first)
    reloader = Reloader(holder, str(path))

    async def scenario() -> None:
        assert await reloader.reload("test") is Result.UNCHANGED
        text = path.read_text()
        path.write_text(text.replace("cookie_secure: false", "cookie_secure: false\ncookie_expire: 1h"))
        assert await reloader.reload("test") is Result.OK
        second = holder.current
        assert second is not first and second.config.cookie_expire == 3600
        assert second.raw_store is first.raw_store and second.metrics is metrics  # sessions and counts kept
        path.write_text("routes: [\n")
        assert await reloader.reload("test") is Result.INVALID
        path.write_text(text.replace(store, f"sqlite://{tmp_path}/other.db"))
        assert await reloader.reload("test") is Result.RESTART_NEEDED
        assert holder.current is second  # neither was applied, even in part
        await reloader.close()

    asyncio.run(scenario())
    assert (_counted(metrics, "ok"), _counted(metrics, "invalid"), _counted(metrics, "restart_needed")) == (1, 1, 1)


def test_the_watcher_follows_renames_and_symlink_swaps(write_config: Callable[..., Path], tmp_path: Path) -> None:
    real = write_config()
    (tmp_path / "v1").mkdir()
    os.replace(real, tmp_path / "v1" / "config.yaml")
    os.symlink("v1", tmp_path / "current")
    os.symlink("current/config.yaml", tmp_path / "config.yaml")
    path = tmp_path / "config.yaml"
    holder = RuntimeHolder(Runtime.build(load_config(path)))
    reloader = Reloader(holder, str(path))
    first = holder.current

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(watch(reloader, stop, interval=0.05))
        await asyncio.sleep(0.2)
        (tmp_path / "v2").mkdir()
        text = (tmp_path / "v1" / "config.yaml").read_text()
        (tmp_path / "v2" / "config.yaml").write_text(text + "cookie_expire: 2h\n")
        os.symlink("v2", tmp_path / "next")
        os.replace(tmp_path / "next", tmp_path / "current")  # the swap a ConfigMap update makes
        for _ in range(100):
            if holder.current is not first:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task
        await reloader.close()

    asyncio.run(scenario())
    assert holder.current is not first and holder.current.config.cookie_expire == 7200
    assert stamp(str(tmp_path / "missing")) is None
