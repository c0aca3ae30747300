"""A real Prometheus scrapes a real control plane and dispatcher through a fanout that hits a limit.

Then every query of every dashboard panel (and annotation) is evaluated through
Prometheus' HTTP API and must return series, the live scrapes pass `promtool
check metrics`, and the alert rules load into this Prometheus. The server and
dispatcher log JSON lines, and no log holds any token the test used.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import fanout
from bench.procs import clean_env, fanout_cmd, running
from fanout.client import Client
from fanout.config import ClientConfig
from fanout.runtime import load_task
from fanout.server.redis_process import RedisProcess
from tests.conftest import TASKS_FILE
from tests.deploy.tools import DEPLOY, binary, dashboard_queries
from tests.helpers import DEV, eventually

TENANT = "acme"
# What Grafana puts in for its variables when a panel is drawn.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$tenant": ".*"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the connection (a 503 while Prometheus starts); left open, GC warns later
        raise


@dataclass(frozen=True)
class Stack:
    endpoint: str
    admin_token: str
    tenant_token: str
    server_metrics: str
    dispatcher_metrics: str
    prometheus: str
    logs: Path
    tokens: tuple[str, ...]


def prometheus_config(tmp: Path, server: str, dispatcher: str) -> Path:
    """deploy/prometheus/prometheus.yml with this test's targets and a one-second scrape."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(DEPLOY / "prometheus" / rule) for rule in config["rule_files"]]
    targets = {"fanout-server": server, "fanout-dispatcher": dispatcher}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("live")
    prometheus_bin = binary("prometheus")  # fails clearly when the package is missing, before starting anything
    with ExitStack() as stop:
        store = RedisProcess(tmp_path / "redis").start()
        stop.callback(store.stop)
        server_port, dispatcher_port, prometheus_port = free_port(), free_port(), free_port()
        admin_file = tmp_path / "admin-token"
        server_cmd = fanout_cmd(
            "--log-format", "json", "server", "--listen", "127.0.0.1:0", "--metrics-port", str(server_port),
            "--admin-token-file", str(admin_file),
        )  # fmt: skip
        env = clean_env(FANOUT_REDIS_URL=store.url, FANOUT_SIGNING_KEY_FILE=str(tmp_path / "signing-key"))
        ready = stop.enter_context(running(server_cmd, tmp_path / "server", r"listening on (\S+)", env))
        endpoint, admin_token = ready.group(1), admin_file.read_text().strip()
        with Client(ClientConfig(endpoint=endpoint, token=admin_token)) as admin:
            admin.create_tenant(TENANT)
            tenant_token = admin.create_token("tenant", TENANT)
            dispatcher_token = admin.create_token("dispatcher")
        dispatcher_cmd = fanout_cmd(
            "--log-format", "json", "dispatcher", *DEV, "--endpoint", endpoint, "--metrics-port", str(dispatcher_port),
            "--work-dir", str(tmp_path / "actions"),
        )  # fmt: skip
        dispatcher_env = clean_env(FANOUT_TOKEN=dispatcher_token)
        stop.enter_context(running(dispatcher_cmd, tmp_path / "dispatcher", r"metrics http", dispatcher_env))

        config = prometheus_config(tmp_path, f"127.0.0.1:{server_port}", f"127.0.0.1:{dispatcher_port}")
        log = (tmp_path / "prometheus.log").open("wb")
        stop.callback(log.close)
        prometheus = subprocess.Popen(
            [
                prometheus_bin,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        stop.callback(prometheus.wait, 10)
        stop.callback(prometheus.terminate)
        url = f"http://127.0.0.1:{prometheus_port}"
        eventually(lambda: get(url + "/-/ready"), timeout=30, interval=0.2, retry_on=(OSError,))
        yield Stack(
            endpoint,
            admin_token,
            tenant_token,
            f"http://127.0.0.1:{server_port}/metrics",
            f"http://127.0.0.1:{dispatcher_port}/metrics",
            url,
            tmp_path,
            (admin_token, tenant_token, dispatcher_token),
        )


def query(prometheus: str, expr: str) -> list[dict[str, object]]:
    answer = json.loads(get(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    assert answer["status"] == "success", answer
    result: list[dict[str, object]] = answer["data"]["result"]
    return result


def for_grafana(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def fanout_that_hits_a_limit(stack: Stack, tmp_path: Path) -> None:
    """A limit change, a fanout near max_fanout, one over it, and a task that needs its retry."""
    with Client(ClientConfig(endpoint=stack.endpoint, token=stack.admin_token)) as admin:
        admin.set_limits(TENANT, "the dashboards' limit-change annotation", max_fanout=10)
    fanout.init(endpoint=stack.endpoint, token=stack.tenant_token)
    assert fanout.run(load_task(f"file:{TASKS_FILE}:fan_squares"), 8).outputs() == [i * i for i in range(8)]
    probe = fanout.run(load_task(f"file:{TASKS_FILE}:fanout_limit_probe"), 20).outputs()
    assert probe.startswith("max_fanout limit=10")
    markers = tmp_path / "flaky"
    markers.mkdir()
    assert fanout.run(load_task(f"file:{TASKS_FILE}:call_flaky"), str(markers), 1).outputs() == 2


def test_every_dashboard_query_returns_series_from_a_live_control_plane(stack: Stack, tmp_path: Path) -> None:
    # Scraped before the limit changes, so the change shows as one.
    eventually(lambda: query(stack.prometheus, "fanout_tenant_limit"), timeout=30, interval=0.5)
    fanout_that_hits_a_limit(stack, tmp_path)
    eventually(lambda: query(stack.prometheus, "fanout_retries_total"), timeout=30, interval=0.5)

    queries = dashboard_queries()
    empty: list[str] = []

    def all_answer() -> bool:
        empty[:] = [
            f"{board} / {title}: {expr}"
            for board, title, expr in queries
            if not query(stack.prometheus, for_grafana(expr))
        ]
        return not empty

    try:
        eventually(all_answer, timeout=45, interval=1.0)
    except AssertionError:
        pytest.fail("dashboard queries without series:\n" + "\n".join(empty))
    assert len(queries) > 30


def test_live_scrapes_pass_promtool_and_the_rules_load(stack: Stack) -> None:
    for url in (stack.server_metrics, stack.dispatcher_metrics):
        checked = subprocess.run(
            [binary("promtool"), "check", "metrics"], input=get(url), capture_output=True, timeout=60
        )
        assert checked.returncode == 0, (url, checked.stdout.decode() + checked.stderr.decode())
    rules = json.loads(get(stack.prometheus + "/api/v1/rules"))["data"]["groups"]
    loaded = {rule["name"] for group in rules for rule in group["rules"]}
    assert "FanoutTenantWithoutDispatcher" in loaded and "FanoutServerDown" in loaded


def test_logs_are_json_lines_and_hold_no_token(stack: Stack, tmp_path: Path) -> None:
    fanout_that_hits_a_limit(stack, tmp_path)  # this module's runs, whatever ran before
    # os.walk, not Path.rglob: the dispatcher removes finished actions' folders while we look, and
    # rglob raises FileNotFoundError for a folder gone between listing and entering it.
    logs = sorted(Path(top, name) for top, _, names in os.walk(stack.logs) for name in names if name.endswith(".log"))
    assert {p.parent.name for p in logs} >= {"server", "dispatcher"}
    for path in logs:
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:  # a finished action's folder, removed by the dispatcher meanwhile: nothing kept
            continue
        leaked = [i for i, token in enumerate(stack.tokens) if token in text]
        assert leaked == [], f"{path} holds tokens {leaked}"
    events = []
    for name in ("server", "dispatcher"):
        for line in (stack.logs / name / "stderr.log").read_text().splitlines():
            if line.strip():
                event = json.loads(line)
                assert {"time", "level", "logger", "message"} <= event.keys(), line
                events.append(event)
    # The significant events carry tenant, run and action as fields (fanout.server.event_log).
    refused = [e for e in events if e["logger"] == "fanout.events" and "was refused" in e["message"]]
    assert refused and {"tenant", "run", "action"} <= refused[-1].keys(), refused
    created = [e for e in events if e["logger"] == "fanout.events" and e["message"].startswith("run ")]
    assert created and {"tenant", "run", "action"} <= created[-1].keys()
