"""The Pod the kubernetes backend sends, under a golden file, and the names it derives for Kubernetes."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from fanout.dispatch.containers import WorkerSpec
from fanout.dispatch.kubernetes_launcher import label_value, namespace_name, pod_manifest

GOLDEN = Path(__file__).parent / "golden" / "pod.yaml"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

SPEC = WorkerSpec(
    name="fanout-0123456789abcdef",
    image="registry.example/fanout-runtime:1.2",
    command=("python3", "-m", "fanout.dispatch.worker", "--connect", "10.0.0.7:41000"),
    env={
        "FANOUT_ENDPOINT": "fanout-server.fanout:50051",
        "FANOUT_CONFIG": "/dev/null",
        "FANOUT_WORKER_CONCURRENCY": "1",
        "FANOUT_WORKER_ID": "0123456789abcdef",
        "FANOUT_WORKER_KEY": "slot-key",
    },
    labels={
        "fanout.owner": "5e1f00d2a9c4b7e1",
        "fanout.worker": "0123456789abcdef",
        "fanout.tenant": "Acme Corp",
        "fanout.run": "r-7f3a",
        "fanout.action": "root/fetch_data[3]",
        "fanout.attempt": "1",
    },
    memory_bytes=512 << 20,
    cpu_nanos=1_500_000_000,
)


def test_the_pod_is_the_golden_one() -> None:
    # To accept a deliberate change: write yaml.safe_dump(pod_manifest(SPEC, ...)) over the file, and read the diff.
    assert pod_manifest(SPEC, "fanout-acme-corp-1a2b3c4d") == yaml.safe_load(GOLDEN.read_text())


def test_the_golden_pod_is_valid_kubernetes() -> None:
    kubernetes_validate.validate(yaml.safe_load(GOLDEN.read_text()), kubernetes_validate.latest_version(), strict=True)


def test_labels_kubernetes_refuses_are_made_valid_and_kept_exactly_in_annotations() -> None:
    metadata = pod_manifest(SPEC, "ns")["metadata"]
    assert all(_LABEL_VALUE.match(value) and len(value) <= 63 for value in metadata["labels"].values())
    assert metadata["labels"]["fanout.run"] == "r-7f3a"  # a valid value stays as it is
    assert metadata["annotations"]["fanout.action"] == "root/fetch_data[3]"


@pytest.mark.parametrize("value", ["root/fetch_data[3]", "x" * 100, "-lead", "trail.", "ünïcode", "a b"])
def test_a_label_value_is_valid_and_distinct(value: str) -> None:
    made = label_value(value)
    assert _LABEL_VALUE.match(made) and 0 < len(made) <= 63
    assert label_value(value + "!") != made


def test_each_tenant_has_its_own_valid_namespace() -> None:
    tenants = ["acme", "Acme", "acme_corp", "acme-corp", "a" * 80, "Ünï", "x"]
    names = [namespace_name("fanout-{tenant}", tenant) for tenant in tenants]
    assert all(_DNS_LABEL.match(name) and len(name) <= 63 for name in names)
    assert len(set(names)) == len(tenants)  # spellings that look alike never share a namespace
    assert namespace_name("fanout-{tenant}", "acme") == "fanout-acme"  # a valid name is kept readable
    assert namespace_name("fanout-actions", "acme") == "fanout-actions"  # a fixed namespace for all
