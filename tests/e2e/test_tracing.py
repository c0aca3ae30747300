"""OpenTelemetry: one run is one trace, across the caller, the control plane and every worker.

`fanout up` and the example run as a user runs them, with FANOUT_OTEL=file:DIR
so that every process writes its spans as JSON lines (fanout.tracing); the
gRPC interceptors and the SDK are the real OpenTelemetry packages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DEV

ROOT = Path(__file__).resolve().parents[2]
FANOUT = str(Path(sys.executable).parent / "fanout")

pytestmark = pytest.mark.e2e


def spans_in(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in directory.glob("spans-*.jsonl") for line in path.read_text().splitlines()]


def run_example(tmp_path: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        [FANOUT, "up", *DEV, "--data-dir", str(tmp_path / "state"), "--listen", "127.0.0.1:0", "--metrics-port", "-1",
         "--", sys.executable, "-P", "examples/fanout.py", "4"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[1]  # the run's name


def test_a_run_is_one_trace_from_the_caller_through_the_server_to_every_action(tmp_path: Path) -> None:
    spans_dir = tmp_path / "spans"
    run = run_example(tmp_path, {**os.environ, "FANOUT_OTEL": f"file:{spans_dir}"})

    spans = spans_in(spans_dir)
    (caller,) = [s for s in spans if s["name"] == "fanout.run"]
    assert caller["service"] == "fanout-client"
    trace = caller["trace_id"]
    actions = [s for s in spans if s["name"].startswith("fanout.action ") and s["attributes"]["run"] == run]
    (root,) = [s for s in actions if s["name"] == "fanout.action fanout_env.parallel_data_fetching"]
    children = [s for s in actions if s["name"] == "fanout.action fanout_env.fetch_data"]

    assert len(children) == 4
    assert {s["trace_id"] for s in actions} == {trace}
    assert root["parent_id"] == caller["span_id"]
    assert {s["parent_id"] for s in children} == {root["span_id"]}
    assert {s["service"] for s in actions} == {"fanout-worker"}
    # The gRPC calls too: the caller's CreateRun, the root worker's SubmitMany (its children), both sides.
    rpcs = {(s["service"], s["name"]) for s in spans if s["trace_id"] == trace}
    assert ("fanout-up", "/fanout.v1.ActionService/CreateRun") in rpcs
    assert ("fanout-up", "/fanout.v1.ActionService/SubmitMany") in rpcs
    assert ("fanout-worker", "/fanout.v1.ActionService/SubmitMany") in rpcs


def test_without_fanout_otel_no_process_writes_spans(tmp_path: Path) -> None:
    spans_dir = tmp_path / "spans"
    env = {k: v for k, v in os.environ.items() if k != "FANOUT_OTEL"}
    run_example(tmp_path, env)
    assert not spans_dir.exists()
