"""The Prometheus binaries the deploy tests run: Debian's `prometheus` package (.ci/run installs it)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install prometheus (the CI script .ci/run does)")
    return path


def grafana_generator() -> ModuleType:
    """deploy/grafana/generate.py, loaded by path (deploy/ is not a package)."""
    spec = importlib.util.spec_from_file_location("fanout_grafana_generate", DEPLOY / "grafana" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel or annotation title, PromQL) of every query in the checked-in dashboards."""
    out = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            out += [(path.stem, panel["title"], t["expr"]) for t in panel["targets"]]
        out += [(path.stem, a["name"], a["expr"]) for a in board["annotations"]["list"]]
    return out
