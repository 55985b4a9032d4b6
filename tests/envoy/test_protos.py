"""The committed generated code matches protos/, and the wire format matches Envoy's numbers."""

from __future__ import annotations

import filecmp
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2

ROOT = Path(__file__).resolve().parents[2]


def _tree(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="needs grpcio-tools")
def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(out)], check=True)
    committed, fresh = _tree(ROOT / "authz" / "_proto"), _tree(out)
    assert sorted(committed) == sorted(fresh), "run `make protos` and commit the result"
    stale = [name for name in fresh if not filecmp.cmp(fresh[name], committed[name], shallow=False)]
    assert not stale, f"stale generated files (run `make protos`): {stale}"


def _number(message: type, dotted: str) -> int:
    descriptor = message.DESCRIPTOR  # type: ignore[attr-defined]
    *parents, leaf = dotted.split(".")
    for name in parents:
        descriptor = descriptor.fields_by_name[name].message_type
    return int(descriptor.fields_by_name[leaf].number)


# Field numbers as published in Envoy's api/envoy/service/auth/v3 and config/core/v3.
ENVOY_NUMBERS = [
    (external_auth_pb2.CheckRequest, "attributes", 1),
    (external_auth_pb2.CheckResponse, "status", 1),
    (external_auth_pb2.CheckResponse, "denied_response", 2),
    (external_auth_pb2.CheckResponse, "ok_response", 3),
    (external_auth_pb2.CheckResponse, "dynamic_metadata", 4),
    (external_auth_pb2.DeniedHttpResponse, "status", 1),
    (external_auth_pb2.DeniedHttpResponse, "headers", 2),
    (external_auth_pb2.DeniedHttpResponse, "body", 3),
    (external_auth_pb2.OkHttpResponse, "headers", 2),
    (external_auth_pb2.OkHttpResponse, "headers_to_remove", 5),
    (external_auth_pb2.OkHttpResponse, "response_headers_to_add", 6),
    (attribute_context_pb2.AttributeContext, "source", 1),
    (attribute_context_pb2.AttributeContext, "destination", 2),
    (attribute_context_pb2.AttributeContext, "request", 4),
    (attribute_context_pb2.AttributeContext, "context_extensions", 10),
    (attribute_context_pb2.AttributeContext, "metadata_context", 11),
    (attribute_context_pb2.AttributeContext, "tls_session", 12),
    (attribute_context_pb2.AttributeContext, "request.http", 2),
    (attribute_context_pb2.AttributeContext, "request.time", 1),
    (attribute_context_pb2.AttributeContext, "request.http.id", 1),
    (attribute_context_pb2.AttributeContext, "request.http.method", 2),
    (attribute_context_pb2.AttributeContext, "request.http.headers", 3),
    (attribute_context_pb2.AttributeContext, "request.http.path", 4),
    (attribute_context_pb2.AttributeContext, "request.http.host", 5),
    (attribute_context_pb2.AttributeContext, "request.http.scheme", 6),
    (attribute_context_pb2.AttributeContext, "request.http.protocol", 10),
    (attribute_context_pb2.AttributeContext, "request.http.header_map", 13),
    (attribute_context_pb2.AttributeContext, "source.address", 1),
    (attribute_context_pb2.AttributeContext, "source.certificate", 5),
    (attribute_context_pb2.AttributeContext, "source.address.socket_address", 1),
    (attribute_context_pb2.AttributeContext, "source.address.socket_address.address", 2),
    (attribute_context_pb2.AttributeContext, "source.address.socket_address.port_value", 3),
    (base_pb2.HeaderValueOption, "header", 1),
    (base_pb2.HeaderValueOption, "append", 2),
    (base_pb2.HeaderValueOption, "append_action", 3),
    (base_pb2.HeaderValue, "key", 1),
    (base_pb2.HeaderValue, "value", 2),
    (base_pb2.HeaderValue, "raw_value", 3),
]


@pytest.mark.parametrize(("message", "field", "number"), ENVOY_NUMBERS)
def test_field_numbers_match_envoy(message: type, field: str, number: int) -> None:
    assert _number(message, field) == number


def test_append_action_values() -> None:
    assert base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD == 2
    assert base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD == 0


def test_grpc_method_path() -> None:
    service = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"]
    assert service.full_name == "envoy.service.auth.v3.Authorization"
    assert service.methods_by_name["Check"].full_name == "envoy.service.auth.v3.Authorization.Check"


def test_upb_backend() -> None:
    from google.protobuf.internal import api_implementation

    assert api_implementation.Type() == "upb"
