"""Histograms observed a batch at a time read exactly as if every value had been observed on its own."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Histogram

from fanout.server.histograms import Batched, observe_many

BUCKETS = (0.005, 0.01, 0.5, 2.5)
# On a bound, between bounds, past the last one, zero and (a clock stepping back) below it.
VALUES = [0.005, 0.01, 0.007, 0.5, 0.4999, 3.0, 120.0, 0.0, -0.1, 2.5, 0.01, 1.0]


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    return {
        (sample.name.removeprefix(name), sample.labels.get("le", "")): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name.startswith(name) and not sample.name.endswith("_created")
    }


def test_observe_many_reads_as_one_observe_per_value() -> None:
    registry = CollectorRegistry()
    one_by_one = Histogram("one_by_one", "per value", buckets=BUCKETS, registry=registry)
    together = Histogram("together", "a batch", ["kind"], buckets=BUCKETS, registry=registry)
    for value in VALUES:
        one_by_one.observe(value)
    observe_many(together.labels("x"), VALUES[:5])
    observe_many(together.labels("x"), VALUES[5:])
    observe_many(together.labels("x"), [])
    expected = samples(registry, "one_by_one")
    assert expected[("_count", "")] == len(VALUES)
    assert samples(registry, "together") == expected


def test_batched_observes_a_turns_values_after_it() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("batched", "a turn at a time", buckets=BUCKETS, registry=registry)
    batched = Batched(histogram)

    async def main() -> tuple[float | None, float | None]:
        for value in VALUES:
            batched.add(value)
        during = registry.get_sample_value("batched_count")
        await asyncio.sleep(0)
        return during, registry.get_sample_value("batched_count")

    during, after = asyncio.run(main())
    assert (during, after) == (0.0, len(VALUES))
    assert registry.get_sample_value("batched_sum") == sum(VALUES)
