"""Warming the fork server's zygote, so that each child it forks writes to fewer of its pages.

A forked child shares the zygote's memory until it writes to a page; then the
kernel copies that page for it, a fault of several microseconds on this kind
of machine. A one-shot no-op child took about 1,200 such faults, and they were
half of its CPU. Many of those writes are work every child did for itself:
CPython rewrites a function's bytecode in place as it warms up (it specializes
it after a few runs), and modules fill lazy caches on first use. Running the
one-shot path here a few times, before the zygote forks anything, does that
work once, in pages the children then only read.

It runs a built-in no-op task through worker.one_shot, as a child runs an
action, but does nothing that would change what a child inherits: no spec or
result file, no memory limit, no change to the streams, no channel (a client
dials on its first call, and a no-op makes none), and the event loop is
closed again after each run.
"""

from __future__ import annotations

import asyncio

from fanout import serialization
from fanout.config import ClientConfig
from fanout.dispatch import worker
from fanout.task import TaskEnvironment
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb

# CPython 3.11 specializes a code object's bytecode after 8 runs of it: past that, with room.
RUNS = 16
# Never dialled (the no-op calls nothing); `.invalid` cannot resolve, should that ever change.
UNUSED_ENDPOINT = "warm-up.invalid:1"

_env = TaskEnvironment(name="fanout-warm-up")


@_env.task
async def noop(i: int) -> int:
    return i


def warm_up(runs: int = RUNS) -> None:
    """Run the no-op through the one-shot path `runs` times in this process; raises if one fails."""
    client_config = ClientConfig(endpoint=UNUSED_ENDPOINT)
    for i in range(runs):
        spec = noop.spec(f"warm-up-{i}", serialization.encode_inputs(noop.name, (i,), {}))
        action = dpb.LeasedAction(run="warm-up", spec=spec, attempt=1)
        outcome = asyncio.run(worker.one_shot(action, client_config))
        if isinstance(outcome, SystemExit) or outcome.phase != pb.SUCCEEDED:
            raise RuntimeError(f"the fork server's warm-up run failed: {outcome}")
