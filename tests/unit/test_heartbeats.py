"""Which leases a dispatcher's heartbeat names (no server needed: the requests are built, not sent).

A heartbeat renews leases and learns which parents wait on children. A lease taken since the
heartbeat before, whose action has not said it runs, has most of its period left and waits on
nothing: it is named from the next heartbeat on. In a big fanout that is nearly every lease held,
and each named lease costs the dispatcher, the server and Redis work.

The leased actions are held as the dispatcher holds them before their start (in starts.py); the
test builds its requests within one turn of the loop, so none of them starts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fanout.config import ClientConfig
from fanout.dispatch.dispatcher import Dispatcher
from fanout.dispatch.process_backend import ProcessBackend
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb


def leased(name: str) -> dpb.LeasedAction:
    return dpb.LeasedAction(tenant="t", run="r", attempt=1, spec=pb.ActionSpec(name=name))


def named(request: dpb.LeaseRequest) -> list[str]:
    return [lease.name for lease in request.heartbeat.leases]


def heartbeats(tmp_path: Path, lease_seconds: float) -> list[list[str]]:
    """Leases taken between heartbeats, one action saying it runs; the names in each heartbeat."""

    async def main() -> list[list[str]]:
        config = ClientConfig(endpoint="127.0.0.1:1", token="unused: nothing is sent")
        dispatcher = Dispatcher(config, ProcessBackend(tmp_path / "actions"))
        dispatcher._lease_seconds = lease_seconds
        a, b, c = leased("a"), leased("b"), leased("c")
        dispatcher.took([a, b])
        first = named(dispatcher._heartbeat_request())
        dispatcher.took([c])
        second = named(dispatcher._heartbeat_request())
        d = leased("d")
        dispatcher.took([d])
        dispatcher.said_running(d)
        third = named(dispatcher._heartbeat_request())
        return [first, second, third]

    return asyncio.run(main())


def test_a_heartbeat_names_a_lease_from_the_heartbeat_after_the_one_it_was_taken_before(tmp_path: Path) -> None:
    first, second, third = heartbeats(tmp_path, lease_seconds=15.0)
    assert first == []  # a and b were taken since the last heartbeat
    assert sorted(second) == ["a", "b"]  # c is fresh
    assert sorted(third) == ["a", "b", "c", "d"]  # d is fresh, but it said it runs: it may wait on children


def test_a_short_lease_is_named_by_every_heartbeat(tmp_path: Path) -> None:
    """With a lease of 2 s a heartbeat goes every 0.67 s: skipping one would leave a lease unrenewed
    for two of them, two thirds of its period."""
    first, second, third = heartbeats(tmp_path, lease_seconds=2.0)
    assert sorted(first) == ["a", "b"]
    assert sorted(second) == ["a", "b", "c"]
    assert sorted(third) == ["a", "b", "c", "d"]
