"""`flyte.errors`, re-exported from fanout.errors."""

from fanout.errors import *  # noqa: F403
