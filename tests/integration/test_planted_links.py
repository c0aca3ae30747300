"""Links an action plants in its own folder never make the dispatcher read or write what they point at.

The action's folder is the action's (its uid's, when the dispatcher is root); the dispatcher reads its
result and the tail of its log back, and cuts a failed action's log down after the report. An action
that swaps those files for symlinks (or hard links) to a secret, e.g. the admin token, must get
neither the secret into its reported result or error nor the secret overwritten. Real subprocesses
of the process backend; the secret is a file of this test standing in for the admin token.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from fanout.dispatch.backend import Outcome
from fanout.dispatch.process_backend import ProcessBackend
from fanout.dispatch.untrusted_files import open_untrusted
from fanout.dispatch.workdirs import KEPT_LOG_BYTES
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb

UNUSED_ENDPOINT = "127.0.0.1:9"
# A secret that would parse as a whole result, and a log of it longer than what a failure keeps.
SECRET_RESULT = pb.ActionResult(outputs=b"ADMIN-TOKEN-fa2-secret").SerializeToString()
SECRET_LOG = b"ADMIN-TOKEN-fa2-secret\n" * (2 * KEPT_LOG_BYTES // 23)


def run_and_release(backend: ProcessBackend, action: dpb.LeasedAction) -> Outcome:
    async def main() -> Outcome:
        try:
            outcome = await backend.run(action, UNUSED_ENDPOINT, lambda: None)
            await backend.release(action, outcome)  # a failure's log is cut down here
            return outcome
        finally:
            await backend.shutdown()

    return asyncio.run(main())


def planting(link: str, *targets: Path) -> dpb.LeasedAction:
    """An action (a shell command: the backend trusts tenants here) that plants links to `targets`, then fails."""
    script = "; ".join(
        f"{link} {target} {name}" for target, name in zip(targets, ("result.pb", "output.log"), strict=False)
    )
    spec = pb.ActionSpec(name="planter", task_name="planter", command=["sh", "-c", f"{script}; exit 3"])
    return dpb.LeasedAction(tenant="t", run="r", spec=spec, attempt=1, action_token="unused")


def test_a_result_and_log_symlinked_to_a_secret_are_neither_read_nor_cut(tmp_path: Path) -> None:
    result_secret, log_secret = tmp_path / "admin-token", tmp_path / "dispatcher-token"
    result_secret.write_bytes(SECRET_RESULT)
    log_secret.write_bytes(SECRET_LOG)

    outcome = run_and_release(ProcessBackend(tmp_path / "actions"), planting("ln -sf", result_secret, log_secret))

    assert outcome.phase == pb.FAILED
    assert outcome.result.error.type == "ProcessExited"  # not the planted "result"
    assert b"ADMIN-TOKEN" not in outcome.result.SerializeToString()
    assert result_secret.read_bytes() == SECRET_RESULT
    assert log_secret.read_bytes() == SECRET_LOG  # not cut to its tail


def test_a_result_hard_linked_to_a_secret_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "admin-token"
    secret.write_bytes(SECRET_RESULT)  # same owner here, so the kernel lets the link be made

    outcome = run_and_release(ProcessBackend(tmp_path / "actions"), planting("ln -f", secret))

    assert outcome.result.error.type == "ProcessExited"
    assert b"ADMIN-TOKEN" not in outcome.result.SerializeToString()
    assert secret.read_bytes() == SECRET_RESULT


def test_a_file_hard_linked_to_a_secret_is_not_cut_by_an_open_that_truncates(tmp_path: Path) -> None:
    secret = tmp_path / "admin-token"
    secret.write_bytes(SECRET_LOG)
    folder = tmp_path / "action"
    folder.mkdir()
    os.link(secret, folder / "output.log")  # what an action can plant in its own folder

    with pytest.raises(OSError, match="not a plain file"):
        open_untrusted(folder / "output.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)

    assert secret.read_bytes() == SECRET_LOG


@pytest.mark.parametrize("link", ["ln -sf", "ln -f"])
def test_links_a_successful_action_planted_do_not_follow_its_folder_into_the_next_action(
    tmp_path: Path, link: str
) -> None:
    secrets = [tmp_path / name for name in ("spec-secret", "log-secret", "result-secret")]
    for secret in secrets:
        secret.write_bytes(SECRET_RESULT)
    plant = "; ".join(f"{link} {s} {n}" for s, n in zip(secrets, ("spec.pb", "output.log", "result.pb"), strict=True))
    spec = pb.ActionSpec(name="planter", task_name="planter", command=["sh", "-c", f"{plant}; exit 0"])
    planter = dpb.LeasedAction(tenant="t", run="r", spec=spec, attempt=1, action_token="unused")
    spec = pb.ActionSpec(name="next", task_name="next", command=["sh", "-c", "echo next"])
    after = dpb.LeasedAction(tenant="t", run="r", spec=spec, attempt=1, action_token="unused")
    backend = ProcessBackend(tmp_path / "actions")
    spare: list[int] = []

    async def main() -> Outcome:
        try:
            planted = await backend.run(planter, UNUSED_ENDPOINT, lambda: None)
            assert planted.phase == pb.SUCCEEDED
            spare.append(os.stat(tmp_path / "actions" / "t" / "r" / "planter.1").st_ino)
            await backend.release(planter, planted)  # its folder becomes a spare
            return await backend.run(after, UNUSED_ENDPOINT, lambda: None)
        finally:
            await backend.shutdown()

    assert asyncio.run(main()).phase == pb.SUCCEEDED
    assert [s.read_bytes() for s in secrets] == [SECRET_RESULT] * 3
    folder = tmp_path / "actions" / "t" / "r" / "next.1"
    assert [folder.stat().st_ino] == spare  # the planter's folder, reused
    assert (folder / "spec.pb").read_bytes() == after.spec.SerializeToString()
    assert (folder / "output.log").read_text().splitlines()[0] == "next"
    assert all((folder / name).stat().st_nlink == 1 for name in ("spec.pb", "output.log"))
