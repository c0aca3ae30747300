"""What a container backend must do, and what it hands back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb


@dataclass(frozen=True)
class Outcome:
    phase: int  # a terminal fanout.v1.Phase
    result: pb.ActionResult


class Backend(Protocol):
    # Whether it starts workers from the spec's image (containers) or runs every task in its own Python.
    runs_images: bool

    async def run(self, action: dpb.LeasedAction, endpoint: str, on_started: StartedCallback) -> Outcome:
        """Run one action to completion. Call on_started() once its container runs."""
        ...

    async def shutdown(self) -> None:
        """Stop every container this backend started."""
        ...

    async def recover(self) -> list[tuple[dpb.LeasedAction, Outcome]]:
        """Outcomes an earlier dispatcher in this place reached but never reported (called once, first)."""
        ...

    async def release(self, action: dpb.LeasedAction, outcome: Outcome) -> None:
        """The outcome of `action` reached the control plane: drop what was kept for it."""
        ...

    def waiting(self, action: dpb.LeasedAction) -> None:
        """`action` waits on its children: what it holds of the backend's room may go to other actions."""
        ...


class StartedCallback(Protocol):
    def __call__(self) -> None: ...


def failure(error_type: str, message: str, phase: int = pb.FAILED, non_recoverable: bool = False) -> Outcome:
    error = pb.ActionError(type=error_type, message=message, non_recoverable=non_recoverable)
    return Outcome(phase, pb.ActionResult(error=error))
