"""The database a test runs on: the embedded SQLite default, and PostgreSQL when
``WISP_TEST_DATABASE_URL`` names one (a fresh schema per test; unreachable fails)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest

PG_URL = os.environ.get("WISP_TEST_DATABASE_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
async def storage_toml(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A ``[storage]`` section for wisp.toml (empty: the embedded SQLite default)."""
    if request.param == "sqlite":
        yield ""
        return
    if not PG_URL:
        pytest.skip("WISP_TEST_DATABASE_URL is not set")
    import asyncpg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        yield f'[storage]\nurl = "{PG_URL}"\nschema = "{schema}"\nauto_migrate = true\n'
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()
