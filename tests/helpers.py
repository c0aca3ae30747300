"""Helpers shared by the tests: a background event loop and `eventually`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from fanout.client import TERMINAL_PHASES, Client
from fanout.config import ClientConfig

if TYPE_CHECKING:
    from fanout.dispatch.containers import ContainerBackend
    from fanout.dispatch.dispatcher import Dispatcher

T = TypeVar("T")


class LoopThread:
    """An asyncio loop on its own thread, for servers the (blocking) tests talk to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            stacks = self._stacks()
            raise TimeoutError(f"{coro!r} took over {timeout} s; the loop's tasks:\n{stacks}") from None

    def _stacks(self) -> str:
        """Where every task on the loop is waiting, to tell which await hung (read on the loop itself)."""

        async def dump() -> str:
            out = io.StringIO()
            for task in asyncio.all_tasks():
                task.print_stack(limit=12, file=out)
            return out.getvalue()

        try:
            return asyncio.run_coroutine_threadsafe(dump(), self.loop).result(5)
        except concurrent.futures.TimeoutError:
            return "(the loop itself is blocked: no task could be read)"

    def close(self) -> None:
        """Shut down as asyncio.run does: cancel what is left, finish async generators, close."""
        self.run(self._cancel_the_rest())
        self.run(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    @staticmethod
    async def _cancel_the_rest() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def eventually(
    check: Callable[[], T],
    timeout: float = 20.0,
    interval: float = 0.05,
    retry_on: tuple[type[BaseException], ...] = (AssertionError,),
) -> T:
    """Retry `check` until it returns a truthy value without raising; fail with its last error."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
            last: BaseException | None = AssertionError(f"{check} stayed falsy: {value!r}")
        except retry_on as exc:
            last = exc
        if time.monotonic() > deadline:
            assert last is not None
            raise last
        time.sleep(interval)


def terminal_events(client: Client, run: str, parent: str, expected: int) -> Counter[str]:
    """Terminal events per child, read from the start of the parent's event stream."""
    seen: Counter[str] = Counter()
    for event in client.watch_children(run, parent, cursor="0-0", timeout=10):
        if event.update.phase in TERMINAL_PHASES:
            seen[event.update.name] += 1
            if sum(seen.values()) >= expected:
                break
    return seen


# `fanout up` and `fanout dispatcher` run as root give each tenant a uid of its own; tests whose tasks
# use files under pytest's root-only temporary folders run them as root instead (the per-tenant uids
# are tests/integration/test_isolation.py's subject).
DEV = ["--no-tenant-uids"] if os.geteuid() == 0 else []


def race_submitters(endpoints: list[str], token: str, run: str, workers: int = 8) -> tuple[list[int], list[int]]:
    """`workers` threads, each on its own channel (round-robin over `endpoints`), submitting ten small
    batches of no-op children of the run's root at once; (admitted counts, sizes of the refused batches)."""
    from fanout import errors
    from fanout.config import ClientConfig
    from fanout.v1 import actions_pb2 as pb

    admitted: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(workers)

    def submitter(worker: int) -> None:
        with Client(ClientConfig(endpoint=endpoints[worker % len(endpoints)], token=token)) as client:
            barrier.wait()
            for attempt in range(10):
                size = 3 + (worker + attempt) % 5
                batch = [
                    pb.ActionSpec(name=f"w{worker}a{attempt}-{i}", task_ref="module:tests:noop", inputs=b"{}")
                    for i in range(size)
                ]
                try:
                    r = client.submit_batch(run, "root", batch)
                    with lock:
                        admitted.append(r.admitted)
                except errors.FanoutLimitExceeded:
                    with lock:
                        refused.append(size)

    threads = [threading.Thread(target=submitter, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return admitted, refused


def running_children(client: Client, run: str) -> int:
    """How many of the root's children are RUNNING now, from a watch's replay."""
    from fanout.v1 import actions_pb2 as pb

    count = 0
    for event in client.watch_children(run, "root"):
        if event.HasField("replay_done"):
            return count
        count += event.update.phase == pb.RUNNING
    return count


class Clock:
    """A clock a test moves by hand (stores take `clock=`)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def dispatching_containers(
    loop: LoopThread, endpoint: str, token: str, backend: ContainerBackend, capacity: int = 64
) -> Iterator[Dispatcher]:
    """A dispatcher on a container backend, running on `loop` against `endpoint` until the block ends."""
    from fanout.dispatch.dispatcher import Dispatcher

    dispatcher = Dispatcher(
        ClientConfig(endpoint=endpoint, token=token), backend, capacity=capacity, new_worker=backend.new_worker
    )
    running = asyncio.run_coroutine_threadsafe(dispatcher.run(), loop.loop)
    try:
        yield dispatcher
    finally:
        loop.loop.call_soon_threadsafe(dispatcher.stop)
        running.result(60)
