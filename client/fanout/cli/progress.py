"""`fanout run --wait`'s view of a run while it goes: counts per phase, rate, the first failures.

On a terminal it is drawn live with rich on stderr (stdout keeps only the
result, for pipes); elsewhere (a CI log) a plain line every LOG_SECONDS and
one at the end. It polls the run's own counters (GetRun: actions per phase,
kept by the control plane for the whole tree) and, when failures appear,
the run's failure list: a few small reads a second, whatever the size of
the fanout, nested ones included.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from fanout.cli import output
from fanout.client import TERMINAL_PHASES, Client
from fanout.v1 import actions_pb2 as pb

# The failures shown, the first ones seen: what a user looks at first when a fanout goes wrong.
MAX_FAILURES = 5
# The rate is of the actions finished in this last stretch of time.
RATE_WINDOW_SECONDS = 10.0
# How often the run is read; without a terminal, how often a progress line is printed.
POLL_SECONDS = 0.25
LOG_SECONDS = 10.0
_FAILED = (pb.FAILED, pb.TIMED_OUT)
_TERMINAL_NAMES = frozenset(output.phase(phase) for phase in TERMINAL_PHASES)
_PHASE_STYLE = {"SUCCEEDED": "green", "FAILED": "red", "ABORTED": "yellow", "TIMED_OUT": "red", "RUNNING": "cyan"}


@dataclass
class RunProgress:
    run: str
    phases: dict[str, int] = field(default_factory=dict)  # actions per phase name, the whole tree
    phase: int = pb.PHASE_UNSPECIFIED  # the run's own
    failures: list[tuple[str, str]] = field(default_factory=list)  # (action, why), the first MAX_FAILURES seen
    started: float = field(default_factory=time.monotonic)
    _done_at: deque[tuple[float, int]] = field(default_factory=deque)  # (when, done) samples for the rate

    def update(self, run: pb.Run) -> None:
        self.phase = run.phase
        self.phases = dict(run.phase_counts)
        now = time.monotonic()
        self._done_at.append((now, self.done))
        while len(self._done_at) > 2 and self._done_at[1][0] < now - RATE_WINDOW_SECONDS:
            self._done_at.popleft()

    def add_failures(self, actions: list[pb.ActionStatus]) -> None:
        known = {name for name, _ in self.failures}
        for status in actions:
            if len(self.failures) < MAX_FAILURES and status.name not in known:
                self.failures.append((status.name, output.describe_result(status.result) or output.phase(status.phase)))

    @property
    def failed(self) -> int:
        return sum(self.phases.get(output.phase(phase), 0) for phase in _FAILED)

    @property
    def done(self) -> int:
        return sum(count for name, count in self.phases.items() if name in _TERMINAL_NAMES)

    @property
    def total(self) -> int:
        return sum(self.phases.values())

    @property
    def over(self) -> bool:
        return self.phase in TERMINAL_PHASES

    def rate(self) -> float:
        """Actions finished per second over the last RATE_WINDOW_SECONDS (from the first sample, if sooner)."""
        if len(self._done_at) < 2:
            return 0.0
        (then, before), (now, after) = self._done_at[0], self._done_at[-1]
        return (after - before) / max(now - then, 1e-3)

    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 0.0

    def counts(self) -> Counter[str]:
        return Counter(self.phases)

    def line(self) -> str:
        counts = " ".join(f"{name}={count}" for name, count in sorted(self.counts().items()))
        return f"run {self.run}: {self.done}/{self.total} finished · {self.rate():.1f}/s · {counts}"

    def __rich__(self) -> RenderableType:
        elapsed = time.monotonic() - self.started
        head = Text.assemble(
            ("run ", "bold"), (self.run, "bold"),
            f"  {self.done:,}/{self.total:,} finished  ·  {self.rate():,.1f} actions/s  ·  {elapsed:,.0f} s",
        )  # fmt: skip
        bar = Table.grid(padding=(0, 1))  # a grid row: the bar alone would share its line with what follows
        bar.add_row(ProgressBar(total=max(self.total, 1), completed=self.done, width=60), f"{self.percent():.0f}%")
        counts = Text("  ").join(
            Text(f"{name} {count:,}", style=_PHASE_STYLE.get(name, "")) for name, count in sorted(self.counts().items())
        )
        parts: list[RenderableType] = [head, bar, counts]
        if self.failures:
            table = Table(show_header=False, box=None, padding=(0, 1))
            for name, why in self.failures:
                table.add_row(Text(name, style="red"), Text(why, overflow="ellipsis", no_wrap=True))
            more = self.failed - len(self.failures)
            title = f"first failures ({self.failed:,} in all)" if more else "failures"
            parts += [Text(title, style="bold red"), table]
        return Group(*parts)


def follow_with_progress(client: Client, run: str, console: Console | None = None) -> RunProgress:
    """Follow `run` to its end, showing its progress on `console` (stderr by default)."""
    console = console or Console(stderr=True)
    progress = RunProgress(run)
    last_log = time.monotonic()
    live = Live(progress, console=console, refresh_per_second=4) if console.is_terminal else contextlib.nullcontext()
    with live:
        while True:
            progress.update(client.get_run(run))
            if progress.failed and len(progress.failures) < min(progress.failed, MAX_FAILURES):
                listed = client.list_actions(pb.ListActionsRequest(run=run, phases=_FAILED, limit=MAX_FAILURES))
                progress.add_failures(list(listed.actions))
            if progress.over:
                break
            if not console.is_terminal and time.monotonic() - last_log >= LOG_SECONDS:
                console.print(progress.line(), highlight=False, markup=False)
                last_log = time.monotonic()
            time.sleep(POLL_SECONDS)
    if not console.is_terminal:
        console.print(progress.line(), highlight=False, markup=False)
        for name, why in progress.failures:
            console.print(f"  {name}: {why}", highlight=False, markup=False)
    return progress
