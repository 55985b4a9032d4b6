"""Both gRPC transports of `authz serve` answer Check and grpc.health.v1, over a real channel."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest

from authz._proto.envoy.service.auth.v3 import external_auth_pb2 as pb
from authz._proto.envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc
from authz._proto.grpc.health.v1 import health_pb2, health_pb2_grpc
from authz.cli.serve import GrpcServer
from authz.config import Config
from authz.dev.stack import free_port
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime
from authz.sessions.stores import MemoryStore

PUBLIC = {"id": "pub", "from": "http://pub.localhost", "to": "http://127.0.0.1:9",
          "allow_public_unauthenticated_access": True}  # fmt: skip


def _check(route_id: str) -> pb.CheckRequest:
    message = pb.CheckRequest()
    http = message.attributes.request.http
    http.method, http.host, http.path, http.scheme = "GET", "pub.localhost", "/", "http"
    message.attributes.context_extensions["route_id"] = route_id
    return message


@pytest.mark.parametrize("transport", ["threads", "aio"])
def test_check_and_health_on_each_transport(make_config: Callable[..., Config], transport: str) -> None:
    async def scenario() -> None:
        holder = RuntimeHolder(Runtime.build(make_config(routes=[PUBLIC]), MemoryStore()))
        server = GrpcServer(holder, transport)
        address = f"127.0.0.1:{free_port()}"
        await server.start(address)
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                check = pb_grpc.AuthorizationStub(channel).Check
                assert (await check(_check("pub"), timeout=5)).status.code == 0
                assert (await check(_check("nope"), timeout=5)).denied_response.status.code == 404
                health = health_pb2_grpc.HealthStub(channel)
                watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
                first = await watch.read()
                assert first.status == health_pb2.HealthCheckResponse.NOT_SERVING
                server.health.set(True)
                second = await watch.read()
                assert second.status == health_pb2.HealthCheckResponse.SERVING
                watch.cancel()
                named = await health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
                assert named.status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        finally:
            await server.stop(None)

    asyncio.run(scenario())
