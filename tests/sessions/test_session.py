from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from authz.errors import InvalidSession
from authz.sessions.codec import HandleCodec
from authz.sessions.session import Session, SessionHandle
from authz.sessions.stores import open_store

NOW = 1_800_000_000
SECRET = os.urandom(32)
HANDLE = SessionHandle("sid", "uid", "app.example.com", NOW, NOW + 3600)


@pytest.fixture
def codec() -> HandleCodec:
    return HandleCodec(os.urandom(32))


def test_round_trip(codec: HandleCodec) -> None:
    token = codec.seal(HANDLE)
    assert codec.open(token, "app.example.com", NOW + 1) == HANDLE
    assert "uid" not in base64.urlsafe_b64decode(token + "==").decode("latin-1")  # confidential
    assert codec.seal(HANDLE) != token  # fresh nonce each time


@pytest.mark.parametrize(
    ("mutate", "host", "now"),
    [
        (lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"), "app.example.com", NOW),
        (lambda t: t[:10], "app.example.com", NOW),
        (lambda t: "", "app.example.com", NOW),
        (lambda t: "!!!" + t, "app.example.com", NOW),
        (lambda t: "x" * 5000, "app.example.com", NOW),
        (lambda t: t, "other.example.com", NOW),
        (lambda t: t, "app.example.com", NOW + 3600),
        (lambda t: t, "app.example.com", NOW - 3600),
    ],
)
def test_rejections(codec: HandleCodec, mutate, host: str, now: int) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidSession):
        codec.open(mutate(codec.seal(HANDLE)), host, now)


def test_other_deployment_key(codec: HandleCodec) -> None:
    with pytest.raises(InvalidSession):
        HandleCodec(os.urandom(32)).open(codec.seal(HANDLE), "app.example.com", NOW)


def test_domain_handles_cover_subdomains(codec: HandleCodec) -> None:
    handle = SessionHandle("s", "u", ".example.com", NOW, NOW + 60)
    token = codec.seal(handle)
    assert codec.open(token, "a.example.com", NOW) == handle
    assert codec.open(token, "example.com", NOW) == handle
    with pytest.raises(InvalidSession):
        codec.open(token, "evilexample.com", NOW)


def test_sqlite_is_shared_between_connections(tmp_path: Path) -> None:
    first = open_store(f"sqlite://{tmp_path / 'x.db'}", secret=SECRET)
    second = open_store(f"sqlite://{tmp_path / 'x.db'}", secret=SECRET)
    first.put(Session("s", "u", expires_at=NOW + 10))
    assert second.get("s", NOW) is not None
    first.close()
    second.close()


def test_session_repr_hides_tokens() -> None:
    session = Session("s", "u", id_token="secret-id-token", access_token="secret-access")
    assert "secret" not in repr(session)


@pytest.mark.parametrize(
    "wire",
    [None, [], ["s", "u", "h", 1], ["s", "u", "h", 1, 2, 3], ["s", "u", "h", "1", 2], ["s", 7, "h", 1, 2],
     ["s", "u", "h", True, 2], {"s": "s"}],
)  # fmt: skip
def test_handle_wire_form_refuses_anything_else(wire: object) -> None:
    with pytest.raises(ValueError):
        SessionHandle.from_wire(wire)


def test_handle_wire_form_round_trips() -> None:
    handle = SessionHandle("sid", "uid", ".example.com", 1, 2)
    assert SessionHandle.from_wire(handle.to_wire()) == handle
