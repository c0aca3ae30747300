"""Server settings from the environment."""

from __future__ import annotations

import pytest

from fanout.server.settings import Settings, SettingsError


def test_environment_then_overrides() -> None:
    s = Settings.from_env({"FANOUT_MAX_FANOUT": "42", "FANOUT_LISTEN": "0.0.0.0:7000"}, listen="127.0.0.1:0")

    assert s.max_fanout == 42
    assert s.limits.max_fanout == 42
    assert s.listen == "127.0.0.1:0"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FANOUT_MAX_FANOUT": "lots"}, "FANOUT_MAX_FANOUT must be a int"),
        ({"FANOUT_MAX_CONCURRENCY": "0"}, "FANOUT_MAX_CONCURRENCY must be at least 1"),
        ({"FANOUT_TLS_CERT": "/c.pem"}, "needs both a certificate and a key"),
        ({"FANOUT_LISTEN": "7000"}, "host:port"),
    ],
)
def test_bad_settings_say_which_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)
