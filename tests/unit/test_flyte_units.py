"""The Flyte-shaped authoring API without a control plane: policies, error kinds, map run locally, groups."""

from __future__ import annotations

import asyncio
import functools
from datetime import timedelta

import pytest

import fanout
from fanout import errors
from fanout.dispatch.dispatcher import retry_backoff
from fanout.v1 import actions_pb2 as pb

env = fanout.TaskEnvironment(name="units")
running = {"now": 0, "peak": 0}


@env.task
async def double(x: int, pause: float = 0.0) -> int:
    running["now"] += 1
    running["peak"] = max(running["peak"], running["now"])
    await asyncio.sleep(pause)
    running["now"] -= 1
    if x < 0:
        raise ValueError(f"negative {x}")
    return 2 * x


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": "3"}, "retries must be an int or a RetryStrategy, not str"),
        ({"retries": 2.5}, "retries must be an int or a RetryStrategy, not float"),
        ({"timeout": "10s"}, "timeout must be seconds"),
        ({"timeout": [1]}, "not list"),
    ],
)
def test_wrong_policy_types_are_refused_at_decoration(options: dict[str, object], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        env.task(**options)
    with pytest.raises(TypeError, match=message):
        double.override(**options)


def test_policies_land_in_the_spec() -> None:
    strategy = fanout.RetryStrategy(count=4, backoff=fanout.Backoff(base=timedelta(seconds=2), factor=3, cap=10))
    t = double.override(retries=strategy, timeout=fanout.Timeout(max_runtime=timedelta(minutes=1), max_queued_time=90))
    spec = t.spec("x", b"")
    assert (spec.retries, spec.timeout_seconds, spec.max_queued_seconds) == (4, 60, 90)
    assert (spec.backoff.base_seconds, spec.backoff.factor, spec.backoff.cap_seconds) == (2.0, 3.0, 10.0)
    plain = double.override(retries=2, timeout=2.5).spec("x", b"")
    assert (plain.retries, plain.timeout_seconds, plain.HasField("backoff")) == (2, 3, False)
    assert double.spec("x", b"").retries == 0  # the override changed a copy


def test_backoff_is_min_of_growth_and_cap_in_the_dispatcher_and_the_sdk() -> None:
    b = fanout.Backoff(base=timedelta(seconds=2), factor=3, cap=timedelta(seconds=10))
    spec = pb.ActionSpec(backoff=b.to_proto())
    assert [retry_backoff(attempt, spec) for attempt in (1, 2, 3, 4)] == [2.0, 6.0, 10.0, 10.0]
    assert [b.compute_delay(n).total_seconds() for n in range(4)] == [2.0, 6.0, 10.0, 10.0]
    assert retry_backoff(1, pb.ActionSpec(backoff=fanout.Backoff(base=0, factor=1, cap=None).to_proto())) > 0
    assert retry_backoff(3, pb.ActionSpec()) == 4.0  # no backoff in the spec: the default 1, 2, 4, ...
    assert retry_backoff(5000, spec) == 10.0
    with pytest.raises(ValueError, match="cap is required"):
        fanout.Backoff(base=1, factor=2, cap=None)
    with pytest.raises(ValueError, match="factor"):
        fanout.Backoff(base=1, factor=0.5)


@pytest.mark.parametrize(
    ("phase", "error_type", "kind"),
    [
        ("FAILED", "ValueError", errors.RuntimeUserError),
        ("FAILED", "ProcessExited", errors.RuntimeSystemError),
        ("FAILED", "OOMKilled", errors.OOMError),
        ("TIMED_OUT", "Timeout", errors.TaskTimeoutError),
        ("ABORTED", "Aborted", errors.ActionAbortedError),
    ],
)
def test_an_action_end_maps_to_its_flyte_error(phase: str, error_type: str, kind: type[Exception]) -> None:
    exc = errors.action_failed("a", phase, error_type, "why")
    assert type(exc) is kind
    assert isinstance(exc, errors.ActionFailed) and isinstance(exc, errors.FanoutError)
    assert (exc.code, exc.message) == (error_type, "why")
    run_exc = errors.action_failed("r", phase, error_type, "why", run=True)
    assert isinstance(run_exc, errors.RunFailed) and isinstance(run_exc, kind)


def test_map_runs_locally_in_order_within_its_bound() -> None:
    running["peak"] = 0
    results = fanout.map(double, [3, 1, 2, 5, 4], [0.03, 0.0, 0.02, 0.0, 0.01], concurrency=2)
    assert list(results) == [6, 2, 4, 10, 8]
    assert running["peak"] == 2
    assert list(fanout.map(functools.partial(double, pause=0.0), range(4))) == [0, 2, 4, 6]


def test_map_errors_raise_or_come_back_in_place() -> None:
    kept = fanout.map(double, [1, -1, 2], return_exceptions=True)
    assert [r if isinstance(r, int) else type(r).__name__ for r in kept] == [2, "ValueError", 4]
    with pytest.raises(ValueError, match="negative -1"):
        list(fanout.map(double, [1, -1, 2]))
    with pytest.raises(TypeError, match=r"units\.double"):
        list(fanout.map(double, [1], [0.0], [7]))  # one argument too many, refused before any call
    with pytest.raises(TypeError, match="needs a task"):
        fanout.map(lambda x: x, [1])


def test_map_aio_for_async_callers_and_a_clear_error_for_blocking_map_in_a_loop() -> None:
    async def collect() -> list[int]:
        with pytest.raises(TypeError, match=r"map\.aio"):
            fanout.map(double, [1])
        return [x async for x in fanout.map.aio(double, range(5), concurrency=3)]

    assert asyncio.run(collect()) == [0, 2, 4, 6, 8]


def test_map_reads_its_inputs_lazily() -> None:
    def endless() -> object:
        n = 0
        while True:
            yield n
            n += 1

    results = fanout.map(double, endless(), concurrency=4)
    assert [next(results) for _ in range(3)] == [0, 2, 4]


def test_groups_nest_and_close() -> None:
    with fanout.group("a"):
        with fanout.group("b"):
            assert double.spec("x", b"").group == "a/b"
        assert double.spec("x", b"").group == "a"
    assert double.spec("x", b"").group == ""
    with pytest.raises(ValueError):
        fanout.group("")


def test_environment_shapes_and_clone_with() -> None:
    base = fanout.TaskEnvironment(
        "base",
        image="python:3.11",
        resources=fanout.Resources(cpu=1, memory="1Gi"),
        env_vars={"A": "1"},
        secrets=["token"],
        reusable=fanout.ReusePolicy(replicas=2, concurrency=4),
    )
    other = base.clone_with(name="other", env_vars={"B": "2"}, depends_on=[base])
    assert (other.name, other.image, other.env_vars, other.depends_on) == ("other", "python:3.11", {"B": "2"}, [base])
    assert other.reusable == base.reusable and other.tasks == {}
    with pytest.raises(TypeError, match="unknown fields: colour"):
        base.clone_with(name="x", colour="red")
    with pytest.raises(TypeError, match="resources must be a Resources"):
        fanout.TaskEnvironment("bad", resources="1Gi")


def test_task_aio_awaits_the_call() -> None:
    assert asyncio.run(double.aio(21)) == 42


def test_memory_quantities() -> None:
    from fanout.memory import to_bytes

    assert [to_bytes(q) for q in ("256Mi", "1Gi", "500M", 128 << 20)] == [256 << 20, 1 << 30, 500 * 10**6, 128 << 20]
    with pytest.raises(ValueError, match="not a quantity"):
        fanout.Resources(memory="lots")
    with pytest.raises(ValueError, match="too little"):
        fanout.Resources(memory="1Mi")


def test_unknown_task_options_are_refused_and_flyte_ones_accepted() -> None:
    with pytest.raises(TypeError, match="unexpected keyword arguments: retrys"):
        env.task(retrys=3)
    with pytest.raises(TypeError, match="unexpected keyword arguments: colour"):
        double.override(colour="red")
    assert env.task(report=True, queue="gpu", docs=None)(double.fn).name == "units.double"
    assert double.override(cache="auto", env_vars={"A": "1"}).retries == 0


def test_run_before_init_is_flytes_initialization_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from fanout import runs

    monkeypatch.setattr(runs, "_client", None)
    with pytest.raises(errors.InitializationError, match="init"):
        fanout.run(double, 1)
