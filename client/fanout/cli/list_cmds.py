"""`fanout ls`: the caller's runs, newest first, or one run's actions grouped by group."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from itertools import groupby

from fanout import config as client_config
from fanout.cli import output, times
from fanout.client import Client
from fanout.errors import ConfigError
from fanout.v1 import actions_pb2 as pb

# Pages are bounded on the server; ls reads pages until it has --limit items or the listing ends.
PAGE = 500
DEFAULT_LIMIT = 50


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    ls = sub.add_parser(
        "ls",
        parents=[common],
        help="list your runs, or the actions of one run",
        description="Without RUN: your runs, newest first, with their phase, size and page URL. "
        "With RUN: its actions, grouped by their group (flyte.group), with each failure's error. "
        "Exit code 0 when the listing was read, 1 when RUN does not exist.",
        epilog="examples:\n  fanout ls --phase FAILED --since 1d\n  fanout ls r123abc --phase FAILED --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ls.add_argument("run", nargs="?", help="list this run's actions instead of your runs")
    ls.add_argument(
        "--phase",
        action="append",
        default=[],
        metavar="PHASE",
        help="only this phase (repeatable or comma-separated): " + ", ".join(pb.Phase.keys()[1:]),
    )
    ls.add_argument("--prefix", default="", help="only names starting with this")
    ls.add_argument("--group", default="", help="with RUN: only this group and the groups nested in it")
    ls.add_argument("--since", help="without RUN: only runs created after this (2026-12-31, 2h, 7d)")
    ls.add_argument("--until", dest="before", help="without RUN: only runs created before this")
    ls.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"at most this many (default {DEFAULT_LIMIT})")
    ls.set_defaults(handler=cmd_ls)


def cmd_ls(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    phases = _phases(args.phase)
    with Client(client_config.load(endpoint=args.endpoint, token=args.token)) as client:
        if args.run:
            if args.since or args.before:
                raise ConfigError("--since and --until list runs; actions carry no creation time")
            request = pb.ListActionsRequest(run=args.run, phases=phases, name_prefix=args.prefix, group=args.group)
            return _show_actions(args, list(_actions(client, request, args.limit)))
        if args.group:
            raise ConfigError("--group lists the actions of one run: give RUN")
        runs = pb.ListRunsRequest(phases=phases, name_prefix=args.prefix)
        if args.since:
            runs.created_after = times.parse_time(args.since, past=True)
        if args.before:
            runs.created_before = times.parse_time(args.before, past=True)
        return _show_runs(args, list(_runs(client, runs, args.limit)))


def _phases(values: list[str]) -> list[int]:
    out = []
    for name in (n.strip().upper() for v in values for n in v.split(",") if n.strip()):
        if name not in pb.Phase.keys() or name == "PHASE_UNSPECIFIED":
            raise ConfigError(f"unknown phase {name!r}: choose from {', '.join(pb.Phase.keys()[1:])}")
        out.append(pb.Phase.Value(name))
    return out


def _runs(client: Client, request: pb.ListRunsRequest, limit: int) -> Iterator[pb.Run]:
    while limit > 0:
        request.limit = min(PAGE, limit)
        page = client.list_runs(request)
        yield from page.runs[:limit]
        limit -= len(page.runs)
        if not page.next_cursor:
            return
        request.cursor = page.next_cursor


def _actions(client: Client, request: pb.ListActionsRequest, limit: int) -> Iterator[pb.ActionStatus]:
    while limit > 0:
        request.limit = min(PAGE, limit)
        page = client.list_actions(request)
        yield from page.actions[:limit]
        limit -= len(page.actions)
        if not page.next_cursor:
            return
        request.cursor = page.next_cursor


def _show_runs(args: argparse.Namespace, runs: list[pb.Run]) -> int:
    if args.json:
        output.emit_json([{**output.as_dict(r), "phase": output.phase(r.phase)} for r in runs])
        return 0
    if not runs:
        print("no runs" + (" match" if args.phase or args.prefix or args.since or args.before else ""))
        return 0
    print(f"{'RUN':<20} {'PHASE':<10} {'ACTIONS':>8} {'FAILED':>7}  {'CREATED':<23}  URL")
    for r in runs:
        failed = r.phase_counts.get("FAILED", 0) + r.phase_counts.get("TIMED_OUT", 0)
        created = times.show(r.created_at)
        print(f"{r.name:<20} {output.phase(r.phase):<10} {r.action_count:>8} {failed:>7}  {created:<23}  {r.url}")
    return 0


def _show_actions(args: argparse.Namespace, actions: list[pb.ActionStatus]) -> int:
    actions.sort(key=lambda a: (a.group, a.name))
    if args.json:
        grouped = {g: [output.status_dict(a) for a in items] for g, items in groupby(actions, key=lambda a: a.group)}
        output.emit_json({"run": args.run, "groups": grouped})
        return 0
    if not actions:
        print("no actions match")
        return 0
    for group, items in groupby(actions, key=lambda a: a.group):
        print(f"{group or '(no group)'}:")
        for a in items:
            line = f"  {a.name:<40} {a.task_name:<30} {output.phase(a.phase):<10} attempt {a.attempt}"
            if a.result.HasField("error"):
                first_line = (a.result.error.message.splitlines() or [""])[0]
                line += f"  {a.result.error.type}: {first_line}"
            print(line)
    return 0
