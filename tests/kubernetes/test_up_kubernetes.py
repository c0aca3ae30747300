"""`fanout up --backend kubernetes` as a user runs it, KUBECONFIG naming the FAKE API server (fake_apiserver.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fanout.dispatch.backends import owner_of
from fanout.dispatch.containers import LABEL_OWNER
from fanout.dispatch.kubernetes_launcher import label_value
from tests.kubernetes.fake_apiserver import FakeKubernetesApiServer

FANOUT = str(Path(sys.executable).parent / "fanout")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_up_with_kubernetes_runs_the_example_in_pods(fake_cluster: FakeKubernetesApiServer, tmp_path: Path) -> None:
    """examples/fanout.py, its code shipped as a bundle, each action a pod in the tenant's namespace."""
    data = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FANOUT_", "KUBERNETES_"))}
    env["KUBECONFIG"] = str(fake_cluster.kubeconfig)  # type: ignore[attr-defined]

    result = subprocess.run(
        [FANOUT, "up", "--backend", "kubernetes", "--data-dir", str(data), "--listen", "127.0.0.1:0",
         "--metrics-port", "-1", "--", sys.executable, "-P", "examples/fanout.py", "3"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-3:] == [
        str({"user_id": i, "name": f"User_{i}", "score": i * 10, "data": f"Sample data for user {i}"})
        for i in (1, 2, 3)
    ]
    owner = label_value(owner_of(data.resolve() / "actions"))
    made = [
        pod for pod in fake_cluster.created if pod["kind"] == "Pod" and pod["metadata"]["labels"][LABEL_OWNER] == owner
    ]
    assert len(made) == 4  # the root and its three children
    assert fake_cluster.pods_labelled(**{LABEL_OWNER: owner}) == []  # and none is left
