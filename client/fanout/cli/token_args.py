"""Tokens reach the CLI from a file, stdin or FANOUT_TOKEN, never from a flag.

Every local user can read any process's command line (`ps`, /proc/PID/cmdline),
and so can every task a dispatcher runs; a token passed as a flag is a token
handed to all of them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from fanout.config import read_token_file

REFUSED = (
    "a token on the command line shows in `ps` to every local user and task; "
    "use --token-file FILE (- reads stdin) or FANOUT_TOKEN"
)


class _Refused(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        parser.error(f"{option_string} is not accepted: {REFUSED}")


def add_token_args(parser: argparse.ArgumentParser, what: str = "bearer token") -> None:
    parser.add_argument(
        "--token-file", metavar="FILE", help=f"read the {what} from FILE ('-': stdin); else FANOUT_TOKEN"
    )
    parser.add_argument("--token", dest="refused_token", action=_Refused, help=argparse.SUPPRESS)


def token_from_args(args: argparse.Namespace) -> str | None:
    """The token from --token-file, if given; None lets FANOUT_TOKEN or the config file decide."""
    path = getattr(args, "token_file", None)
    return read_token_file(path) if path else None
