"""`fanout ls` and the run page's address, through `fanout up` as a user runs them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from fanout.client import Client
from fanout.config import ClientConfig
from fanout.server.run_views import PageLinks
from fanout.server.settings import Settings, SettingsError
from fanout.v1 import actions_pb2 as pb
from tests.helpers import DEV

FANOUT = str(Path(sys.executable).parent / "fanout")


@pytest.mark.e2e
def test_up_prints_a_run_page_url_that_opens_and_ls_lists_runs_and_actions(tmp_path: Path) -> None:
    data = tmp_path / "state"
    env = {**os.environ, "FANOUT_CONFIG": str(data / "config.yaml")}
    for name in ("FANOUT_TOKEN", "FANOUT_ENDPOINT", "FANOUT_PAGE_URL"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [FANOUT, "up", *DEV, "--data-dir", str(data), "--listen", "127.0.0.1:0", "--metrics-port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        pages = re.search(r"run pages (http://127\.0\.0\.1:\d+)/runs/NAME", ready)
        assert pages, ready
        cfg = yaml.safe_load((data / "config.yaml").read_text())
        spec = pb.ActionSpec(task_ref="module:os:getcwd", command=["sleep", "30"], group="g1")
        with Client(ClientConfig(endpoint=cfg["endpoint"], token=cfg["token"])) as client:
            runs = [client.create_run(spec) for _ in range(3)]
        assert runs[0].url == f"{pages[1]}/runs/{runs[0].name}"
        with urllib.request.urlopen(runs[0].url, timeout=10) as reply:
            assert reply.status == 200 and b"fanout run" in reply.read()

        def fanout(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [FANOUT, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
            )

        listed = fanout("ls", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [r["name"] for r in json.loads(listed.stdout)] == [r.name for r in reversed(runs)]  # newest first
        assert json.loads(listed.stdout)[0]["url"] == runs[-1].url
        assert len(json.loads(fanout("ls", "--limit", "2", "--json").stdout)) == 2
        human = fanout("ls")
        assert human.returncode == 0 and runs[0].name in human.stdout and runs[0].url in human.stdout
        assert json.loads(fanout("ls", "--phase", "SUCCEEDED", "--json").stdout) == []

        actions = fanout("ls", runs[0].name, "--json")
        assert actions.returncode == 0, actions.stderr
        grouped = json.loads(actions.stdout)["groups"]
        assert list(grouped) == ["g1"] and [a["name"] for a in grouped["g1"]] == ["root"]
        assert "g1:" in fanout("ls", runs[0].name).stdout

        bad = fanout("ls", "--phase", "NOPE")
        assert bad.returncode == 2 and "unknown phase 'NOPE'" in bad.stderr
        missing = fanout("ls", "no-such-run")
        assert missing.returncode == 1 and "not found" in missing.stderr
        helped = fanout("ls", "--help")
        assert helped.returncode == 0 and "newest first" in helped.stdout and "--phase" in helped.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_the_page_url_base_is_configurable_and_checked() -> None:
    settings = Settings.from_env(environ={"FANOUT_PAGE_URL": "https://fanout.example.com/"})
    assert PageLinks(settings.page_url).run("r1") == "https://fanout.example.com/runs/r1"
    assert PageLinks("").run("r1") == ""  # no page: clients show the gRPC address instead
    with pytest.raises(SettingsError, match="FANOUT_PAGE_URL must start with http"):
        Settings.from_env(environ={"FANOUT_PAGE_URL": "fanout.example.com"})
