"""Running one action's task inside a worker (fanout.dispatch.worker).

It imports the task, runs it with a controller that turns task calls into
child actions, and turns what it returned or raised into an ActionResult.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import sys
import traceback
from pathlib import Path
from typing import Any

from fanout import errors, output, report, serialization, tracing
from fanout.bundles import active
from fanout.client import AsyncClient
from fanout.controller import Controller
from fanout.task import FILE_MODULE_PREFIX, Task
from fanout.v1 import actions_pb2 as pb

# Tasks already found, by reference and the bundle active then: a worker's every action of one
# task finds it here instead of resolving paths and walking modules again.
_loaded: dict[tuple[str, object], Task[Any, Any]] = {}


def load_task(ref: str) -> Task[Any, Any]:
    key = (ref, active.current())
    found = _loaded.get(key)
    if found is None:
        found = _loaded[key] = _load_task(ref)
    return found


def _load_task(ref: str) -> Task[Any, Any]:
    kind, _, rest = ref.partition(":")
    location, _, qualname = rest.rpartition(":")
    if kind == "file":
        location = active.resolve(location)
        module_name = FILE_MODULE_PREFIX + hashlib.sha256(location.encode()).hexdigest()[:16]
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, location)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load tasks from {location}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module  # before exec: the module's tasks look themselves up
            sys.path.insert(0, str(Path(location).parent))
            spec.loader.exec_module(module)
    elif kind == "module":
        module = importlib.import_module(location)
    else:
        raise ImportError(f"unknown task reference {ref!r}")
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, Task):
        raise TypeError(f"{ref} is not a fanout task")
    return obj


async def run_task(
    client: AsyncClient,
    spec: pb.ActionSpec,
    run: str,
    action: str,
    max_output: int,
    token: str | None = None,
    attempt: int = 1,
) -> pb.ActionResult:
    """Run one action's task in the current asyncio task; its child calls go through `client`.

    A worker calls this for each of its actions, with the action's own token
    and the client all of them share: their children go out together, and come
    back on one watch stream (fanout.hub). Cancelling the asyncio task cancels the
    action (CancelledError propagates).
    """
    with (
        tracing.span(f"fanout.action {spec.task_name}", spec.trace_parent, run=run, action=action),
        output.capture() as printed,
    ):
        result = await _run_task(client, spec, run, action, max_output, token, attempt)
    result.output = printed.value()  # kept apart by the control plane: `fanout logs RUN ACTION`
    return result


async def _run_task(
    client: AsyncClient, spec: pb.ActionSpec, run: str, action: str, max_output: int, token: str | None, attempt: int
) -> pb.ActionResult:
    bundle = spec.bundle if spec.HasField("bundle") else None
    controller = Controller(client, run, action, workdir=spec.workdir, token=token, bundle=bundle, attempt=attempt)
    page: report.Report | None = None
    try:
        if bundle is not None and bundle.digest and not active.is_active(bundle):
            await active.prepare(client, bundle, token)
        task = load_task(spec.task_ref)
        args, kwargs = serialization.decode_inputs(spec.inputs, task.types)
        controller.activate()
        if task.report:
            page = report.Report(f"{task.name} · {action}", _report_sink(client, run, action, token))
            report.begin(page)
        value = await task.invoke(*args, **kwargs)
        outputs = serialization.encode_output(task.name, value, task.types)
        if len(outputs) > max_output:
            raise errors.OutputTooLarge(f"the result is {len(outputs)} bytes, max_payload_bytes is {max_output}")
        return pb.ActionResult(outputs=outputs)
    except Exception as exc:
        return pb.ActionResult(
            error=pb.ActionError(
                type=type(exc).__name__,
                message=str(exc),
                traceback=traceback.format_exc(),
                non_recoverable=isinstance(exc, errors.NonRecoverableError),
            )
        )
    finally:
        # What the task wrote since its last flush is kept too, however it ended (but an abort: at once).
        if page is not None and not _cancelling():
            await _keep_report(page)
        await controller.close()


def _cancelling() -> bool:
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0


def _report_sink(client: AsyncClient, run: str, action: str, token: str | None) -> report.Sink:
    async def put(html: bytes) -> None:
        request = pb.PutReportRequest(run=run, action=action, html=html)
        await client.call(client.actions.PutReport, request, token=token)

    return put


async def _keep_report(page: report.Report) -> None:
    try:
        await page.flush()
    except errors.FanoutError as exc:  # the action's outcome matters more than its report
        print(f"fanout: the report was not kept: {exc}", file=sys.stderr)
