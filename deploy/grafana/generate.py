"""Generate the Fanout Grafana dashboards: `python deploy/grafana/generate.py` rewrites dashboards/*.json.

Dashboards are code so their queries stay consistent with the metrics: every
panel query here is evaluated against a live Prometheus scraping a real
control plane (tests/deploy/test_live_prometheus.py), and the checked-in JSON
must equal what this script generates (tests/deploy/test_grafana.py).
Plain dictionaries in Grafana's dashboard JSON model (schemaVersion 39); no
dependency beyond PyYAML, which the package already needs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

DATASOURCE_UID = "fanout-prometheus"
DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
CONFIGMAP = Path(__file__).resolve().parents[1] / "kubernetes" / "base" / "control-plane" / "grafana-dashboards.yaml"
RATE = "$__rate_interval"
TENANT = 'tenant=~"$tenant"'

Panel = dict[str, Any]


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref}


def timeseries(title: str, unit: str, *queries: tuple[str, str], stack: bool = False) -> Panel:
    """A time series panel; queries are (PromQL, legend) pairs."""
    return {
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "fieldConfig": {
            "defaults": {"unit": unit, "custom": {"stacking": {"mode": "normal" if stack else "none"}}},
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]}},
        "targets": [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)],
    }


def stat(title: str, unit: str, expr: str, legend: str = "", thresholds: tuple[float, ...] = ()) -> Panel:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": color, "value": v} for color, v in zip(("orange", "red"), thresholds, strict=False)]
    return {
        "type": "stat",
        "title": title,
        "datasource": DATASOURCE,
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"},
        "targets": [_target(expr, legend, "A")],
    }


def table(title: str, *queries: tuple[str, str]) -> Panel:
    """Instant queries joined by their labels: one row per series."""
    targets = [
        {**_target(expr, legend, chr(ord("A") + i)), "instant": True, "format": "table"}
        for i, (expr, legend) in enumerate(queries)
    ]
    return {
        "type": "table",
        "title": title,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True},
        "transformations": [{"id": "merge", "options": {}}],
        "targets": targets,
    }


def quantile(q: float, metric: str, by: str = "", selector: str = "") -> str:
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket{{{selector}}}[{RATE}])))"


def tenant_variable() -> dict[str, Any]:
    return {
        "name": "tenant",
        "label": "Tenant",
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": "label_values(fanout_tenant_limit, tenant)", "refId": "tenants"},
        "definition": "label_values(fanout_tenant_limit, tenant)",
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "sort": 1,
    }


def dashboard(uid: str, title: str, rows: list[list[Panel]], variables: list[dict[str, Any]]) -> dict[str, Any]:
    """Lay the rows out on Grafana's 24-column grid, each panel of a row the same width."""
    panels: list[Panel] = []
    y = 0
    for row in rows:
        width = 24 // len(row)
        for i, panel in enumerate(row):
            panels.append({"id": len(panels) + 1, "gridPos": {"h": 8, "w": width, "x": i * width, "y": y}, **panel})
        y += 8
    return {
        "uid": uid,
        "title": title,
        "tags": ["fanout"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": [_limit_changes()] if uid == "fanout-quota" else []},
        "panels": panels,
    }


def _limit_changes() -> dict[str, Any]:
    """Every change of a tenant's limit as it reached the gauges (the audit trail holds who and why)."""
    return {
        "name": "Limit changes",
        "datasource": DATASOURCE,
        "enable": True,
        "iconColor": "purple",
        "expr": f"changes(max by (tenant, limit) (fanout_tenant_limit{{{TENANT}}})[2m:]) > 0",
        "step": "1m",
        "titleFormat": "{{tenant}}: {{limit}} changed",
        "textFormat": "see `fanout admin audit {{tenant}}` for who, why, old and new value",
        "tagKeys": "tenant,limit",
    }


def overview() -> dict[str, Any]:
    decisions = "fanout_admission_decisions_total"
    return dashboard(
        "fanout-overview",
        "Fanout / Overview",
        [
            [
                stat("Servers up", "none", 'sum(up{job="fanout-server"})'),
                stat("Dispatchers up", "none", 'sum(up{job="fanout-dispatcher"})'),
                stat("Redis reachable", "bool", "min(fanout_redis_up)"),
                stat("Tenants", "none", "max(fanout_tenants)"),
            ],
            [
                timeseries(
                    "Actions admitted and finished",
                    "ops",
                    (f"sum(rate(fanout_actions_admitted_total[{RATE}]))", "admitted"),
                    (f"sum by (phase) (rate(fanout_actions_finished_total[{RATE}]))", "{{phase}}"),
                ),
                timeseries(
                    "Admission decisions",
                    "ops",
                    (f"sum by (decision) (rate({decisions}[{RATE}]))", "{{decision}}"),
                    stack=True,
                ),
            ],
            [
                timeseries(
                    "Dispatch latency",
                    "s",
                    (quantile(0.5, "fanout_dispatch_latency_seconds"), "admission to lease p50"),
                    (quantile(0.99, "fanout_dispatch_latency_seconds"), "admission to lease p99"),
                    (quantile(0.99, "fanout_admission_to_running_seconds"), "admission to RUNNING p99"),
                ),
                timeseries(
                    "Batch size",
                    "none",
                    (quantile(0.5, "fanout_batch_size_actions"), "p50"),
                    (quantile(0.99, "fanout_batch_size_actions"), "p99"),
                ),
            ],
            [
                timeseries(
                    "Queue depth by tenant",
                    "none",
                    (f"max by (tenant) (fanout_queue_depth_actions{{{TENANT}}})", "{{tenant}}"),
                ),
                timeseries(
                    "Oldest queued action by tenant",
                    "s",
                    (f"max by (tenant) (fanout_queue_oldest_age_seconds{{{TENANT}}})", "{{tenant}}"),
                ),
            ],
            [
                timeseries(
                    "gRPC requests by code",
                    "reqps",
                    (f"sum by (code) (rate(fanout_grpc_requests_total[{RATE}]))", "{{code}}"),
                ),
                timeseries(
                    "gRPC errors by method",
                    "reqps",
                    (
                        f'sum by (method, code) (rate(fanout_grpc_requests_total{{code!="OK"}}[{RATE}]))',
                        "{{method}} {{code}}",
                    ),
                ),
                timeseries(
                    "gRPC latency p99 by method",
                    "s",
                    (quantile(0.99, "fanout_grpc_request_duration_seconds", "method"), "{{method}}"),
                ),
            ],
            [
                timeseries(
                    "Redis script latency p99",
                    "s",
                    (quantile(0.99, "fanout_redis_script_duration_seconds", "script"), "{{script}}"),
                ),
                timeseries(
                    "Redis errors",
                    "ops",
                    (f"sum by (source) (rate(fanout_redis_errors_total[{RATE}]))", "{{source}}"),
                ),
            ],
        ],
        [tenant_variable()],
    )


def quota() -> dict[str, Any]:
    usage_kinds = 'limit=~"max_concurrency|max_queued|max_stored_bytes"'
    return dashboard(
        "fanout-quota",
        "Fanout / Tenant quotas",
        [
            [
                table(
                    "Limits, usage and headroom",
                    (f"max by (tenant, limit) (fanout_tenant_limit{{{TENANT}}})", "limit"),
                    (f"max by (tenant, limit) (fanout_tenant_usage{{{TENANT}}})", "usage"),
                    (f"min by (tenant, limit) (fanout_tenant_headroom{{{TENANT}}})", "headroom"),
                ),
            ],
            [
                timeseries(
                    "Usage as a share of the limit",
                    "percentunit",
                    (
                        f"max by (tenant, limit) (fanout_tenant_usage{{{TENANT}, {usage_kinds}}})"
                        f" / max by (tenant, limit) (fanout_tenant_limit{{{TENANT}, {usage_kinds}}})",
                        "{{tenant}} {{limit}}",
                    ),
                ),
                timeseries(
                    "max_fanout by tenant",
                    "none",
                    (f'max by (tenant) (fanout_tenant_limit{{{TENANT}, limit="max_fanout"}})', "{{tenant}}"),
                ),
            ],
            [
                timeseries(
                    "Runs near max_fanout",
                    "none",
                    (f"max by (tenant) (fanout_runs_near_fanout_limit{{{TENANT}}})", "{{tenant}} runs"),
                    (
                        f"sum by (tenant) (increase(fanout_batches_near_fanout_limit_total{{{TENANT}}}[{RATE}]))",
                        "{{tenant}} batches",
                    ),
                ),
                timeseries(
                    "Rejections by reason",
                    "ops",
                    (
                        "sum by (tenant, decision) (rate(fanout_admission_decisions_total"
                        f'{{{TENANT}, decision=~"rejected_.*"}}[{RATE}]))',
                        "{{tenant}} {{decision}}",
                    ),
                ),
            ],
            [
                timeseries(
                    "Admitted actions by tenant",
                    "ops",
                    (f"sum by (tenant) (rate(fanout_actions_admitted_total{{{TENANT}}}[{RATE}]))", "{{tenant}}"),
                    stack=True,
                ),
                timeseries(
                    "Running actions by tenant",
                    "none",
                    (
                        f'max by (tenant) (fanout_tenant_usage{{{TENANT}, limit="max_concurrency"}})',
                        "{{tenant}}",
                    ),
                    stack=True,
                ),
            ],
        ],
        [tenant_variable()],
    )


def dispatch() -> dict[str, Any]:
    return dashboard(
        "fanout-dispatch",
        "Fanout / Dispatch",
        [
            [
                timeseries(
                    "Connected dispatchers by pool",
                    "none",
                    ("sum by (pool) (fanout_dispatchers_connected)", "{{pool}}"),
                ),
                timeseries("Actions leased", "ops", (f"sum(rate(fanout_actions_leased_total[{RATE}]))", "leased")),
            ],
            [
                timeseries(
                    "Leases",
                    "none",
                    (f"sum by (tenant) (fanout_leases_held{{{TENANT}}})", "{{tenant}} held"),
                    (f"sum by (tenant) (fanout_leases_expired{{{TENANT}}})", "{{tenant}} expired"),
                ),
                timeseries(
                    "Leases reclaimed",
                    "ops",
                    (f"sum by (outcome) (rate(fanout_leases_reclaimed_total[{RATE}]))", "{{outcome}}"),
                ),
            ],
            [
                timeseries(
                    "Action duration by backend",
                    "s",
                    (quantile(0.5, "fanout_action_duration_seconds", "backend"), "{{backend}} p50"),
                    (quantile(0.99, "fanout_action_duration_seconds", "backend"), "{{backend}} p99"),
                ),
                timeseries(
                    "Admission to RUNNING by backend",
                    "s",
                    (quantile(0.5, "fanout_admission_to_running_seconds", "backend"), "{{backend}} p50"),
                    (quantile(0.99, "fanout_admission_to_running_seconds", "backend"), "{{backend}} p99"),
                ),
            ],
            [
                timeseries(
                    "Backend launch errors",
                    "ops",
                    (
                        f"sum by (instance, backend) (rate(fanout_backend_launch_errors_total[{RATE}]))",
                        "{{instance}} {{backend}}",
                    ),
                ),
                timeseries(
                    "OOM kills",
                    "none",
                    (
                        f"sum by (instance, backend) (increase(fanout_backend_oom_kills_total[{RATE}]))",
                        "{{instance}} {{backend}}",
                    ),
                ),
                timeseries(
                    "Retries",
                    "ops",
                    (f"sum by (tenant) (rate(fanout_retries_total{{{TENANT}}}[{RATE}]))", "{{tenant}} retried"),
                    (f"sum by (tenant) (fanout_retries_delayed_actions{{{TENANT}}})", "{{tenant}} waiting"),
                ),
            ],
        ],
        [tenant_variable()],
    )


DASHBOARDS = {"overview": overview, "quota": quota, "dispatch": dispatch}


def rendered() -> dict[str, str]:
    """File name -> JSON text of every dashboard, as checked in."""
    return {f"{name}.json": json.dumps(build(), indent=2, sort_keys=True) + "\n" for name, build in DASHBOARDS.items()}


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks: the dashboards stay readable JSON inside the ConfigMap."""


_BlockDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None),
)


def configmap(dashboards: dict[str, str]) -> str:
    """The dashboards as a ConfigMap for Kubernetes (the Grafana sidecar loads those labelled grafana_dashboard)."""
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "fanout-grafana-dashboards", "labels": {"grafana_dashboard": "1"}},
        "data": dashboards,
    }
    header = "# Generated by deploy/grafana/generate.py from the same code as deploy/grafana/dashboards: do not edit.\n"
    return header + "---\n" + yaml.dump(manifest, Dumper=_BlockDumper, sort_keys=True, width=1000)


def main() -> int:
    DASHBOARDS_DIR.mkdir(exist_ok=True)
    dashboards = rendered()
    for name, text in dashboards.items():
        (DASHBOARDS_DIR / name).write_text(text)
        print(f"wrote {DASHBOARDS_DIR / name}")
    CONFIGMAP.write_text(configmap(dashboards))
    print(f"wrote {CONFIGMAP}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
