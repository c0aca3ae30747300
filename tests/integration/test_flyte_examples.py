"""Every program under examples/flyte/, written for Flyte 2 (`import flyte`), runs unchanged on the real control plane.

`flyte` here is tests/flyte_alias/flyte, which only re-exports fanout: on sys.path for this process, and
for the actions through the run's working directory (the runtime puts a spec's workdir on sys.path).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import fanout
from fanout.quota import keys
from fanout.quota.actions import ACTION_ABORTED_RESULT
from fanout.runtime import load_task
from fanout.v1 import actions_pb2 as pb
from tests.conftest import Tenant

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "flyte"
ALIAS = ROOT / "tests" / "flyte_alias"

pytestmark = pytest.mark.usefixtures("dispatcher")


@pytest.fixture
def flyte_alias(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(ALIAS))
    monkeypatch.chdir(ALIAS)  # becomes the run's workdir, so actions import the alias too
    yield
    for name in [m for m in sys.modules if m == "flyte" or m.startswith("flyte.")]:
        del sys.modules[name]


def run_example(tenant: Tenant, file: str, *args: Any, **kwargs: Any) -> Any:
    fanout.init(endpoint=tenant.client.config.endpoint, token=tenant.token)
    return fanout.run(load_task(f"file:{EXAMPLES / file}:main"), *args, **kwargs).outputs()


def test_every_example_has_a_test() -> None:
    tested = {"parallel_fanout.py", "map_concurrency.py", "error_handling.py", "retries_backoff.py"}
    tested |= {"timeouts.py", "groups.py", "nested_fanout.py", "big_fanout.py", "cancellation.py", "traces.py"}
    tested |= {"reports.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested
    for path in EXAMPLES.glob("*.py"):
        assert "import flyte\n" in path.read_text(), path.name


@pytest.mark.usefixtures("flyte_alias")
def test_parallel_fanout(tenant: Tenant) -> None:
    assert run_example(tenant, "parallel_fanout.py", user_ids=[1, 2, 3, 4]) == {"count": 4, "total_score": 100}


@pytest.mark.usefixtures("flyte_alias")
def test_map_concurrency(tenant: Tenant) -> None:
    out = run_example(tenant, "map_concurrency.py", n=9)
    assert out["map"] == [f"image-{i}@128px" for i in range(9)]
    assert out["semaphore"] == [f"image-{i}@256px" for i in range(9)]


@pytest.mark.usefixtures("flyte_alias")
def test_error_handling(tenant: Tenant) -> None:
    assert run_example(tenant, "error_handling.py", records=["1", "2", "x", "4"]) == {
        "parsed": [1, 2, 4],
        "failures": ["ValueError: not a number: 'x'"],
        "retried_after_timeout": True,
        "rejected": "NonRecoverableError",
    }


@pytest.mark.usefixtures("flyte_alias")
def test_retries_backoff(tenant: Tenant, tmp_path: Path) -> None:
    assert run_example(tenant, "retries_backoff.py", marker=str(tmp_path / "attempts")) == 3


@pytest.mark.usefixtures("flyte_alias")
def test_traces(tenant: Tenant, tmp_path: Path) -> None:
    documents = ["the quick brown fox", "jumps over", "the lazy dog", "lorem ipsum dolor sit amet", "fin"]
    out = run_example(tenant, "traces.py", ledger=str(tmp_path / "ledger"), documents=documents)
    assert out["summaries"][0] == "the quick brown fox: 4 words" and len(out["summaries"]) == 5
    assert (tmp_path / "ledger.attempts").read_text() == "xx"  # it failed once and was retried...
    assert out["calls_made"] == 5  # ...and the retry made no call again


@pytest.mark.usefixtures("flyte_alias")
def test_reports(tenant: Tenant) -> None:
    fanout.init(endpoint=tenant.client.config.endpoint, token=tenant.token)
    run = fanout.run(load_task(f"file:{EXAMPLES / 'reports.py'}:main"), n=4)
    assert run.outputs() == 0 + 1 + 4 + 9
    page = run.report()
    assert "<h1>Scoring 4 items</h1>" in page and "<p>Total: 14</p>" in page
    assert "<h2>Scores</h2>" in page and "<tr><td>3</td><td>9</td></tr>" in page


@pytest.mark.usefixtures("flyte_alias")
def test_timeouts(tenant: Tenant) -> None:
    assert run_example(tenant, "timeouts.py") == ["finished", "TaskTimeoutError"]


@pytest.mark.usefixtures("flyte_alias")
def test_cancellation(tenant: Tenant, redis_client: redis.Redis) -> None:
    fanout.init(endpoint=tenant.client.config.endpoint, token=tenant.token)
    run = fanout.run(load_task(f"file:{EXAMPLES / 'cancellation.py'}:main"))
    assert run.outputs() == ["cancelled", "gave up waiting", "RuntimeUserError"]  # what first_failure_wins raised
    k = keys.TenantKeys(tenant.name)
    specs: Any = redis_client.hgetall(k.specs(run.name))
    results: Any = redis_client.hgetall(k.results(run.name))
    slow = [name for name, spec in specs.items() if pb.ActionSpec.FromString(spec).task_name.endswith(".slow")]
    assert len(slow) == 4
    # Each aborted as an action of its own (its await cancelled, or its parent ended), not by the run's end.
    assert {pb.ActionResult.FromString(results[name]).error.message for name in slow} == {
        pb.ActionResult.FromString(ACTION_ABORTED_RESULT).error.message
    }


@pytest.mark.usefixtures("flyte_alias")
def test_groups(tenant: Tenant) -> None:
    assert run_example(tenant, "groups.py", folds=2) == {"0.1": [1.1, 0.6], "0.01": [1.01, 0.51]}


@pytest.mark.usefixtures("flyte_alias")
def test_nested_fanout(tenant: Tenant) -> None:
    assert run_example(tenant, "nested_fanout.py", regions=["eu", "apac"], shards=3) == {"eu": 603, "apac": 1203}


@pytest.mark.usefixtures("flyte_alias")
def test_big_fanout(tenant: Tenant) -> None:
    out = run_example(tenant, "big_fanout.py", n=200)
    assert out == {
        "succeeded": 196,
        "failed": 4,
        "map_failed": 4,
        "total": sum(i % 7 for i in range(200) if i % 50 != 49),
    }
