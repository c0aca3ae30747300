"""The event loop a reusable worker runs on: uvloop's where it is installed, asyncio's otherwise.

A worker's actions are asyncio tasks, so each one costs a few turns of the loop: a task created,
its steps and callbacks scheduled, a frame read and written on the dispatcher's pipe. uvloop
(libuv, in C) does those in a fraction of the pure-Python loop's time: in fanouts of 10,000
no-ops on the 2-core development machine, the workers' CPU per action fell from about 41 to
36 µs (medians of eight runs each). Tenant code sees an ordinary asyncio loop. One-shot
workers keep asyncio's loop: they run one action, and importing uvloop would only add to their
start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on uvloop's loop when uvloop is importable."""
    try:
        import uvloop
    except ImportError:  # a platform it does not build on: the standard loop does the same work
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
