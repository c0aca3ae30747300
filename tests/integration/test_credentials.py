"""Credentials: busy addresses, action tokens that expire, secrets kept out of Redis and `ps`."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fanout.server.app import ControlPlane, create_server
from fanout.server.errors import StartupError
from fanout.server.settings import Settings
from tests.helpers import LoopThread


def test_a_second_server_on_a_busy_port_is_refused(
    loop_thread: LoopThread, plane: ControlPlane, settings: Settings
) -> None:
    with pytest.raises(StartupError, match="in use"):
        second = loop_thread.run(create_server(replace(settings, listen=f"127.0.0.1:{plane.port}")))
        loop_thread.run(second.stop(grace=0))
