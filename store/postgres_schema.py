"""The PostgreSQL schema and its migrations, numbered as SQLite's (store/sqlite_schema.py).

Columns mirror SQLite's so an export from one loads into the other byte for byte:
timestamps stay canonical RFC 3339 text (their text order is time order), bodies stay
bytes. Migrations run under an advisory lock, so processes starting together apply each
one once.
"""

from __future__ import annotations

from typing import Any

MIGRATIONS: list[str] = [
    # 1: streams, events, idempotency keys, records, versions
    """
    CREATE TABLE streams (
        session_id  TEXT PRIMARY KEY,
        record_kind TEXT NOT NULL,
        last_seq    BIGINT NOT NULL,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE events (
        position    BIGINT PRIMARY KEY,
        session_id  TEXT NOT NULL,
        seq         BIGINT NOT NULL,
        id          TEXT NOT NULL,
        type        TEXT NOT NULL,
        data        BYTEA NOT NULL,
        recorded_at TEXT NOT NULL,
        CONSTRAINT events_session_seq UNIQUE (session_id, seq)
    );
    CREATE UNIQUE INDEX events_by_id ON events (id);
    CREATE TABLE idempotency (
        session_id TEXT NOT NULL,
        key        TEXT NOT NULL,
        first_seq  BIGINT NOT NULL,
        count      INTEGER NOT NULL,
        PRIMARY KEY (session_id, key)
    );
    CREATE TABLE records (
        kind         TEXT NOT NULL,
        id           TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        data         BYTEA NOT NULL,
        tags         JSONB NOT NULL,
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        archived_at  TEXT,
        revision     BIGINT NOT NULL,
        PRIMARY KEY (kind, id)
    );
    CREATE INDEX records_by_created ON records (kind, workspace_id, created_at, id);
    CREATE TABLE versions (
        kind       TEXT NOT NULL,
        id         TEXT NOT NULL,
        version    BIGINT NOT NULL,
        data       BYTEA NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (kind, id, version)
    );
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BIGINT NOT NULL
    )
    """,
    # 2: records that have work pending, found through a partial index of those alone
    """
    ALTER TABLE records ADD COLUMN due BOOLEAN NOT NULL DEFAULT FALSE;
    CREATE INDEX records_due ON records (kind, created_at, id) WHERE due;
    UPDATE records SET due = TRUE
        WHERE kind = 'session' AND tags->>'status' IN ('running', 'rescheduling')
    """,
    # 3: leases; a row outlives its holders so tokens only grow
    """
    CREATE TABLE leases (
        name       TEXT PRIMARY KEY,
        owner      TEXT NOT NULL,
        token      BIGINT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    )
    """,
    """
    CREATE TABLE blobs (
        digest     TEXT PRIMARY KEY,
        data       BYTEA NOT NULL,
        created_at TEXT NOT NULL
    )
    """,
]

_MIGRATION_LOCK = 0x5E55_10D0
"""Advisory lock key held while migrating (any number: unique to sessiond)."""


async def migrate(conn: Any, schema: str | None = None) -> int:
    """Apply the migrations this database (or `schema` in it) has not seen; returns the
    schema version. The schema is made under the same lock: processes opening a fresh one
    together used to collide on making it."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        if schema is not None:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        current = await conn.fetchval("SELECT max(version) FROM schema_version") or 0
        for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
            for statement in script.split(";"):
                if statement.strip():
                    await conn.execute(statement)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", number)
    return len(MIGRATIONS)


async def schema_version(conn: Any) -> int:
    """The version a database is at (0 when never migrated)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
