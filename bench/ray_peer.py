"""The peer: N no-op tasks on Ray, on this machine, as bench/throughput.py runs them on Fanout.

    python -m bench.ray_peer N REPEATS     # prints one JSON line: {"version", "walls_s"}

`ray.init(num_cpus=2, include_dashboard=False)` and a warm-up of WARMUP tasks
come before the timer; each try times `ray.get([noop.remote(i) for i in range(N)])`.
Ray is shut down after. Run in its own process so Ray's workers and threads
never share one with the Fanout figures.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import ray

WARMUP = 1_000


@ray.remote
def noop(i: int) -> int:
    return i


def main(argv: list[str]) -> int:
    n, repeats = int(argv[0]), int(argv[1])
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        ray.get([noop.remote(i) for i in range(WARMUP)])
        walls = []
        for _ in range(repeats):
            start = time.perf_counter()
            results = ray.get([noop.remote(i) for i in range(n)])
            walls.append(time.perf_counter() - start)
            if results != list(range(n)):
                raise RuntimeError("Ray returned a wrong result")
    finally:
        ray.shutdown()
    print(json.dumps({"version": ray.__version__, "walls_s": walls}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
