"""The registry's metadata tables (SQLAlchemy Core, so SQLite and PostgreSQL take the same code).

Every write that allocates a version, moves an alias or deletes a version runs inside ``locked``:
it first updates the single row of ``registry_lock``, which serialises writers on any database
(SQLite takes its write lock, PostgreSQL a row lock) while readers carry on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from bigmodel.errors import BigModelError

metadata = MetaData()

lock = Table(
    "registry_lock",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("counter", BigInteger, nullable=False),
)

models = Table(
    "models",
    metadata,
    Column("name", String(128), primary_key=True),
    # never reused: deleting version 3 and registering again gives 4, so a number names one thing forever
    Column("next_version", Integer, nullable=False),
    Column("created_at", String(40), nullable=False),
)

versions = Table(
    "versions",
    metadata,
    Column("name", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("digest", String(64), nullable=False, index=True),  # sha256 of model.json
    Column("meta", Text, nullable=False),  # model.json as registered
    Column("source", Text, nullable=False),  # the directory it was registered from
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", String(40), nullable=False),
    PrimaryKeyConstraint("name", "version"),
)

files = Table(
    "version_files",
    metadata,
    Column("name", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("file", String(255), nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
    Column("bytes", BigInteger, nullable=False),
    PrimaryKeyConstraint("name", "version", "file"),
)

aliases = Table(
    "aliases",
    metadata,
    Column("name", String(128), nullable=False),
    Column("alias", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", String(40), nullable=False),
    PrimaryKeyConstraint("name", "alias"),
)


def connect(url: str) -> Engine:
    """An engine with the tables created; SQLite waits for other writers instead of failing."""
    sqlite = url.startswith("sqlite")
    try:
        engine = create_engine(url, connect_args={"timeout": 60} if sqlite else {})
    except (SQLAlchemyError, ImportError, ValueError) as err:
        raise BigModelError(f"cannot open registry database {url}: {err}") from None
    if sqlite:

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    for attempt in range(5):  # two processes creating a new registry at once: one wins, the other retries
        try:
            metadata.create_all(engine)
            with engine.begin() as conn:
                if conn.execute(select(lock.c.id)).first() is None:
                    conn.execute(insert(lock).values(id=1, counter=0))
            break
        except (OperationalError, IntegrityError):
            if attempt == 4:
                raise
    return engine


@contextlib.contextmanager
def locked(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds the registry's write lock until it commits."""
    with engine.begin() as conn:
        conn.execute(update(lock).where(lock.c.id == 1).values(counter=lock.c.counter + 1))
        yield conn
