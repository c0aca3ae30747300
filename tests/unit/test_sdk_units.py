"""SDK pieces that need nothing running."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout import config, errors, gc_tuning, serialization
from fanout.controller import child_name
from fanout.quota import keys
from fanout.runtime import load_task
from fanout.task import Task

TASKS = Path(__file__).resolve().parents[1] / "tasks" / "fanout_tasks.py"


def test_child_names_are_deterministic_and_valid() -> None:
    a = child_name("root", "file:/x.py:fetch_data", b'{"args":[1]}', 1)

    assert a == child_name("root", "file:/x.py:fetch_data", b'{"args":[1]}', 1)
    assert a.startswith("fetch_data-")
    assert keys.ACTION_RE.match(a)
    assert a != child_name("root", "file:/x.py:fetch_data", b'{"args":[1]}', 2)
    assert a != child_name("root", "file:/x.py:fetch_data", b'{"args":[2]}', 1)
    assert a != child_name("other", "file:/x.py:fetch_data", b'{"args":[1]}', 1)


def test_inputs_encode_stably_and_reject_what_json_cannot_hold() -> None:
    assert serialization.encode_inputs("t", (1,), {"b": 2, "a": 1}) == b'{"args":[1],"kwargs":{"a":1,"b":2}}'
    assert serialization.decode_inputs(b'{"args":[1],"kwargs":{"a":1}}') == ([1], {"a": 1})
    with pytest.raises(TypeError, match="inputs of task t must be JSON-serializable"):
        serialization.encode_inputs("t", (object(),), {})


def test_tasks_load_by_file_reference_and_keep_that_reference() -> None:
    task = load_task(f"file:{TASKS}:square")

    assert isinstance(task, Task)
    assert task.ref == f"file:{TASKS}:square"
    assert task.name == "test_env.square"


def test_calling_a_task_outside_a_run_runs_it_here() -> None:
    import asyncio

    task = load_task(f"file:{TASKS}:square")
    assert asyncio.run(task(7)) == 49


def test_generators_are_refused_as_tasks() -> None:
    """Plain `def` and `async def` functions are tasks; a generator has no single result to report."""
    import fanout

    env = fanout.TaskEnvironment("e")

    def numbers() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match=r"must be a function \(async def or def\)"):
        env.task(numbers)


def test_config_file_then_environment_then_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    config.write(path, endpoint="file:1", token="from-file")
    monkeypatch.setenv("FANOUT_CONFIG", str(path))
    monkeypatch.delenv("FANOUT_TOKEN", raising=False)
    monkeypatch.setenv("FANOUT_ENDPOINT", "env:2")

    loaded = config.load()
    assert (loaded.endpoint, loaded.token) == ("env:2", "from-file")
    assert config.load(token="arg").token == "arg"


def test_config_errors_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FANOUT_ENDPOINT", raising=False)
    monkeypatch.delenv("FANOUT_TOKEN", raising=False)
    bad = tmp_path / "config.yaml"
    bad.write_text("endpoint: x\ncolour: blue\n")
    with pytest.raises(errors.ConfigError, match="unknown settings colour"):
        config.load(bad)
    with pytest.raises(errors.ConfigError, match="does not exist"):
        config.load(tmp_path / "missing.yaml")
    monkeypatch.setenv("FANOUT_CONFIG", str(tmp_path / "none.yaml"))
    with pytest.raises(errors.ConfigError, match="no endpoint"):
        config.ClientConfig().require()


def test_gc_tuning_freezes_start_up_and_raises_the_young_threshold() -> None:
    # In a process of its own: the collector's settings are process-wide.
    code = (
        "import gc; from fanout import gc_tuning; gc_tuning.tune_for_throughput(); "
        "print(gc.get_threshold()[0], gc.get_freeze_count() > 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(gc_tuning.GEN0_THRESHOLD), "True"]
