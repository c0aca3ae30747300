"""Local mode: the whole task tree in this process, no control plane, as Flyte's mode="local"."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import fanout
from fanout import runs
from fanout.local import LocalRun

env = fanout.TaskEnvironment(name="local_env", env_vars={"FROM_ENV": "env"})


@env.task
async def square(x: int) -> int:
    await asyncio.sleep(0)
    return x * x


@env.task
def plain_double(x: int) -> int:
    return 2 * x


@env.task
async def fan(n: int) -> list[int]:
    squares = await asyncio.gather(*(square(i) for i in range(n)))
    print(f"fanned out {n}")
    return [plain_double(s) for s in squares]


@env.task
async def fails(x: int) -> int:
    await square(x)
    raise ValueError(f"no good: {x}")


@env.task
async def read(name: str) -> str:
    return os.environ.get(name, "")


def local() -> fanout.RunContext:
    return fanout.with_runcontext(mode="local")


def test_a_fanout_runs_in_this_process_without_a_control_plane() -> None:
    run = local().run(fan, 5)

    assert isinstance(run, LocalRun)
    assert (run.phase, run.outputs()) == ("SUCCEEDED", [0, 2, 8, 18, 32])
    assert run.logs() == "fanned out 5\n"
    assert run.url.startswith("local://")


def test_a_failure_is_raised_by_outputs_as_the_task_raised_it() -> None:
    run = local().run(fails, 3)
    assert run.phase == "FAILED"
    with pytest.raises(ValueError, match="no good: 3"):
        run.outputs()


def test_the_environments_and_the_runs_variables_hold_for_the_run_only() -> None:
    context = fanout.with_runcontext(mode="local", name="mine", env_vars={"FROM_RUN": "run"})
    assert context.run(read, "FROM_RUN").outputs() == "run"
    assert context.run(read, "FROM_ENV").outputs() == "env"
    assert context.run(read, "FROM_ENV").name == "mine"
    assert "FROM_RUN" not in os.environ and "FROM_ENV" not in os.environ


def test_bad_arguments_are_refused_before_anything_runs() -> None:
    with pytest.raises(TypeError):
        local().run(fan, 1, 2)


def test_an_async_caller_may_run_locally_too() -> None:
    async def caller() -> list[int]:
        return local().run(fan, 3).outputs()

    assert asyncio.run(caller()) == [0, 2, 8]


def test_init_with_no_endpoint_anywhere_runs_locally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As Flyte's flyte.init(): nothing to connect to means this process runs the tree."""
    for name in ("FANOUT_ENDPOINT", "FANOUT_TOKEN", "FANOUT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.fanout/config.yaml
    monkeypatch.chdir(tmp_path)  # no ./.fanout/config.yaml
    monkeypatch.setattr(runs, "_client", None)  # put back as they were after the test
    monkeypatch.setattr(runs, "_local", False)

    fanout.init()

    run = fanout.run(fan, 3)
    assert isinstance(run, LocalRun) and run.outputs() == [0, 2, 8]
    assert isinstance(fanout.with_runcontext(name="r").run(fan, 2), LocalRun)
    with pytest.raises(fanout.errors.ConfigError, match="no endpoint, so runs are local"):
        fanout.with_runcontext(mode="remote").run(fan, 2)


def test_init_with_an_endpoint_but_no_token_still_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FANOUT_TOKEN", raising=False)
    monkeypatch.setenv("FANOUT_CONFIG", os.devnull)
    monkeypatch.setattr(runs, "_client", None)
    monkeypatch.setattr(runs, "_local", False)

    with pytest.raises(fanout.errors.ConfigError, match="no token"):
        fanout.init(endpoint="127.0.0.1:1")
    assert not runs._local
