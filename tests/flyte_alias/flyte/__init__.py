"""A test-only stand-in for the Flyte 2 SDK: it re-exports fanout, so the examples run with their `import flyte`."""

from fanout import *  # noqa: F403
from fanout import __all__, errors  # noqa: F401
