"""What an action's task prints, kept per action, even when many actions share one worker.

A worker runs many actions at once on one event loop (and plain `def` tasks in
its threads), all writing to the same sys.stdout and sys.stderr. `install()`
puts a router in front of both: a write goes to the stream as before, and also
to the buffer of the action whose context it runs in (a context variable, which
asyncio tasks and the worker's threads inherit). `capture()` opens that buffer
for one action; the runtime hands what it holds to the control plane with the
action's result (ActionResult.output), where `fanout logs` reads it.

Only writes through Python's sys.stdout/sys.stderr are seen: a subprocess's or
a C library's output goes to the worker's own log, as before.
"""

from __future__ import annotations

import contextvars
import io
import sys
from typing import TextIO

# The most kept per attempt: its last bytes, behind a line saying how much went before.
OUTPUT_CAP_BYTES = 1 << 20
# What one attempt's output may take at most: the cap and the note; the control plane cuts past it.
OUTPUT_MAX_BYTES = OUTPUT_CAP_BYTES + 256

_CURRENT: contextvars.ContextVar[Captured | None] = contextvars.ContextVar("fanout_output", default=None)


class Captured:
    """One attempt's output, its last OUTPUT_CAP_BYTES at most."""

    def __init__(self, cap: int = OUTPUT_CAP_BYTES) -> None:
        self._cap = cap
        self._data = bytearray()
        self._dropped = 0

    def add(self, text: str) -> None:
        self._data += text.encode("utf-8", "replace")
        over = len(self._data) - self._cap
        if over > 0:
            del self._data[:over]
            self._dropped += over

    def value(self) -> bytes:
        if not self._dropped:
            return bytes(self._data)
        return f"[... {self._dropped} earlier bytes cut ...]\n".encode() + bytes(self._data)


class _Router(io.TextIOBase):
    """A text stream that writes through to `stream` and to the current action's buffer."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        captured = _CURRENT.get()
        if captured is not None:
            captured.add(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding


def install() -> None:
    """Route sys.stdout and sys.stderr through the per-action buffers (once per process)."""
    if not isinstance(sys.stdout, _Router):
        sys.stdout = _Router(sys.stdout)
    if not isinstance(sys.stderr, _Router):
        sys.stderr = _Router(sys.stderr)


class capture:
    """Keep what is printed in this context (and the tasks and threads it starts) until the block ends.

    A class, not a generator-based context manager: every action enters one, and this costs less.
    """

    __slots__ = ("_captured", "_token")

    def __init__(self) -> None:
        self._captured = Captured()

    def __enter__(self) -> Captured:
        self._token = _CURRENT.set(self._captured)
        return self._captured

    def __exit__(self, *exc: object) -> None:
        _CURRENT.reset(self._token)
