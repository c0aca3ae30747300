"""What a restarted dispatcher finds in its work directory: only whole results count.

The end-to-end case (a dispatcher killed mid-fanout, restarted on the same
directory, no finished child run twice) is in test_crashes.py; these check
the process backend's recovery on folders planted as a crash leaves them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fanout.dispatch.backend import Outcome
from fanout.dispatch.process_backend import ProcessBackend
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb

UNUSED_ENDPOINT = "127.0.0.1:1"
WHOLE = pb.ActionResult(outputs=b"finished before the crash")


def leased(name: str, attempt: int) -> dpb.LeasedAction:
    # `false` fails: an action that is run instead of recovered shows as FAILED.
    spec = pb.ActionSpec(name=name, command=["false"])
    return dpb.LeasedAction(tenant="t", run="r", spec=spec, attempt=attempt, action_token="unused")


def plant(root: Path, name: str, attempt: int, files: dict[str, bytes]) -> Path:
    folder = root / "t" / "r" / f"{name}.{attempt}"
    folder.mkdir(parents=True)
    for file, data in files.items():
        (folder / file).write_bytes(data)
    return folder


def spec_of(name: str) -> bytes:
    return leased(name, 1).spec.SerializeToString()


def test_only_whole_results_are_recovered_and_unfinished_folders_go(tmp_path: Path) -> None:
    root = tmp_path / "actions"
    plant(root, "whole", 1, {"spec.pb": spec_of("whole"), "result.pb": WHOLE.SerializeToString()})
    garbage = plant(root, "garbage", 1, {"spec.pb": spec_of("garbage"), "result.pb": b"\xff\xff\xff"})
    empty = plant(root, "empty", 1, {"spec.pb": spec_of("empty"), "result.pb": b""})
    half = plant(root, "half", 1, {"spec.pb": spec_of("half"), "result.tmp": WHOLE.SerializeToString()[:5]})
    kept = plant(root, "failed", 1, {"output.log": b"why it failed\n"})  # a failure reported before the crash
    backend = ProcessBackend(root)

    async def main() -> list[tuple[dpb.LeasedAction, Outcome]]:
        try:
            return await backend.recover()
        finally:
            await backend.shutdown()

    [(action, outcome)] = asyncio.run(main())

    assert (action.tenant, action.run, action.spec.name, action.attempt) == ("t", "r", "whole", 1)
    assert outcome == Outcome(pb.SUCCEEDED, WHOLE)
    assert not any(folder.exists() for folder in (garbage, empty, half))  # they run again under a new lease
    assert kept.exists()


def test_a_new_lease_of_a_recovered_action_gets_its_result_without_running(tmp_path: Path) -> None:
    root = tmp_path / "actions"
    plant(root, "done", 1, {"spec.pb": spec_of("done"), "result.pb": WHOLE.SerializeToString()})
    backend = ProcessBackend(root)

    async def main() -> Outcome:
        try:
            await backend.recover()
            # The old attempt's report came too late; the action was leased again.
            return await backend.run(leased("done", 2), UNUSED_ENDPOINT, lambda: None)
        finally:
            await backend.shutdown()

    assert asyncio.run(main()) == Outcome(pb.SUCCEEDED, WHOLE)
    assert (root / "t" / "r" / "done.2" / "result.pb").exists()  # kept under the new attempt until reported


def test_a_work_directory_in_use_by_a_live_dispatcher_is_left_to_it(tmp_path: Path) -> None:
    root = tmp_path / "actions"
    plant(root, "left", 1, {"spec.pb": spec_of("left"), "result.pb": WHOLE.SerializeToString()})
    first, second = ProcessBackend(root), ProcessBackend(root)

    async def main() -> tuple[int, int]:
        try:
            recovered_first = len(await first.recover())
            # One of the first dispatcher's actions is running now; the second must not take it for a leftover.
            plant(root, "live", 1, {"spec.pb": spec_of("live")})
            return recovered_first, len(await second.recover())
        finally:
            await first.shutdown()
            await second.shutdown()

    assert asyncio.run(main()) == (1, 0)
    assert (root / "t" / "r" / "live.1" / "spec.pb").exists()
