"""A process's hub sends a big turn of children a few SubmitMany calls at a time, to a real server.

Unbounded, a gather of a million children went out as 500 calls at once, and the server's
admissions crowded out a dispatcher's lease renewals until leases lapsed (make bench-million).

The server is the module's own, with no dispatcher: the session's dispatcher would run the
parent's root action, and once it ended the run would refuse the calls still waiting.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from fanout import hub
from fanout.client import AsyncClient
from fanout.config import ClientConfig
from fanout.v1 import actions_pb2 as pb
from tests.conftest import Tenant
from tests.own_server import own_server_endpoint, own_server_tenant  # noqa: F401 (fixtures)

CALLS = 10


@dataclass
class Parent:
    """A parent as the hub sees one (a controller's run, name and token); it records failures."""

    run: str
    parent: str
    credential: str
    failed: list[str] = field(default_factory=list)

    def settle(self, status: pb.ActionStatus) -> None:
        pass

    def fail(self, names: list[str], exc: Exception) -> None:
        self.failed += [f"{name}: {exc}" for name in names]


class CountingClient(AsyncClient):
    """The real client, counting its calls in flight."""

    in_flight = 0
    peak = 0

    async def call(self, method: Any, request: Any, timeout: float | None = 120.0, token: str | None = None) -> Any:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await super().call(method, request, timeout=timeout, token=token)
        finally:
            self.in_flight -= 1


def test_a_big_turn_goes_out_a_few_calls_at_a_time(
    tenant: Tenant, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub, "MAX_BATCH", 10)
    run = tenant.client.create_run(pb.ActionSpec(name="root", task_ref="module:tests:root")).name
    template = pb.ActionSpec(task_ref="module:tests:noop")
    children = [hub.Child(f"c{i}", b"", template, template.ByteSize()) for i in range(CALLS * hub.MAX_BATCH)]
    parent = Parent(run, "root", tenant.token)

    async def main() -> int:
        client = CountingClient(ClientConfig(endpoint=endpoint, token=tenant.token))
        submissions = hub.Hub.of(client)
        try:
            submissions.submit(parent, children)
            for _ in range(1_000):  # bounded: ten calls to a local server take well under a second each
                await asyncio.sleep(0.01)
                if not submissions._sending and not submissions._queued:
                    break
            return client.peak
        finally:
            await submissions.close()
            await client.close()

    peak = tenant.loop.run(main())

    assert peak == hub.MAX_SUBMITS_IN_FLIGHT
    assert parent.failed == []
    assert tenant.client.get_run(run).action_count == 1 + CALLS * hub.MAX_BATCH


def test_a_big_turns_first_call_reaches_the_server_before_the_turn_ends(tenant: Tenant, endpoint: str) -> None:
    """A gather's children are called in one turn of the loop; the first of them are admitted during it."""
    run = tenant.client.create_run(pb.ActionSpec(name="root", task_ref="module:tests:root")).name
    template = pb.ActionSpec(task_ref="module:tests:noop")
    children = [hub.Child(f"c{i}", b"", template, template.ByteSize()) for i in range(hub.FIRST_BATCH)]
    parent = Parent(run, "root", tenant.token)

    async def main() -> int:
        client = AsyncClient(ClientConfig(endpoint=endpoint, token=tenant.token))
        submissions = hub.Hub.of(client)
        try:
            for child in children:  # one by one, as the first steps of a gather's calls make them
                submissions.submit(parent, [child])
            # Nothing here awaits: this is still the turn that made the calls, and it waits for the server.
            deadline = time.monotonic() + 5
            while (count := tenant.client.get_run(run).action_count) <= 1 and time.monotonic() < deadline:
                time.sleep(0.01)  # noqa: ASYNC251 - blocking this turn is the point
            return count
        finally:
            await sent_and_closed(submissions, client)

    # A loop of its own, in this thread: blocking it must not block the server's.
    assert asyncio.run(main()) == 1 + hub.FIRST_BATCH
    assert parent.failed == []


class NoPlainChannel(AsyncClient):
    """The real client, but one that cannot send during a turn."""

    def call_now(self, method: str, request: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no plain channel here")


def test_children_a_turn_cannot_send_early_go_at_its_end(tenant: Tenant, endpoint: str) -> None:
    run = tenant.client.create_run(pb.ActionSpec(name="root", task_ref="module:tests:root")).name
    template = pb.ActionSpec(task_ref="module:tests:noop")
    children = [hub.Child(f"c{i}", b"", template, template.ByteSize()) for i in range(2 * hub.FIRST_BATCH)]
    parent = Parent(run, "root", tenant.token)

    async def main() -> None:
        client = NoPlainChannel(ClientConfig(endpoint=endpoint, token=tenant.token))
        submissions = hub.Hub.of(client)
        try:
            for child in children:
                submissions.submit(parent, [child])
        finally:
            await sent_and_closed(submissions, client)

    asyncio.run(main())
    assert parent.failed == []
    assert tenant.client.get_run(run).action_count == 1 + len(children)


async def sent_and_closed(submissions: hub.Hub, client: AsyncClient) -> None:
    """Let the hub send what it holds (bounded: a few calls to a local server take well under a second), then close."""
    for _ in range(1_000):
        await asyncio.sleep(0.01)
        if not submissions._sending and not submissions._queued and not submissions._pending:
            break
    await submissions.close()
    await client.close()
