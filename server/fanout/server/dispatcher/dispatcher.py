"""The dispatcher loop: lease on a stream, run in a backend, report in batches.

It talks to the control plane over gRPC only. Capacity is how many actions
it runs at once; every finished action gives one credit back. Leases of
running actions are renewed by heartbeat; if this process dies, the server
reclaims them and another dispatcher runs the actions again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid

import grpc

from fanout.channel import async_channel
from fanout.config import ClientConfig
from fanout.server.dispatcher.backend import Backend, Outcome, failure
from fanout.server.dispatcher.reporter import Reporter
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb
from fanout.v1 import dispatch_pb2_grpc

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(
        self,
        config: ClientConfig,
        backend: Backend,
        capacity: int = 256,
        action_endpoint: str = "",
    ) -> None:
        self.config = config.require()
        self.backend = backend
        self.capacity = capacity
        # Where actions reach the control plane; the same address unless a
        # container network needs another one.
        self.action_endpoint = action_endpoint or config.endpoint
        self.id = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self._metadata = (("authorization", f"Bearer {config.token}"),)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._outbox: asyncio.Queue[dpb.LeaseRequest] = asyncio.Queue()
        self._lease_seconds = 15.0
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Serve until stop(); reconnects with backoff when the stream breaks."""
        channel = async_channel(self.config)
        stub = dispatch_pb2_grpc.DispatchServiceStub(channel)
        reporter = Reporter(stub, self._metadata)
        reporter.start()
        heartbeat = asyncio.create_task(self._heartbeat())
        delay = 0.2
        try:
            while not self._stopping.is_set():
                try:
                    await self._lease(stub, reporter)
                    delay = 0.2
                except grpc.RpcError as exc:
                    code = exc.code()
                    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                        raise PermissionError(f"the control plane refused this dispatcher: {exc.details()}") from None
                    if self._stopping.is_set():
                        break
                    log.warning("lease stream broke (%s); reconnecting in %.1fs", code.name, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, 5.0)
        finally:
            heartbeat.cancel()
            await self.backend.shutdown()
            for task in self._running.values():
                task.cancel()
            await asyncio.gather(*self._running.values(), return_exceptions=True)
            await reporter.drain()
            await reporter.stop()
            await channel.close()

    def stop(self) -> None:
        self._stopping.set()

    async def _lease(self, stub: dispatch_pb2_grpc.DispatchServiceStub, reporter: Reporter) -> None:
        free = self.capacity - len(self._running)
        # Credit given back on an old stream is lost with it; start each stream afresh.
        self._outbox = asyncio.Queue()
        self._outbox.put_nowait(dpb.LeaseRequest(hello=dpb.Hello(dispatcher_id=self.id, capacity=max(free, 1))))
        call = stub.Lease(self._requests(), metadata=self._metadata)
        stopper = asyncio.create_task(self._stopping.wait())
        try:
            while True:
                read = asyncio.ensure_future(call.read())
                done, _ = await asyncio.wait({read, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    read.cancel()
                    call.cancel()
                    return
                response = read.result()
                if response is grpc.aio.EOF:
                    return
                self._lease_seconds = response.lease_seconds or self._lease_seconds
                for action in response.actions:
                    key = _ref(action)
                    self._running[key] = asyncio.create_task(self._execute(action, reporter))
        finally:
            stopper.cancel()

    async def _requests(self):
        while True:
            yield await self._outbox.get()

    async def _execute(self, action: dpb.LeasedAction, reporter: Reporter) -> None:
        def started() -> None:
            reporter.report(_report(action, pb.RUNNING))

        try:
            try:
                outcome = await self.backend.run(action, self.action_endpoint, started)
            except asyncio.CancelledError:
                raise  # shutting down: the lease expires and the action runs again elsewhere
            except Exception as exc:
                log.exception("backend failed on %s", _ref(action))
                outcome = failure("BackendError", f"{type(exc).__name__}: {exc}")
            reporter.report(_report(action, outcome.phase, outcome))
        finally:
            self._running.pop(_ref(action), None)
            if not self._stopping.is_set():
                self._outbox.put_nowait(dpb.LeaseRequest(credit=1))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            if self._running:
                self._outbox.put_nowait(dpb.LeaseRequest(heartbeat=dpb.Heartbeat(leases=list(self._running))))


def _ref(action: dpb.LeasedAction) -> str:
    return f"{action.tenant}/{action.run}/{action.spec.name}"


def _report(action: dpb.LeasedAction, phase: int, outcome: Outcome | None = None) -> dpb.PhaseReport:
    report = dpb.PhaseReport(
        tenant=action.tenant,
        run=action.run,
        name=action.spec.name,
        attempt=action.attempt,
        phase=phase,
    )
    if outcome is not None:
        report.result.CopyFrom(outcome.result)
    return report
