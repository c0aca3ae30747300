"""Python's cyclic garbage collector, tuned for the processes on a fanout's hot path.

A worker, a dispatcher and a server each hold thousands of live objects at
once (an asyncio task, futures and protobuf messages per action in flight)
and allocate many more per second. With Python's default thresholds a
collection starts every 700 allocations and the older generations, which
hold all of them, are walked again and again: a worker of the 10,000-action
benchmark spent 6% of its CPU collecting (1% with the thresholds here), and
one holding 20,000 actions at once about a third. So these processes collect
the young generation every GEN0_THRESHOLD allocations instead, and freeze
what they imported at start-up (gc.freeze), which no collection walks again.

The price is memory: cyclic garbage waits up to GEN0_THRESHOLD allocations
longer before it is freed (a few megabytes at most); objects without cycles
are freed at once by reference counting, as always. Tenant code running in
a worker gets the same collector.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 50_000


def tune_for_throughput() -> None:
    """Call once, after the imports: freeze what is there and collect the young generation less often."""
    gc.collect()  # what start-up left as garbage goes now, not frozen for good
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
