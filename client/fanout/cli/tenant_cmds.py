"""Tenant commands: `fanout run`, `get`, `watch`, `abort`, `quota`."""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from fanout import config as client_config
from fanout.cli import admin_cmds, output, progress, token_args
from fanout.cli.common import common_options
from fanout.client import TERMINAL_PHASES, Client
from fanout.errors import ConfigError
from fanout.runs import follow, start_run
from fanout.runtime import load_task
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import admin_pb2 as apb

# How often `fanout logs --follow` asks whether the attempt has ended.
LOGS_POLL_SECONDS = 0.5


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    run = sub.add_parser(
        "run",
        parents=[common],
        help="start a task from a Python file as a new run",
        description="Load FILE (its main guard does not run), start TASK with the given arguments and, with "
        "--wait, print its result. Arguments follow the task's signature as flags, as Flyte's CLI takes them "
        "(`--user_ids '[1,2]'`; `fanout run FILE TASK --help` lists them), or come in order; each is parsed as "
        "JSON, else taken as a string.",
    )
    run.add_argument("file", help="Python file that defines the task")
    run.add_argument("task", help="task function name")
    run.add_argument(
        "args", nargs=argparse.REMAINDER, metavar="ARGS", help="--PARAMETER VALUE per parameter, or values in order"
    )
    run.add_argument("--wait", action="store_true", help="wait for the result; exit 1 if the run fails")
    run.set_defaults(handler=cmd_run)

    get = sub.add_parser("get", parents=[common], help="show a run, or one action of it")
    get.add_argument("run")
    get.add_argument("action", nargs="?", help="action name (default: the root)")
    get.set_defaults(handler=cmd_get)

    logs = sub.add_parser(
        "logs",
        parents=[common],
        help="what an action printed",
        description="Prints what one attempt of an action wrote to stdout and stderr (its last 1 MiB), kept by "
        "the control plane once the attempt ended, for the run's retention. Exit 1 if nothing was kept.",
    )
    logs.add_argument("run")
    logs.add_argument("action", nargs="?", help="action name (default: the root)")
    logs.add_argument("--attempt", type=int, default=0, help="which attempt (default: the latest)")
    logs.add_argument(
        "--follow", action="store_true", help="if the attempt is still running, wait for it to end, then print"
    )
    logs.set_defaults(handler=cmd_logs)

    report = sub.add_parser(
        "report",
        parents=[common],
        help="an action's HTML report",
        description="Writes the HTML report an action's task flushed last (a task with report=True, through "
        "fanout.report), to stdout or --output. Exit 1 if it has none.",
    )
    report.add_argument("run")
    report.add_argument("action", nargs="?", help="action name (default: the root)")
    report.add_argument("-o", "--output", metavar="FILE", help="write the page to FILE (open it in a browser)")
    report.set_defaults(handler=cmd_report)

    watch = sub.add_parser(
        "watch",
        parents=[common],
        help="follow a run's root or an action's children until they finish",
        description="Replays current state, then follows live, with the progress of each flyte.group. "
        "Exit code 0 when everything watched succeeded, 1 when something failed.",
    )
    watch.add_argument("run")
    watch.add_argument("--parent", default="", help="follow the children of this action (default: the root)")
    watch.set_defaults(handler=cmd_watch)

    abort = sub.add_parser(
        "abort",
        parents=[common],
        help="abort a run, or one action of it, with all its descendants",
        description="Every unfinished action aborted ends ABORTED; running ones are stopped. With ACTION, only "
        "that action and its descendants: the parent awaiting it sees ActionAbortedError.",
        epilog="examples: fanout abort r1a2b3c4d5e6 · fanout abort r1a2b3c4d5e6 fetch-0123abcd --reason stuck",
    )
    abort.add_argument("run")
    abort.add_argument("action", nargs="?", help="action name (default: the whole run)")
    abort.add_argument("--reason", default="", help="why; logged by the server")
    abort.set_defaults(handler=cmd_abort)

    quota = sub.add_parser(
        "quota", parents=[common], help="your limits and their use; ask for more, check a fanout before running it"
    )
    quota.set_defaults(handler=cmd_quota)
    verbs = quota.add_subparsers(dest="verb", metavar="{request,requests,check}")
    common = common_options(argparse.SUPPRESS)
    ask = verbs.add_parser(
        "request",
        parents=[common],
        help="ask an admin for a higher limit",
        epilog="example: fanout quota request --max-fanout 50000 --reason 'nightly backfill of 40k files'",
    )
    for flag in ("max_fanout", "max_concurrency", "max_queued", "max_stored_bytes"):
        ask.add_argument("--" + flag.replace("_", "-"), type=int, dest=flag, metavar="N")
    ask.add_argument("--reason", required=True, help="why you need it; the admin decides on it")
    ask.set_defaults(handler=cmd_quota_request)
    mine = verbs.add_parser("requests", parents=[common], help="your requests and what became of them")
    mine.set_defaults(handler=cmd_quota_requests)
    check = verbs.add_parser(
        "check", parents=[common], help="would a run of N actions be admitted now, and how much room is left"
    )
    check.add_argument("--fanout", type=int, required=True, metavar="N", help="actions of the run, root included")
    check.set_defaults(handler=cmd_quota_check)


