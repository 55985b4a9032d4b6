"""Reload without dropping a request: SIGHUP and file changes (atomic rename, symlink swap), an
invalid config kept out, restart-only keys refused, both workers on the new config, the new policy
in force through the real Envoy, sessions kept and new signing keys published at once."""

from __future__ import annotations

import base64
import copy
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from authz.config.load import load_config
from authz.dev.stack import wait_until
from authz.signing.keys import generate_p256_pem

from .conftest import Stack, _teardown, grpc_pass_only, launch_metered, scrape, total

pytestmark = pytest.mark.e2e
# The reload itself is the same for both transports; the route checksum reaches authz differently
# on each (a context extension, or a header from route metadata), so its test runs in both passes.
ONCE = grpc_pass_only("reload")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    running, url = launch_metered(tmp_path_factory.mktemp("reload"))
    yield running, url
    _teardown(running)


def _write(stack: Stack, config: dict[str, Any], path: Path | None = None) -> None:
    """Replace the config file atomically (a temporary name, then rename), as an editor or a deploy does."""
    target = path or stack.config_path
    temporary = target.with_name(target.name + ".new")
    temporary.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(temporary, target)


def _with_admin_deny(config: dict[str, Any], prefix: str) -> dict[str, Any]:
    changed = copy.deepcopy(config)
    (paths,) = [r for r in changed["routes"] if r["id"] == "paths"]
    paths["policy"]["deny"] = {"or": [{"http_path": {"starts_with": prefix}}]}
    return changed


def _hashes(url: str) -> dict[str, float]:
    return {dict(ls)["worker"]: v for (n, ls), v in scrape(url).items() if n == "authz_config_hash"}


def _digest_value(stack: Stack) -> int:
    return int(load_config(stack.config_path).digest[:13], 16)


def _reloads(url: str, result: str) -> float:
    return total(scrape(url), "authz_config_reloads_total", result=result)


@ONCE
def test_reloads_under_load_drop_nothing_and_the_new_policy_holds(live: tuple[Stack, str]) -> None:
    stack, url = live
    original = copy.deepcopy(stack.config)
    statuses: list[int] = []
    target = 2000

    def load() -> None:
        with stack.client("public.localhost") as client:
            while len(statuses) < target:
                try:
                    statuses.append(client.get("/").status_code)
                except httpx2.HTTPError:
                    statuses.append(0)

    loaders = [threading.Thread(target=load) for _ in range(4)]
    for thread in loaders:
        thread.start()
    reloads = 0
    try:
        while reloads < 6 or any(t.is_alive() for t in loaders):
            if reloads % 4 == 3:  # an invalid config now and then: refused, the running one kept
                stack.config_path.write_text("routes: [\n")
                stack.authz.proc.send_signal(signal.SIGHUP)
                time.sleep(0.5)
            _write(stack, _with_admin_deny(original, f"/blocked{reloads}"))
            if reloads % 2:
                stack.authz.proc.send_signal(signal.SIGHUP)  # else the file watcher sees the change
            expected = _digest_value(stack)
            wait_until(lambda: _hashes(url) == {"0": expected, "1": expected}, 15, f"reload {reloads} on both workers")  # noqa: B023
            reloads += 1
    finally:
        statuses.extend([-1] * target)  # stops the loaders whatever happened
        for thread in loaders:
            thread.join(30)
    sent = statuses[: statuses.index(-1)]
    assert len(sent) >= target
    assert set(sent) == {200}, {s: sent.count(s) for s in set(sent)}
    # The last policy is the one in force.
    last = f"/blocked{reloads - 1}/x"
    assert stack.get("paths.localhost", last, headers={"accept": "application/json"}).status_code in (401, 403)
    assert stack.get("paths.localhost", "/blocked0/x").status_code == 200
    assert _reloads(url, "invalid") >= 1
    assert "reload refused: " in stack.authz.output()


@ONCE
def test_an_invalid_config_keeps_the_running_one(live: tuple[Stack, str]) -> None:
    stack, url = live
    before_digest = _hashes(url)
    invalid = _reloads(url, "invalid")
    broken = copy.deepcopy(stack.config)
    broken["cookie_nmae"] = "x"
    _write(stack, {**_with_admin_deny(stack.config, "/nope"), "cookie_nmae": "x"})
    wait_until(lambda: _reloads(url, "invalid") > invalid, 10, "the invalid reload counted")
    assert _hashes(url) == before_digest
    assert "cookie_nmae: unknown key" in stack.authz.output()
    _write(stack, stack.config)  # back to the fixture's config
    wait_until(lambda: _hashes(url)["0"] == _digest_value(stack), 10, "the fixture's config again")


