"""Cross-check every field of our trimmed protos against envoy-data-plane's generated classes."""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, EnumDescriptor

from authz._proto.envoy.config.core.v3 import address_pb2, base_pb2
from authz._proto.envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from authz._proto.envoy.type.v3 import http_status_pb2

pytest.importorskip("envoy_data_plane")

FILES = [address_pb2, base_pb2, attribute_context_pb2, external_auth_pb2, http_status_pb2]


def _messages(descriptor: Any) -> list[Descriptor]:
    out = []
    for message in descriptor.message_types_by_name.values() if hasattr(descriptor, "message_types_by_name") else []:
        out.append(message)
        out.extend(_nested(message))
    return out


def _nested(message: Descriptor) -> list[Descriptor]:
    out = []
    for nested in message.nested_types:
        if nested.GetOptions().map_entry:
            continue
        out.append(nested)
        out.extend(_nested(nested))
    return out


def _their_class(full_name: str, package: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # betterproto2/pydantic deprecation noise on import
        module = importlib.import_module(f"envoy_data_plane.{package}")
    wanted = full_name[len(package) + 1 :].replace(".", "").lower()  # betterproto: TLSSession -> TlsSession
    (found,) = [getattr(module, name) for name in dir(module) if name.lower() == wanted]
    return found


def _cases() -> list[Any]:
    cases = []
    for file in FILES:
        package = file.DESCRIPTOR.package
        for message in _messages(file.DESCRIPTOR):
            cases.append(pytest.param(message, package, id=message.full_name))
    return cases


@pytest.mark.parametrize(("message", "package"), _cases())
def test_field_numbers_match_envoy_data_plane(message: Descriptor, package: str) -> None:
    theirs = {f.name: f.metadata["betterproto"] for f in dataclasses.fields(_their_class(message.full_name, package))}
    for field in message.fields:
        assert field.name in theirs, f"{message.full_name}.{field.name} is not in Envoy's API"
        meta = theirs[field.name]
        assert meta.number == field.number, f"{message.full_name}.{field.name}"
        assert meta.repeated == (field.is_repeated and not _is_map(field)), field.name


def _is_map(field: Any) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _enums() -> list[Any]:
    out = []
    for file in FILES:
        package = file.DESCRIPTOR.package
        enums: list[EnumDescriptor] = list(file.DESCRIPTOR.enum_types_by_name.values())
        for message in _messages(file.DESCRIPTOR):
            enums.extend(message.enum_types)
        out.extend(pytest.param(e, package, id=e.full_name) for e in enums)
    return out


@pytest.mark.parametrize(("enum", "package"), _enums())
def test_enum_values_match_envoy_data_plane(enum: EnumDescriptor, package: str) -> None:
    theirs = _their_class(enum.full_name, package)
    for value in enum.values:
        members = {m.name.upper(): int(m) for m in theirs}
        assert members.get(value.name.upper()) == value.number, f"{enum.full_name}.{value.name}"
