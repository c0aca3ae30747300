"""A reported success's folder is reused by its owner's next action instead of removed (workdirs.py).

Real folders and files on this machine's file system, as the process backend makes them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fanout.dispatch.workdirs import LOG, RESULT, RESULT_TMP, SPARES, SPEC, WorkRoot
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb


def leased(name: str, tenant: str = "t", run: str = "r") -> dpb.LeasedAction:
    return dpb.LeasedAction(tenant=tenant, run=run, spec=pb.ActionSpec(name=name, task_name=name), attempt=1)


def run_as_an_action(folder: Path) -> None:
    """What a one-shot worker leaves: its log, its result (written under the temporary name, renamed), scratch."""
    (folder / LOG).write_text("some output\n")
    (folder / RESULT_TMP).write_bytes(pb.ActionResult(outputs=b"x").SerializeToString())
    (folder / RESULT_TMP).replace(folder / RESULT)
    (folder / "scratch").mkdir()
    (folder / "scratch" / "data.bin").write_bytes(b"0" * 4096)


def inodes(folder: Path) -> dict[str, int]:
    return {entry.name: entry.inode() for entry in os.scandir(folder)} | {".": folder.stat().st_ino}


def test_the_next_action_gets_the_folder_and_files_of_the_last_success_emptied(tmp_path: Path) -> None:
    work = WorkRoot(tmp_path)
    assert work.claim()
    first = work.prepare(leased("a"))
    run_as_an_action(first)
    before = inodes(first)

    work.release(first, succeeded=True)
    second = work.prepare(leased("b", run="other-run"))

    assert not first.exists() and not first.parent.exists()  # its run folder went with its last action
    assert sorted(os.listdir(second)) == [LOG, RESULT_TMP, SPEC]  # no result, nothing the last action left
    assert (second / SPEC).read_bytes() == leased("b").spec.SerializeToString()
    assert (second / LOG).read_bytes() == b"" and (second / RESULT_TMP).read_bytes() == b""
    after = inodes(second)
    assert after["."] == before["."]  # no new folder, no new files: the same inodes, written over
    assert after[SPEC] == before[SPEC] and after[LOG] == before[LOG] and after[RESULT_TMP] == before[RESULT]
    assert os.stat(second).st_mode & 0o777 == 0o700
    work.close()


def test_a_failed_action_folder_is_never_a_spare(tmp_path: Path) -> None:
    work = WorkRoot(tmp_path)
    assert work.claim()
    failed = work.prepare(leased("a"))
    run_as_an_action(failed)
    work.release(failed, succeeded=False)

    fresh = work.prepare(leased("b"))

    assert fresh.stat().st_ino != failed.stat().st_ino
    assert (failed / LOG).read_text() == "some output\n"  # kept for reading, as before
    work.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="folders of other uids need root, as the sandbox does")
def test_owners_never_share_a_spare(tmp_path: Path) -> None:
    work = WorkRoot(tmp_path)
    assert work.claim()
    tenant_a, tenant_b = (200_001, 200_001), (200_002, 200_002)
    first = work.prepare(leased("a", tenant="a"), tenant_a)
    number = first.stat().st_ino
    work.release(first, succeeded=True)

    other = work.prepare(leased("b", tenant="b"), tenant_b)
    same = work.prepare(leased("c", tenant="a"), tenant_a)

    assert other.stat().st_ino != number and (other.stat().st_uid, other.stat().st_gid) == tenant_b
    assert same.stat().st_ino == number and (same.stat().st_uid, same.stat().st_gid) == tenant_a
    assert (os.stat(same / SPEC).st_uid, os.stat(other / SPEC).st_uid) == (200_001, 200_002)
    work.close()


def test_spares_are_bounded_and_a_restart_neither_reports_nor_keeps_them(tmp_path: Path) -> None:
    work = WorkRoot(tmp_path, max_spares=2)
    assert work.claim()
    folders = [work.prepare(leased(f"a{i}")) for i in range(3)]
    for folder in folders:
        run_as_an_action(folder)
        work.release(folder, succeeded=True)
    assert len(os.listdir(tmp_path / SPARES)) == 2
    work.close()  # as a crash would: the spares stay on disk

    restarted = WorkRoot(tmp_path)
    assert restarted.claim()
    assert restarted.leftovers() == []
    assert not (tmp_path / SPARES).exists()
    restarted.close()
