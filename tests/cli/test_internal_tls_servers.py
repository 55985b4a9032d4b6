"""authz's Check servers over mutual TLS (`internal_tls_*`), each transport over a real connection:
a caller with a certificate from the internal CA is answered; one without a certificate, with one
from another CA, or in plain text never reaches Check."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx2
import pytest

from authz._proto.envoy.service.auth.v3 import external_auth_pb2 as pb
from authz._proto.envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc
from authz.cli.serve import GrpcServer
from authz.config import Config
from authz.dev.certs import Issued
from authz.dev.stack import free_port
from authz.envoy.http_check import HEALTH_PATH, HttpCheckServer
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime
from authz.sessions.stores import MemoryStore
from tests.internal_tls import write_internal_tls
from tests.pki import Pki

PUBLIC = {"id": "pub", "from": "http://pub.localhost", "to": "http://127.0.0.1:9",
          "allow_public_unauthenticated_access": True}  # fmt: skip


def _check() -> pb.CheckRequest:
    message = pb.CheckRequest()
    http = message.attributes.request.http
    http.method, http.host, http.path, http.scheme = "GET", "pub.localhost", "/", "http"
    message.attributes.context_extensions["route_id"] = "pub"
    return message


def _holder(make_config: Callable[..., Config], pki: Pki, tmp_path: Path, **overrides: str) -> RuntimeHolder:
    config = make_config(routes=[PUBLIC], **write_internal_tls(pki, tmp_path), **overrides)
    assert config.internal_tls is not None
    return RuntimeHolder(Runtime.build(config, MemoryStore()))


def _credentials(pki: Pki, client: Issued | None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=pki.root.cert_pem)
    return grpc.ssl_channel_credentials(pki.root.cert_pem, client.key_pem, client.cert_pem)


@pytest.mark.parametrize("transport", ["threads", "aio"])
def test_grpc_check_needs_a_client_certificate(
    make_config: Callable[..., Config], pki: Pki, tmp_path: Path, transport: str
) -> None:
    holder = _holder(make_config, pki, tmp_path)

    async def scenario() -> None:
        server = GrpcServer(holder, transport)
        address = f"127.0.0.1:{free_port()}"
        await server.start(address, holder.current.config.internal_tls)
        try:
            async with grpc.aio.secure_channel(address, _credentials(pki, pki.envoy)) as channel:
                answer = await pb_grpc.AuthorizationStub(channel).Check(_check(), timeout=5)
                assert answer.status.code == 0
            refused = [
                grpc.aio.secure_channel(address, _credentials(pki, None)),
                grpc.aio.secure_channel(address, _credentials(pki, pki.foreign)),
                grpc.aio.insecure_channel(address),
            ]
            for channel in refused:
                async with channel:
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await pb_grpc.AuthorizationStub(channel).Check(_check(), timeout=5)
                    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await server.stop(None)

    asyncio.run(scenario())


def _client_context(pki: Pki, client: Issued | None, folder: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=pki.root.cert_pem.decode())
    if client is not None:
        (folder / "client.pem").write_bytes(client.cert_pem + client.key_pem)
        context.load_cert_chain(folder / "client.pem")
    return context


def test_http_check_needs_a_client_certificate(make_config: Callable[..., Config], pki: Pki, tmp_path: Path) -> None:
    holder = _holder(make_config, pki, tmp_path, ext_authz_transport="http")
    port = free_port()

    async def scenario() -> None:
        server = HttpCheckServer(holder)
        await server.start(f"127.0.0.1:{port}", holder.current.config.internal_tls)
        server.set(True)
        url = f"https://127.0.0.1:{port}{HEALTH_PATH}"
        try:
            with_cert = _client_context(pki, pki.envoy, tmp_path)
            async with httpx2.AsyncClient(verify=with_cert, timeout=5) as client:
                assert (await client.get(url)).status_code == 204
            for context in (_client_context(pki, None, tmp_path), _client_context(pki, pki.foreign, tmp_path)):
                async with httpx2.AsyncClient(verify=context, timeout=5) as client:
                    with pytest.raises(httpx2.HTTPError):
                        (await client.get(url)).raise_for_status()
            async with httpx2.AsyncClient(timeout=5) as client:
                with pytest.raises(httpx2.HTTPError):  # plain text to a TLS port
                    (await client.get(f"http://127.0.0.1:{port}{HEALTH_PATH}")).raise_for_status()
        finally:
            await server.stop(None)

    asyncio.run(scenario())
