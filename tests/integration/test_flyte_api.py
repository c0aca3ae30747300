"""The Flyte-shaped API through the real server, dispatcher and process backend:
error classes, NonRecoverableError, retries with backoff, timeouts, map's bound, groups, argument checks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import redis

import fanout
from fanout import errors
from fanout.cli.main import main as cli_main
from fanout.quota import keys
from fanout.runtime import load_task
from fanout.v1 import actions_pb2 as pb
from tests.conftest import Tenant

TASKS = Path(__file__).resolve().parents[1] / "tasks" / "flyte_api_tasks.py"

pytestmark = pytest.mark.usefixtures("dispatcher")


def start(tenant: Tenant, task: str, *args: object) -> fanout.Run:
    fanout.init(endpoint=tenant.client.config.endpoint, token=tenant.token)
    return fanout.run(load_task(f"file:{TASKS}:{task}"), *args)


def events(r: redis.Redis, tenant: Tenant, run: str, parent: str) -> list[tuple[float, str, int, int]]:
    """(seconds, action, phase, attempt) of every phase change the server recorded under `parent`, in order."""
    out = []
    entries: Any = r.xrange(keys.TenantKeys(tenant.name).events(run, parent))
    for entry_id, fields in entries:
        millis = int(entry_id.decode().split("-")[0])
        out.append((millis / 1000, fields[b"n"].decode(), int(fields[b"p"]), int(fields[b"a"])))
    return out


def test_a_child_failure_and_timeout_reach_the_parent_as_flyte_errors(tenant: Tenant) -> None:
    assert start(tenant, "error_kinds").outputs() == [
        "RuntimeUserError",
        "KeyError",
        "'no item 7'",
        "TaskTimeoutError",
        "Timeout",
    ]


def test_a_failed_run_is_both_run_failed_and_its_kind(tenant: Tenant) -> None:
    run = start(tenant, "boom", 3)
    with pytest.raises(errors.RunFailed) as info:
        run.outputs()
    assert isinstance(info.value, errors.RuntimeUserError)
    assert isinstance(info.value, errors.BaseRuntimeError)
    assert (info.value.code, info.value.kind) == ("KeyError", "user")


def test_non_recoverable_error_fails_at_once_with_retries_left(tenant: Tenant, redis_client: redis.Redis) -> None:
    run = start(tenant, "hopeless")
    with pytest.raises(errors.RuntimeUserError) as info:
        run.outputs()
    assert info.value.code == "NonRecoverableError"
    root = tenant.client.get_action(run.name, tenant.client.get_run(run.name).root)
    assert root.attempt == 1  # retries=3 were not used
    # Never back in QUEUED: one attempt, straight to its end (with no RUNNING if it ended within its
    # report's hold, see dispatch/reporter.py).
    assert [p for _, _, p, _ in events(redis_client, tenant, run.name, "") if p != pb.RUNNING] == [pb.FAILED]


def test_retries_wait_the_backoff_between_attempts(tenant: Tenant, redis_client: redis.Redis) -> None:
    run = start(tenant, "always_fails")
    with pytest.raises(errors.RuntimeUserError):
        run.outputs()
    root = tenant.client.get_action(run.name, tenant.client.get_run(run.name).root)
    assert root.attempt == 3  # count=2: two retries after the first attempt
    record = events(redis_client, tenant, run.name, "")
    # Each failed attempt with retries left is recorded back in QUEUED; the next attempt's first event
    # follows: its RUNNING, or its end if it ended within its RUNNING report's hold (dispatch/reporter.py).
    requeued = {attempt: at for at, _, phase, attempt in record if phase == pb.QUEUED}
    started: dict[int, float] = {}
    for at, _, _, attempt in record:
        started.setdefault(attempt, at)
    assert sorted(requeued) == [1, 2] and sorted(started) == [1, 2, 3]
    assert record[-1][2:] == (pb.FAILED, 3)
    # Backoff(base=1.2, factor=2, cap=1.5): 1.2s before retry 0 (the default would wait 1s), then min(2.4, 1.5).
    # Lower bounds only: a loaded machine may start a due retry late, never early.
    assert started[2] - requeued[1] >= 1.2 - 0.002
    assert started[3] - requeued[2] >= 1.5 - 0.002


def in_flight_peak(record: list[tuple[float, str, int, int]]) -> int:
    """The most children between their first recorded phase and their terminal one at any moment."""
    live: set[str] = set()
    peak = 0
    for _, name, phase, _ in record:
        if phase >= pb.SUCCEEDED:
            live.discard(name)
        else:
            live.add(name)
        peak = max(peak, len(live))
    return peak


def test_map_keeps_input_order_and_its_concurrency_bound_on_the_server(
    tenant: Tenant, redis_client: redis.Redis
) -> None:
    run = start(tenant, "bounded_map", 12, 3, 0.3)
    assert run.outputs() == list(range(12))
    root = tenant.client.get_run(run.name).root
    record = events(redis_client, tenant, run.name, root)
    assert sum(1 for _, _, phase, _ in record if phase == pb.SUCCEEDED) == 12
    assert 2 <= in_flight_peak(record) <= 3


def test_map_with_return_exceptions_yields_errors_in_place(tenant: Tenant) -> None:
    assert start(tenant, "map_keeping_errors", 6).outputs() == [0, "ValueError", 2, "ValueError", 4, "ValueError"]
    assert start(tenant, "map_raising", 6).outputs() == "odd 1"


def test_groups_are_stored_with_the_actions_they_label(
    tenant: Tenant, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = start(tenant, "grouped")
    assert run.outputs() == [1, 2, 3, 4]
    stored = redis_client.hgetall(keys.TenantKeys(tenant.name).specs(run.name))
    by_input = {}
    for body in stored.values():
        spec = pb.ActionSpec.FromString(body)
        if spec.task_name == "flyte_api.nap":
            by_input[spec.name] = spec.group
    assert sorted(by_input.values()) == ["", "outer", "outer", "outer/inner"]
    inner = next(name for name, g in by_input.items() if g == "outer/inner")
    assert tenant.client.get_action(run.name, inner).group == "outer/inner"
    monkeypatch.setenv("FANOUT_ENDPOINT", tenant.client.config.endpoint)
    monkeypatch.setenv("FANOUT_TOKEN", tenant.token)
    shown = cli(capsys, "get", run.name, inner)
    assert "group   outer/inner" in shown
    data = json.loads(cli(capsys, "get", run.name, inner, "--json"))
    assert data["action"]["group"] == "outer/inner"


def test_fanout_watch_shows_each_childs_group(
    tenant: Tenant, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = start(tenant, "grouped")
    run.wait()
    root = tenant.client.get_run(run.name).root
    monkeypatch.setenv("FANOUT_ENDPOINT", tenant.client.config.endpoint)
    monkeypatch.setenv("FANOUT_TOKEN", tenant.token)
    shown = cli(capsys, "watch", run.name, "--parent", root)
    assert "4/4 finished · SUCCEEDED=4 · [outer 2/2] [outer/inner 1/1]" in shown
    watched = json_documents(cli(capsys, "watch", run.name, "--parent", root, "--json"))
    assert sorted(s.get("group", "") for s in watched) == ["", "outer", "outer", "outer/inner"]
    # Workers' watches do not ask for groups, and pay nothing for them.
    event = next(e for e in tenant.client.watch_children(run.name, root, batched=True) if e.updates)
    assert {s.group for s in event.updates} == {""}


def json_documents(text: str) -> list[Any]:
    """The JSON documents printed one after another (`--json` of a watch prints one per change)."""
    decoder, documents, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
    return documents


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert cli_main(list(argv)) == 0
    return capsys.readouterr().out


def test_run_checks_arguments_before_creating_anything(tenant: Tenant, redis_client: redis.Redis) -> None:
    fanout.init(endpoint=tenant.client.config.endpoint, token=tenant.token)
    task = load_task(f"file:{TASKS}:nap")
    with pytest.raises(TypeError, match=r"flyte_api\.nap"):
        fanout.run(task, 1, 2, 3)
    with pytest.raises(TypeError, match="seconds"):
        fanout.run(task, 1, secs=2)
    assert list(redis_client.scan_iter(match=keys.TenantKeys(tenant.name).run("*"), count=1000)) == []


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (pb.ActionSpec(backoff=pb.RetryBackoff(base_seconds=-1, factor=1)), "backoff.base_seconds"),
        (pb.ActionSpec(backoff=pb.RetryBackoff(base_seconds=float("nan"), factor=1)), "backoff.base_seconds"),
        (pb.ActionSpec(backoff=pb.RetryBackoff(base_seconds=1, factor=0.5)), "backoff.factor"),
        (pb.ActionSpec(backoff=pb.RetryBackoff(base_seconds=1, factor=2, cap_seconds=1e9)), "backoff.cap_seconds"),
        (pb.ActionSpec(group="g" * 300), "group"),
    ],
)
def test_a_bad_backoff_or_group_is_refused_and_creates_nothing(tenant: Tenant, spec: pb.ActionSpec, field: str) -> None:
    spec.task_ref = "module:m:f"
    with pytest.raises(errors.InvalidRequest, match=field):
        tenant.client.create_run(spec, run_name="bad-policy")
    with pytest.raises(errors.NotFound):
        tenant.client.get_run("bad-policy")


def test_with_runcontext_names_the_run_and_sets_its_env(tenant: Tenant) -> None:
    fanout.init(endpoint=tenant.client.config.endpoint, token=tenant.token)
    task = load_task(f"file:{TASKS}:read_env")
    context = fanout.with_runcontext(name="named-run", env_vars={"GREETING": "hello"}, labels={"team": "a"})
    run = context.run(task, "GREETING")
    assert run.name == "named-run"
    assert run.outputs() == "hello"
    assert context.run(task, "GREETING").name == "named-run"  # the same name is the same run
    with pytest.raises(ValueError, match="mode='sideways'"):
        fanout.with_runcontext(mode="sideways")


def test_ctx_names_the_running_action_and_its_run(tenant: Tenant) -> None:
    fanout.init(endpoint=tenant.client.config.endpoint, token=tenant.token)
    run = fanout.run(load_task(f"file:{TASKS}:whoami"))
    assert run.outputs() == [run.name, "root", "remote"]
    assert fanout.ctx() is None  # outside any action
    assert fanout.__version__ == "0.1.0"


def test_run_aio_for_async_callers(tenant: Tenant) -> None:
    async def start() -> fanout.Run:
        await fanout.init.aio(endpoint=tenant.client.config.endpoint, token=tenant.token)
        return await fanout.run.aio(load_task(f"file:{TASKS}:nap"), 5, 0.0)

    assert asyncio.run(start()).outputs() == 5


def test_a_real_memory_limit_raises_oom_and_override_gives_more(tenant: Tenant) -> None:
    assert start(tenant, "oom_then_more_memory", 400).outputs() == ["OOMError", "MemoryError", 400]
    assert start(tenant, "allocate", 50).outputs() == 50  # under the limit it runs as usual


def test_a_long_map_keeps_no_status_of_children_it_has_consumed(tenant: Tenant) -> None:
    # Before: every finished child's status stayed in the controller, so the parent grew with the input.
    assert start(tenant, "map_leaves_nothing_behind", 300, 10).outputs() == [300, 0]


def test_map_group_name_labels_its_children_inside_the_open_group(tenant: Tenant, redis_client: redis.Redis) -> None:
    run = start(tenant, "map_in_group", 4)
    assert run.outputs() == [0, 1, 2, 3]
    stored = redis_client.hgetall(keys.TenantKeys(tenant.name).specs(run.name))
    groups = [pb.ActionSpec.FromString(body).group for body in stored.values()]
    assert sorted(groups) == ["", "outer/batch", "outer/batch", "outer/batch", "outer/batch"]  # the root, then 4


def test_forward_runs_the_task_in_the_calling_action(tenant: Tenant) -> None:
    run = start(tenant, "forwards", 5)
    assert run.outputs() == 11
    assert tenant.client.get_run(run.name).action_count == 1  # the root only: no child was made
