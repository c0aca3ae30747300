"""Retries with backoff: a flaky task is tried again, the control plane waiting min(base * factor**n, cap)
between attempts. A marker file counts the attempts, so the third one succeeds."""

from datetime import timedelta
from pathlib import Path

import flyte

env = flyte.TaskEnvironment(name="retries_example")

policy = flyte.RetryStrategy(
    count=3, backoff=flyte.Backoff(base=timedelta(milliseconds=200), factor=2.0, cap=timedelta(seconds=1))
)


@env.task(retries=policy)
async def flaky(marker: str) -> int:
    path = Path(marker)
    attempts = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempts))
    if attempts < 3:
        raise ConnectionError(f"attempt {attempts}: the service is busy")
    return attempts


@env.task
async def main(marker: str) -> int:
    return await flaky(marker)


if __name__ == "__main__":
    import tempfile

    flyte.init_from_config()
    print(flyte.run(main, marker=str(Path(tempfile.mkdtemp()) / "attempts")).outputs())
