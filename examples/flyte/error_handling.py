"""Handle a child's failure in the parent: the error keeps the child's exception type (`code`) and message,
and the parent can call the task again with other settings through `override`."""

import asyncio

import flyte
import flyte.errors

env = flyte.TaskEnvironment(name="errors_example")


@env.task
async def parse(record: str) -> int:
    if not record.isdigit():
        raise ValueError(f"not a number: {record!r}")
    return int(record)


@env.task
async def slow_square(x: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return x * x


@env.task
async def reject(reason: str) -> int:
    raise flyte.errors.NonRecoverableError(reason)  # no retry would help: fail at once


@env.task
async def main(records: list[str]) -> dict[str, object]:
    parsed: list[int] = []
    failures: list[str] = []
    for outcome in await asyncio.gather(*(parse(r) for r in records), return_exceptions=True):
        if isinstance(outcome, flyte.errors.RuntimeUserError):
            failures.append(f"{outcome.code}: {outcome.message}")
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            parsed.append(outcome)
    try:
        await slow_square.override(timeout=1)(3, 30)
        timed_out = False
    except flyte.errors.TaskTimeoutError:
        # Try again with more time.
        timed_out = await slow_square.override(timeout=30)(3, 0.1) == 9
    try:
        await reject.override(retries=5)("bad configuration")
        rejected = ""
    except flyte.errors.RuntimeUserError as exc:
        rejected = exc.code
    return {"parsed": parsed, "failures": failures, "retried_after_timeout": timed_out, "rejected": rejected}


if __name__ == "__main__":
    flyte.init_from_config()
    print(flyte.run(main, records=["1", "2", "x", "4"]).outputs())
