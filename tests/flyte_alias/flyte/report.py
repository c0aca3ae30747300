"""`flyte.report`, re-exported from fanout.report."""

from fanout.report import *  # noqa: F403
from fanout.report import Report, Tab, current_report, flush, get_tab, log, replace  # noqa: F401
