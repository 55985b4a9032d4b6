"""The gRPC services Envoy calls: `envoy.service.auth.v3.Authorization` and `grpc.health.v1.Health`.

`Authorization` is a thin adapter over the Check's three steps (authz/check/run.py): protobuf in
through `adapter`, the Runtime read once from the holder, and every fault a denial, never an allow.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator

import grpc

from authz._proto.envoy.service.auth.v3 import external_auth_pb2 as pb
from authz._proto.envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc
from authz._proto.grpc.health.v1 import health_pb2, health_pb2_grpc
from authz.check import run
from authz.check.answer import Answer, error
from authz.check.gather import Pending
from authz.check.request import RequestContext
from authz.envoy import adapter
from authz.envoy.peer import REFUSED, carries, grpc_sans
from authz.errors import RequestError, StoreUnavailable
from authz.ops.metrics import UNKNOWN_ROUTE, decision_of
from authz.policy.reasons import Reason
from authz.runtime.holder import RuntimeHolder
from authz.runtime.state import Runtime

log = logging.getLogger("authz")


class Authorization(pb_grpc.AuthorizationServicer):
    """envoy.service.auth.v3.Authorization: every fault becomes a denial, never an allow."""

    def __init__(self, holder: RuntimeHolder) -> None:
        self.holder = holder
        # Over the internal mutual TLS: the SAN a caller's certificate must carry (peer.py); None: any.
        self.pin: str | None = None

    def begin(self, request: pb.CheckRequest, now: float) -> Answer | Pending:
        """Everything that does not block; `Pending` when a store read must finish the Check."""
        try:
            req = adapter.to_request(request)
        except RequestError as exc:
            req, rt = adapter.fallback_request(request), self.holder.current
            return self.observe(rt, req, error(exc.status, (exc.reason,), req, detail=exc.detail, theme=rt.theme), now)
        except Exception:
            log.exception("could not read the check request; answering 503")
            req, rt = adapter.fallback_request(request), self.holder.current
            return self.observe(rt, req, error(503, (Reason.INTERNAL_ERROR,), req, theme=rt.theme), now)
        return self.check(req, now)

    def check(self, req: RequestContext, now: float) -> Answer | Pending:
        """`begin` once the request is read (any transport): a fault is a 503, never an allow."""
        rt = self.holder.current
        try:
            result = run.begin(rt, req, now)
        except StoreUnavailable:  # logged once by the store when it went down
            rt.metrics.store_error("session")
            result = error(503, (Reason.STORE_UNAVAILABLE,), req, theme=rt.theme)
        except Exception:
            log.exception("check failed; answering 503", extra={"fields": {"request_id": req.request_id}})
            result = error(503, (Reason.INTERNAL_ERROR,), req, theme=rt.theme)
        return result if isinstance(result, Pending) else self.observe(rt, req, result, now)

    def finish(self, pending: Pending) -> Answer:
        """Complete a pending Check; blocks on the store, so never call it on an event loop."""
        try:
            result = run.finish(pending)
        except StoreUnavailable:
            pending.rt.metrics.store_error("session")
            result = error(503, (Reason.STORE_UNAVAILABLE,), pending.request, theme=pending.rt.theme)
        except Exception:
            pending.rt.metrics.store_error("session")  # finishing is the store read
            log.exception("check failed; answering 503", extra={"fields": {"request_id": pending.request.request_id}})
            result = error(503, (Reason.INTERNAL_ERROR,), pending.request, theme=pending.rt.theme)
        return self.observe(pending.rt, pending.request, result, pending.now)

    @staticmethod
    def observe(rt: Runtime, req: RequestContext, ans: Answer, now: float) -> Answer:
        """Count the answered Check and log its decision (sampled); never fails the Check."""
        try:
            seconds = max(time.time() - now, 0.0)
            if rt.metrics.enabled:
                # A Check refused before its route was looked up (a bad request) still names it.
                route_id = ans.route_id or req.route_id
                route = route_id if route_id in rt.config.routes_by_id else UNKNOWN_ROUTE
                rt.metrics.check(route, decision_of(ans.allowed, ans.status), ans.reasons, seconds)
            if rt.decisions is not None:
                rt.decisions.record(req, ans, seconds)
        except Exception:
            log.exception("could not record a decision", extra={"fields": {"request_id": req.request_id}})
        return ans

    def answer(self, request: pb.CheckRequest, now: float) -> Answer:
        """The whole Check in the calling thread (thread-pool servers, tests, benchmarks)."""
        result = self.begin(request, now)
        return self.finish(result) if isinstance(result, Pending) else result

    def respond(self, request: pb.CheckRequest, answer: Answer) -> pb.CheckResponse:
        """The CheckResponse for an answer; one that cannot be encoded is a plain 503 instead."""
        try:
            return adapter.to_response(answer)
        except Exception:
            log.exception("could not encode the check response; answering 503")
            req, theme = adapter.fallback_request(request), self.holder.current.theme
            return adapter.to_response(error(503, (Reason.INTERNAL_ERROR,), req, theme=theme))

    async def Check(self, request: pb.CheckRequest, context: grpc.aio.ServicerContext) -> pb.CheckResponse:
        if self.pin is not None and not carries(grpc_sans(context), self.pin):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED)
        result = self.begin(request, time.time())
        if isinstance(result, Pending):
            result = await asyncio.to_thread(self.finish, result)
        return self.respond(request, result)


class ThreadedAuthorization(pb_grpc.AuthorizationServicer):
    """The same Check for grpcio's thread-pool server: each call runs whole in its worker thread,
    with no event loop between the socket and the Check (see README, Performance)."""

    def __init__(self, core: Authorization) -> None:
        self.core = core

    def Check(self, request: pb.CheckRequest, context: grpc.ServicerContext) -> pb.CheckResponse:
        pin = self.core.pin
        if pin is not None and not carries(grpc_sans(context), pin):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED)
        return self.core.respond(request, self.core.answer(request, time.time()))


class ThreadedHealth(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 for the thread-pool server; `set` is called from the event loop's thread."""

    def __init__(self) -> None:
        self.serving = False
        self._changed = threading.Condition()

    def set(self, serving: bool) -> None:
        with self._changed:
            self.serving = serving
            self._changed.notify_all()

    def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        return _health_status(request.service, self.serving)

    def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> Iterator[health_pb2.HealthCheckResponse]:
        last = None
        while context.is_active():
            with self._changed:
                if last is not None and last == self.serving:
                    self._changed.wait(timeout=1.0)  # wake now and then to notice a gone client
                current = self.serving
            if current != last:
                last = current
                yield _health_status(request.service, current)


def _health_status(service: str, serving: bool) -> health_pb2.HealthCheckResponse:
    if service not in ("", "envoy.service.auth.v3.Authorization"):
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    return health_pb2.HealthCheckResponse(status=status)


class Health(health_pb2_grpc.HealthServicer):
    """grpc.health.v1: SERVING once both servers listen, NOT_SERVING while shutting down."""

    def __init__(self) -> None:
        self.serving = False
        self._changed = asyncio.Event()

    def set(self, serving: bool) -> None:
        self.serving = serving
        self._changed.set()
        self._changed = asyncio.Event()

    def _status(self, service: str) -> health_pb2.HealthCheckResponse:
        return _health_status(service, self.serving)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        return self._status(request.service)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        while True:
            yield self._status(request.service)
            await self._changed.wait()
