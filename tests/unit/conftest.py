"""Fixtures of the unit tests: stores on real SQLite and real PostgreSQL.

PostgreSQL (127.0.0.1:5432, database ``test``, a fresh schema per test) skips when the server is
unreachable, except when CI=true, where it fails."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cloudservice.store import SqlStore

PG_HOST, PG_PORT, PG_DB = "127.0.0.1", 5432, "test"
_pg_user: str | None = None
_pg_error: str = ""


async def _postgres_user() -> str:
    """The first of postgres/root that can connect, or skip (fail under CI=true) with the reason."""
    global _pg_user, _pg_error
    if _pg_user is None and not _pg_error:
        errors = []
        for user in ("postgres", "root"):
            try:
                conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=user, database=PG_DB, timeout=5)
            except (OSError, asyncpg.PostgresError) as exc:
                errors.append(f"{user}: {exc!r}")
                continue
            await conn.close()
            _pg_user = user
            break
        else:
            _pg_error = "; ".join(errors)
    if _pg_user is None:
        reason = f"PostgreSQL at {PG_HOST}:{PG_PORT}/{PG_DB} unreachable ({_pg_error})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return _pg_user


async def _pg_execute(user: str, sql: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=user, database=PG_DB, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


MakeStore = Callable[..., Awaitable[SqlStore]]


@pytest.fixture(params=["sqlite", "postgresql"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """A factory of started stores on one database; all are closed (and the schema dropped) after."""
    schema: str | None = None
    user = ""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    else:
        user = await _postgres_user()
        schema = f"t_{uuid.uuid4().hex[:16]}"
        url = f"postgresql+asyncpg://{user}@{PG_HOST}:{PG_PORT}/{PG_DB}"
        await _pg_execute(user, f'CREATE SCHEMA "{schema}"')
    stores: list[SqlStore] = []

    async def make(**kwargs: Any) -> SqlStore:
        store = SqlStore(url, schema=schema, **kwargs)
        await store.start()
        stores.append(store)
        return store

    try:
        yield make
    finally:
        for store in stores:
            await store.close()
        if schema is not None:
            await _pg_execute(user, f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
async def store(make_store: MakeStore) -> SqlStore:
    return await make_store()
