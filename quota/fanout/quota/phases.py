"""Phase codes as stored in Redis; the same numbers as fanout.v1.Phase."""

from __future__ import annotations

from fanout.v1 import actions_pb2 as pb

QUEUED = pb.QUEUED
WAITING_FOR_RESOURCES = pb.WAITING_FOR_RESOURCES
INITIALIZING = pb.INITIALIZING
RUNNING = pb.RUNNING
SUCCEEDED = pb.SUCCEEDED
FAILED = pb.FAILED
ABORTED = pb.ABORTED
TIMED_OUT = pb.TIMED_OUT

ALL = (QUEUED, WAITING_FOR_RESOURCES, INITIALIZING, RUNNING, SUCCEEDED, FAILED, ABORTED, TIMED_OUT)
TERMINAL = frozenset({SUCCEEDED, FAILED, ABORTED, TIMED_OUT})


def is_terminal(phase: int) -> bool:
    return phase in TERMINAL


def name(phase: int) -> str:
    return pb.Phase.Name(phase)
