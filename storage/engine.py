"""The store's database: URL to engine (SQLite pragmas and ``BEGIN IMMEDIATE``), the checks an existing
SQLite file must pass before anything is written, and the Alembic schema preparation (create, upgrade, refuse)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from storage.errors import SchemaVersionError, StoreError, store_error
from storage.schema import SCHEMA_VERSION, TABLE_NAMES, Base, SchemaInfo

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_SQLITE_MAGIC = b"SQLite format 3\x00"


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """The SQLAlchemy URL of the SQLite file at ``path`` (made absolute)."""
    return "sqlite:///" + str(Path(path).expanduser().resolve())


def is_memory_sqlite(database: str | None) -> bool:
    return not database or database == ":memory:" or database.startswith("file::memory:")


def make_engine(url: str) -> tuple[Engine, str]:
    """An engine for ``url`` and a human-readable name of the database (file path or URL)."""
    if not isinstance(url, str) or not url.strip():
        raise StoreError(f"experiment store: expected a database URL such as sqlite:///runs/locdiff.sqlite, got {url!r}")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"experiment store: cannot parse database URL {url!r}; expected e.g. sqlite:///runs/locdiff.sqlite") from None
    where = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() != "sqlite":
        try:
            return create_engine(parsed), where
        except NoSuchModuleError:
            raise StoreError(f"experiment store {where}: unknown database kind {parsed.drivername!r}; "
                             "expected an SQLAlchemy URL such as sqlite:///runs/locdiff.sqlite") from None
        except ImportError as exc:
            raise StoreError(f"experiment store {where}: the database driver is not installed ({exc.name or exc}); "
                             "install it (e.g. pip install psycopg2-binary for PostgreSQL)") from None
    if is_memory_sqlite(parsed.database):
        engine = create_engine(parsed, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        path = Path(parsed.database or "")
        where = str(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"experiment database {where}: cannot create its folder ({exc.strerror or exc}); "
                             "pass another --store or --workdir") from None
        check_sqlite_file(path)
        engine = create_engine(parsed, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy emit BEGIN itself (see "begin")
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # take the write lock up front: no upgrade deadlocks

    return engine, where


def check_sqlite_file(path: Path) -> None:
    """An existing store file must be a regular file starting with SQLite's header (else: one-line error)."""
    if not path.exists():
        return
    where = str(path)
    if not path.is_file():
        raise StoreError(f"experiment database {where}: not a regular file; pass another --store")
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise StoreError(f"experiment database {where}: cannot read it ({exc.strerror or exc}); pass another --store") from None
    if head and head != _SQLITE_MAGIC:
        raise StoreError(f"experiment database {where}: not an SQLite database; move the file away, or pass another --store")
    if not head:
        return
    try:  # read-only look first: a damaged or foreign file is refused before anything (even WAL mode) is written
        probe = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            tables = {name for (name,) in probe.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            probe.close()
    except sqlite3.Error as exc:
        raise store_error(where, exc) from None
    ours = set(TABLE_NAMES) | {"alembic_version", "sqlite_sequence"}
    if tables and not tables & ours:
        shown = ", ".join(sorted(tables)[:5])
        raise StoreError(f"experiment database {where} already holds other tables ({shown}); "
                         "it is not a LocDiff store: pass another --store")


def _alembic_config(connection: Any):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _script():
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS))


def column_differences(conn: Any) -> str | None:
    """How the database's tables differ from the ORM's (None if they match)."""
    inspector = inspect(conn)
    present = set(inspector.get_table_names())
    for table in Base.metadata.sorted_tables:
        if table.name not in present:
            return f"table {table.name!r} is missing"
        have = {c["name"] for c in inspector.get_columns(table.name)}
        want = {c.name for c in table.columns}
        if have != want:
            missing, extra = sorted(want - have), sorted(have - want)
            parts = ([f"lacks column(s) {missing}"] if missing else []) + ([f"has unknown column(s) {extra}"] if extra else [])
            return f"table {table.name!r} " + " and ".join(parts)
    return None


def prepare_schema(engine: Engine, where: str) -> None:
    """Create a new store, upgrade an older one in place (one transaction), refuse anything else.

    Older: a store stamped with an earlier Alembic revision, or one from before migrations
    (``schema_info.version = 1`` and no ``alembic_version``), which is stamped ``0001`` first.
    Refused: a newer revision, an unknown version, a foreign non-empty database, or tables whose
    columns differ from the recorded revision.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    script = _script()
    head = script.get_current_head()
    known = {rev.revision for rev in script.walk_revisions()}
    with engine.begin() as conn:
        present = set(inspect(conn).get_table_names())
        current = MigrationContext.configure(conn).get_current_revision() if "alembic_version" in present else None
        config = _alembic_config(conn)
        versions = list(conn.execute(select(SchemaInfo.version)).scalars()) if "schema_info" in present else []
        if "schema_info" in present and (len(versions) != 1 or not isinstance(versions[0], int) or versions[0] < 1
                                         or versions[0] > SCHEMA_VERSION):
            found = versions[-1] if versions else None
            newer = isinstance(found, int) and found > SCHEMA_VERSION
            raise SchemaVersionError(where, found, SCHEMA_VERSION, newer=newer)
        if current is not None:
            if current not in known:
                raise SchemaVersionError(where, current, head, newer=True)
        elif versions:
            if versions != [1]:  # only version 1 existed before migrations
                raise SchemaVersionError(where, versions[0], SCHEMA_VERSION)
            command.stamp(config, "0001")  # the schema from before migrations is revision 0001
        elif present & set(TABLE_NAMES):
            raise SchemaVersionError(where, None)
        elif present - {"sqlite_sequence"}:
            shown = ", ".join(sorted(present)[:5])
            raise StoreError(f"experiment database {where} already holds other tables ({shown}); "
                             "it is not a LocDiff store: pass another --store")
        command.upgrade(config, "head")
        problem = column_differences(conn)
        if problem is not None:
            revision = MigrationContext.configure(conn).get_current_revision()
            raise StoreError(f"experiment database {where}: {problem} for schema revision {revision}; "
                             "restore a backup, or pass another --store")
