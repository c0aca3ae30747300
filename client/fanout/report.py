"""`fanout.report` (Flyte 2's `flyte.report`): an HTML report a task writes as it runs, kept with its action.

In a task declared with `@env.task(report=True)`:

    fanout.report.log("<h2>Loaded</h2>")           # appended to the main tab
    fanout.report.replace("<p>all new</p>")         # the main tab's content replaced
    fanout.report.get_tab("Charts").log(svg)        # another tab, made on first use
    await fanout.report.flush.aio()                 # sent to the control plane now

Each flush sends the whole page, which replaces the one kept before; the
task's end flushes what is left, so a report is kept even if the task never
flushes (or fails). `fanout report RUN ACTION` and `Run.report(action)` read
it. Content is HTML fragments, put in the page as they are: the page is the
tenant's own, and the run page shows it in a sandboxed frame (no scripts).

Outside such a task (a plain call, local mode, a task without report=True)
the calls go to a report that is kept nowhere, as on Flyte.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

MAIN_TAB = "main"
_CURRENT: ContextVar[Report | None] = ContextVar("fanout_report", default=None)
Sink = Callable[[bytes], Awaitable[None]]


class _WithAio:
    """A sync call with its awaitable twin as `.aio`, the way Flyte spells both."""

    def __init__(self, sync: Callable[..., Any], aio: Callable[..., Awaitable[Any]]) -> None:
        self._sync = sync
        self.aio = aio

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._sync(*args, **kwargs)


@dataclass
class Tab:
    name: str
    content: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log = _WithAio(self._log, self._log_aio)
        self.replace = _WithAio(self._replace, self._replace_aio)

    def _log(self, content: str) -> None:
        """Add an HTML fragment (not a whole document: it goes inside the page)."""
        self.content.append(str(content))

    def _replace(self, content: str) -> None:
        self.content = [str(content)]

    async def _log_aio(self, content: str) -> None:
        self._log(content)

    async def _replace_aio(self, content: str) -> None:
        self._replace(content)


class Report:
    """An action's report: named tabs of HTML, sent whole through `sink` at each flush (None: kept nowhere)."""

    def __init__(self, title: str, sink: Sink | None = None) -> None:
        self.title = title
        self.tabs: dict[str, Tab] = {MAIN_TAB: Tab(MAIN_TAB)}
        self._sink = sink
        self._lock = asyncio.Lock()
        self._sent = ""

    def get_tab(self, name: str, create_if_missing: bool = True) -> Tab | None:
        if name not in self.tabs and create_if_missing:
            self.tabs[name] = Tab(name)
        return self.tabs.get(name)

    def render(self) -> str:
        """The whole page: the main tab first, each other tab under its name."""
        tabs = [tab for tab in self.tabs.values() if tab.content or tab.name == MAIN_TAB]
        nav = ""
        if len(tabs) > 1:
            links = "".join(f'<a href="#tab-{i}">{html.escape(t.name)}</a>' for i, t in enumerate(tabs))
            nav = f"<nav>{links}</nav>"
        sections = "".join(
            f'<section id="tab-{i}">' + ("" if t.name == MAIN_TAB else f"<h2>{html.escape(t.name)}</h2>")
            + "\n".join(t.content) + "</section>"
            for i, t in enumerate(tabs)
        )  # fmt: skip
        return (
            '<!doctype html><html><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:1.5rem}nav a{margin-right:1rem}"
            "section{margin:1rem 0}</style></head>"
            f"<body>{nav}{sections}</body></html>"
        )

    async def flush(self) -> None:
        """Send the page as it is now, unless it is what was sent last."""
        if self._sink is None:
            return
        async with self._lock:  # one at a time, each with the newest page: the last flush wins
            page = self.render()
            if page != self._sent:
                await self._sink(page.encode())
                self._sent = page


_NOWHERE = Report("report")


def current_report() -> Report:
    """The running task's report; one kept nowhere outside a task with report=True."""
    return _CURRENT.get() or _NOWHERE


def begin(report: Report) -> None:
    """The runtime, in the action's own context: the report its task's calls go to."""
    _CURRENT.set(report)


def get_tab(name: str, create_if_missing: bool = True) -> Tab | None:
    return current_report().get_tab(name, create_if_missing)


def _flush() -> None:
    """Send the report now: at once from a plain task's thread, in the background from the event loop."""
    report = current_report()
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # a thread of its own (a plain def task): wait for it on the action's loop
        from fanout.task import action_loop

        loop = action_loop()
        if loop is not None:
            asyncio.run_coroutine_threadsafe(report.flush(), loop).result()
        return
    _background.add(task := asyncio.ensure_future(report.flush()))
    task.add_done_callback(_background.discard)


_background: set[asyncio.Future[None]] = set()


async def _flush_aio() -> None:
    await current_report().flush()


def _log(content: str, do_flush: bool = False) -> None:
    """Append an HTML fragment to the main tab; with do_flush, send the report too."""
    current_report().tabs[MAIN_TAB].log(content)
    if do_flush:
        _flush()


async def _log_aio(content: str, do_flush: bool = False) -> None:
    current_report().tabs[MAIN_TAB].log(content)
    if do_flush:
        await _flush_aio()


def _replace(content: str, do_flush: bool = False) -> None:
    """Replace the main tab's content; with do_flush, send the report too."""
    current_report().tabs[MAIN_TAB].replace(content)
    if do_flush:
        _flush()


async def _replace_aio(content: str, do_flush: bool = False) -> None:
    current_report().tabs[MAIN_TAB].replace(content)
    if do_flush:
        await _flush_aio()


log = _WithAio(_log, _log_aio)
replace = _WithAio(_replace, _replace_aio)
flush = _WithAio(_flush, _flush_aio)
