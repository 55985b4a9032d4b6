"""The dynamic mode's files (`authz envoy-config --out DIR`): what Envoy accepts, how they are
written (owner-only, by rename, unchanged ones left alone) and in which order."""

from __future__ import annotations

import asyncio
import copy
import logging
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.cli import main
from authz.cli.envoy_files import _Follower
from authz.config import Config, load_config
from authz.envoy import files
from authz.envoy.bootstrap import bootstrap, cluster_name, clusters_in, dynamic_bootstrap
from authz.envoy.files import ConfigDirWriter, Publisher, publish
from authz.ops.reload import Reloader, Result
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime

from .test_bootstrap import ROUTES, envoy_validate

NAMES = ("clusters.yaml", "routes.yaml", "envoy.yaml")


def _resources(path: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "@type"} for r in yaml.safe_load(path.read_text())["resources"]]


def _routed_clusters(path: Path) -> set[str]:
    """The clusters that the routes in a routes.yaml send to."""
    (routes,) = _resources(path)
    return {
        route["route"]["cluster"] for host in routes["virtual_hosts"] for route in host["routes"] if "route" in route
    }


def _clusters(path: Path) -> set[str]:
    return set(clusters_in(path.read_text()))


@pytest.fixture
def full(make_config: Callable[..., Config]) -> Config:
    return make_config(routes=ROUTES, jwt_claims_headers={"X-Email": "email"})


