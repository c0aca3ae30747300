"""`fanout.ctx()`: inside a task, which action of which run this is (Flyte 2's `flyte.ctx()`)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from fanout import controller


@dataclass(frozen=True)
class ActionID:
    name: str
    run_name: str


@dataclass(frozen=True)
class TaskContext:
    action: ActionID
    mode: str  # "remote": an action the control plane runs


def ctx() -> TaskContext | None:
    """The running action's context; None outside an action (a plain call, or local mode)."""
    active = controller.current()
    if active is None:
        return None
    return TaskContext(ActionID(active.parent, active.run), "remote")


def version() -> str:
    try:
        return metadata.version("fanout")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"
