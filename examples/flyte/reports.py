"""Reports: a task writes an HTML report as it works (a tab per stage, flushed as it goes), kept with its action.

Read it with `fanout report RUN ACTION -o report.html`, or `run.report(action)`.
"""

import asyncio

import flyte
import flyte.report

env = flyte.TaskEnvironment(name="reports_example")


@env.task
async def score(item: int) -> int:
    return item * item


@env.task(report=True)
async def main(n: int) -> int:
    await flyte.report.replace.aio(f"<h1>Scoring {n} items</h1>")
    await flyte.report.flush.aio()
    scores = await asyncio.gather(*(score(i) for i in range(n)))
    rows = "".join(f"<tr><td>{i}</td><td>{s}</td></tr>" for i, s in enumerate(scores))
    flyte.report.get_tab("Scores").log(f"<table><tr><th>item</th><th>score</th></tr>{rows}</table>")
    await flyte.report.log.aio(f"<p>Total: {sum(scores)}</p>", do_flush=True)
    return sum(scores)


if __name__ == "__main__":
    flyte.init_from_config()
    run = flyte.run(main, n=5)
    print(run.outputs())
    print(run.report())
