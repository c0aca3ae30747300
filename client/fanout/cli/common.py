"""The options every client command takes: --endpoint, --token-file, --json."""

from __future__ import annotations

import argparse
from typing import Any

from fanout.cli import token_args


def common_options(argument_default: Any = None) -> argparse.ArgumentParser:
    """A parent parser with the client options.

    A command that has verbs of its own (`fanout quota check`) gives its verbs these with
    `argparse.SUPPRESS` as the default: otherwise a verb's unset default would overwrite what
    was given before the verb (`fanout quota --endpoint B check`).
    """
    common = argparse.ArgumentParser(add_help=False, argument_default=argument_default)
    common.add_argument("--endpoint", help="control plane address (FANOUT_ENDPOINT, else the config file)")
    token_args.add_token_args(common)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    return common
