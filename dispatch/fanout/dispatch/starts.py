"""Leased actions waiting to start: a bounded number per turn of the event loop, tenants in turn.

A lease response holds up to a few hundred actions of one tenant, and an action's start (its
task's first step: routing it to a worker) costs tens of microseconds. Started as they came, a big
tenant's responses each held a turn of the dispatcher's loop for milliseconds, and a small tenant's
action, read behind several of them, waited for all of them. Here each turn starts at most
`per_turn` actions, sharing them among the tenants that have some waiting, so an action of a
tenant with nothing else waiting starts in the next turn, whatever another tenant's backlog.

Actions wait here only for turns of the loop: their leases are renewed like the running ones'
(the dispatcher's heartbeat names them), and one the control plane ends meanwhile is taken out.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator

from fanout.v1 import dispatch_pb2 as dpb

# Enough that a turn's starts cost little per action, few enough that the turn stays short.
STARTS_PER_TURN = 64

Key = tuple[str, str, int]  # run, action name, attempt


def key_of(action: dpb.LeasedAction) -> Key:
    return (action.run, action.spec.name, action.attempt)


class Starts:
    def __init__(self, start: Callable[[dpb.LeasedAction], None], per_turn: int = STARTS_PER_TURN) -> None:
        self._start = start
        self._per_turn = per_turn
        # By tenant, in the order they were leased; a tenant leaves once it has none waiting.
        self._waiting: dict[str, OrderedDict[Key, dpb.LeasedAction]] = {}
        self._count = 0
        self._scheduled = False

    def __len__(self) -> int:
        return self._count

    def add(self, actions: Iterable[dpb.LeasedAction]) -> None:
        for action in actions:
            queue = self._waiting.get(action.tenant)
            if queue is None:
                queue = self._waiting[action.tenant] = OrderedDict()
            queue[key_of(action)] = action
            self._count += 1
        if self._count and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._turn)

    def remove(self, tenant: str, key: Key) -> dpb.LeasedAction | None:
        """Take back an action not started yet (the control plane ended it); None if it is not here."""
        queue = self._waiting.get(tenant)
        action = queue.pop(key, None) if queue is not None else None
        if action is not None:
            self._count -= 1
            if not queue:
                del self._waiting[tenant]
        return action

    def held(self) -> Iterator[dpb.LeasedAction]:
        for queue in self._waiting.values():
            yield from queue.values()

    def clear(self) -> None:
        """Drop what waits (the dispatcher stops: their leases lapse and they run elsewhere)."""
        self._waiting.clear()
        self._count = 0

    def _turn(self) -> None:
        self._scheduled = False
        budget = self._per_turn
        while budget and self._waiting:
            share = max(budget // len(self._waiting), 1)
            for tenant, queue in list(self._waiting.items()):
                for _ in range(min(share, len(queue), budget)):
                    _, action = queue.popitem(last=False)
                    self._count -= 1
                    budget -= 1
                    self._start(action)
                if not queue:
                    del self._waiting[tenant]
                if not budget:
                    break
        if self._waiting and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._turn)
