"""Load the Lua scripts once and register them; calls go by SHA (EVALSHA)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

# Scripts that finish actions share the helpers in lib.lua.
_WITH_LIB = frozenset({"report", "reap", "abort", "close_run"})


def _source(name: str) -> str:
    text = resources.files("fanout.quota").joinpath(f"lua/{name}.lua").read_text()
    if name in _WITH_LIB:
        text = resources.files("fanout.quota").joinpath("lua/lib.lua").read_text() + "\n" + text
    return text


@dataclass(frozen=True)
class Scripts:
    admit: AsyncScript
    lease: AsyncScript
    report: AsyncScript
    reap: AsyncScript
    heartbeat: AsyncScript
    abort: AsyncScript
    close_run: AsyncScript
    drop_run: AsyncScript
    snapshot: AsyncScript
    set_limits: AsyncScript

    @classmethod
    def register(cls, redis: aioredis.Redis) -> Scripts:
        return cls(**{name: redis.register_script(_source(name)) for name in cls.__dataclass_fields__})
