"""Wakes lease streams on this server when work may have become leasable.

Admission and reports on the same server set it at once; work admitted
through another server is found by the streams' short poll.
"""

from __future__ import annotations

import asyncio


class Wakeup:
    def __init__(self) -> None:
        self._waiters: set[asyncio.Event] = set()

    def notify(self) -> None:
        for event in self._waiters:
            event.set()

    async def wait(self, timeout: float) -> None:
        event = asyncio.Event()
        self._waiters.add(event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(event)
