"""PostgreSQL for tests: the server named by TEST_POSTGRES_DSN, a throwaway schema each.

Without the variable, PostgreSQL tests skip and say what is missing; `.ci/run` sets
SESSIOND_REQUIRE_POSTGRES=1, which turns that skip into a failure, so CI never skips.
"""

from __future__ import annotations

import os
import uuid

import pytest


def postgres_dsn() -> str:
    """The test server's DSN, or a skip (a failure where PostgreSQL is required)."""
    dsn = os.environ.get("TEST_POSTGRES_DSN")
    if not dsn:
        message = "needs PostgreSQL: set TEST_POSTGRES_DSN (postgresql://user@host:port/db)"
        if os.environ.get("SESSIOND_REQUIRE_POSTGRES"):
            pytest.fail(message)
        pytest.skip(message)
    return dsn


def new_schema() -> str:
    """A schema name no other test uses."""
    return f"test_{uuid.uuid4().hex[:12]}"


async def drop_schema(dsn: str, schema: str) -> None:
    """Remove a test's schema and everything in it."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
