"""Wakes lease streams on this server when work may have become leasable.

Admission and reports on the same server nudge every stream at once; work
admitted through another server is found by the streams' short poll.
"""

from __future__ import annotations

import asyncio


class Wakeup:
    def __init__(self) -> None:
        self._events: set[asyncio.Event] = set()

    def register(self, event: asyncio.Event) -> None:
        self._events.add(event)

    def unregister(self, event: asyncio.Event) -> None:
        self._events.discard(event)

    def notify(self) -> None:
        for event in self._events:
            event.set()