def _client(args: argparse.Namespace) -> Client:
    return Client(client_config.load(endpoint=args.endpoint, token=args.token))


def cmd_run(args: argparse.Namespace) -> int:
    task = load_task(f"file:{Path(args.file).resolve()}:{args.task}")
    parser = _task_parser(args.file, task)
    given = vars(parser.parse_args(args.args))  # --help lists the task's parameters; bad flags exit 2
    values = given.pop("values", [])
    kwargs = {name[len(_PARAM) :]: given.pop(name) for name in list(given) if name.startswith(_PARAM)}
    for name, value in given.items():  # client options given after TASK
        setattr(args, name, value)
    args.token = token_args.token_from_args(args) or args.token
    try:
        task.check_arguments(tuple(values), kwargs)
    except TypeError as exc:
        raise ConfigError(f"{exc}; `fanout run {args.file} {args.task} --help` lists its parameters") from None
    client = _client(args)
    handle = start_run(client, task, *values, **kwargs)
    if not args.wait:
        if args.json:
            output.emit_json({"run": handle.name, "url": handle.url})
        else:
            print(f"run {handle.name} started · {handle.url}")
        return 0
    if not args.json:  # JSON output is for programs: no view of the run on the way
        print(f"run {handle.name} started · {handle.url}", file=sys.stderr)
        progress.follow_with_progress(client, handle.name)
    handle.wait()
    outputs = handle.outputs()
    if args.json:
        output.emit_json({"run": handle.name, "url": handle.url, "phase": "SUCCEEDED", "outputs": outputs})
    else:
        print(f"run {handle.name} SUCCEEDED · {handle.url}")
        print(json.dumps(outputs, indent=2))
    return 0


# Parameters' flags land under this prefix, apart from the client options sharing the parser.
_PARAM = "param_"


