"""Tasks the tests run through the real control plane (loaded by file path in each action)."""

import asyncio

import fanout

env = fanout.TaskEnvironment(name="test_env")


@env.task
async def square(x: int) -> int:
    return x * x


@env.task
async def fan_squares(n: int) -> list[int]:
    return await asyncio.gather(*(square(i) for i in range(n)))


@env.task
async def maybe_fail(x: int) -> int:
    if x == 3:
        raise ValueError(f"bad input {x}")
    return x


@env.task
async def gather_strict(n: int) -> list[int] | list[str]:
    try:
        return await asyncio.gather(*(maybe_fail(i) for i in range(n)))
    except fanout.ActionFailed as exc:
        return [exc.error_type, exc.message]


@env.task
async def gather_lenient(n: int) -> list[object]:
    results = await asyncio.gather(*(maybe_fail(i) for i in range(n)), return_exceptions=True)
    return [f"{r.error_type}: {r.message}" if isinstance(r, fanout.ActionFailed) else r for r in results]


@env.task
async def nested(width: int, depth: int) -> int:
    """A tree of fanouts: each level waits on its children while they run."""
    if depth == 0:
        return 1
    counts = await asyncio.gather(*(nested(width, depth - 1) for _ in range(width)))
    return 1 + sum(counts)


@env.task
async def fanout_limit_probe(n: int) -> str:
    try:
        await asyncio.gather(*(square(i) for i in range(n)))
    except fanout.FanoutLimitExceeded as exc:
        return f"{exc.limit_name} limit={exc.limit} used={exc.used} requested={exc.requested}"
    return "admitted"


