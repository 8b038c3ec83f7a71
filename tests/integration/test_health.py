"""Readiness tells the truth: an API with NATS away starts, serves, and says it is not ready."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from infra.settings import Settings
from read_api.app import create_app as read_app
from tests.fix_stack import free_port, serve
from write_api.app import create_app as write_app

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize("factory", [write_app, read_app], ids=["write", "read"])
async def test_nats_away_means_not_ready_but_serving(settings: Settings, factory: object) -> None:
    away = replace(settings, nats_url=f"nats://127.0.0.1:{free_port()}")  # nothing listens there
    async with serve(factory(away)) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:  # type: ignore[operator]
        assert (await client.get("/health/live")).status_code == 200
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["postgres"] == "ok"
        assert ready.json()["checks"]["nats"].startswith("failing")
        assert (await client.get("/schema/openapi.json")).status_code == 200