def _task_parser(file: str, task: Any) -> argparse.ArgumentParser:
    """The arguments of one task: a flag per parameter (as its signature says), values in order, and the
    client options (which may also come after TASK), each left unset unless given."""
    parser = argparse.ArgumentParser(
        prog=f"fanout run {file} {task.short_name}",
        description=(inspect.getdoc(task.fn) or f"Run the task {task.name}.").split("\n\n")[0],
        parents=[common_options(argparse.SUPPRESS)],
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--wait", action="store_true", help="wait for the result; exit 1 if the run fails")
    parser.add_argument("values", nargs="*", type=_json_or_text, help="values in the parameters' order")
    for name, parameter in inspect.signature(task.fn).parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        kind = task.types.hints.get(name)
        about = "any JSON" if kind is None else kind.__name__ if isinstance(kind, type) else str(kind)
        default = "" if parameter.default is parameter.empty else f" (default: {parameter.default!r})"
        parser.add_argument(f"--{name}", dest=_PARAM + name, type=_json_or_text, metavar="VALUE",
                            help=f"{about}{default}")  # fmt: skip
    return parser


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def cmd_get(args: argparse.Namespace) -> int:
    with _client(args) as client:
        run = client.get_run(args.run)
        status = client.get_action(args.run, args.action or run.root)
        traced = client.call(client.actions.ListTraces, pb.ListTracesRequest(run=run.name, action=status.name))
    if args.json:
        data = output.as_dict(run)
        data["phase"] = output.phase(run.phase)
        calls = [{"name": r.name, "duration": r.duration, "attempt": r.attempt} for r in traced.records]
        output.emit_json({"run": data, "action": output.status_dict(status), "traced_calls": calls})
        return 0
    print(f"run     {run.name}  {output.phase(run.phase)}  ({run.action_count} actions)")
    print(f"created {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(run.created_at))}")
    print(f"action  {status.name}  {status.task_name}  {output.phase(status.phase)}  attempt {status.attempt}")
    if status.group:
        print(f"group   {status.group}")
    if status.HasField("result"):
        print(f"        {output.describe_result(status.result)}")
    if traced.records:  # @fanout.trace calls, kept for its retries: how many of each, and their time
        by_name = Counter(r.name for r in traced.records)
        seconds = sum(r.duration for r in traced.records)
        more = " (first page)" if traced.next_cursor else ""
        listed = ", ".join(f"{name} ×{count}" for name, count in by_name.most_common(5))
        print(f"traced  {len(traced.records)} calls{more}: {listed}  · {seconds:.2f} s in all")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    with _client(args) as client:
        name = args.action or client.get_run(args.run).root
        page = client.call(client.actions.GetReport, pb.GetReportRequest(run=args.run, action=name))
    if not page.kept:
        print(f"fanout: {name} has no report: its task flushed none (it needs report=True)", file=sys.stderr)
        return 1
    if args.output:
        Path(args.output).write_bytes(page.html)
        print(f"wrote {len(page.html):,} bytes to {args.output}")
    else:
        sys.stdout.write(page.html.decode("utf-8", "replace") + "\n")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    if args.attempt < 0:
        raise ConfigError("--attempt is 1 or more (0: the latest)")
    with _client(args) as client:
        name = args.action or client.get_run(args.run).root
        logs = client.get_logs(args.run, name, args.attempt)
        while args.follow and not logs.kept and logs.phase not in TERMINAL_PHASES:
            time.sleep(LOGS_POLL_SECONDS)  # output arrives with the attempt's end, not before
            logs = client.get_logs(args.run, name, args.attempt)
    if args.json:
        output.emit_json(
            {"run": args.run, "action": name, "attempt": logs.attempt, "phase": output.phase(logs.phase),
             "kept": logs.kept, "output": logs.output.decode("utf-8", "replace")}
        )  # fmt: skip
        return 0 if logs.kept else 1
    if not logs.kept:
        print(
            f"fanout: nothing kept for {name} attempt {logs.attempt} ({output.phase(logs.phase)}): output is kept "
            "once an attempt ends" + ("" if args.follow else "; --follow waits for it"),
            file=sys.stderr,
        )
        return 1
    sys.stdout.buffer.write(logs.output)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    phases: dict[str, int] = {}
    groups: dict[str, str] = {}  # name -> its flyte.group, for those created in one
    replayed = False
    last_line = ""
    interactive = sys.stderr.isatty() and not args.json
    with _client(args) as client:
        # follow() resumes a dropped stream from its cursor: a long watch outlives a server restart.
        for event in follow(client, args.run, args.parent, with_groups=True):
            for status in event.updates:
                phases[status.name] = status.phase
                if status.group:
                    groups[status.name] = status.group
                if args.json:
                    output.emit_json(output.status_dict(status))
                elif replayed and status.phase in TERMINAL_PHASES and status.phase != pb.SUCCEEDED:
                    where = f"[{status.group}] " if status.group else ""
                    print(f"{where}{status.name} {output.phase(status.phase)}: {output.describe_result(status.result)}")
            if event.HasField("replay_done"):
                replayed = True
            if replayed:
                line = _progress(phases, groups)
                if interactive and line != last_line:
                    sys.stderr.write("\r" + line)
                    last_line = line
                if phases and all(p in TERMINAL_PHASES for p in phases.values()):
                    if interactive:
                        sys.stderr.write("\n")
                    elif not args.json:
                        print(line)
                    return 0 if all(p == pb.SUCCEEDED for p in phases.values()) else 1
    return 1


def _progress(phases: dict[str, int], groups: dict[str, str]) -> str:
    """One line: finished of all, counts per phase, then finished of each group, e.g. "[fetch 3/10]"."""
    counts = Counter(output.phase(p) for p in phases.values())
    done = sum(1 for p in phases.values() if p in TERMINAL_PHASES)
    line = f"{done}/{len(phases)} finished · " + " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    if groups:
        total, finished = (
            Counter(groups.values()),
            Counter(g for n, g in groups.items() if phases[n] in TERMINAL_PHASES),
        )
        line += " · " + " ".join(f"[{g} {finished[g]}/{total[g]}]" for g in sorted(total))
    return line


def cmd_abort(args: argparse.Namespace) -> int:
    if args.action:
        return _abort_action(args)
    with _client(args) as client:
        aborted = client.abort_run(args.run, args.reason)
    if args.json:
        output.emit_json({"run": args.run, "aborted": aborted})
    elif aborted:
        print(f"run {args.run}: {aborted} unfinished actions aborted")
    else:
        print(f"run {args.run} had already finished; nothing to abort")
    return 0


def _abort_action(args: argparse.Namespace) -> int:
    with _client(args) as client:
        aborted = client.abort_actions(args.run, [args.action], args.reason)
    if args.json:
        output.emit_json({"run": args.run, "action": args.action, "aborted": aborted})
    elif aborted:
        print(f"run {args.run}: {aborted} unfinished actions aborted ({args.action} and its descendants)")
    else:
        print(f"action {args.action} and its descendants had already finished; nothing to abort")
    return 0


def cmd_quota(args: argparse.Namespace) -> int:
    with _client(args) as client:
        quota = client.get_quota()
    if args.json:
        output.emit_json(output.as_dict(quota))
        return 0
    print(f"tenant {quota.tenant}")
    print(f"  running            {quota.running:>12,} of max_concurrency {quota.max_concurrency:,}")
    print(f"  queued             {quota.queued:>12,} of max_queued {quota.max_queued:,}")
    print(f"  max_fanout         {quota.max_fanout:>12,} actions per run")
    print(f"  max_payload_bytes  {quota.max_payload_bytes:>12,}")
    print(f"  stored_bytes       {quota.stored_bytes:>12,} of max_stored_bytes {quota.max_stored_bytes:,}")
    print(f"  retention_seconds  {quota.retention_seconds:>12,} a finished run is kept, then dropped")
    return 0


def cmd_quota_request(args: argparse.Namespace) -> int:
    asked = {n: getattr(args, n) for n in ("max_fanout", "max_concurrency", "max_queued", "max_stored_bytes")}
    asked = {n: v for n, v in asked.items() if v is not None}
    if not asked:
        raise ConfigError("ask for at least one limit, e.g. --max-fanout 50000")
    with _client(args) as client:
        filed = client.call(
            client.quota.RequestLimit, apb.RequestLimitRequest(limits=apb.Limits(**asked), reason=args.reason)
        )
    if args.json:
        output.emit_json(output.as_dict(filed))
    else:
        print(f"request {filed.id} filed; an admin will approve or deny it (see `fanout quota requests`)")
    return 0


def cmd_quota_requests(args: argparse.Namespace) -> int:
    with _client(args) as client:
        found = client.call(client.quota.ListMyLimitRequests, apb.ListLimitRequestsRequest())
    admin_cmds.print_requests(list(found.requests), args.json)
    return 0


def cmd_quota_check(args: argparse.Namespace) -> int:
    """Exit 0 when the fanout would be admitted now, 1 when not."""
    with _client(args) as client:
        check = client.call(client.quota.CheckFanout, apb.CheckFanoutRequest(fanout=args.fanout))
    if args.json:
        output.emit_json({**output.as_dict(check), "admitted": check.admitted})
    elif check.admitted:
        print(
            f"a run of {args.fanout:,} actions would be admitted now; room for {check.headroom:,} more "
            f"(max_fanout {check.max_fanout:,}; {check.queued:,} of max_queued {check.max_queued:,} in use)"
        )
    else:
        hint = (
            " (ask for more: fanout quota request --max-fanout N --reason TEXT)" if check.limit == "max_fanout" else ""
        )
        print(f"a run of {args.fanout:,} actions would be refused now by {check.limit}: max_fanout "
              f"{check.max_fanout:,}; {check.queued:,} of max_queued {check.max_queued:,} in use{hint}")  # fmt: skip
    return 0 if check.admitted else 1
