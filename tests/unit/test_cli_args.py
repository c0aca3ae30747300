"""Command-line parsing of commands with verbs: options given before the verb are kept."""

from __future__ import annotations

import pytest

from fanout.cli.main import build_parser


@pytest.mark.parametrize(
    ("argv", "endpoint", "json_out"),
    [
        (["quota", "--endpoint", "b:1", "--json", "check", "--fanout", "3"], "b:1", True),
        (["quota", "check", "--fanout", "3", "--endpoint", "c:1"], "c:1", False),
        (["quota", "--endpoint", "a:1", "requests", "--json"], "a:1", True),
        (["quota", "--json"], None, True),
    ],
)
def test_client_options_before_or_after_a_quota_verb_are_kept(
    argv: list[str], endpoint: str | None, json_out: bool
) -> None:
    args = build_parser().parse_args(argv)
    assert (args.endpoint, args.json) == (endpoint, json_out)
