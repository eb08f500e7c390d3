"""Which backend a database URL names (kept apart so the protocol imports no backend)."""

from __future__ import annotations

from sessiond.store.errors import InvalidInputError
from sessiond.store.protocol import Store


def open_store(url: str, **options: object) -> Store:
    """Build (not open) the backend named by a database URL.

    `sqlite:///path/to/file.db` (or a bare path) selects SQLite; `postgresql://…` (or
    `postgres://…`) selects PostgreSQL, which needs the `postgres` extra (asyncpg).
    """
    if url.startswith(("postgres://", "postgresql://")):
        try:
            from sessiond.store.postgres import PostgresStore
        except ImportError as exc:  # asyncpg is an extra
            raise InvalidInputError(
                "PostgreSQL needs asyncpg: pip install 'sessiond[postgres]'",
                code="unsupported_database",
            ) from exc
        return PostgresStore(url, **options)  # type: ignore[arg-type]
    from sessiond.store.sqlite import SQLiteStore

    if url.startswith("sqlite:///"):
        return SQLiteStore(url[len("sqlite:///") :])
    return SQLiteStore(url)
