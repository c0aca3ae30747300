"""Errors that stop a server or `fanout up` from starting; the CLI prints them plainly."""

from __future__ import annotations


class StartupError(RuntimeError):
    """A port is taken, a setting is wrong, Redis will not start: say which and how to fix it."""