@ONCE
def test_restart_only_changes_are_refused_whole(live: tuple[Stack, str]) -> None:
    stack, url = live
    before = _hashes(url)
    refused = _reloads(url, "restart_needed")
    moved = {**_with_admin_deny(stack.config, "/everything"), "session_store": stack.config["session_store"] + ".other"}
    _write(stack, moved)
    wait_until(lambda: _reloads(url, "restart_needed") > refused, 10, "the refused reload counted")
    assert "session_store needs a restart" in stack.authz.output()
    assert _hashes(url) == before
    # Nothing of it applied: the deny rule that came with it is not in force.
    assert stack.get("paths.localhost", "/everything").status_code == 200
    _write(stack, stack.config)
    wait_until(lambda: _hashes(url)["0"] == _digest_value(stack), 10, "the fixture's config again")


@ONCE
def test_a_symlink_swap_is_seen_and_sessions_and_keys_carry_over(live: tuple[Stack, str]) -> None:
    stack, url = live
    cookie = stack.seed_session("second.localhost", user_id="u-reload", email="reload@example.com")
    sent = {"cookie": f"_pomerium={cookie}", "accept": "application/json"}
    assert stack.get("second.localhost", "/", headers=sent).status_code == 200
    old_kids = {k["kid"] for k in stack.get("public.localhost", "/.well-known/pomerium/jwks.json").json()["keys"]}
    # A ConfigMap's layout: config.yaml → ..data/config.yaml, ..data → a timestamped folder.
    folder = stack.config_path.parent
    first, second = folder / "..2026_a", folder / "..2026_b"
    first.mkdir()
    second.mkdir()
    (first / "config.yaml").write_text(yaml.safe_dump(stack.config, sort_keys=False))
    os.symlink(first.name, folder / "..data")
    link = folder / "config.view.yaml"
    os.symlink("..data/config.yaml", link)
    os.replace(link, stack.config_path)  # the file authz watches is now the ConfigMap's symlink
    wait_until(lambda: _hashes(url)["0"] == _digest_value(stack), 10, "the same config through the symlink")
    keys = [stack.config["signing_key"], base64.b64encode(generate_p256_pem()).decode()]
    (second / "config.yaml").write_text(yaml.safe_dump({**stack.config, "signing_key": "\n".join(
        base64.b64decode(k).decode() for k in keys)}, sort_keys=False))  # fmt: skip
    swap = folder / "..data.new"
    os.symlink(second.name, swap)
    os.replace(swap, folder / "..data")  # the atomic swap Kubernetes makes
    expected = _digest_value(stack)
    wait_until(lambda: _hashes(url) == {"0": expected, "1": expected}, 10, "the swapped config on both workers")
    new_kids = {k["kid"] for k in stack.get("public.localhost", "/.well-known/pomerium/jwks.json").json()["keys"]}
    assert old_kids < new_kids and len(new_kids) == 2  # the added key is published at once
    assert stack.get("second.localhost", "/", headers=sent).status_code == 200  # the session survived


def test_a_route_whose_shape_changed_answers_404_until_envoy_has_it(live: tuple[Stack, str]) -> None:
    stack, url = live
    assert stack.get("paths.localhost", "/x").status_code == 200
    reshaped = copy.deepcopy(stack.config)
    (paths,) = [r for r in reshaped["routes"] if r["id"] == "paths"]
    paths["prefix"] = "/x"  # same id, another matcher: Envoy still runs the old one
    _write(stack, reshaped)
    wait_until(lambda: _hashes(url)["0"] == _digest_value(stack), 10, "the reshaped config")
    wait_until(lambda: _hashes(url)["1"] == _digest_value(stack), 10, "the reshaped config on worker 1")
    answer = stack.get("paths.localhost", "/x", headers={"accept": "application/json"})
    assert answer.status_code == 404 and answer.json()["reasons"] == ["route-not-found"]
    assert "Envoy's route_checksum" in stack.authz.output()
    # A policy of the same shape (the public route, untouched) goes on answering.
    assert stack.get("public.localhost", "/").status_code == 200
    _write(stack, stack.config)
    wait_until(lambda: _hashes(url)["0"] == _digest_value(stack), 10, "the fixture's config again")
    wait_until(lambda: _hashes(url)["1"] == _digest_value(stack), 10, "the fixture's config again on worker 1")
    assert stack.get("paths.localhost", "/x").status_code == 200
