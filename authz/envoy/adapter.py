"""The only module that speaks Envoy's ext_authz protobufs: CheckRequest in, CheckResponse out."""

from __future__ import annotations

from urllib.parse import unquote

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import external_auth_pb2 as pb
from authz._proto.envoy.type.v3 import http_status_pb2
from authz._proto.google.rpc import status_pb2
from authz.check.answer import Answer
from authz.check.request import RequestContext
from authz.errors import BadRequest

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
_PERMISSION_DENIED = 7


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
    return RequestContext.build(
        method=http.method,
        host=http.host,
        target=http.path,
        scheme=http.scheme,
        headers=dict(http.headers),
        source_ip=attributes.source.address.socket_address.address,
        request_id=http.headers.get("x-request-id") or http.id,
        route_id=attributes.context_extensions.get("route_id", ""),
        # Envoy sends the peer certificate URL-encoded (include_peer_certificate).
        client_certificate=unquote(attributes.source.certificate) if attributes.source.certificate else None,
    )


def _options(headers: tuple[tuple[str, str], ...]) -> list[base_pb2.HeaderValueOption]:
    # Every header overwrites: Envoy 1.40 appends when append_action is unset, which would put
    # our value next to a header the client forged. Set-Cookie lines (only ever in a response
    # authz writes itself) are each their own header, so they append.
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=k, value=v), append_action=_APPEND if k == "set-cookie" else _OVERWRITE
        )
        for k, v in headers
    ]


def to_response(answer: Answer) -> pb.CheckResponse:
    """The CheckResponse for an answer."""
    if answer.allowed:
        return pb.CheckResponse(
            status=status_pb2.Status(code=0),
            ok_response=pb.OkHttpResponse(
                headers=_options(answer.headers), headers_to_remove=list(answer.headers_to_remove)
            ),
        )
    return pb.CheckResponse(
        status=status_pb2.Status(code=_PERMISSION_DENIED, message="Access Denied"),
        denied_response=pb.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=answer.status),  # type: ignore[arg-type]
            headers=_options(answer.headers),
            body=answer.body,
        ),
    )
