"""Tasks whose inputs and outputs are typed: they must arrive as the types their annotations name."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

import fanout

env = fanout.TaskEnvironment(name="typed")


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Point:
    x: float
    y: float
    label: str | None = None


@dataclass
class Shifted:
    points: list[Point]
    at: datetime
    color: Color
    blob: bytes


@env.task
async def shift(points: list[Point], at: datetime, color: Color, blob: bytes) -> Shifted:
    assert all(isinstance(p, Point) for p in points) and isinstance(at, datetime)
    assert isinstance(color, Color) and isinstance(blob, bytes)
    moved = [Point(p.x + 1, p.y + 1, p.label) for p in points]
    return Shifted(moved, at + timedelta(days=1), color, blob[::-1])


@env.task
async def shift_all(groups: dict[str, list[Point]]) -> dict[str, Shifted]:
    at = datetime(2026, 11, 28, 12, 0)
    results = await asyncio.gather(*(shift(points, at, Color.BLUE, name.encode()) for name, points in groups.items()))
    assert all(isinstance(r, Shifted) for r in results)  # a child's result comes back typed too
    return dict(zip(groups, results, strict=True))


@env.task
async def count(n: int) -> int:
    return n


@env.task
async def calls_badly() -> int:
    return await count("three")
