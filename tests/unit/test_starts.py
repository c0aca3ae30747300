"""The dispatcher's starts: a bounded number per turn of the loop, shared among tenants (no server needed)."""

from __future__ import annotations

import asyncio
from collections import Counter

from fanout.dispatch.starts import Starts
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb


def leased(tenant: str, name: str) -> dpb.LeasedAction:
    return dpb.LeasedAction(tenant=tenant, run="r", attempt=1, spec=pb.ActionSpec(name=name))


def started_by_turn(*batches: list[dpb.LeasedAction], per_turn: int = 8) -> list[list[str]]:
    """Add the batches in one turn; the names started in each following turn, until none is left."""

    async def main() -> list[list[str]]:
        turns: list[list[str]] = [[]]
        starts = Starts(lambda action: turns[-1].append(f"{action.tenant}:{action.spec.name}"), per_turn)
        for batch in batches:
            starts.add(batch)
        assert len(starts) == sum(len(b) for b in batches)
        while starts:
            await asyncio.sleep(0)
            turns.append([])
        return [turn for turn in turns if turn]

    return asyncio.run(main())


def test_a_turn_starts_at_most_its_share() -> None:
    turns = started_by_turn([leased("big", f"a{i}") for i in range(20)])
    assert [len(turn) for turn in turns] == [8, 8, 4]
    assert [name for turn in turns for name in turn] == [f"big:a{i}" for i in range(20)]  # in lease order


def test_a_small_tenant_behind_a_big_backlog_starts_in_the_next_turn() -> None:
    big = [leased("big", f"a{i}") for i in range(1_000)]
    turns = started_by_turn(big, big[:0], [leased("small", "s0")])
    assert "small:s0" in turns[0]
    assert Counter(name.split(":")[0] for name in turns[0]) == {"big": 7, "small": 1}


def test_tenants_share_each_turn() -> None:
    turns = started_by_turn([leased("a", f"x{i}") for i in range(16)], [leased("b", f"y{i}") for i in range(16)])
    assert [Counter(name.split(":")[0] for name in turn) for turn in turns] == [{"a": 4, "b": 4}] * 4


def test_an_action_taken_back_never_starts_and_its_lease_is_no_longer_held() -> None:
    async def main() -> tuple[list[str], list[str]]:
        started: list[str] = []
        starts = Starts(lambda action: started.append(action.spec.name), per_turn=8)
        starts.add([leased("t", "keep"), leased("t", "drop")])
        assert starts.remove("t", ("r", "drop", 1)) is not None
        assert starts.remove("t", ("r", "drop", 1)) is None  # once only
        assert starts.remove("t", ("r", "keep", 2)) is None  # another attempt is another action
        held = [a.spec.name for a in starts.held()]
        await asyncio.sleep(0)
        return held, started

    held, started = asyncio.run(main())
    assert held == ["keep"]
    assert started == ["keep"]
