"""Entry point of the `fanout` command.

Exit codes: 0 success; 1 the operation or the run failed; 2 bad usage or
configuration; 3 the control plane could not be reached.
"""

from __future__ import annotations

import argparse
import logging
import sys

from fanout import errors
from fanout.cli import admin_cmds, list_cmds, logs, server_cmds, tenant_cmds, token_args
from fanout.cli.common import common_options
from fanout.server.errors import StartupError


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(
        prog="fanout",
        description="Fanout: a control plane for massive task fanouts. Start with `fanout up`.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log everything (--log-level debug)")
    parser.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        default=logs.default_level(),
        help="FANOUT_LOG_LEVEL; default info for the long-running services (server, dispatcher), else warning",
    )
    parser.add_argument("--log-format", choices=logs.FORMATS, default=logs.default_format(), help="FANOUT_LOG_FORMAT")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    server_cmds.add_parsers(sub)
    tenant_cmds.add_parsers(sub, common)
    list_cmds.add_parsers(sub, common)
    admin_cmds.add_parsers(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = "debug" if args.verbose else args.log_level or ("info" if args.command in logs.SERVICES else "warning")
    logs.configure(getattr(logging, level.upper()), args.log_format)
    try:
        args.token = token_args.token_from_args(args)
        return int(args.handler(args))
    except (errors.ConfigError, StartupError) as exc:
        print(f"fanout: {exc}", file=sys.stderr)
        return 2
    except errors.Unavailable as exc:
        print(f"fanout: cannot reach the control plane: {exc}", file=sys.stderr)
        return 3
    except errors.FanoutError as exc:
        print(f"fanout: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
