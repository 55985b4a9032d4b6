"""A do-nothing ext_authz server: every Check is OK. The Python floor the benchmark compares with.

python scripts/bench/floor.py aio PORT      # grpc.aio (python-floor)
python scripts/bench/floor.py threads PORT  # grpcio's thread-pool server (python-floor-sync)
python scripts/bench/floor.py uvloop PORT   # grpc.aio on uvloop (python-floor-uvloop, a candidate)
"""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from authz._proto.envoy.service.auth.v3 import external_auth_pb2 as pb
from authz._proto.envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc

OK = pb.CheckResponse()
OPTIONS = [("grpc.so_reuseport", 0)]


class Threaded(pb_grpc.AuthorizationServicer):
    def Check(self, request: pb.CheckRequest, context: grpc.ServicerContext) -> pb.CheckResponse:
        return OK


class Aio(pb_grpc.AuthorizationServicer):
    async def Check(self, request: pb.CheckRequest, context: grpc.aio.ServicerContext) -> pb.CheckResponse:
        return OK


async def serve_aio(port: int) -> None:
    server = grpc.aio.server(options=OPTIONS)
    pb_grpc.add_AuthorizationServicer_to_server(Aio(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    transport, port = sys.argv[1], int(sys.argv[2])
    if transport == "aio":
        asyncio.run(serve_aio(port))
        return
    if transport == "uvloop":
        import uvloop  # the `bench` extra

        uvloop.run(serve_aio(port))
        return
    # As many threads as authz's thread-pool transport (authz.cli.serve.CHECK_THREADS).
    server = grpc.server(ThreadPoolExecutor(max_workers=16), options=OPTIONS)
    pb_grpc.add_AuthorizationServicer_to_server(Threaded(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
