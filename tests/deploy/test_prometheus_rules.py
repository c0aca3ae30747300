"""The Prometheus configuration and alert rules in deploy/prometheus are valid, and every alert has a unit test."""

from __future__ import annotations

import subprocess

import yaml

from tests.deploy.tools import DEPLOY, binary

PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "rules" / "fanout.rules.yml"
RULE_TESTS = PROMETHEUS / "tests" / "fanout.rules.test.yml"


def promtool(*args: str) -> str:
    done = subprocess.run([binary("promtool"), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_config_and_rules_check() -> None:
    promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    promtool("check", "rules", str(RULES))


def test_alert_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", str(RULE_TESTS))


def test_every_alert_has_a_unit_test_that_expects_it_to_fire() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    firing = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts, "no alert found in the rules"
    assert alerts - firing == set(), "alerts without a firing unit test"
