"""The only module that speaks Envoy's ext_authz protobufs: CheckRequest in, CheckResponse out."""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import external_auth_pb2 as pb
from authz.check.answer import Answer
from authz.check.request import RequestContext
from authz.errors import BadRequest

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
_PERMISSION_DENIED = 7
# Where the generated config's Lua filter puts the client's certificate chain (downstream_mtls).
CLIENT_CERT_NAMESPACE = "authz.client_certificate"
_decoded = lru_cache(maxsize=1024)(unquote)


def decode_certificate(text: str) -> str:
    """The PEM of a certificate or chain Envoy URL-encoded (a base64 body is full of %2B, %2F, %0A).
    A client's requests carry the same one, and decoding it again took 6 µs per Check: up to 16 KiB
    (a chain of several certificates) the result is cached, so a hostile client's huge chains cannot
    fill memory."""
    return _decoded(text) if len(text) <= 16384 else unquote(text)


def fallback_request(check: pb.CheckRequest) -> RequestContext:
    """A minimal context for answering a request that could not be parsed (format, request id)."""
    http = check.attributes.request.http
    return RequestContext(
        method=http.method,
        host=http.host,
        path="/",
        headers=dict(http.headers),
        request_id=http.headers.get("x-request-id") or http.id,
        route_id=check.attributes.context_extensions.get("route_id", ""),
    )


def to_request(check: pb.CheckRequest) -> RequestContext:
    """Build the plain request; BadRequest when Envoy sent too little to decide on."""
    attributes = check.attributes
    http = attributes.request.http
    if not http.method or not http.host or not http.path:
        raise BadRequest("the check request lacks a method, host or path")
    headers = dict(http.headers)  # one copy; Envoy sends header names lower-cased (AttributeContext)
    source = attributes.source
    certificate = source.certificate  # the leaf (include_peer_certificate)
    filter_metadata = attributes.metadata_context.filter_metadata
    if CLIENT_CERT_NAMESPACE in filter_metadata:  # the whole chain (downstream_mtls)
        certificate = filter_metadata[CLIENT_CERT_NAMESPACE].fields["chain"].string_value
    extensions = attributes.context_extensions
    return RequestContext.build(
        method=http.method,
        host=http.host,
        target=http.path,
        scheme=http.scheme,
        headers=headers,
        lowered=True,
        source_ip=source.address.socket_address.address,
        request_id=headers.get("x-request-id") or http.id,
        route_id=extensions.get("route_id", ""),
        route_checksum=extensions.get("route_checksum", ""),
        # Envoy sends the certificate or chain URL-encoded.
        client_certificate=decode_certificate(certificate) if certificate else None,
    )


def _add_headers(options: Any, headers: tuple[tuple[str, str], ...]) -> None:
    # Every header overwrites: Envoy 1.40 appends when append_action is unset, which would put
    # our value next to a header the client forged. Set-Cookie lines (only ever in a response
    # authz writes itself) are each their own header, so they append. Filled in place: building
    # each nested message apart and copying it in costs twice as much per Check.
    add = options.add
    for key, value in headers:
        option = add(append_action=_APPEND if key == "set-cookie" else _OVERWRITE)
        header = option.header
        header.key = key
        header.value = value


def to_response(answer: Answer) -> pb.CheckResponse:
    """The CheckResponse for an answer."""
    response = pb.CheckResponse()
    status = response.status
    status.SetInParent()
    if answer.allowed:
        ok = response.ok_response
        ok.SetInParent()
        _add_headers(ok.headers, answer.headers)
        ok.headers_to_remove.extend(answer.headers_to_remove)
        return response
    status.code = _PERMISSION_DENIED
    status.message = "Access Denied"
    denied = response.denied_response
    denied.status.code = answer.status  # type: ignore[assignment]
    _add_headers(denied.headers, answer.headers)
    denied.body = answer.body
    return response
