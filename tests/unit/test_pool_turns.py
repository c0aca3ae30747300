"""The dispatcher's side of a worker's frames: a big frame's outcomes over several turns of the loop.

Driven in-process: a worker's frames fed to a FramedWorker through a stream, a stand-in pool
recording in which turn of the loop each outcome reached it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fanout.dispatch import pools
from fanout.dispatch.backend import Outcome
from fanout.dispatch.frames import frame
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import worker_pb2 as wpb


class TurnRecordingPool:
    """Stands in for a Pool: notes the loop turn of each outcome, and the worker's exit."""

    def __init__(self) -> None:
        self.turn = 0
        self.turns: list[int] = []
        self.ended = False

    def finished(self, worker: Any, outcome: wpb.WorkerOutcome) -> None:
        self.turns.append(self.turn)

    def exited(self, worker: Any, code: int, outcome: Outcome | None = None) -> None:
        self.ended = True


class FedWorker(pools.FramedWorker):
    """A worker whose frames come from a stream we feed: nothing to start or stop."""

    async def _wait_exit(self) -> tuple[int, Outcome | None]:
        return 0, None


def test_a_frame_of_thousands_of_outcomes_is_handled_a_bounded_number_per_turn() -> None:
    count = 10 * pools.OUTCOMES_PER_TURN + 3
    outcomes = [wpb.WorkerOutcome(run="r", name=f"a{i}", attempt=1, phase=pb.SUCCEEDED) for i in range(count)]

    async def main() -> TurnRecordingPool:
        pool = TurnRecordingPool()
        worker = FedWorker(pool)
        stream = asyncio.StreamReader()
        stream.feed_data(frame(wpb.FromWorker(ready=wpb.WorkerReady(pid=1, tells_running=True)).SerializeToString()))
        stream.feed_data(frame(wpb.FromWorker(finished=outcomes).SerializeToString()))
        stream.feed_eof()

        async def count_turns() -> None:
            while True:
                pool.turn += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(count_turns())
        writer: Any = type("Writer", (), {"close": lambda self: None, "is_closing": lambda self: True})()
        await worker._connect(stream, writer)
        await asyncio.wait_for(worker._stop_reading(), 5)
        ticker.cancel()
        return pool

    pool = asyncio.run(main())
    assert pool.ended  # the stream's end is the worker's
    assert len(pool.turns) == count  # every outcome, once
    per_turn = [pool.turns.count(turn) for turn in sorted(set(pool.turns))]
    assert max(per_turn) <= pools.OUTCOMES_PER_TURN
    assert len(per_turn) == 11