@env.task
async def sleepy(x: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return x


@env.task
async def sleepy_fan(n: int, seconds: float) -> list[int]:
    return await asyncio.gather(*(sleepy(i, seconds) for i in range(n)))


@env.task(retries=2)
async def flaky(marker_dir: str, failures: int) -> int:
    """Fails its first `failures` attempts; the attempt count lives in marker files."""
    from pathlib import Path

    attempt = len(list(Path(marker_dir).iterdir())) + 1
    (Path(marker_dir) / f"attempt-{attempt}").touch()
    if attempt <= failures:
        raise RuntimeError(f"attempt {attempt} fails")
    return attempt


@env.task
async def call_flaky(marker_dir: str, failures: int) -> int:
    return await flaky(marker_dir, failures)


@env.task
async def fail_fast(n: int) -> str:
    """One child fails at once while the others sleep; the parent returns on the failure."""
    try:
        await asyncio.gather(maybe_fail(3), *(sleepy(i, 60) for i in range(n)))
    except fanout.ActionFailed as exc:
        return exc.message
    return "no failure"


@env.task
async def quiet_parent(seconds: float) -> list[str]:
    """Awaits one child that sleeps `seconds`; returns the warnings the SDK logged meanwhile."""
    import logging

    warnings: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(record.getMessage())

    handler = Keep(logging.WARNING)
    logging.getLogger("fanout").addHandler(handler)
    try:
        await sleepy(0, seconds)
    finally:
        logging.getLogger("fanout").removeHandler(handler)
    return warnings


@env.task
async def logged_child(log_dir: str, x: int, seconds: float, freeze_pid: int) -> int:
    """Logs each execution; child 0 freezes the process `freeze_pid` (SIGSTOP) just before it returns."""
    import contextlib
    import os
    import signal
    from pathlib import Path

    with (Path(log_dir) / str(x)).open("a") as log:
        log.write("ran\n")
    await asyncio.sleep(seconds)
    if x == 0 and freeze_pid > 0:  # never 0 or -1: kill() would reach a whole group or every process
        with contextlib.suppress(ProcessLookupError):
            os.kill(freeze_pid, signal.SIGSTOP)
    return x


@env.task
async def logged_fan(log_dir: str, n: int, seconds: float, freeze_pid: int) -> list[int]:
    return await asyncio.gather(*(logged_child(log_dir, i, seconds, freeze_pid) for i in range(n)))


@env.task
async def text_of(size: int, data: str = "") -> str:
    """Returns `size` characters (its output's size) after taking `data` (its input's size)."""
    return "x" * size


def _described(results: list[object]) -> list[object]:
    def describe(r: object) -> object:
        if isinstance(r, fanout.ActionFailed):
            return f"{r.error_type}: {r.message}"
        return f"{type(r).__name__}: {r}" if isinstance(r, Exception) else r

    return [describe(r) for r in results]


@env.task
async def one_big_input(big: int) -> list[object]:
    """Three calls in one turn, the middle one with an input of `big` bytes."""
    calls = (text_of(1), text_of(2, "i" * big), text_of(3))
    return _described(await asyncio.gather(*calls, return_exceptions=True))


@env.task
async def one_big_output(big: int) -> list[object]:
    """Two calls in one turn, the second returning `big` bytes."""
    return _described(await asyncio.gather(text_of(1), text_of(big), return_exceptions=True))


# ---- Reusable workers (ReusePolicy): pids and concurrency seen from inside the worker ----

pool_env = fanout.TaskEnvironment(name="pool_env", reusable=fanout.ReusePolicy(replicas=2, concurrency=64, idle_ttl=1))
narrow_env = fanout.TaskEnvironment(
    name="narrow_env", reusable=fanout.ReusePolicy(replicas=1, concurrency=4, idle_ttl=1)
)
_active = 0
_peak = 0


async def _observe(seconds: float) -> list[int]:
    """[this process's pid, the most tasks that ran at once in it so far]."""
    import os

    global _active, _peak
    _active += 1
    _peak = max(_peak, _active)
    try:
        await asyncio.sleep(seconds)
    finally:
        _active -= 1
    return [os.getpid(), _peak]


@pool_env.task
async def pooled_pid(x: int) -> list[int]:
    return await _observe(0)


@pool_env.task
async def pooled_fan(n: int) -> list[list[int]]:
    """Parent and children in one reusable environment: a nested fanout inside the pool."""
    return list(await asyncio.gather(*(pooled_pid(i) for i in range(n))))


@narrow_env.task
async def narrow_pid(x: int, seconds: float) -> list[int]:
    return await _observe(seconds)


@pool_env.task
async def narrow_fan(n: int, seconds: float) -> list[list[int]]:
    return list(await asyncio.gather(*(narrow_pid(i, seconds) for i in range(n))))


@env.task
async def own_pid(x: int) -> int:
    import os

    return os.getpid()


@pool_env.task
async def own_pid_fan(n: int) -> list[int]:
    """Children without a ReusePolicy, from a parent in a pool."""
    return list(await asyncio.gather(*(own_pid(i) for i in range(n))))


@pool_env.task
async def environment_of_worker() -> dict[str, str]:
    import os

    return dict(os.environ)


@narrow_env.task
async def blocks_its_first_step(seconds: float) -> int:
    """Holds its worker's event loop for `seconds` before its first await: it never says it runs
    (unless it is its worker's first action, which awaits its code first)."""
    import os
    import time

    time.sleep(seconds)  # noqa: ASYNC251 -- blocking the loop is the point
    return os.getpid()


@pool_env.task
async def blocks_a_warm_workers_first_step(seconds: float) -> list[int]:
    """A child that warms up narrow_env's one worker, then one that blocks its first step there."""
    return [await blocks_its_first_step(0.0), await blocks_its_first_step(seconds)]


@pool_env.task
async def holds_its_workers_loop(seconds: float) -> int:
    """Says it runs, then holds its worker's event loop for `seconds` (a long turn, as a big gather's)."""
    import os
    import time

    await asyncio.sleep(0)
    time.sleep(seconds)  # noqa: ASYNC251 -- blocking the loop is the point
    return os.getpid()


@pool_env.task
async def pid_of_worker() -> int:
    import os

    return os.getpid()


@pool_env.task
async def loop_of_worker() -> str:
    """The module of the event loop this action runs on."""
    return type(asyncio.get_running_loop()).__module__


@pool_env.task
async def marked_sleep(marker: str, seconds: float) -> int:
    """Sleeps; writes 'cancelled' to `marker` if its asyncio task is cancelled (the worker lives on)."""
    import os
    from pathlib import Path

    Path(marker + ".pid").write_text(str(os.getpid()))
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        Path(marker).write_text("cancelled")
        raise
    return os.getpid()


timeout_env = fanout.TaskEnvironment(
    name="timeout_env", reusable=fanout.ReusePolicy(replicas=1, concurrency=8, idle_ttl=30)
)


@timeout_env.task(timeout=1)
async def sleep_past_timeout(marker: str, seconds: float) -> int:
    return await marked_sleep.fn(marker, seconds)


@timeout_env.task(timeout=1)
async def block_past_timeout(seconds: float) -> int:
    """Blocks its worker's event loop (no await): only killing the worker stops it."""
    import os
    import time

    time.sleep(seconds)  # noqa: ASYNC251 - blocking on purpose
    return os.getpid()


@pool_env.task
async def blocking_timeout_probe() -> str:
    try:
        await block_past_timeout(60)
    except fanout.ActionFailed as exc:
        return f"{exc.phase}: {exc.error_type}"
    return "no timeout"


@pool_env.task
async def timeout_probe(marker: str) -> str:
    try:
        await sleep_past_timeout(marker, 30)
    except fanout.ActionFailed as exc:
        return f"{exc.phase}: {exc.error_type}"
    return "no timeout"


@pool_env.task
async def abort_probe(marker: str) -> int:
    return await marked_sleep(marker, 60)


@narrow_env.task
async def logged_pooled(log_dir: str, x: int, seconds: float) -> int:
    """Logs each execution with its pid, then sleeps."""
    import os
    from pathlib import Path

    with (Path(log_dir) / str(x)).open("a") as log:
        log.write(f"{os.getpid()}\n")
    await asyncio.sleep(seconds)
    return x


@pool_env.task
async def logged_pooled_fan(log_dir: str, n: int, seconds: float) -> list[int]:
    return list(await asyncio.gather(*(logged_pooled(log_dir, i, seconds) for i in range(n))))


# ---- One worker's parents share its watch stream and submissions (fanout.hub) ----

mux_env = fanout.TaskEnvironment(name="mux_env", reusable=fanout.ReusePolicy(replicas=1, concurrency=128, idle_ttl=1))


@mux_env.task
async def mux_leaf(x: int) -> int:
    return x


@mux_env.task
async def mux_parent(n: int) -> int:
    return sum(await asyncio.gather(*(mux_leaf(i) for i in range(n))))


@mux_env.task
async def mux_tree(parents: int, children: int) -> list[int]:
    """A nested fanout whose every parent runs in the one worker of mux_env."""
    return list(await asyncio.gather(*(mux_parent(children) for _ in range(parents))))


@mux_env.task
async def mux_quota_pair(big: int, small: int) -> list[object]:
    """Two parents in the worker at once: the big one's children overflow max_fanout, the small one's fit."""
    results = await asyncio.gather(mux_parent(big), mux_parent(small), return_exceptions=True)
    return [r.error_type if isinstance(r, fanout.ActionFailed) else r for r in results]


@fanout.trace
async def traced_square(marker_dir: str, x: int) -> int:
    """A checkpointed helper: each real run of it leaves a marker."""
    _append(f"{marker_dir}/square-{x}", "ran\n")
    await asyncio.sleep(0)
    return x * x


def _append(path: str, text: str) -> None:
    with open(path, "a") as marks:
        marks.write(text)


@env.task(retries=2)
async def traced_then_flaky(marker_dir: str, n: int) -> int:
    """n traced squares at once, then a failure on the first attempt: the retry replays the squares."""
    from pathlib import Path

    squares = await asyncio.gather(*(traced_square(marker_dir, x) for x in range(n)))
    attempt = len(list(Path(marker_dir).glob("attempt-*"))) + 1
    (Path(marker_dir) / f"attempt-{attempt}").touch()
    if attempt == 1:
        raise RuntimeError("the first attempt fails after its traced calls")
    return sum(squares)


@pool_env.task
async def pooled_echo(x: int) -> int:
    """Done in its first step: it never shows RUNNING."""
    return x


@pool_env.task
async def pooled_nap(x: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return x


@pool_env.task
async def echoes_and_naps(n: int, seconds: float) -> list[int]:
    return list(await asyncio.gather(*(pooled_echo(i) for i in range(n)), *(pooled_nap(i, seconds) for i in range(n))))


@pool_env.task
async def pooled_block(seconds: float) -> int:
    """Blocks its worker's event loop in its first step: it cannot say it runs."""
    import time

    time.sleep(seconds)  # noqa: ASYNC251 - blocking on purpose
    return 0
