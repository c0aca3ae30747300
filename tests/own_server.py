"""For a test module whose tests run on the module's own server (conftest's own_plane: no
dispatcher, so queued work stays queued): importing these replaces the session's `endpoint` and
`tenant` fixtures in that module."""

from __future__ import annotations

import pytest

from tests.conftest import Tenant


@pytest.fixture(name="endpoint")
def own_server_endpoint(own_endpoint: str) -> str:
    return own_endpoint


@pytest.fixture(name="tenant")
def own_server_tenant(own_tenant: Tenant) -> Tenant:
    return own_tenant
