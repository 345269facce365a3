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
    URL,
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
    make_url,
    select,
    update,
)
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, OperationalError, SQLAlchemyError

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


def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3 (the ``postgres`` extra), not psycopg2."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url.removeprefix(scheme)
    return url


def without_password(url: str) -> str:
    """The URL as a registry folder records it: no password (libpq reads PGPASSWORD, ~/.pgpass)."""
    try:
        parsed = make_url(normalize_url(url))
    except (ArgumentError, ValueError):
        return url
    bare = URL.create(
        parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database, parsed.query
    )
    return bare.render_as_string(hide_password=False)


def connect(url: str) -> Engine:
    """An engine with the tables created; SQLite waits for other writers instead of failing."""
    url = normalize_url(url)
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
            if sqlite:
                _check_sqlite(engine, url)
            metadata.create_all(engine)
            with engine.begin() as conn:
                if conn.execute(select(lock.c.id)).first() is None:
                    conn.execute(insert(lock).values(id=1, counter=0))
            break
        except (OperationalError, IntegrityError) as err:
            if attempt == 4:
                raise BigModelError(f"cannot open registry database {url}: {_first_line(err)}") from None
        except DatabaseError as err:  # "file is not a database", "disk image is malformed"
            raise BigModelError(f"registry database {url} is damaged: {_first_line(err)}") from None
    return engine


def _first_line(err: Exception) -> str:
    orig = getattr(err, "orig", None) or err
    return str(orig).splitlines()[0] if str(orig) else type(orig).__name__


def _check_sqlite(engine: Engine, url: str) -> None:
    """Refuse a damaged SQLite file before anything reads or writes it (a registry's database is
    small: quick_check reads it once, milliseconds)."""
    with engine.connect() as conn:
        problems = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise BigModelError(f"registry database {url} is damaged: {problems[0]}; nothing was written")


@contextlib.contextmanager
def locked(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds the registry's write lock until it commits."""
    with engine.begin() as conn:
        conn.execute(update(lock).where(lock.c.id == 1).values(counter=lock.c.counter + 1))
        yield conn
