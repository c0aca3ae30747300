"""How the hub packs one turn's children of many parents into SubmitMany calls (no server needed)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fanout import hub
from fanout.v1 import actions_pb2 as pb


@dataclass
class FakeParent:
    """A stand-in for a controller: _calls and _by_parent only group by it."""

    parent: str
    run: str = "r"


def specs(prefix: str, n: int, size: int = 0) -> list[pb.ActionSpec]:
    return [pb.ActionSpec(name=f"{prefix}{i}", inputs=b"x" * size) for i in range(n)]


def layout(calls: list[list[hub._Section]]) -> list[list[tuple[str, int]]]:
    return [[(section.parent.parent, len(section.specs)) for section in call] for call in calls]


def test_one_turn_of_many_parents_is_one_call_with_one_section_per_parent() -> None:
    a, b = FakeParent("a"), FakeParent("b")
    pending = [hub._Section(a, specs("a", 1)), hub._Section(b, specs("b", 2)), hub._Section(a, specs("x", 3))]

    calls = hub._calls(hub._by_parent(pending))

    assert layout(calls) == [[("a", 4), ("b", 2)]]
    assert [s.name for s in calls[0][0].specs] == ["a0", "x0", "x1", "x2"]  # in the order they were called


def test_a_turn_over_the_action_cap_splits_a_section_across_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "MAX_BATCH", 5)
    a, b = FakeParent("a"), FakeParent("b")

    calls = hub._calls([hub._Section(a, specs("a", 3)), hub._Section(b, specs("b", 8))])

    assert layout(calls) == [[("a", 3), ("b", 2)], [("b", 5)], [("b", 1)]]


def test_a_turn_over_the_byte_cap_splits_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "MAX_BATCH_BYTES", 250)
    a = FakeParent("a")

    calls = hub._calls([hub._Section(a, specs("a", 5, size=100))])

    assert layout(calls) == [[("a", 2)], [("a", 2)], [("a", 1)]]
