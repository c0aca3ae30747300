"""`fanout.group(name)`, Flyte 2's `flyte.group`: a label for the actions created inside the block.

Groups nest; an action's group is the names of the open groups joined by
"/", stored in its spec. A call takes the group open where it is submitted:
inside the block for `await`, `asyncio.gather` and `create_task` written
in it (asyncio tasks copy the context they are created in).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar

SEPARATOR = "/"
_CURRENT: ContextVar[str] = ContextVar("fanout_group", default="")


def current() -> str:
    """The group actions created here are labelled with; empty outside any group."""
    return _CURRENT.get()


def group(name: str) -> AbstractContextManager[None]:
    """A context manager labelling the actions created inside it with `name` (checked now, not on entry)."""
    if not isinstance(name, str) or not name.strip() or SEPARATOR in name:
        raise ValueError(f"a group needs a non-empty name without {SEPARATOR!r}, not {name!r}")
    return _inside(name)


@contextmanager
def _inside(name: str) -> Iterator[None]:
    outer = _CURRENT.get()
    token = _CURRENT.set(f"{outer}{SEPARATOR}{name}" if outer else name)
    try:
        yield
    finally:
        _CURRENT.reset(token)
