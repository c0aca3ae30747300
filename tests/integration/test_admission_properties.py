"""Admission against a plain model of the limits, over sequences hypothesis makes up, on a real Redis.

The model: a run holds its root and every child admitted; a tenant's queued actions are all
of them (no dispatcher runs here). A batch is admitted whole or not at all: its new names
must fit the run's max_fanout, then the tenant's max_queued; names already in the run are
charged nothing and answered as already present (so is a name given twice in one batch, the
second time); a refused batch changes nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.quota.errors import QuotaExceeded
from fanout.server.app import ControlPlane
from fanout.v1 import actions_pb2 as pb
from tests.helpers import LoopThread

_tenants = itertools.count()
SPEC = pb.ActionSpec(task_ref="module:x:y").SerializeToString()


@dataclass
class Model:
    max_fanout: int
    max_queued: int
    runs: dict[str, set[str]] = field(default_factory=dict)

    @property
    def queued(self) -> int:
        return sum(len(names) for names in self.runs.values())

    def admit(self, run: str, names: list[str]) -> tuple[int, int] | str:
        """(admitted, already present), or the limit that refuses the batch."""
        held = self.runs[run]
        fresh = set(names) - held
        if len(held) + len(fresh) > self.max_fanout:
            return "max_fanout"
        if self.queued + len(fresh) > self.max_queued:
            return "max_queued"
        held |= fresh
        return len(fresh), len(names) - len(fresh)  # a name twice in one batch: present the second time


names = st.lists(st.sampled_from([f"a{i}" for i in range(12)]), min_size=1, max_size=8)
steps = st.lists(st.tuples(st.integers(0, 1), names), min_size=1, max_size=12)


@pytest.fixture
def store(loop_thread: LoopThread, own_plane: ControlPlane) -> Iterator[tuple[LoopThread, ControlPlane]]:
    yield loop_thread, own_plane


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(max_fanout=st.integers(1, 10), max_queued=st.integers(2, 14), steps=steps)
def test_admission_matches_the_model(
    store: tuple[LoopThread, ControlPlane], max_fanout: int, max_queued: int, steps: list[tuple[int, list[str]]]
) -> None:
    loop, plane = store
    tenant = f"prop-{next(_tenants)}"
    loop.run(plane.actions.register_tenant(tenant))
    loop.run(plane.limits.set(tenant, {"max_fanout": max_fanout, "max_queued": max_queued}, actor="t", reason="t"))
    model = Model(max_fanout, max_queued)
    runs = [f"r{i}" for i in range(2)]
    for run in runs:  # each run's root counts against both limits, like any action
        assert loop.run(plane.actions.create_run(tenant, run, "root", SPEC))
        model.runs[run] = {"root"}

    for which, batch in steps:
        run = runs[which]
        want = model.admit(run, batch)
        try:
            got = loop.run(plane.actions.admit(tenant, run, "root", [(n, SPEC) for n in batch]))
        except QuotaExceeded as exc:
            assert exc.limit_name == want, (run, batch)
        else:
            assert (got.admitted, got.already_present) == want, (run, batch)
            assert got.fanout_used == len(model.runs[run])
        assert loop.run(plane.actions.queued(tenant)) == model.queued
