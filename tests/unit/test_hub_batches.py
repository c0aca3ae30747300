"""How the hub packs one turn's children of many parents into SubmitMany calls (no server needed)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import cast

import pytest

from fanout import hub
from fanout.client import AsyncClient
from fanout.v1 import actions_pb2 as pb


@dataclass
class FakeParent:
    """A stand-in for a controller: _calls and _by_parent only group by it."""

    parent: str
    run: str = "r"


TEMPLATE = pb.ActionSpec(task_ref="module:tests:noop")


def specs(prefix: str, n: int, size: int = 0) -> list[hub.Child]:
    return [hub.Child(f"{prefix}{i}", b"x" * size, TEMPLATE, TEMPLATE.ByteSize()) for i in range(n)]


def layout(calls: list[list[hub._Section]]) -> list[list[tuple[str, int]]]:
    return [[(section.parent.parent, len(section.children)) for section in call] for call in calls]


def test_one_turn_of_many_parents_is_one_call_with_one_section_per_parent() -> None:
    a, b = FakeParent("a"), FakeParent("b")
    pending = [hub._Section(a, specs("a", 1)), hub._Section(b, specs("b", 2)), hub._Section(a, specs("x", 3))]

    calls = hub._calls(hub._by_parent(pending))

    assert layout(calls) == [[("a", 4), ("b", 2)]]
    assert [s.name for s in calls[0][0].children] == ["a0", "x0", "x1", "x2"]  # in the order they were called


def test_a_turn_over_the_action_cap_splits_a_section_across_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "MAX_BATCH", 5)
    a, b = FakeParent("a"), FakeParent("b")

    calls = hub._calls([hub._Section(a, specs("a", 3)), hub._Section(b, specs("b", 8))])

    assert layout(calls) == [[("a", 3), ("b", 2)], [("b", 5)], [("b", 1)]]


def test_a_turn_over_the_byte_cap_splits_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    children = specs("a", 5, size=100)
    monkeypatch.setattr(hub, "MAX_BATCH_BYTES", 2 * children[0].size() + 1)  # room for two
    a = FakeParent("a")

    calls = hub._calls([hub._Section(a, children)])

    assert layout(calls) == [[("a", 2)], [("a", 2)], [("a", 1)]]


def test_a_childs_size_is_at_least_its_specs() -> None:
    """The byte cap holds: the estimate is never under what the spec put together will weigh."""
    template = pb.ActionSpec(task_ref="module:tests:noop", environment="e", retries=3)
    for inputs in (b"", b"x" * 100, b"x" * 200_000):
        child = hub.Child("a-name", inputs, template, template.ByteSize())
        spec = pb.ActionSpec()
        spec.CopyFrom(template)
        spec.name, spec.inputs = child.name, child.inputs
        assert spec.ByteSize() <= child.size() <= spec.ByteSize() + 8


def test_a_big_turns_first_call_is_small_so_its_actions_start_while_the_rest_are_admitted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub, "FIRST_BATCH", 3)
    monkeypatch.setattr(hub, "MAX_BATCH", 5)
    a = FakeParent("a")

    calls = hub._calls([hub._Section(a, specs("a", 12))])

    assert layout(calls) == [[("a", 3)], [("a", 5)], [("a", 4)]]


def test_children_taken_back_before_they_are_sent_leave_the_pending_count() -> None:
    """The count decides when a turn sends early: it follows what is pending."""

    async def main() -> tuple[int, list[str]]:
        submissions = hub.Hub(cast(AsyncClient, object()))  # nothing is sent: no client is needed
        submissions._flush_scheduled = True  # and no turn's end sends
        a = FakeParent("a")
        submissions.submit(a, specs("a", 5))
        submissions._unsend(a, ["a1", "a3"])
        return submissions._pending_count, [c.name for s in submissions._pending for c in s.children]

    assert asyncio.run(main()) == (3, ["a0", "a2", "a4"])
