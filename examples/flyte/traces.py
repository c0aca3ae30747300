"""Traces: a costly helper (here, a stand-in for a model call) is traced, so when its task fails after it and
is retried, the retry gets the helper's results back instead of paying for them again.

A ledger file counts the real calls: five documents, two attempts, five calls.
"""

import asyncio
from pathlib import Path

import flyte

env = flyte.TaskEnvironment(name="traces_example")


def charge(ledger: str, document: str) -> None:
    """What a real call would cost: a line in the ledger each."""
    with open(ledger, "a") as calls:
        calls.write(document + "\n")


@flyte.trace
async def summarize(ledger: str, document: str) -> str:
    charge(ledger, document)
    await asyncio.sleep(0.05)
    return f"{document}: {len(document.split())} words"


@env.task(retries=2)
async def summarize_all(ledger: str, documents: list[str]) -> list[str]:
    with flyte.group("summaries"):
        summaries = await asyncio.gather(*(summarize(ledger, d) for d in documents))
    attempts = Path(ledger + ".attempts")
    attempt = len(attempts.read_text()) + 1 if attempts.exists() else 1
    attempts.write_text("x" * attempt)
    if attempt == 1:
        raise ConnectionError("the store went away before the summaries were saved")
    return summaries


@env.task
async def main(ledger: str, documents: list[str]) -> dict:
    summaries = await summarize_all(ledger, documents)
    return {"summaries": summaries, "calls_made": len(Path(ledger).read_text().splitlines())}


if __name__ == "__main__":
    import tempfile

    flyte.init_from_config()
    docs = ["the quick brown fox", "jumps over", "the lazy dog", "lorem ipsum dolor sit amet", "fin"]
    print(flyte.run(main, ledger=str(Path(tempfile.mkdtemp()) / "ledger"), documents=docs).outputs())
