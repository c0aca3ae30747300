"""A report call is split into short scripts by count and by result bytes, in order (actions.py)."""

from __future__ import annotations

from fanout.quota.actions import REPORT_CHUNK, REPORT_CHUNK_BYTES, Report, _report_chunks


def reports(n: int, size: int = 0) -> list[Report]:
    return [Report("r", f"a{i}", 1, 5, b"x" * size) for i in range(n)]


def test_chunks_keep_order_and_count() -> None:
    given = reports(2 * REPORT_CHUNK + 1)
    chunks = list(_report_chunks(given))
    assert [len(c) for c in chunks] == [REPORT_CHUNK, REPORT_CHUNK, 1]
    assert [r for c in chunks for r in c] == given


def test_big_results_make_smaller_chunks_and_one_huge_result_goes_alone() -> None:
    third = REPORT_CHUNK_BYTES // 3 + 1
    given = [*reports(5, third), *reports(1, 2 * REPORT_CHUNK_BYTES)]
    chunks = list(_report_chunks(given))
    assert [len(c) for c in chunks] == [2, 2, 1, 1]
    assert all(sum(len(r.result) for r in c) <= REPORT_CHUNK_BYTES or len(c) == 1 for c in chunks)


def test_no_reports_no_chunks() -> None:
    assert list(_report_chunks([])) == []
