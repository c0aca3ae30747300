"""`fanout up --backend docker` as a user runs it: the seed fanout in containers, or a clear error without an engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from fanout.dispatch.backends import owner_of
from fanout.dispatch.containers import LABEL_OWNER
from tests.containers.conftest import TASKS_FILE

FANOUT = str(Path(sys.executable).parent / "fanout")

pytestmark = pytest.mark.e2e

SEED = f"""
import fanout
from fanout.runtime import load_task
fanout.init_from_config()
run = fanout.run(load_task("file:{TASKS_FILE}:parallel_data_fetching"), [1, 2, 3])
print([row["score"] for row in run.wait(timeout=120).outputs()])
"""


ROOT = Path(__file__).resolve().parents[2]


def up(
    data: Path, *command: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FANOUT, "up", "--backend", "docker", "--data-dir", str(data), "--listen", "127.0.0.1:0",
         "--metrics-port", "-1", "--", *command],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def test_up_with_docker_runs_the_seed_fanout_in_containers(engine: docker.DockerClient, tmp_path: Path) -> None:
    data = tmp_path / "state"

    result = up(data, sys.executable, "-c", SEED)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[10, 20, 30]"
    owner = owner_of(data.resolve() / "actions")
    assert engine.api.containers(all=True, filters={"label": f"{LABEL_OWNER}={owner}"}) == []


def test_the_example_runs_in_the_stock_runtime_image_with_its_code_shipped(
    engine: docker.DockerClient, tmp_path: Path
) -> None:
    """examples/fanout.py is in no image: the SDK ships it as a bundle, which each container fetches."""
    result = up(tmp_path / "state", sys.executable, "-P", "examples/fanout.py", "3", cwd=ROOT)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-3:] == [
        str({"user_id": i, "name": f"User_{i}", "score": i * 10, "data": f"Sample data for user {i}"})
        for i in (1, 2, 3)
    ]


def test_up_with_docker_and_no_engine_exits_2_saying_so(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}

    result = up(tmp_path / "state", "true", env=env)

    assert result.returncode == 2
    assert "no Docker engine is reachable" in result.stderr
    assert "scripts/docker_engine.sh" in result.stderr
