"""Length-prefixed frames on a byte stream: a 4-byte big-endian size, then the body.

The dispatcher and its workers exchange fanout.v1.worker messages this way
(see worker.proto); a frame is read whole or not at all.
"""

from __future__ import annotations

import asyncio

# Far above any batch of actions a dispatcher holds, far below what a
# corrupt size field would make us allocate.
MAX_FRAME_BYTES = 1 << 30


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


async def read_frame(stream: asyncio.StreamReader) -> bytes:
    """The next frame's body; IncompleteReadError at the end of the stream, ValueError if it is corrupt."""
    size = int.from_bytes(await stream.readexactly(4), "big")
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"a frame of {size} bytes: the stream is corrupt")
    return await stream.readexactly(size)
