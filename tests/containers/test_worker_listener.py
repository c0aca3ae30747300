"""The worker listener: only the container given a slot's key can claim that slot, and only once.

Real TCP connections on loopback, speaking the worker frames (no engine needed).
"""

from __future__ import annotations

import asyncio

from fanout.dispatch.frames import frame, read_frame
from fanout.dispatch.worker_listener import WorkerListener
from fanout.v1 import worker_pb2 as wpb


async def dial(listener: WorkerListener, first: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = listener.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(first)
    await writer.drain()
    return reader, writer


def hello(worker_id: str, key: str) -> bytes:
    return frame(wpb.FromWorker(hello=wpb.WorkerHello(worker_id=worker_id, key=key)).SerializeToString())


async def closed_by_listener(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(1), 5) == b""


def test_a_slot_is_claimed_only_with_its_own_key_and_only_once() -> None:
    async def main() -> None:
        listener = WorkerListener()
        await listener.start()
        mine_id, mine_key, mine = listener.expect()
        _, other_key, other = listener.expect()
        opened: list[asyncio.StreamWriter] = []
        try:
            # Another slot's key, an unknown slot, a frame that is no hello, a huge size: all refused.
            for first in (
                hello(mine_id, other_key),
                hello("unknown", mine_key),
                frame(wpb.FromWorker(ready=wpb.WorkerReady(pid=1)).SerializeToString()),
                (1 << 20).to_bytes(4, "big"),
            ):
                reader, writer = await dial(listener, first)
                opened.append(writer)
                assert await closed_by_listener(reader)
            assert not mine.done() and not other.done()

            reader, writer = await dial(listener, hello(mine_id, mine_key))
            opened.append(writer)
            connection = await asyncio.wait_for(mine, 5)
            # The claimed connection carries frames both ways.
            connection.writer.write(frame(wpb.ToWorker().SerializeToString()))
            assert await asyncio.wait_for(read_frame(reader), 5) == b""
            assert not other.done()

            # The same key again: the slot is gone.
            again, again_writer = await dial(listener, hello(mine_id, mine_key))
            opened.append(again_writer)
            assert await closed_by_listener(again)
            connection.writer.close()
        finally:
            for writer in opened:
                writer.close()
            await listener.close()
        assert other.cancelled()  # a slot never claimed is given up at close

    asyncio.run(main())