def test_the_bootstrap_and_the_files_validate(full: Config, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert publish(full, out, admin_address="127.0.0.1:9901") == list(NAMES)
    envoy_validate((out / "envoy.yaml").read_text(), tmp_path)
    # `--mode validate` does not read the xDS files: put their resources in a bootstrap of their own.
    whole = yaml.safe_load((out / "envoy.yaml").read_text())
    manager = whole["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    del manager["rds"]
    (manager["route_config"],) = _resources(out / "routes.yaml")
    whole["static_resources"]["clusters"] += _resources(out / "clusters.yaml")
    del whole["dynamic_resources"]
    envoy_validate(yaml.safe_dump(whole), tmp_path)


def test_the_dynamic_bootstrap_is_the_static_one_with_rds_and_cds(full: Config, tmp_path: Path) -> None:
    static, dynamic = bootstrap(full), dynamic_bootstrap(full, str(tmp_path))
    manager = dynamic["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    source = {
        "path_config_source": {"path": f"{tmp_path}/routes.yaml", "watched_directory": {"path": str(tmp_path)}},
        "resource_api_version": "V3",
    }
    assert manager.pop("rds") == {"route_config_name": "authz-routes", "config_source": source}
    static_manager = static["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    static_manager.pop("route_config")
    assert manager == static_manager
    assert dynamic["dynamic_resources"]["cds_config"]["path_config_source"]["path"] == f"{tmp_path}/clusters.yaml"
    assert [c["name"] for c in dynamic["static_resources"]["clusters"]] == ["authz-grpc", "authz-http"]


def test_files_are_owner_only_and_a_new_folder_too(full: Config, tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    publish(full, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for name in NAMES:
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
    # No temporary file left behind; the writers' lock file stays.
    assert sorted(p.name for p in out.iterdir()) == sorted([*NAMES, ".authz-envoy.lock"])
    document = yaml.safe_load((out / "clusters.yaml").read_text())
    assert len(document["version_info"]) == 16


def test_unchanged_files_are_left_alone(full: Config, make_config: Callable[..., Config], tmp_path: Path) -> None:
    publish(full, tmp_path)
    before = {name: (tmp_path / name).stat().st_ino for name in NAMES}
    assert publish(full, tmp_path) == []
    # A policy is authz's alone: Envoy's files stay as they are.
    routes = copy.deepcopy(ROUTES)
    routes[1]["allowed_domains"] = ["example.org"]
    sleeps: list[float] = []
    assert (
        publish(make_config(routes=routes, jwt_claims_headers={"X-Email": "email"}), tmp_path, sleep=sleeps.append)
        == []
    )
    assert {name: (tmp_path / name).stat().st_ino for name in NAMES} == before
    # A new timeout is a new routes.yaml only, and with no cluster to order, no pause.
    routes[1]["timeout"] = "5s"
    changed = make_config(routes=routes, jwt_claims_headers={"X-Email": "email"})
    assert publish(changed, tmp_path, sleep=sleeps.append) == ["routes.yaml"]
    assert sleeps == []


def test_a_route_never_names_a_cluster_envoy_does_not_have(
    make_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def config(*ids: str) -> Config:
        return make_config(
            routes=[{"id": i, "from": f"http://{i}.localhost", "to": "http://127.0.0.1:9000"} for i in ids]
        )

    publish(config("kept", "gone"), tmp_path)
    steps: list[tuple[str, set[str], set[str]]] = []
    write = files.write_file

    def recording(path: Path, text: str) -> bool:
        wrote = write(path, text)
        if wrote and path.name != "envoy.yaml":
            routed, present = _routed_clusters(tmp_path / "routes.yaml"), _clusters(tmp_path / "clusters.yaml")
            steps.append((path.name, routed, present))
            assert routed - {"authz-http"} <= present, f"after {path.name}: routes name clusters Envoy lacks"
        return wrote

    monkeypatch.setattr(files, "write_file", recording)
    sleeps: list[float] = []
    assert publish(config("kept", "new"), tmp_path, sleep=sleeps.append, pause=0.5) == [
        "clusters.yaml", "routes.yaml", "clusters.yaml"
    ]  # fmt: skip
    kept, gone, new = "route-kept", "route-gone", "route-new"
    assert [(name, present) for name, _, present in steps] == [
        ("clusters.yaml", {kept, gone, new}),  # the union: the new cluster before a route uses it
        ("routes.yaml", {kept, gone, new}),
        ("clusters.yaml", {kept, new}),  # the removed route's cluster last
    ]
    assert steps[1][1] == {"authz-http", kept, new}
    # Envoy is given time after each step that the next relies on (what is left of it when the step ran).
    assert len(sleeps) == 2 and all(0 < pause <= 0.5 for pause in sleeps)


def test_a_first_run_does_not_wait_and_junk_clusters_count_as_none(full: Config, tmp_path: Path) -> None:
    (tmp_path / "clusters.yaml").write_text("not: [a, cds file")
    sleeps: list[float] = []
    assert publish(full, tmp_path, sleep=sleeps.append) == list(NAMES)
    assert sleeps == []
    assert clusters_in("- a list") == {} and clusters_in("resources: [1, {name: x}]") == {}


def test_a_file_in_the_way_is_an_error(full: Config, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        publish(full, tmp_path / "file")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--watch"], "--watch: needs --out DIR"),
        (["--out", "DIR", "--snippet"], "--out: not with --snippet"),
        (["--out", ""], "--out: expected a directory"),
        (["--out", "FILE"], "--out: cannot write"),
        (["--admin-address", "nope", "--out", "DIR"], "--admin-address: expected host:port"),
    ],
)
def test_odd_options_are_refused(
    write_config: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    path = write_config()
    (tmp_path / "FILE").write_text("")
    extra = [str(tmp_path / e) if e in ("DIR", "FILE") else e for e in extra]
    assert main(["envoy-config", "-c", str(path), *extra]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "DIR").exists()


def test_out_writes_the_files_and_prints_nothing(
    write_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(session_store=f"sqlite://{tmp_path}/sessions.db", http_address="127.0.0.1:9300")
    assert main(["envoy-config", "-c", str(path), "--out", str(tmp_path / "out"), "--workers", "2"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "envoy.yaml" in err
    bootstrap_data = yaml.safe_load((tmp_path / "out" / "envoy.yaml").read_text())
    (grpc,) = [c for c in bootstrap_data["static_resources"]["clusters"] if c["name"] == "authz-grpc"]
    assert len(grpc["load_assignment"]["endpoints"][0]["lb_endpoints"]) == 2  # --workers applies


def test_watch_keeps_the_files_when_the_new_config_is_invalid(
    write_config: Callable[..., Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_config()
    out = tmp_path / "out"
    config = load_config(path)
    publish(config, out)
    follower = _Follower(str(path), config, Publisher(out, pause=0), workers=None)
    before = {name: (out / name).read_text() for name in NAMES}
    path.write_text(path.read_text().replace("cookie_secure: false", "cookie_secure: false\ncookie_nmae: x"))
    with caplog.at_level(logging.ERROR, "authz"):
        asyncio.run(follower.update("test"))
    assert "cookie_nmae: unknown key" in caplog.text and "Envoy's files stay as they are" in caplog.text
    assert {name: (out / name).read_text() for name in NAMES} == before
    path.write_text(path.read_text().replace("cookie_nmae: x", "").replace("public.localhost", "other.localhost"))
    asyncio.run(follower.update("test"))
    assert "other.localhost" in (out / "routes.yaml").read_text()
    assert str(path) in follower.files()


def test_envoy_config_dir_is_read_relative_to_the_config(make_config: Callable[..., Config], tmp_path: Path) -> None:
    assert make_config().envoy_config_dir is None
    assert make_config(envoy_config_dir="envoy").envoy_config_dir == str(tmp_path / "envoy")
    (tmp_path / "file").write_text("")
    with pytest.raises(Exception, match="envoy_config_dir: 'file' is not a directory"):
        make_config(envoy_config_dir="file")


def test_serve_writes_the_route_files_after_a_reload(write_config: Callable[..., Path], tmp_path: Path) -> None:
    path = write_config(envoy_config_dir="out")
    out = tmp_path / "out"
    envoy_files = ConfigDirWriter()
    holder = RuntimeHolder(Runtime.build(load_config(path)))
    reloader = Reloader(holder, str(path), on_swapped=envoy_files.on_swapped)

    async def scenario() -> None:
        await envoy_files.publish(holder.current.config)
        written = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        assert written == ["clusters.yaml", "routes.yaml"]  # the bootstrap is --out's
        path.write_text(path.read_text().replace("public.localhost", "other.localhost"))
        assert await reloader.reload("test") is Result.OK
        await reloader.close()

    asyncio.run(scenario())
    assert "other.localhost" in (out / "routes.yaml").read_text()


def test_inserting_a_route_renames_no_other_cluster(make_config: Callable[..., Config], tmp_path: Path) -> None:
    def config(*ids: str) -> Config:
        return make_config(
            routes=[{"id": i, "from": f"http://{i}.localhost", "to": "http://127.0.0.1:9000"} for i in ids]
        )

    publish(config("a", "b"), tmp_path)
    sleeps: list[float] = []
    publish(config("first", "a", "b"), tmp_path, sleep=sleeps.append)
    assert set(clusters_in((tmp_path / "clusters.yaml").read_text())) == {"route-first", "route-a", "route-b"}
    assert len(sleeps) == 1 and 0 < sleeps[0] <= files.APPLY_PAUSE  # one cluster added, none removed: one wait
    long_id = make_config(routes=[{"from": "http://x.localhost", "to": "http://127.0.0.1:9000"}]).routes[0]
    assert len(long_id.id) == 64 and cluster_name(long_id) == f"route-{long_id.id[:32]}-" + cluster_name(long_id)[-8:]


def _ids(make_config: Callable[..., Config], *ids: str) -> Config:
    return make_config(routes=[{"id": i, "from": f"http://{i}.localhost", "to": "http://127.0.0.1:9000"} for i in ids])


def test_a_writer_restarted_mid_change_still_waits_before_the_routes(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    publish(_ids(make_config, "a"), tmp_path)
    # A writer wrote the union of clusters, then was killed during its pause.
    killed: list[float] = []
    original = files.write_file

    def die_after_the_clusters(path: Path, text: str) -> bool:
        if path.name == "routes.yaml":
            raise KeyboardInterrupt
        return original(path, text)

    files.write_file = die_after_the_clusters  # type: ignore[assignment]
    try:
        with pytest.raises(KeyboardInterrupt):
            publish(_ids(make_config, "a", "b"), tmp_path, sleep=killed.append)
    finally:
        files.write_file = original  # type: ignore[assignment]
    # Restarted at once: the clusters file is already the union, yet the new route's cluster is
    # not yet in any served route: what is left of the pause is waited for.
    sleeps: list[float] = []
    assert publish(_ids(make_config, "a", "b"), tmp_path, sleep=sleeps.append) == ["routes.yaml"]
    assert len(sleeps) == 1 and 0 < sleeps[0] <= files.APPLY_PAUSE


def test_with_envoys_admin_the_routes_wait_until_envoy_has_the_new_clusters(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    publish(_ids(make_config, "a"), tmp_path)
    asked: list[set[str]] = []

    def ready(names: set[str]) -> bool:  # a DNS cluster: listed on the third look
        asked.append(names)
        return len(asked) >= 3

    sleeps: list[float] = []
    publish(_ids(make_config, "a", "b"), tmp_path, sleep=sleeps.append, ready=ready)
    assert asked == [{"route-b"}] * 3 and sleeps == [0.1, 0.1]


def test_two_writers_at_once_never_leave_a_route_without_its_cluster(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    publish(_ids(make_config, "r0"), tmp_path)
    for _ in range(5):
        threads = [
            threading.Thread(target=publish, args=(_ids(make_config, "r0", other), tmp_path), kwargs={"pause": 0.01})
            for other in ("ra", "rb")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        routed = _routed_clusters(tmp_path / "routes.yaml") - {"authz-http"}
        assert routed <= _clusters(tmp_path / "clusters.yaml")


def test_a_file_made_group_readable_stays_so(make_config: Callable[..., Config], tmp_path: Path) -> None:
    publish(_ids(make_config, "a"), tmp_path)
    (tmp_path / "routes.yaml").chmod(0o640)
    publish(_ids(make_config, "a", "b"), tmp_path, sleep=lambda _: None)
    assert stat.S_IMODE((tmp_path / "routes.yaml").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "clusters.yaml").stat().st_mode) == 0o600
