"""Batches phase reports into few Report RPCs, retrying while the server is away.

A batch is what is ready, not what a timer collected: the reports made in
the turn of the event loop that made the first one (say, the RUNNING of
every action of one lease response), and then, while a call is in flight,
all that were made meanwhile. So one lone report goes out at once, and under
load each call carries more.

Reports are idempotent on the server (phases only move forward, one terminal
phase), so resending a batch after an error is safe. Each report's future
resolves once its call was answered (True) or rejected for good (False), so
the dispatcher keeps an action's result on disk until then.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from fanout.v1 import dispatch_pb2 as dpb
from fanout.v1 import dispatch_pb2_grpc

log = logging.getLogger(__name__)

MAX_REPORTS_PER_CALL = 1000


class Reporter:
    def __init__(self, stub: dispatch_pb2_grpc.DispatchServiceStub, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata
        self._queue: asyncio.Queue[tuple[dpb.PhaseReport, asyncio.Future[bool]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._sending = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    def report(self, report: dpb.PhaseReport) -> asyncio.Future[bool]:
        sent: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((report, sent))
        return sent

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued report was sent (or the timeout passed)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._queue.empty() or self._sending:
            if asyncio.get_running_loop().time() > deadline:
                log.warning("%d reports not sent before shutdown", self._queue.qsize())
                return
            await asyncio.sleep(0.02)

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            self._sending = True
            # Let the turns of the loop that are reporting end: until one reports nothing more.
            while self._queue.qsize() + len(batch) < MAX_REPORTS_PER_CALL:
                ready = self._queue.qsize()
                await asyncio.sleep(0)
                if self._queue.qsize() == ready:
                    break
            while not self._queue.empty() and len(batch) < MAX_REPORTS_PER_CALL:
                batch.append(self._queue.get_nowait())
            accepted = await self._send([report for report, _ in batch])
            for _, sent in batch:
                if not sent.done():
                    sent.set_result(accepted)
            self._sending = False

    async def _send(self, batch: list[dpb.PhaseReport]) -> bool:
        delay = 0.1
        while True:
            try:
                await self._stub.Report(dpb.ReportRequest(reports=batch), metadata=self._metadata, timeout=30)
                return True
            except grpc.RpcError as exc:
                code = exc.code()
                if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    log.error("report rejected (%s: %s); dropping %d reports", code.name, exc.details(), len(batch))
                    return False
                log.warning("control plane unavailable; retrying %d reports in %.1fs", len(batch), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
