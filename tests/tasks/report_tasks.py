"""Tasks that write reports (fanout.report), run through the real control plane."""

import asyncio
import time
from pathlib import Path

import fanout

env = fanout.TaskEnvironment(name="report_env")


@env.task(report=True)
async def reporting(marker_dir: str) -> str:
    """A first flush while it waits for a marker, then more: the main tab, a tab of its own, an unflushed end."""
    await fanout.report.log.aio("<h1>Loading</h1>")
    await fanout.report.flush.aio()
    await _wait_for(Path(marker_dir) / "go")
    fanout.report.replace("<h1>Loaded 3 rows</h1>")
    fanout.report.get_tab("Rows").log("<table><tr><td>1</td></tr></table>")
    fanout.report.log("<p>the end, never flushed by the task</p>")
    return "done"


async def _wait_for(path: Path) -> None:
    """Until `path` exists (the test makes it): polled, as the test lives in another process."""
    for _ in range(600):
        if path.exists():
            return
        await asyncio.sleep(0.05)


@env.task(report=True)
def plain_reporting(n: int) -> int:
    """A plain def task: its report calls run in its thread and a sync flush waits for the send."""
    for i in range(n):
        fanout.report.log(f"<li>row {i}</li>")
    fanout.report.flush()
    time.sleep(0.01)
    return n


@env.task
async def not_reporting() -> str:
    fanout.report.log("<p>nobody keeps this</p>")
    await fanout.report.flush.aio()
    return "quiet"


@env.task(report=True)
async def reporting_then_failing() -> str:
    fanout.report.log("<p>got this far</p>")
    raise RuntimeError("failed after writing its report")
