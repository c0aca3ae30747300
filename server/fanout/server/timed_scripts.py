"""The quota store's Lua scripts, each call timed and its Redis errors counted.

Wrapped where the server builds its stores, so the quota package keeps no
metrics of its own: every decision is one script call, so one histogram per
script shows where Redis time goes, and the 20 ms budget per script is
watched in production, not only in tests.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, cast

import redis.exceptions
from redis.commands.core import AsyncScript

from fanout.quota.scripts import Scripts
from fanout.server import metrics


class TimedScript:
    """Calls like an AsyncScript (keys, args), observing each call's round trip."""

    def __init__(self, script: AsyncScript, name: str) -> None:
        self._script = script
        self._duration = metrics.REDIS_SCRIPT_DURATION.labels(script=name)
        self._errors = metrics.REDIS_ERRORS.labels(source="script")

    async def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        started = time.perf_counter()
        try:
            return await self._script(keys=keys, args=args, client=client)
        except redis.exceptions.RedisError:
            self._errors.inc()
            raise
        finally:
            self._duration.observe(time.perf_counter() - started)


def timed(scripts: Scripts) -> Scripts:
    wrapped = {f.name: TimedScript(getattr(scripts, f.name), f.name) for f in dataclasses.fields(scripts)}
    # Duck-typed: the stores only ever call a script, which TimedScript does as AsyncScript does.
    return dataclasses.replace(scripts, **cast(dict[str, Any], wrapped))
