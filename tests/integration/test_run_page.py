"""The run page in a real headless browser (Debian's chromium and chromium-driver, driven by selenium).

A control plane of the module's own (no dispatcher: the test moves actions itself through the
store, the way dispatcher reports land) serves the page on a real HTTP port. The page asks for
the token once, keeps it in sessionStorage, and sends it in a header to the JSON endpoints.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.quota.actions import Report
from fanout.quota.phases import FAILED, RUNNING, SUCCEEDED
from fanout.quota.reports import ReportStore
from fanout.server.app import ControlPlane
from fanout.server.metrics_http import MetricsServer
from fanout.server.run_page import RunPage
from fanout.v1 import actions_pb2 as pb
from tests.helpers import LoopThread, eventually

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver (.ci/run installs them)"
)
# Where to keep the screenshot a person looks at (set by whoever wants it, e.g. before a review).
SCREENSHOT_ENV = "FANOUT_RUN_PAGE_SCREENSHOT"


def failed(message: str) -> bytes:
    error = pb.ActionError(type="ValueError", message=message, traceback=f"Traceback:\n  raise ValueError({message!r})")
    return pb.ActionResult(error=error).SerializeToString()


def spec(name: str, group: str) -> bytes:
    return pb.ActionSpec(name=name, task_name="demo.fetch", group=group).SerializeToString()


@pytest.fixture(scope="module")
def http(loop_thread: LoopThread, own_plane: ControlPlane) -> Iterator[MetricsServer]:
    async def pages() -> RunPage:
        return own_plane.run_page()

    server = MetricsServer(0, pages=loop_thread.run(pages())).start()
    own_plane.serve_pages(server.base_url)
    yield server
    own_plane.serve_pages("")
    server.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def a_run_with_failures(loop: LoopThread, plane: ControlPlane, tenant: str, run: str) -> list[str]:
    """A run of 300 actions in two groups: 3 failed, 1 succeeded, 1 running; returns the failed names."""
    store = plane.actions

    async def build() -> list[str]:
        await store.register_tenant(tenant)
        await store.create_run(tenant, run, "root", spec("root", ""))
        (root,) = await store.lease(tenant, 1)
        await store.report(tenant, [Report(run, "root", root.attempt, RUNNING)])
        children = [(f"fetch-{i}", spec(f"fetch-{i}", "fetch" if i % 2 else "fetch/retry")) for i in range(299)]
        await store.admit(tenant, run, "root", children)
        a, b, c, d, e = await store.lease(tenant, 5)
        await store.report(
            tenant,
            [
                Report(run, a.name, a.attempt, FAILED, failed(f"bad input {a.name}")),
                Report(run, b.name, b.attempt, FAILED, failed(f"bad input {b.name}")),
                Report(run, c.name, c.attempt, FAILED, failed(f"bad input {c.name}")),
                Report(run, d.name, d.attempt, SUCCEEDED, b""),
                Report(run, e.name, e.attempt, RUNNING),
            ],
        )
        return [a.name, b.name, c.name]

    return loop.run(build())


def get_json(url: str, token: str | None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def sign_in(driver: object, token: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, "token")  # type: ignore[attr-defined]
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()  # type: ignore[attr-defined]


def test_the_run_page_shows_failures_live_and_another_tenant_sees_nothing(
    loop_thread: LoopThread, own_plane: ControlPlane, http: MetricsServer, browser: object
) -> None:
    from selenium.webdriver.common.by import By

    driver: object = browser
    mine = loop_thread.run(own_plane.tokens.create("tenant", "page-a"))
    theirs = loop_thread.run(own_plane.tokens.create("tenant", "page-b"))
    failures = a_run_with_failures(loop_thread, own_plane, "page-a", "demo")

    async def url() -> str:
        return (await own_plane.listing.run_summary("page-a", "demo")).name

    page = f"{http.base_url}/runs/{loop_thread.run(url())}"
    driver.get(page)  # type: ignore[attr-defined]
    assert driver.find_element(By.ID, "login").is_displayed()  # type: ignore[attr-defined]
    sign_in(driver, mine)

    def rows() -> list[str]:
        # Read in one script: the page redraws the table on every poll, so held elements go stale.
        script = "return [...document.querySelectorAll('#failures tr.failure')].map(r => r.innerText)"
        return list(driver.execute_script(script))  # type: ignore[attr-defined]

    def text(element_id: str) -> str:
        return str(driver.execute_script(f"return document.getElementById('{element_id}').innerText"))  # type: ignore[attr-defined]

    eventually(lambda: len(rows()) == 3, timeout=15)
    shown = rows()
    for name in failures:
        assert any(name in row and f"ValueError: bad input {name}" in row for row in shown), shown
    cells = "return [...document.getElementById('count-FAILED').cells].map(c => c.textContent)"
    assert driver.execute_script(cells) == ["FAILED", "3"]  # type: ignore[attr-defined]
    assert "4 of 300 actions finished" in text("progress-text")
    groups = eventually(
        lambda: {t.get_attribute("data-group") for t in driver.find_elements(By.CSS_SELECTOR, "table.group")},  # type: ignore[attr-defined]
        timeout=10,
    )
    assert groups == {"fetch", "fetch/retry", "(no group)"}
    assert mine not in driver.current_url  # type: ignore[attr-defined]

    # Live: a failure reported now shows without a reload.
    async def fail_one_more() -> str:
        (x,) = await own_plane.actions.lease("page-a", 1)
        # What it printed is kept apart from its result, as DispatchService.Report does.
        await own_plane.actions.keep_outputs("page-a", [("demo", x.name, x.attempt, b"fetching\nretrying once\n")])
        await own_plane.actions.report("page-a", [Report("demo", x.name, x.attempt, FAILED, failed("late failure"))])
        return x.name

    late = loop_thread.run(fail_one_more())
    eventually(lambda: any(late in row and "late failure" in row for row in rows()), timeout=15)
    # Each action links to its details on the page: the newest failure's shows its error and traceback.
    driver.execute_script("document.querySelector('#failures tr.failure a').click()")  # type: ignore[attr-defined]
    eventually(lambda: "ValueError: late failure" in text("action") and "raise ValueError" in text("action"), 15)
    assert "fetching\nretrying once" in text("action")  # and what it printed
    assert f"#action-{late}" in driver.current_url  # type: ignore[attr-defined]
    driver.execute_script("window.scrollTo(0, 0)")  # type: ignore[attr-defined]
    if target := os.environ.get(SCREENSHOT_ENV):
        driver.save_screenshot(target)  # type: ignore[attr-defined]

    # Another tenant's token, in a fresh tab state: the run is not found, nothing of it is shown.
    driver.execute_script("sessionStorage.clear()")  # type: ignore[attr-defined]
    driver.get(page)  # type: ignore[attr-defined]
    sign_in(driver, theirs)
    eventually(lambda: "No run demo for this token" in text("error"), timeout=15)
    assert rows() == [] or not driver.find_element(By.ID, "view").is_displayed()  # type: ignore[attr-defined]
    body = driver.find_element(By.TAG_NAME, "body").text  # type: ignore[attr-defined]
    assert not any(name in body for name in failures)

    # The JSON endpoints the page polls: the owner's token reads, another's is 404 like a missing run.
    api = f"{http.base_url}/api/runs/demo"
    status, data = get_json(api, mine)
    assert status == 200 and data["run"]["phase_counts"]["FAILED"] == 4  # type: ignore[index]
    assert data["run"]["url"] == page  # type: ignore[index]
    assert get_json(api, theirs)[0] == 404
    assert get_json(f"{http.base_url}/api/runs/nothing-here", theirs)[0] == 404
    assert get_json(api, None)[0] == 401
    assert get_json(api, "fo_t_made-up")[0] == 401
    for role in ("admin", "dispatcher"):  # the page is a tenant's view: other roles are refused, not shown all
        assert get_json(api, loop_thread.run(own_plane.tokens.create(role)))[0] == 403
    status, one = get_json(f"{api}/actions/{failures[0]}", mine)
    assert status == 200 and one["result"]["error"]["message"] == f"bad input {failures[0]}"  # type: ignore[index]
    assert get_json(f"{api}/actions/{failures[0]}", theirs)[0] == 404
    assert get_json(f"{http.base_url}/api/runs/Bad%20Name", mine)[0] == 400
    status, page_of = get_json(f"{api}/actions?phase=FAILED&limit=2", mine)
    assert status == 200 and len(page_of["actions"]) == 2 and page_of["next_cursor"]  # type: ignore[arg-type]
    assert get_json(f"{api}/actions?phase=NOPE", mine)[0] == 400
    assert get_json(f"{api}/actions?cursor=garbage", mine)[0] == 400


def test_an_action_report_shows_in_a_frame_where_its_scripts_do_not_run(
    loop_thread: LoopThread, own_plane: ControlPlane, http: MetricsServer, browser: object
) -> None:
    from selenium.webdriver.common.by import By

    driver: object = browser
    token = loop_thread.run(own_plane.tokens.create("tenant", "page-r"))
    report = (
        b"<h1 id='hello'>Hello from the report</h1>"
        b"<script>document.body.dataset.ran = 'yes'; parent.document.title = 'taken';</script>"
    )

    async def a_run_with_a_report() -> None:
        store = own_plane.actions
        await store.register_tenant("page-r")
        await store.create_run("page-r", "withreport", "root", spec("root", ""))
        (root,) = await store.lease("page-r", 1)
        await store.report("page-r", [Report("withreport", "root", root.attempt, RUNNING)])
        await ReportStore(own_plane.redis).put("page-r", "withreport", "root", root.attempt, report, 1 << 40)

    loop_thread.run(a_run_with_a_report())
    driver.get(f"{http.base_url}/runs/withreport#action-root")  # type: ignore[attr-defined]
    sign_in(driver, token)
    frame = eventually(lambda: driver.find_elements(By.ID, "report"), timeout=15)[0]  # type: ignore[attr-defined]
    assert frame.get_attribute("sandbox") == ""  # every restriction: no scripts, an origin of its own
    title = driver.title  # type: ignore[attr-defined]
    driver.switch_to.frame(frame)  # type: ignore[attr-defined]
    try:
        assert driver.find_element(By.ID, "hello").text == "Hello from the report"  # type: ignore[attr-defined]
        ran = driver.execute_script("return document.body.dataset.ran || ''")  # type: ignore[attr-defined]
    finally:
        driver.switch_to.default_content()  # type: ignore[attr-defined]
    assert ran == ""  # its script never ran...
    assert driver.title == title != "taken"  # type: ignore[attr-defined]  # ...nor reached the page


def test_the_page_answers_quickly_from_counts_not_the_whole_run(
    loop_thread: LoopThread, own_plane: ControlPlane, http: MetricsServer
) -> None:
    """The summary endpoint reads counters and one page: its reply stays small however big the run."""
    token = loop_thread.run(own_plane.tokens.create("tenant", "page-big"))

    async def build() -> None:
        await own_plane.actions.register_tenant("page-big")
        await own_plane.limits.set("page-big", {"max_fanout": 50_000, "max_queued": 50_000}, actor="t", reason="t")
        await own_plane.actions.create_run("page-big", "big", "root", spec("root", ""))
        await own_plane.actions.admit("page-big", "big", "root", [(f"c{i}", spec(f"c{i}", "g")) for i in range(20_000)])

    loop_thread.run(build())
    status, data = get_json(f"{http.base_url}/api/runs/big", token)
    assert status == 200 and data["run"]["action_count"] == 20_001  # type: ignore[index]
    assert data["run"]["phase_counts"] == {"QUEUED": 20_001}  # type: ignore[index]
    assert len(json.dumps(data)) < 5_000
    status, page = get_json(f"{http.base_url}/api/runs/big/actions?limit=100", token)
    assert status == 200 and len(page["actions"]) == 100  # type: ignore[arg-type]
