"""The worker's side of its frames, driven in-process: what goes in, what comes out."""

from __future__ import annotations

import asyncio

from fanout.client import AsyncClient
from fanout.config import ClientConfig
from fanout.dispatch.frames import frame
from fanout.dispatch.worker import Worker
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb
from fanout.v1 import worker_pb2 as wpb
from tests.conftest import TASKS_FILE


class Sent:
    """Stands in for the dispatcher's end: keeps each batch of outcomes the worker sends (one frame each)."""

    def __init__(self) -> None:
        self.batches: list[list[wpb.WorkerOutcome]] = []

    def __call__(self, done: list[wpb.WorkerOutcome]) -> None:
        self.batches.append(list(done))


def leased(name: str, task: str, inputs: bytes) -> dpb.LeasedAction:
    spec = pb.ActionSpec(name=name, task_ref=f"file:{TASKS_FILE}:{task}", inputs=inputs)
    return dpb.LeasedAction(tenant="t", run="r", spec=spec, attempt=1, action_token="token")


def run_worker(*messages: wpb.ToWorker) -> list[list[wpb.WorkerOutcome]]:
    async def main() -> list[list[wpb.WorkerOutcome]]:
        client = AsyncClient(ClientConfig(endpoint="127.0.0.1:1"), tokens_per_call=True)
        sent = Sent()
        worker = Worker(client, sent)
        for message in messages:
            worker.handle(wpb.ToWorker.FromString(frame(message.SerializeToString())[4:]))
        for _ in range(20):
            await asyncio.sleep(0)
        await worker.stop()
        await client.close()
        return sent.batches

    return asyncio.run(main())


def test_actions_finishing_together_share_one_frame() -> None:
    message = wpb.ToWorker(run=[leased(f"sq{i}", "square", b'{"args":[%d],"kwargs":{}}' % i) for i in range(5)])
    [done] = run_worker(message)  # one batch: one frame
    assert sorted((o.name, o.phase, o.result.outputs) for o in done) == [
        (f"sq{i}", pb.SUCCEEDED, str(i * i).encode()) for i in range(5)
    ]


def test_an_action_cancelled_in_the_frame_that_started_it_is_answered() -> None:
    # Started and cancelled in one turn: its task never ran a line, yet the dispatcher waits for its answer.
    action = leased("slow", "sleepy", b'{"args":[1,30],"kwargs":{}}')
    message = wpb.ToWorker(run=[action], cancel=[wpb.WorkerCancel(run="r", name="slow", attempt=1)])
    assert [(o.name, o.phase) for batch in run_worker(message) for o in batch] == [("slow", pb.ABORTED)]
