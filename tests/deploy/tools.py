"""The Prometheus binaries the deploy tests run: Debian's `prometheus` package (.ci/run installs it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install prometheus (the CI script .ci/run does)")
    return path
