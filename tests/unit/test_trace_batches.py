"""How the SDK cuts traced calls' records into RecordTraces calls: bounded in count and in bytes."""

from __future__ import annotations

from fanout import traces
from fanout.v1 import actions_pb2 as pb


def pending(*sizes: int) -> list[traces._Pending]:
    return [(pb.TraceRecord(key=str(i), output=b"x" * size), None) for i, size in enumerate(sizes)]


def test_calls_hold_at_most_max_records() -> None:
    cut = traces._calls(pending(*[10] * 2500))
    assert [len(call) for call in cut] == [1000, 1000, 500]


def test_calls_hold_at_most_max_bytes_and_a_big_record_goes_alone() -> None:
    mib = 1 << 20
    cut = traces._calls(pending(3 * mib, 3 * mib, 10 * mib, 1, 1))
    assert [[len(r.output) for r, _ in call] for call in cut] == [[3 * mib], [3 * mib], [10 * mib], [1, 1]]
    assert all(len(call) == 1 or sum(len(r.output) for r, _ in call) <= traces.MAX_BYTES_PER_CALL for call in cut)
