"""Where a container's worker reaches its dispatcher: a TCP listener carrying the worker frames.

A container cannot share pipes with the dispatcher, so its worker dials in
(`python -m fanout.dispatch.worker --connect HOST:PORT`) and the frames of
worker.proto travel on that connection. Before starting a worker the
dispatcher picks a slot id and a random key for it (expect()) and gives both
to that container only, in its environment. The first frame on a connection
must be a WorkerHello naming a slot that waits and its key: anything else,
a wrong key, a slot already claimed, or silence past HELLO_TIMEOUT_SECONDS,
and the connection is closed. So a container can claim its own slot and no
other, and a slot is claimed once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
from dataclasses import dataclass

from fanout.v1 import worker_pb2 as wpb

log = logging.getLogger(__name__)

HELLO_TIMEOUT_SECONDS = 10.0
# A hello is a few dozen bytes: a bigger first frame is not a worker of ours.
MAX_HELLO_BYTES = 1024


@dataclass(frozen=True)
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


@dataclass
class _Slot:
    key: str
    connected: asyncio.Future[Connection]


class WorkerListener:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._slots: dict[str, _Slot] = {}

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self._host, self._port, limit=1 << 20)

    @property
    def address(self) -> str:
        """HOST:PORT for the workers' --connect (the bound port when 0 was asked)."""
        assert self._server is not None, "start() first"
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def expect(self) -> tuple[str, str, asyncio.Future[Connection]]:
        """A new slot: its id, its key, and the future its worker's connection resolves."""
        worker_id, key = secrets.token_hex(8), secrets.token_urlsafe(32)
        connected: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self._slots[worker_id] = _Slot(key, connected)
        # A slot that will never be claimed (its start failed, or it was given up) is forgotten.
        connected.add_done_callback(lambda _: self._slots.pop(worker_id, None))
        return worker_id, key, connected

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        slot: _Slot | None = None
        try:
            hello = await asyncio.wait_for(self._hello(reader), HELLO_TIMEOUT_SECONDS)
            slot = self._slots.get(hello.worker_id)
            if slot is not None and not hmac.compare_digest(slot.key, hello.key):
                slot = None
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            log.warning("closing a worker connection without a valid hello: %r", exc)
        if slot is None or slot.connected.done():
            if slot is None:
                log.warning("closing a worker connection that claims no waiting slot")
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            return
        slot.connected.set_result(Connection(reader, writer))

    @staticmethod
    async def _hello(reader: asyncio.StreamReader) -> wpb.WorkerHello:
        size = int.from_bytes(await reader.readexactly(4), "big")
        if size > MAX_HELLO_BYTES:
            raise ValueError(f"a first frame of {size} bytes is no hello")
        message = wpb.FromWorker.FromString(await reader.readexactly(size))
        if not message.HasField("hello"):
            raise ValueError("the first frame is not a hello")
        return message.hello

    async def close(self) -> None:
        for slot in list(self._slots.values()):
            if not slot.connected.done():
                slot.connected.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
