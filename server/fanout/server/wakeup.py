"""Wakes this server's lease streams the moment work of a tenant may have become leasable, on any server.

Whatever makes work leasable (an admission, a requeue, a due retry, a freed
slot) publishes the tenant's name (ActionStore.wake and the paths that call
it); every server holds one subscription and hands each name to its streams
at once, so no stream polls. This server's own streams hear of what it
admits or requeues at once as well (ActionStore.on_wake), without waiting
for its wake to come back from Redis. Pub/sub may drop a message (a broken
connection): after each (re)subscription every stream sweeps the ready
tenants, and streams sweep now and then anyway, off the critical path.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Protocol

from fanout.quota.actions import ActionStore
from fanout.quota.errors import StoreError

log = logging.getLogger(__name__)

# Waits before subscribing again after the subscription broke: the first and the longest.
FIRST_RESUBSCRIBE_SECONDS = 0.1
MAX_RESUBSCRIBE_SECONDS = 2.0


class Sleeper(Protocol):
    """A lease stream, as the wakeup sees it."""

    scope: str  # the tenant its dispatcher is scoped to, "" for a shared one

    def wake(self, tenant: str) -> None: ...

    def sweep(self) -> None: ...


class Wakeup:
    def __init__(self, store: ActionStore) -> None:
        self._store = store
        self._streams: set[Sleeper] = set()
        # Wakes waiting for a retry to fall due, by (tenant, due time in tenths of a second):
        # retries reported together share one.
        self._timers: dict[tuple[str, int], asyncio.Task[None]] = {}
        store.on_wake(self.wake)  # what this server admits or requeues wakes its streams without a round trip

    def register(self, stream: Sleeper) -> None:
        self._streams.add(stream)

    def unregister(self, stream: Sleeper) -> None:
        self._streams.discard(stream)

    def scopes(self) -> collections.Counter[str]:
        """Open lease streams by scope; safe from the metrics thread (it copies the set, retrying a race)."""
        for _ in range(3):
            try:
                return collections.Counter(stream.scope for stream in list(self._streams))
            except RuntimeError:  # the set changed while copied
                continue
        return collections.Counter()

    def wake(self, tenant: str) -> None:
        for stream in self._streams:
            stream.wake(tenant)

    def sweep(self) -> None:
        for stream in self._streams:
            stream.sweep()

    def wake_later(self, tenant: str, delay: float) -> None:
        """Wake every server's streams for `tenant` in `delay` seconds, when a retry falls due.

        Nothing else happens then: the retry waits in the delayed set until a lease moves it.
        A timer lost with this server is made up for by the streams' sweep.
        """
        key = (tenant, int((asyncio.get_running_loop().time() + delay) * 10) + 1)
        if key not in self._timers:
            self._timers[key] = asyncio.create_task(self._wake_after(key, delay))

    async def _wake_after(self, key: tuple[str, int], delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            await self._store.wake(key[0])
        except StoreError as exc:
            log.info("could not wake the streams for a due retry of %s (%s); the sweep will", key[0], exc)
        finally:
            self._timers.pop(key, None)

    async def listen(self) -> None:
        """Follow the wakes of every server until cancelled, subscribing again whenever Redis drops us."""
        delay = FIRST_RESUBSCRIBE_SECONDS
        try:
            while True:
                try:
                    async for tenant in self._store.wakes(subscribed=self.sweep):
                        delay = FIRST_RESUBSCRIBE_SECONDS
                        self.wake(tenant)
                except StoreError as exc:  # a cancel that met a read timeout is a cancel still (raise_if_cancelling)
                    log.warning("wake subscription lost (%s); subscribing again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RESUBSCRIBE_SECONDS)
        finally:  # the server stops: so do the timers, before its Redis connections close
            timers = list(self._timers.values())
            for timer in timers:
                timer.cancel()
            await asyncio.gather(*timers, return_exceptions=True)
