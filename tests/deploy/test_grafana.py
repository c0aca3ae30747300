"""The checked-in Grafana dashboards are what generate.py makes, and they name the provisioned datasource."""

from __future__ import annotations

import json

import yaml

from tests.deploy.tools import DEPLOY, dashboard_queries, grafana_generator

GRAFANA = DEPLOY / "grafana"


def test_checked_in_dashboards_equal_a_fresh_generation() -> None:
    generated = grafana_generator().rendered()
    checked_in = {p.name: p.read_text() for p in (GRAFANA / "dashboards").glob("*.json")}
    assert checked_in == generated, "run `python deploy/grafana/generate.py` and commit the JSON"


def test_every_panel_uses_the_provisioned_datasource_uid() -> None:
    uid = grafana_generator().DATASOURCE_UID
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "fanout.yml").read_text())
    assert [d["uid"] for d in provisioned["datasources"]] == [uid]
    for path in (GRAFANA / "dashboards").glob("*.json"):
        board = json.loads(path.read_text())
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == uid, f"{path.name}: {panel['title']}"
            assert all(t["datasource"]["uid"] == uid for t in panel["targets"]), f"{path.name}: {panel['title']}"


def test_the_three_dashboards_have_queries() -> None:
    boards = {board for board, _, _ in dashboard_queries()}
    assert boards == {"overview", "quota", "dispatch"}
